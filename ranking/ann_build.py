"""Building a version's Annoy indexes and choosing their search settings from measurement.

For each search (Recommend: inner product via the extra dimension; SimilarArtists: cosine), the
builder measures recall@10 of the serving path (``ranking.search``) against brute force on a
sample of queries (tie-aware: an item tied with the 10th best counts as right), searches for the
fastest Annoy settings (``candidates_per_result`` and ``search_k``) that meet the recall target,
times brute force too, and records the faster one as the method to serve, except that large
catalogs (``ANNOY_REQUIRED_FROM`` artists and more) always use Annoy. The tuned Annoy settings are
recorded even when exact search is chosen, so a server can still be told to use Annoy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from annoy import AnnoyIndex

from model_store.artifacts import BuiltIndexes, ModelArtifacts
from model_store.format import PrecomputedConfig, SearchConfig
from ranking.inner_product import augment_items, item_vectors_with_bias, user_query
from ranking.precompute import DEFAULT_RECOMMEND_N, DEFAULT_SIMILAR_N, list_recall_at_10, precompute_top
from ranking.search import CosineSearch, InnerProductSearch, SearchParams, search_params

RECALL_TARGET = 0.98
ANNOY_REQUIRED_FROM = 100_000
CANDIDATE_STEPS = (1, 2, 4, 8, 16, 32, 64)
# search_k tried, as multiples of Annoy's default (n_trees * candidates fetched).
SEARCH_K_FACTORS = (1, 2, 4, 8, 16, 32, 64)
RECALL_K = 10


@dataclass(frozen=True)
class BuildSettings:
    """Knobs of the index build. ``n_trees`` 0 picks from the catalog size; ``sample_size`` is the
    number of queries recall and latency are measured on; ``seed`` fixes the sample and Annoy;
    ``tuning_budget_s`` bounds the time spent trying Annoy settings, per search (seconds);
    ``recommend_n``/``similar_n``: length of the precomputed list per user/artist;
    ``precompute_workers``: processes making them (0: one per core for large catalogs);
    ``precompute_budget_s``: estimated wall time the lists may take (see ``precompute_lengths``);
    ``method``: "exact" or "annoy" to serve with whatever the measurement says (None: measured)."""

    n_trees: int = 0
    sample_size: int = 300
    recall_target: float = RECALL_TARGET
    seed: int = 0
    n_jobs: int = -1
    tuning_budget_s: float = 20.0
    recommend_n: int = DEFAULT_RECOMMEND_N
    similar_n: int = DEFAULT_SIMILAR_N
    precompute_workers: int = 0
    precompute_budget_s: float = 120.0
    method: str | None = None


def default_n_trees(num_artists: int) -> int:
    """More trees for bigger catalogs: better candidates per node visited, bigger file."""
    if num_artists < 20_000:
        return 20
    if num_artists < 200_000:
        return 40
    return 60


def build_angular_index(vectors: np.ndarray, n_trees: int, seed: int, n_jobs: int) -> AnnoyIndex:
    """Build an angular Annoy index over ``vectors`` (n, d) in memory (the publish saves it)."""
    index = AnnoyIndex(int(vectors.shape[1]), "angular")
    index.set_seed(int(seed))
    for i, row in enumerate(vectors.tolist()):
        index.add_item(i, row)
    index.build(int(n_trees), n_jobs=n_jobs)
    return index


@dataclass(frozen=True)
class _Trial:
    params: SearchParams
    recall: float
    median_ms: float


def _recall_and_latency(sample: list, truth: list[tuple[np.ndarray, np.ndarray]], run, score_of) -> tuple[float, float]:
    """Tie-aware recall@k of ``run`` against ``truth`` and its median latency in ms.

    A returned item counts as a hit when its exact score reaches the k-th best exact score (up to
    float32 rounding): when several items tie at the cut-off, any of them is a right answer.
    """
    hits = total = 0
    times = []
    for query, (true_idx, true_scores) in zip(sample, truth):
        t0 = time.perf_counter()
        found = run(query)
        times.append(time.perf_counter() - t0)
        total += len(true_idx)
        if len(true_idx) and len(found):
            kth = float(true_scores[-1])
            scores = score_of(query, np.asarray(found, dtype=np.int64))
            hits += min(len(true_idx), int(np.count_nonzero(scores >= kth - 1e-5 * max(1.0, abs(kth)))))
    recall = hits / total if total else 1.0
    return recall, (float(np.median(times) * 1000.0) if times else 0.0)


def _median_ms(run, queries) -> float:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        run(q)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0) if times else 0.0


def _tune_annoy(num_items: int, n_trees: int, sample: list, truth: list, annoy_run, score_of,
                settings: BuildSettings, give_up_ms: float) -> _Trial:
    """The fastest (candidates_per_result, search_k) reaching the recall target, or the most
    accurate one tried when none does.

    For each over-fetch factor (``CANDIDATE_STEPS``), search_k climbs from Annoy's default
    (n_trees * candidates) by doubling until the target is met; a ladder stops early once it is
    slower than the best config found or than ``give_up_ms``, and the whole tuning stops after
    ``settings.tuning_budget_s`` seconds.
    """
    deadline = time.monotonic() + settings.tuning_budget_s
    best: _Trial | None = None
    most_accurate: _Trial | None = None
    for cpr in CANDIDATE_STEPS:
        default_search_k = n_trees * RECALL_K * cpr
        first_ms = None
        for factor in SEARCH_K_FACTORS:
            params = SearchParams("annoy", max(1, int(default_search_k * factor)), cpr)
            recall, ms = _recall_and_latency(sample, truth, lambda q: annoy_run(q, params), score_of)
            trial = _Trial(params, recall, ms)
            first_ms = ms if first_ms is None else first_ms
            if most_accurate is None or recall > most_accurate.recall:
                most_accurate = trial
            if recall >= settings.recall_target:
                if best is None or ms < best.median_ms:
                    best = trial
                break  # a bigger search_k is only slower
            if params.search_k >= n_trees * num_items or time.monotonic() > deadline:
                break
            if ms > give_up_ms or (best is not None and ms > best.median_ms):
                break
        if time.monotonic() > deadline:
            break
        if first_ms is not None and (first_ms > give_up_ms or (best is not None and first_ms > best.median_ms)):
            break  # more candidates per result start slower still: they cannot win
        if cpr * RECALL_K * 2 >= num_items:
            break  # the search falls back to brute force from here on
    assert most_accurate is not None
    return best or most_accurate


def _choose(num_items: int, dims: int, n_trees: int, sample: list, exact_run, annoy_run, score_of,
            settings: BuildSettings) -> SearchConfig:
    """Measure exact search and tune Annoy on ``sample``; record the faster method that meets the
    recall target (Annoy always for catalogs of ``ANNOY_REQUIRED_FROM`` items or more)."""
    truth = [exact_run(q) for q in sample]
    exact_ms = _median_ms(exact_run, sample)
    annoy_required = num_items >= ANNOY_REQUIRED_FROM
    # Annoy configs much slower than brute force can never be chosen for a small catalog.
    give_up_ms = float("inf") if annoy_required else 2.0 * exact_ms
    chosen = _tune_annoy(num_items, n_trees, sample, truth, annoy_run, score_of, settings, give_up_ms)
    met = chosen.recall >= settings.recall_target
    use_annoy = annoy_required or (met and chosen.median_ms < exact_ms)
    if settings.method is not None:
        use_annoy = settings.method == "annoy"
    return SearchConfig(
        method="annoy" if use_annoy else "exact",
        metric="angular",
        dims=dims,
        n_trees=n_trees,
        search_k=chosen.params.search_k,
        candidates_per_result=chosen.params.candidates_per_result,
        recall_at_10=round(chosen.recall if use_annoy else 1.0, 4),
        recall_sample_size=len(sample),
        median_latency_ms=round(chosen.median_ms if use_annoy else exact_ms, 4),
        exact_median_latency_ms=round(exact_ms, 4),
        annoy_median_latency_ms=round(chosen.median_ms, 4),
    )


# A list of 50 costs more than a search for 10 (more candidates, a larger search_k): this much,
# roughly (measured on the synthetic full-scale model with Annoy).
_LIST_COST_FACTOR = 1.5


def precompute_lengths(artifacts: ModelArtifacts, recommend: SearchConfig, similar: SearchConfig,
                       settings: "BuildSettings") -> tuple[int, int]:
    """List lengths to precompute (Recommend, SimilarArtists) within ``settings.precompute_budget_s``.

    The wall time of each side is estimated from its measured median search latency; Recommend
    (the hotter RPC) gets the budget first; a side that does not fit gets no lists (0) and is
    served by search."""
    workers = settings.precompute_workers or (os.cpu_count() or 1)
    left = settings.precompute_budget_s
    lengths = []
    for rows, config, n in ((artifacts.num_users, recommend, settings.recommend_n),
                            (artifacts.num_artists, similar, settings.similar_n)):
        estimate_s = rows * config.median_latency_ms / 1000.0 * _LIST_COST_FACTOR / max(1, min(workers, rows))
        if n > 0 and estimate_s <= left:
            lengths.append(n)
            left -= estimate_s
        else:
            lengths.append(0)
    return lengths[0], lengths[1]


def build_indexes(artifacts: ModelArtifacts, settings: BuildSettings = BuildSettings()) -> BuiltIndexes:
    """Build both Annoy indexes (in memory), measure and choose their search settings (Recommend,
    SimilarArtists), then precompute every user's and artist's top lists with the chosen searches;
    hand the result to ``model_store.publish_version``, which writes it.

    Recall and latency are measured on ``settings.sample_size`` random users and artists; the
    lists' recall@10 against exact search on the same samples.
    """
    user_factors, artist_factors, artist_bias = artifacts.user_factors, artifacts.artist_factors, artifacts.artist_bias
    num_artists, num_factors = artist_factors.shape
    n_trees = settings.n_trees or default_n_trees(num_artists)
    rng = np.random.default_rng(settings.seed)
    k = min(RECALL_K, num_artists - 1) if num_artists > 1 else 1

    items = item_vectors_with_bias(artist_factors, artist_bias)
    rec_index = build_angular_index(augment_items(items), n_trees, settings.seed, settings.n_jobs)
    rec_search = InnerProductSearch(items, rec_index, SearchParams())
    users = rng.choice(user_factors.shape[0], size=min(settings.sample_size, user_factors.shape[0]), replace=False)
    rec_sample = [user_query(user_factors[u]) for u in users]
    recommend = _choose(
        num_artists, num_factors + 2, n_trees, rec_sample,
        lambda q: rec_search.exact(q, k),
        lambda q, p: rec_search.search(q, k, params=p)[0],
        lambda q, found: rec_search.items[found] @ q,
        settings,
    )

    sim_index = build_angular_index(artist_factors.astype(np.float32), n_trees, settings.seed, settings.n_jobs)
    sim_search = CosineSearch(artist_factors, sim_index, SearchParams())
    artists = rng.choice(num_artists, size=min(settings.sample_size, num_artists), replace=False).tolist()
    similar = _choose(
        num_artists, num_factors, n_trees, artists,
        lambda a: sim_search.exact(a, k),
        lambda a, p: sim_search.search(a, k, params=p)[0],
        lambda a, found: sim_search.normalized[found] @ sim_search.normalized[a],
        settings,
    )

    # The lists come from the searches built exactly as the index service builds them.
    recommend_n, similar_n = precompute_lengths(artifacts, recommend, similar, settings)
    top, seconds = precompute_top(artifacts, InnerProductSearch(items, rec_index, search_params(recommend)),
                                  CosineSearch(artist_factors, sim_index, search_params(similar)),
                                  recommend_n, similar_n, settings.precompute_workers)
    seen = np.ascontiguousarray(artifacts.seen_indices, dtype=np.int64)
    indptr = artifacts.seen_indptr
    users = users.tolist()
    rec_truth = [rec_search.exact(user_query(user_factors[u]), k, seen[indptr[u]:indptr[u + 1]]) for u in users]
    sim_truth = [sim_search.exact(a, k) for a in artists]
    precomputed = PrecomputedConfig(
        recommend_n=int(top.recommend_top.shape[1]),
        similar_n=int(top.similar_top.shape[1]),
        recommend_method=recommend.method,
        similar_method=similar.method,
        recommend_recall_at_10=list_recall_at_10(top.recommend_top, rec_truth, users,
                                                 lambda u, found: rec_search.items[found] @ user_query(user_factors[u])),
        similar_recall_at_10=list_recall_at_10(top.similar_top, sim_truth, artists,
                                               lambda a, found: sim_search.normalized[found] @ sim_search.normalized[a]),
        seconds=round(seconds, 3),
    )
    return BuiltIndexes(recommend=recommend, similar=similar, recommend_index=rec_index, similar_index=sim_index,
                        top=top, precomputed=precomputed)
