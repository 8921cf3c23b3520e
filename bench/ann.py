"""Nearest-neighbour search: recall@10 against exact search, and per-query latency.

The task is the Recommend search itself: the 10 artists with the highest model score
``[user_factors, 1] . [artist_factors, artist_bias]`` for a user (maximum inner product search),
over every artist (the notebook's task; seen artists are not excluded here, so every method
answers the same question). Methods, one query at a time, BLAS on one thread as in the service:

- ``exact``: our serving brute force (``ranking.search.InnerProductSearch.exact``, numpy);
- ``notebook annoy``: the original notebook's index, Annoy ``dot`` metric over ``[factors, bias]``,
  20 trees, default search_k, 10 results;
- ``our annoy``: the version's own ``recommend.ann`` (angular over the extra-dimension transform)
  through the serving code path, Annoy candidates re-ranked exactly
  (``InnerProductSearch.search``), at several (candidates per result, search_k) settings, the
  manifest's included;
- ``hnswlib``: inner-product HNSW (M 16, ef_construction 200) at several ``ef``, for reference.

SimilarArtists (cosine) is measured the same way for exact, our Annoy path and hnswlib cosine.
Recall is tie-aware, as in ``ranking.ann_build``: a returned artist counts when its exact score
reaches the 10th best exact score (float32 rounding allowed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex
from threadpoolctl import threadpool_limits

from bench.measures import Stopwatch, median, percentile
from bench.settings import BenchSettings
from model_store import load_version
from ranking.inner_product import item_vectors_with_bias
from ranking.search import CosineSearch, InnerProductSearch, SearchParams

log = logging.getLogger(__name__)

K = 10
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200


def _recall(found: list[np.ndarray], truth_kth: np.ndarray, score_of: Callable[[int, np.ndarray], np.ndarray]) -> float:
    hits = 0
    for n, idx in enumerate(found):
        if len(idx):
            kth = float(truth_kth[n])
            scores = score_of(n, np.asarray(idx, dtype=np.int64))
            hits += min(K, int(np.count_nonzero(scores >= kth - 1e-5 * max(1.0, abs(kth)))))
    return hits / (K * len(found)) if found else float("nan")


def _timed(run: Callable[[int], np.ndarray], queries: int, runs: int) -> tuple[list[np.ndarray], dict]:
    """Answers of the first pass and latency (median over ``runs`` passes of each pass's p50/p99)."""
    answers: list[np.ndarray] = []
    p50s, p99s = [], []
    for r in range(runs):
        times = []
        for n in range(queries):
            t0 = time.perf_counter()
            out = run(n)
            times.append(time.perf_counter() - t0)
            if r == 0:
                answers.append(out)
        ms = [t * 1000.0 for t in times]
        p50s.append(percentile(ms, 50))
        p99s.append(percentile(ms, 99))
    return answers, {"p50_ms": median(p50s), "p99_ms": median(p99s)}


def _hnsw(vectors: np.ndarray, space: str):
    """An hnswlib index over ``vectors`` (n, d) in ``space`` ("ip" or "cosine"), or None when
    hnswlib is not installed; and its build time in seconds."""
    try:
        import hnswlib
    except ImportError:
        return None, 0.0
    index = hnswlib.Index(space=space, dim=int(vectors.shape[1]))
    with Stopwatch() as sw:
        index.init_index(max_elements=int(vectors.shape[0]), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M,
                         random_seed=0)
        index.add_items(vectors, np.arange(vectors.shape[0]), num_threads=-1)
    return index, sw.seconds


def measure_model(version_dir: Path, settings: BenchSettings, label: str, queries: int) -> dict:
    """Every method on one published version (``queries`` users and artists); the section of
    benchmarks.json for it."""
    loaded = load_version(version_dir)
    try:
        return _measure(loaded, settings, label, queries)
    finally:
        loaded.close()


def _measure(loaded, settings: BenchSettings, label: str, num_queries: int) -> dict:
    art = loaded.artifacts
    manifest = loaded.manifest
    rng = np.random.default_rng(0)
    users = rng.choice(art.num_users, size=min(num_queries, art.num_users), replace=False)
    queries = np.ones((users.size, art.num_factors + 1), dtype=np.float32)
    queries[:, :-1] = art.user_factors[users]
    items = item_vectors_with_bias(art.artist_factors, art.artist_bias)
    nq, runs = users.size, settings.runs
    rows: list[dict] = []
    notes: list[str] = []

    exact_search = InnerProductSearch(items, loaded.recommend_index, SearchParams("exact"))
    truth = [exact_search.exact(q, K) for q in queries]
    truth_kth = np.array([t[1][-1] for t in truth], dtype=np.float32)

    def score_of(n: int, idx: np.ndarray) -> np.ndarray:
        return items[idx] @ queries[n]

    def add(method: str, setting: str, run: Callable[[int], np.ndarray], build_s: float | None = None, **extra):
        answers, latency = _timed(run, nq, runs)
        rows.append({"search": "recommend", "method": method, "setting": setting,
                     "recall_at_10": _recall(answers, truth_kth, score_of), **latency,
                     "build_s": build_s, **extra})

    with threadpool_limits(limits=1, user_api="blas"):
        add("exact", "numpy brute force", lambda n: exact_search.exact(queries[n], K)[0])

        dot = AnnoyIndex(items.shape[1], "dot")
        dot.set_seed(0)
        with Stopwatch() as sw:
            for i, row in enumerate(items.tolist()):
                dot.add_item(i, row)
            dot.build(settings.ann_dot_trees, n_jobs=-1)
        query_lists = queries.tolist()
        add("notebook annoy", f"dot, {settings.ann_dot_trees} trees, default search_k",
            lambda n: dot.get_nns_by_vector(query_lists[n], K), build_s=sw.seconds)
        dot.unload()

        chosen = manifest.recommend_search
        n_trees = chosen.n_trees
        settings_tried = {(cpr, max(1, n_trees * K * cpr * mult)) for cpr, mult in settings.ann_annoy_settings}
        settings_tried.add((chosen.candidates_per_result, chosen.search_k))
        for cpr, search_k in sorted(settings_tried):
            params = SearchParams("annoy", search_k, cpr)
            is_chosen = (cpr, search_k) == (chosen.candidates_per_result, chosen.search_k)
            add("our annoy", f"{n_trees} trees, {cpr} candidates/result, search_k {search_k}"
                + (f" (manifest's; it serves {chosen.method})" if is_chosen else ""),
                lambda n, p=params: exact_search.search(queries[n], K, params=p)[0],
                candidates_per_result=cpr, search_k=search_k, manifest_choice=is_chosen)

        index, build_s = _hnsw(items, "ip")
        if index is None:
            notes.append("hnswlib is not installed: its rows are skipped (pip install -e '.[bench]')")
        else:
            for ef in settings.ann_hnsw_ef:
                index.set_ef(max(ef, K))
                add("hnswlib", f"ip, M {HNSW_M}, ef {max(ef, K)}",
                    lambda n: index.knn_query(queries[n], k=K, num_threads=1)[0][0], build_s=build_s, ef=max(ef, K))
            del index

        rows.extend(_similar_rows(loaded, settings, notes, num_queries))

    return {
        "label": label,
        "data_source": manifest.data_source,
        "artists": art.num_artists,
        "users": art.num_users,
        "factors": art.num_factors,
        "queries": int(nq),
        "manifest_recommend": manifest.recommend_search.to_json(),
        "manifest_similar": manifest.similar_search.to_json(),
        "rows": rows,
        "notes": notes,
    }


def _similar_rows(loaded, settings: BenchSettings, notes: list[str], num_queries: int) -> list[dict]:
    art = loaded.artifacts
    manifest = loaded.manifest
    rng = np.random.default_rng(1)
    artists = rng.choice(art.num_artists, size=min(num_queries, art.num_artists), replace=False).tolist()
    search = CosineSearch(art.artist_factors, loaded.similar_index, SearchParams("exact"))
    truth = [search.exact(a, K) for a in artists]
    truth_kth = np.array([t[1][-1] for t in truth], dtype=np.float32)
    rows: list[dict] = []

    def score_of(n: int, idx: np.ndarray) -> np.ndarray:
        return search.normalized[idx] @ search.normalized[artists[n]]

    def add(method: str, setting: str, run: Callable[[int], np.ndarray], **extra):
        answers, latency = _timed(run, len(artists), settings.runs)
        rows.append({"search": "similar", "method": method, "setting": setting,
                     "recall_at_10": _recall(answers, truth_kth, score_of), **latency, **extra})

    add("exact", "numpy brute force", lambda n: search.exact(artists[n], K)[0])
    chosen = manifest.similar_search
    if loaded.similar_index is None:
        notes.append(f"{manifest.num_artists:,} artists: the version holds no SimilarArtists Annoy index (every "
                     "artist has a precomputed list; exact search serves past it), so no 'our annoy' row")
    else:
        params = SearchParams("annoy", chosen.search_k, chosen.candidates_per_result)
        add("our annoy", f"{chosen.n_trees} trees, {chosen.candidates_per_result} candidates/result, "
            f"search_k {chosen.search_k} (manifest's; it serves {chosen.method})",
            lambda n: search.search(artists[n], K, params=params)[0],
            manifest_choice=True)
    index, build_s = _hnsw(np.ascontiguousarray(art.artist_factors, dtype=np.float32), "cosine")
    if index is not None:
        for ef in settings.ann_hnsw_ef:
            index.set_ef(max(ef, K + 1))
            # The query artist is its own nearest neighbour: ask for one more and drop it.
            add("hnswlib", f"cosine, M {HNSW_M}, ef {max(ef, K + 1)}",
                lambda n: [i for i in index.knn_query(art.artist_factors[artists[n]], k=K + 1, num_threads=1)[0][0]
                           if i != artists[n]][:K], build_s=build_s, ef=max(ef, K + 1))
    return rows


def run(settings: BenchSettings, workdir: Path, large_version: Path | None) -> dict:
    """The ANN part: the Last.fm 2K model and the largest scale model (if the scale part ran)."""
    from bench.models import lastfm_version

    models = [("lastfm-2k", lastfm_version(workdir, settings), settings.ann_queries)]
    notes = []
    if large_version is not None:
        models.append(("synthetic full scale" if not settings.quick else "synthetic (quick: largest size)",
                       large_version, settings.ann_queries_large))
    else:
        notes.append("no large model: run the scale part first (--parts scale,ann) for the 160,000-artist rows")
    sections = []
    for label, version_dir, queries in models:
        log.info("ANN: measuring %s (%s)", label, version_dir)
        sections.append(measure_model(version_dir, settings, label, queries))
    return {"models": sections, "notes": notes}
