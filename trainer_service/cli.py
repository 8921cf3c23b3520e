"""The trainer's command line: ``python -m trainer_service COMMAND``.

Each subcommand is one ``add_*_command(subparsers)`` function in ``COMMANDS`` that adds its
parser and sets ``handler`` (``handler(args) -> exit status``); adding a subcommand is adding
one such function. Heavy imports (TensorFlow, gRPC) happen inside handlers, so ``--help`` and
argument errors are fast.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from trainer_service.hyperparameters import (
    LEARNING_RATE_SCHEDULES,
    NEGATIVE_SAMPLING,
    OPTIMIZERS,
    POSITIVE_SAMPLING,
    PRESETS,
    Hyperparameters,
)

# Exit statuses of ``train``: 0 published; 1 bad data, publish failure or training failure (one
# line on stderr); 2 bad arguments (argparse); 3 refused by the quality gate (one line with both
# figures; nothing published); 130 interrupted (nothing published).
EXIT_FAILED = 1
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130

_DEFAULTS = Hyperparameters()


def _data_formats_help() -> str:
    """The data-source syntax and file formats, as the data layer documents them (the docstrings
    of ``trainer_service.data.sources``, which ``parse_source`` refers to, and ``loaders``)."""
    from trainer_service.data import loaders, sources

    syntax = inspect.getdoc(sources) or ""
    syntax = syntax[syntax.find("::") + 2:] if "::" in syntax else syntax
    formats = inspect.getdoc(loaders) or ""
    formats = formats[formats.find("Formats"):] if "Formats" in formats else formats
    return ("data sources (--data SOURCE):\n" + syntax.rstrip() + "\n\n" + formats).replace("``", "")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _eval_users(text: str) -> int | None:
    if text.strip().lower() in ("all", "0"):
        return None
    return _positive_int(text)


# Hyperparameter flags: (field, type, help). Defaults shown are the "default" preset's.
_HYPERPARAMETER_FLAGS: tuple[tuple[str, Callable, str], ...] = (
    ("factors", int, "latent factors per user and artist; 0: chosen from the data (96 where listeners average "
                     "at least 100 interactions, 64 otherwise; a warm start keeps its base version's)"),
    ("epochs", int, "passes over the training interactions (N sampled triples each)"),
    ("learning_rate", float, "step size (per triple for sgd; minibatch updates are summed)"),
    ("regularization", float, "L2 strength on the factors of each triple (loss has reg/2 * |theta|^2)"),
    ("bias_regularization", float, "L2 strength on the artist biases of each triple"),
    ("batch_size", int, "triples per gradient step"),
    ("seed", int, "seed of initialization, sampling and the evaluation split"),
    ("negative_sampling", str, "uniform: an artist the user never listened to (Rendle et al.); "
                               "popularity: the notebook's, by listeners, own artists not excluded"),
    ("positive_sampling", str, "uniform: a bootstrap over the interactions; log_plays: weighted by "
                               "log(1 + plays)"),
    ("optimizer", str, "sgd, or adagrad (Keras' Adagrad, as the notebook used)"),
    ("init_std", float, "standard deviation of the normal initialization of the factors"),
    ("negative_candidates", int, "negatives drawn per triple; the one the model scores highest is trained on "
                                 "(rank-aware sampling; 1: plain BPR)"),
    ("learning_rate_schedule", str, "how the step size moves over the epochs from --learning-rate: constant, "
                                    "linear or cosine decay"),
)
_CHOICES = {"negative_sampling": NEGATIVE_SAMPLING, "positive_sampling": POSITIVE_SAMPLING,
            "optimizer": OPTIMIZERS, "learning_rate_schedule": LEARNING_RATE_SCHEDULES}


def add_train_command(subparsers) -> None:
    """``train``: train on a data source, evaluate, publish one version, print it."""
    parser = subparsers.add_parser(
        "train",
        help="train, evaluate and publish one model version",
        description=textwrap.fill(
            "Train a BPR model on a data source, evaluate it leave-one-out (HR@10, NDCG@10, AUC, "
            "beside a popularity baseline), publish it as the next version in --models-dir, and "
            "print the version and its metrics. The published model is the one evaluated: "
            "trained without one held-out interaction per user with >= 5 interactions (unless "
            "--final-fit all). A model that fails the quality gate is not published. Exit "
            "status: 0 published; 1 bad data, publish failure or failed training (one line on "
            "stderr); 2 bad arguments; 3 refused by the quality gate (one line with both "
            "figures); 130 interrupted (nothing published).", width=96),
        epilog=_data_formats_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="SOURCE",
                        help="what to train on (syntax below), e.g. hetrec:lastfm-2k or synthetic:small")
    parser.add_argument("--models-dir", required=True, type=Path, help="models volume to publish the version to")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="directory file sources are relative to and confined to (default: none, "
                             "paths relative to the working directory)")
    parser.add_argument("--events", default=None, metavar="URL",
                        help="also train on the play log at URL (sqlite:///PATH or postgresql://...), through "
                             "its last position now; the version records it, so the index services overlay "
                             "only later plays. Listeners forgotten in the log are left out")
    parser.add_argument("--warm-start", choices=("newest", "none"), default="newest",
                        help="newest (default): when the newest version in --models-dir was trained on the same "
                             "source with the same factors (any, when --factors is left to the data), known users "
                             "and artists start from its factors and "
                             "the run trains a fraction of the epochs from a lower learning rate "
                             "(docs/training.md); none: start cold")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="starting hyperparameters; flags override them. notebook: the original "
                             "notebook's recipe (32 factors, 10 epochs, Adagrad 0.1, batches of 4096, "
                             "popularity negatives), a reference row for benchmarks")
    group = parser.add_argument_group("hyperparameters (default: the chosen preset's; shown: the default preset's)")
    for name, kind, text in _HYPERPARAMETER_FLAGS:
        flag = "--" + name.replace("_", "-")
        if name in _CHOICES:
            group.add_argument(flag, choices=_CHOICES[name], default=None,
                               help=f"{text} (default {getattr(_DEFAULTS, name)})")
        else:
            group.add_argument(flag, type=kind, default=None, metavar="N" if kind is int else "X",
                               help=f"{text} (default {getattr(_DEFAULTS, name)})")
    evaluation = parser.add_argument_group("evaluation and publishing")
    from trainer_service.pipeline import DEFAULT_MAX_EVAL_USERS, DEFAULT_VALIDATE_EVERY, DEFAULT_VALIDATION_USERS

    evaluation.add_argument("--eval-users", type=_eval_users, default=DEFAULT_MAX_EVAL_USERS, metavar="N",
                            help="evaluate at most N held-out users, a seeded sample ('all' for every one; "
                                 f"default {DEFAULT_MAX_EVAL_USERS}); the metrics record how many")
    evaluation.add_argument("--validate-every", type=int, default=DEFAULT_VALIDATE_EVERY, metavar="EPOCHS",
                            help=f"HR@10 etc. every EPOCHS epochs during training: on the validation hold-out "
                                 f"with --patience, else on a sample of the test hold-out (monitoring only); "
                                 f"0: never (default {DEFAULT_VALIDATE_EVERY})")
    evaluation.add_argument("--validation-users", type=_positive_int, default=DEFAULT_VALIDATION_USERS,
                            metavar="N", help=f"held-out users per validation (default {DEFAULT_VALIDATION_USERS})")
    evaluation.add_argument("--keep", type=_positive_int, default=3, metavar="N",
                            help="published versions to keep; older ones are deleted (default 3)")
    add_training_option_arguments(parser)
    add_cluster_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true",
                        help="print the result as one JSON object (version, metrics, hyperparameters, "
                             "seconds per phase) instead of a table")
    output.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (default: a progress bar on a terminal, else one line per phase)")
    parser.set_defaults(handler=run_train)


def _patience(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be in [0, 1000], got {value}")
    return value


def add_training_option_arguments(parser: argparse.ArgumentParser, *, patience: int | None = None) -> None:
    """The ``TrainingOptions`` flags: --patience (default ``patience``, else the pipeline's),
    --gate and --final-fit."""
    from trainer_service.training_request import DEFAULT_FINAL_FIT, DEFAULT_PATIENCE, FINAL_FITS

    patience = DEFAULT_PATIENCE if patience is None else patience
    group = parser.add_argument_group("quality gate, early stopping, final fit (docs/training.md)")
    group.add_argument("--patience", type=_patience, default=patience, metavar="N",
                       help="early stopping: stop after N validations (every --validate-every epochs, on a "
                            "hold-out carved out of the training data, never the test hold-out) without a "
                            "better HR@10 and keep the best validated epoch's factors; 0: train every epoch "
                            f"and keep the last (default {patience}; the default learning-rate schedule makes "
                            "the last epoch the best on Last.fm 2K, and a noisy validation can stop a run "
                            "early for a worse model: docs/training.md)")
    group.add_argument("--gate", choices=("on", "off"), default="on",
                       help="quality gate (default on): refuse to publish when HR@10 is not above the "
                            "popularity baseline's, or more than 10%% below the newest published version's "
                            "trained on the same kind of source; off: publish anyway (recorded in the manifest)")
    group.add_argument("--final-fit", choices=FINAL_FITS, default=DEFAULT_FINAL_FIT,
                       help="after evaluation, all: retrain on every interaction (the held-out ones too) for "
                            "the kept epoch count and publish that, so recommendations use every play, at "
                            "the cost of a second training; none: publish the evaluated model, whose metrics "
                            f"then describe it exactly (default {DEFAULT_FINAL_FIT})")


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """--distributed and --cluster: train on a TensorFlow parameter-server cluster (docs/scaling.md)."""
    group = parser.add_argument_group("distributed training (docs/scaling.md)")
    group.add_argument("--distributed", default=None, metavar="ps=P,workers=W",
                       help="start a local cluster of P parameter-server and W worker processes on 127.0.0.1 "
                            "(the tables sharded over the ps tasks) and train on it; every process is stopped "
                            "when training ends")
    group.add_argument("--cluster", default=None, metavar="TF_CONFIG_FILE",
                       help="run as the chief of a deployed cluster: its TF_CONFIG file (\"env\": the "
                            "TF_CONFIG environment variable); the tasks run `python -m trainer_service "
                            "cluster-task`")


def training_options_from_args(args: argparse.Namespace):
    """The ``TrainingOptions`` the flags ask for; ValueError for a bad value. Commands without
    --warm-start (tune) start cold: a tuned setting is published as it was measured."""
    from trainer_service.distributed import cluster_from_options
    from trainer_service.training_request import TrainingOptions

    return TrainingOptions(gate=getattr(args, "gate", "on"), final_fit=getattr(args, "final_fit", "none"),
                           patience=args.patience, warm_start=getattr(args, "warm_start", "none"),
                           cluster=cluster_from_options(getattr(args, "distributed", None),
                                                        getattr(args, "cluster", None)))


def hyperparameters_from_args(args: argparse.Namespace) -> Hyperparameters:
    """The preset with every given flag applied; ValueError names a bad value."""
    overrides = {name: getattr(args, name) for name, _, _ in _HYPERPARAMETER_FLAGS if getattr(args, name) is not None}
    return PRESETS[args.preset].with_overrides(**overrides)


def format_result(result) -> str:
    """A readable table of a published version and its metrics."""
    m = result.metrics
    lines = [f"published version {result.version}",
             f"  data          {result.manifest.data_source}",
             f"  size          {result.manifest.num_users:,} users, {result.manifest.num_artists:,} artists, "
             f"{result.manifest.num_interactions:,} interactions",
             f"  evaluated     {int(m['evaluated_users']):,} users (leave-one-out)",
             "",
             f"  {'metric':<10}{'model':>10}{'popularity':>12}",
             f"  {'HR@10':<10}{m['hit_rate_at_10']:>10.4f}{m['popularity_hit_rate_at_10']:>12.4f}",
             f"  {'NDCG@10':<10}{m['ndcg_at_10']:>10.4f}{m['popularity_ndcg_at_10']:>12.4f}",
             f"  {'AUC':<10}{m['auc']:>10.4f}{m['popularity_auc']:>12.4f}",
             ""]
    training = result.manifest.training
    if training is not None:
        stopped = (f", early stopping kept epoch {training.best_epoch} (validation HR@10 "
                   f"{training.best_validation_hit_rate_at_10:.4f})" if training.early_stopping_patience else "")
        lines.append(f"  epochs           {training.epochs_trained} of {training.epochs_planned} trained{stopped}")
        verdict = "passed" if training.gate_passed else "REFUSED, published anyway"
        lines.append(f"  quality gate     {training.gate_mode}, {verdict}: {training.gate_reason}")
        if training.warm_start_from_version:
            lines.append(f"  warm start       from version {training.warm_start_from_version} "
                         f"({training.warm_start_known_users:,} users, {training.warm_start_known_artists:,} "
                         f"artists known; {training.warm_start_folded_users:,} users, "
                         f"{training.warm_start_folded_artists:,} artists folded in), "
                         f"learning rate {training.warm_start_learning_rate:g}"
                         + (f"; warm start {training.warm_start_chain_length} in a row since cold version "
                            f"{training.warm_start_cold_version} ({training.warm_start_cold_interactions:,} interactions)"
                            if training.warm_start_cold_version else ""))
        lines.append("  final fit        " + ("none (the published model is the evaluated one)"
                                              if training.final_fit == "none" else
                                              f"all ({training.final_fit_epochs} epochs on every interaction)"))
    hp = result.hyperparameters
    lines.append("  hyperparameters  " + ", ".join(f"{k}={v}" for k, v in hp.to_dict().items()))
    lines.append("  seconds          " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    return "\n".join(lines)


def run_train(args: argparse.Namespace) -> int:
    """Entry point of ``train``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        hp = hyperparameters_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from model_store import PublishError
    from musicrec.rpc.errors import ServiceError
    from trainer_service.data import DataError
    from trainer_service.pipeline import EvaluationSettings, TrainingCancelled, run_training
    from trainer_service.progress_display import ProgressDisplay

    try:
        settings = EvaluationSettings(max_users=args.eval_users, validate_every=args.validate_every,
                                      validation_users=args.validation_users)
        options = training_options_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # First Ctrl-C: stop at the next chunk of minibatches, publish nothing; a second one: abort.
    interrupted = threading.Event()

    def on_sigint(signum, frame) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print("interrupt: stopping (nothing will be published; Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    display = ProgressDisplay(sys.stderr, quiet=args.quiet)
    try:
        result = run_training(args.data, hp, args.models_dir, data_dir=args.data_dir,
                              on_progress=display, should_stop=interrupted.is_set,
                              keep=args.keep, evaluation=settings, options=options, events_url=args.events)
    except (ServiceError, DataError, PublishError, TrainingCancelled, KeyboardInterrupt) as exc:
        display.close()
        return _report_failure(exc)
    finally:
        display.close()
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps({
            "version": result.version,
            "data_source": result.manifest.data_source,
            "metrics": result.metrics,
            "hyperparameters": result.hyperparameters.to_dict(),
            "epochs": [{"epoch": r.epoch, "loss": r.loss, "samples_per_second": r.samples_per_second}
                       for r in result.history],
            "seconds": result.seconds,
            "training": result.training.to_json() if result.training is not None else None,
        }, indent=2))
    else:
        print(format_result(result))
    return 0


def _report_failure(exc: BaseException) -> int:
    """Print why a training run published nothing (one line on stderr) and return the exit status
    (any other ``ServiceError``: a diverged model, an unsupported setting, a failed cluster)."""
    from model_store import PublishError
    from musicrec.rpc.errors import ServiceError
    from trainer_service.data import DataError
    from trainer_service.pipeline import TrainingCancelled
    from trainer_service.quality_gate import QualityGateRefused

    if isinstance(exc, QualityGateRefused):
        line, status = f"error: {exc}", EXIT_REFUSED
    elif isinstance(exc, DataError):
        line, status = f"error: bad data: {exc}", EXIT_FAILED
    elif isinstance(exc, PublishError):
        line, status = f"error: publish failed: {exc}", EXIT_FAILED
    elif isinstance(exc, TrainingCancelled):
        line, status = f"cancelled: {exc}", EXIT_INTERRUPTED
    elif isinstance(exc, KeyboardInterrupt):
        line, status = "aborted; nothing was published", EXIT_INTERRUPTED
    else:
        line, status = f"error: {exc}", EXIT_FAILED
    print(line, file=sys.stderr)
    return status


def add_tune_command(subparsers) -> None:
    """``tune``: a bounded hyperparameter search on the validation hold-out (``trainer_service.tune``)."""
    from trainer_service import tune
    from trainer_service.tune import TUNE_PATIENCE

    parser = subparsers.add_parser(
        "tune",
        help="search hyperparameters on a validation hold-out; print a table and the best settings",
        description=inspect.getdoc(tune).split("\n\n")[0].replace("``", "") + "\n\n" + textwrap.fill(
            "Random search with early stopping over learning rate, regularization, factors and "
            "epochs, judged by HR@10 on a validation hold-out carved out of the training part; the "
            "test hold-out is never read. Prints one row per trial and the best settings as train "
            "flags; --publish then trains, evaluates and publishes them (through the quality gate). "
            "Exit status as for train.", width=96),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="SOURCE", help="what to tune on (syntax as for train)")
    parser.add_argument("--budget", required=True, type=_positive_int, metavar="N",
                        help=f"trials to train (1..{tune.MAX_BUDGET}); the first is the base hyperparameters")
    parser.add_argument("--splits", type=_positive_int, default=tune.DEFAULT_SPLITS, metavar="K",
                        help=f"validation hold-outs each trial trains on; trials are ranked by their mean "
                             f"validation HR@10 (1..{tune.MAX_SPLITS}, default {tune.DEFAULT_SPLITS})")
    parser.add_argument("--data-dir", type=Path, default=None, help="directory file sources are relative to")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="base hyperparameters (the untuned fields, and trial 1)")
    group = parser.add_argument_group("base hyperparameters (default: the chosen preset's)")
    for name, kind, text in _HYPERPARAMETER_FLAGS:
        flag = "--" + name.replace("_", "-")
        if name in _CHOICES:
            group.add_argument(flag, choices=_CHOICES[name], default=None, help=text)
        else:
            group.add_argument(flag, type=kind, default=None, metavar="N" if kind is int else "X", help=text)
    from trainer_service.pipeline import DEFAULT_MAX_EVAL_USERS, DEFAULT_VALIDATE_EVERY, DEFAULT_VALIDATION_USERS

    validation = parser.add_argument_group("validation")
    validation.add_argument("--validate-every", type=_positive_int, default=DEFAULT_VALIDATE_EVERY, metavar="EPOCHS",
                            help=f"validate every EPOCHS epochs (default {DEFAULT_VALIDATE_EVERY})")
    validation.add_argument("--validation-users", type=_positive_int, default=DEFAULT_VALIDATION_USERS,
                            metavar="N", help=f"validation users per validation (default {DEFAULT_VALIDATION_USERS})")
    add_training_option_arguments(parser, patience=TUNE_PATIENCE)
    publish = parser.add_argument_group("publishing the best settings")
    publish.add_argument("--publish", action="store_true",
                         help="train the best settings, evaluate on the test hold-out and publish (gated)")
    publish.add_argument("--models-dir", type=Path, default=None, help="models volume (needed with --publish)")
    publish.add_argument("--eval-users", type=_eval_users, default=DEFAULT_MAX_EVAL_USERS, metavar="N",
                         help=f"test users to evaluate the published model on (default {DEFAULT_MAX_EVAL_USERS})")
    publish.add_argument("--keep", type=_positive_int, default=3, metavar="N", help="published versions to keep")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the trials and the best settings as JSON")
    output.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    """Entry point of ``tune``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.publish and args.models_dir is None:
        print("error: --publish needs --models-dir", file=sys.stderr)
        return 2
    from model_store import PublishError
    from musicrec.rpc.errors import ServiceError
    from trainer_service.data import DataError, load_source, parse_source
    from trainer_service.pipeline import EvaluationSettings, TrainingCancelled, run_training
    from trainer_service.progress_display import ProgressDisplay
    from trainer_service.tune import check_settings, format_trials, settings_flags, tune

    try:
        base = hyperparameters_from_args(args)
        settings = EvaluationSettings(max_users=args.eval_users, validate_every=args.validate_every,
                                      validation_users=args.validation_users)
        options = training_options_from_args(args)
        check_settings(args.budget, settings, args.splits)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    display = ProgressDisplay(sys.stderr, quiet=args.quiet)

    def on_trial(trial) -> None:
        display.close()
        if not args.quiet:
            print(f"trial {trial.number}/{args.budget}: validation HR@10 {trial.hit_rate_at_10:.4f} at epoch "
                  f"{trial.best_epoch} ({trial.seconds:.1f} s)", file=sys.stderr, flush=True)

    try:
        data = load_source(parse_source(args.data), args.data_dir)
        result = tune(data, base, args.budget, splits=args.splits, evaluation=settings, patience=options.patience, on_trial=on_trial,
                      on_progress=display, should_stop=interrupted.is_set)
        display.close()
        best = result.settings
        if args.json:
            print(json.dumps({
                "trials": [{"number": t.number, "hyperparameters": t.hyperparameters.to_dict(),
                            "best_epoch": t.best_epoch, "epochs_trained": t.epochs_trained,
                            "validation": t.validation, "split_hit_rates": list(t.split_hit_rates),
                            "seconds": t.seconds} for t in result.trials],
                "best": {"trial": result.best.number, "hyperparameters": best.to_dict(),
                         "validation_hit_rate_at_10": result.best.hit_rate_at_10},
            }, indent=2))
        else:
            print(format_trials(result.trials, result.best))
            print(f"\nbest: trial {result.best.number}, validation HR@10 {result.best.hit_rate_at_10:.4f}")
            print(f"  train flags: {settings_flags(best)}")
        if not args.publish:
            return 0
        published = run_training(data, best, args.models_dir, on_progress=display, should_stop=interrupted.is_set,
                                 keep=args.keep, evaluation=settings, options=options)
    except (ServiceError, DataError, PublishError, TrainingCancelled, KeyboardInterrupt) as exc:
        display.close()
        return _report_failure(exc)
    finally:
        display.close()
        signal.signal(signal.SIGINT, previous)
    print(format_result(published), file=sys.stderr if args.json else sys.stdout)
    return 0


def add_serve_command(subparsers) -> None:
    """``serve``: the trainer's gRPC server (``trainer_service.server``)."""
    from trainer_service import server

    parser = subparsers.add_parser("serve", help="run the TrainerService gRPC server",
                                   description=inspect.getdoc(server).split("\n\n")[0])
    server.add_serve_arguments(parser)
    parser.set_defaults(handler=server.run_serve)


def add_cluster_task_command(subparsers) -> None:
    """``cluster-task``: one ps or worker task of a distributed training cluster (TF_CONFIG)."""
    from trainer_service.distributed.task import add_cluster_task_command as add

    add(subparsers)


COMMANDS: tuple[Callable, ...] = (add_train_command, add_tune_command, add_serve_command, add_cluster_task_command)


def build_parser() -> argparse.ArgumentParser:
    """The ``trainer_service`` parser with every subcommand in ``COMMANDS``."""
    parser = argparse.ArgumentParser(prog="python -m trainer_service",
                                     description="musicrec trainer: BPR in TensorFlow, published as model versions")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the chosen subcommand; its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
