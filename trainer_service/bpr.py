"""BPR matrix factorization in TensorFlow: the model, the hand-written sparse step, the trainer.

The model (as in the original notebook): user factors P (U, F), artist factors Q (A, F) and an
artist bias b (A,); the score of user u for artist a is ``P[u] . Q[a] + b[a]``. The objective of a
triple (u, i, j) is ``-log sigmoid(x_uij) + L2`` (see ``trainer_service.hyperparameters``).

Why not Keras: Keras 3 (shipped with TF 2.21) breaks the notebook's ``add_loss`` code, and a
GradientTape with a Keras optimizer over whole tables is several times slower than sparse updates.
Instead the gradients are written by hand and applied with scatter updates on ``tf.Variable``
rows, many minibatches per call inside one XLA-compiled loop (``_chunk_trainer``): per-batch
``tf.function`` calls spend most of their time in call overhead. The step reads random rows of
the factor tables, so how many rows' cache misses overlap matters: the rows are gathered as
vectorized copies (``gather_rows``). TensorFlow keeps its default thread settings: the sampler
thread overlaps its steps. Profiles and throughput: docs/training.md.

Two XLA traps, found by profiling: slicing a flat (K * B,) input with a loop-dependent
``x[s * B:(s + 1) * B]`` compiles to a full-size masked dynamic slice per step (every step then
touches all K * B triples), so chunks are (K, B) arrays indexed by row; and a scatter into a
table whose update does not depend on that step's gather from the same table may be scheduled
first, forcing XLA to copy the whole table every step (far slower), so every update here is
computed from the gathered rows.

Rank-aware negatives (``Hyperparameters.negative_candidates`` C > 1): the sampler draws C
negatives per triple, and the step scores them with the current factors and trains on the
highest-scoring one (``hardest_negative``; dynamic negative sampling). The per-triple math
itself is ``bpr_triple_gradients``, a pure function shared with the distributed trainer. The
learning rate follows ``Hyperparameters.learning_rate_schedule``, set per call from the share
of the run already trained. The factor tables are advised into transparent huge pages
(``_advise_huge_pages``): the random row reads are TLB misses too with 4 KiB pages. Measurements
of these levers: docs/training.md.

Minibatch semantics: "sgd" applies each triple's gradient with step ``learning_rate`` and sums
the updates of a minibatch (rows drawn twice move twice), which is Rendle's per-triple SGD with
the reads of one minibatch taken before its writes. "adagrad" sums a minibatch's gradients per
row first, as a Keras optimizer would (the notebook preset).

Determinism: initialization and sampling come from numpy generators seeded by
``Hyperparameters.seed``; XLA's CPU scatter applies duplicate indices in a fixed order, so the
same seed, data and thread settings give identical factors on CPU (tested). Results may differ
across TensorFlow versions, CPUs (vector width) or accelerators.

This is the only module of the package that imports TensorFlow; import it lazily.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from trainer_service import tensorflow_env  # noqa: E402

tensorflow_env.prepare()  # before TF loads

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer_service.data.errors import DataError  # noqa: E402
from trainer_service.factors import Factors, initial_factors  # noqa: E402
from trainer_service.hyperparameters import Hyperparameters  # noqa: E402
from trainer_service.sampling import TripletSampler, TripletStream, seed_sequence  # noqa: E402

# Triples per compiled call: large enough that the ~3-5 ms fixed cost of a call stays ~2% (a call is
# ~0.2-0.3 s of work at 360K scale), small enough that a stop request is noticed quickly and the
# sampler's chunks stay small (6 MiB).
TRIPLES_PER_CALL = 1 << 19
_SAMPLE_STREAM = 2
# Keras' Adagrad defaults (the notebook used them).
_ADAGRAD_INITIAL_ACCUMULATOR = 0.1
_ADAGRAD_EPSILON = 1e-7


@dataclass(frozen=True)
class EpochStats:
    """One completed epoch: mean loss per triple (BPR plus L2), triples trained, wall seconds."""

    epoch: int
    loss: float
    samples: int
    seconds: float

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def bpr_triple_gradients(pu, qi, qj, bi, bj, mask, rates):
    """The BPR objective of a batch of triples (u, i, j) and its gradients: pure tensor math, no
    variables, no updates (shared by the XLA step here and ``trainer_service.distributed``).

    ``pu``, ``qi``, ``qj``: (B, F) float32 rows of the user, listened-artist and unlistened-artist
    factors; ``bi``, ``bj``: (B,) the two artists' biases; ``mask``: (B,) float32, 1 for a real
    triple and 0 for padding (padding gets zero loss and zero gradient); ``rates``: (3,) float32
    [learning rate, regularization, bias regularization] (the learning rate is not used here).

    Returns ``(loss, grad_u, grad_i, grad_j, grad_bi, grad_bj)``: loss (B,) per triple, masked
    (``softplus(-x)`` plus the L2 terms of ``trainer_service.hyperparameters``), then the
    gradients of that loss with respect to each input row: (B, F), (B, F), (B, F), (B,), (B,).
    """
    reg, bias_reg = rates[1], rates[2]
    diff = qi - qj
    x = tf.reduce_sum(pu * diff, axis=1) + bi - bj
    # d(-log sigmoid(x))/dx = -sigmoid(-x); padding triples get no gradient.
    pull = tf.math.sigmoid(-x) * mask
    square = tf.reduce_sum(pu * pu + qi * qi + qj * qj, axis=1)
    loss = (tf.math.softplus(-x) + 0.5 * reg * square + 0.5 * bias_reg * (bi * bi + bj * bj)) * mask
    m = mask[:, None]
    pull_col = pull[:, None]
    grad_u = -pull_col * diff + reg * m * pu
    grad_i = -pull_col * pu + reg * m * qi
    grad_j = pull_col * pu + reg * m * qj
    grad_bi = -pull + bias_reg * mask * bi
    grad_bj = pull + bias_reg * mask * bj
    return loss, grad_u, grad_i, grad_j, grad_bi, grad_bj


_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE = 14
_MADV_COLLAPSE = 25  # Linux 6.1+: back the range with huge pages now, keeping its contents


def _advise_huge_pages(variable: tf.Variable) -> None:
    """Back a large table with 2 MiB transparent huge pages (Linux; best effort, silent when the
    kernel or the platform says no). Every training step reads random rows of the tables: with
    4 KiB pages nearly every row costs a TLB miss, with 2 MiB pages the TLB covers them. The
    XLA call updates the variables in place, so the advice stays with the buffer."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        capsule = tf.experimental.dlpack.to_dlpack(variable.value())

        class _Exported:  # numpy's from_dlpack wants an object with the protocol's two methods
            def __dlpack__(self, stream=None, **_):
                return capsule

            def __dlpack_device__(self):
                return (1, 0)  # CPU

        array = np.from_dlpack(_Exported())
        start = -(-array.ctypes.data // _HUGE_PAGE) * _HUGE_PAGE
        end = (array.ctypes.data + array.nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if end <= start:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise(start, end - start, _MADV_HUGEPAGE)
        libc.madvise(start, end - start, _MADV_COLLAPSE)
    except Exception:  # an optimization only: never fail training over it
        return


def learning_rate_factor(schedule: str, done: float) -> float:
    """The multiplier of the base learning rate after the fraction ``done`` (0..1) of the run:
    "constant" 1; "linear" ``1 - done``; "cosine" ``(1 + cos(pi * done)) / 2``."""
    if schedule == "linear":
        return 1.0 - done
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    return 1.0


@dataclass(frozen=True)
class Shapes:
    """The shapes a training step is compiled for: the rows of the user and artist tables and the
    minibatches of a chunk (K). XLA compiles the step for exact shapes, so a trainer whose shapes
    are those of a step compiled before in the process starts at once; a second or so of
    compilation otherwise (Last.fm 2K, 2 cores)."""

    users: int
    artists: int
    batches_per_chunk: int

    def holds(self, other: "Shapes") -> bool:
        return (other.users <= self.users and other.artists <= self.artists
                and other.batches_per_chunk <= self.batches_per_chunk)


# Shapes reserved in this process (``reserve_shapes``); None: every trainer uses its exact shapes.
_reserved: Shapes | None = None
# Headroom of ``compile_ahead``'s reservation over the newest version's sizes: a retrain after
# new plays has a few more users, artists and interactions.
RESERVE_HEADROOM = 1.25


def reserve_shapes(shapes: Shapes | None) -> None:
    """A process-level setting: from now on a trainer whose data fits ``shapes`` (users, artists
    and chunk minibatches at most these) pads its tables and chunks to them, so that it runs the
    step compiled for them (``compile_ahead``). Padding rows are never sampled or updated, and a
    chunk's padding is masked: the factors are those of the exact shapes. None: exact shapes."""
    global _reserved
    _reserved = shapes


def _chunk_batches(samples_per_epoch: int, batch: int) -> int:
    return max(1, min(TRIPLES_PER_CALL // batch, -(-samples_per_epoch // batch)))


def _shapes(num_users: int, num_artists: int, samples_per_epoch: int, batch: int) -> Shapes:
    """A trainer's shapes: the reserved ones when the data fits them, else its own."""
    exact = Shapes(int(num_users), int(num_artists), _chunk_batches(samples_per_epoch, batch))
    return _reserved if _reserved is not None and _reserved.holds(exact) else exact


def compile_ahead(num_users: int, num_artists: int, num_interactions: int, hp: Hyperparameters) -> Shapes:
    """Reserve shapes for trainings of about this size (``RESERVE_HEADROOM`` more of each) and
    compile the training step for them now, by training one triple on tables of those shapes:
    a later trainer of ``hp``'s batch size, optimizer, negative candidates and factors whose data
    fits then skips its compilation. What a standby training process does while it waits."""
    def more(n: int) -> int:
        return max(1, math.ceil(n * RESERVE_HEADROOM))

    shapes = Shapes(more(num_users), more(num_artists), _chunk_batches(more(num_interactions), hp.batch_size))
    reserve_shapes(shapes)
    one = np.zeros(1, dtype=np.int64)
    with BPRTrainer(one, one, np.ones(1, dtype=np.float32), shapes.users, shapes.artists,
                    hp.with_overrides(epochs=1)) as trainer:
        trainer.train_epoch()
    return shapes


def training_stream(users: np.ndarray, artists: np.ndarray, weights: np.ndarray | None, num_users: int,
                    num_artists: int, hp: Hyperparameters, batches_per_chunk: int | None = None,
                    sampler: TripletSampler | None = None) -> TripletStream:
    """The started stream of training chunks for all ``hp.epochs`` epochs: ``samples_per_epoch``
    triples an epoch, in chunks of (K, B) minibatches (at most ``TRIPLES_PER_CALL`` triples),
    drawn with the seed's sampling stream, so every trainer with this seed sees the same
    triples. Arguments as ``BPRTrainer``'s; ``batches_per_chunk``: K when it is larger than the
    data needs (reserved shapes: the chunk's padding is masked); ``sampler``: the
    ``TripletSampler.for_training`` of the same arguments when it was built already (None: built
    here).
    ``DataError`` for no training interactions."""
    samples_per_epoch = int(np.asarray(users).size)
    if samples_per_epoch == 0:
        raise DataError("no training interactions")
    if sampler is None:
        sampler = TripletSampler.for_training(users, artists, weights, num_users, num_artists, hp)
    batch = hp.batch_size
    batches_per_chunk = max(_chunk_batches(samples_per_epoch, batch), batches_per_chunk or 0)
    return TripletStream(sampler, np.random.default_rng(seed_sequence(hp.seed, _SAMPLE_STREAM)),
                         samples_per_epoch=samples_per_epoch, epochs=hp.epochs, batch_size=batch,
                         batches_per_chunk=batches_per_chunk, negative_candidates=hp.negative_candidates)


def step_rates(hp: Hyperparameters, trained: int, samples_per_epoch: int) -> tf.Tensor:
    """(3,) float32 [learning rate, regularization, bias regularization] for the next call after
    ``trained`` triples of the run, the learning rate as ``hp.learning_rate_schedule`` sets it."""
    done = trained / (samples_per_epoch * hp.epochs)
    lr = hp.learning_rate * learning_rate_factor(hp.learning_rate_schedule, done)
    return tf.constant([lr, hp.regularization, hp.bias_regularization], tf.float32)


def _dedup_rows(indices: tf.Tensor, grads: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Sum ``grads`` (n, ...) of equal ``indices`` (n,): returns (n,) indices and (n, ...) sums in
    which every distinct index appears once; the remaining slots hold index 0 with zero gradient.
    Static shapes throughout (``tf.unique`` has a dynamic shape, which XLA cannot compile)."""
    order = tf.argsort(indices, stable=True)
    ordered = tf.gather(indices, order)
    first = tf.concat([tf.ones([1], tf.bool), ordered[1:] != ordered[:-1]], axis=0)
    segment = tf.cumsum(tf.cast(first, tf.int32)) - 1
    size = tf.shape(indices)[0]
    summed = tf.math.unsorted_segment_sum(tf.gather(grads, order), segment, size)
    unique = tf.tensor_scatter_nd_update(tf.zeros_like(indices), segment[:, None], ordered)
    return unique, summed


def gather_rows(table, indices, one=None):
    """``tf.gather(table, indices)``, inside an XLA call as a vectorized copy: divided by ``one``,
    a runtime scalar 1.0 (``x / 1`` is exact in IEEE arithmetic, so the values are the same; a
    subnormal reads as zero, as it does in every product of the compiled step, which XLA runs
    with denormal inputs treated as zero).

    Why: XLA's CPU backend emits a gather whose result feeds several kernels as its own kernel,
    a scalar copy loop (a load and a store per float), and the core's store buffer then holds
    the misses of only a row or two at a time. Fused into an elementwise op the copy is a
    vector loop, the misses of many random rows overlap, and the gather costs a fraction (see
    docs/training.md). The op must survive XLA's simplifier (a constant 1 would be folded away)
    and be one that XLA does not duplicate into every consumer (a multiply is; a divide, an
    "expensive" op, is not), so the gather fuses into it and is copied once. ``one=None``: a
    plain gather (eager code, small tensors)."""
    rows = tf.gather(table, indices)
    return rows if one is None else rows / one


def hardest_negative(pu, Q, b, candidates, one=None):
    """Of (C, B) candidate negatives, the one per triple that the model scores highest for its
    user (the first of equal scores): returns its (B,) index, (B, F) factors and (B,) bias, taken
    from the rows gathered for scoring (so the later scatter into Q depends on this gather; see
    the module docstring). ``one``: as ``gather_rows``.

    The rows are gathered triple-major, (B, C, F), so the scores are one batched matrix-vector
    product; scoring the (C, B, F) gather with ``reduce_sum(pu * rows)`` made XLA write the (C, B,
    F) product out and read it back (its CPU backend does not fuse the product into a reduction
    over F), twice the work of the gather itself. The pick is a gather from those (B * C) rows at
    ``k * C + best`` (a one-hot sum over the C candidates gave the same values at several times
    the reads)."""
    by_triple = tf.transpose(candidates)  # (B, C)
    rows = gather_rows(Q, by_triple, one)  # (B, C, F)
    bias = tf.gather(b, by_triple)  # (B, C)
    scores = tf.einsum("bf,bcf->bc", pu, rows) + bias
    per_triple = tf.shape(candidates)[0]
    flat = tf.range(tf.shape(candidates)[1]) * per_triple + tf.argmax(scores, axis=1, output_type=tf.int32)
    return (tf.gather(tf.reshape(by_triple, [-1]), flat),
            gather_rows(tf.reshape(rows, [-1, tf.shape(rows)[2]]), flat, one), tf.gather(tf.reshape(bias, [-1]), flat))


@functools.lru_cache(maxsize=None)
def _chunk_trainer(batch: int, optimizer: str) -> Callable:
    """The XLA-compiled training call for minibatches of ``batch`` triples with ``optimizer``.

    Cached per (batch, optimizer), and the tables are arguments rather than captures, so every
    trainer in a process shares one trace and one compilation per chunk shape (compiling is
    slow). ``train_chunk(tables, accumulators, users, positives, negatives, count, rates)``:
    ``tables`` = (P, Q, b) variables, ``accumulators`` their Adagrad accumulators (or ()),
    (K, B) int32 blocks of which the first ``count`` triples are real (negatives (K, C, B) with C
    candidates per triple; each shape traces once), ``rates`` = [learning
    rate, regularization, bias regularization], ``one`` a float32 scalar tensor 1.0 (an argument,
    so that XLA cannot fold it: see ``gather_rows``); returns the real triples' summed loss (float64).
    """

    def step(tables, accumulators, u, i, j, mask, rates, one):
        P, Q, b = tables
        lr = rates[0]
        pu, qi = gather_rows(P, u, one), gather_rows(Q, i, one)
        bi = tf.gather(b, i)
        if j.shape.rank == 1:
            qj, bj = gather_rows(Q, j, one), tf.gather(b, j)
        else:
            j, qj, bj = hardest_negative(pu, Q, b, j, one)
        loss, grad_u, grad_i, grad_j, grad_bi, grad_bj = bpr_triple_gradients(pu, qi, qj, bi, bj, mask, rates)
        items = tf.concat([i, j], axis=0)
        item_grads = tf.concat([grad_i, grad_j], axis=0)
        bias_grads = tf.concat([grad_bi, grad_bj], axis=0)
        if optimizer == "adagrad":
            for variable, accumulator, indices, grads in zip(tables, accumulators, (u, items, items),
                                                             (grad_u, item_grads, bias_grads)):
                unique, summed = _dedup_rows(indices, grads)
                accumulator.scatter_add(tf.IndexedSlices(summed * summed, unique))
                scale = tf.sqrt(tf.gather(accumulator, unique) + _ADAGRAD_EPSILON)
                variable.scatter_sub(tf.IndexedSlices(lr * summed / scale, unique))
        else:
            P.scatter_sub(tf.IndexedSlices(lr * grad_u, u))
            Q.scatter_sub(tf.IndexedSlices(lr * item_grads, items))
            b.scatter_sub(tf.IndexedSlices(lr * bias_grads, items))
        return tf.reduce_sum(loss)

    # ``autograph=False``: the loop is written as the ``tf.while_loop`` autograph would make of a
    # Python ``while`` (the same graph), and the rest of the code branches on Python values only;
    # converting the source (parsing and rewriting every function it calls) cost more than half a
    # second of every training process's first call.
    @tf.function(jit_compile=True, autograph=False)
    def train_chunk(tables, accumulators, users, positives, negatives, count, rates, one):
        steps = (count + batch - 1) // batch

        def body(s, total):
            mask = tf.cast(s * batch + tf.range(batch) < count, tf.float32)
            loss = step(tables, accumulators, users[s], positives[s], negatives[s], mask, rates, one)
            return s + 1, total + tf.cast(loss, tf.float64)

        # A while loop, not a loop over ``tf.range(steps)``: XLA needs a range's size at compile
        # time, which made ``count`` a compile-time constant, one compilation per distinct count
        # (the last chunk of an epoch compiled again, about a second at 360K scale).
        _, total = tf.while_loop(lambda s, total: s < steps, body,
                                 (tf.constant(0), tf.constant(0.0, tf.float64)))
        return total

    return train_chunk


def _padded(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with zero rows appended up to ``rows`` (itself when it has them)."""
    if array.shape[0] >= rows:
        return array
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[:array.shape[0]] = array
    return out


class BPRTrainer:
    """Trains BPR on (user, artist) training interactions, one epoch per ``train_epoch`` call.

    ``users``, ``artists``: (N,) int indices sorted by (user, artist), each pair once;
    ``weights``: (N,) play counts. Starts the background sampler for all ``hp.epochs`` epochs at
    once (it runs ahead of training by two chunks). Close it (or use ``with``) to stop the sampler.
    Memory: the factor tables, the sampler's hash set (16-32 bytes per interaction) and a few
    chunks; never anything of users x artists. ``sampler``: the ``TripletSampler.for_training``
    of the same arguments when it was built already (``open_trainer`` builds it while TensorFlow
    imports; None: built here).
    """

    def __init__(self, users: np.ndarray, artists: np.ndarray, weights: np.ndarray | None,
                 num_users: int, num_artists: int, hp: Hyperparameters, initial: Factors | None = None,
                 sampler: TripletSampler | None = None):
        self.hp = hp
        self.num_users = int(num_users)
        self.num_artists = int(num_artists)
        # ``initial``: a warm start (trainer_service.warm_start), or ``initial_factors`` drawn
        # already (``open_trainer``); None: ``initial_factors`` drawn here.
        start = initial_factors(num_users, num_artists, hp) if initial is None else initial
        if (start.user_factors.shape != (self.num_users, hp.factors)
                or start.artist_factors.shape != (self.num_artists, hp.factors)
                or start.artist_bias.shape != (self.num_artists,)):
            raise ValueError("initial factors do not match the users, artists and factors of this training")
        # Reserved shapes (``reserve_shapes``): the tables padded with rows no triple names.
        shapes = _shapes(self.num_users, self.num_artists, int(np.asarray(users).size), hp.batch_size)
        self._user_factors = tf.Variable(_padded(start.user_factors, shapes.users), name="user_factors")
        self._artist_factors = tf.Variable(_padded(start.artist_factors, shapes.artists), name="artist_factors")
        self._artist_bias = tf.Variable(_padded(start.artist_bias, shapes.artists), name="artist_bias")
        self._tables = (self._user_factors, self._artist_factors, self._artist_bias)
        self._accumulators: tuple = ()
        if hp.optimizer == "adagrad":
            self._accumulators = tuple(tf.Variable(tf.fill(tf.shape(v), _ADAGRAD_INITIAL_ACCUMULATOR))
                                       for v in self._tables)
        for variable in self._tables + self._accumulators:
            _advise_huge_pages(variable)
        self._train_chunk = _chunk_trainer(hp.batch_size, hp.optimizer)
        self._one = tf.constant(1.0, tf.float32)
        self.epoch = 0
        self._stopped = False
        self._trained = 0  # triples trained so far, for the learning-rate schedule
        # Last: it starts the sampler thread, which close() stops.
        self._stream = training_stream(users, artists, weights, num_users, num_artists, hp,
                                       batches_per_chunk=shapes.batches_per_chunk, sampler=sampler)
        self.samples_per_epoch = self._stream.samples_per_epoch

    def train_epoch(self, should_stop: Callable[[], bool] | None = None) -> EpochStats | None:
        """Train one epoch (``samples_per_epoch`` triples). ``should_stop`` is polled before each
        chunk (at most ``TRIPLES_PER_CALL`` triples, a fraction of a second); when it returns true
        the epoch is abandoned and None is returned: the factors are then partly trained (do not
        publish them) and the trainer trains no more."""
        if self._stopped:
            raise RuntimeError("this trainer was stopped")
        if self.epoch >= self.hp.epochs:
            raise RuntimeError(f"all {self.hp.epochs} epochs are trained")
        started = time.perf_counter()
        total = 0.0
        samples = 0
        while True:
            if should_stop is not None and should_stop():
                self._stopped = True
                return None
            chunk = self._stream.next()
            total += float(self._train_chunk(self._tables, self._accumulators, chunk.users, chunk.positives,
                                             chunk.negatives, tf.constant(chunk.count, tf.int32),
                                             step_rates(self.hp, self._trained, self.samples_per_epoch), self._one))
            samples += chunk.count
            self._trained += chunk.count
            if chunk.last:
                break
        self.epoch += 1
        return EpochStats(epoch=self.epoch, loss=total / samples, samples=samples,
                          seconds=time.perf_counter() - started)

    def factors(self) -> Factors:
        """A copy of the current factors as numpy arrays."""
        users, artists = self.num_users, self.num_artists
        return Factors(user_factors=np.array(self._user_factors[:users]),
                       artist_factors=np.array(self._artist_factors[:artists]),
                       artist_bias=np.array(self._artist_bias[:artists]))

    def close(self) -> None:
        """Stop the background sampler."""
        self._stream.close()

    def __enter__(self) -> "BPRTrainer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

