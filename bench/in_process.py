"""Recommend and SimilarArtists in-process, exactly as the index service answers them.

``index_service.serving_model.ServingModel`` over a loaded version, BLAS limited to one thread as
the service does; p50/p99 per call (median over runs), and recall@10 against the same model
forced to exact search with the same exclusions (seen artists excluded for Recommend, as served).
Tie-aware: a returned artist counts when its exact score reaches the 10th best exact score.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bench.measures import median, percentile

K = 10


def _tie_aware_hits(found_scores: np.ndarray, true_scores: np.ndarray) -> tuple[int, int]:
    if not len(true_scores):
        return 0, 0
    kth = float(true_scores[-1])
    hits = int(np.count_nonzero(found_scores >= kth - 1e-5 * max(1.0, abs(kth))))
    return min(hits, len(true_scores)), len(true_scores)


def in_process_latency(version_dir: Path, queries: int, runs: int) -> dict:
    """Recommend and SimilarArtists through ``ServingModel`` (as served): p50/p99 per call and
    recall@10 against the same model forced to exact search."""
    from index_service.serving_model import RecommendQuery, ServingModel, SimilarQuery
    from model_store import load_version

    out = {}
    with threadpool_limits(limits=1, user_api="blas"):
        served = ServingModel(load_version(version_dir))
        exact = ServingModel(load_version(version_dir), recommend_method="exact", similar_method="exact")
        try:
            served.warm_up()
            served.build_hash_indexes()
            rng = np.random.default_rng(0)
            users = [served.user_ids[i] for i in
                     rng.choice(served.num_users, size=min(queries, served.num_users),
                                replace=False)]
            artists = [served.artist_ids[i] for i in
                       rng.choice(served.num_artists, size=min(queries, served.num_artists),
                                  replace=False)]
            calls = {
                "recommend": (users, lambda m, u: m.recommend(RecommendQuery(u, k=K))),
                "similar": (artists, lambda m, a: m.similar(SimilarQuery(artist_id=a, k=K)).ranking),
            }
            for name, (ids, call) in calls.items():
                p50s, p99s = [], []
                found = []
                for r in range(runs):
                    times = []
                    for i in ids:
                        t0 = time.perf_counter()
                        ranking = call(served, i)
                        times.append((time.perf_counter() - t0) * 1000.0)
                        if r == 0:
                            found.append(ranking.scores)
                    p50s.append(percentile(times, 50))
                    p99s.append(percentile(times, 99))
                hits = total = 0
                for i, scores in zip(ids, found):
                    h, t = _tie_aware_hits(np.asarray(scores), np.asarray(call(exact, i).scores))
                    hits += h
                    total += t
                params = served.recommend_params if name == "recommend" else served.similar_params
                out[name] = {"p50_ms": median(p50s), "p99_ms": median(p99s),
                             "recall_at_10": hits / total if total else float("nan"), "queries": len(ids),
                             "method": params.method, "search_k": params.search_k,
                             "candidates_per_result": params.candidates_per_result}
        finally:
            served.close()
            exact.close()
    return out
