"""Prometheus metrics of both services: what is recorded, and the ``/metrics`` endpoint.

Every name is listed, with its labels, in docs/operations.md. Recording is cheap by design:

- RPCs are recorded by the error-mapping wrapper ``musicrec.rpc.interceptor`` puts around each
  handler once, at registration (no interceptor pipeline per call), into one ``MethodRecorder``
  per method: plain integers on the event loop thread, no lock, no label lookup. The server adds
  them to the prometheus_client metrics once a second (``RpcMetrics.flush``) and when it stops,
  so /metrics lags the calls by up to a second.
- Version and job metrics change only on swaps, refusals and training events.
- The precomputed answers are counted by ``ServingModel`` as a plain integer and added to the
  counter about once a second (``PrecomputedAnswers.flush``), not per call.

Each service builds its own ``CollectorRegistry`` (tests run several servers in one process).
With ``--workers N`` the index workers record into prometheus_client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, one directory per supervisor run) and the supervisor serves the
aggregate on one port (``multiprocess_registry``): counters and histograms summed over workers,
in-flight summed over live workers, the per-version gauges one series per live worker (``pid``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from http.server import ThreadingHTTPServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import Metric

# Handling latency buckets, seconds: 0.1 ms .. 1 s (a served call takes a fraction of a ms).
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Training job duration buckets, seconds: 10 s .. 4 h.
JOB_DURATION_BUCKETS_S = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
# Why a version was refused (the ``reason`` label): a fixed set, so the series stay few.
REFUSAL_REASONS = ("invalid", "unreadable", "warm_up")
# How often calls counted in plain numbers reach the metrics (see MethodRecorder), seconds.
FLUSH_INTERVAL_S = 1.0


def new_registry(*, process_metrics: bool = True) -> CollectorRegistry:
    """A registry with the client's default process, platform and GC collectors (the process
    ones only where they describe this process: not in a multiprocess worker)."""
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        for default in (PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(default)
    return registry


class MethodRecorder:
    """One RPC method's calls, counted in plain numbers: ``started()`` when its handler begins,
    ``finished(code_name, seconds)`` when it ends (the status code's name, e.g. "NOT_FOUND").

    Not thread-safe, on purpose: both are called on the server's event loop thread, and so is
    ``flush()``, which adds what changed since the last flush to the prometheus_client metrics
    (locks, and in multiprocess mode file writes, once a second instead of on every call)."""

    __slots__ = ("in_flight", "codes", "buckets", "seconds", "_metrics", "_labels", "_latency", "_gauge",
                 "_flushed_codes", "_flushed_buckets", "_flushed_seconds")

    def __init__(self, metrics: "RpcMetrics", service: str, method: str):
        self.in_flight = 0
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one: above the largest bound
        self.seconds = 0.0
        self._metrics = metrics
        self._labels = (service, method)
        self._latency = metrics.latency.labels(service, method)
        if not (hasattr(self._latency, "_buckets") and hasattr(self._latency, "_sum")):
            raise RuntimeError("this prometheus_client's Histogram has no _buckets/_sum: update musicrec.metrics")
        self._gauge = metrics.in_flight.labels(service, method)
        self._flushed_codes: dict[str, int] = {}
        self._flushed_buckets = [0] * len(self.buckets)
        self._flushed_seconds = 0.0

    def started(self) -> None:
        self.in_flight += 1

    def finished(self, code: str, seconds: float) -> None:
        self.in_flight -= 1
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        # Prometheus buckets are "<= bound": the first bound not below ``seconds``.
        self.buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.seconds += seconds

    def flush(self) -> None:
        """Add the calls since the last flush to the metrics (on the thread that records)."""
        for code, count in self.codes.items():
            added = count - self._flushed_codes.get(code, 0)
            if added:
                self._metrics.handled.labels(*self._labels, code).inc(added)
                self._flushed_codes[code] = count
        for index, count in enumerate(self.buckets):
            added = count - self._flushed_buckets[index]
            if added:
                _add_to_bucket(self._latency, index, added)
                self._flushed_buckets[index] = count
        if self.seconds != self._flushed_seconds:
            _add_to_sum(self._latency, self.seconds - self._flushed_seconds)
            self._flushed_seconds = self.seconds
        self._gauge.set(self.in_flight)


def _add_to_bucket(histogram, index: int, count: int) -> None:
    """Add ``count`` observations to bucket ``index`` of a histogram child (prometheus_client
    stores each bucket's own count, made cumulative when exposed; it has no public call for this)."""
    histogram._buckets[index].inc(count)  # noqa: SLF001


def _add_to_sum(histogram, seconds: float) -> None:
    histogram._sum.inc(seconds)  # noqa: SLF001


class RpcMetrics:
    """RPCs handled (by service, method, status code), their handling time and those in flight.
    Calls are counted by ``MethodRecorder``s and reach the metrics when ``flush()`` runs (the
    server does so every ``FLUSH_INTERVAL_S`` seconds and when it stops)."""

    def __init__(self, registry: CollectorRegistry):
        self.handled = Counter("musicrec_rpc_handled", "RPCs handled, by service, method and status code",
                               ("service", "method", "code"), registry=registry)
        self.latency = Histogram("musicrec_rpc_handling_seconds",
                                 "Time from the handler's start to its return, by service and method",
                                 ("service", "method"), buckets=LATENCY_BUCKETS_S, registry=registry)
        self.in_flight = Gauge("musicrec_rpc_in_flight",
                               "RPCs being handled at the last update (each second), by service and method",
                               ("service", "method"), multiprocess_mode="livesum", registry=registry)
        self._recorders: dict[str, MethodRecorder] = {}

    def method(self, full_method: str) -> MethodRecorder:
        """The recorder of ``/package.Service/Method`` (one per method, however many handlers
        serve it: a server registers each method both generically and by name)."""
        recorder = self._recorders.get(full_method)
        if recorder is None:
            service, _, method = full_method.lstrip("/").rpartition("/")
            recorder = self._recorders[full_method] = MethodRecorder(self, service, method)
        return recorder

    def flush(self) -> None:
        """Add every recorder's calls since the last flush to the metrics (on the loop thread)."""
        for recorder in list(self._recorders.values()):
            recorder.flush()


class IndexMetrics:
    """The index service's metrics: its RPCs and the versions it serves, loads and refuses."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.rpc = RpcMetrics(registry)
        # Per-worker state: one series per live worker process under --workers.
        per_worker = {"multiprocess_mode": "liveall", "registry": registry}
        self.version = Gauge("musicrec_index_model_version", "Model version being served (0: none yet)",
                             **per_worker)
        self.load_seconds = Gauge("musicrec_index_model_load_seconds",
                                  "Time taken to validate, load and warm up the served version", **per_worker)
        self.last_swap = Gauge("musicrec_index_last_swap_timestamp_seconds",
                               "Unix time the served version was swapped in", **per_worker)
        self.hit_rate = Gauge("musicrec_index_model_hit_rate_at_10",
                              "HR@10 of the served version, from its manifest", **per_worker)
        self.ndcg = Gauge("musicrec_index_model_ndcg_at_10",
                          "NDCG@10 of the served version, from its manifest", **per_worker)
        self.search_method = Gauge("musicrec_index_search_method",
                                   "1 for the search method in use, by query kind (recommend, similar)",
                                   ("kind", "method"), **per_worker)
        self.loaded = Counter("musicrec_index_versions_loaded", "Versions validated, loaded and swapped in",
                              registry=registry)
        self.refused = Counter("musicrec_index_versions_refused", "Versions refused, by reason",
                               ("reason",), registry=registry)
        self.precomputed = Counter("musicrec_index_precomputed_answers",
                                   "Answers taken from the version's precomputed lists (a batch entry "
                                   "counts one)", registry=registry)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
        self._methods_set: list[tuple[str, str]] = []

    def version_swapped(self, version: int, load_seconds: float, metrics: Mapping[str, float],
                        methods: Mapping[str, str]) -> None:
        """A version was swapped in. ``metrics``: its manifest's evaluation metrics;
        ``methods``: query kind -> search method in use."""
        self.loaded.inc()
        self.version.set(version)
        self.load_seconds.set(load_seconds)
        self.last_swap.set(time.time())
        self.hit_rate.set(float(metrics.get("hit_rate_at_10", float("nan"))))
        self.ndcg.set(float(metrics.get("ndcg_at_10", float("nan"))))
        for labels in self._methods_set:
            self.search_method.labels(*labels).set(0)
        self._methods_set = sorted(methods.items())
        for labels in self._methods_set:
            self.search_method.labels(*labels).set(1)

    def version_refused(self, reason: str) -> None:
        """A version was refused; ``reason`` one of ``REFUSAL_REASONS``."""
        self.refused.labels(reason if reason in REFUSAL_REASONS else "invalid").inc()


class PrecomputedAnswers:
    """Adds the served models' ``precomputed_answers`` integers to a counter (call ``flush``
    periodically and after swaps): per-call counting stays a plain integer increment."""

    def __init__(self, counter: Counter):
        self._counter = counter
        self._model = None
        self._seen = 0

    def flush(self, model) -> None:
        """Count what the served ``model`` (or None) answered from its lists since the last flush
        (a model newly served: since it was swapped in, its count starting at 0 then)."""
        previous = self._model
        if previous is not None:
            self._counter.inc(previous.precomputed_answers - self._seen)
        if model is not previous:
            self._model, self._seen = model, 0
            if model is not None:
                self._counter.inc(model.precomputed_answers)
        if model is not None:
            self._seen = model.precomputed_answers


class TrainerMetrics:
    """The trainer's metrics: its RPCs, jobs by final state and duration, the running job's
    progress, the last published version."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.rpc = RpcMetrics(registry)
        self.jobs = Counter("musicrec_trainer_jobs", "Training jobs ended, by final state", ("state",),
                            registry=registry)
        for state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            self.jobs.labels(state)
        self.duration = Histogram("musicrec_trainer_job_duration_seconds",
                                  "Time from a job's start to its end (any final state)",
                                  buckets=JOB_DURATION_BUCKETS_S, registry=registry)
        self.running = Gauge("musicrec_trainer_job_running", "1 while a training job runs", registry=registry)
        self.samples_per_second = Gauge("musicrec_trainer_job_samples_per_second",
                                        "Training throughput of the running job's last epoch (triples per "
                                        "second; 0 when no job runs)", registry=registry)
        self.loss = Gauge("musicrec_trainer_job_loss", "Mean BPR loss of the running job's last epoch "
                          "(NaN when no job runs)", registry=registry)
        self.loss.set(float("nan"))
        self.published_version = Gauge("musicrec_trainer_last_published_version",
                                       "Last version this trainer published (0: none)", registry=registry)
        self.published_hit_rate = Gauge("musicrec_trainer_last_published_hit_rate_at_10",
                                        "HR@10 of the last published version", registry=registry)
        self.published_hit_rate.set(float("nan"))

    def job_started(self) -> None:
        self.running.set(1)
        self.samples_per_second.set(0)
        self.loss.set(float("nan"))

    def job_progress(self, samples_per_second: float, loss: float) -> None:
        """An epoch ended (only epochs that trained carry samples/s)."""
        if samples_per_second > 0:
            self.samples_per_second.set(samples_per_second)
            self.loss.set(loss)

    def job_ended(self, state: str, duration_s: float | None) -> None:
        self.jobs.labels(state).inc()
        if duration_s is not None:
            self.duration.observe(max(0.0, duration_s))
        self.running.set(0)
        self.samples_per_second.set(0)
        self.loss.set(float("nan"))

    def published(self, version: int, metrics: Mapping[str, float]) -> None:
        self.published_version.set(version)
        self.published_hit_rate.set(float(metrics.get("hit_rate_at_10", float("nan"))))


class MetricsEndpoint:
    """``/metrics`` over HTTP for ``registry`` on ``host:port`` (0: a free port; see ``.port``).
    Serves from a daemon thread; ``close()`` stops it. OSError naming the address if it cannot bind."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int):
        self._server: ThreadingHTTPServer
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.host = host
        self.port: int = self._server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _WorkersProcessCollector:
    """The standard ``process_*`` metrics of the supervisor and each live worker, with a
    ``worker`` label ("0": the supervisor): a worker's own process collector would describe no one
    in multiprocess mode, which reads only the workers' files."""

    def __init__(self, pids: Callable[[], Iterable[tuple[str, int]]]):
        self._pids = pids

    def collect(self):
        families: dict[str, Metric] = {}
        for worker, pid in self._pids():
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
        return list(families.values())


def multiprocess_registry(directory: str, pids: Callable[[], Iterable[tuple[str, int]]]) -> CollectorRegistry:
    """The registry a ``--workers`` supervisor serves: the workers' multiprocess files in
    ``directory``, and the process metrics of ``pids()`` ((worker label, pid) pairs)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(_WorkersProcessCollector(pids))
    return registry


def mark_worker_dead(directory: str, pid: int) -> None:
    """Drop a dead worker's live gauges (in flight, its version) from the aggregate."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)
