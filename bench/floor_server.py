"""``python -m bench.floor_server --port 0 [--workers N]``: the serving floor.

An ``IndexService`` whose Recommend and SimilarArtists answer an empty response at once: no model,
no lookup, the request never read. Everything else is the index service's own: the same proto,
``musicrec.rpc.server.build_server`` with the same ``ServerConfig`` (error mapping
interceptor, health, reflection, message limits, max concurrent RPCs), the same event loop
choice (``index_service.app.loop_factory``: uvloop when installed) and, with ``--workers N``,
the same supervisor (``index_service.supervisor``: N processes on one port with SO_REUSEPORT).
What a Recommend costs beyond this floor is the service's own work; the floor itself is the gRPC
runtime's, which no servicer change can remove.

Logs ``floor server listening on HOST:PORT`` once bound (with ``--workers N`` the supervisor logs
its ``listening on`` line once every worker has bound), is SERVING at once, and stops gracefully
on SIGTERM or SIGINT. Only ``bench.serving`` runs it; it is no part of the product.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from index_service.supervisor import add_worker_arguments
from musicrec.rpc.server import DEFAULT_GRACE_S, DEFAULT_MAX_CONCURRENT_RPCS

log = logging.getLogger("bench.floor_server")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=DEFAULT_MAX_CONCURRENT_RPCS,
                        help=f"as the index service's option (default {DEFAULT_MAX_CONCURRENT_RPCS})")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, metavar="SECONDS",
                        help=f"on SIGTERM, how long in-flight calls may finish (default {DEFAULT_GRACE_S:g})")
    parser.add_argument("--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"],
                        help="auto: uvloop when installed, as the index service (default auto)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_worker_arguments(parser)  # --workers N, as the index service
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def _floor_servicer():
    from musicrec.v1 import index_pb2, index_pb2_grpc

    class FloorServicer(index_pb2_grpc.IndexServiceServicer):
        """Recommend and SimilarArtists: an empty response, built per call as a real handler
        builds its own. GetIndexInfo stays the generated UNIMPLEMENTED."""

        async def Recommend(self, request, context):
            return index_pb2.RecommendResponse()

        async def SimilarArtists(self, request, context):
            return index_pb2.SimilarArtistsResponse()

    return FloorServicer()


async def serve(args: argparse.Namespace) -> int:
    """Bind, report SERVING, serve until SIGTERM/SIGINT, stop with the grace period; exit status 0."""
    from musicrec.rpc.server import ServerConfig, ServiceBinding, build_server
    from musicrec.v1 import index_pb2

    config = ServerConfig(host=args.host, port=args.port, grace_s=args.grace,
                          maximum_concurrent_rpcs=args.max_concurrent_rpcs, reuse_port=args.reuse_port)
    binding = ServiceBinding.of(index_pb2, "IndexService", _floor_servicer())
    server = build_server([binding], config)
    await server.start()
    await server.set_serving(True)
    if args.worker_number is None:
        log.info("floor server listening on %s (plaintext)", server.address)
    else:  # the supervisor announces the shared port once all workers have bound
        log.info("floor server worker %d (pid %d) bound %s", args.worker_number, os.getpid(), server.address)
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    await server.wait_for_shutdown_signal()
    await server.stop()
    log.info("floor server stopped")
    return 0


def worker_argv(args: argparse.Namespace) -> list[str]:
    """A ``--workers`` worker's command line, without the port (the supervisor adds it)."""
    return [sys.executable, "-m", "bench.floor_server", "--host", args.host, "--grace", repr(args.grace),
            "--max-concurrent-rpcs", str(args.max_concurrent_rpcs), "--event-loop", args.event_loop,
            "--log-level", args.log_level]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    worker = f" [worker {args.worker_number} pid %(process)d]" if args.worker_number is not None else ""
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s{worker}: %(message)s")
    # The index service's own process management and event loop choice, so that the floor
    # differs from it only in its handlers.
    from index_service.app import loop_factory
    from index_service.supervisor import Supervisor
    from musicrec.process_lifetime import die_with_parent

    if args.workers > 1:
        return Supervisor(worker_argv(args), args.workers, args.host, args.port, args.grace).run()
    if args.supervisor_pid is not None:
        die_with_parent(signal.SIGTERM, parent_pid=args.supervisor_pid)
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
            return runner.run(serve(args))
    except (OSError, ValueError) as exc:  # cannot bind
        log.error("cannot start: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
