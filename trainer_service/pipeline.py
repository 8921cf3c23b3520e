"""Train, evaluate and publish one model version: the trainer's pipeline, free of gRPC.

The two shapes a training job has from the request to the proto are defined here:
``TrainingRequest`` (what to train: a data source and every hyperparameter) and ``Progress``
(where a run is). Both are frozen and pickle, so the trainer service carries the very same
objects from its job runner through the pipe to the training process and back
(``trainer_service.worker``), and serializes them only to store a job or to answer an RPC.

``run_training`` goes through four phases, reporting each to ``on_progress`` as a ``Progress``:

1. **loading**: the data source becomes ``Interactions`` (``DataError`` for bad data).
2. **training**: a leave-one-out split (one random interaction held out of every user with at
   least 5; see ``trainer_service.evaluation``), then BPR on the training part, one event per
   epoch (mean loss, samples/s, and every ``validate_every`` epochs validation metrics on a
   seeded sample of the held-out users).
3. **evaluating**: leave-one-out HR@10, NDCG@10 and AUC of the model and of the popularity
   baseline (on at most ``max_users`` held-out users, a seeded sample).
4. **publishing**: the model trained on the training split, the very model that was evaluated,
   is published with ``model_store.publish_version``. Its seen lists hold ALL of each user's
   interactions (held-out ones included, so they are never recommended back), and its listener
   counts come from all the data. The held-out interactions (one per eligible user) are the
   only data the published model did not learn from: a deliberate trade, so the published
   metrics describe the published model exactly.

``should_stop()`` is polled between phases and during training before every chunk of
minibatches (a fraction of a second of work); when it returns true the pipeline raises
``TrainingCancelled`` and publishes nothing. Publishing itself is not interruptible.

TensorFlow is imported only when training starts (``trainer_service.bpr``), so importing this
module is cheap.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from model_store import Manifest, ModelArtifacts, publish_version
from model_store.ann_build import BuildSettings
from trainer_service.data import DataSourceSpec, Interactions, load_source, parse_source
from trainer_service.evaluation import EvaluationReport, evaluate, leave_one_out_split, sample_heldout
from trainer_service.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

PHASES = ("loading", "training", "evaluating", "publishing", "done")
# At Last.fm 360K scale scoring every held-out user against 160K artists takes minutes; a 20,000
# user sample (seeded) keeps evaluation to seconds with a standard error of ~0.003 on HR@10.
DEFAULT_MAX_EVAL_USERS = 20_000
DEFAULT_VALIDATE_EVERY = 10
DEFAULT_VALIDATION_USERS = 2_000


class TrainingCancelled(Exception):
    """``should_stop()`` returned true; nothing was published."""


@dataclass(frozen=True)
class TrainingRequest:
    """What a training job trains: the data source and the hyperparameters, every field resolved
    (mirrors ``StartTrainingRequest`` once the trainer's defaults are filled in)."""

    source: DataSourceSpec
    hyperparameters: Hyperparameters


@dataclass(frozen=True)
class Progress:
    """Where a run is (``TrainingProgress`` in trainer.proto, plus metrics). ``phase`` is one of
    ``PHASES`` ("" before the run starts); ``loss`` the mean BPR loss of the last completed
    epoch; ``samples_per_second`` that epoch's training throughput (triples per second);
    ``metrics``: validation metrics (manifest key names) on the epochs that computed them, the
    final metrics in the "publishing"/"done" events, else empty."""

    phase: str = ""
    epoch: int = 0
    total_epochs: int = 0
    loss: float = 0.0
    samples_per_second: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationSettings:
    """How much evaluation a run does.

    ``max_users``: evaluate at most this many held-out users (a seeded sample; None: all).
    ``validate_every``: validation metrics every N epochs during training (0: never).
    ``validation_users``: held-out users in each validation (a seeded sample).
    """

    max_users: int | None = DEFAULT_MAX_EVAL_USERS
    validate_every: int = DEFAULT_VALIDATE_EVERY
    validation_users: int = DEFAULT_VALIDATION_USERS

    def __post_init__(self) -> None:
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1 or None (all), got {self.max_users}")
        if self.validate_every < 0:
            raise ValueError(f"validate_every must be >= 0, got {self.validate_every}")
        if self.validation_users < 1:
            raise ValueError(f"validation_users must be >= 1, got {self.validation_users}")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch as trained: mean loss per triple, throughput (triples per second)."""

    epoch: int
    loss: float
    samples_per_second: float


@dataclass(frozen=True)
class TrainingResult:
    """What a run published: the version's manifest (metrics and hyperparameters as recorded),
    the per-epoch history, and wall seconds per phase."""

    manifest: Manifest
    hyperparameters: Hyperparameters
    history: list[EpochRecord]
    seconds: dict[str, float]

    @property
    def version(self) -> int:
        return self.manifest.model_version

    @property
    def metrics(self) -> dict[str, float | int]:
        return dict(self.manifest.metrics)


Source = DataSourceSpec | Interactions | str


def _load(source: Source, data_dir: str | os.PathLike | None) -> Interactions:
    if isinstance(source, Interactions):
        return source
    spec = parse_source(source) if isinstance(source, str) else source
    return load_source(spec, data_dir)


def run_training(
    source: Source,
    hyperparameters: Hyperparameters,
    models_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    keep: int = 3,
    min_version: int = 1,
    evaluation: EvaluationSettings = EvaluationSettings(),
    build_settings: BuildSettings | None = None,
) -> TrainingResult:
    """Load ``source`` (a ``DataSourceSpec``, its command-line text, or ``Interactions``), train,
    evaluate and publish one version into ``models_dir``; return what was published.

    Raises ``DataError`` (bad data), ``TrainingCancelled`` (``should_stop``), ``PublishError``
    (the volume), ``ValueError`` (data too small to train on, or a diverged model). Nothing is
    published unless the function returns.
    """
    emit = on_progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    hp = hyperparameters
    seconds: dict[str, float] = {}

    def check_stop() -> None:
        if stop():
            raise TrainingCancelled("training cancelled; nothing was published")

    check_stop()
    started = time.perf_counter()
    emit(Progress("loading", total_epochs=hp.epochs))
    interactions = _load(source, data_dir)
    log.info("loaded %s: %d users, %d artists, %d interactions", interactions.source,
             interactions.num_users, interactions.num_artists, interactions.num_interactions)
    seconds["loading"] = time.perf_counter() - started
    check_stop()

    started = time.perf_counter()
    emit(Progress("training", total_epochs=hp.epochs))
    split = leave_one_out_split(interactions.users, interactions.artists, interactions.weights,
                                interactions.num_users, interactions.num_artists, hp.seed)
    validation = sample_heldout(split, evaluation.validation_users, hp.seed)
    history: list[EpochRecord] = []
    from trainer_service.bpr import BPRTrainer  # TensorFlow loads here, not at import time

    with BPRTrainer(split.train_users, split.train_artists, split.train_weights,
                    split.num_users, split.num_artists, hp) as trainer:
        for _ in range(hp.epochs):
            stats = trainer.train_epoch(should_stop=stop)
            if stats is None:
                raise TrainingCancelled(f"training cancelled in epoch {trainer.epoch + 1}; nothing was published")
            if not np.isfinite(stats.loss):
                raise ValueError(f"training diverged in epoch {stats.epoch} (loss {stats.loss}): "
                                 f"lower the learning rate")
            history.append(EpochRecord(stats.epoch, stats.loss, stats.samples_per_second))
            metrics: dict[str, float] = {}
            every = evaluation.validate_every
            if every and stats.epoch % every == 0 and stats.epoch < hp.epochs and validation.size:
                factors = trainer.factors()
                report = evaluate(factors.user_factors, factors.artist_factors, factors.artist_bias, split,
                                  validation)
                metrics = {k: float(v) for k, v in report.as_dict().items()}
            log.info("epoch %d/%d: loss %.4f, %.0f samples/s%s", stats.epoch, hp.epochs, stats.loss,
                     stats.samples_per_second,
                     f", validation HR@10 {metrics['hit_rate_at_10']:.4f}" if metrics else "")
            emit(Progress("training", epoch=stats.epoch, total_epochs=hp.epochs, loss=stats.loss,
                               samples_per_second=stats.samples_per_second, metrics=metrics))
        factors = trainer.factors()
    seconds["training"] = time.perf_counter() - started
    check_stop()

    started = time.perf_counter()
    last = history[-1]
    emit(Progress("evaluating", epoch=last.epoch, total_epochs=hp.epochs, loss=last.loss,
                       samples_per_second=last.samples_per_second))
    selection = sample_heldout(split, evaluation.max_users, hp.seed)
    report: EvaluationReport = evaluate(factors.user_factors, factors.artist_factors, factors.artist_bias,
                                        split, selection)
    metrics = report.as_dict()
    log.info("leave-one-out on %d users: HR@10 %.4f, NDCG@10 %.4f, AUC %.4f (popularity HR@10 %.4f)",
             report.model.evaluated_users, report.model.hit_rate_at_10, report.model.ndcg_at_10,
             report.model.auc, report.popularity.hit_rate_at_10)
    seconds["evaluating"] = time.perf_counter() - started
    check_stop()

    started = time.perf_counter()
    emit(Progress("publishing", epoch=last.epoch, total_epochs=hp.epochs, loss=last.loss,
                       samples_per_second=last.samples_per_second, metrics=dict(metrics)))
    seen_indptr, seen_indices = interactions.csr()
    artifacts = ModelArtifacts(
        user_ids=interactions.user_ids,
        user_factors=factors.user_factors,
        artist_ids=interactions.artist_ids,
        artist_names=interactions.artist_names,
        artist_factors=factors.artist_factors,
        artist_bias=factors.artist_bias,
        artist_listeners=interactions.listeners_per_artist(),
        seen_indptr=seen_indptr,
        seen_indices=seen_indices,
    )
    publish_kwargs = {} if build_settings is None else {"build_settings": build_settings}
    manifest = publish_version(
        models_dir, artifacts,
        data_source=interactions.source,
        data_fingerprint=interactions.fingerprint(),
        num_interactions=interactions.num_interactions,
        hyperparameters=hp.manifest_dict(),
        metrics=metrics,
        keep=keep,
        min_version=min_version,
        **publish_kwargs,
    )
    seconds["publishing"] = time.perf_counter() - started
    emit(Progress("done", epoch=last.epoch, total_epochs=hp.epochs, loss=last.loss,
                       samples_per_second=last.samples_per_second, metrics=dict(metrics)))
    return TrainingResult(manifest=manifest, hyperparameters=hp, history=history, seconds=seconds)
