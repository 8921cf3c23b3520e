"""The precomputed path and the search path give identical answers, and every request the lists
cannot answer falls back to the search.

Identity: the lists are made by the serving search itself (``ranking.precompute``), so a list
answer must equal the search answer exactly: same artists, same order (ties to the lower artist
index), same float32 scores. Checked on a model built to be full of exact ties and over random
requests (hypothesis), and on the tiny known-answer model.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index_service.serving_model import MAX_K, RecommendQuery, ServingModel, SimilarQuery
from model_store import ModelArtifacts, load_version
from ranking import BuildSettings, build_indexes

LIST_N = 8


def tied_artifacts(num_users: int = 30, num_artists: int = 40, factors: int = 3, seed: int = 3) -> ModelArtifacts:
    """Small integer factors and zero bias: many artists tie on score for every user."""
    rng = np.random.default_rng(seed)
    user_factors = rng.integers(-1, 2, size=(num_users, factors)).astype(np.float32)
    artist_factors = rng.integers(-1, 2, size=(num_artists, factors)).astype(np.float32)
    artist_factors[artist_factors.sum(axis=1) == 0, 0] = 1.0  # no zero vectors (cosine undefined)
    seen = [np.sort(rng.choice(num_artists, size=rng.integers(0, 6), replace=False)) for _ in range(num_users)]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seen], out=indptr[1:])
    return ModelArtifacts(
        user_ids=np.array([f"user-{u}" for u in range(num_users)]),
        user_factors=user_factors,
        artist_ids=np.array([f"artist-{a}" for a in range(num_artists)]),
        artist_names=np.array([f"Name {a}" for a in range(num_artists)]),
        artist_factors=artist_factors,
        artist_bias=np.zeros(num_artists, dtype=np.float32),
        artist_listeners=np.ones(num_artists, dtype=np.int32),
        seen_indptr=indptr,
        seen_indices=np.concatenate(seen).astype(np.int32),
    )


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory):
    """(model answering from lists of LIST_N, the same version answering by search only)."""
    from model_store import publish_version

    models_dir = tmp_path_factory.mktemp("tied-models")
    artifacts = tied_artifacts()
    settings = BuildSettings(n_trees=2, sample_size=10, n_jobs=1, tuning_budget_s=1.0, recommend_n=LIST_N,
                             similar_n=LIST_N, method="exact")
    manifest = publish_version(models_dir, artifacts, indexes=build_indexes(artifacts, settings),
                               data_source="tests: tied", data_fingerprint="0" * 64,
                               num_interactions=1, hyperparameters={}, metrics={})
    loaded = load_version(models_dir / str(manifest.model_version))
    assert manifest.precomputed.recommend_method == manifest.precomputed.similar_method == "exact"
    lists, search = ServingModel(loaded), ServingModel(loaded, precomputed=False)
    assert lists.recommend_n == lists.similar_n == LIST_N and search.recommend_top is None
    yield lists, search
    lists.close()


def same(a, b) -> bool:
    return a.indices.tolist() == b.indices.tolist() and a.scores.astype(np.float32).tobytes() == b.scores.astype(np.float32).tobytes()


def test_every_user_and_artist_same_answer_from_lists(both_paths):
    lists, search = both_paths
    for user in lists.user_ids.tolist():
        for k in (1, 3, LIST_N):
            query = RecommendQuery(user, k=k)
            assert same(lists.recommend(query), search.recommend(query)), (user, k)
    for artist in lists.artist_ids.tolist():
        for k in (1, 5, LIST_N):
            query = SimilarQuery(artist_id=artist, k=k)
            assert same(lists.similar(query).ranking, search.similar(query).ranking)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.integers(0, 29), k=st.integers(0, 45), include_seen=st.booleans(),
       exclude=st.lists(st.integers(0, 45), max_size=12))
def test_random_requests_same_answer_either_path(both_paths, user, k, include_seen, exclude):
    lists, search = both_paths
    user_id = f"user-{user}"
    excluded = tuple(f"artist-{a}" for a in exclude)  # artist-40 and up are unknown: ignored
    query = RecommendQuery(user_id, k=k, include_seen=include_seen, exclude_artist_ids=excluded)
    assert same(lists.recommend(query), search.recommend(query))


class Counting:
    """Counts calls of a model's search methods (the fallback) while delegating."""

    def __init__(self, model: ServingModel):
        self.calls = 0
        for name in ("search_recommend", "search_similar"):
            original = getattr(model, name)

            def counted(*args, _original=original, **kwargs):
                self.calls += 1
                return _original(*args, **kwargs)

            setattr(model, name, counted)


def test_lists_answer_without_search_and_fall_back_when_they_cannot(both_paths):
    lists, search = both_paths
    counter = Counting(lists)
    user = "user-0"
    lists.recommend(RecommendQuery(user, k=LIST_N))
    lists.recommend(RecommendQuery(user, k=3, exclude_artist_ids=("artist-0", "nope")))
    lists.similar(SimilarQuery(artist_id="artist-1", k=LIST_N))
    lists.similar(SimilarQuery(artist_name="name 2", k=2))
    assert counter.calls == 0
    fallbacks = [
        lambda: lists.recommend(RecommendQuery(user, k=LIST_N + 1)),  # k > N
        lambda: lists.recommend(RecommendQuery(user, k=3, include_seen=True)),  # the lists exclude seen artists
        lambda: lists.similar(SimilarQuery(artist_id="artist-1", k=LIST_N + 1)),  # k > N
    ]
    # Exclusions that remove list entries, leaving fewer than k: the search finds the rest.
    full_list = [str(lists.artist_ids[i]) for i in lists.recommend(RecommendQuery(user, k=LIST_N)).indices.tolist()]
    fallbacks.append(lambda: lists.recommend(RecommendQuery(user, k=LIST_N, exclude_artist_ids=full_list[:2])))
    for n, request in enumerate(fallbacks, start=1):
        request()
        assert counter.calls == n
    answer = lists.recommend(RecommendQuery(user, k=LIST_N, exclude_artist_ids=full_list[:2]))
    assert len(answer.indices) == LIST_N and not set(answer.indices.tolist()) & {int(a.split("-")[1]) for a in full_list[:2]}
    assert same(answer, search.recommend(RecommendQuery(user, k=LIST_N, exclude_artist_ids=full_list[:2])))


def test_short_list_is_a_complete_answer(publish, models_dir, tiny_artifacts):
    """A list shorter than N (the catalog ran out) answers any k: nothing more exists."""
    manifest = publish(tiny_artifacts)
    model = ServingModel(load_version(models_dir / str(manifest.model_version)))
    try:
        assert model.recommend_n == 12  # min(50, artists)
        counter = Counting(model)
        everything = model.recommend(RecommendQuery("u0", k=12))
        assert len(everything.indices) == 11 and counter.calls == 0  # 12 artists, 1 seen: list of 11
        excluding_a5 = RecommendQuery("u0", k=12, exclude_artist_ids=("a5",))
        assert len(model.recommend(excluding_a5).indices) == 10 and counter.calls == 0
        assert len(model.recommend(RecommendQuery("u0", k=MAX_K)).indices) == 11 and counter.calls == 1  # k > N: search
    finally:
        model.close()


def test_lists_over_budget_are_left_out_and_searched(publish, models_dir, tiny_artifacts):
    """A side whose estimated precompute time exceeds the budget gets no lists (length 0)."""
    manifest = publish(tiny_artifacts, build_settings=BuildSettings(n_trees=2, sample_size=8, n_jobs=1,
                                                                   tuning_budget_s=1.0, precompute_budget_s=0.0))
    assert (manifest.precomputed.recommend_n, manifest.precomputed.similar_n) == (0, 0)
    model = ServingModel(load_version(models_dir / str(manifest.model_version)))
    try:
        assert model.recommend_top is None and model.similar_top is None
        top3 = model.recommend(RecommendQuery("u0", k=3)).indices
        assert [str(model.artist_ids[i]) for i in top3] == ["a1", "a2", "a11"]
    finally:
        model.close()


def test_forked_precompute_matches_in_process(tmp_path):
    """Lists made by forked worker processes equal lists made in this process."""
    from ranking.inner_product import item_vectors_with_bias
    from ranking.precompute import precompute_top
    from ranking.search import CosineSearch, InnerProductSearch, SearchParams

    art = tied_artifacts(num_users=9000, num_artists=60)  # > one chunk of rows: several tasks
    rec = InnerProductSearch(item_vectors_with_bias(art.artist_factors, art.artist_bias), None, SearchParams())
    sim = CosineSearch(art.artist_factors, None, SearchParams())
    here, _ = precompute_top(art, rec, sim, 5, 5, workers=1)
    forked, _ = precompute_top(art, rec, sim, 5, 5, workers=2)
    for name in ("recommend_top", "recommend_top_scores", "similar_top", "similar_top_scores"):
        assert np.array_equal(getattr(here, name), getattr(forked, name)), name
