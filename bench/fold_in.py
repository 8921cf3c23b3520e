"""The fold-in evaluation protocol (new listeners from their history), run by the ``history``
part of ``make bench`` (``bench/history.py``) on each data set and seed:

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
``cache`` (keyed by data, seed and hyperparameters), so a rerun with ``--keep-workdir`` does not
train again. Also times the fold-in (median of the held-out users' fits, BLAS on one thread
as the index service runs it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from index_service.fold_in import FoldIn

log = logging.getLogger(__name__)
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
    log.info("trained model %s in %.0f s", which, seconds)
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


def held_out_history(data, indptr: np.ndarray, user: int, target: int,
                     listeners_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A held-out user's history without their target: (artists, plays, known), ``known`` the mask
    of the artists model A saw (the only ones a fold-in can use)."""
    artists = data.artists[indptr[user]:indptr[user + 1]].astype(np.int64)
    plays = data.weights[indptr[user]:indptr[user + 1]].astype(np.float64)
    keep = artists != target
    history, history_plays = artists[keep], plays[keep]
    return history, history_plays, listeners_a[history] > 0


def protocol(data, label: str, seed: int, hp, cache: Path | None = None) -> dict:
    """The protocol on ``data`` with ``seed`` (the split's and the trainings'); ``hp`` the
    trainer's hyperparameters (its seed is replaced). HR@10 per method, fit p50 ms per fold-in
    method, training seconds, the version's regularization."""
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
        history, history_plays, known = held_out_history(data, indptr, user, target, listeners_a)
        histories.append((target, history, history[known], history_plays[known]))
        lengths.append(int(known.sum()))
        in_model.append(hit(users_b[user] @ items_b.T + bias_b, target, history))
        popularity.append(hit(listeners_a, target, np.concatenate((history, unknown_a))))
    results["history_length_median"] = float(np.median(lengths))
    results["in_model_hr10"] = float(np.mean(in_model))
    results["popularity_hr10"] = float(np.mean(popularity))
    candidates = hp.to_dict().get("negative_candidates", 1)
    folds = {"bpr": FoldIn(items_a, bias_a, regularization=hp.regularization, negative_candidates=candidates)}
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
            results[f"fold_in_{method}_hr10"] = float(np.mean(hits))
            results[f"fold_in_{method}_fit_ms_p50"] = float(np.median(times) * 1e3) if times else float("nan")
    return results

