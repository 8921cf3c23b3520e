"""The index service's own Prometheus metrics: the versions it serves, loads and refuses, and the
answers taken from precomputed lists (its RPCs: ``musicrec.metrics.RpcMetrics``). Every name is
listed, with its labels, in docs/operations.md. Version metrics change only on swaps and refusals;
the precomputed answers are counted by ``ServingModel`` as a plain integer and added to the
counter by the server's periodic flush (``PrecomputedAnswers.flush``), not per call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from musicrec.metrics import RpcMetrics

# Why a version was refused (the ``reason`` label): a fixed set, so the series stay few.
REFUSAL_REASONS = ("invalid", "unreadable", "warm_up")


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
