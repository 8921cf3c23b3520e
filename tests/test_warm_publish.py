"""A warm publish reuses its base version's search measurement (ranking.ann_build, BaseSearch).

Known answers: a base that served exact on a catalog within 10% of this one's size leaves the
side without an Annoy index (no build, exact recorded, the base's measured_artists carried over);
past 10% the side is measured again; a base that served Annoy is built with its trees and its
settings are taken when they reach the recall target (no tuning ladder), tuned again when they
do not. Through the trainer's pipeline, a warm retrain whose base served exact publishes a
version without Annoy files, and the index service (a real server on port 0) answers Recommend,
SimilarArtists and a tag-filtered Recommend from it exactly as exact search does, also when told
to use Annoy (it serves exact then, says so once in the log and in GetIndexInfo).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import numpy as np
import pytest
from conftest import FAST_BUILD
from scripted_trainer import TINY

import ranking.ann_build as ann_build
from model_store import load_version, read_manifest
from model_store.format import RECOMMEND_INDEX_FILE, SIMILAR_INDEX_FILE, SearchConfig
from musicrec.v1 import index_pb2
from play_log import Play, open_play_log
from ranking import BaseSearch, BuildSettings, build_indexes
from tests.test_index_precomputed import clustered_artifacts
from tests.test_index_service import artist_ids, serving
from tests.test_model_store_format4 import exact_config, exact_recommend, exact_similar
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.pipeline import run_training
from trainer_service.training_request import TrainingOptions

ARTISTS = 3000
SETTINGS = BuildSettings(exact_only_up_to=0, sample_size=60, n_jobs=1, tuning_budget_s=2.0, listed_similar_index=True)


@pytest.fixture(scope="module")
def clustered():
    return clustered_artifacts(num_users=300, num_artists=ARTISTS, factors=8)


def exact_base(measured_artists: int, factors: int = 8) -> BaseSearch:
    return BaseSearch(recommend=exact_config(factors + 2, measured_artists),
                      similar=exact_config(factors, measured_artists))


def annoy_config(dims: int, n_trees: int, search_k: int, candidates_per_result: int) -> SearchConfig:
    return SearchConfig(method="annoy", metric="angular", dims=dims, n_trees=n_trees, search_k=search_k,
                        candidates_per_result=candidates_per_result, recall_at_10=0.99, recall_sample_size=60,
                        median_latency_ms=0.01, measured_artists=ARTISTS)


def no_builds(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an Annoy index was built")
    monkeypatch.setattr(ann_build, "build_angular_index", refuse)


def counted_ladders(monkeypatch) -> list[int]:
    """Count the tuning ladders run (one entry per side tuned)."""
    runs: list[int] = []
    original = ann_build._ladders

    def ladders(*args, **kwargs):
        runs.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(ann_build, "_ladders", ladders)
    return runs


def test_a_base_that_served_exact_on_about_this_catalog_leaves_out_the_indexes(clustered, monkeypatch):
    no_builds(monkeypatch)
    ladders = counted_ladders(monkeypatch)
    measured = 2800  # 3000 is 7% more: within 10%
    built = build_indexes(clustered, SETTINGS, base=exact_base(measured))
    assert built.recommend_index is None and built.similar_index is None
    assert not ladders
    for config, dims in ((built.recommend, 10), (built.similar, 8)):
        assert (config.method, config.n_trees, config.has_index, config.dims) == ("exact", 0, False, dims)
        assert config.measured_artists == measured  # carried over: drift adds up along a chain
        assert config.recall_at_10 == 1.0 and config.annoy_median_latency_ms == 0.0
        assert config.median_latency_ms == config.exact_median_latency_ms > 0
        assert config.recall_sample_size == SETTINGS.sample_size
    built.check(clustered)


@pytest.mark.parametrize("measured", [2700, 3340])  # 3000 is 11% more than 2700, 10.2% less than 3340
def test_a_base_measured_on_a_catalog_more_than_10_percent_away_is_measured_again(clustered, monkeypatch, measured):
    ladders = counted_ladders(monkeypatch)
    built = build_indexes(clustered, SETTINGS, base=exact_base(measured))
    assert built.recommend_index is not None and built.similar_index is not None
    assert built.recommend.n_trees == built.similar.n_trees == ann_build.default_n_trees(ARTISTS)
    assert built.recommend.measured_artists == built.similar.measured_artists == ARTISTS
    assert len(ladders) == 2


def required_at_this_size(monkeypatch) -> None:
    """Annoy required from ``ARTISTS`` artists, and exact search timed at 1 s a query, as on a
    catalog where Annoy is required (it serves there only when not slower than exact; on 3,000
    artists the real scan would often win)."""
    monkeypatch.setattr(ann_build, "ANNOY_REQUIRED_FROM", ARTISTS)
    monkeypatch.setattr(ann_build, "_median_ms", lambda run, queries: 1000.0)


def test_annoy_forced_or_required_measures_even_after_an_exact_base(clustered, monkeypatch):
    forced = build_indexes(clustered, dataclasses.replace(SETTINGS, method="annoy"), base=exact_base(ARTISTS))
    assert forced.recommend_index is not None and forced.recommend.method == "annoy"
    required_at_this_size(monkeypatch)
    required = build_indexes(clustered, SETTINGS, base=exact_base(ARTISTS))
    assert required.recommend_index is not None and required.recommend.method == "annoy"
    assert required.recommend.measured_artists == ARTISTS
    # Without SimilarArtists lists the side is searched on every request: Annoy required there too.
    unlisted = build_indexes(clustered, dataclasses.replace(SETTINGS, similar_n=0), base=exact_base(ARTISTS))
    assert unlisted.similar_index is not None and unlisted.similar.method == "annoy"
    assert unlisted.similar.measured_artists == ARTISTS


@pytest.mark.parametrize("required", [False, True])
@pytest.mark.parametrize("warm_from", [None, "annoy"])
def test_a_listed_similar_side_gets_no_index(clustered, monkeypatch, warm_from, required):
    """Every artist listed: SimilarArtists serves exact from no index (searched only past a
    list), below ANNOY_REQUIRED_FROM artists and from it, cold or after a base that served it with
    Annoy; Recommend keeps its index. Annoy forced, or ``listed_similar_index``, builds both."""
    if required:
        required_at_this_size(monkeypatch)
    base = None if warm_from is None else BaseSearch(recommend=annoy_config(10, 5, 500, 1),
                                                     similar=annoy_config(8, 5, 500, 1))
    default = dataclasses.replace(SETTINGS, listed_similar_index=False)
    built = build_indexes(clustered, default, base=base)
    # (where exact may serve, the real timings decide Recommend's method)
    assert built.recommend_index is not None and (built.recommend.method == "annoy" or not required)
    assert built.similar_index is None
    similar = built.similar
    assert (similar.method, similar.n_trees, similar.has_index, similar.dims) == ("exact", 0, False, 8)
    assert similar.measured_artists == ARTISTS and similar.recall_at_10 == 1.0
    assert similar.median_latency_ms == similar.exact_median_latency_ms > 0
    assert built.top.similar_top.shape == (ARTISTS, SETTINGS.similar_n)
    built.check(clustered)
    forced = build_indexes(clustered, dataclasses.replace(default, method="annoy"), base=base)
    assert forced.similar_index is not None and forced.similar.method == "annoy"
    asked = build_indexes(clustered, SETTINGS, base=base)
    assert asked.similar_index is not None and asked.similar.n_trees > 0


def test_a_base_that_served_annoy_is_reused_when_its_settings_reach_the_target(clustered, monkeypatch):
    """Its trees, and settings that visit every node (recall 1): taken without a ladder."""
    ladders = counted_ladders(monkeypatch)
    trees = 3
    base = BaseSearch(recommend=annoy_config(10, trees, trees * ARTISTS, 2), similar=annoy_config(8, trees, trees * ARTISTS, 3))
    built = build_indexes(clustered, dataclasses.replace(SETTINGS, method="annoy"), base=base)
    assert not ladders
    for config, index, cpr in ((built.recommend, built.recommend_index, 2), (built.similar, built.similar_index, 3)):
        assert (config.method, config.n_trees, config.search_k, config.candidates_per_result) == \
            ("annoy", trees, trees * ARTISTS, cpr)
        assert index.get_n_trees() == trees
        assert config.recall_at_10 >= SETTINGS.recall_target
        assert config.measured_artists == ARTISTS and config.exact_median_latency_ms > 0


def test_a_base_that_served_annoy_is_tuned_again_when_its_settings_miss_the_target(clustered, monkeypatch):
    """One tree searched for 10 nodes finds few of 3,000 artists' top 10: the full tuning runs."""
    ladders = counted_ladders(monkeypatch)
    base = BaseSearch(recommend=annoy_config(10, 1, 1, 1), similar=annoy_config(8, 1, 1, 1))
    built = build_indexes(clustered, dataclasses.replace(SETTINGS, method="annoy"), base=base)
    assert len(ladders) == 2
    for config, index in ((built.recommend, built.recommend_index), (built.similar, built.similar_index)):
        assert index.get_n_trees() == config.n_trees == 1  # the base's trees, tuned anew
        assert (config.search_k, config.candidates_per_result) != (1, 1)
        assert config.measured_artists == ARTISTS


def test_a_cold_build_records_what_it_measured_on(clustered):
    built = build_indexes(clustered, SETTINGS)
    assert built.recommend_index is not None and built.similar_index is not None
    assert built.recommend.measured_artists == built.similar.measured_artists == ARTISTS


# -- through the trainer's pipeline and a real index service -------------------------------------

HP = Hyperparameters(epochs=4, factors=8, batch_size=256)
NOW = 1_700_000_000.0


def test_a_warm_retrain_after_an_exact_base_publishes_no_annoy_files_and_serves_exact(tmp_path, models_dir, caplog):
    data = TINY.interactions
    # The base serves exact on both sides (forced, so that it does whatever the timings).
    first = run_training(data, HP, models_dir, build_settings=dataclasses.replace(FAST_BUILD, method="exact"),
                         options=TrainingOptions(gate="off", warm_start="none"))
    assert (first.manifest.recommend_search.method, first.manifest.similar_search.method) == ("exact", "exact")
    assert first.manifest.recommend_search.measured_artists == data.num_artists
    assert (models_dir / str(first.version) / RECOMMEND_INDEX_FILE).is_file()
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with open_play_log(url) as log:  # a new artist and a new listener: the catalog grows by 1 of 200
        log.record("r", [Play("listener-new", str(data.artist_ids[0]), 4, NOW),
                         Play("listener-new", "artist-new", 2, NOW), Play(str(data.user_ids[0]), "artist-new", 1, NOW)])
    second = run_training(data, HP, models_dir, build_settings=FAST_BUILD, events_url=url,
                          options=TrainingOptions(gate="off", warm_start="newest"))
    manifest = read_manifest(models_dir / str(second.version))
    assert manifest.training.warm_start_from_version == first.version
    assert manifest.num_artists == data.num_artists + 1
    recommend, similar = manifest.recommend_search, manifest.similar_search
    # Recommend reuses the base's choice (and the catalog size it was measured on); SimilarArtists,
    # every artist listed, gets no index whatever the base did (measured on this catalog).
    assert (recommend.method, recommend.n_trees, recommend.measured_artists) == ("exact", 0, data.num_artists)
    assert (similar.method, similar.n_trees, similar.measured_artists) == ("exact", 0, data.num_artists + 1)
    version_dir = models_dir / str(second.version)
    assert not (version_dir / RECOMMEND_INDEX_FILE).exists() and not (version_dir / SIMILAR_INDEX_FILE).exists()

    loaded = load_version(version_dir)
    art = loaded.artifacts
    tags = loaded.tags
    loaded.close()
    ids, artists = art.user_ids.tolist(), art.artist_ids.tolist()
    users = [ids.index("listener-new")] + list(range(0, art.num_users, 15))
    tag = int(np.flatnonzero(tags.names == "jazz")[0])
    jazz = set(tags.tag_artist_rows(tag).tolist())

    def filtered_top(user: int, k: int) -> list[str]:
        scores = art.artist_factors @ art.user_factors[user] + art.artist_bias
        seen = set(art.seen_indices[art.seen_indptr[user]:art.seen_indptr[user + 1]].tolist())
        ranked = [int(a) for a in np.lexsort((np.arange(scores.size), -scores)) if a in jazz and a not in seen]
        return [artists[a] for a in ranked[:k]]

    async def check(app, client):
        for user in users:
            response = await client.recommend(ids[user], 10)
            assert response.model_version == second.version
            assert artist_ids(response) == [artists[a] for a in exact_recommend(art, user, 10)]
            filtered = await client.index.Recommend(index_pb2.RecommendRequest(user_id=ids[user], k=5, tags=["Jazz"]))
            assert artist_ids(filtered) == filtered_top(user, 5)
        for artist in (0, 17, artists.index("artist-new")):
            similar = await client.similar(artist_id=artists[artist], k=6)
            assert artist_ids(similar) == [artists[a] for a in exact_similar(art, artist, 6)]
        info = await client.info()
        assert info.model.version == second.version
        assert (info.model.recommend_search.method, info.model.similar_search.method) == ("exact", "exact")
        assert info.model.recommend_search.n_trees == 0

    def serve(**config):
        async def main():
            async with serving(models_dir, **config) as (app, client):
                await check(app, client)
        asyncio.run(main())

    serve()
    # Told to use Annoy, the version without indexes still serves (exact), and says so once per side.
    with caplog.at_level(logging.WARNING, logger="index_service.serving_model"):
        serve(recommend_method="annoy", similar_method="annoy")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "index_service.serving_model"]
    assert sorted(warnings) == [
        f"version {second.version} has no Annoy index for recommend: serving it exact although told "
        "--recommend-method annoy",
        f"version {second.version} has no Annoy index for similar: serving it exact although told "
        "--similar-method annoy"]


# -- small catalogs: no Annoy index, cold or warm ----------------------------------------------

SMALL = dataclasses.replace(SETTINGS, exact_only_up_to=ann_build.EXACT_ONLY_UP_TO, listed_similar_index=False)


def _exact_only(built, num_artists: int) -> None:
    assert built.recommend_index is None and built.similar_index is None
    for config, dims in ((built.recommend, 10), (built.similar, 8)):
        assert (config.method, config.n_trees, config.has_index, config.dims) == ("exact", 0, False, dims)
        assert config.measured_artists == num_artists
        assert config.recall_at_10 == 1.0 and config.median_latency_ms == config.exact_median_latency_ms > 0


@pytest.mark.parametrize("warm_from", [None, "exact", "annoy"])
@pytest.mark.parametrize("listed_similar_index", [False, True])
def test_a_small_catalog_gets_no_annoy_index_cold_or_warm(clustered, monkeypatch, warm_from, listed_similar_index):
    """3,000 artists x 8 factors is under the default EXACT_ONLY_UP_TO: no index built, no ladder
    run, both sides exact, even when a SimilarArtists index is asked for every listed side; a
    base that served Annoy (a version from before the rule) changes nothing, and an exact base's
    older measured_artists is not carried over."""
    assert ARTISTS * 8 <= ann_build.EXACT_ONLY_UP_TO
    no_builds(monkeypatch)
    ladders = counted_ladders(monkeypatch)
    base = {None: None, "exact": exact_base(2800),
            "annoy": BaseSearch(recommend=annoy_config(10, 5, 500, 1), similar=annoy_config(8, 5, 500, 1))}[warm_from]
    settings = dataclasses.replace(SMALL, listed_similar_index=listed_similar_index)
    built = build_indexes(clustered, settings, base=base)
    _exact_only(built, ARTISTS)
    assert not ladders
    built.check(clustered)
    # The lists are made as at any size.
    assert built.top.recommend_top.shape == (300, SMALL.recommend_n)


@pytest.mark.parametrize("limit, indexed", [(ARTISTS * 8, False), (ARTISTS * 8 - 1, True)])
def test_the_rule_counts_artists_times_factors(clustered, limit, indexed):
    built = build_indexes(clustered, dataclasses.replace(SETTINGS, exact_only_up_to=limit))
    assert (built.recommend_index is not None, built.similar_index is not None) == (indexed, indexed)
    if indexed:
        assert built.recommend.n_trees == built.similar.n_trees == ann_build.default_n_trees(ARTISTS)
    else:
        _exact_only(built, ARTISTS)


def test_annoy_forced_builds_the_indexes_of_a_small_catalog(clustered):
    built = build_indexes(clustered, dataclasses.replace(SMALL, method="annoy", listed_similar_index=True))
    assert built.recommend_index is not None and built.similar_index is not None
    assert built.recommend.method == built.similar.method == "annoy"


def test_a_training_on_a_small_catalog_publishes_no_annoy_file(models_dir):
    """The trainer's default build settings on the tiny preset (200 artists): both searches exact,
    no index file, cold and then warm."""
    data = TINY.interactions
    for warm_start in ("none", "newest"):
        result = run_training(data, HP, models_dir, options=TrainingOptions(gate="off", warm_start=warm_start))
        version_dir = models_dir / str(result.version)
        manifest = read_manifest(version_dir)
        assert (manifest.recommend_search.method, manifest.similar_search.method) == ("exact", "exact")
        assert manifest.recommend_search.n_trees == manifest.similar_search.n_trees == 0
        assert not (version_dir / RECOMMEND_INDEX_FILE).exists() and not (version_dir / SIMILAR_INDEX_FILE).exists()
