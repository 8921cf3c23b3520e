"""Measure training levers: named hyperparameter variants on the quality part's data sets and split,
several seeds each, medians (the tuning table of docs/training.md comes from this)::

    python -m bench.levers --data lastfm-2k,movielens-small --seeds 0,1,2 \\
        base "dns3:negative_candidates=3" "lin:learning_rate_schedule=linear,learning_rate=0.2"

A variant is ``NAME`` (the defaults) or ``NAME:field=value,...`` (overrides of the default
``Hyperparameters``). Each run trains as the quality part's "ours" row does (evaluated along the
way, the evaluations' time excluded) and prints HR@10, NDCG@10, AUC, training seconds and seconds
to HR@10 >= 0.19; ``--out FILE`` appends every run as a JSON line. Variants alternate within a
seed, so a noisy machine slows all of them alike.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from bench.quality import FORMATS, SPLIT_SEED, _ours
from bench.settings import SHARED_DATA


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition(":")
    overrides = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = int(value)
        except ValueError:
            try:
                overrides[key] = float(value)
            except ValueError:
                overrides[key] = value
    return name, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="NAME or NAME:field=value,...")
    parser.add_argument("--data", default="lastfm-2k", help="comma-separated data sets (default lastfm-2k)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    parser.add_argument("--out", type=Path, default=None, help="append each run as a JSON line")
    args = parser.parse_args(argv)

    from trainer_service.data import load_files
    from trainer_service.evaluation import leave_one_out_split, sample_heldout
    from trainer_service.hyperparameters import Hyperparameters

    variants = [parse_variant(v) for v in args.variants]
    seeds = [int(s) for s in args.seeds.split(",")]
    table: dict[tuple[str, str], list[dict]] = {}
    for dataset in args.data.split(","):
        data = load_files(args.data_dir / dataset, FORMATS[dataset])
        split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists,
                                    seed=SPLIT_SEED)
        selection = sample_heldout(split, None, SPLIT_SEED)
        for seed in seeds:
            for name, overrides in variants:
                hp = Hyperparameters().with_overrides(seed=seed, **overrides)
                run = _ours(split, hp, selection)
                reach = run["time_to_quality"]["seconds_to_threshold"]
                print(f"{dataset} {name} seed {seed}: HR@10 {run['hit_rate_at_10']:.4f} NDCG@10 "
                      f"{run['ndcg_at_10']:.4f} AUC {run['auc']:.4f} train {run['train_seconds']:.1f} s "
                      f"to 0.19 {'-' if reach is None else f'{reach:.1f} s'}", flush=True)
                table.setdefault((dataset, name), []).append(run)
                if args.out is not None:
                    with open(args.out, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps({"dataset": dataset, "variant": name, "overrides": overrides,
                                             "seed": seed, **{k: v for k, v in run.items()
                                                               if k != "epoch_samples_per_second"}}) + "\n")
    print("\n| data | variant | HR@10 (median) | HR@10 per seed | NDCG@10 | AUC | train s | s to HR@10 >= 0.19 |")
    print("|---|---|---|---|---|---|---|---|")
    for (dataset, name), runs in table.items():
        def med(key):
            return statistics.median(r[key] for r in runs)
        reach = statistics.median(math.inf if r["time_to_quality"]["seconds_to_threshold"] is None
                                  else r["time_to_quality"]["seconds_to_threshold"] for r in runs)
        per_seed = ", ".join(f"{r['hit_rate_at_10']:.4f}" for r in runs)
        print(f"| {dataset} | {name} | {med('hit_rate_at_10'):.4f} | {per_seed} | {med('ndcg_at_10'):.4f} | "
              f"{med('auc'):.4f} | {med('train_seconds'):.1f} | {'-' if math.isinf(reach) else f'{reach:.1f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
