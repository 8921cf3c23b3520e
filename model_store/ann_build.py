"""Building a version's Annoy indexes and choosing their search settings from measurement.

For each search (Recommend: inner product via the extra dimension; SimilarArtists: cosine), the
builder measures recall@10 of the serving path (``model_store.search``) against brute force on a
sample of queries, raises ``candidates_per_result`` until the recall target is met, times both the
Annoy path and brute force, and records the faster one as the method to serve, except that large
catalogs (``ANNOY_REQUIRED_FROM`` artists and more) always use Annoy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from annoy import AnnoyIndex

from model_store.format import SearchConfig
from model_store.inner_product import augment_items, item_vectors_with_bias, user_query
from model_store.search import CosineSearch, InnerProductSearch, SearchParams

RECALL_TARGET = 0.98
ANNOY_REQUIRED_FROM = 100_000
CANDIDATE_STEPS = (2, 4, 8, 16, 32, 64, 128)
RECALL_K = 10


@dataclass(frozen=True)
class BuildSettings:
    """Knobs of the index build. ``n_trees`` 0 picks from the catalog size; ``sample_size`` is the
    number of queries recall and latency are measured on; ``seed`` fixes the sample and Annoy."""

    n_trees: int = 0
    sample_size: int = 300
    recall_target: float = RECALL_TARGET
    seed: int = 0
    n_jobs: int = -1


def default_n_trees(num_artists: int) -> int:
    """More trees for bigger catalogs: better candidates per node visited, bigger file."""
    if num_artists < 20_000:
        return 20
    if num_artists < 200_000:
        return 40
    return 60


def build_angular_index(vectors: np.ndarray, n_trees: int, seed: int, n_jobs: int, path: str) -> AnnoyIndex:
    """Build an angular Annoy index over ``vectors`` (n, d), save it to ``path``, return it loaded."""
    index = AnnoyIndex(int(vectors.shape[1]), "angular")
    index.set_seed(int(seed))
    for i, row in enumerate(vectors.tolist()):
        index.add_item(i, row)
    index.build(int(n_trees), n_jobs=n_jobs)
    index.save(path)  # saving also memory-maps the saved file
    return index


def _recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    hits = sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(found, truth))
    total = sum(len(b) for b in truth)
    return hits / total if total else 1.0


def _median_ms(run, queries) -> float:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        run(q)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0) if times else 0.0


def _choose(name: str, num_items: int, dims: int, n_trees: int, sample: list, exact_run, annoy_run,
            settings: BuildSettings) -> SearchConfig:
    truth = [exact_run(q, None) for q in sample]
    chosen = None
    recall = 1.0
    for step in CANDIDATE_STEPS:
        params = SearchParams("annoy", -1, step)
        found = [annoy_run(q, params) for q in sample]
        recall = _recall(found, truth)
        chosen = params
        if recall >= settings.recall_target:
            break
    assert chosen is not None
    exact_ms = _median_ms(lambda q: exact_run(q, None), sample)
    annoy_ms = _median_ms(lambda q: annoy_run(q, chosen), sample)
    use_annoy = num_items >= ANNOY_REQUIRED_FROM or (recall >= settings.recall_target and annoy_ms < exact_ms)
    return SearchConfig(
        method="annoy" if use_annoy else "exact",
        metric="angular",
        dims=dims,
        n_trees=n_trees,
        search_k=chosen.search_k,
        candidates_per_result=chosen.candidates_per_result,
        recall_at_10=round(recall if use_annoy else 1.0, 4),
        recall_sample_size=len(sample),
        median_latency_ms=round(annoy_ms if use_annoy else exact_ms, 4),
        exact_median_latency_ms=round(exact_ms, 4),
        annoy_median_latency_ms=round(annoy_ms, 4),
    )


def build_indexes(user_factors: np.ndarray, artist_factors: np.ndarray, artist_bias: np.ndarray,
                  recommend_path: str, similar_path: str,
                  settings: BuildSettings = BuildSettings()) -> tuple[SearchConfig, SearchConfig]:
    """Build both Annoy files and return their measured search settings (Recommend, SimilarArtists).

    Shapes: user_factors (U, F), artist_factors (A, F), artist_bias (A,). Recall and latency are
    measured on ``settings.sample_size`` random users and artists.
    """
    num_artists, num_factors = artist_factors.shape
    n_trees = settings.n_trees or default_n_trees(num_artists)
    rng = np.random.default_rng(settings.seed)
    k = min(RECALL_K, num_artists - 1) if num_artists > 1 else 1

    items = item_vectors_with_bias(artist_factors, artist_bias)
    rec_index = build_angular_index(augment_items(items), n_trees, settings.seed, settings.n_jobs, recommend_path)
    rec_search = InnerProductSearch(items, rec_index, SearchParams())
    users = rng.choice(user_factors.shape[0], size=min(settings.sample_size, user_factors.shape[0]), replace=False)
    rec_sample = [user_query(user_factors[u]) for u in users]
    recommend = _choose(
        "recommend", num_artists, num_factors + 2, n_trees, rec_sample,
        lambda q, p: rec_search.exact(q, k)[0] if p is None else rec_search.search(q, k, params=p)[0],
        lambda q, p: rec_search.search(q, k, params=p)[0],
        settings,
    )
    rec_index.unload()

    sim_index = build_angular_index(artist_factors.astype(np.float32), n_trees, settings.seed, settings.n_jobs,
                                    similar_path)
    sim_search = CosineSearch(artist_factors, sim_index, SearchParams())
    artists = rng.choice(num_artists, size=min(settings.sample_size, num_artists), replace=False).tolist()
    similar = _choose(
        "similar", num_artists, num_factors, n_trees, artists,
        lambda a, p: sim_search.exact(a, k)[0],
        lambda a, p: sim_search.search(a, k, params=p)[0],
        settings,
    )
    sim_index.unload()
    return recommend, similar
