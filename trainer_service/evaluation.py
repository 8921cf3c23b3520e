"""Leave-one-out evaluation of a factor model, with a popularity baseline on the same split.

numpy only. Protocol:

- **Split** (``leave_one_out_split``): for every user with at least ``MIN_INTERACTIONS``
  interactions (and at least one artist they never listened to), one interaction drawn at random
  (seeded) is held out; the model is trained on the rest.
- **Ranking**: for an evaluated user, every artist they have not interacted with in training is
  ranked by ``user_factors[u] @ artist_factors[a] + artist_bias[a]``; the popularity baseline ranks
  them by the number of training listeners. The held-out artist's position decides:
  HR@10 (it is in the top 10), NDCG@10 (``1 / log2(position + 2)`` if it is, else 0) and AUC (the
  fraction of the other candidates it outranks). Ties (common for popularity) count as broken
  at random: the metrics are their exact expectations under a random order of the tied artists
  (a tie counts half in AUC).
- **Validation** (``validation_split``): model selection (early stopping, ``tune``) needs a
  hold-out of its own, or it would tune on the test. It is carved the same way out of the test
  split's *training part* only (one seeded interaction per user still eligible there); the
  models it selects train on what remains. The test hold-out is never read by it.
- **Cap**: evaluating all of Last.fm 360K's users costs minutes, so ``max_users`` evaluates a
  seeded uniform sample of the eligible users instead; ``evaluated_users`` records how many.

Memory: scores are computed for a block of users at a time (``block_users x A`` floats), never a
users x artists matrix.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from musicrec.rpc.errors import FailedPrecondition
from trainer_service.sampling import seed_sequence

MIN_INTERACTIONS = 5
CUTOFF = 10
# Scores per block: rows x artists float32s (64 MiB; two such temporaries at most) bound the
# evaluation's working memory; ~100 users per block at 160K artists keeps BLAS efficient.
_BLOCK_SCORES = 1 << 24
_SPLIT_STREAM = 3
_SAMPLE_STREAM = 4
_VALIDATION_STREAM = 5



class TrainingDiverged(FailedPrecondition):
    """The model's loss or factors are not finite: the learning rate is too high for this data
    (FAILED_PRECONDITION: the same request fails again; lower ``learning_rate``). Nothing is
    published."""


# _DCG_PREFIX[k] = sum of 1 / log2(p + 2) for positions p < k (k = 0..CUTOFF).
_DCG_PREFIX = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(CUTOFF) + 2.0))])


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """A training set and one held-out artist per evaluated user.

    Shapes (U users, A artists, T training interactions, E evaluated users):
    ``train_users``, ``train_artists``: (T,) int32, sorted by (user, artist); ``train_weights``:
    (T,) float32; ``train_indptr``: (U + 1,) int64, the CSR row pointers of the training
    interactions (indices: ``train_artists``); ``heldout_users``: (E,) int32, ascending;
    ``heldout_artists``: (E,) int32.
    """

    num_users: int
    num_artists: int
    train_users: np.ndarray
    train_artists: np.ndarray
    train_weights: np.ndarray
    train_indptr: np.ndarray
    heldout_users: np.ndarray
    heldout_artists: np.ndarray

    @property
    def num_heldout(self) -> int:
        return int(self.heldout_users.size)

    def train_listeners(self) -> np.ndarray:
        """(A,) int64: distinct training listeners per artist (the popularity baseline's score)."""
        return np.bincount(self.train_artists, minlength=self.num_artists)


def leave_one_out_split(users: np.ndarray, artists: np.ndarray, weights: np.ndarray, num_users: int,
                        num_artists: int, seed: int, min_interactions: int = MIN_INTERACTIONS,
                        *, stream: int = _SPLIT_STREAM) -> LeaveOneOutSplit:
    """Hold out one random interaction of every user with >= ``min_interactions`` interactions
    and fewer than ``num_artists`` (a user who heard everything has nothing to rank it against).

    ``users``, ``artists``, ``weights``: (N,) interactions sorted by (user, artist), each pair
    once (as ``Interactions`` holds them). Deterministic for ``seed`` (and ``stream``, the
    random stream under it: the test and validation splits use different ones).
    """
    users = np.asarray(users, dtype=np.int32)
    artists = np.asarray(artists, dtype=np.int32)
    counts = np.bincount(users, minlength=num_users)
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    eligible = np.flatnonzero((counts >= min_interactions) & (counts < num_artists)).astype(np.int32)
    rng = np.random.default_rng(seed_sequence(seed, stream))
    picks = indptr[eligible] + (rng.random(eligible.size) * counts[eligible]).astype(np.int64)
    picks = np.minimum(picks, indptr[eligible + 1] - 1)
    keep = np.ones(users.size, dtype=bool)
    keep[picks] = False
    train_counts = counts.copy()
    train_counts[eligible] -= 1
    train_indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(train_counts, out=train_indptr[1:])
    return LeaveOneOutSplit(
        num_users=int(num_users), num_artists=int(num_artists),
        train_users=users[keep], train_artists=artists[keep],
        train_weights=np.asarray(weights, dtype=np.float32)[keep], train_indptr=train_indptr,
        heldout_users=eligible, heldout_artists=artists[picks],
    )


def validation_split(split: LeaveOneOutSplit, seed: int) -> LeaveOneOutSplit:
    """A validation hold-out carved out of ``split``'s training part: one seeded interaction of
    every user with >= ``MIN_INTERACTIONS`` training interactions is held out, the rest is the
    validation split's training part. Reads only ``split.train_*``: the test hold-out never
    decides anything tuned on this split."""
    return leave_one_out_split(split.train_users, split.train_artists, split.train_weights, split.num_users,
                               split.num_artists, seed, stream=_VALIDATION_STREAM)


def sample_heldout(split: LeaveOneOutSplit, max_users: int | None, seed: int) -> np.ndarray:
    """Indices into the split's held-out arrays to evaluate: all (``max_users`` None or >= E), or
    a seeded uniform sample of ``max_users`` of them, ascending."""
    total = split.num_heldout
    if max_users is None or max_users >= total:
        return np.arange(total)
    if max_users < 1:
        raise ValueError(f"max_users must be >= 1, got {max_users}")
    rng = np.random.default_rng(seed_sequence(seed, _SAMPLE_STREAM))
    return np.sort(rng.choice(total, size=max_users, replace=False))


@dataclass(frozen=True)
class RankingMetrics:
    """Leave-one-out metrics of one ranker (means over ``evaluated_users``)."""

    hit_rate_at_10: float
    ndcg_at_10: float
    auc: float
    evaluated_users: int


def metrics_from_ranks(greater: np.ndarray, ties: np.ndarray, candidates: np.ndarray) -> RankingMetrics:
    """Metrics from, per evaluated user, the number of other candidates scored strictly above the
    held-out artist (``greater``), scored equal (``ties``), and the number of other candidates
    (``candidates``: unseen artists besides the held-out one). Ties are broken uniformly at
    random, in expectation."""
    greater = np.asarray(greater, dtype=np.int64)
    ties = np.asarray(ties, dtype=np.int64)
    candidates = np.asarray(candidates, dtype=np.float64)
    if greater.size == 0:
        return RankingMetrics(0.0, 0.0, 0.0, 0)
    spread = ties + 1  # the held-out artist is equally likely at positions greater .. greater+ties
    hits = np.clip(CUTOFF - greater, 0, spread) / spread
    top = np.minimum(greater + spread, CUTOFF)
    low = np.minimum(greater, CUTOFF)
    ndcg = (_DCG_PREFIX[top] - _DCG_PREFIX[low]) / spread
    auc = np.where(candidates > 0, (candidates - greater - 0.5 * ties) / np.maximum(candidates, 1), 1.0)
    return RankingMetrics(float(hits.mean()), float(ndcg.mean()), float(auc.mean()), int(greater.size))


def _ragged_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR row pointers and selected rows: (row position in ``rows``, index into the CSR
    data) of every entry of those rows, concatenated."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    owner = np.repeat(np.arange(rows.size), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, np.repeat(starts, lengths) + offsets


def _block_users(num_artists: int) -> int:
    """Users scored per block: ``_BLOCK_SCORES`` scores."""
    return max(1, _BLOCK_SCORES // max(num_artists, 1))


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """(R,) int64: the true entries of each row of an (R, A) bool array. Row by row on purpose:
    ``np.count_nonzero(mask, axis=1)`` sums the bools through a widening cast, several times
    slower than counting each contiguous row (the evaluation counts two such arrays per block)."""
    return np.fromiter((np.count_nonzero(row) for row in mask), dtype=np.int64, count=mask.shape[0])


def evaluate_model(user_factors: np.ndarray, artist_factors: np.ndarray, artist_bias: np.ndarray,
                   split: LeaveOneOutSplit, selection: np.ndarray | None = None, workers: int = 0) -> RankingMetrics:
    """Leave-one-out metrics of the model (``(U, F)``, ``(A, F)``, ``(A,)`` float arrays) on the
    held-out entries ``selection`` (indices into the split's held-out arrays; None: all).

    The blocks of users run on ``workers`` threads (0: one per core), BLAS on one thread each:
    the products, comparisons and counts release the GIL, and the comparisons and counts, about
    a third of the time at full scale, would otherwise run on one core."""
    selection = np.arange(split.num_heldout) if selection is None else np.asarray(selection)
    users = split.heldout_users[selection]
    items = np.asarray(artist_factors, dtype=np.float32)
    bias = np.asarray(artist_bias, dtype=np.float32)
    if not (np.isfinite(items).all() and np.isfinite(bias).all() and np.isfinite(user_factors[users]).all()):
        # NaN compares false with everything and would rank the held-out artist first.
        raise TrainingDiverged("the model's factors contain NaN or infinity (training diverged: lower the learning rate)")
    # (F, A) contiguous: BLAS multiplies against it ~1.7x faster than against the transposed view.
    items_t = np.ascontiguousarray(items.T)

    def scores(rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        block = np.matmul(np.asarray(user_factors[rows], dtype=np.float32), items_t, out=out)
        block += bias
        return block

    return _evaluate_blocks(scores, split, selection, workers or (os.cpu_count() or 1))


def evaluate_scores(scores, split: LeaveOneOutSplit, selection: np.ndarray | None = None) -> RankingMetrics:
    """Leave-one-out metrics of any scorer: ``scores(rows)`` returns the (len(rows), A) float32
    scores of those users for every artist (an array this function may modify, and is done with
    when it asks for the next block); evaluated on the held-out entries ``selection`` (None: all),
    ``_block_users(A)`` users at a time."""
    selection = np.arange(split.num_heldout) if selection is None else np.asarray(selection)
    return _evaluate_blocks(lambda rows, out: scores(rows), split, selection, workers=1)


def _evaluate_blocks(scores, split: LeaveOneOutSplit, selection: np.ndarray, workers: int) -> RankingMetrics:
    """The metrics of ``scores(rows, out)``, which returns the (len(rows), A) float32 scores of
    those users (``out``: a buffer of that shape it may write them into), ``_block_users(A)``
    users a block, the blocks on ``workers`` threads (BLAS on one thread each when several)."""
    users = split.heldout_users[selection].astype(np.int64)
    held = split.heldout_artists[selection].astype(np.int64)
    block = _block_users(split.num_artists)
    starts = range(0, users.size, block)
    workers = max(1, min(workers, len(starts)))
    greater = np.empty(users.size, dtype=np.int64)
    ties = np.empty(users.size, dtype=np.int64)
    # Each thread's score and comparison blocks, written again by its next block: a fresh block
    # of tens of MiB is fresh pages for the kernel to zero on every block.
    held_buffers = threading.local()

    def one(start: int) -> None:
        rows = users[start:start + block]
        end = start + rows.size
        buffers = getattr(held_buffers, "blocks", None)
        if buffers is None:
            shape = (min(block, users.size), split.num_artists)
            buffers = held_buffers.blocks = (np.empty(shape, dtype=np.float32), np.empty(shape, dtype=bool))
        _rank_block(scores(rows, buffers[0][:rows.size]), split, rows, held[start:end], buffers[1][:rows.size],
                    greater[start:end], ties[start:end])

    if workers > 1:
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, starts))
    else:
        for start in starts:
            one(start)
    candidates = split.num_artists - np.diff(split.train_indptr)[users] - 1
    return metrics_from_ranks(greater, ties, candidates)


def _rank_block(scores: np.ndarray, split: LeaveOneOutSplit, rows: np.ndarray, held: np.ndarray, mask: np.ndarray,
                greater: np.ndarray, ties: np.ndarray) -> None:
    """For the users ``rows`` and their held-out artists ``held``, with ``scores`` (R, A) their
    scores (modified: their training artists set to -inf; ``mask`` an (R, A) bool buffer): write
    how many candidates score above the held-out artist into ``greater`` and how many tie with it
    into ``ties``."""
    owner, entries = _ragged_rows(split.train_indptr, rows)
    scores[owner, split.train_artists[entries]] = -np.inf
    target = scores[np.arange(rows.size), held][:, None]
    greater[:] = _row_counts(np.greater(scores, target, out=mask))
    ties[:] = _row_counts(np.equal(scores, target, out=mask)) - 1


def evaluate_popularity(split: LeaveOneOutSplit, selection: np.ndarray | None = None) -> RankingMetrics:
    """Leave-one-out metrics of ranking by training listeners, on the same held-out entries.

    No score matrix: the counts over all artists come from the sorted listener counts, minus
    those of the user's own training artists."""
    selection = np.arange(split.num_heldout) if selection is None else np.asarray(selection)
    users = split.heldout_users[selection].astype(np.int64)
    listeners = split.train_listeners()
    target = listeners[split.heldout_artists[selection]]
    ordered = np.sort(listeners)
    above_all = ordered.size - np.searchsorted(ordered, target, side="right")
    equal_all = np.searchsorted(ordered, target, side="right") - np.searchsorted(ordered, target, side="left") - 1
    owner, entries = _ragged_rows(split.train_indptr, users)
    seen = listeners[split.train_artists[entries]]
    above_seen = np.bincount(owner, weights=seen > target[owner], minlength=users.size).astype(np.int64)
    equal_seen = np.bincount(owner, weights=seen == target[owner], minlength=users.size).astype(np.int64)
    candidates = split.num_artists - np.diff(split.train_indptr)[users] - 1
    return metrics_from_ranks(above_all - above_seen, equal_all - equal_seen, candidates)


@dataclass(frozen=True)
class EvaluationReport:
    """The model's and the popularity baseline's metrics on the same held-out users."""

    model: RankingMetrics
    popularity: RankingMetrics

    def as_dict(self) -> dict[str, float | int]:
        """The manifest's metrics (keys mirror ``EvaluationMetrics`` in model.proto)."""
        return {
            "hit_rate_at_10": self.model.hit_rate_at_10,
            "ndcg_at_10": self.model.ndcg_at_10,
            "auc": self.model.auc,
            "evaluated_users": self.model.evaluated_users,
            "popularity_hit_rate_at_10": self.popularity.hit_rate_at_10,
            "popularity_ndcg_at_10": self.popularity.ndcg_at_10,
            "popularity_auc": self.popularity.auc,
        }


def evaluate(user_factors: np.ndarray, artist_factors: np.ndarray, artist_bias: np.ndarray,
             split: LeaveOneOutSplit, selection: np.ndarray | None = None) -> EvaluationReport:
    """The model and the popularity baseline on the held-out entries ``selection`` (None: all)."""
    return EvaluationReport(
        model=evaluate_model(user_factors, artist_factors, artist_bias, split, selection),
        popularity=evaluate_popularity(split, selection),
    )
