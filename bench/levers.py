"""Measure training levers: named hyperparameter variants on the quality part's data sets, each on
several random leave-one-out splits, mean and spread over the splits (docs/training.md's lever
table comes from this)::

    python -m bench.levers --data lastfm-2k,movielens-small --split-seeds 201,202,203,204,205 \\
        default "f128:factors=128,regularization=0.03" "ease:lambda=300" --markdown docs/levers.md

A variant is ``NAME`` (the defaults) or ``NAME:field=value,...`` (overrides of the default
``Hyperparameters``); a variant named ``ease`` or ``ease-...`` is the EASE peer
(``bench.ease``; its one field is ``lambda``), one named ``als`` or ``als-...`` implicit's ALS
(fields ``factors``, ``regularization``, ``iterations``, ``alpha``). The field ``average_last=K``
(a lever measured here before it is built into the trainer) evaluates the mean of the factors
after each of the last K epochs instead of the last epoch's; ``weights=P`` (a lever on the data,
not a hyperparameter) trains on every interaction's weight raised to the power P, so the
log-plays positive sampler draws in proportion to ``log(1 + w ** P)`` (on MovieLens, where the
weight is the rating, P > 1 leans the positives towards the films a user rated high; on Last.fm
play counts it changes little); ``user_balance=B`` divides each interaction's log-plays
sampling weight by the user's training interactions to the power B (its weight becomes
``expm1(log1p(w) / n_u ** B)``), so B = 1 gives every user the same share of the triples
whatever the length of their history (HR@10 weighs every user alike; on Last.fm 2K, where
HetRec keeps each user's top 50 artists, it changes little; on MovieLens, histories of 20 to
2,700 films, much); ``item_balance=G`` multiplies it by the artist's listeners to the power G
before the ``expm1`` (G > 0 leans the positives towards popular artists, which the hardest
negatives push down; G < 0 away from them); ``negative_power=beta`` draws every negative
candidate in proportion to ``(1 + listeners) ** beta`` among the artists the user never
listened to, instead of uniformly (beta > 0 leans the hardest-of-C pick's candidates towards
popular artists, beta < 0 towards rare ones). On split seed ``s`` the
training seed is ``s`` too, as ``train --seed s`` does (the split and the training draw from
different random streams of the seed). The defaults are chosen on split seeds the quality part
never reports (201..205 by default here; it reports 101..105), so the reported splits' hold-outs
decide nothing. ``--out FILE`` appends every run as a JSON line (with the command and the
variant's full settings); ``--markdown FILE`` writes the table with the commands that measured it;
``--render RUNS`` trains nothing and writes the table of a JSON-lines file of earlier runs (several
commands' runs in one table, overrides shown against today's defaults). Variants alternate within
a split, so a noisy machine slows all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.quality import FORMATS, _ours, peer_run
from bench.settings import SHARED_DATA

DEFAULT_SPLIT_SEEDS = (201, 202, 203, 204, 205)
# Levers of this harness that are not hyperparameters, with the neutral value of each (it leaves
# the run as the trainer's).
HARNESS_LEVERS = {"average_last": 0, "weights": 1, "user_balance": 0, "item_balance": 0, "negative_power": 0}


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


def run_variant(name: str, overrides: dict, split, selection, seed: int) -> dict:
    """One training of a variant on ``split`` with training seed ``seed``: HR@10, NDCG@10, AUC,
    train_seconds (no evaluations along the way)."""
    from trainer_service.hyperparameters import Hyperparameters

    peer = peer_run(name, overrides, split, selection, seed)
    if peer is not None:
        return peer
    overrides = dict(overrides)
    average_last = int(overrides.pop("average_last", 0))
    negative_power = float(overrides.pop("negative_power", 0.0))
    split = _reweighted(split, float(overrides.pop("weights", 1.0)), float(overrides.pop("user_balance", 0.0)),
                        float(overrides.pop("item_balance", 0.0)))
    # Factors left to the data resolve on the data set's size, as `train` resolves them.
    hp = Hyperparameters().with_overrides(seed=seed, **overrides).resolved(int(split.train_users.size
                                                                                + split.num_heldout), split.num_users)
    with _popularity_negatives(split, negative_power):
        if average_last:
            return _averaged(split, hp, selection, average_last)
        return _ours(split, hp, selection, track=False)


@contextlib.contextmanager
def _popularity_negatives(split, power: float):
    """While open, the trainer's uniform negative sampler draws every negative candidate in
    proportion to ``(1 + listeners) ** power`` (the artist's training listeners) among the
    artists the user never listened to (rejection, then a uniform draw for what rejection does
    not settle); ``power`` 0 changes nothing."""
    if not power:
        yield
        return
    from trainer_service.sampling import REJECTION_ROUNDS, TripletSampler

    listeners = np.bincount(split.train_artists, minlength=split.num_artists).astype(np.float64)
    cdf = np.cumsum((1.0 + listeners) ** power)
    cdf /= cdf[-1]
    original = TripletSampler.negatives

    def negatives(self, users, rng):
        if self.negative_sampling != "uniform":
            return original(self, users, rng)
        draw = lambda n: np.minimum(np.searchsorted(cdf, rng.random(n)), self.num_artists - 1).astype(np.int32)
        found = draw(users.size)
        redraw = np.flatnonzero(self._pairs.contains(users, found))
        for _ in range(REJECTION_ROUNDS):
            if not redraw.size:
                return found
            found[redraw] = draw(redraw.size)
            redraw = redraw[self._pairs.contains(users[redraw], found[redraw])]
        if redraw.size:
            found[redraw] = self.complement_draw(users[redraw], rng)
        return found

    TripletSampler.negatives = negatives
    try:
        yield
    finally:
        TripletSampler.negatives = original


def _reweighted(split, power: float, user_balance: float, item_balance: float):
    """``split`` with the training weights of the ``weights``, ``user_balance`` and
    ``item_balance`` levers."""
    if power == 1.0 and not user_balance and not item_balance:
        return split
    weights = split.train_weights.astype(np.float64) ** power
    if user_balance or item_balance:
        scale = np.diff(split.train_indptr)[split.train_users].astype(np.float64) ** -user_balance
        listeners = np.bincount(split.train_artists, minlength=split.num_artists).astype(np.float64)
        scale *= listeners[split.train_artists] ** item_balance
        weights = np.expm1(np.log1p(weights) * scale)
    return dataclasses.replace(split, train_weights=weights.astype(np.float32))


def _averaged(split, hp, selection, last: int) -> dict:
    """Our BPR with the factors averaged over the last ``last`` epochs (equal weights)."""
    from trainer_service.bpr import BPRTrainer
    from trainer_service.evaluation import evaluate_model

    started = time.perf_counter()
    total = None
    with BPRTrainer(split.train_users, split.train_artists, split.train_weights, split.num_users,
                    split.num_artists, hp) as trainer:
        for epoch in range(1, hp.epochs + 1):
            trainer.train_epoch()
            if epoch > hp.epochs - last:
                f = trainer.factors()
                arrays = (f.user_factors, f.artist_factors, f.artist_bias)
                total = arrays if total is None else tuple(a + b for a, b in zip(total, arrays))
    seconds = time.perf_counter() - started
    users, artists, bias = (a / min(last, hp.epochs) for a in total)
    m = evaluate_model(users, artists, bias, split, selection)
    return {"hit_rate_at_10": m.hit_rate_at_10, "ndcg_at_10": m.ndcg_at_10, "auc": m.auc,
            "evaluated_users": m.evaluated_users, "train_seconds": seconds}


def settings_of(name: str, overrides: dict) -> dict:
    """What a variant trains, in full: a peer's name and fields, or our every hyperparameter (the
    seed left out: it is the split's) and ``average_last`` if set. Rows are told apart by this,
    so a table rendered later shows each variant against the defaults of that day."""
    from trainer_service.hyperparameters import Hyperparameters

    if name.startswith(("ease", "als")):
        return {"method": "ease" if name.startswith("ease") else "als", **overrides}
    overrides = dict(overrides)
    extras = {key: overrides[key] for key, neutral in HARNESS_LEVERS.items() if overrides.get(key, neutral) != neutral}
    for key in HARNESS_LEVERS:
        overrides.pop(key, None)
    full = Hyperparameters().with_overrides(**overrides).to_dict()
    full.pop("seed")
    return {"method": "ours", **full, **extras}


def describe(settings: dict) -> str:
    """``settings`` against today's defaults: the fields that differ ("(defaults)" if none)."""
    from trainer_service.hyperparameters import Hyperparameters

    if settings.get("method") != "ours":
        fields = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "method")
        return f"{settings.get('method')} {fields}".strip()
    defaults = Hyperparameters().to_dict()
    diff = {k: v for k, v in settings.items() if k != "method" and defaults.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "(defaults)"


def summarize(runs: list[dict]) -> dict:
    """Mean, min, max and (population) standard deviation of HR@10 and NDCG@10 over the runs, the
    median training seconds."""
    hits = [r["hit_rate_at_10"] for r in runs]
    ndcgs = [r["ndcg_at_10"] for r in runs]
    return {"hit_rate_at_10": statistics.fmean(hits), "hit_rate_min": min(hits), "hit_rate_max": max(hits),
            "hit_rate_std": statistics.pstdev(hits), "ndcg_at_10": statistics.fmean(ndcgs),
            "ndcg_min": min(ndcgs), "ndcg_max": max(ndcgs),
            "train_seconds": statistics.median(r["train_seconds"] for r in runs), "splits": len(runs)}


def paired_with_defaults(runs: dict[int, dict], defaults: dict[int, dict] | None) -> str:
    """The variant's HR@10 less the defaults' over the splits both ran (mean ± its standard error
    over those splits, and on how many the variant was ahead); "" without two shared splits."""
    shared = sorted(set(runs) & set(defaults or {}))
    if len(shared) < 2 or runs is defaults:
        return ""
    diffs = [runs[s]["hit_rate_at_10"] - defaults[s]["hit_rate_at_10"] for s in shared]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    ahead = sum(d > 0 for d in diffs)
    return f"{statistics.fmean(diffs):+.4f} ± {se:.4f} ({ahead}/{len(diffs)} ahead)"


def markdown(records: list[dict]) -> str:
    """The table of ``records`` (run lines as ``--out`` writes them; for a (data set, settings,
    split) measured more than once the last counts), data sets in order of appearance, then
    variants by mean HR@10, and the commands that measured them."""
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    names: dict[tuple[str, str], str] = {}
    commands: list[str] = []
    for r in records:
        key = (r["dataset"], json.dumps(r["settings"], sort_keys=True))
        runs.setdefault(key, {})[r["split_seed"]] = r
        names[key] = r["variant"]
        if r.get("command") and r["command"] not in commands:
            commands.append(r["command"])
    datasets = list(dict.fromkeys(d for d, _ in runs))
    seeds = ", ".join(str(x) for x in sorted({r["split_seed"] for r in records}))
    lines = [
        "<!-- generated by python -m bench.levers; do not edit by hand -->",
        "# Training levers: mean and spread over random leave-one-out splits",
        "",
        "Each row: a variant trained once per split (training seed = split seed) and every held-out user "
        "evaluated; HR@10 and NDCG@10 are means over the splits, with the lowest / highest split and the "
        "standard deviation of HR@10; train s is the median training time, compilation included, measured on "
        "a shared 2-core machine with other jobs running (indicative only: the variants of one command "
        "alternate within a split, so compare times within a command). Overrides are against today's "
        f"defaults (`trainer_service/hyperparameters.py`). Split seeds: {seeds}. The defaults are chosen on "
        f"{', '.join(map(str, DEFAULT_SPLIT_SEEDS))}; `make bench` reports other ones (docs/benchmarks.md part 1). "
        "`average_last`, `weights`, `user_balance`, `item_balance` and `negative_power` are levers of this "
        "harness, not hyperparameters (bench/levers.py's docstring says what each does). \"vs defaults, "
        "paired\": the variant's HR@10 less today's defaults' on the same splits (where the defaults ran "
        "them), mean ± standard error over those splits: a split moves every variant alike, so the paired "
        "difference tells variants apart where the spread columns cannot.",
        "",
        "Commands (each appends its runs to a JSON-lines file; `--render FILE` writes this page from it):",
        "",
        *[f"- `{c}`" for c in commands],
        "",
    ]
    for dataset in datasets:
        keys = sorted((k for k in runs if k[0] == dataset),
                      key=lambda k: -statistics.fmean(r["hit_rate_at_10"] for r in runs[k].values()))
        defaults = runs.get((dataset, json.dumps(settings_of("default", {}), sort_keys=True)))
        lines += [f"## {dataset}", "",
                  "| variant | overrides | HR@10 mean | HR@10 min / max | HR@10 std | vs defaults, paired | "
                  "NDCG@10 mean | train s | splits |", "|---|---|---|---|---|---|---|---|---|"]
        for key in keys:
            s = summarize(list(runs[key].values()))
            lines.append(f"| {names[key]} | {describe(json.loads(key[1]))} | {s['hit_rate_at_10']:.4f} | "
                         f"{s['hit_rate_min']:.4f} / {s['hit_rate_max']:.4f} | {s['hit_rate_std']:.4f} | "
                         f"{paired_with_defaults(runs[key], defaults)} | "
                         f"{s['ndcg_at_10']:.4f} | {s['train_seconds']:.1f} | {s['splits']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help="NAME or NAME:field=value,...")
    parser.add_argument("--data", default="lastfm-2k", help="comma-separated data sets (default lastfm-2k)")
    parser.add_argument("--split-seeds", default=",".join(map(str, DEFAULT_SPLIT_SEEDS)),
                        help="comma-separated leave-one-out split seeds (default 201..205); each split's "
                             "training seed is its split seed")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    parser.add_argument("--out", type=Path, default=None, help="append each run as a JSON line")
    parser.add_argument("--render", type=Path, default=None, metavar="RUNS",
                        help="train nothing: write the table of the runs in this JSON-lines file")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table (Markdown) here")
    args = parser.parse_args(argv)
    if args.render is not None:
        records = [json.loads(line) for line in args.render.read_text(encoding="utf-8").splitlines() if line.strip()]
        text = markdown(records)
    else:
        if not args.variants:
            parser.error("name at least one variant (or --render RUNS)")
        text = markdown(measure(args))
    print("\n" + text)
    if args.markdown is not None:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


def measure(args: argparse.Namespace) -> list[dict]:
    """Train every variant on every split of every data set; the run records (``--out``'s lines)."""
    from trainer_service.data import load_files
    from trainer_service.evaluation import leave_one_out_split

    variants = dict(parse_variant(v) for v in args.variants)
    split_seeds = [int(s) for s in args.split_seeds.split(",")]
    command = "python -m bench.levers " + " ".join(
        [f"--data {args.data}", f"--split-seeds {args.split_seeds}"] + [f"'{v}'" if ":" in v else v
                                                                       for v in args.variants])
    records = []
    for dataset in args.data.split(","):
        data = load_files(args.data_dir / dataset, FORMATS[dataset])
        for split_seed in split_seeds:
            split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists,
                                        seed=split_seed)
            for name, overrides in variants.items():
                started = time.perf_counter()
                run = run_variant(name, overrides, split, None, split_seed)
                print(f"{dataset} {name} split {split_seed}: HR@10 {run['hit_rate_at_10']:.4f} NDCG@10 "
                      f"{run['ndcg_at_10']:.4f} train {run['train_seconds']:.1f} s "
                      f"(wall {time.perf_counter() - started:.1f} s)", flush=True)
                record = {"dataset": dataset, "variant": name, "overrides": overrides,
                          "settings": settings_of(name, overrides), "split_seed": split_seed, "command": command,
                          **{k: v for k, v in run.items()
                             if k in ("hit_rate_at_10", "ndcg_at_10", "auc", "train_seconds")}}
                records.append(record)
                if args.out is not None:
                    with open(args.out, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(record) + "\n")
    return records


if __name__ == "__main__":
    sys.exit(main())
