"""Time a published version's precomputed lists at several IVF cluster sizes (one-off study)::

    python -m bench.lists_sweep VERSION_DIR --per-cluster 128,256,512 --seeds 0

For each artists-per-cluster value and seed, both sides' lists (Recommend, SimilarArtists) are
made as a publish makes them (``ranking.precompute.make_lists``, top 50, one worker per core) and
the wall time, the clusters, the probes the recall rule picked and the tuning sample's recall@10
are printed, one line per side. ``ranking.precompute.ARTISTS_PER_CLUSTER`` was chosen with it on
the scale part's full-scale version (``bench/results/tmp/work/scale-full/models/1`` after
``python -m bench --parts scale --keep-workdir``). A catalog small enough for exact lists is
timed exact whatever the cluster size.
"""

from __future__ import annotations

import argparse
import time

from model_store import load_version
from ranking import precompute


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lists_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("version_dir")
    parser.add_argument("--per-cluster", default="128,256,512", help="comma-separated artists per cluster")
    parser.add_argument("--seeds", default="0", help="comma-separated clustering and sampling seeds")
    args = parser.parse_args(argv)
    artifacts = load_version(args.version_dir).artifacts
    sides = (("Recommend", precompute.recommend_side(artifacts)), ("SimilarArtists", precompute.similar_side(artifacts)))
    default = precompute.ARTISTS_PER_CLUSTER
    try:
        for per_cluster in (int(v) for v in args.per_cluster.split(",")):
            precompute.ARTISTS_PER_CLUSTER = per_cluster
            for seed in (int(v) for v in args.seeds.split(",")):
                total = 0.0
                for name, side in sides:
                    started = time.perf_counter()
                    made = precompute.make_lists(side, precompute.DEFAULT_RECOMMEND_N, seed=seed)
                    seconds = time.perf_counter() - started
                    total += seconds
                    print(f"{per_cluster} per cluster, seed {seed}, {name}: {seconds:.2f} s, {made.method}, "
                          f"{made.clusters} clusters, {made.probes} probes, recall@10 {made.sample_recall_at_10}",
                          flush=True)
                print(f"{per_cluster} per cluster, seed {seed}: both sides {total:.2f} s", flush=True)
    finally:
        precompute.ARTISTS_PER_CLUSTER = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
