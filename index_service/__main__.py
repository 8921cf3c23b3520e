"""``python -m index_service --models-dir DIR [--port 50052] ...``: run the index service.

Logs ``index service listening on HOST:PORT`` once the port is bound (scripts can wait for it),
serves until SIGTERM or SIGINT, then shuts down gracefully and exits 0. Exits 2 for a bad flag,
1 when it cannot start (one line saying why: the port is taken, the TLS files cannot be read) and 1,
with the traceback logged, for anything else that fails, while starting, serving or stopping.

``--workers N`` (N > 1) runs N such processes on one port under a supervisor
(``index_service.supervisor``); one process is limited to about one core by the GIL.
``--metrics-port N`` serves Prometheus metrics (with ``--workers``, all workers' on that one port),
``--log-format json`` writes JSON log lines (docs/operations.md).
The event loop is uvloop when it is installed (``pip install musicrec[fast]``; less server CPU
per call than asyncio's loop), unless ``--event-loop asyncio``.
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

from index_service.supervisor import add_worker_arguments  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m index_service",
        description="Serve Recommend / SimilarArtists over gRPC from the newest model version in MODELS_DIR.")
    parser.add_argument("--models-dir", required=True, type=Path,
                        help="directory the trainer publishes versions to (may be empty or missing at start)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=50052, help="port to bind; 0 picks a free one (default 50052)")
    parser.add_argument("--poll-interval", dest="poll_interval_s", type=float, default=1.0, metavar="SECONDS",
                        help="how often to look for new versions (default 1.0)")
    parser.add_argument("--version", type=int, default=None, metavar="N",
                        help="serve only version N (rollback); no automatic swaps")
    parser.add_argument("--tls-cert", default=None, help="PEM server certificate (with --tls-key): serve TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument("--grace", dest="grace_s", type=float, default=5.0, metavar="SECONDS",
                        help="on SIGTERM, how long in-flight calls may finish (default 5)")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=1000,
                        help="calls in flight beyond this get RESOURCE_EXHAUSTED (default 1000)")
    parser.add_argument("--max-connection-age", dest="max_connection_age_s", type=float, default=None,
                        metavar="SECONDS",
                        help="close client connections after SECONDS (in-flight calls get --grace), so "
                             "clients balancing over DNS (dns:///, round_robin) find new replicas; default: never")
    parser.add_argument("--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"],
                        help="auto: uvloop when installed, else asyncio's own (default auto)")
    parser.add_argument("--no-precomputed", action="store_true",
                        help="answer every request by search, ignoring the versions' precomputed lists "
                             "(for comparisons; slower)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="text lines (default) or one JSON object per line, for log shippers")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="N",
                        help="serve Prometheus metrics at http://HOST:N/metrics (0: a free port, logged); "
                             "off by default. With --workers, the supervisor serves all workers' metrics")
    parser.add_argument("--metrics-host", default=None,
                        help="address the metrics endpoint binds (default: the --host address)")
    parser.add_argument("--events", default=None, metavar="URL",
                        help="the play log RecordPlays writes and recommendations follow: sqlite:///PATH (one "
                             "host) or postgresql://USER@HOST:PORT/DB (many hosts). Without it RecordPlays, "
                             "GetUserPlays and ForgetUser answer FAILED_PRECONDITION")
    parser.add_argument("--live-max-users", type=int, default=100_000, metavar="N",
                        help="listeners with recent plays kept live (default 100000); past it the least "
                             "recently updated get the model's own answer again")
    parser.add_argument("--events-poll-interval", dest="events_poll_interval_s", type=float, default=0.1,
                        metavar="SECONDS", help="how often to read the play log for other replicas' plays (default 0.1)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="file holding the bearer token RecordPlays and ForgetUser require (default: the "
                             "MUSICREC_TRAINER_TOKEN environment variable, the trainer's; neither: no token)")
    # --workers, and what the supervisor sets on its workers' command lines.
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.poll_interval_s <= 0:
        parser.error("--poll-interval must be positive")
    if args.version is not None and args.version < 1:
        parser.error("--version must be a positive integer")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.grace_s < 0:
        parser.error("--grace must not be negative")
    if args.max_connection_age_s is not None and args.max_connection_age_s <= 0:
        parser.error("--max-connection-age must be positive")
    if args.live_max_users < 1:
        parser.error("--live-max-users must be at least 1")
    if args.events_poll_interval_s <= 0:
        parser.error("--events-poll-interval must be positive")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        parser.error("--metrics-port must be in [0, 65535]")
    return args


def worker_argv(args: argparse.Namespace) -> list[str]:
    """A ``--workers`` worker's command line: this service with the same settings, one process,
    no port (the supervisor adds the port it reserved)."""
    argv = [sys.executable, "-m", "index_service", "--models-dir", str(args.models_dir), "--host", args.host,
            "--poll-interval", repr(args.poll_interval_s), "--grace", repr(args.grace_s),
            "--max-concurrent-rpcs", str(args.max_concurrent_rpcs), "--event-loop", args.event_loop,
            "--log-level", args.log_level, "--log-format", args.log_format]
    if args.no_precomputed:
        argv.append("--no-precomputed")
    if args.max_connection_age_s is not None:
        argv += ["--max-connection-age", repr(args.max_connection_age_s)]
    if args.version is not None:
        argv += ["--version", str(args.version)]
    if args.tls_cert:
        argv += ["--tls-cert", args.tls_cert, "--tls-key", args.tls_key]
    if args.events:
        argv += ["--events", args.events, "--live-max-users", str(args.live_max_users),
                 "--events-poll-interval", repr(args.events_poll_interval_s)]
    if args.token_file is not None:
        argv += ["--token-file", str(args.token_file)]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.metrics_dir is not None:  # a --workers worker: record into the supervisor's files
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = args.metrics_dir
    from musicrec.log_format import configure_logging

    worker = f" [worker {args.worker_number} pid %(process)d]" if args.worker_number is not None else ""
    configure_logging(args.log_level, args.log_format,
                      text_format=f"%(asctime)s %(levelname)s %(name)s{worker}: %(message)s",
                      fields=None if args.worker_number is None else {"worker": args.worker_number,
                                                                        "pid": os.getpid()})
    log = logging.getLogger("index_service")
    metrics_host = args.host if args.metrics_host is None else args.metrics_host
    from musicrec.rpc.server import ServerConfig

    from musicrec.rpc.auth import TRAINER_TOKEN_ENV, load_token

    try:
        token = load_token(token_file=args.token_file, env_var=TRAINER_TOKEN_ENV)
        server = ServerConfig(host=args.host, port=args.port, tls_cert_file=args.tls_cert,
                              tls_key_file=args.tls_key, grace_s=args.grace_s,
                              maximum_concurrent_rpcs=args.max_concurrent_rpcs, reuse_port=args.reuse_port,
                              max_connection_age_s=args.max_connection_age_s)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if args.workers > 1:
        from index_service.supervisor import Supervisor

        return Supervisor(worker_argv(args), args.workers, args.host, args.port, args.grace_s,
                          metrics_port=args.metrics_port, metrics_host=metrics_host).run()

    if args.supervisor_pid is not None:
        import signal

        from musicrec.process_lifetime import die_with_parent

        die_with_parent(signal.SIGTERM, parent_pid=args.supervisor_pid)
    from index_service.app import IndexServiceApp, IndexServiceConfig, loop_factory

    config = IndexServiceConfig(models_dir=args.models_dir, server=server, poll_interval_s=args.poll_interval_s,
                                pinned_version=args.version, worker=args.worker_number,
                                precomputed=not args.no_precomputed,
                                metrics=args.metrics_port is not None or args.metrics_dir is not None,
                                metrics_port=None if args.metrics_dir is not None else args.metrics_port,
                                metrics_host=metrics_host, metrics_multiprocess=args.metrics_dir is not None,
                                events_url=args.events, live_max_users=args.live_max_users,
                                events_poll_interval_s=args.events_poll_interval_s, auth_token=token)

    started = False

    def report_ready() -> None:
        nonlocal started
        started = True
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ready\n")
            os.close(args.ready_fd)

    factory = loop_factory(args.event_loop)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(IndexServiceApp(config).serve_until_signal(report_ready))
    except Exception as exc:  # noqa: BLE001 - the process's last word: say what failed, exit 1
        if not started and isinstance(exc, (OSError, ValueError)):
            # Before serving, these are the operator's to fix (the port is taken, the TLS files
            # cannot be read, the metrics port is taken): their message says which, in one line.
            log.error("cannot start: %s", exc)
            log.debug("cannot start", exc_info=True)
        else:
            log.exception("index service failed while %s", "serving or stopping" if started else "starting")
        return 1


def run() -> None:
    """The process's entry (``python -m index_service``, the ``musicrec-index`` script): ``main``,
    then the end of the process without the interpreter's teardown, which could race gRPC's
    threads. Once ``main`` returns the service has stopped: its plays committed before they were
    acknowledged, its workers reaped."""
    from musicrec.process_lifetime import exit_without_teardown

    exit_without_teardown(main())


if __name__ == "__main__":
    run()
