"""How big and how long each part of the benchmark runs: the full run (``make bench``) and the
quick one (``--quick``, for the test that keeps this code from rotting)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from trainer_service.warm_start import WARM_EPOCH_FRACTION, WARM_LEARNING_RATE_SCALE

PARTS = ("quality", "scale", "ann", "serving", "history", "live", "tags", "warm", "chain")
REPO_ROOT = Path(__file__).resolve().parents[1]
# Shared data sits beside the repository (CI clones the repo elsewhere with shared/ beside it).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class BenchSettings:
    """Knobs of one benchmark run. Times in seconds.

    - ``runs``: repetitions whose median is reported (quality trainings, ANN timings, load runs).
    - ``quality_datasets``: names under ``data_dir``; ``quality_epochs``: None = the trainer's
      defaults, else an override for our BPR (quick mode only); ``quality_max_users``: evaluated
      users cap (None: all); ``quality_split_seeds``: the leave-one-out splits every method is
      trained and evaluated on, one training each (mean and spread over them; never the seeds
      the defaults were chosen on: see ``bench.levers``).
    - ``scale_sizes``: (label, users, artists, interactions) synthetic sizes, smallest first;
      ``scale_epochs``: epochs trained at each size (bounded at full scale).
    - ``ann_queries``: queries per recall/latency measurement (``ann_queries_large`` on the
      largest model, where exact search is slow); ``ann_hnsw_ef``: hnswlib ef values;
      ``ann_annoy_settings``: (candidates_per_result, search_k multiple of Annoy's default) pairs.
    - ``load_seconds``: duration of one load run; ``open_loop_rates``: requests/s of paced runs;
      ``closed_loop_inflight``: requests in flight of closed-loop runs; ``swap_interval_s``: how
      often a new version appears during the swap runs; ``python_load_processes``: client processes
      (each sends every user, or artist, of the served version in turn, a different one on every
      request).
    - ``serving_workers``: index-service process counts measured (1: one process; N > 1:
      ``--workers N``, SO_REUSEPORT), each with every serving scenario; ``multi_worker_rpcs``:
      the RPCs measured against N > 1 workers (the targets are Recommend's).
    - ``full_scale_workers``: worker processes whose memory is measured on the full-scale version.
    - ``history_datasets``: data sets of the fold-in protocol (``bench/fold_in.py``);
      ``history_seeds``: its seeds (each two trainings; HR@10 pooled over them), at least as many
      as make ``history_min_heldout_users`` held-out users (MovieLens small holds out 61 a seed).
      ``history_artists``/``history_users``: size of the random-factor version the speed is
      measured on; ``history_queries``: RecommendForHistory calls timed;
      ``history_batch_rounds``: batches of 100 per single-versus-batch measurement.
    - ``warm_datasets``: data sets of the warm-start part (shared names or ``synthetic:SIZE``;
      "synthetic:full" is Last.fm 360K scale, minutes a training); ``warm_seeds``: seeds each;
      ``warm_new_fraction``: new plays as a share of the data, of which about
      ``warm_new_user_share`` from new listeners and ``warm_new_artist_share`` on new artists;
      ``warm_schedules``: (epoch fraction, learning-rate scale) warm schedules measured, training
      only, on the split and data seeds ``warm_sweep_seeds`` (never the reported ``range(warm_seeds)``:
      the default schedule is chosen there); ``warm_scale_datasets``: data sets with one seed and
      no sweep (Last.fm 360K scale: minutes a training), run once per entry of
      ``warm_scale_epochs`` (None: the trainer's default epochs, the target's row; a number: that
      many, as the scale part trains, where the fixed phases weigh most); ``warm_chain_seeds``:
      split and data seeds of the chain rows (``bench.warm.chain``: ``warm_chain_generations``
      warm starts in a row, each after new plays of ``warm_chain_fraction`` of the data, training
      only; the part "chain"), which choose ``trainer_service.warm_start.WARM_MAX_GROWTH``.
    - ``live_freshness_samples``: new listeners timed from RecordPlays on one replica to an answer
      on the other; ``live_min_new_users``: live quality pools seeds until this many listeners
      absent from training were evaluated (0: one seed).
    - ``tags_artists``: artists of the synthetic tagged version (``bench/tags.py``);
      ``tags_users``: users whose filtered Recommend is timed and checked per filter.
    """

    quick: bool = False
    runs: int = 3
    data_dir: Path = SHARED_DATA
    quality_datasets: tuple[str, ...] = ("lastfm-2k", "movielens-small")
    quality_epochs: int | None = None
    quality_max_users: int | None = None
    quality_split_seeds: tuple[int, ...] = (101, 102, 103, 104, 105)
    scale_sizes: tuple[tuple[str, int, int, int], ...] = (
        ("1/100", 3_600, 1_600, 175_000),
        ("1/10", 36_000, 16_000, 1_750_000),
        ("full", 360_000, 160_000, 17_500_000),
    )
    scale_epochs: int = 3
    scale_eval_users: int = 2_000
    scale_latency_queries: int = 1_000
    ann_queries: int = 1_000
    ann_queries_large: int = 500
    ann_hnsw_ef: tuple[int, ...] = (10, 20, 40, 80, 160)
    ann_annoy_settings: tuple[tuple[int, int], ...] = ((1, 1), (1, 4), (2, 4), (4, 4), (4, 16), (8, 16))
    ann_dot_trees: int = 20
    load_seconds: float = 3.0
    warm_up_seconds: float = 1.0
    open_loop_rates: tuple[int, ...] = (1_000, 2_000)
    # 16 in flight saturates one process (the targets' level); more adds only queueing time.
    closed_loop_inflight: tuple[int, ...] = (1, 16)
    swap_interval_s: float = 2.0
    swap_seconds: float = 8.0
    python_load_processes: int = 2
    serving_workers: tuple[int, ...] = (1, 2)
    multi_worker_rpcs: tuple[str, ...] = ("recommend",)
    full_scale_workers: int = 2
    history_seeds: int = 3
    history_min_heldout_users: int = 500
    history_datasets: tuple[str, ...] = ("lastfm-2k", "movielens-small")
    history_artists: int = 17_632
    history_users: int = 2_000
    history_queries: int = 1_000
    history_batch_rounds: int = 10
    live_freshness_samples: int = 200
    live_min_new_users: int = 500
    tags_artists: int = 160_000
    tags_users: int = 500
    # Synthetic sizes ("synthetic:small", "synthetic:full") are optional: each seed is three
    # whole-pipeline trainings at that size (minutes each at full scale, the defaults' 40 epochs).
    warm_datasets: tuple[str, ...] = ("lastfm-2k",)
    warm_seeds: int = 5  # as the quality part: a mean over 5 splits (the rule for quality)
    warm_new_fraction: float = 0.05
    warm_new_user_share: float = 0.05
    warm_new_artist_share: float = 0.02
    warm_schedules: tuple[tuple[float, float], ...] = ((0.025, 0.125), (0.05, 0.0625), (0.05, 0.125), (0.05, 0.25),
                                                       (0.075, 0.125), (0.125, 0.125), (0.125, 0.25), (0.25, 0.25),
                                                       (0.5, 0.5))
    warm_sweep_seeds: tuple[int, ...] = tuple(range(201, 213))
    warm_chain_seeds: tuple[int, ...] = tuple(range(301, 307))
    warm_chain_generations: int = 6
    warm_chain_fraction: float = 0.025
    warm_scale_datasets: tuple[str, ...] = ("synthetic:full",)
    warm_scale_epochs: tuple[int | None, ...] = (None, 3)


def full_settings(**overrides) -> BenchSettings:
    """``make bench``: every figure the issue asks for, medians of 3 runs, under 30 minutes."""
    return BenchSettings(**overrides)


def quick_settings(**overrides) -> BenchSettings:
    """``--quick``: every part in small (1 run, small data, short loads), a few minutes in all."""
    quick = BenchSettings(
        quick=True,
        runs=1,
        quality_datasets=("lastfm-2k",),
        quality_epochs=3,
        quality_max_users=300,
        quality_split_seeds=(101,),
        scale_sizes=(("tiny", 300, 200, 6_000), ("1/100", 3_600, 1_600, 175_000)),
        scale_epochs=1,
        scale_eval_users=200,
        scale_latency_queries=200,
        ann_queries=100,
        ann_queries_large=100,
        ann_hnsw_ef=(10, 40),
        ann_annoy_settings=((1, 1), (4, 4)),
        ann_dot_trees=10,
        load_seconds=1.0,
        warm_up_seconds=0.3,
        open_loop_rates=(200,),
        closed_loop_inflight=(1, 16),
        swap_interval_s=1.0,
        swap_seconds=3.0,
        python_load_processes=1,
        history_datasets=("lastfm-2k",),
        history_seeds=1,
        history_min_heldout_users=0,
        history_users=300,
        history_queries=200,
        history_batch_rounds=2,
        live_freshness_samples=30,
        live_min_new_users=0,
        tags_artists=16_000,
        tags_users=100,
        warm_datasets=("lastfm-2k",),
        warm_seeds=1,
        warm_schedules=((WARM_EPOCH_FRACTION, WARM_LEARNING_RATE_SCALE),),  # the default's row only
        warm_sweep_seeds=(201,),
        warm_chain_seeds=(301,),
        warm_chain_generations=2,
        warm_scale_datasets=(),
    )
    return dataclasses.replace(quick, **overrides)


def child_env() -> dict:
    """Environment for the benchmark's child processes: the repository importable from anywhere,
    unbuffered output, TensorFlow's start-up chatter off."""
    import os

    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env
