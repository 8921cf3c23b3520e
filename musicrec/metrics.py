"""Prometheus metrics both services share: RPCs, the registry, and the ``/metrics`` endpoint
(each service's own metrics: ``index_service.metrics``, ``trainer_service.metrics``).

Every name is listed, with its labels, in docs/operations.md. Recording is cheap by design:

- RPCs are recorded by the error-mapping wrapper ``musicrec.rpc.error_contract`` puts around each
  method's handler once (on its first call), into one ``MethodRecorder``
  per method: plain integers on the event loop thread, no lock, no label lookup. The server adds
  them to the prometheus_client metrics once a second (``RpcMetrics.flush``, the one periodic
  flush; a service adds its own plain counts to it with ``also_on_flush``) and when it stops,
  so /metrics lags the calls by up to a second.

Each service builds its own ``CollectorRegistry`` (tests run several servers in one process).
With ``--workers N`` the index workers record into prometheus_client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, one directory per supervisor run) and the supervisor serves the
aggregate on one port (``multiprocess_registry``): counters and histograms summed over workers,
in-flight summed over live workers, the per-version gauges one series per live worker (``pid``).
"""

from __future__ import annotations

import glob
import os
from bisect import bisect_left
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

# Handling latency buckets, seconds: 0.1 ms .. 1 s (a served call takes a fraction of a ms).
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
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

    __slots__ = ("in_flight", "codes", "buckets", "seconds", "_metrics", "_labels", "_bucket_calls", "_time",
                 "_gauge", "_flushed_codes", "_flushed_buckets", "_flushed_seconds")

    def __init__(self, metrics: "RpcMetrics", service: str, method: str):
        self.in_flight = 0
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one: above the largest bound
        self.seconds = 0.0
        self._metrics = metrics
        self._labels = (service, method)
        self._bucket_calls = [metrics.bucket_calls.labels(service, method, le) for le in _BUCKET_LABELS]
        self._time = metrics.handling_time.labels(service, method)
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
                self._bucket_calls[index].inc(added)
                self._flushed_buckets[index] = count
        if self.seconds != self._flushed_seconds:
            self._time.inc(self.seconds - self._flushed_seconds)
            self._flushed_seconds = self.seconds
        self._gauge.set(self.in_flight)


# The handling-time histogram is recorded as two counters (calls per bucket, not cumulative; total
# seconds) that ``_HandlingHistogram`` exposes as the histogram. prometheus_client's Histogram has
# no public call adding several observations at once, and observing each call costs microseconds
# on the request path; counters take ``inc(n)`` and sum over ``--workers`` processes as they are.
HANDLING_HISTOGRAM = "musicrec_rpc_handling_seconds"
_BUCKET_CALLS = "musicrec_rpc_handling_seconds_bucket_calls"
_HANDLING_TIME = "musicrec_rpc_handling_seconds_time"
_BUCKET_LABELS = tuple(floatToGoString(bound) for bound in LATENCY_BUCKETS_S) + ("+Inf",)
_HANDLING_DOC = "Time from the handler's start to its return, by service and method"


def _with_handling_histogram(families: Iterable[Metric]) -> list[Metric]:
    """``families`` with the two handling-time counters replaced by the histogram they record."""
    calls: dict[tuple[str, str], dict[str, float]] = {}
    seconds: dict[tuple[str, str], float] = {}
    out = []
    for family in families:
        if family.name not in (_BUCKET_CALLS, _HANDLING_TIME):
            out.append(family)
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # the counter's _created
            key = (sample.labels["service"], sample.labels["method"])
            if family.name == _BUCKET_CALLS:
                per_bucket = calls.setdefault(key, {})
                per_bucket[sample.labels["le"]] = per_bucket.get(sample.labels["le"], 0.0) + sample.value
            else:
                seconds[key] = seconds.get(key, 0.0) + sample.value
    histogram = HistogramMetricFamily(HANDLING_HISTOGRAM, _HANDLING_DOC, labels=("service", "method"))
    for key in sorted(calls):
        running = 0.0
        cumulative = []
        for le in _BUCKET_LABELS:
            running += calls[key].get(le, 0.0)
            cumulative.append((le, running))
        histogram.add_metric(list(key), cumulative, seconds.get(key, 0.0))
    out.append(histogram)
    return out


class _HandlingHistogram:
    """A collector exposing ``source``'s handling-time counters as the histogram (see above)."""

    def __init__(self, source):
        self._source = source

    def collect(self) -> list[Metric]:
        return _with_handling_histogram(self._source.collect())


class RpcMetrics:
    """RPCs handled (by service, method, status code), their handling time and those in flight.
    Calls are counted by ``MethodRecorder``s and reach the metrics when ``flush()`` runs (the
    server does so every ``FLUSH_INTERVAL_S`` seconds and when it stops)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.handled = Counter("musicrec_rpc_handled", "RPCs handled, by service, method and status code",
                               ("service", "method", "code"), registry=registry)
        # Registered with a registry of their own, exposed through ``_HandlingHistogram``.
        counters = CollectorRegistry(auto_describe=True)
        self.bucket_calls = Counter(_BUCKET_CALLS, "Calls per handling-time bucket (not cumulative)",
                                    ("service", "method", "le"), registry=counters)
        self.handling_time = Counter(_HANDLING_TIME, "Total handling time, seconds", ("service", "method"),
                                     registry=counters)
        registry.register(_HandlingHistogram(counters))
        self.in_flight = Gauge("musicrec_rpc_in_flight",
                               "RPCs being handled at the last update (each second), by service and method",
                               ("service", "method"), multiprocess_mode="livesum", registry=registry)
        self._recorders: dict[str, MethodRecorder] = {}
        self._also_on_flush: list[Callable[[], None]] = []

    def also_on_flush(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` on every ``flush()`` too (a service's own counts kept in plain numbers),
        so one periodic flush serves them all."""
        self._also_on_flush.append(flush)

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
        for flush in self._also_on_flush:
            flush()


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


class _WorkerFiles:
    """The workers' multiprocess files in ``directory``, merged as prometheus_client's
    ``MultiProcessCollector`` merges them, less the files a starting worker has created but not
    yet sized (0 bytes): one read at that moment failed the whole scrape (``struct.error``, HTTP
    500), as a worker restarting after a kill once did under a scrape. Such a file holds nothing
    yet, so leaving it out loses no sample."""

    def __init__(self, directory: str):
        self._directory = directory

    def collect(self) -> list[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = []
        for path in glob.glob(os.path.join(self._directory, "*.db")):
            try:
                if os.path.getsize(path) > 0:
                    files.append(path)
            except FileNotFoundError:  # a dead worker's live gauges, removed since the glob
                pass
        return list(MultiProcessCollector.merge(files, accumulate=True))


def multiprocess_registry(directory: str, pids: Callable[[], Iterable[tuple[str, int]]]) -> CollectorRegistry:
    """The registry a ``--workers`` supervisor serves: the workers' multiprocess files in
    ``directory``, and the process metrics of ``pids()`` ((worker label, pid) pairs)."""
    registry = CollectorRegistry()
    registry.register(_HandlingHistogram(_WorkerFiles(directory)))
    registry.register(_WorkersProcessCollector(pids))
    return registry


def mark_worker_dead(directory: str, pid: int) -> None:
    """Drop a dead worker's live gauges (in flight, its version) from the aggregate."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)
