"""The fold-in evaluation protocol (new listeners from their history). Part of ``make bench``
(the ``history`` part, ``bench/history.py``); also runnable alone on one data set and seed:

    .venv/bin/python -m bench.fold_in [--data hetrec:../shared/data/lastfm-2k]
        [--cache DIR] [--seed 0] [--epochs N] [--json]

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

Both models are trained with the trainer's current default hyperparameters (the seed set to the
protocol's seed; ``epochs`` overridable for the quick benchmark). Trained factors are cached in
``cache`` (keyed by data, seed and hyperparameters), so methods can be compared again without
training. Also times each fold-in method (median of the held-out users' fits, BLAS on one thread
as the index service runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index_service.fold_in import FOLD_IN_METHODS, FoldIn  # noqa: E402

# FoldIn settings compared by ``--variants`` (the chosen one is FoldIn's defaults with the
# version's negative_candidates); "previous" is the first implementation's settings.
VARIANTS = {
    "previous: 128 uniform negatives, version's L2, 5 steps": dict(negative_candidates=1, min_regularization=0.0,
                                                                     newton_steps=5),
    "uniform negatives, L2 >= floor, 3 steps": dict(negative_candidates=1),
    "rank-aware, all 512 pool negatives kept": dict(hard_negatives=512),
    "rank-aware, 5 steps": dict(newton_steps=5),
    "rank-aware, version's L2 (no floor)": dict(min_regularization=0.0),
}
HOLDOUT_FRACTION = 0.1
MIN_ARTISTS = 5
CUTOFF = 10


def load(spec: str):
    """Interactions of a data source in the trainer's syntax (``hetrec:PATH``, ``movielens:PATH``)."""
    from trainer_service.data.sources import load_source, parse_source  # noqa: PLC0415  (trainer only)

    return load_source(parse_source(spec))


def split(data, seed: int):
    """(held-out users, their target artists, model A's interaction mask, model B's mask, the
    users' row offsets (U + 1,))."""
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
    from trainer_service.pipeline import fit  # noqa: PLC0415

    factors = fit(data.users[mask], data.artists[mask], data.weights[mask], data.num_users,
                  data.num_artists, hp).factors
    return (np.asarray(factors.user_factors, np.float32), np.asarray(factors.artist_factors, np.float32),
            np.asarray(factors.artist_bias, np.float32))


def trained(data, label: str, cache: Path | None, which: str, mask: np.ndarray, hp):
    """Model ``which`` trained on ``data[mask]``: (user factors, artist factors, artist bias) and the
    training seconds (0 when read from the cache)."""
    key = hashlib.sha256(json.dumps(hp.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    path = None if cache is None else cache / f"{label.replace('/', '_').replace(':', '_')}-{key}-{which}.npz"
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as f:
            return (f["users"], f["artists"], f["bias"]), 0.0
    start = time.perf_counter()
    model = train(data, mask, hp)
    seconds = time.perf_counter() - start
    print(f"trained model {which} in {seconds:.0f} s", file=sys.stderr)
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        users, artists, bias = model
        np.savez(path, users=users, artists=artists, bias=bias)
    return model, seconds


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


def protocol(data, label: str, seed: int, hp, cache: Path | None = None, variants: dict | None = None) -> dict:
    """The protocol on ``data`` with ``seed`` (the split's and the trainings'); ``hp`` the
    trainer's hyperparameters (its seed is replaced). HR@10 per method, fit p50 ms per fold-in
    method, training seconds, the version's regularization; ``variants`` (name: FoldIn keyword
    arguments) adds ``variant_hr10`` and ``variant_fit_ms_p50`` for each."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    hp = hp.with_overrides(seed=seed)
    held, targets, in_a, in_b, indptr = split(data, seed)
    (_, items_a, bias_a), seconds_a = trained(data, f"{label}-seed{seed}", cache, "A-without-heldout-users", in_a, hp)
    (users_b, items_b, bias_b), seconds_b = trained(data, f"{label}-seed{seed}", cache, "B-leave-one-out", in_b, hp)
    listeners_a = np.bincount(data.artists[in_a], minlength=data.num_artists).astype(np.float64)
    unknown_a = np.flatnonzero(listeners_a == 0)
    results: dict = {"seed": seed, "heldout_users": int(held.size), "users": int(data.num_users),
                     "artists": int(data.num_artists), "factors": hp.factors,
                     "regularization": hp.regularization,
                     "negative_candidates": hp.to_dict().get("negative_candidates", 1),
                     "train_seconds": seconds_a + seconds_b}
    in_model, popularity, histories, lengths = [], [], [], []
    for user, target in zip(held.tolist(), targets.tolist()):
        artists = data.artists[indptr[user]:indptr[user + 1]].astype(np.int64)
        plays = data.weights[indptr[user]:indptr[user + 1]].astype(np.float64)
        keep = artists != target
        history, history_plays = artists[keep], plays[keep]
        known = listeners_a[history] > 0
        histories.append((target, history, history[known], history_plays[known]))
        lengths.append(int(known.sum()))
        in_model.append(hit(users_b[user] @ items_b.T + bias_b, target, history))
        popularity.append(hit(listeners_a, target, np.concatenate((history, unknown_a))))
    results["history_length_median"] = float(np.median(lengths))
    results["in_model_hr10"] = float(np.mean(in_model))
    results["popularity_hr10"] = float(np.mean(popularity))
    candidates = hp.to_dict().get("negative_candidates", 1)
    folds = {method: FoldIn(items_a, bias_a, regularization=hp.regularization, method=method,
                            negative_candidates=candidates) for method in FOLD_IN_METHODS}
    for name, kwargs in (variants or {}).items():
        folds[name] = FoldIn(items_a, bias_a, regularization=hp.regularization,
                             **{"negative_candidates": candidates, **kwargs})
    results["variant_hr10"], results["variant_fit_ms_p50"] = {}, {}
    with threadpool_limits(limits=1, user_api="blas"):
        for method, fold in folds.items():
            hits, times = [], []
            for target, history, known, known_plays in histories:
                if not known.shape[0]:  # the service answers by popularity then
                    hits.append(hit(listeners_a, target, np.concatenate((history, unknown_a))))
                    continue
                start = time.perf_counter()
                query = fold.fit(known, known_plays)
                times.append(time.perf_counter() - start)
                hits.append(hit(items_a @ query[:-1] + bias_a, target, np.concatenate((history, unknown_a))))
            hr10, fit_ms = float(np.mean(hits)), float(np.median(times) * 1e3) if times else float("nan")
            if method in FOLD_IN_METHODS:
                results[f"fold_in_{method}_hr10"], results[f"fold_in_{method}_fit_ms_p50"] = hr10, fit_ms
            else:
                results["variant_hr10"][method], results["variant_fit_ms_p50"][method] = hr10, fit_ms
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="hetrec:" + str(Path(__file__).resolve().parents[2] / "shared/data/lastfm-2k"))
    parser.add_argument("--cache", type=Path, default=Path("var/fold-in-protocol"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the trainer's default epochs")
    parser.add_argument("--seeds", type=int, default=1, help="seeds seed .. seed + N - 1, HR@10 pooled")
    parser.add_argument("--variants", action="store_true", help="also the FoldIn settings of VARIANTS")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from trainer_service.hyperparameters import Hyperparameters  # noqa: PLC0415

    hp = Hyperparameters() if args.epochs is None else Hyperparameters().with_overrides(epochs=args.epochs)
    data = load(args.data)
    runs = [protocol(data, args.data, seed, hp, args.cache, VARIANTS if args.variants else None)
            for seed in range(args.seed, args.seed + args.seeds)]
    pooled = {key: float(np.mean([r[key] for r in runs])) for key in
              ("in_model_hr10", "popularity_hr10", "fold_in_bpr_hr10", "fold_in_least_squares_hr10")}
    pooled["variant_hr10"] = {name: float(np.mean([r["variant_hr10"][name] for r in runs]))
                              for name in runs[0]["variant_hr10"]}
    results = {"data": args.data, "seeds": [r["seed"] for r in runs],
               "heldout_users": sum(r["heldout_users"] for r in runs), **pooled, "per_run": runs}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        in_model, popularity = pooled["in_model_hr10"], pooled["popularity_hr10"]
        print(f"{args.data}: seeds {results['seeds']}, {results['heldout_users']} held-out users; "
              f"in-model HR@10 {in_model:.4f}, popularity {popularity:.4f}")
        rows = {"fold-in bpr (chosen)": pooled["fold_in_bpr_hr10"],
                "fold-in least squares": pooled["fold_in_least_squares_hr10"], **pooled["variant_hr10"]}
        for name, value in rows.items():
            print(f"| {name} | {value:.4f} | {value / in_model:.2f}x in-model | {value / popularity:.2f}x popularity |")
    return results


if __name__ == "__main__":
    main()
