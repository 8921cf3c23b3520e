"""The trainer's gRPC server: ``python -m trainer_service serve``.

Wires the job registry (history in the state dir), the job runner, the optional retraining
schedule, the optional retraining on volume (``--retrain-after-plays``: a poll of the play log's
last position, ``trainer_service.scheduler.RetrainOnVolume``) and the TrainerService servicer into a ``musicrec.rpc`` server (health, reflection,
error mapping, message limits, TLS), and does nothing else: a request's path (servicer -> runner
-> worker -> pipeline, and back as events) is described in ``trainer_service.servicer``. The trainer is ready as soon as it listens: health turns
SERVING right after the server starts.

Authentication: with a token (``MUSICREC_TRAINER_TOKEN`` or ``--token-file``), StartTraining and
CancelTraining require ``authorization: Bearer <token>`` metadata (``musicrec.rpc.auth``: missing
-> UNAUTHENTICATED, wrong -> PERMISSION_DENIED); the read-only RPCs and health stay open.

Shutdown on SIGTERM or SIGINT: health NOT_SERVING, the schedule stops, a running job is cancelled
(its child stops at the next epoch boundary, or is killed after ``--cancel-grace`` seconds; the
job ends CANCELLED and publishes nothing), in-flight RPCs get ``--grace`` seconds, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from musicrec.log_format import LOG_FORMAT_ENV, LOG_FORMATS, configure_logging
from musicrec.metrics import MetricsEndpoint, new_registry
from musicrec.rpc.auth import TRAINER_TOKEN_ENV, BearerTokenInterceptor, load_token, method_path
from musicrec.rpc.server import GrpcServer, ServerConfig, ServiceBinding, build_server
from musicrec.v1 import trainer_pb2
from trainer_service.data import parse_source
from trainer_service.job_runner import DEFAULT_CANCEL_GRACE_S, DEFAULT_MAX_WATCHERS, JobRunner
from trainer_service.jobs import JobRegistry, TrainerStateLockedError
from trainer_service.metrics import TrainerMetrics
from trainer_service.scheduler import LogPositions, RetrainOnVolume, RetrainSchedule
from trainer_service.warm_start import DEFAULT_WARM_START, WARM_STARTS
from trainer_service.servicer import TrainerServicer

log = logging.getLogger(__name__)

DEFAULT_PORT = 50051
DEFAULT_SOURCE = "synthetic:small"
STATE_DIR_NAME = ".trainer"
# Exit status when the server cannot start (port taken, state dir locked, bad arguments).
EXIT_CANNOT_START = 2
MUTATING_RPCS = ("StartTraining", "CancelTraining")
# On shutdown, how long in-flight RPCs may finish (--grace), seconds.
DEFAULT_GRACE_S = 5.0
# How often --retrain-after-plays reads the play log's last position (one indexed query), seconds.
DEFAULT_RETRAIN_POLL_S = 5.0


@dataclass(frozen=True)
class TrainerConfig:
    """Everything ``serve`` needs. ``server``: the gRPC server's address, TLS and grace period
    (as the index service's config holds it). Times in seconds; ``schedule_s`` None means no
    schedule; ``retrain_after_plays`` None means no retraining on volume (it needs
    ``events_url``); ``data_dir`` None means only the synthetic generator can be used; ``state_dir``
    None means ``models_dir/.trainer``."""

    models_dir: Path
    server: ServerConfig = ServerConfig(port=DEFAULT_PORT, grace_s=DEFAULT_GRACE_S)
    data_dir: Path | None = None
    state_dir: Path | None = None
    schedule_s: float | None = None
    default_source: str = DEFAULT_SOURCE
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S
    keep: int = 3
    max_watchers: int = DEFAULT_MAX_WATCHERS
    auth_token: str | None = None  # required by MUTATING_RPCS when set; never logged
    metrics_port: int | None = None  # serve Prometheus metrics there (0: a free port); None: off
    metrics_host: str | None = None  # None: the server's host
    events_url: str | None = None  # the play log jobs also train on; None: none
    warm_start: str = DEFAULT_WARM_START  # of jobs that do not choose one
    retrain_after_plays: int | None = None  # start a job once this many plays arrived; None: off
    retrain_poll_s: float = DEFAULT_RETRAIN_POLL_S  # how often the play log is polled for that
    standby: bool = True  # keep a training process started ahead of the next job (--no-standby: off)

    def problem(self) -> str | None:
        """What is wrong with the numbers of this config, or None."""
        if self.schedule_s is not None and not self.schedule_s > 0:
            return f"--schedule must be a positive number of seconds, got {self.schedule_s}"
        if not self.cancel_grace_s >= 0 or not self.server.grace_s >= 0:
            return "--grace and --cancel-grace must not be negative"
        if self.keep < 1:
            return f"--keep must be at least 1, got {self.keep}"
        if self.max_watchers < 1:
            return f"--max-watchers must be at least 1, got {self.max_watchers}"
        if self.retrain_after_plays is not None:
            if self.retrain_after_plays < 1:
                return f"--retrain-after-plays must be at least 1, got {self.retrain_after_plays}"
            if self.events_url is None:
                return "--retrain-after-plays needs the play log (--events URL)"
        if not self.retrain_poll_s > 0:
            return f"--retrain-poll must be a positive number of seconds, got {self.retrain_poll_s}"
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            return f"--metrics-port must be in [0, 65535], got {self.metrics_port}"
        return None

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.models_dir / STATE_DIR_NAME


async def serve(config: TrainerConfig, *, on_listening: Callable[[GrpcServer, JobRunner], None] | None = None) -> int:
    """Run the trainer until SIGTERM/SIGINT (or ``server.request_stop()``); return the exit status.

    ``on_listening(server, runner)`` is called once the server is SERVING (tests use it to learn
    the port when binding port 0).
    """
    problem = config.problem()
    if problem:
        log.error("bad configuration: %s", problem)
        return EXIT_CANNOT_START
    registry = JobRegistry(config.resolved_state_dir)
    metrics = TrainerMetrics(new_registry()) if config.metrics_port is not None else None
    try:
        # The runner checks the data dir and the default source: a trainer that could never
        # train its default source does not start.
        runner = JobRunner(
            registry, config.models_dir, data_dir=config.data_dir,
            default_source=parse_source(config.default_source), keep=config.keep,
            cancel_grace_s=config.cancel_grace_s, max_watchers=config.max_watchers, metrics=metrics,
            events_url=config.events_url, default_warm_start=config.warm_start, standby=config.standby,
        )
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return EXIT_CANNOT_START
    config.models_dir.mkdir(parents=True, exist_ok=True)
    try:
        registry.open()
    except TrainerStateLockedError as exc:
        log.error("%s", exc)
        return EXIT_CANNOT_START
    endpoint: MetricsEndpoint | None = None
    positions: LogPositions | None = None
    try:
        binding = ServiceBinding.of(trainer_pb2, "TrainerService", TrainerServicer(runner))
        interceptors = [] if config.auth_token is None else [BearerTokenInterceptor(
            config.auth_token, [method_path(binding.name, rpc) for rpc in MUTATING_RPCS])]
        try:
            server = build_server([binding], config.server, interceptors=interceptors,
                                  metrics=None if metrics is None else metrics.rpc)
            if metrics is not None:
                runner.record_last_published()
                endpoint = MetricsEndpoint(metrics.registry, config.metrics_host or config.server.host,
                                           config.metrics_port)
        except (OSError, ValueError) as exc:
            log.error("trainer cannot start: %s (is the port already taken?)" if isinstance(exc, OSError)
                      else "trainer cannot start: %s", exc)
            return EXIT_CANNOT_START
        await server.start()
        await server.set_serving(True)
        log.info("trainer listening on %s (%s); models in %s, data in %s, default source %s%s%s%s",
                 server.address, "TLS" if server.tls else "plaintext", config.models_dir,
                 config.data_dir or "(none)", config.default_source,
                 f", retraining every {config.schedule_s:g} s" if config.schedule_s else "",
                 f", retraining after {config.retrain_after_plays:,} new plays" if config.retrain_after_plays else "",
                 f"; metrics on {endpoint.url}" if endpoint else "")
        log.info("%s", f"{' and '.join(MUTATING_RPCS)} require a bearer token" if config.auth_token else
                 f"{' and '.join(MUTATING_RPCS)} are open to any client (set {TRAINER_TOKEN_ENV} or --token-file)")
        tasks = []
        if config.schedule_s:
            schedule = RetrainSchedule(config.schedule_s, runner.start_job)
            tasks.append(asyncio.create_task(schedule.run(), name="retrain-schedule"))
        if config.retrain_after_plays and config.events_url is not None:
            positions = LogPositions(config.events_url, config.models_dir)
            volume = RetrainOnVolume(config.retrain_after_plays, config.retrain_poll_s, positions, runner.start_job)
            tasks.append(asyncio.create_task(volume.run(), name="retrain-on-volume"))
        runner.start_standby()
        if on_listening is not None:
            on_listening(server, runner)

        await server.wait_for_shutdown_signal()
        _ignore_repeated_signals()
        # Health first, so clients and balancers stop sending; then the job; then the RPCs.
        await server.health.enter_graceful_shutdown()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if positions is not None:
            positions.close()
        await runner.shutdown()
        await server.stop()
        log.info("trainer stopped")
        return 0
    finally:
        if endpoint is not None:
            endpoint.close()
        registry.close()


def _ignore_repeated_signals() -> None:
    """A second SIGTERM/SIGINT (a supervisor and a process group both signalling) must not kill
    the process halfway through a clean shutdown, which is bounded by --cancel-grace + --grace."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, log.warning, "already shutting down (signal %s ignored)", signum)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's options."""
    parser.add_argument("--models-dir", required=True, type=Path,
                        help="shared models volume the trainer publishes versions to")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="directory that StartTraining file sources are relative to (and confined to); "
                             "without it only the synthetic generator can be used")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--schedule", type=float, default=None, metavar="SECONDS",
                        help="retrain from the default source every SECONDS (a tick is skipped while a job runs)")
    parser.add_argument("--default-source", default=DEFAULT_SOURCE, metavar="SPEC",
                        help="data source of StartTraining without one and of scheduled runs "
                             f"(default {DEFAULT_SOURCE}; e.g. synthetic:tiny:seed=7, hetrec:lastfm-2k, auto:.)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"where the job history lives (default MODELS_DIR/{STATE_DIR_NAME})")
    parser.add_argument("--keep", type=int, default=3, help="published versions to keep (older ones are deleted)")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate chain (with --tls-key: serve TLS)")
    parser.add_argument("--tls-key", default=None, help="PEM private key")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, metavar="SECONDS",
                        help="on shutdown, how long in-flight RPCs may finish")
    parser.add_argument("--cancel-grace", type=float, default=DEFAULT_CANCEL_GRACE_S, metavar="SECONDS",
                        help="how long a cancelled training may take to stop before it is killed")
    parser.add_argument("--max-watchers", type=int, default=DEFAULT_MAX_WATCHERS,
                        help="concurrent WatchTrainingJob streams allowed")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"file holding the bearer token StartTraining and CancelTraining require "
                             f"(default: the {TRAINER_TOKEN_ENV} environment variable; neither: no token)")
    parser.add_argument("--events", default=None, metavar="URL",
                        help="every job also trains on the play log at URL (sqlite:///PATH or postgresql://...), "
                             "through its last position when the job starts, recorded in the version")
    parser.add_argument("--warm-start", choices=WARM_STARTS, default=DEFAULT_WARM_START,
                        help="jobs that do not choose: start known users and artists from the newest version's "
                             "factors when it was trained on the same source (newest, the default), or cold (none)")
    parser.add_argument("--retrain-after-plays", type=int, default=None, metavar="N",
                        help="start a job once N plays have arrived in the play log (--events) since the newest "
                             "version's mark (beside --schedule; one job at a time)")
    parser.add_argument("--retrain-poll", type=float, default=DEFAULT_RETRAIN_POLL_S, metavar="SECONDS",
                        help="how often --retrain-after-plays reads the play log's last position")
    parser.add_argument("--standby", action=argparse.BooleanOptionalAction, default=True,
                        help="keep a training process started ahead of the next job, TensorFlow imported, so "
                             "a job skips seconds of process start (the default; it holds about 0.6 GiB with a "
                             "Last.fm 2K model while it waits); --no-standby: each job starts its own process")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    parser.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                        help="text lines (default) or one JSON object per line, for log shippers")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="N",
                        help="serve Prometheus metrics at http://HOST:N/metrics (0: a free port, logged); off by default")
    parser.add_argument("--metrics-host", default=None,
                        help="address the metrics endpoint binds (default: the --host address)")


def run_serve(args: argparse.Namespace) -> int:
    """Entry point of ``serve``: configure logging, run the server, return the exit status."""
    log_format = getattr(args, "log_format", "text")
    configure_logging(getattr(logging, str(args.log_level).upper(), logging.INFO), log_format,
                      text_format="%(asctime)s trainer %(levelname)s %(name)s: %(message)s")
    # Inherited by the training child processes, whose own logging setup can read it.
    os.environ[LOG_FORMAT_ENV] = log_format
    try:
        token = load_token(token_file=getattr(args, "token_file", None), env_var=TRAINER_TOKEN_ENV)
    except ValueError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    try:
        server = ServerConfig(host=args.host, port=args.port, tls_cert_file=args.tls_cert, tls_key_file=args.tls_key,
                              grace_s=args.grace)
    except ValueError as exc:
        log.error("trainer cannot start: %s", exc)
        return EXIT_CANNOT_START
    config = TrainerConfig(
        models_dir=args.models_dir, server=server, data_dir=args.data_dir, state_dir=args.state_dir,
        schedule_s=args.schedule, default_source=args.default_source, cancel_grace_s=args.cancel_grace,
        keep=args.keep, max_watchers=args.max_watchers, auth_token=token,
        metrics_port=getattr(args, "metrics_port", None), metrics_host=getattr(args, "metrics_host", None),
        events_url=getattr(args, "events", None), warm_start=getattr(args, "warm_start", DEFAULT_WARM_START),
        retrain_after_plays=getattr(args, "retrain_after_plays", None),
        retrain_poll_s=getattr(args, "retrain_poll", DEFAULT_RETRAIN_POLL_S),
        standby=getattr(args, "standby", True),
    )
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
