"""A bounded hyperparameter search on the validation hold-out: ``python -m trainer_service tune``.

Random search with early stopping (the usual strong baseline for a handful of continuous
knobs): trial 1 is the base hyperparameters themselves, their factors resolved on the data as a
training resolves them (``Hyperparameters.resolved``: the search never ends worse, on
validation, than what ``train`` would do); the other ``budget - 1`` trials draw

- ``learning_rate`` log-uniformly in [0.02, 0.3],
- ``regularization`` log-uniformly in [0.0003, 0.03],
- ``factors`` from (32, 64, 96, 128),
- ``epochs`` (the most a trial may train) from (20, 40, 60, 100),

from a generator seeded by the base seed. Every trial trains exactly as ``run_training`` does
with validation on: on the training part of the test split minus the validation hold-out
(``trainer_service.evaluation.validation_split``), validating every ``validate_every`` epochs
and stopping after ``patience`` (at least 1; default 3) validations without a better HR@10. The epoch count is thereby
tuned too: a trial's result is its best validated epoch. The test hold-out is carved out first
(so the chosen model never trains on it and ``--publish``'s evaluation stays fair) and then
never read: only its training part reaches ``validation_split``.

The winner is the trial with the best validation HR@10 (ties: the earlier trial); its settings
are its hyperparameters with ``epochs`` set to its best epoch.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer_service.data import DataError, Interactions
from trainer_service.distributed import open_trainer
from trainer_service.evaluation import leave_one_out_split, sample_heldout, validation_split
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.pipeline import EvaluationSettings, TrainerFactory, fit
from trainer_service.sampling import seed_sequence
from trainer_service.training_request import Progress

LEARNING_RATES = (0.02, 0.3)
REGULARIZATIONS = (0.0003, 0.03)
FACTORS = (32, 64, 96, 128)
EPOCHS = (20, 40, 60, 100)
MAX_BUDGET = 200
DEFAULT_SPLITS = 5
MAX_SPLITS = 20
# Early stopping is how a trial's epoch count is tuned, so tune always uses it (``train``'s
# default is off: see docs/training.md).
TUNE_PATIENCE = 3
_TUNE_STREAM = 6


@dataclass(frozen=True)
class Trial:
    """One trained candidate: its ``hyperparameters`` (``epochs``: the most it could train), the
    epoch early stopping kept (the median over its splits), the most epochs it ran on a split, its
    validation metrics at the kept epochs (manifest key names; means over the splits), each split's
    validation HR@10 (``split_hit_rates``, in ``validation_seeds`` order) and its wall seconds (all
    splits)."""

    number: int
    hyperparameters: Hyperparameters
    best_epoch: int
    epochs_trained: int
    validation: dict[str, float]
    seconds: float
    split_hit_rates: tuple[float, ...] = ()

    @property
    def hit_rate_at_10(self) -> float:
        return float(self.validation.get("hit_rate_at_10", 0.0))


@dataclass(frozen=True)
class TuneResult:
    """Every trial in order, the best one, and its settings (``epochs`` = its best epoch)."""

    trials: list[Trial]
    best: Trial

    @property
    def settings(self) -> Hyperparameters:
        return dataclasses.replace(self.best.hyperparameters, epochs=max(1, self.best.best_epoch))


def candidates(base: Hyperparameters, budget: int) -> list[Hyperparameters]:
    """``budget`` hyperparameter sets: ``base`` first, then random draws (seeded by ``base.seed``)."""
    _check_budget(budget)
    rng = np.random.default_rng(seed_sequence(base.seed, _TUNE_STREAM))

    def log_uniform(bounds: tuple[float, float]) -> float:
        return float(round(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))), 5))

    drawn = [base]
    for _ in range(budget - 1):
        drawn.append(dataclasses.replace(
            base, learning_rate=log_uniform(LEARNING_RATES), regularization=log_uniform(REGULARIZATIONS),
            factors=int(rng.choice(FACTORS)), epochs=int(rng.choice(EPOCHS))))
    return drawn


def _check_budget(budget: int) -> None:
    if not 1 <= budget <= MAX_BUDGET:
        raise ValueError(f"budget must be in [1, {MAX_BUDGET}], got {budget}")


def check_settings(budget: int, evaluation: EvaluationSettings, splits: int = DEFAULT_SPLITS) -> None:
    """ValueError for a budget or a number of splits out of range, or no validation
    (``validate_every`` 0)."""
    _check_budget(budget)
    if not 1 <= splits <= MAX_SPLITS:
        raise ValueError(f"splits must be in [1, {MAX_SPLITS}], got {splits}")
    if not evaluation.validate_every:
        raise ValueError("tune needs validation (validate_every > 0)")


def validation_seeds(seed: int, splits: int) -> list[int]:
    """The seeds of the ``splits`` validation hold-outs (and of their trainings): ``seed``, then
    ``seed + 1``, ... (wrapped into the signed 64-bit range). Each seeds its own random streams."""
    return [((seed + k + 2**63) % 2**64) - 2**63 for k in range(splits)]


def _mean_metrics(per_split: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(m) for m in per_split)) if per_split else set()
    means = {key: statistics.fmean(float(m[key]) for m in per_split) for key in sorted(keys)}
    if "evaluated_users" in means:
        means["evaluated_users"] = int(round(means["evaluated_users"]))
    return means


def tune(interactions: Interactions, base: Hyperparameters, budget: int, *, splits: int = DEFAULT_SPLITS,
         evaluation: EvaluationSettings = EvaluationSettings(), patience: int = TUNE_PATIENCE,
         on_trial: Callable[[Trial], None] | None = None, on_progress: Callable[[Progress], None] | None = None,
         should_stop: Callable[[], bool] | None = None, trainer_factory: TrainerFactory = open_trainer) -> TuneResult:
    """Run ``budget`` trials (see the module docstring), each on ``splits`` validation hold-outs
    of ``interactions``; ``on_trial`` gets each finished trial, ``on_progress`` every training's
    epoch events. Raises ``ValueError`` (see ``check_settings``), ``DataError`` (no user with
    enough interactions for validation), ``TrainingCancelled`` (``should_stop``)."""
    check_settings(budget, evaluation, splits)
    drawn = candidates(base.resolved(interactions.num_interactions, interactions.num_users), budget)
    test = leave_one_out_split(interactions.users, interactions.artists, interactions.weights,
                               interactions.num_users, interactions.num_artists, base.seed)
    seeds = validation_seeds(base.seed, splits)
    validations = [validation_split(test, seed) for seed in seeds]  # read test.train_* only
    del test
    if validations[0].num_heldout == 0:
        raise DataError("no user has enough interactions for a validation hold-out")
    selections = [sample_heldout(v, evaluation.validation_users, seed) for v, seed in zip(validations, seeds)]
    trials: list[Trial] = []
    for number, hp in enumerate(drawn, start=1):
        started = time.perf_counter()
        fits = [fit(v.train_users, v.train_artists, v.train_weights, v.num_users, v.num_artists,
                    dataclasses.replace(hp, seed=seed), validation=v, selection=selection,
                    validate_every=evaluation.validate_every, patience=max(patience, 1),
                    emit=on_progress or (lambda event: None), should_stop=should_stop or (lambda: False),
                    trainer_factory=trainer_factory)
                for v, selection, seed in zip(validations, selections, seeds)]
        trial = Trial(number=number, hyperparameters=hp,
                      best_epoch=statistics.median_low(f.best_epoch for f in fits),
                      epochs_trained=max(f.epochs_trained for f in fits),
                      validation=_mean_metrics([dict(f.validation_metrics) for f in fits]),
                      seconds=time.perf_counter() - started,
                      split_hit_rates=tuple(float(f.validation_metrics.get("hit_rate_at_10", 0.0)) for f in fits))
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
    best = max(trials, key=lambda t: (t.hit_rate_at_10, -t.number))
    return TuneResult(trials=trials, best=best)


def format_trials(trials: list[Trial], best: Trial | None = None) -> str:
    """The trials as a table (one row each; the best marked with *): validation HR@10 and NDCG@10
    are means over the splits, beside the lowest and highest split's HR@10."""
    lines = [f"{'#':>3}  {'learning_rate':>13}  {'regularization':>14}  {'factors':>7}  {'max epochs':>10}  "
             f"{'best epoch':>10}  {'val HR@10':>9}  {'split min..max':>14}  {'val NDCG@10':>11}  {'seconds':>7}"]
    for t in trials:
        hp = t.hyperparameters
        mark = "*" if best is not None and t.number == best.number else " "
        rates = t.split_hit_rates or (t.hit_rate_at_10,)
        spread = f"{min(rates):.4f}..{max(rates):.4f}"
        lines.append(f"{t.number:>3}{mark} {hp.learning_rate:>13.5g}  {hp.regularization:>14.5g}  {hp.factors:>7}  "
                     f"{hp.epochs:>10}  {t.best_epoch:>10}  {t.hit_rate_at_10:>9.4f}  {spread:>14}  "
                     f"{t.validation.get('ndcg_at_10', 0.0):>11.4f}  {t.seconds:>7.1f}")
    return "\n".join(lines)


def settings_flags(hp: Hyperparameters) -> str:
    """The tuned fields as ``train`` flags."""
    return (f"--learning-rate {hp.learning_rate:g} --regularization {hp.regularization:g} "
            f"--factors {hp.factors} --epochs {hp.epochs}")
