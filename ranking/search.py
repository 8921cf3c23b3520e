"""Top-k search over a version's artists: exact brute force, or Annoy candidates re-ranked exactly.

This is the serving algorithm. The trainer runs the very same code to measure recall when it
builds a version, so the recall recorded in the manifest is the recall the index service gets.
No gRPC, no TensorFlow: numpy and an already loaded ``annoy.AnnoyIndex``.

How it is kept fast (figures in docs/benchmarks.md): the exact path is one float32 BLAS
matrix-vector product over the transposed item matrix plus ``top_k_indices``, which avoids an
``argpartition`` of every score by first selecting the groups of scores whose maximum can reach
the top k. The Annoy path passes the query as a Python list (Annoy reads sequences element by
element), filters exclusions in Python on Annoy's own list, and re-ranks the candidates exactly.

The index service answers most requests from lists this same code made at publish
(``ranking.precompute``); it searches only what the lists cannot answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_store.format import SearchConfig

_NEG_INF = np.float32(-np.inf)
_EMPTY = np.empty(0, dtype=np.int64)

# top_k_indices splits the scores into this many strided groups (see there).
_GROUPS_ROWS = 32
# Below this many scores a full sort is cheaper than partition + sort (numpy call overhead).
_SORT_ALL_BELOW = 1024


@dataclass(frozen=True)
class SearchParams:
    """Runtime knobs of one search: ``method`` "annoy" or "exact"; Annoy ``search_k`` (-1: Annoy's
    default, n_trees * candidates fetched; otherwise never less than that default, so a query
    fetching more candidates, e.g. to skip seen artists, searches at least as thoroughly);
    ``candidates_per_result``: Annoy candidates fetched per result wanted, before exact re-ranking
    and filtering."""

    method: str = "exact"
    search_k: int = -1
    candidates_per_result: int = 10

    def search_k_for(self, wanted: int, n_trees: int) -> int:
        """Annoy search_k for a query fetching ``wanted`` candidates from ``n_trees`` trees.

        Scaling search_k with every candidate fetched (e.g. to skip seen artists) costs several
        times the time for a recall gain of about a hundredth; this floor keeps recall at the
        level measured at publish."""
        if self.search_k < 0:
            return -1
        return max(self.search_k, n_trees * wanted)


def search_params(config: SearchConfig, method: str | None = None) -> SearchParams:
    """Runtime search knobs from a manifest's ``SearchConfig``; ``method`` overrides its method.
    The index service and the precompute at publish build their searches through this one function."""
    return SearchParams(method=method or config.method, search_k=config.search_k,
                        candidates_per_result=config.candidates_per_result)


def _select(scores: np.ndarray, k: int) -> np.ndarray:
    """Exact top k of a (small or large) score array: indices best first, ties to the lower index,
    non-finite scores dropped."""
    n = scores.shape[0]
    if n <= _SORT_ALL_BELOW:
        top = np.argsort(-scores, kind="stable")[:k]  # one call: cheapest for short arrays
    elif k < n:
        kth = np.partition(scores, n - k)[n - k]  # the k-th largest value
        chosen = np.flatnonzero(scores > kth)
        if chosen.shape[0] < k:
            ties = np.flatnonzero(scores == kth)[: k - chosen.shape[0]]  # lowest indices first
            chosen = np.concatenate((chosen, ties))
            chosen.sort()
        top = chosen[np.argsort(-scores[chosen], kind="stable")]
    else:
        top = np.argsort(-scores, kind="stable")
    if top.shape[0] and not np.isfinite(scores[top[-1]]):
        top = top[np.isfinite(scores[top])]
    return top


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest finite scores, best first; ties broken by the lower index.

    ``scores`` is (n,) float; entries set to -inf are never returned. O(n). For k much smaller
    than n, the scores are viewed as 32 rows of n // 32 columns; a column whose maximum is below
    the k-th largest column maximum cannot hold a top-k score (k columns each hold a score at
    least that large), so only the best columns are searched exactly.
    """
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return _EMPTY
    cols = n // _GROUPS_ROWS
    if k * _GROUPS_ROWS * 4 >= n:
        return _select(scores, k)
    body = cols * _GROUPS_ROWS
    column_max = scores[:body].reshape(_GROUPS_ROWS, cols).max(axis=0)
    threshold = np.partition(column_max, cols - k)[cols - k]
    best_cols = np.flatnonzero(column_max >= threshold)
    candidates = (best_cols[None, :] + np.arange(0, body, cols)[:, None]).ravel()
    if body < n:
        candidates = np.concatenate((candidates, np.arange(body, n)))
    candidates.sort()  # index order, so ties still go to the lower index
    return candidates[_select(scores[candidates], k)]


def _laid_out(matrix: np.ndarray, index, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, its transpose), one of them the C-order copy: the rows for an Annoy search (it
    re-ranks a few rows), the transpose for exact search (``query @ matrix_t`` scans it)."""
    if index is not None and params.method == "annoy":
        rows = np.ascontiguousarray(matrix)
        return rows, rows.T
    columns = np.ascontiguousarray(matrix.T)
    return columns.T, columns


class InnerProductSearch:
    """Artists with the highest inner product with a query: the Recommend search.

    ``items`` is (A, D) float32, usually ``[artist_factors, artist_bias]``; queries are (D,) and the
    score is ``items @ query``. ``index`` is an angular Annoy index over ``augment_items(items)``.
    """

    def __init__(self, items: np.ndarray, index, params: SearchParams):
        # Exact search: stored transposed, (D, A) C-order, as ``query @ items_t`` is the faster
        # single-threaded sgemv (docs/benchmarks.md); ``items`` is its (A, D) view. Annoy search
        # gathers candidate rows, which (A, D) C-order serves best, and scans everything only as
        # a fallback: no transposed copy (it cost more than the rest of a large version's load).
        # The layout changes float rounding of exact scores, so a search is always built the
        # same way from the same params (the precomputed lists rely on it).
        items = np.asarray(items, dtype=np.float32)
        self.items, self.items_t = _laid_out(items, index, params)
        self.index = index
        self.params = params
        self.n_trees = index.get_n_trees() if index is not None else 0

    def search(self, query: np.ndarray, k: int, exclude: np.ndarray | None = None,
               params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k (indices, scores), best first, never an index in ``exclude`` (an int array;
        duplicates allowed). ``query`` is (D,) float32."""
        p = params or self.params
        num_items = self.items.shape[0]
        n_exclude = 0 if exclude is None else int(exclude.shape[0])
        if p.method != "annoy" or self.index is None:
            return self.exact(query, k, exclude)
        wanted = k * p.candidates_per_result + n_exclude
        if wanted * 2 >= num_items:
            return self.exact(query, k, exclude)  # fetching most of the catalog: brute force is cheaper
        # The augmented query has a 0 in the extra item coordinate (see inner_product.py).
        found = self.index.get_nns_by_vector(query.tolist() + [0.0], wanted, p.search_k_for(wanted, self.n_trees))
        if n_exclude:
            excluded = set(exclude.tolist())
            found = [i for i in found if i not in excluded]
        if len(found) < k and num_items - n_exclude > len(found):
            return self.exact(query, k, exclude)  # Annoy returned too few after filtering
        candidates = np.array(found, dtype=np.int64)
        scores = self.items[candidates] @ query
        top = _select(scores, k)
        return candidates[top], scores[top]

    def exact(self, query: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Brute force: score every artist. O(A * D)."""
        scores = query @ self.items_t
        if exclude is not None and exclude.shape[0]:
            scores[exclude] = _NEG_INF
        top = top_k_indices(scores, k)
        return top, scores[top]

    def search_among(self, query: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top k (indices, scores) among the artist indices ``allowed`` (sorted, distinct), best
        first, ties to the lower index: only the allowed rows are scored, exactly, whatever the
        method (an allow-list is small next to a catalog, and Annoy would have to fetch past
        every artist outside it). O(len(allowed) * D)."""
        if not allowed.shape[0] or k <= 0:
            return _EMPTY, np.empty(0, dtype=np.float32)
        scores = self.items[allowed] @ query
        top = top_k_indices(scores, k)
        return allowed[top], scores[top]

    @property
    def batches_exactly(self) -> bool:
        """True when ``search`` is the exact search, so ``exact_many`` gives a batch its answers."""
        return self.params.method != "annoy" or self.index is None

    def exact_many(self, queries: np.ndarray, ks: list[int],
                   excludes: list[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``exact`` for each row of ``queries`` (n, D) float32 with its own k and exclusions, the
        scores made by one (n, D) x (D, A) matrix product (one pass over the items instead of
        n). Scores may differ from ``exact``'s in the last float32 bit (another summation order)."""
        answers: list[tuple[np.ndarray, np.ndarray]] = []
        # Blocks bound the score matrix (n x A float32) to about 64 MiB.
        block = max(1, (16 << 20) // max(1, self.items.shape[0]))
        for start in range(0, queries.shape[0], block):
            scores = queries[start:start + block] @ self.items_t
            for row in range(scores.shape[0]):
                exclude = excludes[start + row]
                row_scores = scores[row]
                if exclude is not None and exclude.shape[0]:
                    row_scores[exclude] = _NEG_INF
                top = top_k_indices(row_scores, ks[start + row])
                answers.append((top, row_scores[top]))
        return answers


class CosineSearch:
    """Artists whose factors have the highest cosine similarity with a query artist's: the
    SimilarArtists search. ``index`` is an angular Annoy index over the raw artist factors."""

    def __init__(self, artist_factors: np.ndarray, index, params: SearchParams):
        factors = np.asarray(artist_factors, dtype=np.float32)
        normalized = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), np.float32(1e-12))
        # The layout of InnerProductSearch, for the same reasons.
        self.normalized, self.normalized_t = _laid_out(normalized, index, params)
        self.index = index
        self.params = params
        self.n_trees = index.get_n_trees() if index is not None else 0

    def search(self, artist: int, k: int, params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k (indices, cosine similarities) for artist index ``artist``, itself excluded."""
        p = params or self.params
        num_items = self.normalized.shape[0]
        wanted = k * p.candidates_per_result + 1
        if p.method != "annoy" or self.index is None or wanted * 2 >= num_items:
            return self.exact(artist, k)
        # Annoy's own item vector is the query: no conversion, same neighbours as by vector.
        found = self.index.get_nns_by_item(artist, wanted, p.search_k_for(wanted, self.n_trees))
        candidates = np.array([i for i in found if i != artist], dtype=np.int64)
        if candidates.shape[0] < k and num_items - 1 > candidates.shape[0]:
            return self.exact(artist, k)
        scores = self.normalized[candidates] @ self.normalized[artist]
        top = _select(scores, k)
        return candidates[top], scores[top]

    def exact(self, artist: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force cosine similarity against every artist. O(A * F)."""
        scores = self.normalized[artist] @ self.normalized_t
        scores[artist] = _NEG_INF
        top = top_k_indices(scores, k)
        return top, scores[top]
