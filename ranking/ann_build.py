"""Building a version's Annoy indexes and choosing their search settings from measurement.

For each search (Recommend: inner product via the extra dimension; SimilarArtists: cosine), the
builder measures recall@10 of the serving path (``ranking.search``) against brute force on a
sample of queries (tie-aware: an item tied with the 10th best counts as right), searches for the
fastest Annoy settings (``candidates_per_result`` and ``search_k``) that meet the recall target,
times brute force too, and records the faster one as the method to serve (Annoy only when clearly
faster: ``ANNOY_WINS_BELOW``), except that large
catalogs (``ANNOY_REQUIRED_FROM`` artists and more) use Annoy whenever it meets the target and
is not slower than exact (there a full scan per request costs memory bandwidth that one query's
latency does not show). A SimilarArtists side whose every artist got a precomputed list gets no
index at any catalog size, unless Annoy is forced or ``BuildSettings.listed_similar_index`` asks
for it: it serves exact past its lists (see ``build_indexes``). Annoy slower than exact
is never served unless forced (``BuildSettings.method``): a barely trained model's factors can
need a search_k that makes Annoy slower than the scan it stands in for (at 160,000 artists after
one epoch: 45 ms against exact's 2.7 ms), and the tuning stops climbing at exact's latency. The
tuned Annoy settings are recorded even when exact search is chosen, so a server can still be
told to use Annoy. The exact answers of the samples are computed in one batch, and the searches
are timed with BLAS on one thread, as the index service runs them. Each config records the catalog size the choice was
measured on (``measured_artists``).

A small catalog (at most ``EXACT_ONLY_UP_TO`` artists x factors, Annoy not forced) gets no Annoy
index at all, cold or warm (format 4): both searches are exact, and only exact's latency is timed.

A warm-started publish passes its base version's choice (``BaseSearch``) and reuses it per side
(``_plan``): a side the base served exact, measured on a catalog within ``REMEASURE_DRIFT`` of
this one (below ``ANNOY_REQUIRED_FROM``, Annoy not forced), gets no Annoy index at all (format
4): exact search is timed for the record and the base's ``measured_artists`` carried over, so a
chain of warm retrains measures again once the catalog has drifted that far. A side the base
served with Annoy is built with the base's trees and tries the base's settings first, on the
whole sample; only when they miss the recall target is the full tuning run.

Then every user's and artist's precomputed list is made by ``ranking.precompute`` (batched:
exact, or IVF on large catalogs), within ``BuildSettings.precompute_budget_s``.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from annoy import AnnoyIndex
from threadpoolctl import threadpool_limits

from model_store.artifacts import BuiltIndexes, ModelArtifacts
from model_store.format import Manifest, PrecomputedConfig, SearchConfig
from ranking.precompute import (
    DEFAULT_RECOMMEND_N,
    DEFAULT_SIMILAR_N,
    EXACT_UP_TO,
    ListSeeds,
    ListSide,
    exact_lists,
    list_recall_at_10,
    precompute_top,
    recommend_side,
    similar_side,
)
from ranking.search import CosineSearch, InnerProductSearch, SearchParams, search_params

RECALL_TARGET = 0.98
ANNOY_REQUIRED_FROM = 100_000
# Catalogs of at most this many artists x factors (25,000 artists at 64 factors) get no Annoy
# index: both searches are exact (Annoy not forced). The precomputed lists answer every known
# user and artist; a search serves only what they cannot (history, live listeners, filters,
# pages past a list), and there exact search is a fraction of a millisecond at this size, where
# the tuned Annoy measured no faster (Last.fm 2K, 17,632 artists: exact serves by measurement).
# Building, tuning, writing and verifying an index that exact then outruns cost a cold publish
# about half a second at Last.fm 2K's size, and a warm run the index's verification when the base
# is read (bench part 8).
EXACT_ONLY_UP_TO = 1_600_000
# A base's "exact serves" is reused while the catalog is within this share of the size it was
# measured on (a 5% retrain of the same catalog does not change which method wins).
REMEASURE_DRIFT = 0.10
# Where exact may serve, Annoy serves only when its median latency is at most this share of
# exact's: near break-even exact wins (recall 1.0, no index to build or map, and a warm retrain
# then skips the Annoy build), and a latency measured on a shared machine moves by more than
# the last few percent, so a choice at break-even would flip from one publish to the next.
ANNOY_WINS_BELOW = 0.75
CANDIDATE_STEPS = (1, 2, 4, 8, 16, 32, 64)
# search_k tried, as multiples of Annoy's default (n_trees * candidates fetched).
SEARCH_K_FACTORS = (1, 2, 4, 8, 16, 32, 64)
RECALL_K = 10
# Rows converted to Python lists at a time when Annoy indexes are filled.
_ADD_BLOCK = 4096


@dataclass(frozen=True)
class BuildSettings:
    """Knobs of the index build. ``n_trees`` 0 picks from the catalog size; ``sample_size`` is the
    number of queries recall and latency are measured on; ``seed`` fixes the sample and Annoy;
    ``tuning_budget_s`` bounds the time spent trying Annoy settings, per search (seconds);
    ``recommend_n``/``similar_n``: length of the precomputed list per user/artist;
    ``precompute_workers``: threads making them (0: one per core);
    ``precompute_budget_s``: wall time the lists may take, estimated from a measured part (see
    ``ranking.precompute.precompute_top``);
    ``exact_up_to``: queries x artists up to which a side's lists are exact (IVF above, see
    ``ranking.precompute``);
    ``exact_only_up_to``: artists x factors up to which no Annoy index is built and both
    searches are exact (``EXACT_ONLY_UP_TO``; 0: measure at every size), unless ``method`` is "annoy";
    ``method``: "exact" or "annoy" to serve with whatever the measurement says (None: measured);
    ``listed_similar_index``: build and tune the SimilarArtists Annoy index even when every artist
    has a precomputed list (by default such a side gets none and serves exact past its lists; an
    index service told ``--similar-method annoy`` needs it)."""

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
    exact_up_to: int = EXACT_UP_TO
    exact_only_up_to: int = EXACT_ONLY_UP_TO
    method: str | None = None
    listed_similar_index: bool = False


def default_n_trees(num_artists: int) -> int:
    """More trees for bigger catalogs: better candidates per node visited, bigger file. 20 up to
    200,000 artists: at 160,000 (full scale, 2 cores) 20 trees met the recall target at the same
    search_k and latency as 40 (Recommend search_k 400, 0.11 against 0.13 ms; SimilarArtists
    search_k 12,800, 2.2 against 2.1 ms), and every tree costs build time (about 0.5 s of CPU
    per tree per index there) and file size."""
    if num_artists < 200_000:
        return 20
    return 60


def build_angular_index(vectors: np.ndarray, n_trees: int, seed: int, n_jobs: int) -> AnnoyIndex:
    """Build an angular Annoy index over ``vectors`` (n, d) in memory (the publish saves it)."""
    index = AnnoyIndex(int(vectors.shape[1]), "angular")
    index.set_seed(int(seed))
    # Rows as Python lists a block at a time (Annoy reads sequences element by element): the
    # whole matrix as lists would cost ~32 bytes per float (~0.3 GiB at 160K x 66).
    for lo in range(0, vectors.shape[0], _ADD_BLOCK):
        for i, row in enumerate(vectors[lo:lo + _ADD_BLOCK].tolist(), start=lo):
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
                settings: BuildSettings, give_up_ms: float, exact_serves_above_ms: float = math.inf) -> _Trial:
    """The fastest (candidates_per_result, search_k) reaching the recall target, or the most
    accurate one tried when none does, with its recall and latency measured on the whole sample.

    The ladders run on every ``_LADDER_STRIDE``-th query of the sample: for each over-fetch factor
    (``CANDIDATE_STEPS``), search_k climbs from Annoy's default (n_trees * candidates) by
    doubling until the target is met; a ladder stops early once it is slower than the best config
    found or than ``give_up_ms``, and the whole tuning stops after ``settings.tuning_budget_s``
    seconds. The winner is then measured on the whole sample; below the target there, its
    search_k is doubled (at most ``_VERIFY_DOUBLINGS`` times) until it reaches it.

    ``exact_serves_above_ms``: the latency above which exact search serves anyway (a share of
    exact's own; all of it where Annoy is required; infinite when Annoy is forced). The measurement
    is kept cheap where exact wins: once a config reaching the target is known, a ladder stops at
    the first trial slower than exact too (it could only find a config that loses to exact; the one
    known is recorded for a server told to use Annoy), and when the ladders' config is slower than
    exact or none reached the target, exact serves and the verification is skipped (its doublings
    would only slow configs the ladders left for being slower than exact or out of tuning budget):
    the config is returned as the ladders measured it, on their part of the sample. Likewise the
    ladders after the first (one candidate per result) run only when its config beats exact (see
    ``_ladders``).
    """
    ladder_sample = sample[::_LADDER_STRIDE]
    found = _ladders(num_items, n_trees, ladder_sample, truth[::_LADDER_STRIDE], annoy_run, score_of,
                     settings, give_up_ms, exact_serves_above_ms)
    if math.isfinite(exact_serves_above_ms) and (found.recall < settings.recall_target
                                                  or found.median_ms > exact_serves_above_ms):
        return found
    params = found.params
    for attempt in range(_VERIFY_DOUBLINGS + 1):
        recall, ms = _recall_and_latency(sample, truth, lambda q: annoy_run(q, params), score_of)
        if recall >= settings.recall_target or attempt == _VERIFY_DOUBLINGS or params.search_k >= n_trees * num_items:
            return _Trial(params, recall, ms)
        params = SearchParams("annoy", params.search_k * 2, params.candidates_per_result)
    raise AssertionError("unreachable")


# The ladders of _tune_annoy run on every third query of the sample (the winner on all of them),
# and a winner short of the target on the whole sample gets at most this many search_k doublings.
_LADDER_STRIDE = 3
_VERIFY_DOUBLINGS = 2


def _ladders(num_items: int, n_trees: int, sample: list, truth: list, annoy_run, score_of,
             settings: BuildSettings, give_up_ms: float, exact_serves_above_ms: float = math.inf) -> _Trial:
    """The ladders of ``_tune_annoy`` on ``sample``: the fastest trial reaching the target, or
    the most accurate one."""
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
            if ms > give_up_ms or (best is not None and ms > min(best.median_ms, exact_serves_above_ms)):
                break
        if time.monotonic() > deadline:
            break
        if first_ms is not None and (first_ms > give_up_ms
                                     or (best is not None and first_ms > min(best.median_ms, exact_serves_above_ms))):
            break  # more candidates per result start slower still: they cannot win
        if math.isfinite(exact_serves_above_ms) and (best is None or best.median_ms > exact_serves_above_ms):
            # Exact serves on what this ladder found, and the next ladders cannot change that: Annoy
            # returns the candidates it visited (search_k of them) in angle order, which is the exact
            # score's order (the extra dimension of the inner-product search, cosine), so fetching
            # more per result at a search_k already tried re-ranks the same candidates to the same
            # top 10 (same recall) more slowly, and this ladder tried or gave up on their search_k values.
            break
        if cpr * RECALL_K * 2 >= num_items:
            break  # the search falls back to brute force from here on
    assert most_accurate is not None
    return best or most_accurate


def _choose(num_items: int, dims: int, n_trees: int, sample: list, truth: list, exact_run, annoy_run, score_of,
            settings: BuildSettings, exact_ms: float | None = None) -> SearchConfig:
    """Measure exact search and tune Annoy on ``sample`` (``truth``: its exact answers); record the
    faster method that meets the recall target (Annoy only at ``ANNOY_WINS_BELOW`` of exact's
    latency or less; for catalogs of ``ANNOY_REQUIRED_FROM`` items or more, whenever it is not
    slower than exact, and its ladders stop at exact's latency there: a config reaching the target
    only past it leaves the side to exact).

    Exact search is timed (unless ``exact_ms`` is given) on the ladders' part of the sample (every
    ``_LADDER_STRIDE``-th query), the queries Annoy's settings are first timed on: it does the same
    work for every query (a full scan), so its median needs no more, and it is the slower half of
    the measurement on small catalogs."""
    if exact_ms is None:
        exact_ms = _median_ms(exact_run, sample[::_LADDER_STRIDE])
    if settings.method == "annoy":
        # Forced: Annoy serves whatever it measures; configs much slower than brute force are
        # not tried on a small catalog.
        give_up_ms = 2.0 * exact_ms if num_items < ANNOY_REQUIRED_FROM else math.inf
        exact_serves_above_ms = math.inf
    elif num_items >= ANNOY_REQUIRED_FROM:
        # Required: Annoy serves unless slower than exact (``_config``), so a config past exact's
        # latency can never be chosen, and the tuning's shortcuts where exact serves apply at it.
        give_up_ms = exact_serves_above_ms = exact_ms
    else:
        give_up_ms = 2.0 * exact_ms
        exact_serves_above_ms = ANNOY_WINS_BELOW * exact_ms
    chosen = _tune_annoy(num_items, n_trees, sample, truth, annoy_run, score_of, settings, give_up_ms,
                         exact_serves_above_ms)
    return _config(num_items, dims, n_trees, len(sample), chosen, exact_ms, settings)


def _config(num_items: int, dims: int, n_trees: int, sample_size: int, chosen: _Trial, exact_ms: float,
            settings: BuildSettings) -> SearchConfig:
    """The search config of a side with an Annoy index: Annoy serves when ``chosen`` meets the
    recall target at ``ANNOY_WINS_BELOW`` of exact's latency or less, or, where Annoy is required,
    at exact's latency or less (``settings.method`` overrides)."""
    met = chosen.recall >= settings.recall_target
    use_annoy = met and (chosen.median_ms <= ANNOY_WINS_BELOW * exact_ms
                         or (num_items >= ANNOY_REQUIRED_FROM and chosen.median_ms <= exact_ms))
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
        recall_sample_size=sample_size,
        median_latency_ms=round(chosen.median_ms if use_annoy else exact_ms, 4),
        exact_median_latency_ms=round(exact_ms, 4),
        annoy_median_latency_ms=round(chosen.median_ms, 4),
        measured_artists=num_items,
    )


@dataclass(frozen=True)
class BaseSearch:
    """The search choices of the version a warm-started run started from (its manifest's
    ``recommend_search`` and ``similar_search``), each with ``measured_artists`` set: a config
    written before that was recorded counts as measured on the base's own catalog (``of``); and
    its precomputed lists as this catalog's seeds (``recommend_seeds``, ``similar_seeds``; None:
    the lists are made afresh), see ``ranking.precompute``'s "warm" lists."""

    recommend: SearchConfig
    similar: SearchConfig
    recommend_seeds: ListSeeds | None = None
    similar_seeds: ListSeeds | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> "BaseSearch":
        def measured(config: SearchConfig) -> SearchConfig:
            return config if config.measured_artists else replace(config, measured_artists=manifest.num_artists)
        return cls(measured(manifest.recommend_search), measured(manifest.similar_search))


# What a side's build does (see _plan).
_MEASURE, _REUSE_EXACT, _REUSE_ANNOY = "measure", "reuse-exact", "reuse-annoy"
# A small catalog: no index (``EXACT_ONLY_UP_TO``).
_EXACT_ONLY = "exact-only"
# SimilarArtists with every artist listed: no index (see ``build_indexes``).
_LISTED = "listed"
_NO_INDEX = (_REUSE_EXACT, _EXACT_ONLY, _LISTED)


def _plan(base: SearchConfig | None, num_items: int, num_factors: int, settings: BuildSettings) -> str:
    """How a side is built: ``_EXACT_ONLY`` (no Annoy index: a catalog of at most
    ``settings.exact_only_up_to`` artists x factors, Annoy not forced, whatever the base did),
    ``_REUSE_EXACT`` (no Annoy index: the base served exact, was measured
    within ``REMEASURE_DRIFT`` of this catalog's size, which is below ``ANNOY_REQUIRED_FROM``,
    and Annoy is not forced), ``_REUSE_ANNOY`` (the base served Annoy: its trees and settings
    first), or ``_MEASURE`` (today's cold build and tuning)."""
    if settings.method != "annoy" and num_items * num_factors <= settings.exact_only_up_to:
        return _EXACT_ONLY
    if base is None:
        return _MEASURE
    if base.method == "annoy" and base.has_index:
        return _REUSE_ANNOY
    measured = base.measured_artists
    if (base.method == "exact" and settings.method != "annoy" and num_items < ANNOY_REQUIRED_FROM
            and measured > 0 and abs(num_items - measured) <= REMEASURE_DRIFT * measured):
        return _REUSE_EXACT
    return _MEASURE


def _exact_only(dims: int, sample: list, exact_run, measured_artists: int) -> SearchConfig:
    """The config of a side without an Annoy index: exact search timed on the ladders' third of
    the sample (as ``_choose`` times it), the base's ``measured_artists`` carried over."""
    exact_ms = round(_median_ms(exact_run, sample[::_LADDER_STRIDE]), 4)
    return SearchConfig(method="exact", metric="angular", dims=dims, n_trees=0, search_k=-1,
                        candidates_per_result=1, recall_at_10=1.0, recall_sample_size=len(sample),
                        median_latency_ms=exact_ms, exact_median_latency_ms=exact_ms,
                        measured_artists=measured_artists)


def _measure_side(plan: str, base: SearchConfig | None, num_items: int, dims: int, n_trees: int, sample: list,
                  truth: list | None, exact_run, annoy_run, score_of, settings: BuildSettings) -> SearchConfig:
    """A side's search config as ``plan`` says (``truth``: the sample's exact answers; a plan
    without an index, ``_REUSE_EXACT``, ``_EXACT_ONLY`` or ``_LISTED``, reads none)."""
    if plan in (_LISTED, _EXACT_ONLY):
        return _exact_only(dims, sample, exact_run, num_items)
    if plan == _REUSE_EXACT:
        assert base is not None
        return _exact_only(dims, sample, exact_run, base.measured_artists)
    if plan == _REUSE_ANNOY:
        assert base is not None
        exact_ms = _median_ms(exact_run, sample[::_LADDER_STRIDE])
        params = SearchParams("annoy", base.search_k, base.candidates_per_result)
        recall, ms = _recall_and_latency(sample, truth, lambda q: annoy_run(q, params), score_of)
        if recall >= settings.recall_target:
            return _config(num_items, dims, n_trees, len(sample), _Trial(params, recall, ms), exact_ms, settings)
        return _choose(num_items, dims, n_trees, sample, truth, exact_run, annoy_run, score_of, settings, exact_ms)
    return _choose(num_items, dims, n_trees, sample, truth, exact_run, annoy_run, score_of, settings)


def _sample_truth(side: ListSide, rows: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact top k of the sample ``rows`` of a side: (indices, scores) per row, computed in one
    batch (BLAS on one thread)."""
    with threadpool_limits(limits=1, user_api="blas"):
        top, scores = exact_lists(side, rows, k)
    return [(top[row][top[row] >= 0].astype(np.int64), scores[row][top[row] >= 0]) for row in range(rows.shape[0])]


def build_indexes(artifacts: ModelArtifacts, settings: BuildSettings = BuildSettings(),
                  base: BaseSearch | None = None) -> BuiltIndexes:
    """Build the Annoy indexes (in memory), measure and choose their search settings (Recommend,
    SimilarArtists), then precompute every user's and artist's top lists (``ranking.precompute``:
    batched, exact or IVF); hand the result to ``model_store.publish_version``, which writes it.

    ``base``: the search choices of the version a warm-started run started from (None: a cold
    build); each side reuses them as the module docstring says, and a side the base served exact
    gets no index. Recall and latency are measured on ``settings.sample_size`` random users and
    artists, BLAS on one thread as the index service runs it; the lists' recall@10 against exact
    on the same samples.
    """
    user_factors, artist_factors, artist_bias = artifacts.user_factors, artifacts.artist_factors, artifacts.artist_bias
    num_artists, num_factors = artist_factors.shape
    n_trees = settings.n_trees or default_n_trees(num_artists)
    rec_base, sim_base = (None, None) if base is None else (base.recommend, base.similar)
    rec_plan = _plan(rec_base, num_artists, num_factors, settings)
    sim_plan = _plan(sim_base, num_artists, num_factors, settings)
    rec_trees = rec_base.n_trees if rec_plan == _REUSE_ANNOY else n_trees
    sim_trees = sim_base.n_trees if sim_plan == _REUSE_ANNOY else n_trees
    rng = np.random.default_rng(settings.seed)
    k = min(RECALL_K, num_artists - 1) if num_artists > 1 else 1
    rec_side, sim_side = recommend_side(artifacts), similar_side(artifacts)
    users = np.sort(rng.choice(user_factors.shape[0], size=min(settings.sample_size, user_factors.shape[0]), replace=False))
    artists = np.sort(rng.choice(num_artists, size=min(settings.sample_size, num_artists), replace=False))
    # Exact answers of the samples: without exclusions for the searches' recall (a search for
    # 10; not needed by a side without an index), with them (seen artists, the artist itself)
    # for the lists'.
    rec_search_truth = None
    if rec_plan not in _NO_INDEX:
        rec_search_truth = _sample_truth(
            ListSide(rec_side.queries, rec_side.items, np.zeros(artifacts.num_users + 1, dtype=np.int64),
                     np.zeros(0, dtype=np.int64), rec_side.cluster_vectors, rec_side.spherical), users, k)
    rec_truth = _sample_truth(rec_side, users, k)
    sim_truth = _sample_truth(sim_side, artists, k)

    # The lists first: their transient memory (IVF chunks) is freed before the Annoy indexes,
    # which live until the publish writes them, are built.
    top, rec_made, sim_made, seconds = precompute_top(
        artifacts, settings.recommend_n, settings.similar_n, workers=settings.precompute_workers,
        recall_target=settings.recall_target, seed=settings.seed, exact_up_to=settings.exact_up_to,
        budget_s=settings.precompute_budget_s, sides=(rec_side, sim_side),
        seeds=None if base is None else (base.recommend_seeds, base.similar_seeds))
    items = rec_side.items
    users_list, artists_list = users.tolist(), artists.tolist()
    precomputed = PrecomputedConfig(
        recommend_n=int(top.recommend_top.shape[1]),
        similar_n=int(top.similar_top.shape[1]),
        recommend_method=rec_made.method,
        similar_method=sim_made.method,
        recommend_recall_at_10=list_recall_at_10(top.recommend_top, rec_truth, users_list,
                                                 lambda u, found: items[found] @ rec_side.queries[u]),
        similar_recall_at_10=list_recall_at_10(top.similar_top, sim_truth, artists_list,
                                               lambda a, found: sim_side.items[found] @ sim_side.items[a]),
        seconds=round(seconds, 3),
    )
    # SimilarArtists asks about an artist of the catalog, and every one of them now has a list:
    # the search serves only what a list cannot (a page past it, or a filter it runs out on). For
    # these few, exact search (0.2 ms at 17,632 artists, a few ms at 160,000, where the tuned Annoy
    # measured about 0.75x of it) is answer enough, at any catalog size, and the side's Annoy build
    # and tuning (a third of a cold Last.fm 2K publish, several seconds of a full-scale one, and its
    # file) are left out. Recommend keeps its index: the listeners outside the lists (history,
    # live, new) are searched on every request.
    if settings.method != "annoy" and not settings.listed_similar_index and sim_made.top.shape[1] > 0:
        sim_plan = _LISTED
    del rec_made, sim_made

    rec_index = sim_index = None
    if rec_plan not in _NO_INDEX:
        rec_index = build_angular_index(rec_side.cluster_vectors, rec_trees, settings.seed, settings.n_jobs)
    rec_search = InnerProductSearch(items, rec_index, SearchParams())
    rec_sample = [rec_side.queries[u] for u in users.tolist()]
    if sim_plan not in _NO_INDEX:
        sim_index = build_angular_index(artist_factors.astype(np.float32), sim_trees, settings.seed, settings.n_jobs)
    sim_search = CosineSearch(artist_factors, sim_index, SearchParams())
    # The two sides are measured at once, one thread each (Annoy and BLAS release the GIL; one
    # BLAS thread each, as the index service runs them): the publish waits for the slower side only.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(2) as pool:
        recommend_job = pool.submit(
            _measure_side, rec_plan, rec_base, num_artists, num_factors + 2, rec_trees, rec_sample, rec_search_truth,
            lambda q: rec_search.exact(q, k),
            lambda q, p: rec_search.search(q, k, params=p)[0],
            lambda q, found: rec_search.items[found] @ q,
            settings,
        )
        similar_job = pool.submit(
            _measure_side, sim_plan, sim_base, num_artists, num_factors, sim_trees, artists_list, sim_truth,
            lambda a: sim_search.exact(a, k),
            lambda a, p: sim_search.search(a, k, params=p)[0],
            lambda a, found: sim_search.normalized[found] @ sim_search.normalized[a],
            settings,
        )
        recommend, similar = recommend_job.result(), similar_job.result()
    return BuiltIndexes(recommend=recommend, similar=similar, recommend_index=rec_index, similar_index=sim_index,
                        top=top, precomputed=precomputed)
