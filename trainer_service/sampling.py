"""Triple sampling for BPR (numpy only): (user, listened artist, unlistened artist).

As in Rendle et al. 2009 (LearnBPR): the (user, positive) pair is a bootstrap draw from the
training interactions (uniform, or weighted by log(1 + plays): the trainer's default, which
scored a higher HR@10 on Last.fm 2K; see docs/training.md), and the negative is uniform over the
artists the user has NOT listened to. Negatives are drawn by rejection against a hash set of the
(user, artist) pairs; the few draws still rejected after ``REJECTION_ROUNDS`` rounds (users who
listened to most of the catalog) are drawn exactly from the user's complement instead, so a dense
user costs no more than a sparse one and no positive is ever returned as a negative.

Why a hash set: a vectorized ``np.searchsorted`` over the sorted ``user * A + artist`` keys makes
each lookup a chain of dependent cache misses; one open-addressing probe per query is an
independent load, which the CPU overlaps with the others, so it is far cheaper.

For rank-aware training, ``TripletStream`` draws ``negative_candidates`` negatives per triple
(one vectorized call for the extra ones); the trainer picks among them with the current model.

The notebook's sampler (``negative_sampling="popularity"``) is kept for reference: an artist drawn
in proportion to its listeners, the user's own artists not excluded.

``TripletStream`` runs the sampler in a background thread, a bounded queue ahead of training, so
sampling overlaps the TensorFlow steps. Everything is deterministic for a seed: one generator,
drawn from in a fixed order by one thread.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np

from trainer_service.data.errors import DataError
from trainer_service.hyperparameters import Hyperparameters

# Rejection rounds before the exact complement draw takes the remaining negatives.
REJECTION_ROUNDS = 6
_EMPTY = np.int64(-1)
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: 2^64 / golden ratio
_QUERY_PIECE = 1 << 16  # PairSet queries per vectorized piece (8 int64 temporaries of 512 KiB)
_INSERT_PIECE = 1 << 20  # PairSet keys inserted per vectorized piece
_FILTER_PIECE_BITS = 1 << 26  # filter bits set per pass of ``_bit_words`` (a 64 MiB bool array)


def seed_sequence(seed: int, stream: int) -> np.random.SeedSequence:
    """A SeedSequence for ``stream`` (a small constant per purpose) under a 64-bit ``seed`` (negative
    seeds allowed, as in the proto): independent streams for init, sampling and the split."""
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(stream)])


class PairSet:
    """An immutable hash set of (user, artist) pairs, with vectorized membership.

    Keys are ``user * num_artists + artist`` (int64) in an open-addressing table with linear
    probing, sized to the next power of two >= 2 N (load <= 0.5, so about 1.5 probes per query).
    In front of it, a one-hash bit filter of 4 bits per table slot (a sixteenth of the table's
    bytes): a query whose bit is clear is absent without a probe. Negative draws are nearly all
    absent, and a probe is a random read into a table of hundreds of MiB at 360K scale, while
    the filter is small enough to stay in cache; only the few queries whose bit is set (at most
    about 1 in 8 at full load) probe the table. The answers are the table's.
    Memory: 8.5 bytes x 2..4 N.
    """

    def __init__(self, users: np.ndarray, artists: np.ndarray, num_artists: int):
        keys = users.astype(np.int64) * int(num_artists) + artists.astype(np.int64)
        self.num_artists = int(num_artists)
        bits = max(4, int(np.ceil(np.log2(max(2 * keys.size, 2)))))
        self._mask = np.int64((1 << bits) - 1)
        self._shift = np.uint64(64 - bits)
        self._table = np.full(1 << bits, _EMPTY, dtype=np.int64)
        # Vectorized insertion: each round, the pending keys whose slot is empty try to claim it;
        # one of several keys racing for a slot wins, the others (and those that found the slot
        # taken) move one slot on. Duplicate keys would claim two slots: insert unique keys only.
        # (Not np.unique: numpy 2.4's hash-based unique takes ~20 s on 17.5M int64 keys.)
        if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):
            keys = np.sort(keys)
            keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        # The filter's bit of a key: the top ``bits + 2`` bits of the same multiplicative hash.
        self._filter_shift = np.uint64(64 - bits - 2)
        width = bits + 2
        positions = np.empty(keys.size, dtype=np.uint32 if width <= 32 else np.uint64)
        for start in range(0, keys.size, _INSERT_PIECE):
            positions[start:start + _INSERT_PIECE] = self._filter_bits(keys[start:start + _INSERT_PIECE])
        self._filter = _bit_words(positions, width)
        del positions
        # Keys a piece at a time: each piece's temporaries (slots, pending positions) are a few
        # MiB, not several arrays of 8 bytes per key (the build was the peak of a full-scale
        # training's memory). The answers are the same; which of two keys holds a slot both
        # hash to may not be.
        for start in range(0, keys.size, _INSERT_PIECE):
            self._insert(keys[start:start + _INSERT_PIECE])

    def _insert(self, keys: np.ndarray) -> None:
        """Insert distinct ``keys`` not in the table yet."""
        slots = self._slots(keys)
        pending = np.arange(keys.size)
        while pending.size:
            slot = slots[pending]
            free = self._table[slot] == _EMPTY
            self._table[slot[free]] = keys[pending[free]]
            placed = self._table[slot] == keys[pending]
            pending = pending[~placed]
            slots[pending] = (slots[pending] + 1) & self._mask

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _HASH_MULTIPLIER) >> self._shift).astype(np.int64)

    def _filter_bits(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _HASH_MULTIPLIER) >> self._filter_shift).astype(np.int64)

    def _maybe(self, keys: np.ndarray) -> np.ndarray:
        """Positions in ``keys`` (int64) whose filter bit is set: the only ones that can be in
        the set. In-place steps and ``np.take``: this runs on millions of draws per call."""
        bits = keys.view(np.uint64) * _HASH_MULTIPLIER  # keys are >= 0: the view is the value
        bits >>= self._filter_shift
        words = np.take(self._filter, (bits >> np.uint64(6)).view(np.int64))
        bits &= np.uint64(63)
        words >>= bits
        words &= np.uint64(1)
        return np.flatnonzero(words)

    def contains(self, users: np.ndarray, artists: np.ndarray) -> np.ndarray:
        """(n,) bool: whether each (users[k], artists[k]) is in the set."""
        users, artists = np.asarray(users), np.asarray(artists)
        if users.size <= _QUERY_PIECE:
            return self._contains(users, artists)
        # Millions of queries at once (the sampler's extra candidates) in pieces: the int64
        # temporaries of a piece are reused from the heap and stay in cache, where whole-array
        # temporaries of tens of MiB are fresh pages every call.
        found = np.empty(users.size, dtype=bool)
        for start in range(0, users.size, _QUERY_PIECE):
            end = start + _QUERY_PIECE
            found[start:end] = self._contains(users[start:end], artists[start:end])
        return found

    def _contains(self, users: np.ndarray, artists: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64)
        keys *= self.num_artists
        keys += artists
        found = np.zeros(keys.size, dtype=bool)
        open_ = self._maybe(keys)
        keys = keys[open_]
        slots = self._slots(keys)
        while open_.size:
            stored = self._table[slots]
            hit = stored == keys
            found[open_[hit]] = True
            go_on = ~hit & (stored != _EMPTY)
            open_, keys = open_[go_on], keys[go_on]
            slots = (slots[go_on] + 1) & self._mask
        return found

    @property
    def nbytes(self) -> int:
        return int(self._table.nbytes + self._filter.nbytes)


def _bit_words(positions: np.ndarray, width: int) -> np.ndarray:
    """(2 ** width / 64,) uint64 words (``width`` >= 6) in which bit ``p & 63`` of word ``p >> 6``
    is set for every ``p`` of ``positions`` (unsigned ints below 2 ** width), as
    ``np.bitwise_or.at(words, p >> 6, 1 << (p & 63))`` sets them, several times faster: a bool per
    bit, packed little-endian, a ``_FILTER_PIECE_BITS`` range of the bits per pass."""
    total = 1 << width
    words = np.zeros(total >> 6, dtype=np.uint64)
    piece = min(total, _FILTER_PIECE_BITS)
    flags = np.zeros(piece, dtype=bool)
    piece_shift = positions.dtype.type(piece.bit_length() - 1)
    for start in range(0, total, piece):
        if piece == total:
            offsets = positions
        else:
            offsets = positions[(positions >> piece_shift) == start // piece] - positions.dtype.type(start)
        flags[:] = False
        flags[offsets] = True
        words[start >> 6:(start + piece) >> 6] = np.packbits(flags, bitorder="little").view("<u8")
    return words


@dataclass(frozen=True)
class Triples:
    """(n,) int32 arrays: users, their positive artists, and negative artists."""

    users: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray


class TripletSampler:
    """Draws BPR triples from training interactions.

    ``users``, ``artists``: (N,) int indices of the training interactions, sorted by (user,
    artist), each pair once; ``weights``: (N,) play counts (used by ``positive_sampling
    ="log_plays"``). Users who listened to every artist have no negative: their interactions are
    never drawn as positives. Raises ``DataError`` when no interaction has a possible negative
    or play counts are missing or not positive (``log_plays``).
    """

    def __init__(self, users: np.ndarray, artists: np.ndarray, weights: np.ndarray | None,
                 num_users: int, num_artists: int, *, negative_sampling: str = "uniform",
                 positive_sampling: str = "uniform"):
        if negative_sampling not in ("uniform", "popularity"):
            raise ValueError(f"unknown negative_sampling {negative_sampling!r}")
        if positive_sampling not in ("uniform", "log_plays"):
            raise ValueError(f"unknown positive_sampling {positive_sampling!r}")
        self.users = np.ascontiguousarray(users, dtype=np.int32)
        self.artists = np.ascontiguousarray(artists, dtype=np.int32)
        self.num_users = int(num_users)
        self.num_artists = int(num_artists)
        self.negative_sampling = negative_sampling
        counts = np.bincount(self.users, minlength=self.num_users)
        self.indptr = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(counts, out=self.indptr[1:])
        # Positives are drawn from this pool: every interaction except those of saturated users.
        saturated = counts >= self.num_artists
        self._pool: np.ndarray | None = None
        if saturated.any():
            self._pool = np.flatnonzero(~saturated[self.users])
        pool_size = self.users.size if self._pool is None else self._pool.size
        if pool_size == 0:
            raise DataError("no interaction has a negative: every user listened to every artist")
        self._pool_size = int(pool_size)
        # log_plays: acceptance probability of each pool entry, log(1 + plays) / max (float32).
        self._acceptance: np.ndarray | None = None
        if positive_sampling == "log_plays":
            if weights is None:
                raise DataError("positive_sampling='log_plays' needs play counts")
            w = np.log1p(np.asarray(weights, dtype=np.float64))
            if self._pool is not None:
                w = w[self._pool]
            if not (np.isfinite(w).all() and (w > 0).all()):
                raise DataError("play counts must be finite and > 0")
            self._acceptance = (w / w.max()).astype(np.float32)
        self._pairs = PairSet(self.users, self.artists, self.num_artists) if negative_sampling == "uniform" else None

    @classmethod
    def for_training(cls, users: np.ndarray, artists: np.ndarray, weights: np.ndarray | None, num_users: int,
                     num_artists: int, hp: Hyperparameters) -> "TripletSampler":
        """The sampler of a training with ``hp`` (arguments as ``trainer_service.bpr.BPRTrainer``'s)."""
        return cls(users, artists, weights, num_users, num_artists, negative_sampling=hp.negative_sampling,
                   positive_sampling=hp.positive_sampling)

    def sample(self, n: int, rng: np.random.Generator) -> Triples:
        """``n`` triples drawn with ``rng``."""
        index = rng.integers(0, self._pool_size, size=n)
        if self._acceptance is not None:
            # Weighted draws by rejection: accept entry k with probability w_k / max w. Cheaper
            # than an inverse-CDF search (a cache miss chain per draw at 360K scale); with
            # log-scaled play counts about half of the draws are accepted.
            redo = np.flatnonzero(rng.random(n, dtype=np.float32) >= self._acceptance[index])
            while redo.size:
                index[redo] = rng.integers(0, self._pool_size, size=redo.size)
                redo = redo[rng.random(redo.size, dtype=np.float32) >= self._acceptance[index[redo]]]
        if self._pool is not None:
            index = self._pool[index]
        users = self.users[index]
        positives = self.artists[index]
        return Triples(users, positives, self.negatives(users, rng))

    def negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) int32: one negative artist per user of ``users`` (n,), as ``negative_sampling`` says."""
        if self.negative_sampling == "popularity":
            return self.artists[rng.integers(0, self.users.size, size=users.size)]
        return self._uniform_negatives(users, rng)

    def _uniform_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        negatives = rng.integers(0, self.num_artists, size=users.size, dtype=np.int32)
        assert self._pairs is not None
        redraw = np.flatnonzero(self._pairs.contains(users, negatives))
        for _ in range(REJECTION_ROUNDS):
            if not redraw.size:
                return negatives
            negatives[redraw] = rng.integers(0, self.num_artists, size=redraw.size, dtype=np.int32)
            redraw = redraw[self._pairs.contains(users[redraw], negatives[redraw])]
        if redraw.size:
            negatives[redraw] = self.complement_draw(users[redraw], rng)
        return negatives

    def complement_draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) int32: for each user an artist drawn uniformly from those they never listened to.

        Draws r uniform in [0, A - deg(u)) and returns the r-th artist (0-based) not in the user's
        sorted list s: ``r + #{k : s[k] - k <= r}``, counted by a vectorized binary search over
        the user's segment (``s[k] - k`` never decreases). Exact, no rejection; cost grows with
        log(deg), so it serves the few draws rejection sampling does not settle.
        """
        users = np.asarray(users, dtype=np.int64)
        start = self.indptr[users]
        degree = self.indptr[users + 1] - start
        r = (rng.random(users.size) * (self.num_artists - degree)).astype(np.int64)
        r = np.minimum(r, self.num_artists - degree - 1)
        # Find how many k in [0, degree) satisfy s[k] - k <= r (a prefix of the segment).
        low = np.zeros(users.size, dtype=np.int64)
        high = degree.copy()
        while True:
            active = low < high
            if not active.any():
                break
            mid = (low + high) // 2
            probe = np.where(active, start + mid, 0)
            ok = active & (self.artists[probe].astype(np.int64) - mid <= r)
            low = np.where(ok, mid + 1, low)
            high = np.where(active & ~ok, mid, high)
        return (r + low).astype(np.int32)


@dataclass(frozen=True)
class Chunk:
    """A block of minibatches for one training call: ``users``, ``positives`` are (batches,
    batch_size) int32, ``negatives`` too with one candidate per triple, or (batches, candidates,
    batch_size) with several; only the first ``count`` triples (row-major) are real, the rest
    padding. ``epoch`` is 1-based; ``last`` marks the epoch's final chunk."""

    users: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    count: int
    epoch: int
    last: bool


class TripletStream:
    """Produces ``Chunk``s for ``epochs`` epochs of ``samples_per_epoch`` triples each in a
    background thread, up to ``depth`` chunks ahead. Use as a context manager (or call ``close``).

    ``next()`` returns chunks in order; the sequence depends only on the sampler and ``rng``.
    """

    def __init__(self, sampler: TripletSampler, rng: np.random.Generator, *, samples_per_epoch: int,
                 epochs: int, batch_size: int, batches_per_chunk: int, depth: int = 2,
                 negative_candidates: int = 1):
        self._sampler = sampler
        self.negative_candidates = int(negative_candidates)
        self._rng = rng
        self.samples_per_epoch = int(samples_per_epoch)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.batches_per_chunk = int(batches_per_chunk)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="bpr-sampler", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        capacity = self.batch_size * self.batches_per_chunk
        try:
            for epoch in range(1, self.epochs + 1):
                remaining = self.samples_per_epoch
                while remaining > 0:
                    count = min(capacity, remaining)
                    remaining -= count
                    triples = self._sampler.sample(count, self._rng)
                    arrays = []
                    for values in (triples.users, triples.positives):
                        block = np.zeros(capacity, dtype=np.int32)
                        block[:count] = values
                        arrays.append(block.reshape(self.batches_per_chunk, self.batch_size))
                    arrays.append(self._negative_block(triples, count, capacity))
                    if not self._put(Chunk(*arrays, count=count, epoch=epoch, last=remaining == 0)):
                        return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)

    def _negative_block(self, triples: Triples, count: int, capacity: int) -> np.ndarray:
        candidates = self.negative_candidates
        block = np.zeros((candidates, capacity), dtype=np.int32)
        block[0, :count] = triples.negatives
        if candidates > 1:  # one vectorized draw for all the extra candidates
            extra = self._sampler.negatives(np.tile(triples.users, candidates - 1), self._rng)
            block[1:, :count] = extra.reshape(candidates - 1, count)
        if candidates == 1:
            return block.reshape(self.batches_per_chunk, self.batch_size)
        return np.ascontiguousarray(block.reshape(candidates, self.batches_per_chunk, self.batch_size)
                                    .transpose(1, 0, 2))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> Chunk:
        """The next chunk (blocks until the sampler has produced it)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the producer thread and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "TripletStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
