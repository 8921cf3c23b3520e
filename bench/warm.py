"""The ``warm`` part: a warm-started retrain after +5% new plays against a cold retrain on the same
data, and the time from a play recorded to a version that contains it (``--retrain-after-plays``).

Protocol, per data set and seed ``s`` (the trainer's default hyperparameters with ``seed=s``):

1. The whole data ``D``; the pipeline's own leave-one-out split of it (seed ``s``) names each
   listener's held-out artist.
2. New plays ``N`` (``warm_new_fraction`` of D's rows): every row of a random set of listeners
   ("new listeners", about ``warm_new_user_share`` of N), every row of a random set of artists
   ("new artists", about ``warm_new_artist_share`` of N), every held-out row (the newest play of
   a listener is the one to predict, and the base never saw it), then random other rows.
3. The base version: the trainer's pipeline on ``D - N`` (a table file), cold.
4. ``N`` recorded in a SQLite play log; from the base, two retrains of the table plus the log
   (exactly ``D``: checked) through the whole pipeline: cold (``warm_start="none"``) and warm
   with the trainer's default schedule. Both are evaluated by the pipeline on D's held-out rows,
   which the base never saw; the wall time is the whole ``run_training`` call (loading to
   published), and the phases' seconds are kept.
5. The schedule sweep (``warm_schedules``: epoch fraction, learning-rate scale), training only
   (``sweep``: no publishing, so many schedules fit the time): a base fitted on D - N as the
   pipeline fits, a cold fit on D, and a warm fit from the base per schedule, HR@10 on the same
   split. This is the measurement the default schedule was chosen on.

HR@10 ratio = mean warm / mean cold over the seeds; wall-time ratio likewise.

Freshness (Last.fm 2K, seed 0): a real trainer process (``serve --events sqlite:... 
--retrain-after-plays |N| --default-source table:...``) over a models dir holding the base; N is
recorded in one go, and the time from that call's return to the new version on disk is the
"play recorded to a version that contains it" figure (the poll, the job's process start, the warm
retrain and the publish).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.models import data_path
from bench.settings import BenchSettings, child_env

log = logging.getLogger(__name__)

WARM_HR_RATIO_TARGET = 0.98
WARM_TIME_RATIO_TARGET = 0.30
FORMATS = {"lastfm-2k": "hetrec", "movielens-small": "movielens"}
TABLE = "table:{path}:weight=plays"
RECORD_BATCH = 1_000
FRESHNESS_GIVE_UP_S = 600.0


def _load(name: str, settings: BenchSettings, seed: int):
    """The data set ``name`` (a shared data set, or ``synthetic:SIZE``) as ``Interactions``."""
    from trainer_service.data import generate, load_files

    if name.startswith("synthetic:"):
        return generate(name.split(":", 1)[1], seed=0).interactions
    return load_files(data_path(settings, name), FORMATS[name])


def new_rows(data, heldout: np.ndarray, rng: np.random.Generator, fraction: float, user_share: float,
             artist_share: float) -> tuple[np.ndarray, dict]:
    """A boolean mask (N,) of the rows that arrive as new plays (the module's step 2), and what
    it holds: rows, new listeners, new artists, their shares of the new rows."""
    n = data.num_interactions
    budget = int(round(fraction * n))
    new = np.zeros(n, dtype=bool)
    per_user = np.bincount(data.users, minlength=data.num_users)
    per_artist = np.bincount(data.artists, minlength=data.num_artists)
    new_users, taken = [], 0
    for user in rng.permutation(data.num_users):
        if taken >= user_share * budget:
            break
        new_users.append(user)
        taken += per_user[user]
    new_artists, taken = [], 0
    for artist in rng.permutation(data.num_artists):
        if taken >= artist_share * budget:
            break
        if per_artist[artist] <= 0.01 * budget:  # a handful of listeners each, as new artists have
            new_artists.append(artist)
            taken += per_artist[artist]
    new |= np.isin(data.users, new_users) | np.isin(data.artists, new_artists)
    new[heldout] = True
    room = budget - int(new.sum())
    if room > 0:
        new[rng.choice(np.flatnonzero(~new), size=room, replace=False)] = True
    counts = {"rows": int(new.sum()), "fraction": float(new.sum() / n), "new_users": len(new_users),
              "new_artists": len(new_artists),
              "new_user_share": float(np.isin(data.users[new], new_users).mean()),
              "new_artist_share": float(np.isin(data.artists[new], new_artists).mean())}
    return new, counts


def new_plays(data, seed: int, settings: BenchSettings) -> tuple[np.ndarray, np.ndarray, dict]:
    """For ``seed``: the row indices the pipeline's split of ``data`` holds out (its seed is the
    hyperparameters' ``seed``), the mask of the new rows (``new_rows``) and their counts."""
    from trainer_service.evaluation import leave_one_out_split

    split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists, seed)
    key = data.users.astype(np.int64) * data.num_artists + data.artists
    heldout = np.flatnonzero(np.isin(key, split.heldout_users.astype(np.int64) * data.num_artists
                                     + split.heldout_artists))
    new, counts = new_rows(data, heldout, np.random.default_rng(1_000 + seed), settings.warm_new_fraction,
                           settings.warm_new_user_share, settings.warm_new_artist_share)
    return heldout, new, counts


def _write_table(path: Path, data, rows: np.ndarray) -> None:
    """The ``rows`` of ``data`` as a CSV table (user_id, artist_id, plays; float32 plays written
    exactly), through pyarrow: full scale is 17M rows."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    table = pa.table({"user_id": pa.array(data.user_ids[data.users[rows]]),
                      "artist_id": pa.array(data.artist_ids[data.artists[rows]]),
                      "plays": pa.array(data.weights[rows])})
    pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="none"))


def _record(url: str, data, rows: np.ndarray) -> int:
    """Record the rows as plays (one per row, its weight as the play count); the last position."""
    from play_log import Play, open_play_log

    now = time.time()
    plays = [Play(str(u), str(a), float(w), now) for u, a, w in zip(
        data.user_ids[data.users[rows]], data.artist_ids[data.artists[rows]], data.weights[rows])]
    with open_play_log(url) as play_log:
        play_log.record_many([(f"bench-{i}", plays[i:i + RECORD_BATCH]) for i in range(0, len(plays), RECORD_BATCH)])
        return play_log.last_position()


def _train(source: str, hp, models_dir: Path, data_dir: Path, warm_start: str, events_url: str | None = None,
           schedule=None) -> dict:
    from trainer_service.pipeline import run_training
    from trainer_service.training_request import TrainingOptions
    from trainer_service.warm_start import WarmSchedule

    started = time.perf_counter()
    result = run_training(source, hp, models_dir, data_dir=data_dir, events_url=events_url,
                          options=TrainingOptions(gate="off", warm_start=warm_start),
                          warm_schedule=schedule or WarmSchedule())
    wall = time.perf_counter() - started
    training = result.manifest.training
    made = result.manifest.precomputed
    lists = None if made is None else {
        "seconds": made.seconds, "recommend": made.recommend_method, "similar": made.similar_method,
        "recommend_recall_at_10": made.recommend_recall_at_10, "similar_recall_at_10": made.similar_recall_at_10}
    return {"hr10": float(result.metrics["hit_rate_at_10"]), "wall_s": wall, "seconds": dict(result.seconds),
            "lists": lists,
            "epochs": training.epochs_trained, "warm_from": training.warm_start_from_version,
            "known_users": training.warm_start_known_users, "known_artists": training.warm_start_known_artists,
            "version": result.version, "users": result.manifest.num_users, "artists": result.manifest.num_artists}


def _subset(data, rows: np.ndarray):
    """``data``'s ``rows`` as their own ``Interactions`` (coded as a table of them would be)."""
    import pyarrow as pa

    from trainer_service.data.coding import build_interactions

    return build_interactions(pa.chunked_array([pa.array(data.user_ids[data.users[rows]])]),
                              pa.chunked_array([pa.array(data.artist_ids[data.artists[rows]])]),
                              data.weights[rows].astype(np.float64), source=data.source, shown=data.source)


def _fit_hr(data, hp, start=None) -> tuple[float, float, object]:
    """HR@10 on ``data``'s pipeline split (seed ``hp.seed``) of a model fitted as the pipeline
    fits one (no validation: the default has no early stopping) from ``start(split)`` (a function
    of the split giving the starting ``Factors``; None: cold), the training seconds (the start
    included, as the pipeline counts it), and the ``BaseFactors`` of the result (ids of ``data``)."""
    import functools

    from trainer_service.bpr import BPRTrainer
    from trainer_service.evaluation import evaluate_model, leave_one_out_split, sample_heldout
    from trainer_service.pipeline import DEFAULT_MAX_EVAL_USERS, fit
    from trainer_service.warm_start import BaseFactors

    split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists, hp.seed)
    started = time.perf_counter()
    factory = functools.partial(BPRTrainer, initial=None if start is None else start(split))
    fitted = fit(split.train_users, split.train_artists, split.train_weights, split.num_users, split.num_artists, hp,
                 trainer_factory=factory)
    seconds = time.perf_counter() - started
    f = fitted.factors
    hr = evaluate_model(f.user_factors, f.artist_factors, f.artist_bias, split,
                        sample_heldout(split, DEFAULT_MAX_EVAL_USERS, hp.seed)).hit_rate_at_10
    return float(hr), seconds, BaseFactors(0, data.user_ids, f.user_factors, data.artist_ids, f.artist_factors,
                                           f.artist_bias)


def _hr_of_start(data, hp, start) -> float:
    """HR@10 of the starting factors themselves (no epoch), on the same split."""
    from trainer_service.evaluation import evaluate_model, leave_one_out_split, sample_heldout
    from trainer_service.pipeline import DEFAULT_MAX_EVAL_USERS

    split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists, hp.seed)
    f = start(split)
    return float(evaluate_model(f.user_factors, f.artist_factors, f.artist_bias, split,
                                sample_heldout(split, DEFAULT_MAX_EVAL_USERS, hp.seed)).hit_rate_at_10)


def sweep(data, seed: int, settings: BenchSettings) -> dict:
    """The warm schedules' HR@10 against a cold fit on ``data``, training only (no publishing),
    for split and data seed ``seed`` (one the pipeline rows do not report): a base fitted on
    D - N, then a start from it (new rows folded in from the split's training part) and each
    schedule from there; also the start's own HR@10 (no epoch)."""
    from trainer_service.hyperparameters import Hyperparameters
    from trainer_service.warm_start import TrainingRows, WarmSchedule, warm_factors

    hp = Hyperparameters(seed=seed).resolved(data.num_interactions, data.num_users)
    if settings.quality_epochs is not None:
        hp = hp.with_overrides(epochs=settings.quality_epochs)
    _, new, _ = new_plays(data, seed, settings)
    _, _, base = _fit_hr(_subset(data, ~new), hp)
    cold_hr, cold_s, _ = _fit_hr(data, hp)

    def start(split):
        rows = TrainingRows(split.train_users, split.train_artists, split.train_weights)
        return warm_factors(base, data.user_ids, data.artist_ids, hp, rows=rows).factors

    rows = []
    for fraction, scale in settings.warm_schedules:
        schedule = WarmSchedule(fraction, scale)
        hr, seconds, _ = _fit_hr(data, schedule.hyperparameters(hp), start)
        rows.append({"epoch_fraction": fraction, "learning_rate_scale": scale, "hr10": hr, "training_s": seconds,
                     "epochs": schedule.hyperparameters(hp).epochs})
        log.info("sweep seed %d: schedule (%g, %g): HR@10 %.4f vs cold %.4f; %.1f s vs %.1f s training", seed, fraction,
                 scale, hr, cold_hr, seconds, cold_s)
    return {"seed": seed, "cold_hr10": cold_hr, "cold_training_s": cold_s, "start_hr10": _hr_of_start(data, hp, start),
            "schedules": rows}


def chain(data, seed: int, settings: BenchSettings) -> dict:
    """A chain of warm starts, training only (no publishing), for split and data seed ``seed``:
    generations D_0 < D_1 < ... < D_G = ``data``, each D_k = D_(k-1) + new plays of
    ``warm_chain_fraction`` of D_k (``new_rows``: the same mix of new listeners and artists as
    the pipeline rows, every held-out play of D_k's split among them, so that no model before
    generation k trained on what D_k holds out); D_0 is fitted cold, every later generation warm
    from the one before (as the trainer chains them when nothing ends the chain) and cold, on
    D_k's split: the HR@10 ratio per generation, with its growth over D_0."""
    from trainer_service.evaluation import leave_one_out_split
    from trainer_service.hyperparameters import Hyperparameters
    from trainer_service.warm_start import TrainingRows, WarmSchedule, warm_factors

    hp = Hyperparameters(seed=seed).resolved(data.num_interactions, data.num_users)
    if settings.quality_epochs is not None:
        hp = hp.with_overrides(epochs=settings.quality_epochs)
    rng = np.random.default_rng(5_000 + seed)
    rows = np.arange(data.num_interactions)
    generations = [rows]
    for _ in range(settings.warm_chain_generations):
        current = _subset(data, rows)
        split = leave_one_out_split(current.users, current.artists, current.weights, current.num_users,
                                    current.num_artists, seed)
        key = current.users.astype(np.int64) * current.num_artists + current.artists
        heldout = np.flatnonzero(np.isin(key, split.heldout_users.astype(np.int64) * current.num_artists
                                         + split.heldout_artists))
        new, _ = new_rows(current, heldout, rng, settings.warm_chain_fraction, settings.warm_new_user_share,
                          settings.warm_new_artist_share)
        rows = rows[~new]
        generations.append(rows)
    generations.reverse()
    schedule = WarmSchedule()
    warm_hp = schedule.hyperparameters(hp)
    root = generations[0].size
    base, steps = None, []
    for k, rows in enumerate(generations):
        current = _subset(data, rows)
        cold_hr, _, cold_base = _fit_hr(current, hp)
        if base is None:
            base = cold_base
            continue

        def start(split, base=base, current=current):
            trained = TrainingRows(split.train_users, split.train_artists, split.train_weights)
            return warm_factors(base, current.user_ids, current.artist_ids, hp, rows=trained).factors

        warm_hr, _, base = _fit_hr(current, warm_hp, start)
        steps.append({"generation": k, "interactions": int(rows.size), "growth": float(rows.size / root - 1.0),
                      "cold_hr10": cold_hr, "hr10": warm_hr, "hr_ratio": warm_hr / cold_hr})
        log.info("chain seed %d generation %d (+%.1f%%): HR@10 %.4f vs cold %.4f", seed, k,
                 100.0 * (rows.size / root - 1.0), warm_hr, cold_hr)
    return {"seed": seed, "root_interactions": int(root), "steps": steps}


def chosen_max_growth(generations: list[dict]) -> float:
    """The rule ``WARM_MAX_GROWTH`` is chosen by, over the chain rows: the growth of the last
    generation up to which every warm start of the chain keeps a mean HR@10 ratio to a cold fit
    of at least ``WARM_HR_RATIO_TARGET`` (the single warm start's target, on the same footing);
    0 when the first does not."""
    picked = 0.0
    for row in generations:
        if row["hr_ratio_mean"] < WARM_HR_RATIO_TARGET:
            break
        picked = row["growth"]
    return picked


def chains(settings: BenchSettings) -> dict:
    """The chain part: ``chain`` over ``warm_chain_seeds`` on the first warm data set: per
    generation, the mean growth and the HR@10 ratio's mean, standard error over the seeds and
    worst seed; and the chain limits the trainer applies."""
    from trainer_service.warm_start import WARM_MAX_CHAIN, WARM_MAX_GROWTH

    name = settings.warm_datasets[0]
    data = _load(name, settings, 0)
    runs = [chain(data, seed, settings) for seed in settings.warm_chain_seeds]
    rows = []
    for k in range(settings.warm_chain_generations):
        ratios = np.array([r["steps"][k]["hr_ratio"] for r in runs])
        rows.append({"generation": k + 1, "growth": float(np.mean([r["steps"][k]["growth"] for r in runs])),
                     "hr_ratio_mean": float(ratios.mean()),
                     "hr_ratio_se": float(ratios.std(ddof=1) / np.sqrt(ratios.size)) if ratios.size > 1 else 0.0,
                     "hr_ratio_min": float(ratios.min()),
                     "cold_hr10": float(np.mean([r["steps"][k]["cold_hr10"] for r in runs])),
                     "hr10": float(np.mean([r["steps"][k]["hr10"] for r in runs]))})
    return {"dataset": name, "seeds": list(settings.warm_chain_seeds), "fraction": settings.warm_chain_fraction,
            "max_chain": WARM_MAX_CHAIN, "max_growth": WARM_MAX_GROWTH, "rule_max_growth": chosen_max_growth(rows),
            "generations": rows, "per_run": runs}


def one_seed(name: str, data, seed: int, settings: BenchSettings, workdir: Path, epochs: int | None = None) -> dict:
    """Base, cold and warm retrains for ``seed`` (the module's protocol), with ``epochs`` (None:
    the trainer's default, or the quick settings' override)."""
    from trainer_service.hyperparameters import Hyperparameters

    hp = Hyperparameters(seed=seed)
    if epochs is not None or settings.quality_epochs is not None:
        hp = hp.with_overrides(epochs=epochs or settings.quality_epochs)
    heldout, new, counts = new_plays(data, seed, settings)
    keep = ~new
    run_dir = workdir / f"warm-{name.replace(':', '-')}-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    _write_table(run_dir / "base.csv", data, keep)
    source = TABLE.format(path="base.csv")
    url = f"sqlite:///{run_dir / 'plays.db'}"
    base = _train(source, hp, run_dir / "models", run_dir, "none")
    _record(url, data, new)
    cold = _train(source, hp, run_dir / "cold-models", run_dir, "none", url)
    # The check that the comparison is fair: the merged data is D (same rows, same split).
    from trainer_service.data import load_source, parse_source
    from trainer_service.data.log_plays import read_through, with_log_plays
    from play_log import open_play_log

    with open_play_log(url) as play_log:
        mark = play_log.last_position()
        plays, forgotten = read_through(play_log, mark)
    merged = with_log_plays(load_source(parse_source(source), run_dir), plays, forgotten, mark)
    same_data = (merged.num_interactions == data.num_interactions and bool(np.array_equal(merged.user_ids, data.user_ids))
                 and bool(np.array_equal(merged.artist_ids, data.artist_ids)))
    # The trainer's default schedule through the whole pipeline (the wall-time figure).
    models = run_dir / "warm-models"
    shutil.copytree(run_dir / "models", models)
    row = _train(source, hp, models, run_dir, "newest", url)
    warm = {**row, "hr_ratio": row["hr10"] / cold["hr10"], "time_ratio": row["wall_s"] / cold["wall_s"],
            "training_ratio": row["seconds"]["training"] / cold["seconds"]["training"]}
    log.info("warm %s seed %d: HR@10 %.4f vs cold %.4f, %.1f s vs %.1f s", name, seed, row["hr10"], cold["hr10"],
             row["wall_s"], cold["wall_s"])
    for path in ("cold-models", "warm-models"):
        shutil.rmtree(run_dir / path, ignore_errors=True)
    return {"seed": seed, "new": counts, "base": base, "cold": cold, "warm": warm, "same_data_as_d": same_data,
            "heldout_rows": int(heldout.size), "load_average": os.getloadavg()[0], "users": data.num_users,
            "artists": data.num_artists, "interactions": data.num_interactions}


def chosen_schedules(schedules: list[dict]) -> set[int]:
    """The rule the default warm schedule is chosen by, over the sweep's rows: those with the
    fewest epochs among the rows whose mean per-seed HR@10 ratio to a cold retrain, less its
    standard error over the seeds, stays >= ``WARM_HR_RATIO_TARGET`` (rows of as many epochs cost
    the same, and their learning rates are told apart by less than that error: each is a pick);
    none when no row qualifies. Not the worst seed: a seed's ratio moves mostly with its cold
    fit's own noise, the same for every schedule."""
    ok = [i for i, row in enumerate(schedules) if row["hr_ratio_mean"] - row["hr_ratio_se"] >= WARM_HR_RATIO_TARGET]
    fewest = min((schedules[i]["epochs"] for i in ok), default=None)
    return {i for i in ok if schedules[i]["epochs"] == fewest}


def dataset(name: str, settings: BenchSettings, workdir: Path, *, seeds: int, sweep_seeds: tuple[int, ...] = (),
            epochs: int | None = None) -> dict:
    """The pipeline rows over ``seeds`` seeds on data set ``name`` (``epochs``: see ``one_seed``),
    and the schedule sweep over ``sweep_seeds`` (none: no sweep): means, worst seeds."""
    from trainer_service.warm_start import WARM_EPOCH_FRACTION, WARM_LEARNING_RATE_SCALE

    data = _load(name, settings, 0)
    runs = [one_seed(name, data, seed, settings, workdir, epochs) for seed in range(seeds)]
    warm = [r["warm"] for r in runs]
    cold_hr = float(np.mean([r["cold"]["hr10"] for r in runs]))
    cold_wall = float(np.mean([r["cold"]["wall_s"] for r in runs]))
    sweeps = [sweep(data, seed, settings) for seed in sweep_seeds]
    schedules = []
    sweep_cold = float(np.mean([r["cold_hr10"] for r in sweeps])) if sweeps else 0.0
    for i, (fraction, scale) in enumerate(settings.warm_schedules if sweeps else ()):
        rows = [r["schedules"][i] for r in sweeps]
        ratios = np.array([row["hr10"] / r["cold_hr10"] for row, r in zip(rows, sweeps)])
        se = float(ratios.std(ddof=1) / np.sqrt(ratios.size)) if ratios.size > 1 else 0.0
        schedules.append({
            "epoch_fraction": fraction, "learning_rate_scale": scale,
            "default": (fraction, scale) == (WARM_EPOCH_FRACTION, WARM_LEARNING_RATE_SCALE),
            "epochs": rows[0]["epochs"], "hr10": float(np.mean([r["hr10"] for r in rows])),
            "hr_ratio": float(np.mean([r["hr10"] for r in rows]) / sweep_cold),
            "hr_ratio_mean": float(ratios.mean()), "hr_ratio_se": se,
            "hr_ratio_min": float(ratios.min()),
            "training_ratio": float(np.mean([row["training_s"] / r["cold_training_s"] for row, r in zip(rows, sweeps)])),
        })
    picks = chosen_schedules(schedules)
    for i, row in enumerate(schedules):
        row["rule_pick"] = i in picks
    seconds = lambda key, rows: float(np.mean([r["seconds"][key] for r in rows]))  # noqa: E731
    colds = [r["cold"] for r in runs]

    def lists(rows: list[dict]) -> dict:
        """The lists' mean seconds and, per side, the methods that made them (distinct, "/")."""
        made = [r["lists"] for r in rows if r.get("lists")]
        if not made:
            return {"lists_s": None, "lists_methods": ""}
        side = lambda key: "/".join(sorted({m[key] for m in made}))  # noqa: E731
        return {"lists_s": float(np.mean([m["seconds"] for m in made])),
                "lists_methods": f"Recommend {side('recommend')}, SimilarArtists {side('similar')}"}
    cold_lists, warm_lists = lists(colds), lists(warm)
    return {"dataset": name, "users": int(runs[0]["users"]), "artists": int(runs[0]["artists"]),
            "interactions": int(runs[0]["interactions"]), "seeds": len(runs),
            "cold_hr10": cold_hr, "cold_wall_s": cold_wall,
            "cold_loading_s": seconds("loading", colds), "cold_training_s": seconds("training", colds),
            "cold_evaluating_s": seconds("evaluating", colds), "cold_publishing_s": seconds("publishing", colds),
            "cold_epochs": runs[0]["cold"]["epochs"], "epochs": warm[0]["epochs"],
            "default_epochs": epochs is None,
            "hr10": float(np.mean([w["hr10"] for w in warm])),
            "hr_ratio": float(np.mean([w["hr10"] for w in warm]) / cold_hr),
            "hr_ratio_min": float(min(w["hr_ratio"] for w in warm)),
            "wall_s": float(np.mean([w["wall_s"] for w in warm])),
            "time_ratio": float(np.mean([w["wall_s"] for w in warm]) / cold_wall),
            "training_ratio": float(np.mean([w["training_ratio"] for w in warm])),
            "loading_s": seconds("loading", warm), "training_s": seconds("training", warm),
            "evaluating_s": seconds("evaluating", warm), "publishing_s": seconds("publishing", warm),
            "cold_lists_s": cold_lists["lists_s"], "cold_lists_methods": cold_lists["lists_methods"],
            "lists_s": warm_lists["lists_s"], "lists_methods": warm_lists["lists_methods"],
            "load_average": float(np.mean([r["load_average"] for r in runs])),
            "sweep_seeds": list(sweep_seeds), "sweep_cold_hr10": sweep_cold,
            "sweep_start_hr10": float(np.mean([r["start_hr10"] for r in sweeps])) if sweeps else 0.0,
            "sweep_start_ratio": float(np.mean([r["start_hr10"] for r in sweeps]) / sweep_cold) if sweeps else 0.0,
            "new_fraction": float(np.mean([r["new"]["fraction"] for r in runs])),
            "new_user_share": float(np.mean([r["new"]["new_user_share"] for r in runs])),
            "new_artist_share": float(np.mean([r["new"]["new_artist_share"] for r in runs])),
            "new_users": int(runs[0]["new"]["new_users"]), "new_artists": int(runs[0]["new"]["new_artists"]),
            "new_rows": int(runs[0]["new"]["rows"]),
            "same_data": all(r["same_data_as_d"] for r in runs),
            "schedules": schedules, "per_run": runs, "sweeps": sweeps}


def _trainer_dir(name: str, settings: BenchSettings, workdir: Path, folder: str):
    """A fresh ``workdir/folder`` for a real trainer over seed 0's base (its table and versions),
    and seed 0's new plays: (the folder, the data, the new rows, their counts, the URL of a play
    log in the folder, empty: the caller records the plays when its protocol says)."""
    run_dir = workdir / f"warm-{name.replace(':', '-')}-0"
    folder_path = workdir / folder
    shutil.rmtree(folder_path, ignore_errors=True)
    folder_path.mkdir(parents=True)
    shutil.copy(run_dir / "base.csv", folder_path / "base.csv")
    shutil.copytree(run_dir / "models", folder_path / "models")
    data = _load(name, settings, 0)
    _, new, counts = new_plays(data, 0, settings)
    return folder_path, data, new, counts, f"sqlite:///{folder_path / 'plays.db'}"


def freshness(name: str, settings: BenchSettings, workdir: Path, standby: bool = True) -> dict:
    """The time from recording the new plays to the version that contains them (module docstring),
    with the trainer's standby training process (the default) or without it (``--no-standby``:
    the job starts its own process). The plays are recorded once the trainer is ready (its
    standby has imported TensorFlow), as they would reach a trainer that has been running."""
    from model_store import list_versions

    fresh, data, new, counts, url = _trainer_dir(name, settings, workdir,
                                                 "warm-freshness" if standby else "warm-freshness-no-standby")
    before = list_versions(fresh / "models")
    argv = [sys.executable, "-m", "trainer_service", "serve", "--models-dir", str(fresh / "models"), "--port", "0",
            "--data-dir", str(fresh), "--default-source", TABLE.format(path="base.csv"), "--events", url,
            "--retrain-after-plays", str(counts["rows"]), "--retrain-poll", "1"] + ([] if standby else ["--no-standby"])
    ready = "standby: ready for a job" if standby else "trainer listening on"
    with open(fresh / "trainer.log", "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env())
        try:
            started = time.perf_counter()
            while ready not in (fresh / "trainer.log").read_text():
                if process.poll() is not None or time.perf_counter() - started > FRESHNESS_GIVE_UP_S:
                    raise RuntimeError(f"the trainer did not log {ready!r}; see {fresh / 'trainer.log'}")
                time.sleep(0.05)
            time.sleep(1.5)  # a poll of the log's position before the plays: the next one sees them
            _record(url, data, new)
            recorded = time.perf_counter()
            while list_versions(fresh / "models") == before:
                if process.poll() is not None or time.perf_counter() - recorded > FRESHNESS_GIVE_UP_S:
                    raise RuntimeError(f"no version after the plays; see {fresh / 'trainer.log'}")
                time.sleep(0.05)
            seconds = time.perf_counter() - recorded
        finally:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    from model_store import read_manifest

    manifest = read_manifest(fresh / "models" / str(list_versions(fresh / "models")[-1]))
    return {"dataset": name, "plays": counts["rows"], "seconds": seconds, "poll_s": 1.0, "standby": standby,
            "warm_from": manifest.training.warm_start_from_version if manifest.training else 0,
            "trained_through": manifest.play_log_position,
            "command": "python " + " ".join(argv[1:])}


def service_jobs(name: str, settings: BenchSettings, workdir: Path) -> dict:
    """What a user of the trainer service waits for, StartTraining to the job's end, for the
    pipeline rows' seed 0: a real trainer with its defaults (the standby process on) over the
    base version, the new plays in its log; a warm job (from the base, the default), then a cold
    one (``warm_start`` none) on the same data, each once the standby is ready (the quality gate
    off, so that both publish). Unlike the pipeline rows (``run_training`` in this process, where
    TensorFlow is imported and the training step compiled once for every run of the same
    shapes), each job here pays what a job pays: its process's compilation, and the import too
    where no standby is ready."""
    import grpc

    from launcher.processes import ServiceProcess
    from musicrec.v1 import trainer_pb2, trainer_pb2_grpc

    svc, data, new, counts, url = _trainer_dir(name, settings, workdir, "warm-service")
    _record(url, data, new)
    argv = [sys.executable, "-m", "trainer_service", "serve", "--models-dir", str(svc / "models"), "--port", "0",
            "--data-dir", str(svc), "--default-source", TABLE.format(path="base.csv"), "--events", url]
    trainer = ServiceProcess("trainer", argv, svc / "trainer.log", env=child_env()).start()
    seconds = {}
    try:
        with grpc.insecure_channel(trainer.address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            for ready, (kind, warm_start) in enumerate((("warm", trainer_pb2.WARM_START_NEWEST),
                                                        ("cold", trainer_pb2.WARM_START_NONE)), start=1):
                started = time.perf_counter()
                while trainer.log_text().count("standby: ready for a job") < ready:
                    if trainer.exit_code() is not None or time.perf_counter() - started > FRESHNESS_GIVE_UP_S:
                        raise RuntimeError(f"no standby ready; see {svc / 'trainer.log'}")
                    time.sleep(0.05)
                options = trainer_pb2.TrainingOptions(gate=trainer_pb2.QUALITY_GATE_OFF, warm_start=warm_start)
                started = time.perf_counter()
                job = stub.StartTraining(trainer_pb2.StartTrainingRequest(options=options))
                final = None
                for final in stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id)):
                    pass
                seconds[kind] = time.perf_counter() - started
                if final is None or final.state != trainer_pb2.JOB_STATE_SUCCEEDED:
                    raise RuntimeError(f"the {kind} job did not succeed: {final}; see {svc / 'trainer.log'}")
                log.info("service job, %s: %.1f s (version %d)", kind, seconds[kind], final.published_version)
    finally:
        trainer.stop()
    return {"dataset": name, "plays": counts["rows"], "warm_s": seconds["warm"], "cold_s": seconds["cold"],
            "time_ratio": seconds["warm"] / seconds["cold"], "command": "python " + " ".join(argv[1:])}


def run(settings: BenchSettings, workdir: Path) -> dict:
    from trainer_service.warm_start import WARM_EPOCH_FRACTION, WARM_FOLD_IN_NEW_ROWS, WARM_LEARNING_RATE_SCALE

    datasets, notes = [], []
    for name in settings.warm_datasets:
        try:
            datasets.append(dataset(name, settings, workdir, seeds=settings.warm_seeds,
                                    sweep_seeds=settings.warm_sweep_seeds))
        except FileNotFoundError as exc:
            notes.append(f"{name} skipped: {exc}")
    for ds in datasets:
        picked = [row for row in ds["schedules"] if row["rule_pick"]]
        if ds["schedules"] and not any(row["default"] for row in picked):
            notes.append(f"{ds['dataset']}: the sweep's rule picks "
                         + (", ".join(f"{row['epoch_fraction']:g} of the epochs at learning rate x"
                                      f"{row['learning_rate_scale']:g}" for row in picked) or "no schedule")
                         + f", not the default ({WARM_EPOCH_FRACTION:g} of the epochs at x{WARM_LEARNING_RATE_SCALE:g})")
    fresh = freshness(datasets[0]["dataset"], settings, workdir) if datasets else None
    if fresh is not None:  # the same without the standby process, for what it saves
        fresh["no_standby_seconds"] = freshness(datasets[0]["dataset"], settings, workdir, standby=False)["seconds"]
    service = service_jobs(datasets[0]["dataset"], settings, workdir) if datasets else None
    # At scale: one seed, no sweep (each training is minutes): the default epochs (the target's
    # settings), then as few as the scale part trains (where the fixed phases weigh most).
    for name in settings.warm_scale_datasets:
        for epochs in settings.warm_scale_epochs:
            datasets.append(dataset(name, settings, workdir, seeds=1, epochs=epochs))
        shutil.rmtree(workdir / f"warm-{name.replace(':', '-')}-0", ignore_errors=True)  # GiBs of table and log
    return {"datasets": datasets, "freshness": fresh, "service_jobs": service, "notes": notes,
            "default_schedule": {"epoch_fraction": WARM_EPOCH_FRACTION, "learning_rate_scale": WARM_LEARNING_RATE_SCALE,
                                 "fold_in_new_rows": WARM_FOLD_IN_NEW_ROWS}}
