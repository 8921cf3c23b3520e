"""The committed golden version of the current on-disk format must keep loading, with the same answers."""

from pathlib import Path

import numpy as np
import pytest

from model_store import FORMAT_VERSION, list_versions, load_version, validate_version
from model_store.format import DATA_FILES
from model_store.inner_product import item_vectors_with_bias, user_query
from model_store.search import CosineSearch, InnerProductSearch, SearchParams

GOLDEN = Path(__file__).parent / "fixtures" / "model_store" / f"format-{FORMAT_VERSION}"


def test_golden_fixture_exists_for_current_format():
    assert (GOLDEN / "1" / "manifest.json").is_file(), (
        f"no golden fixture for format {FORMAT_VERSION}: run scripts/make_golden_fixture.py and commit it")


def test_golden_version_validates_and_loads():
    assert list_versions(GOLDEN) == [1]
    manifest = validate_version(GOLDEN / "1")
    assert manifest.format_version == FORMAT_VERSION
    assert set(manifest.files) == set(DATA_FILES)
    loaded = load_version(GOLDEN / "1")
    try:
        art = loaded.artifacts
        assert art.user_ids.tolist() == ["u0", "u1", "u2", "u3"]
        assert art.artist_names.tolist()[-1] == "Zeta \u00e9"
        assert (manifest.num_users, manifest.num_artists, manifest.num_factors) == (4, 6, 3)
        assert manifest.hyperparameters == {"factors": 3, "epochs": 1}
        assert loaded.recommend_index.get_n_items() == 6
        assert loaded.similar_index.get_n_items() == 6
    finally:
        loaded.close()


@pytest.mark.parametrize("method", ["exact", "annoy"])
def test_golden_answers(method):
    loaded = load_version(GOLDEN / "1")
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
