"""The train-evaluate-publish pipeline: a valid version with the data's seen lists, plain-data
progress events in phase order, cancellation that publishes nothing, clear data errors, no
TensorFlow at import time; early stopping that keeps the best epoch, the quality gate and the
final fit (with a scripted trainer whose answers are known: tests/scripted_trainer.py)."""

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
from scripted_trainer import TINY, ScriptedTrainer, scripted
from trainer_service.evaluation import leave_one_out_split, validation_split
from trainer_service.pipeline import EvaluationSettings, TrainingCancelled, run_training
from trainer_service.quality_gate import QualityGateRefused
from trainer_service.training_request import Progress, TrainingOptions

REPO = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"hit_rate_at_10", "ndcg_at_10", "auc", "evaluated_users", "popularity_hit_rate_at_10",
               "popularity_ndcg_at_10", "popularity_auc"}
FAST = Hyperparameters(epochs=4, factors=8, batch_size=256)
# Four epochs of 8 factors do not beat popularity on the tiny preset: tests of other things turn
# the gate off (the gate has its own tests below).
OFF = TrainingOptions(gate="off")


@pytest.fixture(scope="module")
def tiny():
    return generate("tiny", seed=0).interactions


def test_publishes_a_valid_version_with_metrics_and_the_data(tiny, models_dir):
    events: list[Progress] = []
    result = run_training(tiny, FAST, models_dir, on_progress=events.append, build_settings=FAST_BUILD,
                          evaluation=EvaluationSettings(validate_every=2), options=OFF)
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
                 evaluation=EvaluationSettings(validate_every=2, validation_users=50), options=OFF)
    phases = [e.phase for e in events]
    assert phases == ["loading", "training", "training", "training", "training", "training", "evaluating",
                      "publishing", "done"]
    epochs = [e for e in events if e.phase == "training" and e.epoch]
    assert [e.epoch for e in epochs] == [1, 2, 3, 4] and all(e.total_epochs == 4 for e in events)
    assert all(e.loss > 0 and e.samples_per_second > 0 for e in epochs)
    # Validation every 2 epochs, except the last (without early stopping the final evaluation follows).
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
                          evaluation=EvaluationSettings(max_users=40, validate_every=0), options=OFF)
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
        run_training(tiny, FAST, models_dir, should_stop=should_stop, build_settings=FAST_BUILD, options=OFF)
    assert not models_dir.exists() or list_versions(models_dir) == []


def test_keep_and_min_version_are_passed_to_the_store(tiny, models_dir):
    hp = FAST.with_overrides(epochs=1)
    first = run_training(tiny, hp, models_dir, build_settings=FAST_BUILD, min_version=7, options=OFF)
    second = run_training(tiny, hp, models_dir, build_settings=FAST_BUILD, keep=1, options=OFF)
    assert (first.version, second.version) == (7, 8)
    assert list_versions(models_dir) == [8]


def test_loads_a_source_spec_and_its_text(models_dir):
    hp = FAST.with_overrides(epochs=1)
    by_spec = run_training(DataSourceSpec.synthetic("tiny", seed=3), hp, models_dir, build_settings=FAST_BUILD,
                           options=OFF)
    by_text = run_training("synthetic:tiny:seed=3", hp, models_dir, build_settings=FAST_BUILD, options=OFF)
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


# -- early stopping, the quality gate, the final fit -------------------------------------------------

EVERY_EPOCH = EvaluationSettings(validate_every=1)


def test_early_stopping_keeps_the_best_epochs_factors(models_dir):
    """Validation HR@10 by epoch: anti (about 0.03), genre (about 0.5), then anti again: with
    patience 2 training stops after epoch 4 and publishes epoch 2's factors."""
    events: list[Progress] = []
    hp = FAST.with_overrides(epochs=8)
    result = run_training(TINY.interactions, hp, models_dir, build_settings=FAST_BUILD, evaluation=EVERY_EPOCH,
                          options=TrainingOptions(patience=2), on_progress=events.append,
                          trainer_factory=scripted(["anti", "genre"] + ["anti"] * 6))
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    training = result.training
    assert (training.best_epoch, training.epochs_trained, training.epochs_planned) == (2, 4, 8)
    assert training.early_stopping_patience == 2 and training.best_validation_hit_rate_at_10 > 0.4
    assert result.metrics["hit_rate_at_10"] > 0.4  # the genre model was evaluated and gated
    loaded = load_version(models_dir / str(result.version))
    try:
        assert np.all(loaded.artifacts.user_factors[:, -1] == 2.0)  # epoch 2's snapshot
    finally:
        loaded.close()
    epochs = [e for e in events if e.phase == "training" and e.epoch]
    assert [e.best_epoch for e in epochs] == [1, 2, 2, 2]
    assert events[-1].phase == "done" and events[-1].best_epoch == 2


def test_without_early_stopping_every_epoch_is_trained_and_the_last_kept(models_dir):
    result = run_training(TINY.interactions, FAST.with_overrides(epochs=3), models_dir, build_settings=FAST_BUILD,
                          evaluation=EVERY_EPOCH, options=TrainingOptions(patience=0),
                          trainer_factory=scripted(["anti", "anti", "genre"]))
    assert (result.training.best_epoch, result.training.epochs_trained) == (3, 3)
    assert result.training.early_stopping_patience == 0


def test_validation_is_carved_out_of_the_training_part_never_the_test_hold_out(tiny):
    test = leave_one_out_split(tiny.users, tiny.artists, tiny.weights, tiny.num_users, tiny.num_artists, 5)
    validation = validation_split(test, 5)
    pairs = lambda users, artists: set(zip(users.tolist(), artists.tolist()))  # noqa: E731
    held_test = pairs(test.heldout_users, test.heldout_artists)
    held_validation = pairs(validation.heldout_users, validation.heldout_artists)
    train = pairs(test.train_users, test.train_artists)
    assert held_validation and held_validation <= train and not held_validation & held_test
    assert pairs(validation.train_users, validation.train_artists) == train - held_validation
    assert validation_split(test, 5).heldout_artists.tolist() == validation.heldout_artists.tolist()  # seeded


def test_the_gate_refuses_a_model_below_popularity_and_publishes_nothing(models_dir):
    with pytest.raises(QualityGateRefused) as refused:
        run_training(TINY.interactions, FAST.with_overrides(epochs=1), models_dir, build_settings=FAST_BUILD,
                     trainer_factory=scripted(["anti"]))
    decision = refused.value.decision
    assert decision.hit_rate_at_10 < decision.popularity_hit_rate_at_10
    message = str(refused.value)
    assert f"{decision.hit_rate_at_10:.4f}" in message and f"{decision.popularity_hit_rate_at_10:.4f}" in message
    assert not models_dir.exists() or list_versions(models_dir) == []


def test_gate_off_publishes_and_the_manifest_records_the_objection(models_dir):
    result = run_training(TINY.interactions, FAST.with_overrides(epochs=1), models_dir, build_settings=FAST_BUILD,
                          options=TrainingOptions(gate="off"), trainer_factory=scripted(["anti"]))
    assert list_versions(models_dir) == [result.version]
    training = load_version(models_dir / str(result.version), verify_checksums=False)
    try:
        record = training.manifest.training
    finally:
        training.close()
    assert record.gate_mode == "off" and not record.gate_passed and "not above" in record.gate_reason
    assert record.gate_figures["hit_rate_at_10"] == result.metrics["hit_rate_at_10"]
    assert record.gate_figures["popularity_hit_rate_at_10"] == result.metrics["popularity_hit_rate_at_10"]


def test_the_gate_compares_with_the_newest_version_of_the_same_kind(models_dir):
    hp = FAST.with_overrides(epochs=1)
    good = run_training(TINY.interactions, hp, models_dir, build_settings=FAST_BUILD, trainer_factory=scripted(["genre"]))
    assert good.training.gate_passed and "previous_version" not in good.training.gate_figures
    with pytest.raises(QualityGateRefused) as refused:  # above popularity, but > 10% below version 1
        run_training(TINY.interactions, hp, models_dir, build_settings=FAST_BUILD, trainer_factory=scripted(["half"]))
    decision = refused.value.decision
    assert decision.previous_version == good.version and decision.popularity_hit_rate_at_10 < decision.hit_rate_at_10
    assert f"{good.metrics['hit_rate_at_10']:.4f}" in str(refused.value)
    assert f"{decision.hit_rate_at_10:.4f}" in str(refused.value)
    assert list_versions(models_dir) == [good.version]
    # Other synthetic data of the same size is the same kind of source: compared again.
    other_seed = generate("tiny", seed=4).interactions
    with pytest.raises(QualityGateRefused, match="popularity"):
        run_training(other_seed, hp, models_dir, build_settings=FAST_BUILD, trainer_factory=scripted(["anti"]))
    again = run_training(TINY.interactions, hp, models_dir, build_settings=FAST_BUILD,
                         trainer_factory=scripted(["genre"]))
    assert again.training.gate_figures["previous_version"] == good.version


def test_final_fit_all_retrains_on_every_interaction_for_the_kept_epochs(models_dir):
    ScriptedTrainer.made.clear()
    hp = FAST.with_overrides(epochs=6)
    events: list[Progress] = []
    result = run_training(TINY.interactions, hp, models_dir, build_settings=FAST_BUILD, evaluation=EVERY_EPOCH,
                          options=TrainingOptions(patience=1, final_fit="all"), on_progress=events.append,
                          trainer_factory=scripted(["popular", "genre", "anti", "genre", "genre", "genre"]))
    first, refit = ScriptedTrainer.made
    assert refit == {"interactions": TINY.interactions.num_interactions, "epochs": 2}
    assert first["epochs"] == 6 and first["interactions"] < refit["interactions"]
    training = result.training
    assert (training.best_epoch, training.epochs_trained, training.final_fit, training.final_fit_epochs) == (2, 3, "all", 2)
    loaded = load_version(models_dir / str(result.version), verify_checksums=False)
    try:
        assert np.all(loaded.artifacts.user_factors[:, -1] == 2.0)  # the refit's last (second) epoch
    finally:
        loaded.close()
    assert [e.phase for e in events if e.phase == "refitting" and e.epoch] == ["refitting", "refitting"]
    phases = list(dict.fromkeys(e.phase for e in events))
    assert phases == ["loading", "training", "evaluating", "refitting", "publishing", "done"]


def test_a_refused_model_is_not_refit(models_dir):
    ScriptedTrainer.made.clear()
    with pytest.raises(QualityGateRefused):
        run_training(TINY.interactions, FAST.with_overrides(epochs=1), models_dir, build_settings=FAST_BUILD,
                     options=TrainingOptions(final_fit="all"), trainer_factory=scripted(["anti"]))
    assert len(ScriptedTrainer.made) == 1


def test_early_stopping_is_deterministic_for_a_seed(tiny, tmp_path):
    """Real BPR with validation every epoch and early stopping: the same seed gives the same
    kept epoch and the same factors."""
    hp = FAST.with_overrides(epochs=6, learning_rate=0.5, seed=4)
    runs = [run_training(tiny, hp, tmp_path / f"m{i}", build_settings=FAST_BUILD, evaluation=EVERY_EPOCH,
                         options=TrainingOptions(gate="off", patience=2)) for i in range(2)]
    assert runs[0].training == runs[1].training and runs[0].metrics == runs[1].metrics
    factors = []
    for i, run in enumerate(runs):
        loaded = load_version(tmp_path / f"m{i}" / str(run.version), verify_checksums=False)
        try:
            factors.append(np.array(loaded.artifacts.user_factors))
        finally:
            loaded.close()
    assert np.array_equal(factors[0], factors[1])
