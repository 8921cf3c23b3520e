"""Reproduce grpc/grpc#43055 here: start N short children while a gRPC client in this process is
busy, with or without a ``preexec_fn`` (which makes ``subprocess`` fork instead of vfork), or
through ``musicrec.process_lifetime.tied_argv`` as the harness does; print how many aborted.

    .venv/bin/python scripts/fork_abort_repro.py preexec|plain|tied [N]
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from musicrec.process_lifetime import tied_argv


def main() -> None:
    mode = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    if mode not in ("preexec", "plain", "tied"):
        raise SystemExit("mode: preexec, plain or tied")
    server = grpc.server(futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    aborted = 0
    command = [sys.executable, "-c", "pass"]
    for _ in range(count):
        extra = {"preexec_fn": lambda: None} if mode == "preexec" else {}
        argv = tied_argv(command) if mode == "tied" else command
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, **extra)
        _, err = child.communicate(timeout=60)
        if child.returncode != 0:
            aborted += 1
            print(f"exit {child.returncode}: {err.decode(errors='replace').strip()[-200:]}")
    stop.set()
    loader.join(timeout=10)
    channel.close()
    server.stop(None)
    print(f"{mode}: {aborted} of {count} children aborted")


if __name__ == "__main__":
    main()
