"""BPR on TensorFlow's ParameterServerStrategy: sharded tables on ps tasks, steps on workers.

``DistributedBPRTrainer`` has ``BPRTrainer``'s interface (``train_epoch``, ``factors``, ``close``,
``epoch``, ``samples_per_epoch``), so the pipeline drives either one the same way.

How a run is laid out:

- **Tables**: the user factors P (U, F), artist factors Q (A, F) and artist bias b (A,) are
  created under ``strategy.scope()`` with a ``FixedShardsPartitioner(num_ps)``: each becomes a
  ``ShardedVariable`` of contiguous row ranges ("div" sharding), shard k on ``/job:ps/task:k``.
  No task ever holds a whole table; the chief gathers one only in ``factors()``.
- **Initialization**: the same numpy draws as ``BPRTrainer`` (same seed, same stream), so both
  trainers start from identical factors.
- **Sampling**: the chief runs the same ``TripletStream`` as ``BPRTrainer``, with the same chunk
  size, seed and rules, in a background thread, so both trainers see the very same triples and
  learning rates. Each chunk is cut into pieces of consecutive minibatches (at least
  ``CHUNKS_PER_WORKER`` per worker and epoch); a piece is one ``ClusterCoordinator.schedule``
  call of ``train_chunk``, which the coordinator sends, with its (K, B) index arrays, to an idle
  worker.
- **The step** (``train_chunk``, on a worker, not XLA-compiled: XLA cannot compile ops placed
  on other tasks): per minibatch, gather the rows from the ps shards
  (``tf.nn.embedding_lookup`` on the ShardedVariable), compute the loss and gradients with
  ``bpr.bpr_triple_gradients`` (the single-process trainer's math, shared), and apply
  ``scatter_sub`` on the ShardedVariable, which splits the rows by shard. Updates are
  asynchronous across workers (Hogwild-style): a worker's read may miss another worker's
  concurrent write to the same row, which BPR's sparse updates tolerate (see docs/scaling.md).
- **Epochs**: pieces are scheduled in waves of ``WAVE_PER_WORKER`` per worker; the chief polls
  ``coordinator.done()`` (which raises a remote error), ``should_stop`` and ``health_check``
  while a wave runs, then fetches the summed losses. ``train_epoch`` returns after
  ``coordinator.join()``.

Failures, as TensorFlow's coordinator handles them: a worker that dies has its closure re-run
on another worker (its partly applied updates stay, as with any asynchronous SGD) and training
goes on; the coordinator waits for the worker to come back (Kubernetes restarts the pod; the
local cluster restarts the process) and reconnects it. A ps task that dies fails the run: its
shards are gone (``coordinator.done()`` raises, or ``health_check``, the local cluster's
``check``, raises ``ClusterError`` first). TensorFlow's coordinator never gives up on a worker
that does not come back: its reconnect blocks, and so would its destructor, so after a fatal
error the chief lets the queued chunks fail while the cluster still runs (``_drain``).

One cluster per process: TensorFlow connects a process to one cluster for its lifetime.

Supported: optimizer "sgd" with any learning-rate schedule and any ``negative_candidates`` (the
candidates' rows are gathered once and the pick is ``bpr.hardest_negative``'s). Adagrad raises
``InvalidArgument`` on construction.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from trainer_service import tensorflow_env

tensorflow_env.prepare()  # before TF loads

import tensorflow as tf  # noqa: E402

from musicrec.rpc.errors import InvalidArgument
from trainer_service.bpr import (  # the single-process trainer's math and stream, shared
    EpochStats,
    bpr_triple_gradients,
    hardest_negative,
    step_rates,
    training_stream,
)
from trainer_service.factors import Factors, initial_factors
from trainer_service.hyperparameters import Hyperparameters

# At least this many chunks per worker and epoch, so every worker gets work on small data.
CHUNKS_PER_WORKER = 4
# Chunks in flight per worker: enough that a worker never waits for the next one.
WAVE_PER_WORKER = 4
POLL_S = 0.02
DRAIN_S = 30.0


def supported(hp: Hyperparameters) -> None:
    """Raise InvalidArgument if the distributed trainer cannot train ``hp``."""
    if hp.optimizer != "sgd":
        raise InvalidArgument(f"distributed training supports optimizer 'sgd' only, got {hp.optimizer!r}")


def make_strategy(cluster_resolver) -> tf.distribute.ParameterServerStrategy:
    """A ParameterServerStrategy on ``cluster_resolver`` (this process the chief) whose variables
    are split in one contiguous row shard per ps task (fewer for tables with fewer rows). Connects
    to the cluster: its tasks must be up."""
    num_ps = len(cluster_resolver.cluster_spec().job_tasks("ps"))
    partitioner = tf.distribute.experimental.partitioners.FixedShardsPartitioner(num_ps)
    return tf.distribute.ParameterServerStrategy(cluster_resolver, variable_partitioner=partitioner)


class Coordinator(tf.distribute.coordinator.ClusterCoordinator):
    """TensorFlow's ClusterCoordinator, except that its destructor cannot hang the process.

    After a task died and did not come back (a failed run, a stopped cluster), the
    coordinator's failure-handler thread stays blocked in ``update_server_def`` waiting for it,
    holding a lock that the stock destructor takes: a process that drops such a coordinator
    would never exit. This one runs the stock destructor in a daemon thread, which then blocks
    instead of the caller (and is abandoned at exit); when nothing failed it returns at once.
    """

    def __del__(self):
        if sys.is_finalizing():
            return  # the interpreter is exiting: no thread can start now, and nothing needs stopping
        threading.Thread(target=super().__del__, name="coordinator-stop", daemon=True).start()


def _pick_negative(pu, Q, b, candidates):
    """Of (C, B) candidate negatives, the one the model scores highest (``bpr.hardest_negative``'s
    rule, applied to rows gathered once from the shards): its (B,) index, (B, F) factors, (B,) bias."""
    flat = tf.reshape(candidates, [-1])
    rows, bias = tf.nn.embedding_lookup(Q, flat), tf.nn.embedding_lookup(b, flat)
    local = tf.reshape(tf.range(tf.size(flat)), tf.shape(candidates))
    picked, qj, bj = hardest_negative(pu, rows, bias, local)
    return tf.gather(flat, picked), qj, bj


def _chunk_function(tables, batch: int, candidates: int) -> Callable:
    """The scheduled function: train one chunk of (K, B) minibatches on the sharded ``tables``
    (negatives (K, B), or (K, C, B) with ``candidates`` C > 1), the first ``count`` triples
    real; returns their summed loss (float64)."""
    P, Q, b = tables
    index_block = tf.TensorSpec([None, batch], tf.int32)
    negative_block = index_block if candidates == 1 else tf.TensorSpec([None, candidates, batch], tf.int32)

    @tf.function(input_signature=[index_block, index_block, negative_block, tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([3], tf.float32)])
    def train_chunk(users, positives, negatives, count, rates):
        lr = rates[0]
        steps = (count + batch - 1) // batch
        total = tf.constant(0.0, tf.float64)
        for s in tf.range(steps):
            mask = tf.cast(s * batch + tf.range(batch) < count, tf.float32)
            u, i, j = users[s], positives[s], negatives[s]
            # tf.nn.embedding_lookup on a ShardedVariable: one gather per shard, on its ps.
            pu = tf.nn.embedding_lookup(P, u)
            qi, bi = tf.nn.embedding_lookup(Q, i), tf.nn.embedding_lookup(b, i)
            if candidates == 1:
                qj, bj = tf.nn.embedding_lookup(Q, j), tf.nn.embedding_lookup(b, j)
            else:
                j, qj, bj = _pick_negative(pu, Q, b, j)
            loss, grad_u, grad_i, grad_j, grad_bi, grad_bj = bpr_triple_gradients(pu, qi, qj, bi, bj, mask, rates)
            items = tf.concat([i, j], axis=0)
            P.scatter_sub(tf.IndexedSlices(lr * grad_u, u))
            Q.scatter_sub(tf.IndexedSlices(lr * tf.concat([grad_i, grad_j], axis=0), items))
            b.scatter_sub(tf.IndexedSlices(lr * tf.concat([grad_bi, grad_bj], axis=0), items))
            total += tf.cast(tf.reduce_sum(loss), tf.float64)
        return total

    return train_chunk


class DistributedBPRTrainer:
    """Trains BPR on a parameter-server cluster, one epoch per ``train_epoch`` call.

    ``users``, ``artists``, ``weights``, ``num_users``, ``num_artists``, ``hp``: as for
    ``BPRTrainer``. ``cluster_resolver``: the cluster, this process its chief (e.g.
    ``TFConfig.cluster_resolver()``); its tasks must be up. ``health_check``: called while
    waiting on the workers; raise to fail the run (the local cluster's ``check``). ``on_close``: called once by ``close`` (e.g. to stop a local cluster
    the trainer owns).
    """

    def __init__(self, users: np.ndarray, artists: np.ndarray, weights: np.ndarray | None,
                 num_users: int, num_artists: int, hp: Hyperparameters, *,
                 cluster_resolver,
                 health_check: Callable[[], None] | None = None,
                 on_close: Callable[[], None] | None = None):
        supported(hp)
        self.hp = hp
        self.num_users = int(num_users)
        self.num_artists = int(num_artists)
        self._health_check = health_check or (lambda: None)
        self._on_close = on_close
        self._closed = False
        self.num_workers = len(cluster_resolver.cluster_spec().job_tasks("worker"))
        # BPRTrainer's stream (so the same seed gives the very same triples and learning rates);
        # each chunk is cut into pieces of ``batches_per_piece`` minibatches, one scheduled call
        # each, at least CHUNKS_PER_WORKER per worker and epoch. Made first: bad data fails
        # before this process connects to the cluster.
        self._stream = training_stream(users, artists, weights, num_users, num_artists, hp)
        self.samples_per_epoch = self._stream.samples_per_epoch
        self.batches_per_chunk = self._stream.batches_per_chunk
        batches_per_epoch = -(-self.samples_per_epoch // hp.batch_size)
        per_piece = -(-batches_per_epoch // (CHUNKS_PER_WORKER * self.num_workers))
        self.batches_per_piece = max(1, min(self.batches_per_chunk, per_piece))
        self.epoch = 0
        self._stopped = False
        self._trained = 0  # triples scheduled so far, for the learning-rate schedule
        try:
            self.strategy = strategy = make_strategy(cluster_resolver)
            # Made before the strategy's scope is entered: the scope makes a stock coordinator
            # for a strategy that has none, and a strategy keeps the first one it gets.
            self.coordinator = Coordinator(strategy)
            start = initial_factors(num_users, num_artists, hp)
            with strategy.scope():
                self.user_factors = tf.Variable(start.user_factors, name="user_factors")
                self.artist_factors = tf.Variable(start.artist_factors, name="artist_factors")
                self.artist_bias = tf.Variable(start.artist_bias, name="artist_bias")
            self._train_chunk = _chunk_function((self.user_factors, self.artist_factors, self.artist_bias),
                                                hp.batch_size, hp.negative_candidates)
        except BaseException:
            self._stream.close()
            raise

    @property
    def tables(self) -> dict[str, "tf.Variable"]:
        """The tables by name (see ``shards`` for their per-ps parts)."""
        return {"user_factors": self.user_factors, "artist_factors": self.artist_factors,
                "artist_bias": self.artist_bias}

    def _wait(self, should_stop: Callable[[], bool] | None) -> bool:
        """Wait until every scheduled piece is done; False if ``should_stop`` asked to stop first
        (the pieces in flight still finish: the coordinator cannot recall them)."""
        stop_asked = False
        while not self.coordinator.done():  # raises the first remote error
            try:
                self._health_check()
            except Exception:
                self._drain()
                raise
            if not stop_asked and should_stop is not None and should_stop():
                stop_asked = True
            time.sleep(POLL_S)
        return not stop_asked

    def train_epoch(self, should_stop: Callable[[], bool] | None = None) -> EpochStats | None:
        """Train one epoch (``samples_per_epoch`` triples) on the workers. ``should_stop`` is polled
        before each piece is scheduled and while pieces run; when it returns true the epoch is
        abandoned (once the pieces in flight end) and None is returned: the factors are then
        partly trained (do not publish them) and the trainer trains no more. A dead ps task, or
        ``health_check``'s error, propagates; the trainer is then unusable."""
        if self._stopped:
            raise RuntimeError("this trainer was stopped")
        if self.epoch >= self.hp.epochs:
            raise RuntimeError(f"all {self.hp.epochs} epochs are trained")
        started = time.perf_counter()
        wave = WAVE_PER_WORKER * self.num_workers
        total = 0.0
        samples = 0
        pieces = self._pieces()
        done = False
        while not done:
            pending = []
            while len(pending) < wave:
                if should_stop is not None and should_stop():
                    self._stop_after(pending)
                    return None
                piece = next(pieces, None)
                if piece is None:
                    done = True
                    break
                pending.append(self.coordinator.schedule(self._train_chunk, args=piece[:5]))
                samples += piece[5]
            if not self._wait(should_stop):
                self._stopped = True
                return None
            total += sum(float(value.fetch()) for value in pending)
        self.coordinator.join()
        self.epoch += 1
        return EpochStats(epoch=self.epoch, loss=total / samples, samples=samples,
                          seconds=time.perf_counter() - started)

    def _pieces(self):
        """This epoch's scheduled calls: (users, positives, negatives, count, rates, count as int)
        for consecutive row ranges of each stream chunk, the chunk's learning rate for all."""
        step = self.batches_per_piece
        batch = self.hp.batch_size
        while True:
            chunk = self._stream.next()
            # Before counting the chunk, as BPRTrainer does.
            rates = step_rates(self.hp, self._trained, self.samples_per_epoch)
            self._trained += chunk.count
            for first in range(0, chunk.users.shape[0], step):
                count = min(chunk.count - first * batch, step * batch)
                if count <= 0:
                    break
                rows = slice(first, first + step)
                yield (chunk.users[rows], chunk.positives[rows], chunk.negatives[rows],
                       tf.constant(count, tf.int32), rates, count)
            if chunk.last:
                return

    def _drain(self) -> None:
        """After a fatal cluster error: let the queued chunks fail or finish while the tasks that
        are left still run (bounded), so that no chunk meets a stopped cluster later: TensorFlow's
        coordinator would take that for a worker failure and wait for the worker forever."""
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            try:
                if self.coordinator.done():
                    return
            except Exception:  # the remote error the cluster's failure causes
                return
            time.sleep(POLL_S)

    def _stop_after(self, pending: list) -> None:
        self._stopped = True
        if pending:
            self._wait(None)

    def factors(self) -> Factors:
        """The current factors, gathered from every ps shard onto the chief as numpy arrays."""
        return Factors(user_factors=_gather(self.user_factors), artist_factors=_gather(self.artist_factors),
                       artist_bias=_gather(self.artist_bias))

    def close(self) -> None:
        """Stop the sampler, then run ``on_close`` (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.close()
            # Release the compiled step while the tasks still run: TensorFlow removes a function
            # from every task when it is collected, and logs an error per task once they are gone.
            self._train_chunk = None
            gc.collect()
        finally:
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> "DistributedBPRTrainer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def shards(table) -> list:
    """A table's shard variables in row order (one per ps task holding part of it); a table in
    one shard (one ps, or fewer rows than ps tasks allow) is a plain variable, its own shard."""
    return list(table.variables) if getattr(table, "is_sharded_variable", False) else [table]


def _gather(table) -> np.ndarray:
    """A table's rows from all its shards, in order, as one numpy array (on the chief)."""
    return np.concatenate([shard.numpy() for shard in shards(table)], axis=0)
