"""The trainer in a child process, so its peak memory can be read alone (the scale part runs it)::

    python -m bench.train_child --source synthetic:full --models-dir DIR --epochs 3 --out result.json
    python -m bench.train_child --source synthetic:full --trainer-only negative_candidates=1 --epochs 3 --out r.json

Runs ``trainer_service.pipeline.run_training`` exactly as a training job does, recording every
progress event with the time it arrived (seconds since start), and writes one JSON object: the
events, the total wall time, and the published manifest's version, metrics and search settings.
The parent samples its peak RSS (``bench.scale.run_child``).

``--trainer-only FIELD=VALUE,...``: the trainer alone instead (``BPRTrainer.train_epoch`` on the
synthetic preset's interactions, the default hyperparameters with these overrides), no loading,
evaluation or publishing; writes ``{"epoch_samples_per_second": [...]}``, the first epoch (start-up
and compilation) included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time


def _plain(event) -> dict:
    data = dataclasses.asdict(event) if dataclasses.is_dataclass(event) else dict(event)
    return {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool, dict, list, type(None)))}


def trainer_epoch_rates(source: str, hp, overrides: str) -> list[float]:
    """Samples/s of each of ``hp.epochs`` epochs of ``BPRTrainer`` alone on a synthetic ``source``
    (``synthetic:PRESET``, seed 0), the hyperparameters overridden by ``FIELD=VALUE,...`` (numbers)."""
    from trainer_service.bpr import BPRTrainer
    from trainer_service.data import generate

    preset = source.partition(":")[2] or source
    fields = dict(item.split("=", 1) for item in overrides.split(",") if item)
    hp = hp.with_overrides(**{k: float(v) if "." in v else int(v) for k, v in fields.items()})
    data = generate(preset, seed=0).interactions
    hp = hp.resolved(data.num_interactions, data.num_users)
    with BPRTrainer(data.users, data.artists, data.weights, data.num_users, data.num_artists, hp) as trainer:
        return [trainer.train_epoch().samples_per_second for _ in range(hp.epochs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_child", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="data source, the trainer's syntax (e.g. synthetic:full)")
    parser.add_argument("--models-dir", default=None, help="where the pipeline publishes (not with --trainer-only)")
    parser.add_argument("--trainer-only", default=None, metavar="FIELD=VALUE,...",
                        help="time the trainer's epochs alone with these hyperparameter overrides")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override the default number of epochs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if (args.trainer_only is None) == (args.models_dir is None):
        parser.error("give exactly one of --models-dir and --trainer-only")

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s training %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    from trainer_service.data import parse_source
    from trainer_service.hyperparameters import Hyperparameters
    from trainer_service.pipeline import TrainingOptions, run_training

    imported = time.perf_counter() - started
    hp = Hyperparameters() if args.epochs is None else Hyperparameters().with_overrides(epochs=args.epochs)
    if args.trainer_only is not None:
        out = {"epoch_samples_per_second": trainer_epoch_rates(args.source, hp, args.trainer_only)}
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh)
        sys.stdout.flush()
        os._exit(0)  # as below
    events = []

    def on_progress(event) -> None:
        events.append({"t": time.perf_counter() - started, **_plain(event)})

    t0 = time.perf_counter() - started
    # The gate off: a scale run trains a few epochs to measure speed and memory, not quality.
    result = run_training(parse_source(args.source), hp, args.models_dir, data_dir=args.data_dir,
                          on_progress=on_progress, options=TrainingOptions(gate="off"))
    manifest = result.manifest
    out = {
        "import_seconds": imported,
        "pipeline_started": t0,
        "total_seconds": time.perf_counter() - started,
        "events": events,
        "hyperparameters": result.hyperparameters.to_dict(),
        "version": manifest.model_version,
        "version_dir": os.path.join(args.models_dir, str(manifest.model_version)),
        "num_users": manifest.num_users,
        "num_artists": manifest.num_artists,
        "num_interactions": manifest.num_interactions,
        "metrics": dict(manifest.metrics),
        "recommend_search": manifest.recommend_search.to_json(),
        "similar_search": manifest.similar_search.to_json(),
        "result": {k: v for k, v in _plain(result).items() if k != "manifest"},
    }
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(out, fh, default=str)
    sys.stdout.flush()
    os._exit(0)  # skip TensorFlow's slow interpreter teardown; everything is written


if __name__ == "__main__":
    sys.exit(main())
