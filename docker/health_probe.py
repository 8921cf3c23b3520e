"""Container health check over the standard gRPC health protocol (``grpc.health.v1.Health/Check``).

    python health_probe.py [--addr HOST:PORT] [--service NAME] [--timeout SECONDS]

Exits 0 when the server answers SERVING, 1 otherwise (NOT_SERVING, UNKNOWN, unknown service,
unreachable, or no answer within the timeout), printing one line that Docker keeps in
``docker inspect`` (``.State.Health.Log``). The musicrec services report NOT_SERVING until a model
version is loaded and again while shutting down, so "healthy" means "ready".

Defaults: ``--addr`` from ``$MUSICREC_HEALTH_ADDR`` (else 127.0.0.1:50051), ``--service`` "" (the
whole server), ``--timeout`` 3 seconds. Needs only grpcio and grpcio-health-checking, which both
images have.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_ADDR = "127.0.0.1:50051"


def check(addr: str, service: str = "", timeout_s: float = 3.0) -> tuple[bool, str]:
    """One health check of ``service`` at ``addr``; (serving?, what was seen)."""
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gRPC health check (exit 0 when SERVING)")
    parser.add_argument("--addr", default=os.environ.get("MUSICREC_HEALTH_ADDR", DEFAULT_ADDR),
                        help="server address host:port (default: $MUSICREC_HEALTH_ADDR or %(default)s)")
    parser.add_argument("--service", default="", help='service name to check ("" = the whole server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    args = parser.parse_args(argv)
    serving, seen = check(args.addr, args.service, args.timeout)
    print(f"{args.addr} {args.service or '(server)'}: {seen}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
