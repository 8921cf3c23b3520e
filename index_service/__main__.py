"""``python -m index_service --models-dir DIR [--port 50052] ...``: run the index service.

Logs ``index service listening on HOST:PORT`` once the port is bound (scripts can wait for it),
serves until SIGTERM or SIGINT, then shuts down gracefully and exits 0.
"""

from __future__ import annotations

import os

# One BLAS thread (see IndexServiceApp.start, which also enforces it with threadpoolctl): set
# before numpy is imported, BLAS does not even start its worker threads. An explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m index_service",
        description="Serve Recommend / SimilarArtists over gRPC from the newest model version in MODELS_DIR.")
    parser.add_argument("--models-dir", required=True, type=Path,
                        help="directory the trainer publishes versions to (may be empty or missing at start)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=50052, help="port to bind; 0 picks a free one (default 50052)")
    parser.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                        help="how often to look for new versions (default 1.0)")
    parser.add_argument("--version", type=int, default=None, metavar="N",
                        help="serve only version N (rollback); no automatic swaps")
    parser.add_argument("--tls-cert", default=None, help="PEM server certificate (with --tls-key): serve TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                        help="on SIGTERM, how long in-flight calls may finish (default 5)")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=1000,
                        help="calls in flight beyond this get RESOURCE_EXHAUSTED (default 1000)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.poll_interval <= 0:
        parser.error("--poll-interval must be positive")
    if args.version is not None and args.version < 1:
        parser.error("--version must be a positive integer")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.grace < 0:
        parser.error("--grace must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from index_service.app import IndexServiceApp, IndexServiceConfig
    from musicrec.rpc.server import ServerConfig

    try:
        server = ServerConfig(host=args.host, port=args.port, tls_cert_file=args.tls_cert,
                              tls_key_file=args.tls_key, grace_s=args.grace,
                              maximum_concurrent_rpcs=args.max_concurrent_rpcs)
    except ValueError as exc:
        logging.getLogger("index_service").error("%s", exc)
        return 2
    config = IndexServiceConfig(models_dir=args.models_dir, server=server, poll_interval_s=args.poll_interval,
                                pinned_version=args.version)
    try:
        return asyncio.run(IndexServiceApp(config).serve_until_signal())
    except (OSError, ValueError) as exc:  # cannot bind, unreadable TLS files
        logging.getLogger("index_service").error("cannot start: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
