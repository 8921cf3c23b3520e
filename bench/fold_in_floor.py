"""The fold-in's settings (``index_service.fold_in``), measured over many seeds of the history
part's protocol (``bench/fold_in.py``), paired by held-out user. Two studies: the L2 floor
(``MIN_REGULARIZATION``) and the negative pool (``NEGATIVES`` drawn, ``HARD_NEGATIVES`` kept)::

    python -m bench.fold_in_floor --data lastfm-2k,movielens-small --seeds 301-320 \\
        --factors 64,96 --floors 0.03,0.05,0.08,0.12,0.2 --out docs/fold-in-floor-runs.jsonl
    python -m bench.fold_in_floor --render docs/fold-in-floor-runs.jsonl --markdown docs/fold-in-floor.md
    python -m bench.fold_in_floor --data movielens-small,lastfm-2k --seeds 301-320 --factors 64,96 \\
        --pools 512/192,1024/256,2048/256,2048/384,4096/1024 --pool-seeds 4 --out docs/fold-in-pool-runs.jsonl
    python -m bench.fold_in_floor --data movielens-small,lastfm-2k --seeds 301-320 --factors 64,96 \\
        --pools 512/192,1024/256,1024/384,1536/384 --pool-seeds 4 --out docs/fold-in-pool-runs2.jsonl
    python -m bench.fold_in_floor --render docs/fold-in-pool-runs.jsonl docs/fold-in-pool-runs2.jsonl \\
        --markdown docs/fold-in-pool.md

Per data set, seed and factor count: models A (without the held-out users) and B (leave-one-out
of the same users) trained with the trainer's defaults at that width, then every held-out user
folded in against model A once per setting (the same users, the same targets), and their in-model
hit from model B. A JSON line per (data set, seed, factors) holds every user's hits, so the table
pairs settings on the same users: the difference of each setting against the first one listed,
with its standard error over the users. The history part holds out about 61 listeners per MovieLens
small seed, so its 3 seeds cannot tell settings apart (docs/serving.md): 20 seeds can.
Seeds 301.. are none of the history part's (0..) nor the quality part's.

The pool is a random draw of the catalog (seeded per version), and which artists it holds moves
a fold-in's hits by about as much as the pool's size does: ``--pool-seeds K`` folds every user in
with K pools of each size (pool seeds 0..K-1, seed 0 the service's) and records the user's mean
hit over them, so a size is compared with a size, not one draw with another. Each setting's
fit time per user (the mean, this process, BLAS on one thread) is recorded beside its hits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.quality import FORMATS
from bench.settings import REPO_ROOT, SHARED_DATA

CACHE = REPO_ROOT / "bench" / "results" / "tmp" / "fold-in-floor"


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(part) for part in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(part) for part in text.split(",")]


def floor_settings(floors: list[float]) -> dict[str, list[dict]]:
    """The floor study's settings: label -> the FoldIn keywords of each fold (one)."""
    return {repr(floor): [{"min_regularization": floor}] for floor in floors}


def pool_settings(pools: list[str], pool_seeds: int) -> dict[str, list[dict]]:
    """The pool study's settings: ``"NEGATIVES/HARD"`` -> one fold per pool seed (the service's
    seed first, then 1..)."""
    from index_service.fold_in import _SEED

    settings = {}
    for pool in pools:
        negatives, hard = (int(part) for part in pool.split("/"))
        settings[pool] = [{"negatives": negatives, "hard_negatives": hard, "seed": _SEED + k}
                          for k in range(pool_seeds)]
    return settings


def measure(name: str, seeds: list[int], factors: list[int], settings: dict[str, list[dict]], setting: str,
            data_dir: Path, out) -> None:
    from threadpoolctl import threadpool_limits

    from bench.fold_in import held_out_history, hit, split, trained
    from index_service.fold_in import FoldIn
    from trainer_service.data import load_files
    from trainer_service.hyperparameters import Hyperparameters

    data = load_files(data_dir / name, FORMATS[name])
    for seed in seeds:
        for width in factors:
            hp = Hyperparameters(seed=seed, factors=width)
            held, targets, in_a, in_b, indptr = split(data, seed)
            (_, items_a, bias_a), _ = trained(data, f"{name}-seed{seed}", CACHE, "A", in_a, hp)
            (users_b, items_b, bias_b), _ = trained(data, f"{name}-seed{seed}", CACHE, "B", in_b, hp)
            listeners_a = np.bincount(data.artists[in_a], minlength=data.num_artists).astype(np.float64)
            unknown_a = np.flatnonzero(listeners_a == 0)
            folds = {label: [FoldIn(items_a, bias_a, regularization=hp.regularization,
                                    negative_candidates=hp.negative_candidates, **keywords) for keywords in group]
                     for label, group in settings.items()}
            in_model, hits = [], {label: [] for label in settings}
            fit_seconds = dict.fromkeys(settings, 0.0)
            fits = 0
            with threadpool_limits(limits=1, user_api="blas"):
                for user, target in zip(held.tolist(), targets.tolist()):
                    history, history_plays, known = held_out_history(data, indptr, user, target, listeners_a)
                    banned = np.concatenate((history, unknown_a))
                    in_model.append(hit(users_b[user] @ items_b.T + bias_b, target, history))
                    fits += bool(known.any())
                    for label, group in folds.items():
                        if not known.any():  # the service answers by popularity then
                            hits[label].append(hit(listeners_a, target, banned))
                            continue
                        user_hits = []
                        for fold in group:
                            started = time.perf_counter()
                            query = fold.fit(history[known], history_plays[known])
                            fit_seconds[label] += (time.perf_counter() - started) / len(group)
                            user_hits.append(hit(items_a @ query[:-1] + bias_a, target, banned))
                        hits[label].append(float(np.mean(user_hits)))
            row = {"dataset": name, "seed": seed, "factors": width, "regularization": hp.regularization,
                   "negative_candidates": hp.negative_candidates, "users": int(held.size), "setting": setting,
                   "folds_per_setting": max(len(group) for group in settings.values()),
                   "fit_ms": {label: 1000.0 * value / max(1, fits) for label, value in fit_seconds.items()},
                   "in_model": in_model, "fold_in": hits}
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(f"{name} seed {seed} factors {width}: in-model {np.mean(in_model):.4f}, fold-in "
                  + ", ".join(f"{label} {np.mean(v):.4f}" for label, v in hits.items()), flush=True)


def merged(paths: list[Path]) -> list[dict]:
    """The JSON lines of ``paths``, those of one (data set, seed, factors) merged into one row:
    the settings of later files added after the earlier ones' (a setting measured twice keeps its
    first measurement; the hits of a seed are deterministic, its fit times are not)."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        for line in open(path, encoding="utf-8"):
            if not line.strip():
                continue
            row = json.loads(line)
            key = (row["dataset"], row["seed"], row["factors"])
            if key not in rows:
                rows[key] = row
                continue
            into = rows[key]
            if into["in_model"] != row["in_model"] or into.get("setting") != row.get("setting"):
                raise ValueError(f"{path}: {key} does not match the earlier files' row (another split or study)")
            for label, hits in row["fold_in"].items():
                if label not in into["fold_in"]:
                    into["fold_in"][label] = hits
                    if "fit_ms" in into and "fit_ms" in row:
                        into["fit_ms"][label] = row["fit_ms"][label]
    return list(rows.values())


_INTROS = {
    "floor": ("# The fold-in's L2 floor: paired over many seeds",
              "The history part's protocol (`bench/fold_in.py`) on many seeds; every floor folds in the same "
              "held-out users against the same model A, so floors are compared user by user (difference "
              "against the first floor listed, with its standard error over the users). The fold-in's L2 is "
              "the version's regularization (the trainer's default 0.02) or the floor, whichever is larger. "
              "Command and module docstring: `bench/fold_in_floor.py`."),
    "pool": ("# The fold-in's negative pool: paired over many seeds",
             "The history part's protocol (`bench/fold_in.py`) on many seeds; every pool size folds in the "
             "same held-out users against the same model A, so sizes are compared user by user (difference "
             "against the first size listed, with its standard error over the users). A pool N/K is N "
             "artists drawn at random from the catalog, of which the K the user's vector scores highest are "
             "weighted as the hardest of the version's negative candidates (index_service/fold_in.py). A "
             "user's hit is the mean over several pool draws (the pool seeds column), so a size is "
             "compared with a size, not one draw with another. Fit time: the mean per user in the "
             "measuring process (BLAS on one thread, real histories; the history part times the service's "
             "own fit). Command and module docstring: `bench/fold_in_floor.py`."),
}


def render(rows: list[dict]) -> str:
    setting = rows[0].get("setting", "floor") if rows else "floor"
    title, intro = _INTROS[setting]
    lines = ["<!-- generated by python -m bench.fold_in_floor; do not edit by hand -->", title, "", intro, ""]
    for name in sorted({r["dataset"] for r in rows}):
        for width in sorted({r["factors"] for r in rows if r["dataset"] == name}):
            group = [r for r in rows if r["dataset"] == name and r["factors"] == width]
            in_model = np.concatenate([r["in_model"] for r in group])
            labels = list(group[0]["fold_in"])
            first = np.concatenate([r["fold_in"][labels[0]] for r in group])
            seeds = sorted(r["seed"] for r in group)
            timed = all("fit_ms" in r for r in group)
            lines += [f"## {name}, {width} factors: seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), "
                      f"{in_model.size:,} held-out users; in-model HR@10 {in_model.mean():.4f}", ""]
            header = f"| {setting} | fold-in HR@10 | vs in-model | vs {setting} {labels[0]} (paired, ± SE) |"
            rule = "|---|---|---|---|"
            if setting == "pool":
                header += " pool seeds |"
                rule += "---|"
            if timed:
                header += " fit ms per user |"
                rule += "---|"
            lines += [header, rule]
            for label in labels:
                hits = np.concatenate([r["fold_in"][label] for r in group])
                diff = hits - first
                se = diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else 0.0
                line = (f"| {label} | {hits.mean():.4f} | {hits.mean() / in_model.mean():.3f}x | "
                        f"{diff.mean():+.4f} ± {se:.4f} |")
                if setting == "pool":
                    line += f" {group[0]['folds_per_setting']} |"
                if timed:
                    line += f" {np.mean([r['fit_ms'][label] for r in group]):.2f} |"
                lines.append(line)
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fold_in_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="lastfm-2k,movielens-small")
    parser.add_argument("--seeds", default="301-320", help="LO-HI or comma-separated")
    parser.add_argument("--factors", default="64")
    parser.add_argument("--floors", default="0.03,0.05,0.08,0.12,0.2")
    parser.add_argument("--pools", help="NEGATIVES/HARD,...: the pool study instead of the floor study")
    parser.add_argument("--pool-seeds", type=int, default=3, help="pool draws per size and user (--pools)")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    parser.add_argument("--out", type=Path, help="append a JSON line per data set, seed and factors")
    parser.add_argument("--render", type=Path, nargs="+",
                        help="train nothing: the table of these JSON-lines files (the rows of one data set, "
                             "seed and factors from several files are one row: their settings side by side)")
    parser.add_argument("--markdown", type=Path, help="write the table here (else print it)")
    args = parser.parse_args(argv)
    if args.render is None:
        if args.out is None:
            parser.error("--out is required to measure")
        if args.pools:
            setting, settings = "pool", pool_settings(args.pools.split(","), args.pool_seeds)
        else:
            setting, settings = "floor", floor_settings([float(f) for f in args.floors.split(",")])
        with open(args.out, "a", encoding="utf-8") as out:
            for name in args.data.split(","):
                measure(name, _seeds(args.seeds), [int(f) for f in args.factors.split(",")], settings, setting,
                        args.data_dir, out)
    text = render(merged(args.render or [args.out]))
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
