"""Every committed golden version (one per on-disk format) must keep loading, with the same answers."""

from pathlib import Path

import numpy as np
import pytest

from index_service.serving_model import RecommendQuery, ServingModel, SimilarQuery
from model_store import FORMAT_VERSION, list_versions, load_version, validate_version
from model_store.format import SUPPORTED_FORMATS, data_files
from ranking.inner_product import item_vectors_with_bias, user_query
from ranking.search import CosineSearch, InnerProductSearch, SearchParams

FIXTURES = Path(__file__).parent / "fixtures" / "model_store"


def golden(fmt: int) -> Path:
    return FIXTURES / f"format-{fmt}"


def test_golden_fixture_exists_for_every_format():
    assert FORMAT_VERSION in SUPPORTED_FORMATS
    for fmt in SUPPORTED_FORMATS:
        assert (golden(fmt) / "1" / "manifest.json").is_file(), (
            f"no golden fixture for format {fmt}: run scripts/make_golden_fixture.py and commit it")


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_golden_version_validates_and_loads(fmt):
    assert list_versions(golden(fmt)) == [1]
    manifest = validate_version(golden(fmt) / "1")
    assert manifest.format_version == fmt
    assert set(manifest.files) == set(data_files(fmt, manifest.recommend_search.has_index,
                                                 manifest.similar_search.has_index))
    assert {entry.algorithm for entry in manifest.files.values()} == {"sha256" if fmt == 1 else "blake3"}
    loaded = load_version(golden(fmt) / "1")
    try:
        art = loaded.artifacts
        assert art.user_ids.tolist() == ["u0", "u1", "u2", "u3"]
        assert art.artist_names.tolist()[-1] == "Zeta \u00e9"
        assert (manifest.num_users, manifest.num_artists, manifest.num_factors) == (4, 6, 3)
        assert manifest.hyperparameters == {"factors": 3, "epochs": 1}
        # Format 4's fixture is a warm publish whose base served Recommend exact: no recommend.ann.
        assert (loaded.recommend_index is None) == (fmt >= 4)
        assert not (golden(fmt) / "1" / "recommend.ann").exists() or fmt < 4
        if loaded.recommend_index is not None:
            assert loaded.recommend_index.get_n_items() == 6
        assert loaded.similar_index.get_n_items() == 6
        assert (loaded.top is not None) == (fmt >= 2)
        assert (loaded.tags is not None) == (fmt >= 3)
        assert loaded.artifacts.tags is loaded.tags
    finally:
        loaded.close()


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
@pytest.mark.parametrize("method", ["exact", "annoy"])
def test_golden_answers(fmt, method):
    loaded = load_version(golden(fmt) / "1")
    try:
        art = loaded.artifacts
        params = SearchParams(method=method, search_k=-1, candidates_per_result=1)
        rec = InnerProductSearch(item_vectors_with_bias(art.artist_factors, art.artist_bias),
                                 loaded.recommend_index, params)
        ids, scores = rec.search(user_query(art.user_factors[0]), 3)
        # u0 = [1, 0, .1]: a0 scores 1.0, a1 .8 + .01 + .1 = .91, a2 .6
        assert ids.tolist() == [0, 1, 2]
        assert np.allclose(scores, [1.0, 0.91, 0.6], atol=1e-6)
        sim = CosineSearch(art.artist_factors, loaded.similar_index, params)
        ids, _ = sim.search(3, 2)
        assert ids.tolist() == [4, 5]
    finally:
        loaded.close()


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_golden_served_answers(fmt):
    """The index service's model answers the same from every format (format 2 from its lists)."""
    model = ServingModel(load_version(golden(fmt) / "1"))
    try:
        assert (model.recommend_top is not None) == (fmt >= 2)
        # u0 heard a0: a1 .91, a2 .6, a4 .11, a5 .1, a3 0
        ranking = model.recommend(RecommendQuery("u0", k=5))
        assert ranking.indices.tolist() == [1, 2, 4, 5, 3]
        assert np.allclose(ranking.scores, [0.91, 0.6, 0.11, 0.1, 0.0], atol=1e-6)
        assert model.recommend(RecommendQuery("u3", k=6)).indices.tolist() == [5, 1, 2, 0]  # heard a3, a4: 4 left
        assert model.similar(SimilarQuery(artist_name="  ZETA \u00c9 ", k=2)).query == 5
        assert model.similar(SimilarQuery(artist_id="a3", k=2)).ranking.indices.tolist() == [4, 5]
    finally:
        model.close()


def test_golden_tags():
    """Format 3 stores the artists' tags: vocabulary by artists carrying (then name), each artist's
    heaviest first, and the transpose."""
    loaded = load_version(golden(3) / "1")
    try:
        tags = loaded.tags
        assert tags.names.tolist() == ["rock", "indie", "jazz", "\u00e9lectro"]
        assert tags.counts.tolist() == [3, 2, 2, 1]
        assert [tags.artist_tag_names(a) for a in range(6)] == [
            ["rock", "indie"], ["rock"], ["indie", "rock"], ["jazz"], ["jazz", "\u00e9lectro"], []]
        assert tags.weights.tolist() == [3, 1, 2, 2, 1, 5, 2, 1]
        assert [tags.tag_artist_rows(t).tolist() for t in range(4)] == [[0, 1, 2], [0, 2], [3, 4], [4]]
    finally:
        loaded.close()
