"""``trainer_service.tune``: the search space, a search that never reads the test hold-out (a test
that poisons it), and ``python -m trainer_service tune`` end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_BUILD
from scripted_trainer import TINY, ScriptedTrainer

from model_store import list_versions, read_manifest
from trainer_service import pipeline, tune
from trainer_service.data import generate
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.pipeline import EvaluationSettings, TrainingOptions, run_training

REPO = Path(__file__).resolve().parents[1]
BASE = Hyperparameters(epochs=20, factors=8, batch_size=256, seed=2)
SETTINGS = EvaluationSettings(validate_every=5, validation_users=100)


class Poison:
    """Stands in for the test hold-out's arrays: any use at all raises."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("the test hold-out was read")

    __getattr__ = __getitem__ = __array__ = __len__ = __iter__ = __int__ = __index__ = __bool__ = _refuse
    __eq__ = __lt__ = __gt__ = __add__ = __mul__ = _refuse
    __hash__ = None


def poisoned(split_function):
    """``leave_one_out_split`` whose test split's held-out users and artists are ``Poison``."""

    def split(*args, **kwargs):
        result = split_function(*args, **kwargs)
        return dataclasses.replace(result, heldout_users=Poison(), heldout_artists=Poison())

    return split


@pytest.fixture(scope="module")
def tiny():
    return generate("tiny", seed=1).interactions


def test_candidates_start_from_the_base_and_stay_in_the_space():
    drawn = tune.candidates(BASE, 12)
    assert drawn[0] == BASE and len(drawn) == 12
    assert drawn == tune.candidates(BASE, 12)  # seeded by the base seed
    for hp in drawn[1:]:
        assert tune.LEARNING_RATES[0] <= hp.learning_rate <= tune.LEARNING_RATES[1]
        assert tune.REGULARIZATIONS[0] <= hp.regularization <= tune.REGULARIZATIONS[1]
        assert hp.factors in tune.FACTORS and hp.epochs in tune.EPOCHS
        assert (hp.seed, hp.batch_size) == (BASE.seed, BASE.batch_size)  # untuned fields kept
    assert len({(hp.learning_rate, hp.factors) for hp in drawn}) > 6
    for budget in (0, tune.MAX_BUDGET + 1):
        with pytest.raises(ValueError, match="budget"):
            tune.candidates(BASE, budget)


def test_the_poison_works_on_the_pipeline(tiny, models_dir, monkeypatch):
    """Training reads the test hold-out (to evaluate): the poison makes that fail."""
    monkeypatch.setattr(pipeline, "leave_one_out_split", poisoned(pipeline.leave_one_out_split))
    with pytest.raises(AssertionError, match="test hold-out was read"):
        run_training(tiny, BASE.with_overrides(epochs=1), models_dir, build_settings=FAST_BUILD,
                     evaluation=SETTINGS, options=TrainingOptions(gate="off"))


def test_tune_never_reads_the_test_hold_out(tiny, monkeypatch):
    """Real BPR, 3 trials on 2 validation splits: the same table with the test hold-out poisoned
    as without."""
    budget = 3
    clean = tune.tune(tiny, BASE, budget, splits=2, evaluation=SETTINGS, patience=1)
    monkeypatch.setattr(tune, "leave_one_out_split", poisoned(tune.leave_one_out_split))
    dirty = tune.tune(tiny, BASE, budget, splits=2, evaluation=SETTINGS, patience=1)
    strip = lambda result: [dataclasses.replace(t, seconds=0.0) for t in result.trials]  # noqa: E731
    assert strip(dirty) == strip(clean)
    assert dirty.best.number == clean.best.number and dirty.settings == clean.settings
    assert [t.number for t in clean.trials] == [1, 2, 3] and clean.trials[0].hyperparameters == BASE
    best = clean.best
    assert best.hit_rate_at_10 == max(t.hit_rate_at_10 for t in clean.trials)
    assert clean.settings.epochs == best.best_epoch and clean.settings.learning_rate == best.hyperparameters.learning_rate
    assert all(t.validation["evaluated_users"] == 100 for t in clean.trials)
    for t in clean.trials:
        assert len(t.split_hit_rates) == 2 and t.hit_rate_at_10 == pytest.approx(sum(t.split_hit_rates) / 2)


def test_validation_seeds_start_at_the_base_seed_and_wrap():
    assert tune.validation_seeds(7, 3) == [7, 8, 9]
    assert tune.validation_seeds(2**63 - 1, 2) == [2**63 - 1, -(2**63)]


def test_the_winner_is_the_best_mean_over_the_splits_not_the_best_first_split():
    """Known answers from a scripted trainer: trial 1 (the base) is the right model ("genre") on
    the first validation split only and far below popularity ("anti") on the others; trial 2 is
    "half" right everywhere. One split picks trial 1; the mean over 5 picks trial 2."""
    made: list[tuple[float, int, int]] = []

    def factory(users, artists, weights, num_users, num_artists, hp):
        first = tune.validation_seeds(BASE.seed, 1)[0]
        kind = ("genre" if hp.seed == first else "anti") if hp.learning_rate == BASE.learning_rate else "half"
        made.append((hp.learning_rate, hp.seed, int(np.asarray(users).size)))
        return ScriptedTrainer(users, artists, weights, num_users, num_artists, hp, [kind] * hp.epochs,
                               TINY.user_genres, TINY.artist_genres)

    data = TINY.interactions
    one = tune.tune(data, BASE, 2, splits=1, evaluation=SETTINGS, patience=1, trainer_factory=factory)
    assert one.best.number == 1 and one.trials[0].hit_rate_at_10 > one.trials[1].hit_rate_at_10
    made.clear()
    five = tune.tune(data, BASE, 2, splits=5, evaluation=SETTINGS, patience=1, trainer_factory=factory)
    base, other = five.trials
    assert five.best.number == 2 and five.settings.learning_rate == other.hyperparameters.learning_rate
    # Each trial trained once per split, with that split's seed (the base seed first).
    seeds = tune.validation_seeds(BASE.seed, 5)
    assert [seed for _, seed, _ in made] == seeds * 2
    genre, anti = base.split_hit_rates[0], base.split_hit_rates[1:]
    assert genre == one.trials[0].hit_rate_at_10  # the first split is the one-split search's split
    assert genre > 0.3 and max(anti) < 0.05 and min(other.split_hit_rates) > 0.25
    assert base.hit_rate_at_10 == pytest.approx(sum(base.split_hit_rates) / 5)
    assert other.hit_rate_at_10 > base.hit_rate_at_10
    assert len(set(other.split_hit_rates)) > 1  # five different validation hold-outs


def test_tune_checks_the_number_of_splits(tiny):
    for splits in (0, tune.MAX_SPLITS + 1):
        with pytest.raises(ValueError, match="splits"):
            tune.tune(tiny, BASE, 1, splits=splits, evaluation=SETTINGS)


def test_tune_needs_validation(tiny):
    with pytest.raises(ValueError, match="validation"):
        tune.tune(tiny, BASE, 1, evaluation=EvaluationSettings(validate_every=0))


def test_tune_command_prints_a_table_and_publishes_the_best(tmp_path):
    models = tmp_path / "models"
    args = [sys.executable, "-m", "trainer_service", "tune", "--data", "synthetic:tiny:seed=1", "--budget", "2", "--splits", "2",
            "--epochs", "20", "--factors", "8", "--batch-size", "256", "--validate-every", "5",
            "--validation-users", "100", "--patience", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    table = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert table.returncode == 0, table.stderr
    assert "val HR@10" in table.stdout and "best: trial" in table.stdout and "train flags: --learning-rate" in table.stdout
    assert "trial 2/2" in table.stderr
    published = subprocess.run([*args, "--json", "--quiet", "--publish", "--models-dir", str(models), "--gate", "off"],
                               cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert published.returncode == 0, published.stderr
    result = json.loads(published.stdout)
    assert len(result["trials"]) == 2 and result["best"]["trial"] in (1, 2)
    assert all(len(t["split_hit_rates"]) == 2 for t in result["trials"])
    assert list_versions(models) == [1]
    manifest = read_manifest(models / "1")
    assert manifest.hyperparameters["epochs"] == result["best"]["hyperparameters"]["epochs"]
    assert manifest.training.gate_mode == "off"
    assert "published version 1" in published.stderr
