"""Training speed at Last.fm 360K scale, piece by piece (the figures of docs/training.md)::

    python -m bench.train_speed --size full --epochs 2 --rounds 2 base "dns3:negative_candidates=3"

On the synthetic generator's data (``--size``, seed 0; cached as .npz under ``--cache``), per
variant (``NAME`` or ``NAME:field=value,...`` overrides of the default ``Hyperparameters``, as in
``bench.levers``), variants alternating round by round so that a busy machine slows all alike:

- ``sampler``: the triple sampler alone on this thread (triples/s), as the background thread runs it;
- ``step``: the XLA training call alone on chunks sampled beforehand (triples/s), no sampler running;
  both also per CPU second (this thread's, or the process's), a figure that other processes
  competing for the cores disturb much less than the wall-clock rate;
- ``trainer``: ``BPRTrainer.train_epoch`` for ``--epochs`` epochs (the sampler thread overlapping),
  samples/s of each epoch (and per CPU second of the process); the first epoch of each round
  includes the trainer's start (and, in the first round, compilation): it is left out of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.levers import parse_variant


def load_arrays(size: str, cache: Path):
    path = cache / f"synthetic-{size}-seed0.npz"
    if path.exists():
        z = np.load(path)
        return z["users"], z["artists"], z["weights"], int(z["num_users"]), int(z["num_artists"])
    from trainer_service.data import generate

    d = generate(size, seed=0).interactions
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, users=d.users, artists=d.artists, weights=d.weights, num_users=d.num_users,
             num_artists=d.num_artists)
    return d.users, d.artists, d.weights, d.num_users, d.num_artists


def measure_sampler(arrays, hp, triples: int) -> float:
    from trainer_service.sampling import TripletSampler

    users, artists, weights, num_users, num_artists = arrays
    sampler = TripletSampler(users, artists, weights, num_users, num_artists,
                             negative_sampling=hp.negative_sampling, positive_sampling=hp.positive_sampling)
    rng = np.random.default_rng(0)
    chunk = 1 << 19
    started, cpu = time.perf_counter(), time.thread_time()
    done = 0
    while done < triples:
        t = sampler.sample(chunk, rng)
        if hp.negative_candidates > 1:
            sampler.negatives(np.tile(t.users, hp.negative_candidates - 1), rng)
        done += chunk
    return done / (time.perf_counter() - started), done / (time.thread_time() - cpu)


def measure_step(arrays, hp, calls: int) -> float:
    import tensorflow as tf

    from trainer_service.bpr import BPRTrainer, step_rates

    with BPRTrainer(*arrays, hp.with_overrides(epochs=1)) as trainer:
        chunks = [trainer._stream.next() for _ in range(min(calls, 3))]
        chunk = chunks[0]
        args = (chunk.users, chunk.positives, chunk.negatives, tf.constant(chunk.count, tf.int32),
                step_rates(trainer.hp, 0, trainer.samples_per_epoch))
        trainer._train_chunk(trainer._tables, trainer._accumulators, *args)  # compile
        trainer._stream.close()  # no sampler thread competing
        started, cpu = time.perf_counter(), time.process_time()
        for n in range(calls):
            c = chunks[n % len(chunks)]
            float(trainer._train_chunk(trainer._tables, trainer._accumulators, c.users, c.positives, c.negatives,
                                       tf.constant(c.count, tf.int32), args[-1]))
        return calls * chunk.count / (time.perf_counter() - started), calls * chunk.count / (time.process_time() - cpu)


def measure_trainer(arrays, hp, epochs: int) -> list[float]:
    from trainer_service.bpr import BPRTrainer

    with BPRTrainer(*arrays, hp.with_overrides(epochs=epochs)) as trainer:
        rates = []
        for _ in range(epochs):
            cpu = time.process_time()
            stats = trainer.train_epoch()
            rates.append((stats.samples_per_second, stats.samples / (time.process_time() - cpu)))
        return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", default=["base"])
    parser.add_argument("--size", default="full", help="synthetic preset (default full: Last.fm 360K scale)")
    parser.add_argument("--epochs", type=int, default=2, help="trainer epochs per round (default 2)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parts", default="sampler,step,trainer")
    parser.add_argument("--step-calls", type=int, default=20)
    parser.add_argument("--cache", type=Path, default=Path("bench/results/tmp/speed-cache"))
    parser.add_argument("--json", type=Path, default=None,
                        help="also write {variant: {part: [triples/s, ...]}} to this file")
    args = parser.parse_args(argv)

    from trainer_service.hyperparameters import Hyperparameters

    arrays = load_arrays(args.size, args.cache)
    print(f"{args.size}: {arrays[3]:,} users, {arrays[4]:,} artists, {arrays[0].size:,} interactions", flush=True)
    parts = args.parts.split(",")
    variants = [parse_variant(v) for v in args.variants]
    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for name, overrides in variants:
            hp = Hyperparameters().with_overrides(**overrides)
            for part, measure in (("sampler", lambda: measure_sampler(arrays, hp, 1 << 22)),
                                  ("step", lambda: measure_step(arrays, hp, args.step_calls))):
                if part in parts:
                    rate, per_cpu = measure()
                    results.setdefault((name, part), []).append(rate)
                    results.setdefault((name, part + " per CPU second"), []).append(per_cpu)
                    print(f"round {round_} {name} {part}: {rate / 1e6:.2f}M triples/s wall, "
                          f"{per_cpu / 1e6:.2f}M per CPU second", flush=True)
            if "trainer" in parts:
                rates = measure_trainer(arrays, hp, args.epochs)
                kept = rates[1:] if len(rates) > 1 else rates  # the first starts up (and compiles)
                results.setdefault((name, "trainer"), []).extend(r for r, _ in kept)
                results.setdefault((name, "trainer per CPU second"), []).extend(c for _, c in kept)
                print(f"round {round_} {name} trainer: {', '.join(f'{r / 1e6:.2f}M' for r, _ in rates)} samples/s "
                      f"({', '.join(f'{c / 1e6:.2f}M' for _, c in rates)} per CPU second, both threads)", flush=True)
    print("\n| variant | part | median M/s | all |")
    print("|---|---|---|---|")
    for (name, part), rates in results.items():
        print(f"| {name} | {part} | {statistics.median(rates) / 1e6:.2f} | "
              f"{', '.join(f'{r / 1e6:.2f}' for r in rates)} |")
    if args.json is not None:
        table: dict[str, dict[str, list[float]]] = {}
        for (name, part), rates in results.items():
            table.setdefault(name, {})[part] = rates
        args.json.write_text(json.dumps(table, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
