"""The train-evaluate-publish pipeline: a valid version with the data's seen lists, plain-data
progress events in phase order, cancellation that publishes nothing, clear data errors, and no
TensorFlow at import time."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_BUILD

from model_store import list_versions, load_version
from trainer_service.data import DataError, DataSourceSpec, generate
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.pipeline import EvaluationSettings, Progress, TrainingCancelled, run_training

REPO = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"hit_rate_at_10", "ndcg_at_10", "auc", "evaluated_users", "popularity_hit_rate_at_10",
               "popularity_ndcg_at_10", "popularity_auc"}
FAST = Hyperparameters(epochs=4, factors=8, batch_size=256)


@pytest.fixture(scope="module")
def tiny():
    return generate("tiny", seed=0).interactions


def test_publishes_a_valid_version_with_metrics_and_the_data(tiny, models_dir):
    events: list[Progress] = []
    result = run_training(tiny, FAST, models_dir, on_progress=events.append, build_settings=FAST_BUILD,
                          evaluation=EvaluationSettings(validate_every=2))
    assert result.version == 1 and list_versions(models_dir) == [1]
    loaded = load_version(models_dir / "1")
    try:
        manifest = loaded.manifest
        assert set(METRIC_KEYS) <= set(manifest.metrics)
        assert manifest.metrics == result.metrics
        assert 0.0 <= manifest.metrics["hit_rate_at_10"] <= 1.0 and 0.5 < manifest.metrics["auc"] <= 1.0
        assert manifest.metrics["evaluated_users"] == np.count_nonzero(np.bincount(tiny.users) >= 5)
        assert manifest.hyperparameters["factors"] == 8 and manifest.hyperparameters["epochs"] == 4
        assert manifest.hyperparameters["log_plays_positives"] == 1
        assert manifest.data_fingerprint == tiny.fingerprint()
        assert manifest.data_source == tiny.source
        assert manifest.num_interactions == tiny.num_interactions
        artifacts = loaded.artifacts
        # Seen lists hold every interaction, the held-out ones included; listeners come from all data.
        indptr, indices = tiny.csr()
        assert np.array_equal(artifacts.seen_indptr, indptr) and np.array_equal(artifacts.seen_indices, indices)
        assert np.array_equal(artifacts.artist_listeners, tiny.listeners_per_artist())
        assert np.array_equal(artifacts.user_ids, tiny.user_ids)
        assert artifacts.user_factors.shape == (tiny.num_users, 8)
    finally:
        loaded.close()
    assert [e.epoch for e in result.history] == [1, 2, 3, 4]


def test_progress_events_are_plain_data_in_phase_order(tiny, models_dir):
    events: list[Progress] = []
    run_training(tiny, FAST, models_dir, on_progress=events.append, build_settings=FAST_BUILD,
                 evaluation=EvaluationSettings(validate_every=2, validation_users=50))
    phases = [e.phase for e in events]
    assert phases == ["loading", "training", "training", "training", "training", "training", "evaluating",
                      "publishing", "done"]
    epochs = [e for e in events if e.phase == "training" and e.epoch]
    assert [e.epoch for e in epochs] == [1, 2, 3, 4] and all(e.total_epochs == 4 for e in events)
    assert all(e.loss > 0 and e.samples_per_second > 0 for e in epochs)
    # Validation every 2 epochs, except the last (the final evaluation follows).
    assert [bool(e.metrics) for e in epochs] == [False, True, False, False]
    assert epochs[1].metrics["evaluated_users"] == 50
    assert set(events[-1].metrics) >= METRIC_KEYS
    for event in events:
        assert pickle.loads(pickle.dumps(event)) == event  # it crosses the worker pipe as it is
        data = dataclasses.asdict(event)
        assert all(isinstance(v, (str, int, float)) for k, v in data.items() if k != "metrics")
        assert all(isinstance(k, str) and type(v) in (int, float) for k, v in data["metrics"].items())


def test_eval_users_caps_the_evaluation(tiny, models_dir):
    result = run_training(tiny, FAST.with_overrides(epochs=1), models_dir, build_settings=FAST_BUILD,
                          evaluation=EvaluationSettings(max_users=40, validate_every=0))
    assert result.metrics["evaluated_users"] == 40


@pytest.mark.parametrize("stop_after", [0, 1, 3, 7])
def test_cancellation_publishes_nothing(tiny, models_dir, stop_after):
    """Stop before loading (0 polls answered no), after loading (1), in the second epoch (3: one
    poll per chunk, one chunk per epoch here), or after evaluating, before publishing (7)."""
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > stop_after

    with pytest.raises(TrainingCancelled):
        run_training(tiny, FAST, models_dir, should_stop=should_stop, build_settings=FAST_BUILD)
    assert not models_dir.exists() or list_versions(models_dir) == []


def test_keep_and_min_version_are_passed_to_the_store(tiny, models_dir):
    hp = FAST.with_overrides(epochs=1)
    first = run_training(tiny, hp, models_dir, build_settings=FAST_BUILD, min_version=7)
    second = run_training(tiny, hp, models_dir, build_settings=FAST_BUILD, keep=1)
    assert (first.version, second.version) == (7, 8)
    assert list_versions(models_dir) == [8]


def test_loads_a_source_spec_and_its_text(models_dir):
    hp = FAST.with_overrides(epochs=1)
    by_spec = run_training(DataSourceSpec.synthetic("tiny", seed=3), hp, models_dir, build_settings=FAST_BUILD)
    by_text = run_training("synthetic:tiny:seed=3", hp, models_dir, build_settings=FAST_BUILD)
    assert by_spec.manifest.data_fingerprint == by_text.manifest.data_fingerprint
    assert by_spec.manifest.metrics == by_text.manifest.metrics  # same data, same seed: same model


def test_bad_data_raises_data_error_and_publishes_nothing(tmp_path, models_dir):
    (tmp_path / "plays.csv").write_text("user_id,artist_id\nu1\n")
    with pytest.raises(DataError):
        run_training(f"table:{tmp_path / 'plays.csv'}", FAST, models_dir, build_settings=FAST_BUILD)
    with pytest.raises(DataError):
        run_training("hetrec:no-such-dir", FAST, models_dir, data_dir=tmp_path, build_settings=FAST_BUILD)
    assert not models_dir.exists() or list_versions(models_dir) == []


def test_importing_the_pipeline_and_cli_does_not_load_tensorflow():
    code = ("import sys, trainer_service.pipeline, trainer_service.cli, trainer_service.hyperparameters; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True).stdout.strip()
    assert out == "False"
