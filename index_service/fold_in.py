"""A listener's vector fitted from their listening history against a version's fixed artist
factors and bias ("fold-in"; no gRPC here).

A listener who was not in training has no row in the user factors. Their vector ``p`` (F,) is
fitted with the artists' factors ``Q`` (A, F) and bias ``b`` (A,) held fixed, so that
``p . Q[a] + b[a]`` ranks artists as the model would rank them for a user with that history.

The fit is the model's own objective (BPR) restricted to ``p``. Every history artist ``i`` is
paired with negatives ``j`` from a fixed pool of ``NEGATIVES`` artists drawn once per version
(seeded: the same history always gets the same vector, so pages of one ranking concatenate), and
``sum_j v_j * mean_i w_i * softplus(-(p . (Q[i] - Q[j]) + b[i] - b[j])) + reg / 2 * |p|^2`` is
minimized by ``NEWTON_STEPS`` Newton steps from ``p = 0``. ``w_i`` is ``log1p(plays)`` normalized
to mean 1 (training samples positives by log plays). The negatives' weights ``v`` follow the
version's sampler (``negative_candidates`` in its hyperparameters): with plain BPR (1 candidate)
the first ``UNIFORM_NEGATIVES`` of the pool weigh the same; with rank-aware negatives (the hardest
of c uniform candidates) a pool artist of score rank r (0 = lowest of m) is the one trained on
with probability ``((r + 1) / m)^c - (r / m)^c``, so before each step the pool is scored with the
current ``p`` and its ``HARD_NEGATIVES`` highest-ranked artists are kept with those weights
(renormalized; they hold about 90% of the mass for c = 8). ``reg`` is the version's training
regularization, at least ``MIN_REGULARIZATION``: a fold-in with a lighter L2 overfits the few
pairs it sees (a trained user vector is also held back by starting near 0 and a fixed number of
epochs). The step count was chosen with the held-out-user protocol of ``bench/fold_in.py`` on
Last.fm 2K and MovieLens small (figures in docs/serving.md); the floor and the pool sizes by
``bench/fold_in_floor.py`` over 20 seeds of both, paired by user (docs/fold-in-floor.md,
docs/fold-in-pool.md). The
objective is convex in ``p`` for fixed weights; the F x F Hessian is formed from sums over the
pairs without materializing an (n * m, F) matrix, and a pair's weight (the positive's times the
negative's, a rank-1 product) enters through the rows and matrix-vector products rather than a
pass over the (n, m') pairs; the hardest rows are found by a partition, not a sort of the pool.
A 100-artist history costs a few small matrix products per step.
"""

from __future__ import annotations

import numpy as np

# Chosen over 20 seeds of both data sets, each size averaged over 4 pool draws
# (docs/fold-in-pool.md): 1024 drawn, the 256 hardest kept, beat 512 and 192 on both data sets
# at both widths measured, for about 1.3x the fit's time; larger pools gained on MovieLens small
# at 1.7x to 4x the time, or lost when they kept too small a share of the pool.
NEGATIVES = 1024
UNIFORM_NEGATIVES = 128
HARD_NEGATIVES = 256
NEWTON_STEPS = 3
# Chosen over 20 seeds of both data sets (docs/fold-in-floor.md): 0.05 fits MovieLens small's
# long histories better than 0.03 and is level with it on Last.fm 2K; more loses on Last.fm 2K.
MIN_REGULARIZATION = 0.05
DEFAULT_REGULARIZATION = 0.003  # for versions whose manifest lacks the training regularization
_SEED = 0x5EED


class FoldIn:
    """Fits listener vectors for one version. Immutable after construction; thread-safe.

    ``artist_factors`` (A, F) and ``artist_bias`` (A,) are not copied (they may be memory-mapped);
    ``regularization`` is the version's L2 weight per training triple (the fit uses at least
    ``min_regularization``); ``negative_candidates`` the version's negatives per triple (see the
    module docstring).
    """

    def __init__(self, artist_factors: np.ndarray, artist_bias: np.ndarray, *, regularization: float,
                 negative_candidates: int = 1, negatives: int = NEGATIVES,
                 uniform_negatives: int = UNIFORM_NEGATIVES, hard_negatives: int = HARD_NEGATIVES,
                 newton_steps: int = NEWTON_STEPS, min_regularization: float = MIN_REGULARIZATION,
                 seed: int = _SEED):
        self.factors = artist_factors
        self.bias = artist_bias
        self.num_artists, self.num_factors = (int(n) for n in artist_factors.shape)
        self.regularization = max(float(regularization), float(min_regularization))
        self.negative_candidates = max(1, int(negative_candidates))
        self.newton_steps = max(1, int(newton_steps))
        rng = np.random.default_rng(seed)
        pool = rng.choice(self.num_artists, size=min(negatives, self.num_artists), replace=False)
        if self.negative_candidates == 1:
            pool = pool[:uniform_negatives]  # every negative weighs the same: a smaller sample does
        self.hard_negatives = int(hard_negatives)
        self.pool = np.sort(pool).astype(np.int64)
        # float32 throughout the fit: the same vectors' rankings as float64 on the protocol, and
        # the (n, m) pair matrices cost half as much.
        self.pool_factors = np.asarray(artist_factors[self.pool], dtype=np.float32)
        self.pool_bias = np.asarray(artist_bias[self.pool], dtype=np.float32)

    def fit(self, artists: np.ndarray, plays: np.ndarray) -> np.ndarray:
        """The listener's query vector ``[p, 1]`` (F + 1,) float32, whose inner product with a row
        ``[Q[a], b[a]]`` is the score of artist a. ``artists`` (n,) distinct artist indices,
        ``plays`` (n,) positive finite weights; n >= 1."""
        weights = np.log1p(np.asarray(plays, dtype=np.float64))
        weights *= weights.shape[0] / weights.sum()
        p = self._fit_bpr(np.asarray(artists, dtype=np.int64), weights)
        query = np.empty(self.num_factors + 1, dtype=np.float32)
        query[:-1] = p
        query[-1] = 1.0
        return query

    def _fit_bpr(self, artists: np.ndarray, weights: np.ndarray) -> np.ndarray:
        positives = np.asarray(self.factors[artists], dtype=np.float32)  # (n, F)
        positive_bias = np.asarray(self.bias[artists], dtype=np.float32)
        keep = ~np.isin(self.pool, artists, assume_unique=True)  # a history artist is no negative
        pool = self.pool_factors[keep] if not keep.all() else self.pool_factors  # (m, F)
        pool_bias = self.pool_bias[keep] if not keep.all() else self.pool_bias
        n, m, f = positives.shape[0], pool.shape[0], self.num_factors
        p = np.zeros(f, dtype=np.float32)
        if m == 0:
            return p
        reg = np.float32(self.regularization)
        positive_weights = (weights / n).astype(np.float32)  # the mean over positives, by plays
        weighted_positives = positives * positive_weights[:, None]
        uniform = np.full(m, 1.0 / m, dtype=np.float32)
        diagonal = np.arange(f)
        for _ in range(self.newton_steps):
            negatives, negative_scores, negative_weights = pool, pool @ p + pool_bias, uniform
            if self.negative_candidates > 1:
                negatives, negative_scores, negative_weights = self._hardest(pool, negative_scores)
            # The pair (i, j) weighs positive_weights[i] * negative_weights[j]: a rank-1 product,
            # so it is folded into the rows and the matrix-vector products, never an (n, m') pass.
            # pull = sigmoid(-margin) = 1 / (1 + exp(margin)); a margin past float32's exp range
            # gives inf and a pull of exactly 0, as the clipped form did.
            pull = np.subtract.outer(positives @ p + positive_bias, negative_scores)  # the margins
            with np.errstate(over="ignore"):
                np.exp(pull, out=pull)
            pull += np.float32(1.0)
            np.reciprocal(pull, out=pull)
            curvature = pull * pull
            np.subtract(pull, curvature, out=curvature)  # sigmoid'(margin) = pull * (1 - pull)
            # sum_ij c_ij (q_i - q_j)(q_i - q_j)^T with c_ij = curvature_ij * w_i * v_j, as four
            # (F, F) products.
            cross = weighted_positives.T @ (curvature @ (negatives * negative_weights[:, None]))
            row_sums = positive_weights * (curvature @ negative_weights)
            column_sums = negative_weights * (positive_weights @ curvature)
            hessian = (positives.T * row_sums) @ positives
            hessian += (negatives.T * column_sums) @ negatives
            hessian -= cross + cross.T
            hessian[diagonal, diagonal] += reg
            gradient = (negatives.T @ (negative_weights * (positive_weights @ pull))
                        - positives.T @ (positive_weights * (pull @ negative_weights)) + reg * p)
            p -= np.linalg.solve(hessian, gradient)
        return p

    def _hardest(self, pool: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pool's ``hard_negatives`` highest-scored rows (m', F), their scores (m',) and their
        weights (m',): the chance that each is the hardest of ``negative_candidates`` uniform
        draws from the pool, renormalized over the rows kept. Ties by pool order (stable)."""
        m = scores.shape[0]
        k = min(self.hard_negatives, m)
        if k < m:
            # The k highest without sorting the pool: the k-th highest value, the rows above it,
            # and of the rows equal to it the last in pool order (as a stable ascending sort's
            # last k would hold), then those k sorted.
            threshold = np.partition(scores, m - k)[m - k]
            above = np.flatnonzero(scores > threshold)
            ties = np.flatnonzero(scores == threshold)
            chosen = np.concatenate((ties[ties.shape[0] - (k - above.shape[0]):], above))
        else:
            chosen = np.arange(m)
        order = chosen[np.lexsort((chosen, scores[chosen]))]  # ascending ranks, ties by pool order
        rank = np.arange(m - k, m, dtype=np.float64)
        c = self.negative_candidates
        weights = ((rank + 1.0) / m) ** c - (rank / m) ** c
        weights /= weights.sum()
        return pool[order], scores[order], weights.astype(np.float32)


def popularity_order(listeners: np.ndarray) -> np.ndarray:
    """Artist indices (A,) int64 by listeners, most first; ties to the lower index."""
    return np.argsort(-np.asarray(listeners, dtype=np.int64), kind="stable")
