"""Tag filters, diversity and include_tags on the tiny known-answer model with planted genres:
ServingModel served three ways (precomputed lists, exact search, Annoy search) and over real gRPC.

Tags (conftest.tiny_artifacts' genres): artist a{3g+r} carries "genre g" (weight 10); the
strongest of each genre (r = 0) also "top" (weight 1); a7 alone "rare"; a11 "Post-Rock" (weight
20: its top tag). u0 (genre 0, a0 seen) ranks a1, a2, a11, a10, then a3 .. a9 in catalog order.
"""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest

from index_service.live import LiveListener
from index_service.serving_model import (MAX_TAG_LENGTH, MAX_TAGS, HistoryQuery, RecommendQuery, ServingModel,
                                         SimilarQuery, TagOptions)
from model_store import load_version
from model_store.artifacts import ArtistTags
from musicrec.rpc.errors import FailedPrecondition, InvalidArgument
from musicrec.v1 import index_pb2
from conftest import ARTISTS_PER_GENRE, FAST_BUILD, GENRES
from test_index_service import artist_ids, expect_code, serve


def tagged_artifacts(tiny_artifacts):
    rows, names, weights = [], [], []
    for a in range(GENRES * ARTISTS_PER_GENRE):
        genre, rank = divmod(a, ARTISTS_PER_GENRE)
        rows.append(a), names.append(f"genre {genre}"), weights.append(10.0)
        if rank == 0:
            rows.append(a), names.append("top"), weights.append(1.0)
    rows += [7, 11]
    names += ["rare", "Post-Rock"]
    weights += [1.0, 20.0]
    tags = ArtistTags.from_triples(tiny_artifacts.num_artists, rows, names, weights)
    return dataclasses.replace(tiny_artifacts, tags=tags)


@pytest.fixture(params=[(None, True), ("exact", False), ("annoy", False)],
                ids=["precomputed", "exact-search", "annoy-search"])
def model(request, publish, models_dir, tiny_artifacts):
    method, precomputed = request.param
    manifest = publish(tagged_artifacts(tiny_artifacts))
    served = ServingModel(load_version(models_dir / str(manifest.model_version)),
                          recommend_method=method, similar_method=method, precomputed=precomputed)
    assert served.tags is not None
    yield served
    served.close()


def ids(model, ranking) -> list[str]:
    return [model.artist_ids[i] for i in ranking.indices.tolist()]


_TAG_FIELDS = {f.name for f in dataclasses.fields(TagOptions)}


def with_tags(**kwargs) -> dict:
    """Query keyword arguments with the tag fields among them gathered into ``tag_options``."""
    tags = {name: kwargs.pop(name) for name in list(kwargs) if name in _TAG_FIELDS}
    return dict(kwargs, tag_options=TagOptions(**tags)) if tags else kwargs


def rec(model, **kwargs) -> list[str]:
    return ids(model, model.recommend(RecommendQuery("u0", **with_tags(**kwargs))))


def test_a_genre_filter_returns_only_that_genre_in_exact_order(model):
    assert rec(model, k=5, tags=("genre 1",)) == ["a3", "a4", "a5"]
    assert rec(model, k=5, tags=("GENRE 3 ",)) == ["a11", "a10", "a9"]  # matched case-folded, stripped
    assert rec(model, k=2, tags=("genre 1", "genre 3")) == ["a11", "a10"]  # any of them
    assert rec(model, k=3, tags=("genre 1",), offset=1) == ["a4", "a5"]  # pages of the filtered ranking
    assert rec(model, k=2, tags=("genre 0",)) == ["a1", "a2"]  # a0 seen
    assert rec(model, k=3, tags=("genre 0",), include_seen=True) == ["a0", "a1", "a2"]


def test_lists_answer_filters_whatever_search_the_version_serves(publish, models_dir, tiny_artifacts):
    # A version served by Annoy (forced at publish): its lists still answer the filters they hold.
    settings = dataclasses.replace(FAST_BUILD, method="annoy")
    manifest = publish(tagged_artifacts(tiny_artifacts), build_settings=settings)
    served = ServingModel(load_version(models_dir / str(manifest.model_version)))
    try:
        assert served.recommend_params.method == "annoy" and served.recommend_top is not None
        before = served.precomputed_answers
        assert rec(served, k=3, tags=("genre 1",)) == ["a3", "a4", "a5"]
        similar = served.similar(SimilarQuery(artist_id="a3", **with_tags(k=2, tags=("genre 1",)))).ranking
        assert ids(served, similar) == ["a4", "a5"]
        assert served.precomputed_answers == before + 2
    finally:
        served.close()


def test_exclusions_rare_and_empty_filters(model):
    assert rec(model, k=4, exclude_tags=("genre 0", "genre 3")) == ["a3", "a4", "a5", "a6"]
    assert rec(model, k=3, tags=("genre 1", "genre 2"), exclude_tags=("top",)) == ["a4", "a5", "a7"]
    assert rec(model, k=10, tags=("rare",)) == ["a7"]
    assert rec(model, k=10, tags=("genre 0",), exclude_artist_ids=("a1", "a2")) == []
    assert rec(model, k=10, tags=("genre 2",), exclude_tags=("genre 2",)) == []
    assert rec(model, k=10, tags=("genre 2",), only_artist_ids=("a8", "a1", "a6")) == ["a6", "a8"]


def test_unknown_tags_give_an_empty_answer_and_are_listed(model):
    query = RecommendQuery("u0", **with_tags(k=5, tags=("genre 1", "jazz", "jazz"), exclude_tags=("nope",)))
    assert ids(model, model.recommend(query)) == []
    assert model.unknown_tags(query) == ("jazz", "nope")
    assert model.unknown_tags(RecommendQuery("u0", **with_tags(tags=("genre 1",)))) == ()


def test_diversity_caps_hold(model):
    # Cap 1 per top tag: a1 (genre 0), a11 (post-rock), a10 (genre 3), a3 (genre 1), a6 (genre 2).
    assert rec(model, k=5, max_per_tag=1) == ["a1", "a11", "a10", "a3", "a6"]
    assert rec(model, k=3, max_per_tag=1, tags=("genre 1", "genre 0")) == ["a1", "a3"]
    everything = model.recommend(RecommendQuery("u0", **with_tags(k=1000, max_per_tag=2)))
    top = model.top_tag[everything.indices]
    assert np.bincount(top).max() <= 2 and len(everything.indices) == 9


def test_similar_filtered_and_diversified(model):
    def similar(**kwargs):
        return ids(model, model.similar(SimilarQuery(artist_id="a3", **with_tags(**kwargs))).ranking)
    assert similar(k=4) == ["a4", "a5", "a2", "a1"]
    assert similar(k=4, tags=("genre 0",)) == ["a2", "a1", "a0"]
    assert similar(k=3, exclude_tags=("genre 1",)) == ["a2", "a1", "a0"]  # then cosine 0: lower index first
    assert similar(k=2, max_per_tag=1) == ["a4", "a2"]


def test_history_and_live_listeners_are_filtered_too(model):
    history = HistoryQuery((("a0", 5.0),), **with_tags(k=3, tags=("genre 1",)))
    assert ids(model, model.recommend_for_history(history).ranking)[0] in ("a3", "a4", "a5")
    assert set(ids(model, model.recommend_for_history(history).ranking)) == {"a3", "a4", "a5"}
    unknown_only = HistoryQuery((("zzz", 1.0),), **with_tags(k=3, tags=("genre 2",)))
    answer = model.recommend_for_history(unknown_only)
    assert answer.popularity_fallback and ids(model, answer.ranking) == ["a7", "a6", "a8"]  # a7: most listeners
    # A live listener of genre 2 (a6 played): genre 1 ranks by its off-genre part (a5 0.2, a4 0.1, a3 0).
    live = LiveListener(model.version, 1, np.array([0, 0, 1, 0, 1], dtype=np.float32), np.array([6]), ())
    genre_1 = RecommendQuery("u0", **with_tags(k=5, tags=("genre 1",)))
    assert ids(model, model.recommend(genre_1, live)) == ["a5", "a4", "a3"]
    assert ids(model, model.recommend(RecommendQuery("u0", **with_tags(k=3, tags=("genre 2",))), live)) == ["a7", "a8"]


def test_batch_entries_carry_their_own_filters(model):
    results = model.batch_recommend([RecommendQuery("u0", k=2),
                                     RecommendQuery("u0", **with_tags(k=5, tags=("genre 1",))),
                                     RecommendQuery("u0", **with_tags(tags=("x" * (MAX_TAG_LENGTH + 1),)))])
    assert ids(model, results[0]) == ["a1", "a2"] and ids(model, results[1]) == ["a3", "a4", "a5"]
    assert isinstance(results[2], InvalidArgument)


def test_limits_are_invalid_argument(model):
    for query in (RecommendQuery("u0", **with_tags(tags=("t",) * (MAX_TAGS + 1))),
                  RecommendQuery("u0", **with_tags(exclude_tags=("x" * (MAX_TAG_LENGTH + 1),))),
                  RecommendQuery("u0", **with_tags(tags=("  ",))), RecommendQuery("u0", **with_tags(max_per_tag=-1))):
        with pytest.raises(InvalidArgument):
            model.recommend(query)
    with pytest.raises(InvalidArgument):
        model.similar(SimilarQuery(**with_tags(artist_id="a1", max_per_tag=10_000)))


def test_a_version_without_tags_refuses_filters(publish, models_dir, tiny_artifacts):
    manifest = publish(tiny_artifacts)
    served = ServingModel(load_version(models_dir / str(manifest.model_version)))
    try:
        with pytest.raises(FailedPrecondition, match="no tags"):
            served.recommend(RecommendQuery("u0", **with_tags(tags=("rock",))))
        with pytest.raises(FailedPrecondition):
            served.similar(SimilarQuery(**with_tags(artist_id="a1", max_per_tag=1)))
        assert ids(served, served.recommend(RecommendQuery("u0", **with_tags(k=2, include_tags=True)))) == ["a1", "a2"]
    finally:
        served.close()


def test_tags_over_grpc(models_dir, publish, tiny_artifacts):
    publish(tagged_artifacts(tiny_artifacts))

    async def check(app, client) -> None:
        response = await client.recommend("u0", 5, tags=["genre 1"], include_tags=True)
        assert artist_ids(response) == ["a3", "a4", "a5"]
        assert [list(a.tags) for a in response.artists] == [["genre 1", "top"], ["genre 1"], ["genre 1"]]
        plain = await client.recommend("u0", 2)
        assert artist_ids(plain) == ["a1", "a2"] and [list(a.tags) for a in plain.artists] == [[], []]
        unknown = await client.recommend("u0", 5, tags=["genre 1", "jazz"], exclude_tags=["nope"])
        assert artist_ids(unknown) == [] and list(unknown.unknown_tags) == ["jazz", "nope"]
        diverse = await client.recommend("u0", 5, diversity=index_pb2.Diversity(max_per_tag=1))
        assert artist_ids(diverse) == ["a1", "a11", "a10", "a3", "a6"]
        similar = await client.similar(artist_id="a3", k=4, tags=["genre 0"], include_tags=True)
        assert artist_ids(similar) == ["a2", "a1", "a0"] and list(similar.artist.tags) == ["genre 1", "top"]
        history = await client.history([("a6", 1.0), ("zz", 1.0)], 3, tags=["genre 1"], exclude_tags=["top"])
        assert set(artist_ids(history)) == {"a4", "a5"} and list(history.unknown_artist_ids) == ["zz"]
        batch = await client.batch(index_pb2.RecommendRequest(user_id="u0", k=2, tags=["genre 3"], include_tags=True),
                                   index_pb2.RecommendRequest(user_id="u0", tags=["nope"]),
                                   index_pb2.RecommendRequest(user_id="u0", tags=[""]))
        assert artist_ids(batch.results[0].response) == ["a11", "a10"]
        assert list(batch.results[0].response.artists[0].tags) == ["post-rock", "genre 3"]
        assert list(batch.results[1].response.unknown_tags) == ["nope"]
        assert batch.results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        await expect_code(grpc.StatusCode.INVALID_ARGUMENT, client.recommend("u0", tags=["x" * 1000]))
        await expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                          client.similar(artist_id="a1", diversity=index_pb2.Diversity(max_per_tag=-3)))

    serve(models_dir, check)


def test_tag_filter_on_a_version_without_tags_over_grpc(models_dir, publish, tiny_artifacts):
    publish(tiny_artifacts)

    async def check(app, client) -> None:
        details = await expect_code(grpc.StatusCode.FAILED_PRECONDITION, client.recommend("u0", tags=["rock"]))
        assert "no tags" in details
        assert artist_ids(await client.recommend("u0", 2, include_tags=True)) == ["a1", "a2"]

    serve(models_dir, check)
