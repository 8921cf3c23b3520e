"""``python -m index_service --workers N``: N processes on one port (SO_REUSEPORT), one supervisor.

Real processes on port 0, the tiny known-answer model. Which worker serves a connection is the
kernel's choice, so "both workers serve" is checked where it is certain: each worker's process
holds its own listening socket on the announced port (psutil), and calls over many fresh
connections all succeed with the right answer.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc
import psutil
import pytest

from index_service.__main__ import parse_args, worker_argv
from musicrec.v1 import index_pb2, index_pb2_grpc
from service_processes import PYTHON, ServiceProcess, child_pids
from test_faults_harness import exited, wait_until

pytestmark = pytest.mark.slow

WAIT_S = 60.0


def _workers(tmp_path: Path, models_dir: Path, n: int) -> ServiceProcess:
    argv = [PYTHON, "-m", "index_service", "--models-dir", str(models_dir), "--port", "0",
            "--poll-interval", "0.2", "--workers", str(n), "--grace", "2"]
    return ServiceProcess("index-workers", argv, tmp_path / "index-workers.log")


def _listening_sockets(pid: int, port: int) -> int:
    """How many sockets process ``pid`` has listening on ``port`` (0 once it has exited)."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(1 for c in connections if c.status == psutil.CONN_LISTEN and c.laddr.port == port)


def _listening_workers(supervisor_pid: int, port: int) -> dict[int, int]:
    """Worker pid -> how many sockets it has listening on ``port``."""
    return {pid: _listening_sockets(pid, port) for pid in child_pids(supervisor_pid)}


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
        workers = wait_until(lambda: (lambda w: w if len(w) == 2 and all(w.values()) else None)(
            _listening_workers(index.process.pid, index.port)), "both workers listening")
        assert len(set(workers)) == 2
        wait_until(lambda: _all_serving(index, 2), "both workers serving version 1")
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
        assert exited(pid), pid
    assert index.log().count("index service stopped") == 3, index.tail()  # 2 workers + the supervisor


def test_a_killed_worker_is_restarted(tmp_path, models_dir, publish, tiny_artifacts):
    publish(tiny_artifacts)
    index = _workers(tmp_path, models_dir, 2).start()
    try:
        first = wait_until(lambda: (lambda p: p if len(p) == 2 else None)(child_pids(index.process.pid)),
                            "two workers")
        wait_until(lambda: _all_serving(index, 2), "both workers serving version 1")
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: (lambda p: p if len(p) == 2 and victim not in p else None)(
            child_pids(index.process.pid)), "a replacement worker")
        wait_until(lambda: _all_serving(index, 3), "the replacement serving version 1")
        assert "restarting in" in index.log()
        wait_until(lambda: len(_listening_workers(index.process.pid, index.port)) == 2
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
