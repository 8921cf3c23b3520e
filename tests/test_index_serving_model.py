"""ServingModel on the tiny known-answer model (see conftest.tiny_artifacts): rankings, seen
exclusion, excluded ids, name lookup, and the request rules with their error classes."""

from __future__ import annotations

import numpy as np
import pytest

from index_service.serving_model import DEFAULT_K, MAX_K, RecommendQuery, ServingModel, SimilarQuery, resolve_k
from model_store import load_version
from model_store.artifacts import name_index as build_name_index
from musicrec.rpc.errors import InvalidArgument, NotFound


@pytest.fixture(params=[(None, True), ("exact", False), ("annoy", False)],
                ids=["precomputed", "exact-search", "annoy-search"])
def model(request, publish, models_dir, tiny_artifacts):
    """The tiny model served three ways: from its precomputed lists (made by the search the
    manifest chose), by exact search, by Annoy search. Every known answer below holds for all."""
    method, precomputed = request.param
    manifest = publish(tiny_artifacts)
    served = ServingModel(load_version(models_dir / str(manifest.model_version)),
                          recommend_method=method, similar_method=method, precomputed=precomputed)
    assert (served.recommend_top is not None) == precomputed
    yield served
    served.close()


def ids(model: ServingModel, ranking) -> list[str]:
    return [model.artist_ids[i] for i in ranking.indices.tolist()]


def recommended(model: ServingModel, query: RecommendQuery) -> list[str]:
    return ids(model, model.recommend(query))


def test_recommend_known_answer(model):
    ranking = model.recommend(RecommendQuery("u0", k=3))
    assert ids(model, ranking) == ["a1", "a2", "a11"]
    np.testing.assert_allclose(ranking.scores, [2 - 0.001, 1 - 0.002, 0.2 - 0.011], rtol=1e-5)
    assert recommended(model, RecommendQuery("u0", k=3, include_seen=True)) == ["a0", "a1", "a2"]
    assert recommended(model, RecommendQuery("u3", k=2)) == ["a4", "a5"]  # genre 1, a3 seen


def test_recommend_excluded_ids(model):
    ranking = model.recommend(RecommendQuery("u0", k=3, exclude_artist_ids=("a1", "nope", "a1")))
    assert ids(model, ranking) == ["a2", "a11", "a10"]
    ranking = model.recommend(RecommendQuery("u0", k=2, include_seen=True, exclude_artist_ids=("a2",)))
    assert ids(model, ranking) == ["a0", "a1"]


def test_recommend_k_default_and_catalog_exhaustion(model):
    assert len(model.recommend(RecommendQuery("u0", k=0)).indices) == DEFAULT_K
    everything = model.recommend(RecommendQuery("u0", k=MAX_K))
    assert len(everything.indices) == 11  # 12 artists, 1 seen
    assert "a0" not in ids(model, everything)
    assert len(model.recommend(RecommendQuery("u0", k=MAX_K, include_seen=True)).indices) == 12


def test_similar_known_answer(model):
    result = model.similar(SimilarQuery(artist_id="a3", k=4))
    assert model.artist_ids[result.query] == "a3"
    assert ids(model, result.ranking) == ["a4", "a5", "a2", "a1"]
    np.testing.assert_allclose(result.ranking.scores, [0.99875, 0.98058, 0.19612, 0.04994], atol=1e-4)
    assert len(model.similar(SimilarQuery(artist_id="a3", k=MAX_K)).ranking.indices) == 11  # itself excluded


def test_similar_by_name_is_case_insensitive_and_prefers_more_listeners(model):
    assert model.artist_ids[model.similar(SimilarQuery(artist_name="THE TWINS")).query] == "a7"
    assert model.artist_ids[model.similar(SimilarQuery(artist_name="  artist 3 ")).query] == "a3"
    assert ids(model, model.similar(SimilarQuery(artist_name="artist 3", k=2)).ranking) == ["a4", "a5"]


@pytest.mark.parametrize("k", [-1, MAX_K + 1, -(2**31)])
def test_k_out_of_range_is_invalid(model, k):
    with pytest.raises(InvalidArgument, match="k must be"):
        model.recommend(RecommendQuery("u0", k=k))
    with pytest.raises(InvalidArgument):
        model.similar(SimilarQuery(artist_id="a0", k=k))


def test_unknown_ids_are_not_found_with_the_id(model):
    with pytest.raises(NotFound, match="u999"):
        model.recommend(RecommendQuery("u999"))
    with pytest.raises(NotFound, match="a999"):
        model.similar(SimilarQuery(artist_id="a999"))
    with pytest.raises(NotFound, match="Nobody"):
        model.similar(SimilarQuery(artist_name="Nobody"))


def test_missing_arguments_are_invalid(model):
    with pytest.raises(InvalidArgument):
        model.recommend(RecommendQuery(""))
    with pytest.raises(InvalidArgument):
        model.similar(SimilarQuery())
    with pytest.raises(InvalidArgument):
        model.similar(SimilarQuery(artist_id="", artist_name="   "))


def test_too_many_excluded_ids_is_invalid(model):
    with pytest.raises(InvalidArgument, match="exclude_artist_ids"):
        model.recommend(RecommendQuery("u0", k=3, exclude_artist_ids=tuple(f"x{i}" for i in range(MAX_K + 1))))
    most = tuple(f"x{i}" for i in range(MAX_K))
    assert len(model.recommend(RecommendQuery("u0", k=3, exclude_artist_ids=most)).indices) == 3


def test_resolve_k():
    assert resolve_k(0) == DEFAULT_K
    assert resolve_k(1) == 1
    assert resolve_k(MAX_K) == MAX_K


def test_name_index_ties_and_blanks():
    index = build_name_index(["X", "x", " X ", "", "y"], [5, 5, 7, 100, 1])
    assert index == {"x": 2, "y": 4}
    assert build_name_index(["A", "a"], [3, 3]) == {"a": 0}  # equal listeners: the first


def test_close_is_idempotent_and_leaves_exact_answers(model):
    before = recommended(model, RecommendQuery("u0", k=3))
    model.close()
    model.close()
    assert recommended(model, RecommendQuery("u0", k=3)) == before


def test_sorted_lookup_answers_the_same_before_and_after_its_hash_index():
    from index_service.serving_model import SortedLookup

    keys = np.array(["u7", "a", "zz", "u10", "b\u00e9", ""], dtype=str)
    order = np.argsort(keys, kind="stable")
    lookup = SortedLookup(keys, order)
    named = SortedLookup(keys, order, targets=np.array([5, 4, 3, 2, 1, 0]))
    queries = ["u7", "a", "zz", "u10", "b\u00e9", "", "u1", "a\x00", "zzz", "\x00"]
    expected = [0, 1, 2, 3, 4, 5, None, None, None, None]
    before = [lookup.get(q) for q in queries]
    named_before = [named.get(q) for q in queries]
    lookup.build_hash_index()
    named.build_hash_index()
    assert before == expected
    assert [lookup.get(q) for q in queries] == expected
    assert named_before == [None if e is None else 5 - e for e in expected]
    assert [named.get(q) for q in queries] == named_before
