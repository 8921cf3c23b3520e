"""Diversified top-k: at most N artists per top tag.

Why a cap per top tag rather than MMR: a listener asking for "a mix that is not ten artists of one
genre" expects a rule they can read off the answer ("at most 2 per genre"), and a client can set
it without tuning. MMR trades relevance against similarity with a weight whose effect depends on
the model's score scale and the factor geometry, so the same weight means different mixes on
different versions. The cap keeps the model's order inside each genre, and an artist without
tags is never capped (there is no genre to over-represent).

The answer is the greedy pass over the full filtered ranking: walk it best first, keep an artist
unless its top tag already has ``max_per_tag`` kept ones. The pass over a prefix equals the pass
over the whole ranking as long as the prefix yields the wanted count, so ``diversified`` searches
deeper (4x at a time) until it does or the ranking runs out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# The first search depth, per result wanted: most answers need no second search.
_FIRST_DEPTH_PER_RESULT = 4


def top_tag_of(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(A,) int64: each artist's top tag index (its first, heaviest), -1 for an artist without tags.
    ``indptr`` (A+1,) and ``indices`` (nnz,) as in ``model_store.ArtistTags``."""
    has = indptr[1:] > indptr[:-1]
    top = np.full(indptr.shape[0] - 1, -1, dtype=np.int64)
    top[has] = indices[indptr[:-1][has]]
    return top


def cap_per_group(indices: np.ndarray, groups: np.ndarray, max_per_group: int) -> np.ndarray:
    """Positions into ``indices`` (a ranking, best first) kept by the greedy cap: an entry is kept
    unless ``max_per_group`` earlier entries share its group (``groups[indices]``; a group < 0 is
    never capped). Ascending positions."""
    g = groups[indices]
    order = np.argsort(g, kind="stable")  # by group, rank order inside each group
    sorted_g = g[order]
    starts = np.flatnonzero(np.r_[True, sorted_g[1:] != sorted_g[:-1]]) if sorted_g.shape[0] else np.empty(0, np.int64)
    run_start = np.repeat(starts, np.diff(np.r_[starts, sorted_g.shape[0]]))
    rank_in_group = np.empty(g.shape[0], dtype=np.int64)
    rank_in_group[order] = np.arange(g.shape[0]) - run_start
    return np.flatnonzero((rank_in_group < max_per_group) | (g < 0))


def diversified(top: Callable[[int], tuple[np.ndarray, np.ndarray]], k: int, groups: np.ndarray,
                max_per_group: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` (indices, scores) of the ranking ``top(depth)`` (its best ``depth``) with at
    most ``max_per_group`` per group (``groups``: (A,) int, -1 uncapped). ``limit``: the most
    artists the ranking can hold (the search stops deepening there)."""
    depth = min(max(k * _FIRST_DEPTH_PER_RESULT, k + 10), limit)
    while True:
        indices, scores = top(depth)
        kept = cap_per_group(indices, groups, max_per_group)
        if kept.shape[0] >= k or indices.shape[0] < depth or depth >= limit:
            kept = kept[:k]
            return indices[kept], scores[kept]
        depth = min(depth * 4, limit)
