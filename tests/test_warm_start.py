"""Warm start (trainer_service.warm_start, run_training's options.warm_start): known answers on
the tiny synthetic preset, a real published version on disk and a real SQLite play log."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from conftest import FAST_BUILD
from scripted_trainer import GENRES, TINY, ScriptedTrainer

from model_store import list_versions, load_version, read_manifest
from play_log import Play, open_play_log
from trainer_service.factors import initial_factors
from trainer_service.data import Interactions
from trainer_service.data.log_plays import with_log_plays
from trainer_service.cli import format_result
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.pipeline import run_training
from trainer_service.quality_gate import QualityGateRefused
from trainer_service.training_request import TrainingOptions
from trainer_service.warm_start import (
    ChainRoot,
    TrainingRows,
    WarmSchedule,
    chain_root,
    choose_base,
    fold_in_new_rows,
    read_base,
    same_source,
    warm_factors,
)

NOW = time.time()
FAST = Hyperparameters(epochs=4, factors=8, batch_size=256)
COLD = TrainingOptions(gate="off", warm_start="none")
WARM = TrainingOptions(gate="off", warm_start="newest")


def _log_plays(data: Interactions) -> list[Play]:
    """A new listener of a known and a new artist, and a known listener of the new artist."""
    return [Play("listener-new", str(data.artist_ids[0]), 4, NOW), Play("listener-new", "artist-new", 2, NOW),
            Play(str(data.user_ids[0]), "artist-new", 1, NOW)]


def test_a_warm_start_copies_the_published_rows_and_starts_new_ones_as_a_cold_run(tmp_path, models_dir):
    """Zero epochs: the starting factors themselves. Known users and artists (by id) start from
    the version's rows and biases; the new listener and artist from ``initial_factors``."""
    data = TINY.interactions
    first = run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=COLD)
    with open_play_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        log.record("r", _log_plays(data))
        log.forget_user(str(data.user_ids[1]))
        mark = log.last_position()
        plays = [change for change in log.changes_since(0, 100) if hasattr(change, "play")]
        forgotten = log.forgotten_users(mark)
    grown = with_log_plays(data, plays, forgotten, mark)
    base = read_base(models_dir / str(first.version))
    start = warm_factors(base, grown.user_ids, grown.artist_ids, FAST)
    published = load_version(models_dir / str(first.version))
    try:
        old_users = {u: i for i, u in enumerate(published.artifacts.user_ids.tolist())}
        old_artists = {a: i for i, a in enumerate(published.artifacts.artist_ids.tolist())}
        cold = initial_factors(grown.num_users, grown.num_artists, FAST)
        for row, user in enumerate(grown.user_ids.tolist()):
            expected = (published.artifacts.user_factors[old_users[user]] if user in old_users
                        else cold.user_factors[row])
            np.testing.assert_array_equal(start.factors.user_factors[row], expected)
        for row, artist in enumerate(grown.artist_ids.tolist()):
            if artist in old_artists:
                np.testing.assert_array_equal(start.factors.artist_factors[row],
                                              published.artifacts.artist_factors[old_artists[artist]])
                assert start.factors.artist_bias[row] == published.artifacts.artist_bias[old_artists[artist]]
            else:
                np.testing.assert_array_equal(start.factors.artist_factors[row], cold.artist_factors[row])
                assert start.factors.artist_bias[row] == 0.0
    finally:
        published.close()
    assert "listener-new" in grown.user_ids.tolist() and "artist-new" in grown.artist_ids.tolist()
    assert start.version == first.version
    assert start.known_users == data.num_users - 1  # the forgotten listener is not carried over
    assert start.known_artists == data.num_artists


def test_a_warm_retrain_records_its_base_and_leaves_out_a_forgotten_listener(tmp_path, models_dir):
    data = TINY.interactions
    url = f"sqlite:///{tmp_path / 'log.db'}"
    first = run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=COLD)
    forgotten = str(data.user_ids[1])
    with open_play_log(url) as log:
        log.record("r", _log_plays(data))
        log.forget_user(forgotten)
    second = run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=WARM, events_url=url,
                          warm_schedule=WarmSchedule(epoch_fraction=0.5, learning_rate_scale=0.25))
    training = read_manifest(models_dir / str(second.version)).training
    assert training.warm_start_from_version == first.version
    assert training.warm_start_known_users == data.num_users - 1
    assert training.warm_start_known_artists == data.num_artists
    # The new listener from the known artist they played; the new artist from its listeners.
    assert (training.warm_start_folded_users, training.warm_start_folded_artists) == (1, 1)
    assert training.warm_start_learning_rate == pytest.approx(FAST.learning_rate * 0.25)
    assert training.epochs_planned == training.epochs_trained == 2
    # The gate compares with version 1 too: the same source, the log's position aside.
    assert training.gate_figures["previous_version"] == first.version
    # The manifest records the requested hyperparameters; the warm ones are in training.
    assert second.manifest.hyperparameters["learning_rate"] == pytest.approx(FAST.learning_rate)
    loaded = load_version(models_dir / str(second.version))
    try:
        users = loaded.artifacts.user_ids.tolist()
        assert forgotten not in users and "listener-new" in users
    finally:
        loaded.close()
    assert read_manifest(models_dir / str(first.version)).training.warm_start_from_version == 0


def test_warm_start_none_another_source_or_other_factors_start_cold(tmp_path, models_dir):
    data = TINY.interactions
    run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=COLD)
    newest = read_manifest(models_dir / "1")
    n = data.num_interactions
    assert choose_base("none", newest, models_dir, data.source, FAST, num_interactions=n) is None
    assert choose_base("newest", None, models_dir, data.source, FAST, num_interactions=n) is None
    assert choose_base("newest", newest, models_dir, "table plays.csv", FAST, num_interactions=n) is None
    assert choose_base("newest", newest, models_dir, data.source, Hyperparameters(factors=16),
                       num_interactions=n) is None
    assert choose_base("newest", newest, models_dir, data.source, FAST, num_interactions=n, in_process=False) is None
    assert choose_base("newest", newest, models_dir, data.source, FAST, num_interactions=n).version == 1
    other_seed = data.source.replace("seed 0", "seed 1")
    assert other_seed != data.source and not same_source(data.source, other_seed)
    assert same_source(f"{data.source} + play log through position 3", f"{data.source} + play log through position 9")
    with pytest.raises(ValueError, match="warm_start"):
        TrainingOptions(warm_start="oldest")


def _chain(tmp_path, models_dir, caplog, schedule: WarmSchedule, steps: tuple[int, ...]) -> tuple[dict, str, object]:
    """A cold version 1 of the tiny preset, then a warm-start training after each step's new
    listeners (one play each) in a real play log: per version, (interactions, warm from,
    cold root, root's interactions, place in the chain), and what the warm start logged."""
    data = TINY.interactions
    url = f"sqlite:///{tmp_path / 'log.db'}"
    first = run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=COLD)
    assert first.manifest.training.warm_start_cold_version == 0  # a cold version records no root
    listened = str(data.artist_ids[0])
    versions, logged, result = {}, [], None
    with open_play_log(url) as log:
        for step, new_listeners in enumerate(steps):
            log.record(f"step-{step}", [Play(f"chain-{step}-{i}", listened, 1, NOW) for i in range(new_listeners)])
            caplog.clear()
            with caplog.at_level("INFO", logger="trainer_service.warm_start"):
                result = run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=WARM, events_url=url,
                                      warm_schedule=schedule)
            logged.append(caplog.text)
            training = read_manifest(models_dir / str(result.version)).training
            versions[result.version] = (result.manifest.num_interactions, training.warm_start_from_version,
                                        training.warm_start_cold_version, training.warm_start_cold_interactions,
                                        training.warm_start_chain_length)
    return versions, "".join(logged), result


def test_a_chain_of_warm_starts_records_its_cold_root_and_ends_once_grown_too_far(tmp_path, models_dir, caplog):
    """Known answers: warm starts are allowed up to N + 3 interactions over the chain's cold root
    (max_growth 3.5 / N, chains of any length); the run at N + 4 starts cold and roots the next chain."""
    n = TINY.interactions.num_interactions
    schedule = WarmSchedule(epoch_fraction=0.5, learning_rate_scale=0.25, max_chain=100, max_growth=3.5 / n)
    versions, logged, last = _chain(tmp_path, models_dir, caplog, schedule, (2, 1, 1, 1))
    assert versions == {
        2: (n + 2, 1, 1, n, 1),  # warm from the cold version 1: its root
        3: (n + 3, 2, 1, n, 2),  # warm from version 2, the same root
        4: (n + 4, 0, 0, 0, 0),  # 4 more than the root's N: cold, a new root
        5: (n + 5, 4, 4, n + 4, 1),
    }
    assert (f"cold start: {n + 4:,} interactions are {4 / n:.1%} more than the {n:,} of version 1, the cold training "
            f"this chain of warm starts began from (at most {3.5 / n:.1%} more warm-start)") in logged
    assert f"warm start 1 in a row since cold version 4 ({n + 4:,} interactions)" in format_result(last)


def test_a_chain_of_warm_starts_ends_after_max_chain_in_a_row(tmp_path, models_dir, caplog):
    """Known answers: at most 2 warm starts in a row (growth unbounded); the third run is cold."""
    n = TINY.interactions.num_interactions
    schedule = WarmSchedule(epoch_fraction=0.5, learning_rate_scale=0.25, max_chain=2, max_growth=10.0)
    versions, logged, _ = _chain(tmp_path, models_dir, caplog, schedule, (1, 1, 1, 1))
    assert versions == {
        2: (n + 1, 1, 1, n, 1),
        3: (n + 2, 2, 1, n, 2),
        4: (n + 3, 0, 0, 0, 0),
        5: (n + 4, 4, 4, n + 3, 1),
    }
    assert "cold start: version 3 is warm start 2 in a row since the cold version 1 (at most 2 in a row)" in logged


def test_a_warm_base_without_a_recorded_root_starts_cold(tmp_path, models_dir):
    """A warm version written before roots were recorded: its chain's growth is unknown."""
    data = TINY.interactions
    run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=COLD)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with open_play_log(url) as log:
        log.record("r", _log_plays(data))
    second = run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=WARM, events_url=url,
                          warm_schedule=WarmSchedule(epoch_fraction=0.5, learning_rate_scale=0.25))
    newest = read_manifest(models_dir / str(second.version))
    assert newest.training.warm_start_cold_version == 1
    older = dataclasses.replace(newest, training=dataclasses.replace(newest.training, warm_start_cold_version=0,
                                                                     warm_start_cold_interactions=0,
                                                                     warm_start_chain_length=0))
    assert chain_root(older) is None
    assert chain_root(newest) == ChainRoot(1, data.num_interactions, 1)
    assert choose_base("newest", older, models_dir, newest.data_source, FAST,
                       num_interactions=newest.num_interactions) is None
    assert choose_base("newest", newest, models_dir, newest.data_source, FAST,
                       num_interactions=newest.num_interactions).version == second.version


def test_the_gate_refuses_a_worse_warm_started_model_and_nothing_is_published(models_dir):
    """Version 1 ranks by the planted genres; the warm retrain starts from it (the factory gets
    its factors) but ends on "least popular first": refused, only version 1 exists."""
    hp = Hyperparameters(epochs=4, factors=GENRES + 1, batch_size=256)
    data = TINY.interactions
    starts = []

    def factory(users, artists, weights, num_users, num_artists, hp, initial=None):
        starts.append(initial)
        script = ["genre"] * hp.epochs if initial is None else ["anti"] * hp.epochs
        return ScriptedTrainer(users, artists, weights, num_users, num_artists, hp, script, TINY.user_genres,
                               TINY.artist_genres)

    first = run_training(data, hp, models_dir, build_settings=FAST_BUILD, trainer_factory=factory,
                         options=TrainingOptions(warm_start="newest"))
    assert first.training.warm_start_from_version == 0 and starts == [None]
    with pytest.raises(QualityGateRefused, match="popularity"):
        run_training(data, hp, models_dir, build_settings=FAST_BUILD, trainer_factory=factory,
                     options=TrainingOptions(warm_start="newest"))
    assert starts[1] is not None
    published = load_version(models_dir / str(first.version))
    try:
        np.testing.assert_array_equal(starts[1].user_factors, published.artifacts.user_factors)
    finally:
        published.close()
    assert list_versions(models_dir) == [first.version]


def test_new_rows_are_folded_in_from_the_known_rows_they_touch():
    """Known users 0 (norm 2, two interactions) and 1 (norm 4, one); known artists 0 and 1 (biases
    1 and 3, norm 1, two listeners each); new user 2 played both known artists (1 and e-1 plays:
    log1p weights log 2 and 1); new artist 2 is heard by known user 0 and by new user 3, who
    played nothing else (only known artists seed a user: user 3 keeps its start)."""
    user_factors = np.array([[2, 0], [0, 4], [9, 9], [7, 7]], dtype=np.float32)
    artist_factors = np.array([[1, 0], [0, 1], [5, 5]], dtype=np.float32)
    artist_bias = np.array([1.0, 3.0, 0.0], dtype=np.float32)
    known_users, known_artists = np.array([True, True, False, False]), np.array([True, True, False])
    rows = TrainingRows(users=np.array([0, 0, 1, 2, 2, 3]), artists=np.array([0, 2, 1, 0, 1, 2]),
                        weights=np.array([1.0, 1.0, 1.0, 1.0, np.e - 1, 1.0]))
    folded = fold_in_new_rows(user_factors, artist_factors, artist_bias, known_users, known_artists, rows)
    # User 2: direction log(2) * [1, 0] + 1 * [0, 1]; the norm of the known user with as many
    # interactions (user 0: 2).
    direction = np.array([np.log(2), 1.0]) / np.hypot(np.log(2), 1.0)
    np.testing.assert_allclose(user_factors[2], 2 * direction, rtol=1e-6)
    np.testing.assert_array_equal(user_factors[3], [7, 7])  # only the new artist: its start kept
    # Artist 2: heard by user 0 (known) and user 3 (new, not folded: unusable): direction of
    # user 0 at the norm of the known artists with two listeners (1).
    np.testing.assert_allclose(artist_factors[2], [1, 0], rtol=1e-6)
    assert artist_bias[2] == pytest.approx(2.0)  # the median bias of the known artists
    np.testing.assert_array_equal(user_factors[:2], [[2, 0], [0, 4]])  # known rows untouched
    np.testing.assert_array_equal(artist_factors[:2], [[1, 0], [0, 1]])
    assert folded == (1, 1)


def test_a_warm_retrain_folds_in_new_rows_from_the_training_part_only(tmp_path, models_dir):
    """The new listener's start comes from the known artists they played, never from their
    held-out play; the warm start says how many rows were folded in."""
    data = TINY.interactions
    run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=COLD)
    with open_play_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        log.record("r", _log_plays(data))
        mark = log.last_position()
        plays, forgotten = log.plays_through(mark), log.forgotten_users(mark)
    grown = with_log_plays(data, plays, forgotten, mark)
    base = read_base(models_dir / "1")
    rows = TrainingRows(grown.users, grown.artists, grown.weights)
    start = warm_factors(base, grown.user_ids, grown.artist_ids, FAST, rows=rows)
    assert (start.folded_users, start.folded_artists) == (1, 1)
    new_user = grown.user_ids.tolist().index("listener-new")
    known_artist = int(np.flatnonzero(base.artist_ids == data.artist_ids[0])[0])
    direction = start.factors.user_factors[new_user] / np.linalg.norm(start.factors.user_factors[new_user])
    expected = base.artist_factors[known_artist] / np.linalg.norm(base.artist_factors[known_artist])
    np.testing.assert_allclose(direction, expected, rtol=1e-5, atol=1e-6)
