"""Top-k search over a version's artists: exact brute force, or Annoy candidates re-ranked exactly.

This is the serving algorithm. The trainer runs the very same code to measure recall when it
builds a version, so the recall recorded in the manifest is the recall the index service gets.
No gRPC, no TensorFlow: numpy and an already loaded ``annoy.AnnoyIndex``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_store.inner_product import augment_query

_NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class SearchParams:
    """Runtime knobs of one search: ``method`` "annoy" or "exact"; Annoy ``search_k`` (-1: Annoy's
    default, n_trees * candidates); ``candidates_per_result``: Annoy candidates fetched per result
    wanted, before exact re-ranking and filtering."""

    method: str = "exact"
    search_k: int = -1
    candidates_per_result: int = 10


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest finite scores, best first; ties broken by the lower index.

    ``scores`` is (n,); entries set to -inf are never returned. O(n + k log k).
    """
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(n)
    part = np.sort(part)  # stable tie-break by index
    order = np.argsort(-scores[part], kind="stable")
    top = part[order]
    return top[np.isfinite(scores[top])]


class InnerProductSearch:
    """Artists with the highest inner product with a query: the Recommend search.

    ``items`` is (A, D) float32, usually ``[artist_factors, artist_bias]``; queries are (D,) and the
    score is ``items @ query``. ``index`` is an angular Annoy index over ``augment_items(items)``.
    """

    def __init__(self, items: np.ndarray, index, params: SearchParams):
        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self.index = index
        self.params = params

    def search(self, query: np.ndarray, k: int, exclude: np.ndarray | None = None,
               params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k (indices, scores), best first, never an index in ``exclude`` (sorted, unique int array)."""
        p = params or self.params
        num_items = self.items.shape[0]
        n_exclude = 0 if exclude is None else int(exclude.shape[0])
        if p.method != "annoy" or self.index is None:
            return self.exact(query, k, exclude)
        wanted = k * p.candidates_per_result + n_exclude
        if wanted * 2 >= num_items:
            return self.exact(query, k, exclude)  # fetching most of the catalog: brute force is cheaper
        candidates = np.asarray(
            self.index.get_nns_by_vector(augment_query(query), wanted, p.search_k), dtype=np.int64
        )
        if n_exclude:
            candidates = candidates[~np.isin(candidates, exclude, assume_unique=True)]
        if candidates.shape[0] < k and num_items - n_exclude > candidates.shape[0]:
            return self.exact(query, k, exclude)  # Annoy returned too few after filtering
        scores = self.items[candidates] @ query
        top = top_k_indices(scores, k)
        return candidates[top], scores[top]

    def exact(self, query: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Brute force: score every artist. O(A * D)."""
        scores = self.items @ query
        if exclude is not None and exclude.shape[0]:
            scores[exclude] = _NEG_INF
        top = top_k_indices(scores, k)
        return top, scores[top]


class CosineSearch:
    """Artists whose factors have the highest cosine similarity with a query artist's: the
    SimilarArtists search. ``index`` is an angular Annoy index over the raw artist factors."""

    def __init__(self, artist_factors: np.ndarray, index, params: SearchParams):
        norms = np.linalg.norm(artist_factors, axis=1, keepdims=True)
        self.normalized = (artist_factors / np.maximum(norms, 1e-12)).astype(np.float32)
        self.index = index
        self.params = params

    def search(self, artist: int, k: int, params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k (indices, cosine similarities) for artist index ``artist``, itself excluded."""
        p = params or self.params
        num_items = self.normalized.shape[0]
        query = self.normalized[artist]
        wanted = k * p.candidates_per_result + 1
        if p.method != "annoy" or self.index is None or wanted * 2 >= num_items:
            return self.exact(artist, k)
        candidates = np.asarray(self.index.get_nns_by_vector(query, wanted, p.search_k), dtype=np.int64)
        candidates = candidates[candidates != artist]
        if candidates.shape[0] < k and num_items - 1 > candidates.shape[0]:
            return self.exact(artist, k)
        scores = self.normalized[candidates] @ query
        top = top_k_indices(scores, k)
        return candidates[top], scores[top]

    def exact(self, artist: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force cosine similarity against every artist. O(A * F)."""
        scores = self.normalized @ self.normalized[artist]
        scores[artist] = _NEG_INF
        top = top_k_indices(scores, k)
        return top, scores[top]
