"""The serving search (ranking.search) as the index service uses it: exact top-k with
deterministic ties, exclusions, and the Annoy path agreeing with brute force."""

from __future__ import annotations

import numpy as np
import pytest
from annoy import AnnoyIndex
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ranking.inner_product import augment_items
from ranking.search import CosineSearch, InnerProductSearch, SearchParams, top_k_indices


def reference_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")[:k]
    return order[np.isfinite(scores[order])]


@settings(max_examples=200, deadline=None)
@given(
    scores=hnp.arrays(np.float32, st.integers(1, 5000),
                      elements=st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 1.0, 2.0, 3.5])),
    k=st.integers(1, 1200),
)
def test_top_k_matches_a_full_stable_sort_with_ties(scores, k):
    assert np.array_equal(top_k_indices(scores, k), reference_top_k(scores, k))


@pytest.mark.parametrize("n", [1, 31, 32, 1000, 17632, 40001])
@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_top_k_on_continuous_scores(n, k):
    rng = np.random.default_rng(n * 7 + k)
    scores = rng.standard_normal(n).astype(np.float32)
    scores[rng.choice(n, n // 5, replace=False)] = -np.inf
    assert np.array_equal(top_k_indices(scores, k), reference_top_k(scores, k))


def test_top_k_edge_cases():
    assert top_k_indices(np.array([], dtype=np.float32), 3).size == 0
    assert top_k_indices(np.array([1.0], dtype=np.float32), 0).size == 0
    assert top_k_indices(np.full(100, -np.inf, dtype=np.float32), 5).size == 0


def _indexes(items: np.ndarray, factors: np.ndarray, n_trees: int = 10):
    rec = AnnoyIndex(items.shape[1] + 1, "angular")
    for i, row in enumerate(augment_items(items)):
        rec.add_item(i, row.tolist())
    rec.build(n_trees, n_jobs=1)
    sim = AnnoyIndex(factors.shape[1], "angular")
    for i, row in enumerate(factors):
        sim.add_item(i, row.tolist())
    sim.build(n_trees, n_jobs=1)
    return rec, sim


def test_annoy_path_agrees_with_exact_and_respects_exclusions():
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((3000, 8)).astype(np.float32)
    items = np.hstack([factors, rng.standard_normal((3000, 1)).astype(np.float32) * 0.1])
    rec, sim = _indexes(items, factors)
    generous = SearchParams("annoy", search_k=3000 * 10, candidates_per_result=20)
    ip = InnerProductSearch(items, rec, generous)
    cos = CosineSearch(factors, sim, generous)
    for user in range(20):
        query = np.append(rng.standard_normal(8), 1.0).astype(np.float32)
        exclude = rng.choice(3000, 40, replace=False)
        exact_idx, exact_scores = ip.exact(query, 10, exclude)
        found_idx, found_scores = ip.search(query, 10, exclude)
        assert not set(found_idx.tolist()) & set(exclude.tolist())
        assert len(set(found_idx.tolist()) & set(exact_idx.tolist())) >= 9
        assert np.all(np.diff(found_scores) <= 0)
        np.testing.assert_allclose(found_scores, items[found_idx] @ query, rtol=1e-5)
        artist = user * 7
        exact_sim, _ = cos.exact(artist, 10)
        found_sim, sims = cos.search(artist, 10)
        assert artist not in found_sim.tolist()
        assert len(set(found_sim.tolist()) & set(exact_sim.tolist())) >= 9
        assert np.all(sims <= 1.0 + 1e-5)


def test_search_k_never_falls_below_annoys_default():
    params = SearchParams("annoy", search_k=800, candidates_per_result=1)
    assert params.search_k_for(10, 20) == 800
    assert params.search_k_for(60, 20) == 1200
    assert SearchParams("annoy", -1, 2).search_k_for(60, 20) == -1


def test_small_catalog_falls_back_to_exact():
    rng = np.random.default_rng(1)
    factors = rng.standard_normal((12, 4)).astype(np.float32)
    items = np.hstack([factors, np.zeros((12, 1), np.float32)])
    rec, sim = _indexes(items, factors, n_trees=2)
    ip = InnerProductSearch(items, rec, SearchParams("annoy", -1, 10))
    query = np.ones(5, dtype=np.float32)
    assert np.array_equal(ip.search(query, 5)[0], ip.exact(query, 5)[0])
    everything, _ = ip.search(query, 1000, exclude=np.array([0, 1, 1]))
    assert sorted(everything.tolist()) == list(range(2, 12))
