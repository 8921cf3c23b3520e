"""Filtered top-k: the artists a request may return, and a search over them planned by their number.

A filter (tags any-of, excluded tags, an allow-list of artist ids) becomes an ``ArtistFilter``:
a sorted array of allowed artist indices (None: every artist) and an array of excluded ones.
The search is then planned per request from how many artists the filter leaves (``FilterPlan``):

- few allowed artists: their rows are scored exactly (one small matrix-vector product), so the
  answer is exact however rare the filter;
- many: the ANN index is searched with its candidates over-fetched in proportion to the share
  the filter removes (``k * candidates_per_result * A / allowed``), the candidates outside the
  filter dropped and the rest re-ranked exactly; when they do not hold k allowed artists, the
  exact search answers instead.

The threshold between the two is the selectivity where the two costs meet, from the two
latencies the trainer measured at publish for this very version (``SearchConfig``:
``exact_median_latency_ms``, a full exact scan of A rows, and ``annoy_median_latency_ms``, an ANN
search fetching ``10 * candidates_per_result`` candidates): scoring n rows costs about
``n / A * exact``, over-fetching costs about ``end / 10 * A / n * annoy``, so the allowed rows
are scored exactly while ``n / A <= sqrt(annoy / exact * end / 10)``. An exact-method version
(or one without those figures) scores exactly at every selectivity.

No gRPC, no TensorFlow: numpy and the searches of ``ranking.search``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model_store.format import SearchConfig
from ranking.search import CosineSearch, InnerProductSearch, SearchParams, top_k_indices

_NEG_INF = np.float32(-np.inf)
_EMPTY = np.empty(0, dtype=np.int64)
_NO_SCORES = np.empty(0, dtype=np.float32)
# Past these shares of the catalog one full scan (then a gather of the allowed scores) is cheaper
# than gathering the allowed rows: a gathered row of the (A, D) layout is a few cache lines, about
# ten times the cost of streaming it in a scan; the exact layout keeps only the (D, A) transpose,
# where a gathered column is D scattered reads, about twenty-five times. Measured with one BLAS
# thread, 66 dims (Recommend's), filters of 1% to 25% of 17,632 and 160,000 artists: the
# transpose's gather passed the scan at 3-5% of 160,000 artists (at 10%: 5.3 ms against 2.0 ms)
# and 5-10% of 17,632; the (A, D) gather at 10% and 10-25% (scripts/filtered_scan_threshold.py).
_SCAN_ALL_ABOVE = 0.10
_SCAN_ALL_ABOVE_TRANSPOSED = 0.04


@dataclass(frozen=True)
class ArtistFilter:
    """The artists a request may return: ``allowed`` (sorted distinct int64 artist indices; None:
    every artist) minus ``exclude`` (int64 artist indices, duplicates allowed; None: none)."""

    allowed: np.ndarray | None = None
    exclude: np.ndarray | None = None

    def allowed_count(self, num_artists: int) -> int:
        """An upper bound of the artists the filter leaves (exact when nothing is excluded)."""
        if self.allowed is not None:
            return int(self.allowed.shape[0])
        return num_artists - (0 if self.exclude is None else int(self.exclude.shape[0]))

    @property
    def restricts(self) -> bool:
        return self.allowed is not None or (self.exclude is not None and self.exclude.shape[0] > 0)


def union_of_rows(indptr: np.ndarray, members: np.ndarray, rows: Sequence[int], size: int) -> np.ndarray:
    """Sorted distinct int64 members of CSR rows ``rows`` (each row sorted ascending), values in
    [0, size). One row is returned as it is; several are merged through a (size,) bool mask,
    O(size + their length)."""
    if not rows:
        return _EMPTY
    if len(rows) == 1:
        t = rows[0]
        return members[indptr[t]:indptr[t + 1]].astype(np.int64, copy=False)
    mask = np.zeros(size, dtype=bool)
    for t in rows:
        mask[members[indptr[t]:indptr[t + 1]]] = True
    return np.flatnonzero(mask)


def tag_filter(tag_indptr: np.ndarray, tag_artists: np.ndarray, num_artists: int, tags: Sequence[int],
               exclude_tags: Sequence[int], only: np.ndarray | None = None,
               exclude: np.ndarray | None = None) -> ArtistFilter:
    """The filter of a request: artists carrying any tag index of ``tags`` (none given: every
    artist), intersected with the allow-list ``only`` (sorted distinct indices; None: none given),
    never an artist carrying a tag of ``exclude_tags`` or listed in ``exclude``.

    ``tag_indptr`` (T+1,) and ``tag_artists`` (nnz,): tag t's artists ascending in
    ``tag_artists[tag_indptr[t]:tag_indptr[t + 1]]`` (``model_store.ArtistTags``)."""
    allowed = union_of_rows(tag_indptr, tag_artists, list(tags), num_artists) if tags else None
    if only is not None:
        allowed = only if allowed is None else np.intersect1d(allowed, only, assume_unique=True)
    banned = None
    if exclude_tags:
        parts = [tag_artists[tag_indptr[t]:tag_indptr[t + 1]] for t in exclude_tags]
        banned = np.concatenate(parts).astype(np.int64, copy=False)
    if allowed is not None:
        # Applied to the (usually smaller) allowed set now, so the search sees one sorted array.
        for drop in (banned, exclude):
            allowed = without(allowed, drop)
        return ArtistFilter(allowed, None)
    if banned is None:
        return ArtistFilter(None, exclude)
    return ArtistFilter(None, banned if exclude is None or not exclude.shape[0] else np.concatenate((banned, exclude)))


def without(values: np.ndarray, drop: np.ndarray | None) -> np.ndarray:
    """``values`` minus every value in ``drop`` (any order, duplicates allowed), order kept.
    By binary search in the sorted ``drop``: O((n + m) log m), cheaper than ``np.isin`` for the
    few hundred values a request drops."""
    if drop is None or not drop.shape[0] or not values.shape[0]:
        return values
    return values[~members(np.sort(drop), values)]


def members(sorted_values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(len(candidates),) bool: which candidates are in ``sorted_values`` (sorted ascending)."""
    n = sorted_values.shape[0]
    if not n:
        return np.zeros(candidates.shape[0], dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, candidates), n - 1)
    return sorted_values[pos] == candidates


@dataclass(frozen=True)
class FilterPlan:
    """When a filtered search scores the allowed rows exactly instead of over-fetching from the
    ANN index: ``exact_share_at_10``, the share of the catalog at or below which a top-10 query is
    scored exactly (scaled by ``sqrt(end / 10)`` for deeper queries, see the module docstring);
    ``math.inf`` for an exact-method version."""

    exact_share_at_10: float = math.inf

    @classmethod
    def of(cls, config: SearchConfig, params: SearchParams) -> "FilterPlan":
        """The plan from the latencies measured at publish; exact everywhere when the version
        searches exactly or lacks them (formats from before they were recorded)."""
        exact_ms, annoy_ms = config.exact_median_latency_ms, config.annoy_median_latency_ms
        if params.method != "annoy" or exact_ms <= 0 or annoy_ms <= 0:
            return cls(math.inf)
        return cls(math.sqrt(annoy_ms / exact_ms))

    def scores_exactly(self, allowed: int, num_items: int, end: int) -> bool:
        """True when a query for the top ``end`` among ``allowed`` of ``num_items`` artists should
        score the allowed rows exactly."""
        if math.isinf(self.exact_share_at_10) or not num_items:
            return True
        return allowed <= self.exact_share_at_10 * math.sqrt(max(end, 1) / 10) * num_items


class _Space:
    """What a filtered search needs of ``InnerProductSearch`` or ``CosineSearch``: the (A, D)
    rows and (D, A) transpose scored, the query vector, and the ANN fetch (None: exact only)."""

    def __init__(self, rows: np.ndarray, rows_t: np.ndarray, query: np.ndarray,
                 fetch: Callable[[int, int], list[int]] | None, params: SearchParams, n_trees: int):
        self.rows, self.rows_t, self.query = rows, rows_t, query
        self.fetch, self.params, self.n_trees = fetch, params, n_trees

    def exact(self, k: int, flt: ArtistFilter) -> tuple[np.ndarray, np.ndarray]:
        num_items = self.rows.shape[0]
        allowed, exclude = flt.allowed, flt.exclude
        scan_above = _SCAN_ALL_ABOVE if self.rows.flags.c_contiguous else _SCAN_ALL_ABOVE_TRANSPOSED
        if allowed is not None and allowed.shape[0] <= scan_above * num_items:
            if not allowed.shape[0] or k <= 0:
                return _EMPTY, _NO_SCORES
            allowed = without(allowed, exclude)
            if self.rows.flags.c_contiguous:
                scores = self.rows[allowed] @ self.query
            else:  # the exact layout keeps the transpose: gather its columns, each row read in order
                scores = self.query @ self.rows_t[:, allowed]
            top = top_k_indices(scores, k)
            return allowed[top], scores[top]
        scores = self.query @ self.rows_t
        if exclude is not None and exclude.shape[0]:
            scores[exclude] = _NEG_INF
        if allowed is None:
            top = top_k_indices(scores, k)
            return top, scores[top]
        sub = scores[allowed]
        top = top_k_indices(sub, k)
        return allowed[top], sub[top]

    def planned(self, k: int, flt: ArtistFilter, plan: FilterPlan) -> tuple[np.ndarray, np.ndarray]:
        num_items = self.rows.shape[0]
        n_allowed = flt.allowed_count(num_items)
        if self.fetch is None or k <= 0 or n_allowed <= 0 or plan.scores_exactly(n_allowed, num_items, k):
            return self.exact(k, flt)
        n_exclude = 0 if flt.exclude is None else int(flt.exclude.shape[0])
        share = n_allowed / num_items if flt.allowed is not None else 1.0
        wanted = math.ceil(k * self.params.candidates_per_result / share) + n_exclude
        if wanted * 2 >= num_items:
            return self.exact(k, flt)  # fetching most of the catalog: brute force is cheaper
        found = np.array(self.fetch(wanted, self.params.search_k_for(wanted, self.n_trees)), dtype=np.int64)
        keep = np.ones(found.shape[0], dtype=bool)
        if flt.allowed is not None:
            keep &= members(flt.allowed, found)
        if n_exclude:
            keep &= ~members(np.sort(flt.exclude), found)
        candidates = found[keep]
        if candidates.shape[0] < k and found.shape[0] < num_items:
            return self.exact(k, flt)  # the over-fetch held too few allowed artists
        scores = self.rows[candidates] @ self.query
        top = top_k_indices(scores, k)
        return candidates[top], scores[top]


def inner_product_space(search: InnerProductSearch, query: np.ndarray,
                        params: SearchParams | None = None) -> _Space:
    """The Recommend search for ``query`` (D,) float32, as a filtered search sees it."""
    p = params or search.params
    index = search.index if p.method == "annoy" else None
    fetch = None
    if index is not None:
        augmented = query.tolist() + [0.0]  # the augmented query (see ranking.inner_product)

        def fetch(wanted: int, search_k: int) -> list[int]:
            return index.get_nns_by_vector(augmented, wanted, search_k)
    return _Space(search.items, search.items_t, query, fetch, p, search.n_trees)


def cosine_space(search: CosineSearch, artist: int, params: SearchParams | None = None) -> _Space:
    """The SimilarArtists search for artist index ``artist``, as a filtered search sees it (the
    artist itself must be in the filter's exclusions)."""
    p = params or search.params
    index = search.index if p.method == "annoy" else None
    fetch = None
    if index is not None:
        def fetch(wanted: int, search_k: int) -> list[int]:
            return index.get_nns_by_item(artist, wanted, search_k)
    return _Space(search.normalized, search.normalized_t, search.normalized[artist], fetch, p, search.n_trees)


def filtered_search(space: _Space, k: int, flt: ArtistFilter, plan: FilterPlan) -> tuple[np.ndarray, np.ndarray]:
    """Top k (indices, scores) of ``space``'s query among the artists ``flt`` leaves, best first,
    planned by ``plan`` (see the module docstring)."""
    return space.planned(k, flt, plan)


def exact_filtered_search(space: _Space, k: int, flt: ArtistFilter) -> tuple[np.ndarray, np.ndarray]:
    """The exact answer ``filtered_search`` approximates: every allowed artist scored."""
    return space.exact(k, flt)


def from_list(row: np.ndarray, row_scores: np.ndarray, end: int, flt: ArtistFilter) -> tuple[np.ndarray, np.ndarray] | None:
    """The top ``end`` of a filtered query from the precomputed list of the same query unfiltered
    (``row`` -1 padded, best first, ties to the lower index; ``row_scores`` aligned), or None when
    the list does not hold it.

    The first ``end`` allowed entries are the answer when there are ``end`` of them and the last of
    them scores strictly above the list's last score (an artist outside the list tying with it
    could rank first by index), or when the list is not full (it then holds every candidate there
    is). For a list made by exact search this is the exact filtered answer: every artist outside a
    full list scores <= its last score. For an approximate list (``ivf``, ``warm``: see
    ``ranking.precompute``) it is the filtered answer as far as the list knows: an artist the
    list missed is missed here too, so the answer has the list's own recall, as the unfiltered
    answer read from the same list has."""
    if end <= 0:
        return _EMPTY, _NO_SCORES
    # The -1 padding is never among the allowed artists (indices >= 0), so an allow-list's
    # membership test drops it too; only a filter without one tests for it.
    keep = members(flt.allowed, row) if flt.allowed is not None else row >= 0
    if flt.exclude is not None and flt.exclude.shape[0]:
        keep &= ~members(np.sort(flt.exclude), row)
    picked = keep.nonzero()[0][:end]
    if row.shape[0] and row.item(-1) >= 0:  # a full list
        if picked.shape[0] < end or not row_scores.item(int(picked[-1])) > row_scores.item(-1):
            return None
    return row[picked].astype(np.int64, copy=False), row_scores[picked]
