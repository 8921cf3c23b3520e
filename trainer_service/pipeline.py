"""Train, evaluate and publish one model version: the trainer's pipeline, free of gRPC.

It trains what a ``trainer_service.training_request.TrainingRequest`` names (its source,
hyperparameters and ``TrainingOptions``) and reports ``Progress`` objects from that module.

``run_training`` goes through these phases, reporting each to ``on_progress`` as a ``Progress``:

1. **loading**: the data source becomes ``Interactions`` (``DataError`` for bad data).
2. **training**: a leave-one-out test split (one random interaction held out of every user with
   at least 5; see ``trainer_service.evaluation``), then BPR, one event per epoch (mean loss,
   samples/s, and every ``validate_every`` epochs HR@10 etc. on a seeded sample of held-out
   users). With early stopping (``TrainingOptions.patience`` > 0) a validation hold-out is carved
   out of the training part the same way (``validation_split``), BPR trains on what is left, the
   per-epoch metrics are the validation hold-out's, training stops once ``patience`` validations
   in a row did not beat the best one, and the best validated epoch's factors (a snapshot taken
   when it was validated) are kept: the test hold-out never decides anything. Without early
   stopping nothing decides on the per-epoch metrics; they monitor a sample of the test hold-out
   (as before early stopping existed) and BPR trains on the whole training part.
3. **evaluating**: leave-one-out HR@10, NDCG@10 and AUC of the kept model and of the popularity
   baseline on the test hold-out (at most ``max_users`` users, a seeded sample), then the
   quality gate (``trainer_service.quality_gate``): a refusal raises ``QualityGateRefused``
   and nothing is published, unless the gate is off.
   With ``options.warm_start`` "newest" the run may start from the newest version's factors
   (``trainer_service.warm_start``: same source, same factors), for fewer epochs from a lower
   learning rate; the manifest's ``training.warm_start`` records it, and its publish reuses the
   base version's search measurement (``ranking.BaseSearch``, see ``ranking.ann_build``). Factors
   chosen from the data (``AUTO_FACTORS``) are resolved here, once the data is loaded and the base
   is known (``Hyperparameters.resolved``); from then on the run, its ``Progress.factors``, the
   manifest and the result carry the concrete count.
4. **refitting** (``final_fit="all"`` only): the model is trained again from scratch on every
   interaction (from the same start as the training: a warm start's factors or a cold one), for
   the kept model's epoch count, so production recommendations learn from every
   play; the published metrics remain those of the evaluated model.
5. **publishing**: the factors (the evaluated model's, or the refit's) are published with
   ``model_store.publish_version``, the manifest's ``training`` section recording the gate's
   decision, the epochs and the final fit. Its seen lists hold ALL of each user's interactions
   (held-out ones included, so they are never recommended back), and its listener counts come
   from all the data. Without a final fit the held-out interactions are the only data the
   published model did not learn from, and the published metrics describe it exactly.

Trainer construction is one place (``trainer_factory``; by default
``trainer_service.distributed.open_trainer`` for ``options.cluster``: ``BPRTrainer`` in this
process, or ``DistributedBPRTrainer`` over a cluster): any class with its interface (constructor ``(users, artists, weights, num_users, num_artists, hp)``,
``train_epoch(should_stop)``, ``factors()``, ``close()``, a context manager, ``.epoch``) trains.

``should_stop()`` is polled between phases and during training before every chunk of
minibatches (a fraction of a second of work); when it returns true the pipeline raises
``TrainingCancelled`` and publishes nothing. Publishing itself is not interruptible.

TensorFlow is imported only when training starts (``trainer_service.bpr``), so importing this
module is cheap.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from model_store import InvalidVersionError, Manifest, ModelArtifacts, list_versions, publish_version, read_manifest
from ranking import BaseSearch, BuildSettings, build_indexes
from model_store.format import TrainingRecord
from play_log import PlayLogError, open_play_log
from play_log.store import redact
from trainer_service.data import DataSourceSpec, Interactions, load_source, parse_source
from trainer_service.data.errors import DataError
from trainer_service.data.log_plays import read_through, with_log_plays
from trainer_service.distributed import open_trainer
from trainer_service.evaluation import (
    EvaluationReport,
    LeaveOneOutSplit,
    TrainingDiverged,
    evaluate,
    leave_one_out_split,
    sample_heldout,
    validation_split,
)
from trainer_service.hyperparameters import DENSE_DATA_FACTORS, Hyperparameters
from trainer_service.quality_gate import GateDecision, QualityGateRefused, decide
from trainer_service.training_request import Progress, TrainingOptions
from trainer_service.warm_start import (
    BaseFactors,
    TrainingRows,
    WarmSchedule,
    WarmStart,
    base_lists,
    chain_root,
    choose_base,
    warm_factors,
)

log = logging.getLogger(__name__)

# At Last.fm 360K scale scoring every held-out user against 160K artists takes minutes; a 20,000
# user sample (seeded) keeps evaluation to seconds with a standard error of ~0.003 on HR@10.
DEFAULT_MAX_EVAL_USERS = 20_000
DEFAULT_VALIDATE_EVERY = 10
DEFAULT_VALIDATION_USERS = 2_000


class TrainingCancelled(Exception):
    """``should_stop()`` returned true; nothing was published."""


@dataclass(frozen=True)
class EvaluationSettings:
    """How much evaluation a run does.

    ``max_users``: evaluate at most this many held-out users (a seeded sample; None: all).
    ``validate_every``: metrics every N epochs during training (0: never, and no early stopping):
    on the validation hold-out carved out of the training part with early stopping, else on a
    sample of the test hold-out (monitoring only).
    ``validation_users``: held-out users in each of those evaluations (a seeded sample).
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
    """What a run published: the version's manifest (metrics, hyperparameters and the
    ``training`` record), the per-epoch history, the gate's decision, and wall seconds per phase."""

    manifest: Manifest
    hyperparameters: Hyperparameters
    history: list[EpochRecord]
    seconds: dict[str, float]
    gate: GateDecision | None = None

    @property
    def version(self) -> int:
        return self.manifest.model_version

    @property
    def metrics(self) -> dict[str, float | int]:
        return dict(self.manifest.metrics)

    @property
    def training(self) -> TrainingRecord | None:
        return self.manifest.training


class Trainer(Protocol):
    """What the pipeline needs of a trainer (``trainer_service.bpr.BPRTrainer``'s interface)."""

    epoch: int

    def train_epoch(self, should_stop: Callable[[], bool] | None = None) -> Any: ...

    def factors(self) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Trainer": ...

    def __exit__(self, *exc_info) -> None: ...


#: ``trainer_factory(users, artists, weights, num_users, num_artists, hp)`` -> a ``Trainer``.
TrainerFactory = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int, Hyperparameters], Trainer]


@dataclass(frozen=True)
class FitResult:
    """A finished training loop: the kept ``factors`` (``Factors``: user, artist, bias arrays),
    the epochs run, the kept epoch, and with early stopping its validation metrics (else 0.0 and
    empty)."""

    factors: Any
    history: list[EpochRecord]
    best_epoch: int
    best_validation_hit_rate_at_10: float
    validation_metrics: dict[str, float]
    early_stopping: bool

    @property
    def epochs_trained(self) -> int:
        return self.history[-1].epoch if self.history else 0


def fit(users: np.ndarray, artists: np.ndarray, weights: np.ndarray, num_users: int, num_artists: int,
        hp: Hyperparameters, *, validation: LeaveOneOutSplit | None = None, selection: np.ndarray | None = None,
        validate_every: int = 0, patience: int = 0, emit: Callable[[Progress], None] = lambda event: None,
        should_stop: Callable[[], bool] = lambda: False, trainer_factory: TrainerFactory = open_trainer,
        phase: str = "training") -> FitResult:
    """Train ``hp.epochs`` epochs on the given interactions, validating every ``validate_every``
    epochs on ``validation``'s held-out entries ``selection``; with ``patience`` > 0 stop after
    that many validations without a better HR@10 and keep the best validated epoch's factors
    (validation then also runs after the last epoch). Emits a ``Progress(phase, epoch=...)`` per
    epoch. Raises ``TrainingCancelled`` and ``TrainingDiverged`` (a loss that is not finite)."""
    history: list[EpochRecord] = []
    validating = bool(validate_every) and validation is not None and validation.num_heldout > 0
    stopping = validating and patience > 0
    best_hr, best_epoch, best_factors, best_metrics, since_best = -1.0, 0, None, {}, 0
    with trainer_factory(users, artists, weights, num_users, num_artists, hp) as trainer:
        for _ in range(hp.epochs):
            stats = trainer.train_epoch(should_stop=should_stop)
            if stats is None:
                raise TrainingCancelled(f"training cancelled in epoch {trainer.epoch + 1}; nothing was published")
            if not np.isfinite(stats.loss):
                raise TrainingDiverged(f"training diverged in epoch {stats.epoch} (loss {stats.loss}): "
                                       f"lower the learning rate")
            history.append(EpochRecord(stats.epoch, stats.loss, stats.samples_per_second))
            metrics: dict[str, float] = {}
            last = stats.epoch == hp.epochs
            if validating and ((stats.epoch % validate_every == 0 and not last) or (stopping and last)):
                factors = trainer.factors()
                report = evaluate(factors.user_factors, factors.artist_factors, factors.artist_bias, validation,
                                  selection)
                metrics = {k: float(v) for k, v in report.as_dict().items()}
                if metrics["hit_rate_at_10"] > best_hr:
                    best_hr, best_epoch, best_metrics, since_best = metrics["hit_rate_at_10"], stats.epoch, metrics, 0
                    best_factors = factors if stopping else None
                else:
                    since_best += 1
            log.info("%s epoch %d/%d: loss %.4f, %.0f samples/s%s", phase, stats.epoch, hp.epochs, stats.loss,
                     stats.samples_per_second,
                     f", validation HR@10 {metrics['hit_rate_at_10']:.4f}" if metrics else "")
            emit(Progress(phase, epoch=stats.epoch, total_epochs=hp.epochs, loss=stats.loss,
                          samples_per_second=stats.samples_per_second, metrics=metrics,
                          best_epoch=best_epoch if stopping else 0))
            if stopping and since_best >= patience:
                log.info("early stopping after epoch %d: no better validation HR@10 than epoch %d's %.4f "
                         "in %d validations", stats.epoch, best_epoch, best_hr, since_best)
                break
        if not stopping:  # the last epoch is kept
            return FitResult(factors=trainer.factors(), history=history, best_epoch=history[-1].epoch,
                             best_validation_hit_rate_at_10=0.0, validation_metrics={}, early_stopping=False)
    return FitResult(factors=best_factors, history=history, best_epoch=best_epoch,
                     best_validation_hit_rate_at_10=best_hr, validation_metrics=best_metrics, early_stopping=True)


def newest_manifest(models_dir: str | os.PathLike) -> Manifest | None:
    """The manifest of the newest version in ``models_dir`` whose manifest reads (None: none)."""
    root = os.fspath(models_dir)
    if not os.path.isdir(root):
        return None
    for version in reversed(list_versions(root)):
        try:
            return read_manifest(os.path.join(root, str(version)))
        except (InvalidVersionError, OSError) as exc:
            log.warning("version %s has no readable manifest (%s); looking at the one before", version, exc)
    return None


Source = DataSourceSpec | Interactions | str


def _load(source: Source, data_dir: str | os.PathLike | None) -> Interactions:
    if isinstance(source, Interactions):
        return source
    spec = parse_source(source) if isinstance(source, str) else source
    return load_source(spec, data_dir)


def _read_log(events_url: str | None) -> tuple[int, list, set[str]]:
    """(the log's last position now, its plays through it, the listeners forgotten through it);
    (0, [], set()) without a log. A log that cannot be read is a ``DataError``."""
    if events_url is None:
        return 0, [], set()
    try:
        with open_play_log(events_url) as play_log:
            mark = play_log.last_position()
            plays, forgotten = read_through(play_log, mark)
    except (PlayLogError, ValueError) as exc:
        raise DataError(f"play log: {getattr(exc, 'message', exc)}") from None
    log.info("play log %s: %d plays through position %d, %d listeners forgotten", redact(events_url),
             len(plays), mark, len(forgotten))
    return mark, plays, forgotten


def _read_data(source: Source, data_dir: str | os.PathLike | None,
               events_url: str | None) -> tuple[int, Any, set[str], Interactions]:
    """``_read_log`` and ``_load`` (the log's mark, plays and forgotten listeners; the source),
    the two at once when both are read: the log's rows become Python objects under the GIL while
    the source's parsing and coding run mostly in pyarrow's and numpy's C code, which releases it
    (docs/training.md, "Training on the play log"). A log that cannot be read fails the call with
    its own error, as when the log was read first, after a source load already under way ends."""
    if events_url is None or isinstance(source, Interactions):
        mark, plays, forgotten = _read_log(events_url)
        return mark, plays, forgotten, _load(source, data_dir)
    with ThreadPoolExecutor(1, thread_name_prefix="load-source") as pool:
        loading = pool.submit(_load, source, data_dir)
        mark, plays, forgotten = _read_log(events_url)
        return mark, plays, forgotten, loading.result()


def _with_factors(emit: Callable[[Progress], None], factors: int, event: Progress) -> None:
    emit(dataclasses.replace(event, factors=factors))


def _resolve_factors(hp: Hyperparameters, interactions: Interactions, base: BaseFactors | None) -> Hyperparameters:
    """``hp`` with concrete factors (``Hyperparameters.resolved``), the choice logged."""
    resolved = hp.resolved(interactions.num_interactions, interactions.num_users,
                           base_factors=None if base is None else base.factors)
    if not hp.is_resolved:
        per_listener = interactions.num_interactions / max(1, interactions.num_users)
        why = (f"kept from the warm start's base, version {base.version}" if base is not None else
               f"{per_listener:.0f} interactions per listener: "
               + ("dense data" if resolved.factors == DENSE_DATA_FACTORS else "sparse data"))
        log.info("factors: %d, chosen from the data (%s)", resolved.factors, why)
    return resolved


def _warm_factory(custom: TrainerFactory | None, warm: WarmStart) -> TrainerFactory:
    """A trainer factory whose trainers start from ``warm``'s factors: ``custom`` given the
    keyword ``initial``, or an in-process ``BPRTrainer`` (a warm start never runs distributed)."""
    if custom is not None:
        return functools.partial(custom, initial=warm.factors)
    from trainer_service.bpr import BPRTrainer

    return functools.partial(BPRTrainer, initial=warm.factors)


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
    options: TrainingOptions = TrainingOptions(),
    build_settings: BuildSettings | None = None,
    trainer_factory: TrainerFactory | None = None,
    events_url: str | None = None,
    warm_schedule: WarmSchedule = WarmSchedule(),
) -> TrainingResult:
    """Load ``source`` (a ``DataSourceSpec``, its command-line text, or ``Interactions``), train,
    evaluate, gate and publish one version into ``models_dir``; return what was published.

    Raises ``DataError`` (bad data), ``TrainingCancelled`` (``should_stop``),
    ``QualityGateRefused`` (the gate, with ``options.gate`` "on"), ``PublishError`` (the
    volume), ``TrainingDiverged`` (a loss or factors that are not finite). Nothing is
    published unless the function returns.

    ``events_url``: also train on the play log there (``trainer_service.data.log_plays``),
    through its last position when the training starts; the version records that position.

    ``options.warm_start`` "newest": start from the newest version's factors when
    ``trainer_service.warm_start`` allows it, training as ``warm_schedule`` says (a
    ``trainer_factory`` then gets the keyword ``initial``: the starting ``Factors``).
    """
    emit = on_progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    hp = hyperparameters
    seconds: dict[str, float] = {}
    custom_factory = trainer_factory is not None
    if trainer_factory is None:
        trainer_factory = functools.partial(open_trainer, cluster=options.cluster)

    def check_stop() -> None:
        if stop():
            raise TrainingCancelled("training cancelled; nothing was published")

    check_stop()
    started = time.perf_counter()
    emit(Progress("loading", total_epochs=hp.epochs))
    mark, log_plays, forgotten, interactions = _read_data(source, data_dir, events_url)
    if events_url is not None:
        interactions = with_log_plays(interactions, log_plays, forgotten, mark)
    log.info("loaded %s: %d users, %d artists, %d interactions", interactions.source,
             interactions.num_users, interactions.num_artists, interactions.num_interactions)
    seconds["loading"] = time.perf_counter() - started
    check_stop()

    started = time.perf_counter()  # the warm start's reading and matching count as training
    split = leave_one_out_split(interactions.users, interactions.artists, interactions.weights,
                                interactions.num_users, interactions.num_artists, hp.seed)
    # Early stopping decides on a validation hold-out carved out of the training part (and trains
    # without it). Without early stopping nothing decides on the per-epoch metrics: they monitor a
    # sample of the test hold-out, and the model trains on the whole training part.
    train: LeaveOneOutSplit = split
    validation, selection = None, None
    if evaluation.validate_every and options.patience:
        validation = validation_split(split, hp.seed)
        train = validation
    elif evaluation.validate_every:
        validation = split
    if validation is not None:
        selection = sample_heldout(validation, evaluation.validation_users, hp.seed)
    newest = newest_manifest(models_dir)
    base = choose_base(options.warm_start, newest, models_dir, interactions.source, hp,
                       num_interactions=interactions.num_interactions, max_chain=warm_schedule.max_chain,
                       max_growth=warm_schedule.max_growth,
                       in_process=options.cluster is None)
    # The chain this run continues (a warm start only): its cold-started root, recorded below.
    root = chain_root(newest) if base is not None and newest is not None else None
    hp = _resolve_factors(hp, interactions, base)
    emit = functools.partial(_with_factors, emit, hp.factors)
    warm: WarmStart | None = None
    train_hp = hp
    if base is not None:
        # New rows are folded in from what the run trains on: never from a held-out row.
        rows = TrainingRows(train.train_users, train.train_artists, train.train_weights) \
            if warm_schedule.fold_in_new_rows else None
        warm = warm_factors(base, interactions.user_ids, interactions.artist_ids, hp, rows=rows)
        train_hp = warm_schedule.hyperparameters(hp)
        trainer_factory = _warm_factory(trainer_factory if custom_factory else None, warm)
        log.info("warm start from version %d: %d of %d users and %d of %d artists known, %d new users and %d new "
                 "artists folded in; %d epochs from learning rate %g", warm.version, warm.known_users,
                 interactions.num_users, warm.known_artists, interactions.num_artists, warm.folded_users,
                 warm.folded_artists, train_hp.epochs, train_hp.learning_rate)
    emit(Progress("training", total_epochs=train_hp.epochs))
    fitted = fit(train.train_users, train.train_artists, train.train_weights, split.num_users, split.num_artists,
                 train_hp, validation=validation, selection=selection, validate_every=evaluation.validate_every,
                 patience=options.patience, emit=emit, should_stop=stop, trainer_factory=trainer_factory)
    history = fitted.history
    seconds["training"] = time.perf_counter() - started
    check_stop()

    started = time.perf_counter()
    last = history[-1]
    progress = dict(epoch=last.epoch, total_epochs=train_hp.epochs, loss=last.loss,
                    samples_per_second=last.samples_per_second, best_epoch=fitted.best_epoch)
    emit(Progress("evaluating", **progress))
    factors = fitted.factors
    selection = sample_heldout(split, evaluation.max_users, hp.seed)
    report: EvaluationReport = evaluate(factors.user_factors, factors.artist_factors, factors.artist_bias,
                                        split, selection)
    metrics = report.as_dict()
    log.info("leave-one-out on %d users (epoch %d of %d): HR@10 %.4f, NDCG@10 %.4f, AUC %.4f "
             "(popularity HR@10 %.4f)", report.model.evaluated_users, fitted.best_epoch, last.epoch,
             report.model.hit_rate_at_10, report.model.ndcg_at_10, report.model.auc,
             report.popularity.hit_rate_at_10)
    gate = decide(metrics, interactions.source, newest_manifest(models_dir), mode=options.gate)
    seconds["evaluating"] = time.perf_counter() - started
    if not gate.publishes:
        log.info("quality gate: %s; nothing published", gate.reason)
        raise QualityGateRefused(gate)
    log.info("quality gate (%s): %s", options.gate, gate.reason if gate.passed else "REFUSED, published anyway: "
             + gate.reason)
    check_stop()

    refit_epochs = 0
    if options.final_fit == "all":
        started = time.perf_counter()
        refit_epochs = fitted.best_epoch
        emit(Progress("refitting", **{**progress, "total_epochs": refit_epochs, "epoch": 0}))
        refit = fit(interactions.users, interactions.artists, interactions.weights, interactions.num_users,
                    interactions.num_artists, dataclasses.replace(train_hp, epochs=refit_epochs), emit=emit,
                    should_stop=stop, trainer_factory=trainer_factory, phase="refitting")
        factors = refit.factors
        seconds["refitting"] = time.perf_counter() - started
        check_stop()

    started = time.perf_counter()
    emit(Progress("publishing", **progress, metrics=dict(metrics)))
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
        tags=interactions.tags,
    )
    record = TrainingRecord(
        gate_mode=gate.mode, gate_passed=gate.passed, gate_reason=gate.reason, gate_figures=gate.figures(),
        epochs_planned=train_hp.epochs, epochs_trained=fitted.epochs_trained, best_epoch=fitted.best_epoch,
        early_stopping_patience=options.patience if fitted.early_stopping else 0,
        best_validation_hit_rate_at_10=fitted.best_validation_hit_rate_at_10,
        final_fit=options.final_fit, final_fit_epochs=refit_epochs, cluster=options.cluster_description(),
        **({} if warm is None else dict(warm_start_from_version=warm.version, warm_start_known_users=warm.known_users,
                                        warm_start_known_artists=warm.known_artists,
                                        warm_start_folded_users=warm.folded_users,
                                        warm_start_folded_artists=warm.folded_artists,
                                        warm_start_learning_rate=train_hp.learning_rate,
                                        **({} if root is None else dict(warm_start_cold_version=root.version,
                                                                        warm_start_cold_interactions=root.interactions,
                                                                        warm_start_chain_length=root.length + 1)))),
    )
    base_search = None
    if warm is not None and newest is not None and base is not None:
        # The base is the newest version: its manifest, read above, holds the search choices the
        # publish reuses, and its lists seed this one's.
        recommend_seeds, similar_seeds = base_lists(base, interactions.user_ids, interactions.artist_ids, warm.match)
        base_search = dataclasses.replace(BaseSearch.of(newest), recommend_seeds=recommend_seeds,
                                          similar_seeds=similar_seeds)
    manifest = publish_version(
        models_dir, artifacts,
        indexes=build_indexes(artifacts, build_settings or BuildSettings(), base=base_search),
        data_source=interactions.source,
        data_fingerprint=interactions.fingerprint(),
        num_interactions=interactions.num_interactions,
        hyperparameters=hp.manifest_dict(),
        metrics=metrics,
        keep=keep,
        min_version=min_version,
        training=record,
        play_log_position=mark,
    )
    seconds["publishing"] = time.perf_counter() - started
    emit(Progress("done", **progress, metrics=dict(metrics)))
    return TrainingResult(manifest=manifest, hyperparameters=hp, history=history, seconds=seconds, gate=gate)
