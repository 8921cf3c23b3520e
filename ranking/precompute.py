"""Precomputing every user's and every artist's top answers when a version is published.

The lists are made in batches, by matrix products, not by the serving search one query at a time:

- ``exact``: every score of a block of queries is one (B, D) x (D, A) product; a row's top n is
  found by the bound of ``ranking.search.top_k_indices`` (the n-th best maximum of 32-score groups)
  applied to the whole block, ties to the lower artist index as the exact search. Used while
  queries x artists stays under ``EXACT_UP_TO`` scores.
- ``ivf`` (larger catalogs): the artists are clustered by k-means (on the vectors Annoy indexes:
  the augmented item vectors for the inner product, see ``ranking.inner_product``, the normalized
  factors for cosine); each query ranks the centroids by its score with them and probes its best
  ``probes`` clusters; a cluster is scored exactly by one product over all the queries of a chunk
  that probe it. A query's first half of its clusters give a lower bound of its n-th best score
  (from their top-n values alone), and every probed cluster keeps only the scores reaching it
  (see ``_ivf_rows``); its list is the best n kept. The
  number of probes is the smallest of ``PROBE_STEPS`` whose recall@10 against exact, less its
  standard error, reaches the target on a sample of queries (the manifest records the recall of
  the finished lists on another sample, ``ranking.ann_build``).
- ``warm`` (a warm-started publish, ``ListSeeds``, in place of exact lists): each query's list of
  the base version, mapped to this version's artists, plus the artists new to it, re-scored with
  this version's factors and the best n kept; a query the base did not list (a new user or
  artist), or left with fewer than n candidates, gets exact lists. Taken only when the recall@10
  against exact on a sample of queries, less its standard error, reaches the target (else exact
  lists): a warm retrain's few epochs move the factors little, so the base's neighbours are still
  the best (Last.fm 2K SimilarArtists after a warm retrain: recall@10 0.993 over every artist, in
  0.3 s where exact lists took 0.6 s). Entries past the 10th can miss more often (recall@50 about
  0.97 there): the target, like IVF's, is on the first page. Not in place of IVF lists: at full
  scale (360,000 users, 160,000 artists) re-scoring every user's seeds measured slower than
  probing the clusters (28 s against 20 s for both sides' lists).

Scores are the model's, exact for every artist listed (float32; the summation order of a
matrix product can differ from a single search's in the last bit). Chunks of queries run on a
thread pool, one per core, BLAS on one thread each: the products and sorts release the GIL.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from model_store.artifacts import ModelArtifacts, PrecomputedTop
from ranking.inner_product import augment_items, item_vectors_with_bias
from ranking.search import top_k_indices

DEFAULT_RECOMMEND_N = 50
DEFAULT_SIMILAR_N = 50
# Queries x artists up to which the lists are exact (every score computed); IVF above.
EXACT_UP_TO = 400_000_000
RECALL_TARGET = 0.98
# IVF: artists per cluster on average, and the probe counts tried (smallest first; steps of
# about 15-25% where lists usually land, so that the margin of ``make_lists``'s rule costs no
# more probes than it must). Fewer, larger clusters: each cluster's product is a larger matrix
# product (BLAS at its speed) and fewer centroids are ranked per query; measured at full scale
# (160,000 artists, 2 cores), both sides' lists at recall@10 >= 0.98 took 19 s with 512 per
# cluster, 20 s with 384, 23 s with 256, 31 s with 128, 47 s with 64 and 26 s with 1,024.
ARTISTS_PER_CLUSTER = 512
PROBE_STEPS = (4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 96, 128)
KMEANS_ITERATIONS = 6
KMEANS_SAMPLE_PER_CLUSTER = 32
# IVF: a query's first probes // LEADING_SHARE clusters (at least 2) set the bound the others are
# filtered by.
LEADING_SHARE = 2
# Queries whose recall@10 against exact decides the number of probes.
TUNING_SAMPLE = 1000
# Scores held per block (float32), per worker: bounds the memory of a block to ~64 MiB.
_BLOCK_SCORES = 16 << 20
# Exact lists: scores per block of queries (16 MiB of float32). The selection reads a block
# about three times after the product wrote it; a block this size stays in a server's cache
# between the passes, where a ``_BLOCK_SCORES`` one goes to memory each time (measured: less CPU
# time at 1 to 6 Mi scores per block than at 16 Mi on Last.fm 2K's SimilarArtists side).
_EXACT_BLOCK_SCORES = 4 << 20
# top_k_indices's groups (the same bound, applied to every row of a block at once).
_GROUPS = 32
_NEG_INF = np.float32(-np.inf)
# IVF: relative margin below a query's bound (see ``_ivf_rows``).
_BOUND_MARGIN = np.float32(1e-4)


@dataclass(frozen=True)
class ListSide:
    """One side's lists to make: ``queries`` (Q, D) float32 and ``items`` (A, D) float32 scored
    by inner product; ``exclude_indptr``/``exclude_indices`` (CSR; int64 pointers, int32 or int64
    indices) the artists never listed for each query; ``cluster_vectors`` (A, D') the vectors the artists are clustered on (IVF),
    ``spherical`` True to cluster them by cosine (k-means on the unit sphere)."""

    queries: np.ndarray
    items: np.ndarray
    exclude_indptr: np.ndarray
    exclude_indices: np.ndarray
    cluster_vectors: np.ndarray
    spherical: bool


@dataclass(frozen=True)
class ListsMade:
    """A side's lists: ``top`` (Q, n) int32 -1 padded, ``scores`` (Q, n) float32 (0 in padding),
    ``method`` "exact" or "ivf", ``probes`` clusters probed per query of ``clusters`` (0 for
    exact), ``sample_recall_at_10`` measured on the tuning sample (1.0 for exact)."""

    top: np.ndarray
    scores: np.ndarray
    method: str
    clusters: int
    probes: int
    sample_recall_at_10: float


@dataclass(frozen=True)
class ListSeeds:
    """A warm-started publish's starting point for one side's lists: ``candidates`` (Q, S) int32,
    each query's list in the base version mapped to this version's artists (-1: none there, or a
    query new to this version), and ``fresh`` (E,) int64, the artists new to this version, which
    every query also considers."""

    candidates: np.ndarray
    fresh: np.ndarray


# -- selection ---------------------------------------------------------------------------------

def _rows_top(scores: np.ndarray, n: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top n of every row of ``scores`` (B, N) float32: (indices (B, n), -1 padded when a row has
    fewer finite scores; their scores, 0 in padding), best first, ties to the lower index (as
    ``top_k_indices``).

    ``ids`` (B, N): the artist of each score (ties to the lower artist, listed instead of the
    column; None: the column is the artist).

    A lower bound of each row's n-th best score is found first (for wide rows, the bound of
    ``top_k_indices``: the n-th best maximum of 32-score groups, as n groups each hold a score at
    least that high); the scores reaching it, every tie included, are then ordered."""
    rows, width = scores.shape
    m = min(n, width)
    if m == 0 or rows == 0:
        return np.full((rows, n), -1, dtype=np.int64), np.zeros((rows, n), dtype=np.float32)
    cols = width // _GROUPS
    if m * _GROUPS * 4 < width:
        # Strided groups, as top_k_indices: the maximum over 32 rows of a (32, cols) view is
        # one vectorized pass.
        col_max = scores[:, :cols * _GROUPS].reshape(rows, _GROUPS, cols).max(axis=1)
        bound = np.partition(col_max, cols - m, axis=1)[:, cols - m]
    else:
        bound = np.partition(scores, width - m, axis=1)[:, width - m]
    # A row with fewer than m finite scores lists all of them (never an excluded -inf).
    bound = np.maximum(bound, np.finfo(np.float32).min)
    at = np.flatnonzero(scores >= bound[:, None])
    at_row, at_col = np.divmod(at, width)
    values = scores.ravel()[at]
    if ids is not None:
        return _ranked(at_row, ids.ravel()[at], values, rows, n, items_ascending=False)
    return _ranked(at_row, at_col, values, rows, n, items_ascending=True)


def _ranked(at_row: np.ndarray, at_item: np.ndarray, values: np.ndarray, rows: int, n: int,
            items_ascending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best n of the (row, artist, score) triples, ``at_row`` ascending: (indices
    (rows, n) -1 padded, scores 0 in padding), best first, ties to the lower artist index
    (``items_ascending``: the artists of a row already come in ascending order)."""
    counts = np.bincount(at_row, minlength=rows)
    width = int(counts.max()) if rows else 0
    within = np.arange(at_row.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    # One padded row per query, sorted row by row (short rows: far cheaper than one lexsort).
    grid = np.full((rows, max(width, n)), _NEG_INF, dtype=np.float32)
    grid_items = np.full(grid.shape, np.iinfo(np.int64).max, dtype=np.int64)
    grid[at_row, within] = values
    grid_items[at_row, within] = at_item
    if not items_ascending:
        order = np.argsort(grid_items, axis=1, kind="stable")
        grid, grid_items = np.take_along_axis(grid, order, axis=1), np.take_along_axis(grid_items, order, axis=1)
    order = np.argsort(-grid, axis=1, kind="stable")[:, :n]
    top = np.take_along_axis(grid_items, order, axis=1)
    top_scores = np.take_along_axis(grid, order, axis=1)
    missing = ~np.isfinite(top_scores)
    top[missing] = -1
    top_scores[missing] = 0.0
    return top, top_scores


def _mask(scores: np.ndarray, indptr: np.ndarray, indices: np.ndarray, lo: int, hi: int) -> None:
    """Set the excluded artists of queries lo .. hi - 1 (rows of ``scores``) to -inf."""
    start, end = int(indptr[lo]), int(indptr[hi])
    if start == end:
        return
    rows = np.repeat(np.arange(hi - lo), np.diff(indptr[lo:hi + 1]))
    scores[rows, indices[start:end]] = _NEG_INF


# -- exact -------------------------------------------------------------------------------------

def _exact_chunk(side: ListSide, items_t: np.ndarray, n: int, lo: int, hi: int,
                 buffers: threading.local | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact lists of queries lo .. hi - 1. ``buffers``: each thread's score block is kept there
    and written again by its next chunk (a fresh block per chunk costs page faults on every
    page of it)."""
    queries = side.queries[lo:hi]
    if buffers is None:
        scores = queries @ items_t
    else:
        held = getattr(buffers, "scores", None)
        if held is None or held.shape[0] < hi - lo:
            held = buffers.scores = np.empty((hi - lo, items_t.shape[1]), dtype=np.float32)
        scores = np.matmul(queries, items_t, out=held[:hi - lo])
    _mask(scores, side.exclude_indptr, side.exclude_indices, lo, hi)
    return _rows_top(scores, n)


# -- IVF ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Clusters:
    """Artists grouped by cluster: ``order`` the artist indices cluster by cluster, ``starts``
    (C + 1,) each cluster's range in ``order``, ``position`` (A,) each artist's place in its
    cluster, ``cluster_of`` (A,), ``centroids_t`` (D, C) the centroids of the queries' space."""

    order: np.ndarray
    starts: np.ndarray
    position: np.ndarray
    cluster_of: np.ndarray
    centroids_t: np.ndarray
    items_t: np.ndarray  # (D, A) the items in ``order``

    @property
    def count(self) -> int:
        return self.starts.shape[0] - 1


def _order_by_label(labels: np.ndarray, count: int) -> np.ndarray:
    """The positions of ``labels`` (ints in [0, count)) grouped by label, in their order within a
    label: a stable argsort, of 16-bit keys where the labels fit (numpy sorts those by radix, about
    ten times faster than int64 keys; the same order)."""
    keys = labels.astype(np.int16) if count <= 1 << 15 else labels
    return np.argsort(keys, kind="stable")


def _cluster_sums(vectors: np.ndarray, labels: np.ndarray, clusters: int) -> np.ndarray:
    """(clusters, D) float64 sums of the rows of ``vectors`` by label (the rows sorted by label,
    each label's run summed by one ``np.add.reduceat``: contiguous rows, not strided columns)."""
    order = _order_by_label(labels, clusters)
    starts = np.searchsorted(labels[order], np.arange(clusters))
    present = np.bincount(labels, minlength=clusters) > 0
    sums = np.zeros((clusters, vectors.shape[1]), dtype=np.float64)
    if present.any():
        sums[present] = np.add.reduceat(vectors[order], starts[present], axis=0, dtype=np.float64)
    return sums


def _kmeans(vectors: np.ndarray, clusters: int, spherical: bool, seed: int) -> np.ndarray:
    """Cluster of every row of ``vectors`` by k-means (Lloyd, ``KMEANS_ITERATIONS`` rounds on a
    sample of ``KMEANS_SAMPLE_PER_CLUSTER`` rows per cluster, then every row assigned);
    spherical: by cosine."""
    rng = np.random.default_rng(seed)
    rows = vectors.shape[0]
    train = vectors[rng.choice(rows, size=min(rows, KMEANS_SAMPLE_PER_CLUSTER * clusters), replace=False)]
    centroids = train[rng.choice(train.shape[0], size=clusters, replace=False)].copy()

    def assign(points: np.ndarray) -> np.ndarray:
        out = np.empty(points.shape[0], dtype=np.int64)
        step = max(1, _BLOCK_SCORES // clusters)
        half_sq = None if spherical else 0.5 * np.einsum("ij,ij->i", centroids, centroids)
        for lo in range(0, points.shape[0], step):
            scores = points[lo:lo + step] @ centroids.T
            if half_sq is not None:
                scores -= half_sq
            out[lo:lo + step] = np.argmax(scores, axis=1)
        return out

    for _ in range(KMEANS_ITERATIONS):
        labels = assign(train)
        sums = _cluster_sums(train, labels, clusters)
        counts = np.bincount(labels, minlength=clusters)
        empty = counts == 0
        sums[~empty] /= counts[~empty, None]
        # An empty cluster restarts at a random training point.
        sums[empty] = train[rng.choice(train.shape[0], size=int(empty.sum()), replace=False)]
        centroids = sums.astype(np.float32)
        if spherical:
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), np.float32(1e-12))
    return assign(vectors)


def _cluster(side: ListSide, seed: int) -> _Clusters:
    num_items = side.items.shape[0]
    count = max(1, min(num_items, round(num_items / ARTISTS_PER_CLUSTER)))
    labels = _kmeans(side.cluster_vectors, count, side.spherical, seed) if count > 1 else np.zeros(num_items, np.int64)
    order = _order_by_label(labels, count)
    sizes = np.bincount(labels, minlength=count)
    starts = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    position = np.empty(num_items, dtype=np.int64)
    position[order] = np.arange(num_items) - starts[labels[order]]
    # Centroids in the queries' space: the mean item of each cluster (a query's score with it is
    # its mean score over the cluster).
    sums = _cluster_sums(side.items, labels, count)
    centroids = (sums / np.maximum(sizes, 1)[:, None]).astype(np.float32)
    return _Clusters(order=order, starts=starts, position=position, cluster_of=labels,
                     centroids_t=np.ascontiguousarray(centroids.T),
                     items_t=np.ascontiguousarray(side.items[order].T))


def _by_cluster(labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions of ``labels`` grouped by label, (count + 1,) each label's range in them)."""
    order = _order_by_label(labels, count)
    return order, np.searchsorted(labels[order], np.arange(count + 1))


# Queries whose centroid scores are ranked at a time (bounds that (rows, clusters) matrix).
_PROBE_ROWS = 2048


def _leading(probes: int) -> int:
    """How many of a query's probed clusters set its bound (see ``_ivf_rows``)."""
    return max(min(2, probes), probes // LEADING_SHARE)


def _probed(queries: np.ndarray, centroids_t: np.ndarray, probes: int) -> np.ndarray:
    """(rows, probes) the clusters each query probes, best centroid score first."""
    scores = queries @ centroids_t
    count = centroids_t.shape[1]
    if probes < count:
        probed = np.argpartition(scores, count - probes, axis=1)[:, count - probes:]
    else:
        probed = np.broadcast_to(np.arange(count), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, probed, axis=1), axis=1)
    return np.take_along_axis(probed, order, axis=1)


def _ivf_rows(side: ListSide, clusters: _Clusters, n: int, probes: int,
              lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """IVF lists of length n for queries lo .. hi - 1 (one chunk).

    Each query's best ``_leading(probes)`` clusters (by centroid score) are scored first, keeping
    only the values of each one's top n (a partition, no sort, no artist): the n-th best of them
    is a lower bound of the query's n-th best overall. Then every probed cluster (the leading ones
    again: a product is cheaper than keeping their artists) keeps only the scores reaching it
    (one comparison per score, every tie included). The kept scores are ordered per query (ties
    to the lower artist index)."""
    count = clusters.count
    probes = min(probes, count)
    rows = hi - lo
    queries = side.queries[lo:hi]
    probed = np.concatenate([_probed(queries[at:at + _PROBE_ROWS], clusters.centroids_t, probes)
                             for at in range(0, rows, _PROBE_ROWS)]) if rows else np.zeros((0, probes), np.int64)
    leading = _leading(probes)
    probe_rows = np.broadcast_to(np.arange(rows)[:, None], probed.shape)
    # Excluded (query, artist) pairs, grouped by the artist's cluster.
    ex_rows = np.repeat(np.arange(rows), np.diff(side.exclude_indptr[lo:hi + 1]))
    ex_items = side.exclude_indices[side.exclude_indptr[lo]:side.exclude_indptr[hi]]
    ex_order, ex_bounds = _by_cluster(clusters.cluster_of[ex_items], count)
    row_in_block = np.full(rows, -1, dtype=np.int64)

    def scored(c: int, users: np.ndarray) -> np.ndarray:
        """Scores of ``users`` (chunk rows) for the artists of cluster c, exclusions at -inf."""
        start, end = int(clusters.starts[c]), int(clusters.starts[c + 1])
        scores = queries[users] @ clusters.items_t[:, start:end]
        e = ex_order[ex_bounds[c]:ex_bounds[c + 1]]
        if e.shape[0]:
            row_in_block[users] = np.arange(users.shape[0])
            r = row_in_block[ex_rows[e]]
            hit = r >= 0
            scores[r[hit], clusters.position[ex_items[e[hit]]]] = _NEG_INF
            row_in_block[users] = -1
        return scores

    # The bound: each query's n-th best of its leading clusters' top-n values.
    best = np.full((rows, leading * n), _NEG_INF, dtype=np.float32)
    best_filled = np.zeros(rows, dtype=np.int64)
    order, bounds = _by_cluster(probed[:, :leading].ravel(), count)
    first_rows = probe_rows[:, :leading].ravel()
    for c in np.flatnonzero(np.diff(bounds)).tolist():
        users = first_rows[order[bounds[c]:bounds[c + 1]]]
        scores = scored(c, users)
        width = scores.shape[1]
        values = np.partition(scores, width - n, axis=1)[:, width - n:] if width > n else scores
        best[users[:, None], best_filled[users][:, None] + np.arange(values.shape[1])] = values
        best_filled[users] += values.shape[1]
    bound = np.full(rows, _NEG_INF, dtype=np.float32)
    if best.shape[1] >= n:
        bound = np.partition(best, best.shape[1] - n, axis=1)[:, best.shape[1] - n]
    del best
    # The second pass scores the leading clusters again in other products, whose float32 sums can
    # differ in the last bits: the margin keeps a score its own bound came from.
    bound = bound - _BOUND_MARGIN * np.maximum(np.float32(1.0), np.abs(bound))
    bound = np.maximum(bound, np.finfo(np.float32).min)  # never keep an excluded -inf

    # The kept scores of each query and their artists, side by side (-inf padding); a query's
    # next free column is ``filled``. Sized for about n plus half of the other clusters' scores
    # (grown if not).
    width = n + (probes - leading) * int(clusters.starts[-1] / count) // 2
    pool = np.full((rows, max(width, n)), _NEG_INF, dtype=np.float32)
    pool_ids = np.full(pool.shape, -1, dtype=np.int32)
    filled = np.zeros(rows, dtype=np.int64)
    order, bounds = _by_cluster(probed.ravel(), count)
    all_rows = probe_rows.ravel()
    for c in np.flatnonzero(np.diff(bounds)).tolist():
        users = all_rows[order[bounds[c]:bounds[c + 1]]]
        scores = scored(c, users)
        at = np.flatnonzero(scores >= bound[users][:, None])
        if not at.shape[0]:
            continue
        r, col = np.divmod(at, scores.shape[1])
        counts = np.bincount(r, minlength=users.shape[0])
        within = np.arange(r.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
        dest_rows = users[r]
        dest_cols = filled[dest_rows] + within
        need = int(dest_cols.max()) + 1
        if need > pool.shape[1]:
            grow = max(need, pool.shape[1] * 3 // 2) - pool.shape[1]
            pool = np.pad(pool, ((0, 0), (0, grow)), constant_values=_NEG_INF)
            pool_ids = np.pad(pool_ids, ((0, 0), (0, grow)), constant_values=-1)
        pool[dest_rows, dest_cols] = scores.ravel()[at]
        pool_ids[dest_rows, dest_cols] = clusters.order[clusters.starts[c] + col]
        filled[users] += counts
    width = int(filled.max()) if rows else 0
    return _rows_top(pool[:, :max(width, 1)], n, pool_ids[:, :max(width, 1)])


# -- warm --------------------------------------------------------------------------------------

# A warm side is tried only where the fresh artists stay under this share of the catalog (more,
# and scoring them costs what exact lists cost).
WARM_MAX_FRESH_SHARE = 0.25
# ... and where the side has at least this many queries: with fewer, exact lists cost about what
# the check on ``TUNING_SAMPLE`` queries costs (Last.fm 2K's 1,892 users: exact in 0.09 s).
WARM_MIN_QUERIES = 4 * TUNING_SAMPLE


def _seeded_rows(side: ListSide, seeds: ListSeeds, fresh_t: np.ndarray, fresh_at: np.ndarray, n: int,
                 rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lists of the queries ``rows`` from their seeds and the fresh artists, re-scored exactly
    (excluded artists never listed). A fresh artist is kept only when it reaches the row's n-th
    best seed score (with n seeds left, a lower bound of the list's last score): most rows keep
    none, and the selection orders about n candidates a row."""
    count = rows.shape[0]
    queries = side.queries[rows]
    candidates = seeds.candidates[rows].astype(np.int64)
    valid = candidates >= 0
    picked = np.where(valid, candidates, 0)
    scores = np.matmul(side.items[picked], queries[:, :, None])[:, :, 0]
    fresh_scores = queries @ fresh_t
    # Exclusions: the (row, artist) pairs of these queries, as keys.
    starts, ends = side.exclude_indptr[rows], side.exclude_indptr[rows + 1]
    counts = ends - starts
    total = int(counts.sum())
    if total:
        at_row = np.repeat(np.arange(count), counts)
        flat = side.exclude_indices[np.arange(total) - np.repeat(np.cumsum(counts) - counts - starts, counts)]
        flat = flat.astype(np.int64)
        num_items = side.items.shape[0]
        valid &= ~np.isin(np.arange(count)[:, None] * num_items + picked, at_row * num_items + flat)
        in_fresh = fresh_at[flat]
        hit = in_fresh >= 0
        fresh_scores[at_row[hit], in_fresh[hit]] = _NEG_INF
    scores[~valid] = _NEG_INF
    width = scores.shape[1]
    bound = np.partition(scores, width - n, axis=1)[:, width - n] if width >= n else np.full(count, _NEG_INF)
    seed_row, seed_col = np.nonzero(valid)
    fresh_row, fresh_col = np.nonzero(fresh_scores >= np.maximum(bound, np.finfo(np.float32).min)[:, None])
    at_row = np.concatenate([seed_row, fresh_row])
    at_item = np.concatenate([picked[seed_row, seed_col], seeds.fresh[fresh_col]])
    values = np.concatenate([scores[seed_row, seed_col], fresh_scores[fresh_row, fresh_col]])
    # One sort of every candidate (row, best score, lower artist): rows keep uneven counts
    # (``_ranked``'s padded grid would be as wide as the widest row).
    order = _row_score_item_order(at_row, values, at_item, count, side.items.shape[0])
    at_row, at_item, values = at_row[order], at_item[order], values[order]
    starts = np.searchsorted(at_row, np.arange(count))
    within = np.arange(at_row.shape[0]) - starts[at_row]
    keep = within < n
    top = np.full((count, n), -1, dtype=np.int64)
    top_scores = np.zeros((count, n), dtype=np.float32)
    top[at_row[keep], within[keep]] = at_item[keep]
    top_scores[at_row[keep], within[keep]] = values[keep]
    return top, top_scores


def _row_score_item_order(at_row: np.ndarray, values: np.ndarray, at_item: np.ndarray, rows: int,
                          items: int) -> np.ndarray:
    """The order of (row, score, item) triples by row, then score descending, then item: one
    argsort of a packed 64-bit key (row, the score's bits made to sort descending, item) where
    they fit, else ``np.lexsort`` (about 5x slower)."""
    row_bits, item_bits = max(1, int(rows - 1).bit_length()), max(1, int(items - 1).bit_length())
    if row_bits + 32 + item_bits > 64:
        return np.lexsort((at_item, -values, at_row))
    # (+ 0: -0.0 as 0.0, equal scores as the lexsort sees them)
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0)).view(np.uint32).astype(np.uint64)
    # IEEE order: flip every bit of negatives, the sign bit of the rest; then invert (descending).
    ascending = np.where(bits >> np.uint64(31), bits ^ np.uint64(0xFFFFFFFF), bits | np.uint64(0x80000000))
    key = (at_row.astype(np.uint64) << np.uint64(32 + item_bits)) \
        | ((np.uint64(0xFFFFFFFF) - ascending) << np.uint64(item_bits)) | at_item.astype(np.uint64)
    return np.argsort(key)


def _seeded(side: ListSide, seeds: ListSeeds, n: int, workers: int, recall_target: float,
            seed: int) -> ListsMade | None:
    """The ``warm`` lists (module docstring), or None when they do not apply or miss the target
    on the sample."""
    num_queries, num_items = side.queries.shape[0], side.items.shape[0]
    if (seeds.candidates.shape[0] != num_queries or seeds.candidates.shape[1] < n or num_queries < WARM_MIN_QUERIES
            or seeds.fresh.shape[0] > WARM_MAX_FRESH_SHARE * num_items):
        return None
    known = np.flatnonzero((seeds.candidates >= 0).any(axis=1))
    if known.shape[0] == 0:
        return None
    fresh = np.asarray(seeds.fresh, dtype=np.int64)
    fresh_t = np.ascontiguousarray(side.items[fresh].T)
    fresh_at = np.full(num_items, -1, dtype=np.int64)
    fresh_at[fresh] = np.arange(fresh.shape[0])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(known, size=min(TUNING_SAMPLE, known.shape[0]), replace=False))
    with threadpool_limits(limits=workers, user_api="blas"):
        truth_top, truth_scores = exact_lists(side, sample, 10)
        found, found_scores = _seeded_rows(side, seeds, fresh_t, fresh_at, n, sample)
        _redo_short(side, found, found_scores, sample, n)
    truth = [(truth_top[r][truth_top[r] >= 0], truth_scores[r][truth_top[r] >= 0]) for r in range(sample.shape[0])]
    recall, error = list_recall_and_error(found, truth, list(range(sample.shape[0])),
                                          lambda row, got: side.items[got] @ side.queries[sample[row]])
    if recall - error < recall_target:
        return None
    top, scores = _empty_lists(num_queries, n)
    # Rows per chunk: their scores, and their seeds' gathered vectors, within an exact block's size.
    width = seeds.candidates.shape[1]
    block = _EXACT_BLOCK_SCORES // max(1, width + fresh.shape[0], width * side.items.shape[1])
    block = max(1, min(block, -(-known.shape[0] // workers)))

    def chunk(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        return _seeded_rows(side, seeds, fresh_t, fresh_at, n, known[lo:hi])

    parts_top, parts_scores = _empty_lists(known.shape[0], n)
    _run([(lo, min(lo + block, known.shape[0])) for lo in range(0, known.shape[0], block)], chunk,
         parts_top, parts_scores, workers)
    top[known], scores[known] = parts_top, parts_scores
    with threadpool_limits(limits=workers, user_api="blas"):
        _redo_short(side, top, scores, np.arange(num_queries), n)
    return ListsMade(top, scores, "warm", 0, 0, round(recall, 4))


def _redo_short(side: ListSide, top: np.ndarray, scores: np.ndarray, rows: np.ndarray, n: int) -> None:
    """Exact lists, in place, for the rows of ``top``/``scores`` (queries ``rows``) listed shorter
    than exact lists would be: queries without seeds, and those whose candidates ran out before
    n, or before the artists they may be given."""
    available = side.items.shape[0] - (side.exclude_indptr[rows + 1] - side.exclude_indptr[rows])
    redo = np.flatnonzero((top >= 0).sum(axis=1) < np.minimum(n, available))
    if redo.shape[0]:
        top[redo], scores[redo] = exact_lists(side, rows[redo], n)


# -- driver ------------------------------------------------------------------------------------

def _empty_lists(rows: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, n) int32 -1 indices and float32 0 scores, for ``_run`` to fill."""
    return np.full((rows, n), -1, dtype=np.int32), np.zeros((rows, n), dtype=np.float32)


def _run(chunks: list[tuple[int, int]], work: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
         top: np.ndarray, scores: np.ndarray, workers: int) -> None:
    """``work(lo, hi)`` over ``chunks`` on ``workers`` threads (BLAS on one thread each), its
    lists written into rows lo .. hi - 1 of ``top`` and ``scores``."""

    def one(chunk: tuple[int, int]) -> None:
        lo, hi = chunk
        t, s = work(lo, hi)
        top[lo:hi] = t
        scores[lo:hi] = s

    with threadpool_limits(limits=1, user_api="blas"):
        if workers > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one, chunks))
        else:
            for chunk in chunks:
                one(chunk)


def _none(num_queries: int, method: str) -> ListsMade:
    """No lists: (queries, 0)."""
    return ListsMade(np.zeros((num_queries, 0), np.int32), np.zeros((num_queries, 0), np.float32), method, 0, 0, 0.0)


def make_lists(side: ListSide, n: int, *, workers: int = 0, recall_target: float = RECALL_TARGET,
               seed: int = 0, exact_up_to: int = EXACT_UP_TO, budget_s: float = math.inf,
               seeds: ListSeeds | None = None) -> ListsMade:
    """Every query's top n artists by inner product (excluded artists never listed): exact while
    queries x artists <= ``exact_up_to``, else IVF with the fewest probes (``PROBE_STEPS``) whose
    recall@10 against exact on ``TUNING_SAMPLE`` queries, less its standard error over them,
    reaches ``recall_target``.
    ``workers`` 0: one per core. When the lists' wall time, extrapolated from a measured part
    (the first chunk of each worker, or the IVF run on the tuning sample), exceeds ``budget_s``
    seconds, none are made: (queries, 0) lists.
    ``seeds``: a warm-started publish's base lists; the ``warm`` lists in place of exact ones when
    they reach the target on a sample (module docstring), else as above."""
    num_queries, num_items = side.queries.shape[0], side.items.shape[0]
    workers = workers or (os.cpu_count() or 1)
    n = min(n, num_items)
    if n == 0 or num_queries == 0:
        return ListsMade(np.full((num_queries, n), -1, np.int32), np.zeros((num_queries, n), np.float32), "exact", 0, 0, 1.0)
    if seeds is not None and num_queries * num_items <= exact_up_to:
        made = _seeded(side, seeds, n, workers, recall_target, seed)
        if made is not None:
            return made
    items_t = np.ascontiguousarray(side.items.T)
    block = max(1, min(4096, _EXACT_BLOCK_SCORES // num_items))
    if num_queries * num_items <= exact_up_to:
        # At least one chunk per worker, so that a small side is shared too.
        if -(-num_queries // block) < workers:
            block = -(-num_queries // workers)
        chunks = [(lo, min(lo + block, num_queries)) for lo in range(0, num_queries, block)]
        top, scores = _empty_lists(num_queries, n)
        buffers = threading.local()
        work = lambda lo, hi: _exact_chunk(side, items_t, n, lo, hi, buffers)  # noqa: E731
        # The measured part: the first chunk of every worker, at once (no core waits for the
        # estimate).
        measured = chunks[:workers]
        started = time.perf_counter()
        _run(measured, work, top, scores, workers)
        if (time.perf_counter() - started) * len(chunks) / len(measured) > budget_s:
            return _none(num_queries, "exact")
        _run(chunks[len(measured):], work, top, scores, workers)
        return ListsMade(top, scores, "exact", 0, 0, 1.0)
    with threadpool_limits(limits=workers, user_api="blas"):
        clusters = _cluster(side, seed)
    # Probes: the fewest reaching the target on a sample, against exact lists of the sample.
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(num_queries, size=min(TUNING_SAMPLE, num_queries), replace=False))
    sample_side = _subset(side, sample)
    with threadpool_limits(limits=workers, user_api="blas"):
        top, top_scores = exact_lists(side, sample, 10)
    truth = [(top[r][top[r] >= 0], top_scores[r][top[r] >= 0]) for r in range(sample.shape[0])]
    rows = list(range(sample.shape[0]))
    for probes in PROBE_STEPS:
        probes = min(probes, clusters.count)
        started = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            found, _ = _ivf_rows(sample_side, clusters, n, probes, 0, sample.shape[0])
        per_query_s = (time.perf_counter() - started) / sample.shape[0]
        recall, error = list_recall_and_error(found, truth, rows,
                                              lambda row, got: side.items[got] @ sample_side.queries[row])
        # Less one standard error: the first step whose sample recall passes is picked because
        # it passed, so that figure is flattered (an independent sample measured 0.978 at full
        # scale where the tuning sample had just reached 0.98).
        if recall - error >= recall_target or probes == clusters.count:
            break
    if per_query_s * num_queries / workers > budget_s:
        return _none(num_queries, "ivf")
    # A chunk holds about (leading probes x n values, then n + the others' half clusters) scores
    # per query.
    leading = _leading(probes)
    width = leading * n + (probes - leading) * num_items // clusters.count // 2
    chunk_rows = max(256, min(16384, _BLOCK_SCORES // max(width, n)))
    chunks = [(lo, min(lo + chunk_rows, num_queries)) for lo in range(0, num_queries, chunk_rows)]
    top, scores = _empty_lists(num_queries, n)
    _run(chunks, lambda lo, hi: _ivf_rows(side, clusters, n, probes, lo, hi), top, scores, workers)
    return ListsMade(top, scores, "ivf", clusters.count, probes, round(recall, 4))


def exact_lists(side: ListSide, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top n (indices -1 padded, scores) of the query indices ``rows`` of a side, here."""
    sub = _subset(side, rows)
    items_t = np.ascontiguousarray(side.items.T)
    block = max(1, _EXACT_BLOCK_SCORES // max(1, side.items.shape[0]))
    parts = [_exact_chunk(sub, items_t, n, lo, min(lo + block, rows.shape[0])) for lo in range(0, rows.shape[0], block)]
    if not parts:
        return np.full((0, n), -1, dtype=np.int64), np.zeros((0, n), dtype=np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _subset(side: ListSide, rows: np.ndarray) -> ListSide:
    """The side restricted to query indices ``rows``."""
    counts = side.exclude_indptr[rows + 1] - side.exclude_indptr[rows]
    indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    parts = [side.exclude_indices[side.exclude_indptr[r]:side.exclude_indptr[r + 1]] for r in rows.tolist()]
    indices = np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
    return ListSide(np.ascontiguousarray(side.queries[rows]), side.items, indptr, indices,
                    side.cluster_vectors, side.spherical)


def recommend_side(artifacts: ModelArtifacts) -> ListSide:
    """Recommend: queries ``[user_factors, 1]``, items ``[artist_factors, bias]``, seen excluded,
    clustered on the augmented items (the vectors of the Recommend Annoy index)."""
    items = item_vectors_with_bias(artifacts.artist_factors, artifacts.artist_bias)
    queries = np.ones((artifacts.num_users, items.shape[1]), dtype=np.float32)
    queries[:, :-1] = artifacts.user_factors
    # The seen artists as stored (int32): an int64 copy would cost 8 bytes per play.
    return ListSide(queries, items, np.asarray(artifacts.seen_indptr, dtype=np.int64),
                    np.asarray(artifacts.seen_indices), augment_items(items), spherical=False)


def similar_side(artifacts: ModelArtifacts) -> ListSide:
    """SimilarArtists: every artist's normalized factors against all, itself excluded."""
    factors = np.asarray(artifacts.artist_factors, dtype=np.float32)
    normalized = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), np.float32(1e-12))
    num = factors.shape[0]
    return ListSide(normalized, normalized, np.arange(num + 1, dtype=np.int64), np.arange(num, dtype=np.int64),
                    normalized, spherical=True)


def precompute_top(artifacts: ModelArtifacts, recommend_n: int = DEFAULT_RECOMMEND_N,
                   similar_n: int = DEFAULT_SIMILAR_N, workers: int = 0, recall_target: float = RECALL_TARGET,
                   seed: int = 0, exact_up_to: int = EXACT_UP_TO, budget_s: float = math.inf,
                   sides: tuple[ListSide, ListSide] | None = None,
                   seeds: tuple[ListSeeds | None, ListSeeds | None] | None = None,
                   ) -> tuple[PrecomputedTop, ListsMade, ListsMade, float]:
    """Every user's top ``recommend_n`` (seen excluded) and every artist's top ``similar_n``
    (itself excluded), by ``make_lists``; a length 0 makes (rows, 0) lists. ``sides``: the
    artifacts' (``recommend_side``, ``similar_side``) when the caller has them (None: made here). ``budget_s``: the
    wall time both sides may take (Recommend, the hotter RPC, first; a side whose estimate does
    not fit in what is left gets (rows, 0) lists and is searched). ``seeds``: a warm-started
    publish's (Recommend, SimilarArtists) ``ListSeeds``, either None (``make_lists``). Returns the
    lists, how each side was made, and the wall time spent (seconds)."""
    started = time.perf_counter()
    recommend_n = min(recommend_n, artifacts.num_artists)
    similar_n = min(similar_n, max(artifacts.num_artists - 1, 0))
    options = dict(workers=workers, recall_target=recall_target, seed=seed, exact_up_to=exact_up_to)
    rec_side, sim_side = sides or (recommend_side(artifacts), similar_side(artifacts))
    rec_seeds, sim_seeds = seeds or (None, None)
    rec = make_lists(rec_side, recommend_n, budget_s=budget_s, seeds=rec_seeds, **options)
    left_s = budget_s - (time.perf_counter() - started)
    sim = make_lists(sim_side, similar_n, budget_s=left_s, seeds=sim_seeds, **options)
    top = PrecomputedTop(recommend_top=rec.top, recommend_top_scores=rec.scores,
                         similar_top=sim.top, similar_top_scores=sim.scores)
    return top, rec, sim, time.perf_counter() - started


def list_recall_at_10(lists: np.ndarray, truth: list[tuple[np.ndarray, np.ndarray]], rows: list[int],
                      score_of: Callable[[int, np.ndarray], np.ndarray]) -> float:
    """Tie-aware recall@10 of the lists' first 10 entries (rows ``rows``) against exact answers
    ``truth`` (indices, scores best first) for the same rows."""
    return round(list_recall_and_error(lists, truth, rows, score_of)[0], 4)


def list_recall_and_error(lists: np.ndarray, truth: list[tuple[np.ndarray, np.ndarray]], rows: list[int],
                          score_of: Callable[[int, np.ndarray], np.ndarray]) -> tuple[float, float]:
    """``list_recall_at_10`` (unrounded) and its standard error over the rows (the ratio
    estimator's: the rows' hits less recall x their exact answers)."""
    hits, totals = _list_hits(lists, truth, rows, score_of)
    total = float(totals.sum())
    if total == 0:
        return 1.0, 0.0
    recall = float(hits.sum()) / total
    n = hits.shape[0]
    residuals = hits - recall * totals
    error = math.sqrt(n / max(n - 1, 1) * float(residuals @ residuals)) / total
    return recall, error


def _list_hits(lists: np.ndarray, truth: list[tuple[np.ndarray, np.ndarray]], rows: list[int],
               score_of: Callable[[int, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (exact answers found, exact answers), float64 (R,) each."""
    hits = np.zeros(len(rows), dtype=np.float64)
    totals = np.zeros(len(rows), dtype=np.float64)
    for at, (row, (true_idx, true_scores)) in enumerate(zip(rows, truth)):
        found = lists[row, :10]
        found = found[found >= 0].astype(np.int64)
        totals[at] = len(true_idx)
        if len(true_idx) and len(found):
            kth = float(true_scores[-1])
            scores = score_of(row, found)
            hits[at] = min(len(true_idx), int(np.count_nonzero(scores >= kth - 1e-5 * max(1.0, abs(kth)))))
    return hits, totals
