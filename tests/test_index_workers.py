"""``python -m index_service --workers N``: N processes on one port (SO_REUSEPORT), one supervisor.

Real processes on port 0, the tiny known-answer model. Which worker serves a connection is the
kernel's choice, so "both workers serve" is checked where it is certain: each worker's process
holds its own listening socket on the announced port (/proc), and calls over many fresh
connections all succeed with the right answer.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from index_service.__main__ import parse_args, worker_argv
from musicrec.v1 import index_pb2, index_pb2_grpc
from service_processes import PYTHON, ServiceProcess, child_pids

pytestmark = pytest.mark.slow

WAIT_S = 60.0


def _workers(tmp_path: Path, models_dir: Path, n: int) -> ServiceProcess:
    argv = [PYTHON, "-m", "index_service", "--models-dir", str(models_dir), "--port", "0",
            "--poll-interval", "0.2", "--workers", str(n), "--grace", "2"]
    return ServiceProcess("index-workers", argv, tmp_path / "index-workers.log")


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (IPv4 and IPv6 tables; state 0A is LISTEN)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def _wait_until(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _listening_workers(supervisor_pid: int, port: int) -> dict[int, set[str]]:
    """Worker pid -> its sockets listening on ``port``."""
    listening = _listening_inodes(port)
    return {pid: _socket_inodes(pid) & listening for pid in child_pids(supervisor_pid)}


def _recommend_on_fresh_channel(address: str) -> index_pb2.RecommendResponse:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=WAIT_S)
        return index_pb2_grpc.IndexServiceStub(channel).Recommend(
            index_pb2.RecommendRequest(user_id="u0", k=3), timeout=WAIT_S, wait_for_ready=True)


def _all_serving(index: ServiceProcess, n: int) -> bool:
    return index.log().count("serving model version 1") >= n


def test_worker_argv_keeps_settings_and_drops_port_and_workers(tmp_path):
    args = parse_args(["--models-dir", str(tmp_path), "--port", "5000", "--workers", "3", "--version", "2",
                       "--grace", "1.5", "--host", "0.0.0.0"])
    argv = worker_argv(args)
    assert "--workers" not in argv and "--port" not in argv
    assert argv[argv.index("--version") + 1] == "2"
    assert argv[argv.index("--grace") + 1] == "1.5"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--models-dir") + 1] == str(tmp_path)


def test_two_workers_share_the_port_and_sigterm_stops_all(tmp_path, models_dir, publish, tiny_artifacts):
    publish(tiny_artifacts)
    index = _workers(tmp_path, models_dir, 2).start()
    try:
        assert index.log().count("listening on") == 1, index.tail()  # announced once, by the supervisor
        workers = _wait_until(lambda: (lambda w: w if len(w) == 2 and all(w.values()) else None)(
            _listening_workers(index.process.pid, index.port)), "both workers listening")
        assert len(set(workers)) == 2
        _wait_until(lambda: _all_serving(index, 2), "both workers serving version 1")
        # Many fresh connections (the kernel spreads connections over the two listeners): every
        # call answers, from the same version, with the known answer.
        answers = {tuple(a.artist_id for a in _recommend_on_fresh_channel(index.address).artists)
                   for _ in range(12)}
        assert answers == {("a1", "a2", "a11")}, answers
        pids = list(workers)
    finally:
        code = index.stop()
    assert code == 0, index.tail()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid
    assert index.log().count("index service stopped") == 3, index.tail()  # 2 workers + the supervisor


def test_a_killed_worker_is_restarted(tmp_path, models_dir, publish, tiny_artifacts):
    publish(tiny_artifacts)
    index = _workers(tmp_path, models_dir, 2).start()
    try:
        first = _wait_until(lambda: (lambda p: p if len(p) == 2 else None)(child_pids(index.process.pid)),
                            "two workers")
        _wait_until(lambda: _all_serving(index, 2), "both workers serving version 1")
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        _wait_until(lambda: (lambda p: p if len(p) == 2 and victim not in p else None)(
            child_pids(index.process.pid)), "a replacement worker")
        _wait_until(lambda: _all_serving(index, 3), "the replacement serving version 1")
        assert "restarting in" in index.log()
        _wait_until(lambda: len(_listening_workers(index.process.pid, index.port)) == 2
                    and all(_listening_workers(index.process.pid, index.port).values()), "two listeners again")
        assert _recommend_on_fresh_channel(index.address).artists
    finally:
        code = index.stop()
    assert code == 0, index.tail()


def test_workers_refuse_a_port_taken_without_reuseport(tmp_path, models_dir):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        argv = [PYTHON, "-m", "index_service", "--models-dir", str(models_dir), "--port", str(port), "--workers", "2"]
        index = ServiceProcess("index-workers", argv, tmp_path / "taken.log")
        with pytest.raises(AssertionError, match="exited with 1"):
            index.start()
        assert "cannot start" in index.log()
    finally:
        taken.close()
