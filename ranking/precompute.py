"""Precomputing every user's and every artist's top answers when a version is published.

Each list is made by the serving search itself (``ranking.search``, the method and settings
the manifest chooses, one query at a time, BLAS on one thread), so a Recommend or SimilarArtists
answered from a list is the answer the search path would give: the same artists, the same order,
the same scores and tie rule. Large catalogs are split over worker processes (fork): Annoy holds
the GIL while it searches, so threads would not help.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from model_store.artifacts import ModelArtifacts, PrecomputedTop
from ranking.inner_product import user_query
from ranking.search import CosineSearch, InnerProductSearch

DEFAULT_RECOMMEND_N = 50
DEFAULT_SIMILAR_N = 50
# Below this many queries in all, lists are made in this process (forking costs more).
PARALLEL_FROM_QUERIES = 20_000
_CHUNK_ROWS = 4096

# The searches a forked worker uses (set in the parent just before the pool forks).
_WORK: dict[str, Callable[[int, int], tuple[np.ndarray, np.ndarray]]] = {}


def _recommend_rows(artifacts: ModelArtifacts, search: InnerProductSearch, n: int):
    seen_indptr = artifacts.seen_indptr
    seen = np.ascontiguousarray(artifacts.seen_indices, dtype=np.int64)
    factors = artifacts.user_factors

    def rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        top = np.full((hi - lo, n), -1, dtype=np.int32)
        scores = np.zeros((hi - lo, n), dtype=np.float32)
        for u in range(lo, hi):
            exclude = seen[seen_indptr[u]:seen_indptr[u + 1]]
            idx, sc = search.search(user_query(factors[u]), n, exclude)
            top[u - lo, :idx.shape[0]] = idx
            scores[u - lo, :idx.shape[0]] = sc
        return top, scores

    return rows


def _similar_rows(search: CosineSearch, n: int):
    def rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        top = np.full((hi - lo, n), -1, dtype=np.int32)
        scores = np.zeros((hi - lo, n), dtype=np.float32)
        for a in range(lo, hi):
            idx, sc = search.search(a, n)
            top[a - lo, :idx.shape[0]] = idx
            scores[a - lo, :idx.shape[0]] = sc
        return top, scores

    return rows


def _run_chunk(job: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    name, lo, hi = job
    with threadpool_limits(limits=1, user_api="blas"):
        return _WORK[name](lo, hi)


def _fill(jobs: dict[str, tuple[int, Callable]], workers: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Run every (name -> (rows, function)) over row ranges, in ``workers`` forked processes or here."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    chunks = [(name, lo, min(lo + _CHUNK_ROWS, rows)) for name, (rows, _) in jobs.items()
              for lo in range(0, rows, _CHUNK_ROWS)]
    _WORK.clear()
    _WORK.update({name: fn for name, (_, fn) in jobs.items()})
    try:
        if workers > 1 and len(chunks) > 1:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                results = list(pool.map(_run_chunk, chunks))
        else:
            results = [_run_chunk(chunk) for chunk in chunks]
    finally:
        _WORK.clear()
    for name in jobs:
        parts = [r for (n, _, _), r in zip(chunks, results) if n == name]
        out[name] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


def precompute_top(artifacts: ModelArtifacts, recommend: InnerProductSearch, similar: CosineSearch,
                   recommend_n: int = DEFAULT_RECOMMEND_N, similar_n: int = DEFAULT_SIMILAR_N,
                   workers: int = 0) -> tuple[PrecomputedTop, float]:
    """Every user's top ``recommend_n`` (seen excluded) and every artist's top ``similar_n``
    (itself excluded) by the given searches (their own params); a length 0 makes (rows, 0) lists.
    Returns the lists and the wall time spent (seconds). ``workers`` 0: one per core when there are many queries, else 1."""
    started = time.perf_counter()
    recommend_n = min(recommend_n, artifacts.num_artists)
    similar_n = min(similar_n, max(artifacts.num_artists - 1, 0))
    jobs = {}
    if recommend_n:
        jobs["recommend"] = (artifacts.num_users, _recommend_rows(artifacts, recommend, recommend_n))
    if similar_n:
        jobs["similar"] = (artifacts.num_artists, _similar_rows(similar, similar_n))
    if workers <= 0:
        queries = artifacts.num_users + artifacts.num_artists
        workers = (os.cpu_count() or 1) if queries >= PARALLEL_FROM_QUERIES else 1
    filled = _fill(jobs, workers)
    empty = {"recommend": artifacts.num_users, "similar": artifacts.num_artists}
    for name, rows in empty.items():  # a side not precomputed: (rows, 0) lists
        filled.setdefault(name, (np.zeros((rows, 0), dtype=np.int32), np.zeros((rows, 0), dtype=np.float32)))
    top = PrecomputedTop(recommend_top=filled["recommend"][0], recommend_top_scores=filled["recommend"][1],
                         similar_top=filled["similar"][0], similar_top_scores=filled["similar"][1])
    return top, time.perf_counter() - started


def list_recall_at_10(lists: np.ndarray, truth: list[tuple[np.ndarray, np.ndarray]], rows: list[int],
                      score_of: Callable[[int, np.ndarray], np.ndarray]) -> float:
    """Tie-aware recall@10 of the lists' first 10 entries (rows ``rows``) against exact answers
    ``truth`` (indices, scores best first) for the same rows."""
    hits = total = 0
    for row, (true_idx, true_scores) in zip(rows, truth):
        found = lists[row, :10]
        found = found[found >= 0].astype(np.int64)
        total += len(true_idx)
        if len(true_idx) and len(found):
            kth = float(true_scores[-1])
            scores = score_of(row, found)
            hits += min(len(true_idx), int(np.count_nonzero(scores >= kth - 1e-5 * max(1.0, abs(kth)))))
    return round(hits / total, 4) if total else 1.0
