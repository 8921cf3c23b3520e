"""The ``history`` part: new listeners from their history (RecommendForHistory) and batches.

- Fold-in quality, the protocol of ``bench/fold_in.py`` on every data set of
  ``settings.history_datasets`` for seeds 0, 1, ... (``history_seeds`` of them, more until
  ``history_min_heldout_users`` users were held out; each seed its own held-out users and two
  trainings with the trainer's current default hyperparameters; quick mode trains
  ``quality_epochs`` epochs). HR@10 is pooled over the seeds' held-out users (the mean of the
  seeds' means: every seed holds out the same number of users).
- Speed, ``bench/history_batch.py``: RecommendForHistory p50 in-process for a 100-artist history
  at Last.fm 2K's size (the fold-in fit alone beside it), and BatchRecommend of 100 against single
  Recommend calls over real gRPC.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bench.models import data_path, present_datasets
from bench.settings import BenchSettings

log = logging.getLogger(__name__)

FORMATS = {"lastfm-2k": "hetrec", "movielens-small": "movielens"}
FOLD_IN_TARGET_VS_IN_MODEL = 0.9
FOLD_IN_TARGET_VS_POPULARITY = 2.0
HISTORY_P50_TARGET_MS = 2.0
BATCH_TARGET_SPEEDUP = 5.0


def _pooled(runs: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in runs]))


def fold_in_dataset(name: str, settings: BenchSettings, workdir: Path) -> dict:
    """The protocol on data set ``name`` for every seed; pooled HR@10 and ratios."""
    from bench import fold_in
    from trainer_service.data import load_files
    from trainer_service.hyperparameters import Hyperparameters

    path = data_path(settings, name)
    data = load_files(path, FORMATS[name])
    hp = Hyperparameters().resolved(data.num_interactions, data.num_users)
    if settings.quality_epochs is not None:
        hp = hp.with_overrides(epochs=settings.quality_epochs)
    runs: list[dict] = []
    while len(runs) < settings.history_seeds or \
            sum(r["heldout_users"] for r in runs) < settings.history_min_heldout_users:
        seed = len(runs)
        runs.append(fold_in.protocol(data, name, seed, hp, workdir / "fold-in-protocol"))
        log.info("history %s seed %d: fold-in %.4f, in-model %.4f, popularity %.4f", name, seed,
                 runs[-1]["fold_in_bpr_hr10"], runs[-1]["in_model_hr10"], runs[-1]["popularity_hr10"])
    out = {"dataset": name, "path": str(path), "users": int(data.num_users), "artists": int(data.num_artists),
           "interactions": int(data.num_interactions), "seeds": len(runs),
           "heldout_users": int(sum(r["heldout_users"] for r in runs)),
           "hyperparameters": hp.to_dict(), "per_run": runs}
    for key in ("in_model_hr10", "popularity_hr10", "fold_in_bpr_hr10"):
        out[key] = _pooled(runs, key)
    out["fold_in_bpr_fit_ms_p50"] = float(np.median([r["fold_in_bpr_fit_ms_p50"] for r in runs]))
    out["vs_in_model"] = out["fold_in_bpr_hr10"] / out["in_model_hr10"] if out["in_model_hr10"] else None
    out["vs_popularity"] = out["fold_in_bpr_hr10"] / out["popularity_hr10"] if out["popularity_hr10"] else None
    return out


def run(settings: BenchSettings, workdir: Path) -> dict:
    from bench import history_batch

    names, notes = present_datasets(settings, settings.history_datasets)
    datasets = [fold_in_dataset(name, settings, workdir) for name in names]
    speed = history_batch.measure(settings.history_artists, settings.history_users, 64,
                                  settings.history_queries, settings.history_batch_rounds)
    lists = speed["batch"]["lists"]
    speed["batch_speedup"] = lists["batch_of_100_rps"] / max(lists["single_sequential_rps"],
                                                              lists["single_16_in_flight_rps"])
    return {"fold_in": datasets, "speed": speed, "notes": notes}
