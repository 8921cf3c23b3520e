"""Where the XLA training step's time goes: the trainer's loop with parts removed, per CPU second::

    python -m bench.step_profile --size full

On the synthetic data of ``bench.train_speed`` (cached), 2^19 triples per call (positives drawn
from the interactions, negatives uniform), 64 factors, batches of 1024, each variant compiled
once and timed over 3 calls, 3 rounds alternating, medians. Variants: ``full`` (the step of
``trainer_service.bpr`` for SGD), ``nobias`` (no bias gathers or scatter), ``twoscatter`` (the
item update as two scatters instead of one concatenated), ``noscatter`` (gathers and math, no
update), ``gatheronly`` (the three row gathers only), and ``full+hugepages`` (the full step on
tables advised into transparent huge pages, as ``BPRTrainer`` does; run last, on fresh tables).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = ("full", "nobias", "twoscatter", "noscatter", "gatheronly")


def _make(variant: str, batch: int, batches: int):
    import tensorflow as tf

    from trainer_service.bpr import bpr_triple_gradients

    @tf.function(jit_compile=True)
    def run(P, Q, b, users, positives, negatives, rates):
        total = tf.constant(0.0, tf.float32)
        for s in tf.range(batches):
            u, i, j = users[s], positives[s], negatives[s]
            mask = tf.ones([batch], tf.float32)
            pu, qi, qj = tf.gather(P, u), tf.gather(Q, i), tf.gather(Q, j)
            if variant == "nobias":
                bi = bj = tf.zeros([batch])
            else:
                bi, bj = tf.gather(b, i), tf.gather(b, j)
            if variant == "gatheronly":
                total += tf.reduce_sum(pu) + tf.reduce_sum(qi) + tf.reduce_sum(qj) + tf.reduce_sum(bi - bj)
                continue
            loss, gu, gi, gj, gbi, gbj = bpr_triple_gradients(pu, qi, qj, bi, bj, mask, rates)
            lr = rates[0]
            if variant == "noscatter":
                total += tf.reduce_sum(loss) + tf.reduce_sum(gu) + tf.reduce_sum(gi) + tf.reduce_sum(gj)
                continue
            P.scatter_sub(tf.IndexedSlices(lr * gu, u))
            if variant == "twoscatter":
                Q.scatter_sub(tf.IndexedSlices(lr * gi, i))
                Q.scatter_sub(tf.IndexedSlices(lr * gj, j))
                b.scatter_sub(tf.IndexedSlices(lr * gbi, i))
                b.scatter_sub(tf.IndexedSlices(lr * gbj, j))
            elif variant == "nobias":
                Q.scatter_sub(tf.IndexedSlices(lr * tf.concat([gi, gj], 0), tf.concat([i, j], 0)))
            else:
                items = tf.concat([i, j], 0)
                Q.scatter_sub(tf.IndexedSlices(lr * tf.concat([gi, gj], 0), items))
                b.scatter_sub(tf.IndexedSlices(lr * tf.concat([gbi, gbj], 0), items))
            total += tf.reduce_sum(loss)
        return total

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.step_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="full")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--cache", type=Path, default=Path("bench/results/tmp/speed-cache"))
    args = parser.parse_args(argv)

    from trainer_service.bpr import _advise_huge_pages  # first: it sets TensorFlow's environment

    import tensorflow as tf  # noqa: I001

    from bench.train_speed import load_arrays

    users, artists, _weights, num_users, num_artists = load_arrays(args.size, args.cache)
    rng = np.random.default_rng(0)
    n = 1 << 19
    batches = n // args.batch
    pick = rng.integers(0, users.size, n)
    chunk = [tf.constant(x.astype(np.int32).reshape(batches, args.batch))
             for x in (users[pick], artists[pick], rng.integers(0, num_artists, n))]
    rates = tf.constant([0.05, 0.01, 0.01])

    def tables():
        return (tf.Variable(rng.normal(0, 0.01, (num_users, 64)).astype(np.float32)),
                tf.Variable(rng.normal(0, 0.01, (num_artists, 64)).astype(np.float32)),
                tf.Variable(np.zeros(num_artists, np.float32)))

    def timed(fn, tabs) -> tuple[float, float]:
        fn(*tabs, *chunk, rates)  # compile / warm
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(3):
            float(fn(*tabs, *chunk, rates))
        return 3 * n / (time.perf_counter() - started), 3 * n / (time.process_time() - cpu)

    plain = tables()
    fns = {v: _make(v, args.batch, batches) for v in VARIANTS}
    results: dict[str, list[tuple[float, float]]] = {}
    for round_ in range(3):
        for variant, fn in fns.items():
            results.setdefault(variant, []).append(timed(fn, plain))
            print(f"round {round_} {variant}: {results[variant][-1][0] / 1e6:.2f}M/s wall, "
                  f"{results[variant][-1][1] / 1e6:.2f}M per CPU second", flush=True)
    huge = tables()
    for variable in huge:
        _advise_huge_pages(variable)
    for round_ in range(3):
        results.setdefault("full+hugepages", []).append(timed(fns["full"], huge))
        print(f"round {round_} full+hugepages: {results['full+hugepages'][-1][0] / 1e6:.2f}M/s wall", flush=True)
    print("\n| variant | M triples/s wall (median) | M triples per CPU second (median) |\n|---|---|---|")
    for variant, runs in results.items():
        print(f"| {variant} | {statistics.median(r[0] for r in runs) / 1e6:.2f} | "
              f"{statistics.median(r[1] for r in runs) / 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
