"""Model-store format 4: each Annoy index file is optional (a side without one serves exact).

Known answers on the tiny model (conftest.tiny_artifacts): a version published without the index
of one side, the other or both round-trips, loads that side's index as None and answers exactly
what an exact search answers; a manifest whose file list disagrees with its search configs (a
side said to have no index but listing the file, or the reverse) is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ANNOY_BUILD

from index_service.serving_model import RecommendQuery, ServingModel, SimilarQuery
from model_store import (
    InvalidVersionError,
    ModelArtifacts,
    load_version,
    publish_version,
    read_manifest,
    validate_version,
)
from model_store.format import (
    FORMAT_VERSION,
    RECOMMEND_INDEX_FILE,
    SIMILAR_INDEX_FILE,
    SearchConfig,
    data_files,
)
from ranking import BaseSearch, build_indexes
from ranking.inner_product import user_query

GOLDEN_3 = Path(__file__).parent / "fixtures" / "model_store" / "format-3" / "1"


def exact_config(dims: int, measured_artists: int) -> SearchConfig:
    """A base's search config that served exact, measured on ``measured_artists`` artists."""
    return SearchConfig(method="exact", metric="angular", dims=dims, n_trees=5, search_k=-1, candidates_per_result=1,
                        recall_at_10=1.0, recall_sample_size=10, median_latency_ms=0.01,
                        measured_artists=measured_artists)


def base_without(artifacts: ModelArtifacts, recommend: bool, similar: bool) -> BaseSearch:
    """A base under which ``build_indexes`` leaves out the recommend/similar index where asked
    (the base served exact on this very catalog) and measures the other side afresh (its base
    was measured on a catalog ten times the size)."""
    f, a = artifacts.num_factors, artifacts.num_artists
    return BaseSearch(recommend=exact_config(f + 2, a if recommend else 10 * a),
                      similar=exact_config(f, a if similar else 10 * a))


def exact_recommend(art: ModelArtifacts, user: int, k: int) -> list[int]:
    """Brute force: every unseen artist by factors . factors + bias, ties to the lower index."""
    scores = art.artist_factors @ art.user_factors[user] + art.artist_bias
    scores[art.seen_indices[art.seen_indptr[user]:art.seen_indptr[user + 1]]] = -np.inf
    order = np.lexsort((np.arange(scores.size), -scores))
    return [int(a) for a in order[:k] if np.isfinite(scores[a])]


def exact_similar(art: ModelArtifacts, artist: int, k: int) -> list[int]:
    """Brute force cosine similarity, the artist itself excluded."""
    normalized = art.artist_factors / np.linalg.norm(art.artist_factors, axis=1, keepdims=True)
    scores = normalized @ normalized[artist]
    scores[artist] = -np.inf
    return [int(a) for a in np.lexsort((np.arange(scores.size), -scores))[:k]]


@pytest.mark.parametrize("recommend, similar", [(True, True), (True, False), (False, True), (False, False)])
def test_a_version_without_an_index_round_trips_and_serves_exact(publish, models_dir, tiny_artifacts, recommend,
                                                                 similar):
    """``recommend``/``similar``: the side is built without its Annoy index."""
    art = tiny_artifacts
    indexes = build_indexes(art, ANNOY_BUILD, base=base_without(art, recommend, similar))
    assert (indexes.recommend_index is None, indexes.similar_index is None) == (recommend, similar)
    manifest = publish_version(models_dir, art, indexes=indexes, data_source="tests", data_fingerprint="0" * 64,
                               num_interactions=8, hyperparameters={}, metrics={})
    version = models_dir / str(manifest.model_version)
    assert manifest.format_version == FORMAT_VERSION >= 4
    assert (manifest.recommend_search.has_index, manifest.similar_search.has_index) == (not recommend, not similar)
    listed = set(data_files(4, not recommend, not similar))
    assert set(manifest.files) == listed
    assert {p.name for p in version.iterdir()} == listed | {"manifest.json"}
    assert (RECOMMEND_INDEX_FILE in listed, SIMILAR_INDEX_FILE in listed) == (not recommend, not similar)
    assert read_manifest(version) == manifest  # the on-disk manifest says the same
    for side in (c for c, skipped in ((manifest.recommend_search, recommend), (manifest.similar_search, similar))
                 if skipped):
        assert (side.method, side.n_trees, side.measured_artists) == ("exact", 0, art.num_artists)
    loaded = load_version(version)
    assert (loaded.recommend_index is None, loaded.similar_index is None) == (recommend, similar)
    model = ServingModel(loaded, precomputed=False)
    try:
        for user in range(art.num_users):
            assert model.recommend(RecommendQuery(f"u{user}", k=5)).indices.tolist() == exact_recommend(art, user, 5)
        for artist in range(art.num_artists):
            assert model.similar(SimilarQuery(artist_id=f"a{artist}", k=4)).ranking.indices.tolist() == \
                exact_similar(art, artist, 4)
        # The known answers of conftest.tiny_artifacts.
        assert model.recommend(RecommendQuery("u0", k=3)).indices.tolist() == [1, 2, 11]
        assert model.similar(SimilarQuery(artist_id="a3", k=4)).ranking.indices.tolist() == [4, 5, 2, 1]
        query = user_query(art.user_factors[0])
        assert model.recommend_search.search(query, 3)[0].tolist() == [0, 1, 2]
    finally:
        model.close()


@pytest.fixture
def no_recommend_index(models_dir, tiny_artifacts) -> Path:
    """A published format-4 version of the tiny model without recommend.ann (similar.ann kept)."""
    indexes = build_indexes(tiny_artifacts, ANNOY_BUILD, base=base_without(tiny_artifacts, True, False))
    manifest = publish_version(models_dir, tiny_artifacts, indexes=indexes, data_source="tests",
                               data_fingerprint="0" * 64, num_interactions=8, hyperparameters={}, metrics={})
    return models_dir / str(manifest.model_version)


def edit(version: Path, change) -> None:
    path = version / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_file_listed_for_a_side_without_an_index_is_refused(no_recommend_index, tmp_path):
    """The manifest says no recommend index (n_trees 0) but lists recommend.ann (the file there too)."""
    similar = json.loads((no_recommend_index / "manifest.json").read_text())["files"][SIMILAR_INDEX_FILE]
    shutil.copy(no_recommend_index / SIMILAR_INDEX_FILE, no_recommend_index / RECOMMEND_INDEX_FILE)
    edit(no_recommend_index, lambda m: m["files"].update({RECOMMEND_INDEX_FILE: similar}))
    with pytest.raises(InvalidVersionError, match=r"unexpected \['recommend.ann'\] \(search.recommend.n_trees is 0 "
                                                  r"\(no Annoy index\), so recommend.ann must not be listed\)"):
        validate_version(no_recommend_index)


def test_a_side_said_to_have_an_index_without_its_file_is_refused(no_recommend_index):
    edit(no_recommend_index, lambda m: m["search"]["recommend"].update(n_trees=5))
    with pytest.raises(InvalidVersionError, match=r"missing \['recommend.ann'\], unexpected \[\] \(search.recommend.n_trees is 5 "
                                                  r"\(an Annoy index\), so recommend.ann must be listed\)"):
        validate_version(no_recommend_index)


def test_a_side_with_its_file_said_to_have_no_index_is_refused(publish, models_dir, tiny_artifacts):
    publish(tiny_artifacts, build_settings=ANNOY_BUILD)
    version = models_dir / "1"
    edit(version, lambda m: m["search"]["similar"].update(n_trees=0, method="exact"))
    with pytest.raises(InvalidVersionError, match=r"unexpected \['similar.ann'\] \(search.similar.n_trees is 0"):
        validate_version(version)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["search"]["recommend"].update(method="annoy"),
     "search.recommend.n_trees is 0 \\(no Annoy index\\), so search.recommend.method must be 'exact', got 'annoy'"),
    (lambda m: m.update(format_version=3), "search.recommend.n_trees must be >= 1, got 0"),
    (lambda m: m["search"]["similar"].update(measured_artists=-1), "search.similar.measured_artists must be >= 0"),
    (lambda m: m["search"]["similar"].update(measured_artists="many"),
     "search.similar.measured_artists must be an integer"),
])
def test_inconsistent_search_configs_are_refused(no_recommend_index, change, message):
    edit(no_recommend_index, change)
    with pytest.raises(InvalidVersionError, match=message):
        validate_version(no_recommend_index)


def test_measured_artists_is_optional_on_read(no_recommend_index):
    """Older manifests have no measured_artists: it reads as 0 (as the format-3 golden version)."""
    assert read_manifest(GOLDEN_3).recommend_search.measured_artists == 0
    edit(no_recommend_index, lambda m: m["search"]["similar"].pop("measured_artists"))
    assert validate_version(no_recommend_index).similar_search.measured_artists == 0


def test_built_indexes_must_agree_with_their_configs(tiny_artifacts):
    """The writer's check: an index where the config says none, or none where it says one."""
    built = build_indexes(tiny_artifacts, ANNOY_BUILD)
    assert built.recommend_index is not None
    no_trees = dataclasses.replace(built.recommend, n_trees=0, method="exact")
    with pytest.raises(ValueError, match="recommend config has n_trees 0 but the index is built"):
        dataclasses.replace(built, recommend=no_trees).check(tiny_artifacts)
    with pytest.raises(ValueError, match="similar config has n_trees .* but the index is missing"):
        dataclasses.replace(built, similar_index=None).check(tiny_artifacts)
