"""musicrec.process_lifetime: a process ended without the interpreter's teardown still delivers
its exit status, its buffered output and its log lines; a child started with ``tied_argv`` is the
command itself and dies with the thread that started it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from musicrec.process_lifetime import tied_argv

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import atexit, logging, sys
    from musicrec.process_lifetime import exit_without_teardown
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(message)s")
    atexit.register(lambda: print("teardown ran", flush=True))
    print("buffered line")  # a pipe: block-buffered until flushed
    logging.getLogger("x").error("a log line")
    exit_without_teardown(3)
""")


def test_exit_without_teardown_keeps_the_status_the_output_and_the_log():
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "buffered line\n"  # flushed; the atexit handler (teardown) never ran
    assert done.stderr == "ERROR a log line\n"


def _wait(process: subprocess.Popen, timeout_s: float = 30) -> int:
    try:
        return process.wait(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_tied_child_is_the_command_itself():
    # exec in place: the pid Popen knows is the command's, and its arguments and status pass through
    done = subprocess.run(tied_argv([sys.executable, "-c", "import os, sys; print(os.getpid(), sys.argv[1:]); sys.exit(4)",
                                     "a", "--b"]), capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    process_pid, rest = done.stdout.split(" ", 1)
    assert rest.strip() == "['a', '--b']"
    assert done.stderr == ""
    process = subprocess.Popen(tied_argv([sys.executable, "-c", "import os; print(os.getpid())"]),
                               stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=60)
    assert int(out) == process.pid
    assert int(process_pid) > 0


def test_a_tied_child_gets_the_signal_when_its_starting_thread_ends():
    started: list[subprocess.Popen] = []

    def start() -> None:
        # The thread ends once the command runs (the tie is asked for before the exec): a thread
        # that ends within the child's first milliseconds is not covered, hence "long-lived".
        child = subprocess.Popen(tied_argv([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                                           signal.SIGTERM), stdout=subprocess.PIPE, text=True)
        started.append(child)
        assert child.stdout.readline() == "up\n"

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    assert _wait(started[0]) == -signal.SIGTERM


def test_a_child_orphaned_before_it_asked_gets_the_signal_at_once():
    # --parent-pid names a parent the child no longer has: it must not run on as an orphan
    process = subprocess.Popen(tied_argv(["sleep", "60"], signal.SIGTERM, parent_pid=1))
    assert _wait(process) == -signal.SIGTERM


def test_a_command_that_cannot_run_exits_127_and_says_why():
    done = subprocess.run(tied_argv(["/nonexistent/musicrec-no-such-program"]), capture_output=True, text=True, timeout=60)
    assert done.returncode == 127
    assert done.stderr == "cannot run /nonexistent/musicrec-no-such-program: No such file or directory\n"


def test_children_started_while_grpc_is_busy_all_run(tmp_path):
    # grpc/grpc#43055: with grpcio >= 1.80, a child forked (a preexec_fn forces fork over vfork)
    # while this process's gRPC threads work could abort before exec ("Epoll1Poller ... Bad file
    # descriptor", about 1 start in 100). The harness starts children without a preexec_fn.
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from launcher.processes import ServiceProcess

    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stop = threading.Event()

    def load() -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    statuses = []
    try:
        for n in range(40):
            child = ServiceProcess(f"child-{n}", [sys.executable, "-c", "pass"], tmp_path / "children.log").spawn()
            statuses.append(_wait(child.process))
    finally:
        stop.set()
        loader.join(timeout=10)
        channel.close()
        server.stop(None)
    assert statuses == [0] * 40, (tmp_path / "children.log").read_text()[-2000:]
