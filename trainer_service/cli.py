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
    NEGATIVE_SAMPLING,
    OPTIMIZERS,
    POSITIVE_SAMPLING,
    PRESETS,
    Hyperparameters,
)

# Exit statuses of ``train``: 0 published; 1 bad data, publish failure or training failure (one
# line on stderr); 2 bad arguments (argparse); 130 interrupted (nothing published).
EXIT_FAILED = 1
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
    ("factors", int, "latent factors per user and artist"),
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
)
_CHOICES = {"negative_sampling": NEGATIVE_SAMPLING, "positive_sampling": POSITIVE_SAMPLING,
            "optimizer": OPTIMIZERS}


def add_train_command(subparsers) -> None:
    """``train``: train on a data source, evaluate, publish one version, print it."""
    parser = subparsers.add_parser(
        "train",
        help="train, evaluate and publish one model version",
        description=textwrap.fill(
            "Train a BPR model on a data source, evaluate it leave-one-out (HR@10, NDCG@10, AUC, "
            "beside a popularity baseline), publish it as the next version in --models-dir, and "
            "print the version and its metrics. The published model is the one evaluated: "
            "trained without one held-out interaction per user with >= 5 interactions. Exit "
            "status: 0 published; 1 bad data, publish failure or failed training (one line on "
            "stderr); 2 bad arguments; 130 interrupted (nothing published).", width=96),
        epilog=_data_formats_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="SOURCE",
                        help="what to train on (syntax below), e.g. hetrec:lastfm-2k or synthetic:small")
    parser.add_argument("--models-dir", required=True, type=Path, help="models volume to publish the version to")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="directory file sources are relative to and confined to (default: none, "
                             "paths relative to the working directory)")
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
                            help=f"validation metrics every EPOCHS epochs during training (0: never; "
                                 f"default {DEFAULT_VALIDATE_EVERY})")
    evaluation.add_argument("--validation-users", type=_positive_int, default=DEFAULT_VALIDATION_USERS,
                            metavar="N", help=f"held-out users per validation (default {DEFAULT_VALIDATION_USERS})")
    evaluation.add_argument("--keep", type=_positive_int, default=3, metavar="N",
                            help="published versions to keep; older ones are deleted (default 3)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true",
                        help="print the result as one JSON object (version, metrics, hyperparameters, "
                             "seconds per phase) instead of a table")
    output.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run_train)


def hyperparameters_from_args(args: argparse.Namespace) -> Hyperparameters:
    """The preset with every given flag applied; ValueError names a bad value."""
    overrides = {name: getattr(args, name) for name, _, _ in _HYPERPARAMETER_FLAGS if getattr(args, name) is not None}
    return PRESETS[args.preset].with_overrides(**overrides)


def _progress_printer(quiet: bool) -> Callable:
    """An ``on_progress`` that prints a line per phase and per epoch on stderr."""

    def show(event) -> None:
        if quiet or event.phase == "done":
            return
        if event.phase == "training" and event.epoch:
            line = (f"epoch {event.epoch:>4}/{event.total_epochs}  loss {event.loss:.4f}  "
                    f"{event.samples_per_second / 1e6:.2f}M samples/s")
            if event.metrics:
                line += f"  validation HR@10 {event.metrics['hit_rate_at_10']:.4f}"
            print(line, file=sys.stderr, flush=True)
        else:
            print(f"{event.phase}...", file=sys.stderr, flush=True)

    return show


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
    from trainer_service.data import DataError
    from trainer_service.pipeline import EvaluationSettings, TrainingCancelled, run_training

    try:
        settings = EvaluationSettings(max_users=args.eval_users, validate_every=args.validate_every,
                                      validation_users=args.validation_users)
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
    try:
        result = run_training(args.data, hp, args.models_dir, data_dir=args.data_dir,
                              on_progress=_progress_printer(args.quiet), should_stop=interrupted.is_set,
                              keep=args.keep, evaluation=settings)
    except DataError as exc:
        print(f"error: bad data: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except PublishError as exc:
        print(f"error: publish failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except TrainingCancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("aborted; nothing was published", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as exc:  # data too small to train on, or a diverged model
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
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
        }, indent=2))
    else:
        print(format_result(result))
    return 0


def add_serve_command(subparsers) -> None:
    """``serve``: the trainer's gRPC server (``trainer_service.server``)."""
    from trainer_service import server

    parser = subparsers.add_parser("serve", help="run the TrainerService gRPC server",
                                   description=inspect.getdoc(server).split("\n\n")[0])
    server.add_serve_arguments(parser)
    parser.set_defaults(handler=server.run_serve)


COMMANDS: tuple[Callable, ...] = (add_train_command, add_serve_command)


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
