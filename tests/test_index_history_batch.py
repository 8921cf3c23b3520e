"""RecommendForHistory (fold-in), BatchRecommend, paging and allow-lists on ServingModel, with the
tiny known-answer model (conftest.tiny_artifacts) served three ways, and on a model full of exact
ties (test_index_precomputed.tied_artifacts) for the properties: pages concatenate to the unpaged
list, batch answers equal single answers, allow-lists are respected."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index_service.fold_in import MIN_REGULARIZATION, UNIFORM_NEGATIVES, FoldIn
from index_service.serving_model import (
    MAX_BATCH,
    MAX_HISTORY,
    MAX_K,
    MAX_ONLY,
    HistoryQuery,
    RecommendQuery,
    ServingModel,
)
from model_store import load_version
from musicrec.rpc.errors import InvalidArgument, NotFound
from test_index_precomputed import LIST_N, both_paths  # noqa: F401  (a fixture)

GENRES = [[f"a{3 * g + r}" for r in range(3)] for g in range(4)]


@pytest.fixture(params=[(None, True), ("exact", False), ("annoy", False)],
                ids=["precomputed", "exact-search", "annoy-search"])
def model(request, publish, models_dir, tiny_artifacts):
    method, precomputed = request.param
    manifest = publish(tiny_artifacts)
    served = ServingModel(load_version(models_dir / str(manifest.model_version)),
                          recommend_method=method, similar_method=method, precomputed=precomputed)
    yield served
    served.close()


def ids(model: ServingModel, ranking) -> list[str]:
    return [str(model.artist_ids[i]) for i in ranking.indices.tolist()]


def recommended(model: ServingModel, query: RecommendQuery) -> list[str]:
    return ids(model, model.recommend(query))


def folded(model: ServingModel, query: HistoryQuery) -> list[str]:
    return ids(model, model.recommend_for_history(query).ranking)


# -- RecommendForHistory --------------------------------------------------------------------------

@pytest.mark.parametrize("genre", range(4))
def test_history_of_one_genre_gets_that_genre(model, genre):
    first, second, third = GENRES[genre]
    answer = model.recommend_for_history(HistoryQuery(((first, 12.0), (second, 3.0)), k=1))
    assert ids(model, answer.ranking) == [third]
    assert not answer.popularity_fallback and answer.unknown_artist_ids == ()
    with_seen = model.recommend_for_history(HistoryQuery(((first, 12.0), (second, 3.0)), k=3, include_seen=True))
    assert ids(model, with_seen.ranking) == [first, second, third]
    only_one = model.recommend_for_history(HistoryQuery(((second, 1.0),), k=2))
    assert ids(model, only_one.ranking) == [first, third]


def test_history_unknown_ids_are_ignored_and_listed(model):
    history = (("nope", 1.0), ("a3", 5.0), ("", 2.0), ("nope", 3.0), ("a3", 1.0))
    answer = model.recommend_for_history(HistoryQuery(history, k=2))
    assert ids(model, answer.ranking) == ["a4", "a5"]
    assert answer.unknown_artist_ids == ("nope", "") and not answer.popularity_fallback


@pytest.mark.parametrize("history", [(), (("zz", 1.0),), (("a0\x00", 2.0), ("A0", 1.0))])
def test_no_known_artist_falls_back_to_popularity(model, history):
    answer = model.recommend_for_history(HistoryQuery(history, k=3))
    assert answer.popularity_fallback
    assert ids(model, answer.ranking) == ["a7", "a4", "a0"]  # 9 and 3 listeners, then ties by index
    np.testing.assert_array_equal(answer.ranking.scores, [9, 3, 2])
    assert answer.unknown_artist_ids == tuple(dict.fromkeys(a for a, _ in history))
    paged = model.recommend_for_history(HistoryQuery(history, k=2, offset=1, exclude_artist_ids=("a0",),
                                                     only_artist_ids=("a0", "a1", "a4", "a9")))
    assert ids(model, paged.ranking) == ["a1", "a9"]  # allowed minus excluded by listeners: a4, a1, a9


def test_history_rules(model):
    for plays in (0.0, -1.0, float("nan"), float("inf"), -float("inf")):
        with pytest.raises(InvalidArgument, match=r"history\[1\]\.plays"):
            model.recommend_for_history(HistoryQuery((("a0", 1.0), ("a1", plays)), k=3))
    with pytest.raises(InvalidArgument, match="history entries"):
        model.recommend_for_history(HistoryQuery((("a0", 1.0),) * (MAX_HISTORY + 1), k=3))
    longest = HistoryQuery((("a0", 1.0),) * MAX_HISTORY, k=2)
    assert folded(model, longest) == ["a1", "a2"]
    assert folded(model, HistoryQuery((("a0", 1e-300), ("a1", 1e300)), k=1)) == ["a2"]
    for k, offset in ((-1, 0), (MAX_K + 1, 0), (10, -1), (10, MAX_K - 9)):
        with pytest.raises(InvalidArgument):
            model.recommend_for_history(HistoryQuery((("a0", 1.0),), k=k, offset=offset))
    with pytest.raises(InvalidArgument):
        model.recommend_for_history(HistoryQuery((("a0", 1.0),), k=3, exclude_artist_ids=("a1",) * 1001))
    with pytest.raises(InvalidArgument):
        model.recommend_for_history(HistoryQuery((("a0", 1.0),), k=3, only_artist_ids=("a1",) * (MAX_ONLY + 1)))
    assert len(model.recommend_for_history(HistoryQuery((("a0", 1.0),), k=10, offset=MAX_K - 10)).ranking.indices) == 0


def test_history_pages_exclusions_and_allow_list(model):
    history = (("a6", 4.0), ("a7", 1.0))
    everything = folded(model, HistoryQuery(history, k=MAX_K))
    assert len(everything) == 10 and everything[0] == "a8" and "a6" not in everything
    pages = sum((folded(model, HistoryQuery(history, k=3, offset=o)) for o in range(0, 12, 3)), [])
    assert pages == everything
    assert folded(model, HistoryQuery(history, k=2, exclude_artist_ids=("a8",))) == everything[1:3]
    allowed = ("a1", "a8", "a6", "zz", "a1")
    assert folded(model, HistoryQuery(history, k=5, only_artist_ids=allowed)) == ["a8", "a1"]
    with_seen = model.recommend_for_history(HistoryQuery(history, k=5, include_seen=True, only_artist_ids=allowed))
    assert ids(model, with_seen.ranking) == ["a6", "a8", "a1"]
    assert folded(model, HistoryQuery(history, k=5, only_artist_ids=("zz",))) == []


@pytest.mark.parametrize("candidates", [1, 5])
def test_fold_in_finds_the_planted_genre(tiny_artifacts, candidates):
    fold = FoldIn(tiny_artifacts.artist_factors, tiny_artifacts.artist_bias, regularization=0.003,
                  negative_candidates=candidates)
    for genre in range(4):
        query = fold.fit(np.array([3 * genre]), np.array([5.0]))
        assert query.shape == (5,) and query.dtype == np.float32 and query[-1] == 1.0
        assert int(np.argmax(query[:-1])) == genre


def test_fold_in_is_deterministic_and_order_free(tiny_artifacts):
    fold = FoldIn(tiny_artifacts.artist_factors, tiny_artifacts.artist_bias, regularization=0.003)
    a = fold.fit(np.array([0, 4, 9]), np.array([3.0, 1.0, 7.0]))
    b = fold.fit(np.array([0, 4, 9]), np.array([3.0, 1.0, 7.0]))
    assert a.tobytes() == b.tobytes()


def _bpr_objective_gradient(fold: FoldIn, artists: np.ndarray, plays: np.ndarray, p: np.ndarray):
    """The fold-in objective of the module docstring and its gradient, written out pair by pair."""
    weights = np.log1p(plays)
    weights *= weights.shape[0] / weights.sum()
    pool = np.setdiff1d(fold.pool, artists)
    q, b = fold.factors.astype(np.float64), fold.bias.astype(np.float64)
    value, gradient = 0.0, fold.regularization * p
    pairs = len(artists) * len(pool)
    for i, w in zip(artists, weights):
        for j in pool:
            x = p @ (q[i] - q[j]) + b[i] - b[j]
            value += w * np.logaddexp(0.0, -x) / pairs
            gradient = gradient - w / (1.0 + np.exp(x)) * (q[i] - q[j]) / pairs
    return value + fold.regularization / 2 * p @ p, gradient


def test_fold_in_newton_steps_reach_the_objectives_minimum():
    rng = np.random.default_rng(3)
    factors = rng.normal(0, 0.5, (60, 6)).astype(np.float32)
    bias = rng.normal(0, 0.3, 60).astype(np.float32)
    artists, plays = np.array([2, 7, 11, 30]), np.array([1.0, 20.0, 3.0, 400.0])
    converged = FoldIn(factors, bias, regularization=0.01, negatives=40, newton_steps=25)
    few = FoldIn(factors, bias, regularization=0.01, negatives=40)
    assert converged.regularization == pytest.approx(max(0.01, MIN_REGULARIZATION))
    p = converged.fit(artists, plays)[:-1].astype(np.float64)
    value, gradient = _bpr_objective_gradient(converged, artists, plays, p)
    assert np.abs(gradient).max() < 1e-4
    start, _ = _bpr_objective_gradient(converged, artists, plays, np.zeros(6))
    after_few, _ = _bpr_objective_gradient(few, artists, plays, few.fit(artists, plays)[:-1].astype(np.float64))
    assert value <= after_few < start


def test_rank_aware_negatives_weigh_the_hardest_of_c_draws():
    rng = np.random.default_rng(4)
    factors = rng.normal(0, 0.5, (300, 6)).astype(np.float32)
    bias = rng.normal(0, 0.3, 300).astype(np.float32)
    uniform = FoldIn(factors, bias, regularization=0.01)
    hard = FoldIn(factors, bias, regularization=0.01, negative_candidates=5, hard_negatives=300)
    assert uniform.pool.shape[0] == min(UNIFORM_NEGATIVES, 300) and hard.pool.shape[0] == 300
    scores = np.arange(10, dtype=np.float32)[::-1].copy()  # pool row 9 scores lowest
    rows, kept, weights = hard._hardest(np.arange(10, dtype=np.float32)[:, None], scores)
    assert rows[:, 0].tolist() == list(range(9, -1, -1)) and kept.tolist() == list(range(10))
    # P(rank r is the maximum of 5 uniform draws from 10) = ((r + 1)^5 - r^5) / 10^5.
    assert weights == pytest.approx([((r + 1) ** 5 - r ** 5) / 1e5 for r in range(10)], rel=1e-5)
    top = FoldIn(factors, bias, regularization=0.01, negative_candidates=5, hard_negatives=3)
    _, kept, weights = top._hardest(np.zeros((10, 1), np.float32), scores)
    assert kept.tolist() == [7, 8, 9] and weights.sum() == pytest.approx(1.0) and np.all(np.diff(weights) > 0)
    history = np.array([5, 17, 40])
    for fold in (uniform, hard):
        query = fold.fit(history, np.array([3.0, 9.0, 1.0]))
        assert np.isfinite(query).all() and query[-1] == 1.0


# -- Recommend: offset and only_artist_ids -------------------------------------------------------

def test_recommend_pages_concatenate(model):
    for user in ("u0", "u5"):
        for include_seen in (False, True):
            everything = recommended(model, RecommendQuery(user, k=MAX_K, include_seen=include_seen))
            pages = sum((recommended(model, RecommendQuery(user, k=5, include_seen=include_seen, offset=o))
                         for o in range(0, 15, 5)), [])
            assert pages == everything
    assert recommended(model, RecommendQuery("u0", k=2, offset=1)) == ["a2", "a11"]
    assert recommended(model, RecommendQuery("u0", k=2, offset=1, exclude_artist_ids=("a2",))) == ["a11", "a10"]
    assert recommended(model, RecommendQuery("u0", k=10, offset=MAX_K - 10)) == []


def test_recommend_offset_rules(model):
    for k, offset in ((10, -1), (10, MAX_K - 9), (MAX_K, 1), (0, MAX_K - 9)):
        with pytest.raises(InvalidArgument, match="offset"):
            model.recommend(RecommendQuery("u0", k=k, offset=offset))
    with pytest.raises(NotFound):
        model.recommend(RecommendQuery("nobody", k=3, offset=2))


def test_recommend_allow_list(model):
    allowed = ("a5", "a1", "a11", "zz", "a0", "a5")
    assert recommended(model, RecommendQuery("u0", k=5, only_artist_ids=allowed)) == ["a1", "a11", "a5"]  # a0 seen
    with_seen = RecommendQuery("u0", k=5, include_seen=True, only_artist_ids=allowed)
    assert recommended(model, with_seen) == ["a0", "a1", "a11", "a5"]
    excluding_a1 = RecommendQuery("u0", k=5, exclude_artist_ids=("a1",), only_artist_ids=allowed)
    assert recommended(model, excluding_a1) == ["a11", "a5"]
    assert recommended(model, RecommendQuery("u0", k=1, offset=1, only_artist_ids=allowed)) == ["a11"]
    assert recommended(model, RecommendQuery("u0", k=5, only_artist_ids=("zz", "a0"))) == []
    everything = tuple(f"a{a}" for a in range(12))
    assert recommended(model, RecommendQuery("u0", k=MAX_K, only_artist_ids=everything)) == \
        recommended(model, RecommendQuery("u0", k=MAX_K))
    scores = model.recommend(RecommendQuery("u0", k=2, only_artist_ids=allowed)).scores
    np.testing.assert_allclose(scores, [2 - 0.001, 0.2 - 0.011], rtol=1e-5)
    with pytest.raises(InvalidArgument, match="only_artist_ids"):
        model.recommend(RecommendQuery("u0", k=3, only_artist_ids=("a1",) * (MAX_ONLY + 1)))
    assert recommended(model, RecommendQuery("u0", k=1, only_artist_ids=("a2",) * MAX_ONLY)) == ["a2"]


# -- BatchRecommend ------------------------------------------------------------------------------

def same_answer(model, got, want) -> None:
    if isinstance(want, Exception):
        assert type(got) is type(want) and got.message == want.message
    else:
        assert ids(model, got) == ids(model, want)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)


def single(model: ServingModel, query: RecommendQuery):
    try:
        return model.recommend(query)
    except (InvalidArgument, NotFound) as error:
        return error


def test_batch_answers_equal_single_answers(model):
    queries = [
        RecommendQuery("u0", k=3), RecommendQuery("nobody", k=3), RecommendQuery("u1", k=3, include_seen=True),
        RecommendQuery("u2", k=2, offset=3), RecommendQuery("u3", k=20), RecommendQuery("u4", k=-1),
        RecommendQuery("u5", k=4, exclude_artist_ids=("a6", "zz")), RecommendQuery("", k=3),
        RecommendQuery("u6", k=5, only_artist_ids=("a0", "a9", "a10")), RecommendQuery("u7", k=10, offset=MAX_K),
        RecommendQuery("u0", k=0), RecommendQuery("u0", k=3, include_seen=True, offset=2),
    ]
    results = model.batch_recommend(queries)
    assert len(results) == len(queries)
    for query, got in zip(queries, results):
        same_answer(model, got, single(model, query))
    assert isinstance(results[1], NotFound) and isinstance(results[5], InvalidArgument)
    assert model.batch_recommend([]) == []


def test_batch_limit(model):
    with pytest.raises(InvalidArgument, match="at most 1000 requests"):
        model.batch_recommend([RecommendQuery("u0", k=1)] * (MAX_BATCH + 1))
    results = model.batch_recommend([RecommendQuery(f"u{u % 8}", k=1, include_seen=True) for u in range(MAX_BATCH)])
    assert [ids(model, r) for r in results[:8]] == [["a0"]] * 2 + [["a3"]] * 2 + [["a6"]] * 2 + [["a9"]] * 2


def test_batch_scores_searches_as_one_product(model):
    """Requests the lists cannot answer go to ``exact_many`` on an exact-search version."""
    calls = []
    original = model.recommend_search.exact_many

    def counted(queries, ks, excludes):
        calls.append(queries.shape[0])
        return original(queries, ks, excludes)

    model.recommend_search.exact_many = counted
    queries = [RecommendQuery(f"u{u}", k=4, include_seen=True) for u in range(8)]
    results = model.batch_recommend(queries)
    for query, got in zip(queries, results):
        same_answer(model, got, single(model, query))
    assert calls == ([] if model.recommend_params.method == "annoy" else [8])


# -- properties on a model full of exact ties ----------------------------------------------------

TIED_USERS = 30
TIED_ARTISTS = 40


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.integers(0, TIED_USERS - 1), k=st.integers(1, 12), include_seen=st.booleans(),
       exclude=st.lists(st.integers(0, 45), max_size=6), only=st.lists(st.integers(0, 45), max_size=25))
def test_tied_pages_concatenate_and_allow_lists_hold(both_paths, user, k, include_seen, exclude, only):  # noqa: F811
    lists, search = both_paths
    query = RecommendQuery(f"user-{user}", k=k, include_seen=include_seen,
                           exclude_artist_ids=tuple(f"artist-{a}" for a in exclude),
                           only_artist_ids=tuple(f"artist-{a}" for a in only))
    for model in (lists, search):
        everything = model.recommend(query._replace(k=MAX_K))
        pages = [model.recommend(query._replace(offset=offset))
                 for offset in range(0, everything.indices.shape[0] + k, k)]
        assert np.concatenate([p.indices for p in pages]).tolist() == everything.indices.tolist()
        if only:
            assert set(everything.indices.tolist()) <= {a for a in only if a < TIED_ARTISTS}
    assert lists.recommend(query).indices.tolist() == search.recommend(query).indices.tolist()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.tuples(st.integers(0, TIED_USERS + 2), st.integers(0, LIST_N + 4), st.booleans(),
                                   st.integers(0, 6)), max_size=20))
def test_tied_batch_equals_single(both_paths, requests):  # noqa: F811
    queries = [RecommendQuery(f"user-{u}", k=k, include_seen=seen, offset=offset) for u, k, seen, offset in requests]
    for model in both_paths:
        for query, got in zip(queries, model.batch_recommend(queries)):
            want = single(model, query)
            if isinstance(want, Exception):
                assert type(got) is type(want)
            else:  # integer factors: the matrix product's scores are exact, ties included
                assert got.indices.tolist() == want.indices.tolist()
                assert got.scores.tobytes() == want.scores.tobytes()
