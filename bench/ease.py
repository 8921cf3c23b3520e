"""EASE (Steck, WWW 2019, "Embarrassingly Shallow Autoencoders"), a closed-form linear peer for the
quality part: numpy/scipy only, bench-only code.

On the binary training matrix X (users x artists): ``P = (X^T X + lambda I)^-1`` and
``B = I - P diag(1 / diag(P))`` (so ``B_ij = -P_ij / P_jj`` off the diagonal, 0 on it); a user's
scores are ``X_u B``. The inverse is of an artists x artists matrix; to keep it to seconds, only
artists with at least ``min_listeners`` training listeners get a row and column (an artist heard by
one training listener teaches EASE nothing about any other artist), and the rest share one score
below every real one (ties, counted as broken at random by the evaluator). The inverse is a
float32 Cholesky factorization and inversion (LAPACK ``spotrf``/``spotri``), the symmetric
matrix's own method.
"""

from __future__ import annotations

import time

import numpy as np

MIN_LISTENERS = 2
# Below every real score and above the evaluator's -inf for the user's own training artists.
_UNSCORED = np.float32(-3.0e38)


def fit(split, lam: float, min_listeners: int = MIN_LISTENERS):
    """EASE on ``split``'s training part: (kept artist indices (K,), B (K, K) float32, the binary
    training matrix X over the kept artists (users x K, scipy CSR))."""
    from scipy.linalg import lapack
    from scipy.sparse import csr_matrix

    listeners = split.train_listeners()
    kept = np.flatnonzero(listeners >= min_listeners)
    column = np.full(split.num_artists, -1, dtype=np.int64)
    column[kept] = np.arange(kept.size)
    mask = column[split.train_artists] >= 0
    rows = np.repeat(np.arange(split.num_users), np.diff(split.train_indptr))[mask]
    x = csr_matrix((np.ones(int(mask.sum()), np.float32), (rows, column[split.train_artists][mask])),
                   shape=(split.num_users, kept.size))
    gram = (x.T @ x).toarray().astype(np.float32)
    gram[np.diag_indices_from(gram)] += np.float32(lam)
    factor, info = lapack.spotrf(gram, lower=0, overwrite_a=1)
    if info:
        raise ValueError(f"EASE: X^T X + lambda I is not positive definite (spotrf info {info})")
    inverse, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info:
        raise ValueError(f"EASE: inversion failed (spotri info {info})")
    upper = np.triu(inverse)
    p = upper + np.triu(upper, 1).T  # spotri fills the upper triangle only
    b = p / -np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return kept, b.astype(np.float32), x


def evaluate(split, lam: float, selection=None, min_listeners: int = MIN_LISTENERS) -> dict:
    """Fit EASE and evaluate it under the leave-one-out protocol: HR@10, NDCG@10, AUC,
    evaluated_users, train_seconds (the fit)."""
    from trainer_service.evaluation import evaluate_scores

    started = time.perf_counter()
    kept, b, x = fit(split, lam, min_listeners)
    seconds = time.perf_counter() - started

    def scores(users: np.ndarray) -> np.ndarray:
        out = np.full((users.size, split.num_artists), _UNSCORED, np.float32)
        out[:, kept] = np.asarray(x[users] @ b, dtype=np.float32)
        return out

    m = evaluate_scores(scores, split, selection)
    return {"hit_rate_at_10": m.hit_rate_at_10, "ndcg_at_10": m.ndcg_at_10, "auc": m.auc,
            "evaluated_users": m.evaluated_users, "train_seconds": seconds, "samples_per_second": None,
            "artists_modelled": int(kept.size)}
