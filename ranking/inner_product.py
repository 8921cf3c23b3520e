"""Maximum inner product search through angular search (Bachrach et al. 2014).

Annoy's ``dot`` metric stays below the recall target on BPR factors (docs/benchmarks.md, section 3), so
Recommend uses an angular index on augmented vectors instead, as benfred/implicit does: every
item vector ``x`` gets one extra coordinate ``sqrt(M^2 - |x|^2)`` (M the largest norm) so all
items have norm M, and the query gets a 0 there. The cosine between the augmented query and an
item is then ``q . x / (|q| M)``, which orders items exactly as the inner product does.
"""

from __future__ import annotations

import numpy as np


def item_vectors_with_bias(artist_factors: np.ndarray, artist_bias: np.ndarray) -> np.ndarray:
    """(A, F) factors and (A,) bias -> (A, F + 1) float32 ``[factors, bias]``.

    With the query ``[user_factors, 1]`` the inner product is the BPR model score.
    """
    return np.hstack([artist_factors, artist_bias[:, None]]).astype(np.float32, copy=False)


def user_query(user_factors_row: np.ndarray) -> np.ndarray:
    """(F,) user factors -> (F + 1,) query ``[factors, 1]`` whose inner product with
    ``item_vectors_with_bias`` rows is the model score."""
    query = np.empty(user_factors_row.shape[0] + 1, dtype=np.float32)
    query[:-1] = user_factors_row
    query[-1] = 1.0
    return query


def augment_items(item_vectors: np.ndarray) -> np.ndarray:
    """(A, D) -> (A, D + 1): append ``sqrt(M^2 - |x|^2)`` so every row has norm M."""
    norms_sq = np.einsum("ij,ij->i", item_vectors, item_vectors, dtype=np.float64)
    max_sq = float(norms_sq.max()) if norms_sq.size else 0.0
    extra = np.sqrt(np.maximum(max_sq - norms_sq, 0.0)).astype(np.float32)
    return np.hstack([item_vectors.astype(np.float32, copy=False), extra[:, None]])
