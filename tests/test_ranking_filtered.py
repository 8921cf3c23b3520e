"""Filtered and diversified search (ranking.filtered, ranking.diversity) against brute force.

Factors are small integers, so every score is exact in float32 whatever the summation order:
the planned search, the exact scan and the reference below give bit-equal scores, and an answer
is compared as (artists, order), ties to the lower index.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranking.ann_build import build_angular_index
from ranking.diversity import cap_per_group, diversified, top_tag_of
from ranking.filtered import (ArtistFilter, FilterPlan, exact_filtered_search, filtered_search, from_list,
                              inner_product_space, tag_filter, union_of_rows)
from ranking.inner_product import augment_items
from ranking.search import InnerProductSearch, SearchParams


def _reference(items: np.ndarray, query: np.ndarray, k: int, allowed: set[int]) -> list[int]:
    scores = items.astype(np.float64) @ query.astype(np.float64)
    order = sorted(allowed, key=lambda a: (-scores[a], a))
    return order[:k]


def _tagged(num_artists: int, num_tags: int, seed: int):
    """A random CSR of artist -> tags and its transpose (tag -> artists ascending)."""
    rng = np.random.default_rng(seed)
    pairs = sorted({(int(a), int(t)) for a, t in zip(rng.integers(0, num_artists, num_artists * 2),
                                                      rng.integers(0, num_tags, num_artists * 2))})
    by_tag = sorted(pairs, key=lambda p: (p[1], p[0]))
    tag_indptr = np.searchsorted([t for _, t in by_tag], np.arange(num_tags + 1)).astype(np.int64)
    tag_artists = np.array([a for a, _ in by_tag], dtype=np.int32)
    return pairs, tag_indptr, tag_artists


def test_union_of_rows_and_tag_filter_match_sets():
    pairs, tag_indptr, tag_artists = _tagged(200, 12, 1)
    carriers = {t: {a for a, u in pairs if u == t} for t in range(12)}
    assert union_of_rows(tag_indptr, tag_artists, [3], 200).tolist() == sorted(carriers[3])
    assert union_of_rows(tag_indptr, tag_artists, [3, 5, 7], 200).tolist() == sorted(carriers[3] | carriers[5] | carriers[7])
    flt = tag_filter(tag_indptr, tag_artists, 200, [1, 2], [2, 4], only=np.arange(0, 200, 3))
    want = (carriers[1] | carriers[2]) - carriers[2] - carriers[4]
    assert flt.allowed.tolist() == sorted(a for a in want if a % 3 == 0)
    only_exclusions = tag_filter(tag_indptr, tag_artists, 200, [], [4], exclude=np.array([7]))
    assert only_exclusions.allowed is None
    assert set(only_exclusions.exclude.tolist()) == carriers[4] | {7}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.integers(1, 30), share=st.sampled_from([0.0, 0.002, 0.01, 0.05, 0.3, 0.8, 1.0]),
       exclude_n=st.integers(0, 20))
def test_planned_search_equals_exact_filtered_search(seed, k, share, exclude_n):
    """Where recall is 1 by construction (an exact-method search; an Annoy one whose plan scores
    the allowed rows exactly), the planned search is the exact filtered answer."""
    rng = np.random.default_rng(seed)
    num_items = 400
    items = rng.integers(-4, 5, size=(num_items, 6)).astype(np.float32)
    query = rng.integers(-4, 5, size=6).astype(np.float32)
    allowed = np.flatnonzero(rng.random(num_items) < share) if share < 1.0 else None
    exclude = rng.integers(0, num_items, exclude_n).astype(np.int64) if exclude_n else None
    flt = ArtistFilter(allowed, exclude)
    allowed_set = set(range(num_items) if allowed is None else allowed.tolist()) - set(
        [] if exclude is None else exclude.tolist())
    want = _reference(items, query, k, allowed_set)
    exact = InnerProductSearch(items, None, SearchParams("exact"))
    space = inner_product_space(exact, query)
    assert filtered_search(space, k, flt, FilterPlan())[0].tolist() == want
    assert exact_filtered_search(space, k, flt)[0].tolist() == want
    # An Annoy version with a plan that scores small filters exactly: exact below the threshold.
    index = build_angular_index(augment_items(items), 4, seed, 1)
    annoy = InnerProductSearch(items, index, SearchParams("annoy", -1, 10))
    plan = FilterPlan(exact_share_at_10=0.06)
    indices, scores = filtered_search(inner_product_space(annoy, query), k, flt, plan)
    if allowed is not None and plan.scores_exactly(allowed.shape[0], num_items, k):
        assert indices.tolist() == want
    # Whatever the plan: only allowed artists, best first, never more than k.
    assert set(indices.tolist()) <= allowed_set
    assert len(indices) <= k
    assert np.all(np.diff(scores) <= 0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), end=st.integers(1, 12), list_n=st.integers(5, 40),
       share=st.sampled_from([0.05, 0.3, 0.7, 1.0]))
def test_exact_list_answers_only_what_it_provably_holds(seed, end, list_n, share):
    rng = np.random.default_rng(seed)
    num_items = 120
    items = rng.integers(-2, 3, size=(num_items, 3)).astype(np.float32)  # many ties
    query = rng.integers(-2, 3, size=3).astype(np.float32)
    search = InnerProductSearch(items, None, SearchParams("exact"))
    row, row_scores = search.exact(query, list_n)
    allowed = np.flatnonzero(rng.random(num_items) < share) if share < 1.0 else None
    exclude = rng.integers(0, num_items, 3).astype(np.int64)
    flt = ArtistFilter(allowed, exclude)
    answer = from_list(row, row_scores, end, flt)
    allowed_set = set(range(num_items) if allowed is None else allowed.tolist()) - set(exclude.tolist())
    if answer is not None:
        assert answer[0].tolist() == _reference(items, query, end, allowed_set)


def test_exact_list_refuses_a_tie_at_its_end():
    row = np.array([5, 2, 9], dtype=np.int64)
    row_scores = np.array([3.0, 1.0, 1.0], dtype=np.float32)
    # Allowed 2 is tied with the list's last score: an artist outside the list could tie and precede it.
    assert from_list(row, row_scores, 2, ArtistFilter(np.array([2, 5]), None)) is None
    assert from_list(row, row_scores, 1, ArtistFilter(np.array([2, 5]), None))[0].tolist() == [5]
    # A list that is not full holds every candidate: a short answer from it is complete.
    short = np.array([5, 2, -1], dtype=np.int64)
    assert from_list(short, row_scores, 3, ArtistFilter(np.array([2, 7]), None))[0].tolist() == [2]


def test_an_approximate_list_answers_as_far_as_it_knows():
    # The exact ranking is 4, 8, 1, 6, 3, 0, ...; an approximate list (IVF, warm) missed artist 8.
    row = np.array([4, 1, 6, 3, 0], dtype=np.int64)
    row_scores = np.array([9.0, 7.0, 6.0, 5.0, 4.0], dtype=np.float32)
    only_even = ArtistFilter(np.array([0, 2, 4, 6, 8]), None)
    # The answer is the list's allowed artists in its order: 8 is missed, as the unfiltered answer
    # read from the same list misses it.
    indices, scores = from_list(row, row_scores, 2, only_even)
    assert indices.tolist() == [4, 6] and scores.tolist() == [9.0, 6.0]
    # A depth the list cannot fill above its last score is left to the search.
    assert from_list(row, row_scores, 3, only_even) is None
    assert from_list(row, row_scores, 2, ArtistFilter(None, np.array([4, 1, 6]))) is None


def test_cap_per_group_keeps_greedy_order():
    groups = np.array([0, 0, 1, 0, -1, 1, 2, -1])
    ranking = np.array([0, 1, 3, 2, 4, 5, 6, 7])
    kept = cap_per_group(ranking, groups, 2)
    assert ranking[kept].tolist() == [0, 1, 2, 4, 5, 6, 7]  # artist 3: the third of group 0
    assert ranking[cap_per_group(ranking, groups, 1)].tolist() == [0, 2, 4, 6, 7]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 20), cap=st.integers(1, 3))
def test_diversified_equals_greedy_over_the_whole_ranking(seed, k, cap):
    rng = np.random.default_rng(seed)
    num_items = 300
    items = rng.integers(-4, 5, size=(num_items, 5)).astype(np.float32)
    query = rng.integers(-4, 5, size=5).astype(np.float32)
    groups = rng.integers(-1, 6, num_items)
    search = InnerProductSearch(items, None, SearchParams("exact"))
    full, _ = search.exact(query, num_items)
    want = full[cap_per_group(full, groups, cap)][:k]
    got, scores = diversified(lambda depth: search.exact(query, depth), k, groups, cap, num_items)
    assert got.tolist() == want.tolist()
    counts = np.bincount(groups[got][groups[got] >= 0], minlength=6)
    assert counts.max(initial=0) <= cap


def test_top_tag_of():
    indptr = np.array([0, 2, 2, 3])
    indices = np.array([4, 1, 7], dtype=np.int32)
    assert top_tag_of(indptr, indices).tolist() == [4, -1, 7]


def test_plan_threshold_from_publish_latencies():
    from model_store.format import SearchConfig
    config = SearchConfig("annoy", "angular", 5, 10, -1, 10, 0.99, 100, 0.1, exact_median_latency_ms=2.0,
                          annoy_median_latency_ms=0.08)
    plan = FilterPlan.of(config, SearchParams("annoy"))
    assert plan.exact_share_at_10 == pytest.approx(0.2)
    assert plan.scores_exactly(19_000, 100_000, 10) and not plan.scores_exactly(21_000, 100_000, 10)
    assert FilterPlan.of(config, SearchParams("exact")).scores_exactly(100_000, 100_000, 10)
