"""A listener's vector fitted from their listening history against a version's fixed artist
factors and bias ("fold-in"; no gRPC here).

A listener who was not in training has no row in the user factors. Their vector ``p`` (F,) is
fitted with the artists' factors ``Q`` (A, F) and bias ``b`` (A,) held fixed, so that
``p . Q[a] + b[a]`` ranks artists as the model would rank them for a user with that history.
Two methods (``FOLD_IN_METHODS``):

- ``"bpr"`` (the default): the model's own objective restricted to ``p``. Every history artist
  ``i`` is paired with a fixed pool of ``NEGATIVES`` artists ``j`` drawn once per version (seeded:
  the same history always gets the same vector, so pages of one ranking concatenate), and
  ``mean_ij w_i * softplus(-(p . (Q[i] - Q[j]) + b[i] - b[j])) + reg / 2 * |p|^2`` is minimized by
  ``NEWTON_STEPS`` Newton steps from ``p = 0``. ``reg`` is the version's training regularization
  (``manifest.hyperparameters["regularization"]``), whose per-triple meaning this mean matches;
  ``w_i`` is ``log1p(plays)`` normalized to mean 1 (training samples positives by log plays). The
  objective is convex in ``p``, the F x F Hessian is formed from sums over the pairs without
  materializing an (n * m, F) matrix, so a 100-artist history costs a few small matrix products.
- ``"least_squares"``: the implicit-feedback least-squares projection (as ALS folds in a user):
  ``(Q^T Q + alpha * Q_h^T diag(w) Q_h + lambda * I) p = Q_h^T (1 + alpha * w)``, with ``Q^T Q``
  computed once per version. Cheaper, but it ignores the bias and fits a squared loss the factors
  were not trained for.

Which is better and faster was measured with the protocol in ``bench/fold_in.py``
(figures in the change description and docs/benchmarks.md, not here).
"""

from __future__ import annotations

import numpy as np

FOLD_IN_METHODS = ("bpr", "least_squares")
DEFAULT_METHOD = "bpr"
NEGATIVES = 128
NEWTON_STEPS = 5
HESSIAN_STEPS = 5
DEFAULT_REGULARIZATION = 0.003  # the trainer's default, for versions whose manifest lacks it
LEAST_SQUARES_ALPHA = 10.0
LEAST_SQUARES_LAMBDA = 1.0
_SEED = 0x5EED


class FoldIn:
    """Fits listener vectors for one version. Immutable after construction except for lazily
    computed caches that only ever gain identical values; thread-safe.

    ``artist_factors`` (A, F) and ``artist_bias`` (A,) are not copied (they may be memory-mapped);
    ``regularization`` is the version's L2 weight per training triple.
    """

    def __init__(self, artist_factors: np.ndarray, artist_bias: np.ndarray, *, regularization: float,
                 method: str = DEFAULT_METHOD, negatives: int = NEGATIVES, newton_steps: int = NEWTON_STEPS,
                 hessian_steps: int = HESSIAN_STEPS, seed: int = _SEED):
        if method not in FOLD_IN_METHODS:
            raise ValueError(f"unknown fold-in method {method!r}; one of {FOLD_IN_METHODS}")
        self.factors = artist_factors
        self.bias = artist_bias
        self.num_artists, self.num_factors = (int(n) for n in artist_factors.shape)
        self.regularization = float(regularization)
        self.method = method
        self.newton_steps = newton_steps
        self.hessian_steps = max(1, hessian_steps)
        rng = np.random.default_rng(seed)
        pool = np.sort(rng.choice(self.num_artists, size=min(negatives, self.num_artists), replace=False))
        self.pool = pool.astype(np.int64)
        self.pool_factors = np.asarray(artist_factors[self.pool], dtype=np.float64)
        self.pool_bias = np.asarray(artist_bias[self.pool], dtype=np.float64)
        self._gram: np.ndarray | None = None

    def fit(self, artists: np.ndarray, plays: np.ndarray) -> np.ndarray:
        """The listener's query vector ``[p, 1]`` (F + 1,) float32, whose inner product with a row
        ``[Q[a], b[a]]`` is the score of artist a. ``artists`` (n,) distinct artist indices,
        ``plays`` (n,) positive finite weights; n >= 1."""
        weights = np.log1p(np.asarray(plays, dtype=np.float64))
        weights *= weights.shape[0] / weights.sum()
        if self.method == "bpr":
            p = self._fit_bpr(np.asarray(artists, dtype=np.int64), weights)
        else:
            p = self._fit_least_squares(np.asarray(artists, dtype=np.int64), weights)
        query = np.empty(self.num_factors + 1, dtype=np.float32)
        query[:-1] = p
        query[-1] = 1.0
        return query

    def _fit_bpr(self, artists: np.ndarray, weights: np.ndarray) -> np.ndarray:
        positives = np.asarray(self.factors[artists], dtype=np.float64)  # (n, F)
        positive_bias = np.asarray(self.bias[artists], dtype=np.float64)
        keep = ~np.isin(self.pool, artists, assume_unique=True)  # a history artist is no negative
        negatives = self.pool_factors[keep] if not keep.all() else self.pool_factors  # (m, F)
        negative_bias = self.pool_bias[keep] if not keep.all() else self.pool_bias
        n, m, f = positives.shape[0], negatives.shape[0], self.num_factors
        p = np.zeros(f)
        if m == 0:
            return p
        reg = self.regularization
        pair_weights = weights[:, None] / (n * m)  # the mean over pairs, weighted by plays
        diagonal = np.arange(f)
        inverse = None
        for step in range(self.newton_steps):
            margin = (positives @ p + positive_bias)[:, None] - (negatives @ p + negative_bias)[None, :]
            pull = 1.0 / (1.0 + np.exp(np.clip(margin, -50.0, 50.0)))  # sigmoid(-margin), (n, m)
            if step < self.hessian_steps:
                curvature = pull * (1.0 - pull)
                curvature *= pair_weights
                # sum_ij c_ij (q_i - q_j)(q_i - q_j)^T, expanded into four (F, F) products.
                cross = positives.T @ (curvature @ negatives)
                hessian = (positives.T * curvature.sum(axis=1)) @ positives
                hessian += (negatives.T * curvature.sum(axis=0)) @ negatives
                hessian -= cross + cross.T
                hessian[diagonal, diagonal] += reg
                inverse = np.linalg.inv(hessian)
            pull *= pair_weights
            gradient = negatives.T @ pull.sum(axis=0) - positives.T @ pull.sum(axis=1) + reg * p
            p -= inverse @ gradient
        return p

    def _fit_least_squares(self, artists: np.ndarray, weights: np.ndarray) -> np.ndarray:
        if self._gram is None:
            factors = np.asarray(self.factors, dtype=np.float64)
            self._gram = factors.T @ factors
        positives = np.asarray(self.factors[artists], dtype=np.float64)
        confidence = LEAST_SQUARES_ALPHA * weights
        system = self._gram + (positives.T * confidence) @ positives
        system[np.diag_indices_from(system)] += LEAST_SQUARES_LAMBDA
        return np.linalg.solve(system, positives.T @ (1.0 + confidence))


def popularity_order(listeners: np.ndarray) -> np.ndarray:
    """Artist indices (A,) int64 by listeners, most first; ties to the lower index."""
    return np.argsort(-np.asarray(listeners, dtype=np.int64), kind="stable")
