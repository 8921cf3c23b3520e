"""The fold-in evaluation protocol (new listeners from their history): trains two models, minutes
of CPU, so it is run by hand, not by ``make bench``.

    .venv/bin/python -m bench.fold_in [--data hetrec:../shared/data/lastfm-2k]
        [--cache DIR] [--seed 0] [--json]

1. Hold out 10% of the users (seeded, among those with >= 5 artists) entirely from training:
   model A is trained on the other 90%.
2. For each held-out user pick one of their artists (seeded) as the target. Model B is trained on
   everything except those targets: the same users *in* the model, leave-one-out as the trainer
   evaluates.
3. HR@10 of the target, the user's other artists excluded from the ranking, for:
   fold-in (the user's vector fitted against model A from all their artists but the target, by
   ``index_service.fold_in``, each method), in-model (model B's user vector) and popularity
   (model A's training listeners). Artists model A never saw are not ranked by fold-in or
   popularity (a target among them is a miss), and are ignored in a history, as the service does.

Trained factors are cached in ``--cache`` (keyed by data and seed), so methods can be compared
again without training. Also times each fold-in method (median of the held-out users' fits).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index_service.fold_in import FOLD_IN_METHODS, FoldIn  # noqa: E402

HOLDOUT_FRACTION = 0.1
MIN_ARTISTS = 5
CUTOFF = 10


def load(spec: str):
    from trainer_service.data.sources import load_source, parse_source  # noqa: PLC0415  (trainer only)

    return load_source(parse_source(spec))


def split(data, seed: int):
    """(held-out users, their target artists, model A's interaction mask, model B's mask)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(data.users, minlength=data.num_users)
    eligible = np.flatnonzero(counts >= MIN_ARTISTS)
    held = np.sort(rng.choice(eligible, size=max(1, int(round(HOLDOUT_FRACTION * data.num_users))), replace=False))
    indptr = np.zeros(data.num_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    picks = indptr[held] + (rng.random(held.size) * counts[held]).astype(np.int64)
    in_a = ~np.isin(data.users, held)
    in_b = np.ones(data.users.size, dtype=bool)
    in_b[picks] = False
    return held, data.artists[picks].astype(np.int64), in_a, in_b, indptr


def train(data, mask: np.ndarray, hp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from trainer_service.bpr import train_bpr  # noqa: PLC0415

    factors = train_bpr(data.users[mask], data.artists[mask], data.weights[mask], data.num_users,
                        data.num_artists, hp)
    return (np.asarray(factors.user_factors, np.float32), np.asarray(factors.artist_factors, np.float32),
            np.asarray(factors.artist_bias, np.float32))


def trained(data, spec: str, seed: int, cache: Path, which: str, mask: np.ndarray, hp):
    path = cache / f"{spec.replace('/', '_').replace(':', '_')}-seed{seed}-{which}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return f["users"], f["artists"], f["bias"]
    start = time.perf_counter()
    users, artists, bias = train(data, mask, hp)
    print(f"trained model {which} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, users=users, artists=artists, bias=bias)
    return users, artists, bias


def hit(scores: np.ndarray, target: int, banned: np.ndarray) -> float:
    """1 when the target is in the top 10 of ``scores`` with ``banned`` removed (ties: expected)."""
    scores = scores.astype(np.float64, copy=True)
    scores[banned] = -np.inf
    value = scores[target]
    if not np.isfinite(value):
        return 0.0
    greater = int(np.count_nonzero(scores > value))
    ties = int(np.count_nonzero(scores == value)) - 1
    return float(np.clip(CUTOFF - greater, 0, ties + 1) / (ties + 1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="hetrec:" + str(Path(__file__).resolve().parents[2] / "shared/data/lastfm-2k"))
    parser.add_argument("--cache", type=Path, default=Path("var/fold-in-protocol"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from trainer_service.hyperparameters import Hyperparameters  # noqa: PLC0415

    hp = Hyperparameters(seed=args.seed)
    data = load(args.data)
    held, targets, in_a, in_b, indptr = split(data, args.seed)
    _, items_a, bias_a = trained(data, args.data, args.seed, args.cache, "A-without-heldout-users", in_a, hp)
    users_b, items_b, bias_b = trained(data, args.data, args.seed, args.cache, "B-leave-one-out", in_b, hp)
    listeners_a = np.bincount(data.artists[in_a], minlength=data.num_artists).astype(np.float64)
    unknown_a = np.flatnonzero(listeners_a == 0)
    reg = hp.regularization
    results: dict = {"data": args.data, "heldout_users": int(held.size), "artists": data.num_artists,
                     "factors": hp.factors, "regularization": reg}
    in_model, popularity = [], []
    histories = []
    for user, target in zip(held.tolist(), targets.tolist()):
        artists = data.artists[indptr[user]:indptr[user + 1]].astype(np.int64)
        plays = data.weights[indptr[user]:indptr[user + 1]].astype(np.float64)
        keep = artists != target
        history, history_plays = artists[keep], plays[keep]
        known = listeners_a[history] > 0
        histories.append((target, history, history[known], history_plays[known]))
        in_model.append(hit(users_b[user] @ items_b.T + bias_b, target, history))
        popularity.append(hit(listeners_a, target, np.concatenate((history, unknown_a))))
    results["in_model_hr10"] = float(np.mean(in_model))
    results["popularity_hr10"] = float(np.mean(popularity))
    for method in FOLD_IN_METHODS:
        fold = FoldIn(items_a, bias_a, regularization=reg, method=method)
        hits, times = [], []
        for target, history, known, known_plays in histories:
            start = time.perf_counter()
            query = fold.fit(known, known_plays)
            times.append(time.perf_counter() - start)
            hits.append(hit(items_a @ query[:-1] + bias_a, target, np.concatenate((history, unknown_a))))
        results[f"fold_in_{method}_hr10"] = float(np.mean(hits))
        results[f"fold_in_{method}_fit_ms_p50"] = float(np.median(times) * 1e3)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:32} {value:.4f}" if isinstance(value, float) else f"{key:32} {value}")
    return results


if __name__ == "__main__":
    main()
