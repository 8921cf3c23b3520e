"""Publish-time search building: the IVF lists' bound, the k-means sums, and the Annoy
settings measurement where exact search serves anyway (known answers, no timing)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import ranking.ann_build as ann_build
import ranking.precompute as precompute
from ranking.ann_build import BuildSettings
from tests.test_index_precomputed import clustered_artifacts


def _probed_exact(side: precompute.ListSide, clusters, n: int, probes: int) -> np.ndarray:
    """Each query's exact top n among the artists of its probed clusters (excluded ones left out),
    ties to the lower artist: what an IVF list must be, query by query."""
    lists = np.full((side.queries.shape[0], n), -1, dtype=np.int64)
    probed = precompute._probed(side.queries, clusters.centroids_t, probes)
    for q in range(side.queries.shape[0]):
        allowed = np.isin(clusters.cluster_of, probed[q])
        allowed[side.exclude_indices[side.exclude_indptr[q]:side.exclude_indptr[q + 1]]] = False
        candidates = np.flatnonzero(allowed)
        scores = side.items[candidates] @ side.queries[q]
        best = candidates[np.lexsort((candidates, -scores))][:n]
        lists[q, :best.shape[0]] = best
    return lists


@pytest.mark.parametrize("share", [1, 2, 1000])
def test_ivf_lists_are_the_exact_top_of_the_probed_clusters(monkeypatch, share):
    """Whatever number of leading clusters sets a query's bound (all probes, half, two), an IVF
    list is exactly the top n of the artists in the clusters it probes: the bound never drops
    an artist that belongs in the list (the leading clusters are scored twice)."""
    monkeypatch.setattr(precompute, "LEADING_SHARE", share)
    art = clustered_artifacts(num_users=200, num_artists=1500)
    for side in (precompute.recommend_side(art), precompute.similar_side(art)):
        clusters = precompute._cluster(side, seed=0)
        probes = max(2, clusters.count // 3)
        assert 1 < probes < clusters.count
        top, scores = precompute._ivf_rows(side, clusters, 10, probes, 0, side.queries.shape[0])
        expected = _probed_exact(side, clusters, 10, probes)
        assert np.array_equal(top, expected)
        listed = top >= 0
        rows = np.nonzero(listed)[0]
        np.testing.assert_allclose(scores[listed], np.einsum("ij,ij->i", side.items[top[listed]], side.queries[rows]),
                                   rtol=1e-5, atol=1e-5)


def test_cluster_sums_add_the_rows_of_each_label():
    vectors = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=np.float32)
    sums = precompute._cluster_sums(vectors, np.array([2, 0, 2, 0]), 4)
    assert sums.dtype == np.float64
    assert sums.tolist() == [[10.0, 12.0], [0.0, 0.0], [6.0, 8.0], [0.0, 0.0]]


def _tuning_run(exact_serves_above_ms: float, recall_of_annoy: float,
                tried: set[tuple[int, int]] | None = None) -> tuple[ann_build._Trial, set[int]]:
    """``_tune_annoy`` on 30 queries whose Annoy answers have the given recall (every answer
    right, or none): the trial it returns and the queries it ran Annoy on; ``tried`` collects
    the (candidates_per_result, search_k) searched."""
    truth = [(np.arange(10), np.linspace(1.0, 0.1, 10).astype(np.float32)) for _ in range(30)]
    ran: set[int] = set()

    def annoy_run(query: int, params) -> list[int]:
        ran.add(query)
        if tried is not None:
            tried.add((params.candidates_per_result, params.search_k))
        return list(range(10)) if recall_of_annoy == 1.0 else list(range(100, 110))

    def score_of(query: int, found: np.ndarray) -> np.ndarray:
        return np.where(found < 10, 1.0, -1.0).astype(np.float32)

    settings = BuildSettings(exact_only_up_to=0, tuning_budget_s=60.0)
    trial = ann_build._tune_annoy(10_000, 4, list(range(30)), truth, annoy_run, score_of, settings,
                                  give_up_ms=1e9, exact_serves_above_ms=exact_serves_above_ms)
    return trial, ran


def test_tuning_short_of_the_target_skips_the_verification_where_exact_serves():
    """No Annoy config reaches the target and exact may serve: exact serves, so the ladders'
    result is returned without measuring it on the whole sample (only the ladders' queries,
    every third, are ever searched); where Annoy is forced it is verified on all of them."""
    trial, ran = _tuning_run(exact_serves_above_ms=1e9, recall_of_annoy=0.0)
    assert trial.recall == 0.0
    assert ran == set(range(0, 30, ann_build._LADDER_STRIDE))
    trial, ran = _tuning_run(exact_serves_above_ms=math.inf, recall_of_annoy=0.0)
    assert trial.recall == 0.0 and ran == set(range(30))


def test_tuning_that_reaches_the_target_is_verified_on_the_whole_sample():
    """A config faster than exact that reaches the target on the ladders is measured on every
    query of the sample before it is recorded."""
    trial, ran = _tuning_run(exact_serves_above_ms=1e9, recall_of_annoy=1.0)
    assert trial.recall == 1.0 and ran == set(range(30))



class _SearchKClock:
    """Stands in for the ``time`` module of ``ranking.ann_build``: ``perf_counter`` advances only
    when a fake Annoy search charges it (1 microsecond per search_k node), so the latencies the
    tuning measures are known answers; ``monotonic`` (the tuning budget) is the real one."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.monotonic = time.monotonic

    def perf_counter(self) -> float:
        return self.now_s


def test_ladders_past_one_candidate_per_result_run_only_when_annoy_beats_exact(monkeypatch):
    """Annoy answers right from search_k 640 on, at 1 us per search_k node: the one-candidate-
    per-result ladder (search_k 40, 80, ... 640) reaches the target at 0.64 ms. Where exact
    serves below that (0.5 ms), or no config reaches the target, the other ladders (the same
    search_k values, the same top 10, slower) are not run; where Annoy beats exact or is
    forced, they run as before."""
    clock = _SearchKClock()
    monkeypatch.setattr(ann_build, "time", clock)
    truth = [(np.arange(10), np.linspace(1.0, 0.1, 10).astype(np.float32)) for _ in range(30)]

    def tune(exact_above_ms: float, right_from_search_k: int) -> tuple[ann_build._Trial, set[tuple[int, int]]]:
        tried: set[tuple[int, int]] = set()

        def annoy_run(query: int, params) -> list[int]:
            tried.add((params.candidates_per_result, params.search_k))
            clock.now_s += params.search_k * 1e-6
            return list(range(10)) if params.search_k >= right_from_search_k else list(range(100, 110))

        def score_of(query: int, found: np.ndarray) -> np.ndarray:
            return np.where(found < 10, 1.0, -1.0).astype(np.float32)

        trial = ann_build._tune_annoy(10_000, 4, list(range(30)), truth, annoy_run, score_of,
                                      BuildSettings(exact_only_up_to=0, tuning_budget_s=60.0), give_up_ms=1e9,
                                      exact_serves_above_ms=exact_above_ms)
        return trial, tried

    trial, tried = tune(0.5, 640)
    assert (trial.params.candidates_per_result, trial.params.search_k) == (1, 640)
    assert trial.recall == 1.0 and trial.median_ms == pytest.approx(0.64)
    assert tried == {(1, 40 * 2 ** i) for i in range(5)}
    trial, tried = tune(1e9, 10 ** 9)
    assert trial.recall == 0.0 and {cpr for cpr, _ in tried} == {1}
    for exact_above_ms, right_from in ((1.0, 640), (math.inf, 640), (math.inf, 10 ** 9)):
        trial, tried = tune(exact_above_ms, right_from)
        assert (2, 80) in tried
    assert {cpr for cpr, _ in tried} == set(ann_build.CANDIDATE_STEPS)


def test_a_required_annoy_slower_than_exact_leaves_the_catalog_to_exact(monkeypatch):
    """From ANNOY_REQUIRED_FROM artists Annoy serves whenever it is not slower than exact; its
    ladders stop at exact's latency (here 0.5 ms, 1 us per search_k node). Annoy right from
    search_k 160 (0.16 ms): Annoy serves. Never right: exact serves (the most accurate config
    tried, short of the target, is not served). Right only from 2,560 (2.56 ms, as a barely trained
    model's factors can need): exact serves, no search_k past exact's latency is tried (the first
    trial past it, 640, ends each ladder), and, as where exact may serve below ANNOY_REQUIRED_FROM,
    only the one-candidate-per-result ladder runs and nothing is verified on the whole sample.
    Forced Annoy still climbs to the target."""
    clock = _SearchKClock()
    monkeypatch.setattr(ann_build, "time", clock)
    monkeypatch.setattr(ann_build, "ANNOY_REQUIRED_FROM", 10_000)
    truth = [(np.arange(10), np.linspace(1.0, 0.1, 10).astype(np.float32)) for _ in range(30)]

    def choose(right_from_search_k: int, method: str | None = None):
        """The config chosen, the (candidates_per_result, search_k) tried, the queries searched."""
        tried: set[tuple[int, int]] = set()
        ran: set[int] = set()

        def exact_run(query: int) -> list[int]:
            clock.now_s += 0.5e-3
            return list(range(10))

        def annoy_run(query: int, params) -> list[int]:
            tried.add((params.candidates_per_result, params.search_k))
            ran.add(query)
            clock.now_s += params.search_k * 1e-6
            return list(range(10)) if params.search_k >= right_from_search_k else list(range(100, 110))

        def score_of(query: int, found: np.ndarray) -> np.ndarray:
            return np.where(found < 10, 1.0, -1.0).astype(np.float32)

        config = ann_build._choose(10_000, 8, 4, list(range(30)), truth, exact_run, annoy_run, score_of,
                                   BuildSettings(exact_only_up_to=0, tuning_budget_s=60.0, method=method))
        return config, tried, ran

    config, _, _ = choose(160)
    assert config.method == "annoy" and config.search_k == 160 and config.recall_at_10 == 1.0
    config, _, _ = choose(10 ** 9)
    assert config.method == "exact" and config.recall_at_10 == 1.0
    config, tried, ran = choose(2560)
    assert config.method == "exact" and config.recall_at_10 == 1.0
    assert config.median_latency_ms == pytest.approx(0.5)
    assert tried == {(1, 40 * 2 ** i) for i in range(5)}
    assert ran == set(range(0, 30, ann_build._LADDER_STRIDE))
    config, _, _ = choose(2560, method="annoy")
    assert config.method == "annoy" and config.search_k == 2560 and config.recall_at_10 == 1.0
