"""Distributed BPR against one process (run by hand): parity on Last.fm 2K, throughput and memory.

    .venv/bin/python bench/distributed.py                      # both parts
    .venv/bin/python bench/distributed.py --part parity        # Last.fm 2K HR@10, ps=2,workers=2 vs 1 process
    .venv/bin/python bench/distributed.py --part throughput --size medium --epochs 2

Every run (one mode on one data set) is a child process of its own, so its peak RSS is its own
and TensorFlow connects it to one cluster only. Parity: the same hyperparameters (the trainer's
defaults unless ``--epochs``), the same leave-one-out split, HR@10/NDCG@10/AUC on the held-out
users (at most 20,000, a seeded sample, as the pipeline does). Throughput: triples per second
of the epochs after the first (the first traces the step), peak RSS (VmHWM) of the chief and of each ps and worker task. Prints a table and writes
JSON to bench/results/tmp/. On a 2-core machine shared with other work no speed-up is possible
(4 tasks + chief on 2 cores); the figures measure the overhead of the distributed step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LASTFM_2K = REPO.parent / "shared" / "data" / "lastfm-2k"
RESULTS = REPO / "bench" / "results" / "tmp"
EVAL_USERS = 20_000  # the pipeline's default cap (a seeded sample); Last.fm 2K has fewer, so all


def _peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_one(mode: str, source: str, epochs: int | None, cluster: str) -> dict:
    """Train ``source`` in this process (``mode`` single or distributed) and return the figures."""
    sys.path.insert(0, str(REPO))
    from trainer_service.data import load_source, parse_source
    from trainer_service.distributed import LocalClusterSpec
    from trainer_service.distributed.local_cluster import LocalCluster
    from trainer_service.evaluation import evaluate, leave_one_out_split, sample_heldout
    from trainer_service.hyperparameters import Hyperparameters

    data = load_source(parse_source(source), None)
    hp = Hyperparameters() if epochs is None else Hyperparameters(epochs=epochs)
    split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists, hp.seed)
    arrays = (split.train_users, split.train_artists, split.train_weights, split.num_users, split.num_artists)
    tasks: dict[str, float] = {}
    started = time.perf_counter()
    history = []
    if mode == "single":
        from trainer_service.bpr import BPRTrainer

        trainer_cm = BPRTrainer(*arrays, hp)
        cluster_cm = None
    else:
        from trainer_service.distributed.trainer import DistributedBPRTrainer

        cluster_cm = LocalCluster(LocalClusterSpec.parse(cluster))
        cluster_cm.start()
        trainer_cm = DistributedBPRTrainer(*arrays, hp, cluster_resolver=cluster_cm.config.cluster_resolver(),
                                           health_check=cluster_cm.check)
    setup_s = time.perf_counter() - started
    try:
        with trainer_cm as trainer:
            for _ in range(hp.epochs):
                stats = trainer.train_epoch()
                history.append({"epoch": stats.epoch, "loss": stats.loss, "seconds": stats.seconds,
                                "samples_per_second": stats.samples_per_second})
            factors = trainer.factors()
            if cluster_cm is not None:
                tasks = {task.name: _peak_rss_mib(task.process.pid) for task in cluster_cm.tasks}
    finally:
        if cluster_cm is not None:
            cluster_cm.stop()
    train_s = time.perf_counter() - started - setup_s
    selection = sample_heldout(split, EVAL_USERS, hp.seed)
    report = evaluate(factors.user_factors, factors.artist_factors, factors.artist_bias, split, selection)
    steady = history[1:] or history
    samples = sum(h["samples_per_second"] * h["seconds"] for h in steady)
    seconds = sum(h["seconds"] for h in steady)
    return {
        "mode": mode, "cluster": cluster if mode == "distributed" else None, "source": source,
        "users": split.num_users, "artists": split.num_artists, "train_interactions": int(split.train_users.size),
        "hyperparameters": hp.to_dict(), "setup_seconds": setup_s, "train_seconds": train_s,
        "steady_samples_per_second": samples / seconds if seconds else 0.0,
        "final_loss": history[-1]["loss"],
        "hit_rate_at_10": report.model.hit_rate_at_10, "ndcg_at_10": report.model.ndcg_at_10, "auc": report.model.auc,
        "popularity_hit_rate_at_10": report.popularity.hit_rate_at_10, "evaluated_users": report.model.evaluated_users,
        "chief_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "task_peak_rss_mib": tasks,
    }


def _child(mode: str, source: str, epochs: int | None, cluster: str, timeout_s: float) -> dict:
    argv = [sys.executable, __file__, "--child", mode, "--source", source, "--cluster", cluster]
    if epochs is not None:
        argv += ["--epochs", str(epochs)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} run on {source} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "parity", "throughput"), default="all")
    parser.add_argument("--cluster", default="ps=2,workers=2")
    parser.add_argument("--size", default="medium", help="synthetic size for the throughput part")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the trainer's default for "
                                                                 "parity, 2 for throughput)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--child", choices=("single", "distributed"), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_one(args.child, args.source, args.epochs, args.cluster)
        print(json.dumps(result), flush=True)
        os._exit(0)  # TensorFlow's remote-context teardown after the cluster is gone only adds log noise
    runs = []
    if args.part in ("all", "parity"):
        if not LASTFM_2K.is_dir():
            print(f"skipping parity: {LASTFM_2K} is absent", file=sys.stderr)
        else:
            for mode in ("single", "distributed"):
                runs.append({"part": "parity", **_child(mode, f"hetrec:{LASTFM_2K}", args.epochs, args.cluster,
                                                        args.timeout)})
    if args.part in ("all", "throughput"):
        for mode in ("single", "distributed"):
            runs.append({"part": "throughput", **_child(mode, f"synthetic:{args.size}", args.epochs or 2,
                                                        args.cluster, args.timeout)})
    print(f"{'part':<11}{'mode':<13}{'data':<28}{'HR@10':>7}{'AUC':>7}{'samples/s':>12}{'setup s':>9}"
          f"{'train s':>9}{'chief MiB':>10}  tasks' peak RSS MiB")
    for run in runs:
        tasks = ", ".join(f"{name} {mib:.0f}" for name, mib in run["task_peak_rss_mib"].items())
        print(f"{run['part']:<11}{run['mode']:<13}{Path(run['source']).name[:27]:<28}{run['hit_rate_at_10']:>7.4f}"
              f"{run['auc']:>7.4f}{run['steady_samples_per_second']:>12,.0f}{run['setup_seconds']:>9.1f}"
              f"{run['train_seconds']:>9.1f}{run['chief_peak_rss_mib']:>10.0f}  {tasks}")
    parity = [run for run in runs if run["part"] == "parity"]
    if len(parity) == 2:
        print(f"parity: HR@10 distributed - single = {parity[1]['hit_rate_at_10'] - parity[0]['hit_rate_at_10']:+.4f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"distributed-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"cpus": os.cpu_count(), "load_average": os.getloadavg(), "runs": runs}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
