"""The running index service: gRPC server, health, and the version watcher, wired together.

Health is NOT_SERVING until the first valid version is swapped in, then SERVING for as long as a
version is held (a later bad version or an emptied models directory does not change that).

With ``metrics`` on, every RPC, swap and refusal is recorded (``index_service.metrics.IndexMetrics``)
and, with a ``metrics_port``, served at ``/metrics``; the precomputed-answer count is added to its
counter by the server's periodic flush of the RPC counts (``RpcMetrics.also_on_flush``) and after
each swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from threadpoolctl import threadpool_limits

from index_service.holder import ModelHolder, ServedVersion
from index_service.live import DEFAULT_MAX_USERS, LiveState
from index_service.live_log import DEFAULT_POLL_INTERVAL_S, LiveLog
from index_service.metrics import IndexMetrics, PrecomputedAnswers
from index_service.servicer import SERVICE_NAME, IndexServicer, index_binding
from index_service.watcher import VersionWatcher
from musicrec.metrics import MetricsEndpoint, new_registry
from musicrec.rpc.auth import BearerTokenInterceptor, method_path
from musicrec.rpc.server import GrpcServer, ServerConfig, build_server, freeze_long_lived
from play_log import SchemaTooNew

log = logging.getLogger(__name__)

# The RPCs a configured token protects: the writes to the play log.
WRITE_RPCS = ("RecordPlays", "ForgetUser")


@dataclass(frozen=True)
class IndexServiceConfig:
    """Everything the service needs. Times in seconds.

    ``pinned_version``: serve only this version (rollback), never swap automatically.
    ``recommend_method``/``similar_method``: "exact" or "annoy" to override the manifests' choice.
    ``precomputed``: answer from the versions' precomputed lists where they can (False: search only).
    ``worker``: this process is worker number N of a ``--workers`` supervisor (which logs the
    ``listening on`` line once for all of them).
    ``metrics``: record Prometheus metrics; ``metrics_port``: serve them on ``metrics_host``
    (0: a free port; None: not served here); ``metrics_multiprocess``: a ``--workers`` worker,
    recording into the supervisor's multiprocess directory (no process metrics of its own).
    ``events_url``: the play log (None: RecordPlays and its kin answer FAILED_PRECONDITION);
    ``live_max_users``: listeners kept live; ``events_poll_interval_s``: how often the log is read.
    ``auth_token``: required by the play-log writes (RecordPlays, ForgetUser) when set.
    """

    models_dir: Path
    server: ServerConfig = ServerConfig(port=50052)
    poll_interval_s: float = 1.0
    pinned_version: int | None = None
    recommend_method: str | None = None
    similar_method: str | None = None
    precomputed: bool = True
    worker: int | None = None
    metrics: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_multiprocess: bool = False
    events_url: str | None = None
    live_max_users: int = DEFAULT_MAX_USERS
    events_poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    auth_token: str | None = None


def loop_factory(choice: str):
    """The event loop constructor for ``--event-loop`` ("auto", "uvloop" or "asyncio"; None:
    asyncio's default). "auto" takes uvloop when installed."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("--event-loop uvloop: uvloop is not installed (pip install musicrec[fast])") from None
        return None
    return uvloop.new_event_loop


class IndexServiceApp:
    """Start with ``await app.start()`` (binds, serves, starts watching); ``await app.stop()``."""

    def __init__(self, config: IndexServiceConfig):
        self.config = config
        self.holder = ModelHolder()
        self.metrics: IndexMetrics | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        self._precomputed: PrecomputedAnswers | None = None
        if config.metrics or config.metrics_port is not None:
            self.metrics = IndexMetrics(new_registry(process_metrics=not config.metrics_multiprocess))
            self._precomputed = PrecomputedAnswers(self.metrics.precomputed)
            self.metrics.rpc.also_on_flush(self._flush_precomputed)
        self.watcher = VersionWatcher(config.models_dir, self.holder, pinned=config.pinned_version,
                                      recommend_method=config.recommend_method,
                                      similar_method=config.similar_method,
                                      precomputed=config.precomputed,
                                      on_refused=None if self.metrics is None else self.metrics.version_refused)
        self.live_log: LiveLog | None = None
        if config.events_url is not None:
            self.live_log = LiveLog(config.events_url, self.holder, LiveState(config.live_max_users),
                                    config.events_poll_interval_s)
        self.servicer = IndexServicer(self.holder, pinned=config.pinned_version is not None,
                                      rejected=lambda: self.watcher.rejected, live=self.live_log)
        self.server: GrpcServer | None = None
        self._watch_task: asyncio.Task | None = None
        self._blas_limit: threadpool_limits | None = None

    @property
    def port(self) -> int:
        assert self.server is not None, "not started"
        return self.server.port

    async def start(self) -> None:
        """Bind and start the server (health NOT_SERVING), then start polling the models dir.

        Limits BLAS to one thread until ``stop()``: a query is one small matrix-vector product,
        and BLAS worker threads only fight gRPC's threads for the cores (a longer tail, no faster
        median)."""
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        interceptors = [] if self.config.auth_token is None else [BearerTokenInterceptor(
            self.config.auth_token, [method_path(SERVICE_NAME, rpc) for rpc in WRITE_RPCS])]
        if self.live_log is not None:
            try:
                await self.live_log.start()
            except SchemaTooNew as exc:
                raise ValueError(exc.message) from None
        self.server = build_server([index_binding(self.servicer)], self.config.server, interceptors,
                                   metrics=None if self.metrics is None else self.metrics.rpc)
        if self.metrics is not None and self.config.metrics_port is not None:
            self.metrics_endpoint = MetricsEndpoint(self.metrics.registry, self.config.metrics_host,
                                                    self.config.metrics_port)
        await self.server.start()
        # Scripts wait for "listening on HOST:PORT"; a worker must not announce the shared port.
        what = ("index service listening on" if self.config.worker is None
                else f"index service worker {self.config.worker} (pid {os.getpid()}) bound")
        log.info("%s %s (%s); models dir %s%s%s%s", what, self.server.address,
                 "TLS" if self.server.tls else "plaintext", self.config.models_dir,
                 f", pinned to version {self.config.pinned_version}" if self.config.pinned_version else "",
                 f"; metrics on {self.metrics_endpoint.url}" if self.metrics_endpoint else "",
                 f"; play log {self.live_log.where}" if self.live_log is not None else "")
        self._watch_task = asyncio.create_task(
            self.watcher.run(self.config.poll_interval_s, self._on_swap), name="version-watcher")

    async def _on_swap(self, served: ServedVersion) -> None:
        assert self.server is not None
        if self.metrics is not None:
            model = served.model
            self.metrics.version_swapped(
                served.version, served.load_duration_ms / 1000.0, model.manifest.metrics,
                {"recommend": model.recommend_params.method, "similar": model.similar_params.method})
            self._precomputed.flush(model)
        await self.server.set_serving(True)
        freeze_long_lived()  # the new version's objects live until the next swap

    def _flush_precomputed(self) -> None:
        served = self.holder.current
        self._precomputed.flush(None if served is None else served.model)

    async def stop(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING, stop watching, let in-flight calls finish (``grace_s``), unload."""
        if self.server is not None:
            await self.server.health.enter_graceful_shutdown()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self.server is not None:
            await self.server.stop(grace_s)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
            self.metrics_endpoint = None
        if self.live_log is not None:
            await self.live_log.stop()
        self.holder.clear()
        if self._blas_limit is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None

    async def serve_until_signal(self, on_started: Callable[[], None] | None = None) -> int:
        """Start, serve until SIGTERM/SIGINT, shut down gracefully; the process exit status (0).
        ``on_started`` is called once the port is bound and the server started."""
        await self.start()
        assert self.server is not None
        if on_started is not None:
            on_started()
        await self.server.wait_for_shutdown_signal()
        await self.stop()
        log.info("index service stopped")
        return 0
