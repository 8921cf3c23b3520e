"""Training on a source plus the play log (trainer_service.data.log_plays, run_training's
events_url): known answers on a hand-made table and a real SQLite log."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import FAST_BUILD

from model_store import load_version
from play_log import Play, open_play_log
from trainer_service.data import DataError, generate
from trainer_service.data.log_plays import read_through, with_log_plays
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.pipeline import run_training
from trainer_service.training_request import TrainingOptions

NOW = time.time()
FAST = Hyperparameters(epochs=2, factors=8, batch_size=256)


def table(path, rows) -> str:
    path.write_text("user_id,artist_id,plays\n" + "".join(f"{u},{a},{p}\n" for u, a, p in rows))
    return f"table:{path}:weight=plays"


def test_log_plays_join_the_source_and_forgotten_listeners_leave_it(tmp_path):
    """Source: u1 a1 2, u1 a2 1, u2 a1 4. Log: u1 a1 3 (summed with the source's 2), new listener
    n1 plays new artist zz, u2 forgotten, then u2 plays a2 again (a new history, kept)."""
    from trainer_service.data import load_source, parse_source

    data = load_source(parse_source(table(tmp_path / "plays.csv", [("u1", "a1", 2), ("u1", "a2", 1),
                                                                   ("u2", "a1", 4)])))
    with open_play_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        log.record("", [Play("u1", "a1", 3, NOW), Play("n1", "zz", 1, NOW), Play("u2", "a2", 7, NOW)])
        log.forget_user("u2")  # deletes u2's log play at position 3
        log.record("", [Play("u2", "a2", 2, NOW)])
        log.record("", [Play("n1", "a1", 9, NOW)])  # after the mark below: not read
        plays, forgotten = read_through(log, 5)
    assert list(zip(plays.positions, plays.user_ids, plays.artist_ids)) == [
        (1, "u1", "a1"), (2, "n1", "zz"), (5, "u2", "a2")]
    assert forgotten == {"u2"}
    merged = with_log_plays(data, plays, forgotten, 5)
    rows = {(merged.user_ids[u], merged.artist_ids[a]): float(w)
            for u, a, w in zip(merged.users, merged.artists, merged.weights)}
    assert rows == {("u1", "a1"): 5.0, ("u1", "a2"): 1.0, ("n1", "zz"): 1.0, ("u2", "a2"): 2.0}
    assert "play log through position 5" in merged.source


def test_a_training_over_source_and_log_publishes_the_mark_and_the_new_rows(tmp_path, models_dir):
    data = generate("tiny", seed=0).interactions
    url = f"sqlite:///{tmp_path / 'log.db'}"
    known_user, known_artist = str(data.user_ids[0]), str(data.artist_ids[0])
    with open_play_log(url) as log:
        log.record("r1", [Play("listener-new", known_artist, 4, NOW), Play("listener-new", "artist-new", 2, NOW),
                          Play(known_user, "artist-new", 1, NOW)])
        log.forget_user(str(data.user_ids[1]))
        mark = log.last_position()
    result = run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=TrainingOptions(gate="off"),
                          events_url=url)
    manifest = result.manifest
    assert manifest.play_log_position == mark == 4
    loaded = load_version(models_dir / str(result.version))
    try:
        users = set(loaded.artifacts.user_ids.tolist())
        assert "listener-new" in users and str(data.user_ids[1]) not in users
        assert "artist-new" in set(loaded.artifacts.artist_ids.tolist())
        assert manifest.num_users == data.num_users  # one new, one forgotten
        assert manifest.num_artists == data.num_artists + 1
        forgotten_rows = int(np.sum(data.users == 1))
        assert manifest.num_interactions == data.num_interactions - forgotten_rows + 3
    finally:
        loaded.close()


def test_an_unreachable_log_is_a_data_error_and_nothing_is_published(tmp_path, models_dir):
    data = generate("tiny", seed=0).interactions
    with pytest.raises(DataError, match="play log"):
        run_training(data, FAST, models_dir, build_settings=FAST_BUILD, options=TrainingOptions(gate="off"),
                     events_url="mysql://nowhere/db")
    assert not models_dir.exists()


def test_without_a_log_the_version_is_trained_through_nothing(models_dir):
    result = run_training(generate("tiny", seed=0).interactions, FAST, models_dir, build_settings=FAST_BUILD,
                          options=TrainingOptions(gate="off"))
    assert result.manifest.play_log_position == 0


def test_a_file_source_and_the_log_read_at_once_give_the_merged_rows(tmp_path, models_dir):
    """The source file and the log are read concurrently (pipeline._read_data): the version holds
    exactly the merged rows of the first test's known answer."""
    source = table(tmp_path / "plays.csv", [("u1", "a1", 2), ("u1", "a2", 1), ("u2", "a1", 4), ("u3", "a2", 1),
                                            ("u3", "a1", 1)])
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with open_play_log(url) as log:
        log.record("", [Play("u1", "a1", 3, NOW), Play("n1", "zz", 1, NOW), Play("n1", "a1", 1, NOW)])
    result = run_training(source, FAST, models_dir, build_settings=FAST_BUILD, options=TrainingOptions(gate="off"),
                          events_url=url)
    assert result.manifest.play_log_position == 3
    assert result.manifest.num_interactions == 7  # 5 source rows, u1 a1 summed, 2 new
    loaded = load_version(models_dir / str(result.version))
    try:
        assert sorted(loaded.artifacts.user_ids.tolist()) == ["n1", "u1", "u2", "u3"]
        assert sorted(loaded.artifacts.artist_ids.tolist()) == ["a1", "a2", "zz"]
    finally:
        loaded.close()


def test_with_a_file_source_an_unreadable_log_or_source_fails_with_its_own_error(tmp_path, models_dir):
    source = table(tmp_path / "plays.csv", [("u1", "a1", 2), ("u2", "a2", 1)])
    with pytest.raises(DataError, match="play log"):
        run_training(source, FAST, models_dir, build_settings=FAST_BUILD, options=TrainingOptions(gate="off"),
                     events_url="mysql://nowhere/db")
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with open_play_log(url) as log:
        log.record("", [Play("u1", "a2", 1, NOW)])
    with pytest.raises(DataError, match="missing.csv") as error:
        run_training(f"table:{tmp_path / 'missing.csv'}:weight=plays", FAST, models_dir, build_settings=FAST_BUILD,
                     options=TrainingOptions(gate="off"), events_url=url)
    assert "play log" not in str(error.value)
    assert not models_dir.exists()
