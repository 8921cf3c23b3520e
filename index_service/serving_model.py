"""A loaded model version ready to answer Recommend and SimilarArtists (no gRPC here).

``ServingModel`` is built once per version from ``model_store.LoadedVersion`` and never changes
afterwards, so any number of requests (and threads) can use it at once. Building it copies
nothing per user and runs no Python loop over users or artists: the arrays stay memory-mapped
(several worker processes share their pages), ids and names are found by binary search in the
version's sorted lookups (``model_store.Lookups``), and only the two item matrices the searches
scan are made (``[artist_factors, artist_bias]`` transposed, normalized factors).

Answers come from the version's precomputed lists (format 2) when they can: a Recommend with
k <= the list length, seen artists excluded (the default), and enough artists left after
``exclude_artist_ids``; a SimilarArtists with k <= the list length. The lists were made by the
very search the fallback runs (``model_store.precompute``), so both paths give the same artists,
order and scores. Everything else, and format-1 versions, goes to the search
(``model_store.search``: exact or Annoy re-ranked exactly, as the manifest chose).

Request rules (the error classes carry their gRPC status code, see ``musicrec.rpc.errors``):
k = 0 means ``DEFAULT_K``; k < 0 or k > ``MAX_K`` is INVALID_ARGUMENT; more than
``MAX_EXCLUDED`` excluded ids is INVALID_ARGUMENT; an unknown user or artist is NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from model_store import LoadedVersion, Manifest
from model_store.artifacts import name_key
from model_store.format import SearchConfig
from model_store.inner_product import item_vectors_with_bias, user_query
from model_store.search import CosineSearch, InnerProductSearch, SearchParams
from musicrec.rpc.errors import InvalidArgument, NotFound

DEFAULT_K = 10
MAX_K = 1000
MAX_EXCLUDED = 1000
WARM_UP_QUERIES = 8
_NO_INDICES = np.empty(0, dtype=np.int64)


class Ranking(NamedTuple):
    """Artists best first: ``indices`` (n,) int into the version's artists, ``scores`` (n,) float32."""

    indices: np.ndarray
    scores: np.ndarray


class SimilarRanking(NamedTuple):
    """The resolved query artist's index and the artists most similar to it, best first."""

    query: int
    ranking: Ranking


def resolve_k(k: int) -> int:
    """The number of results a request asks for: 0 -> ``DEFAULT_K``; outside [0, MAX_K] -> error."""
    if k == 0:
        return DEFAULT_K
    if k < 0 or k > MAX_K:
        raise InvalidArgument(f"k must be between 0 and {MAX_K} (0 means {DEFAULT_K}), got {k}")
    return k


def search_params(config: SearchConfig, method: str | None = None) -> SearchParams:
    """Runtime search knobs from a manifest's ``SearchConfig``; ``method`` overrides its method."""
    return SearchParams(method=method or config.method, search_k=config.search_k,
                        candidates_per_result=config.candidates_per_result)


def build_name_index(names: Sequence[str], listeners: Sequence[int]) -> dict[str, int]:
    """Case-insensitive name -> artist index. When several artists share a name, the one with
    the most listeners wins (then the lowest index). Empty names are not indexed. (The rule
    ``model_store.Lookups`` stores as sorted arrays.)"""
    index: dict[str, int] = {}
    for i, (name, count) in enumerate(zip(names, listeners)):
        key = name_key(name)
        if not key:
            continue
        held = index.get(key)
        if held is None or count > listeners[held]:
            index[key] = i
    return index


class SortedLookup:
    """``key -> index`` over a unicode array through its argsort (binary search, nothing built).

    ``keys`` (n,) unicode and ``order`` (n,) int with ``keys[order]`` strictly increasing;
    ``targets`` maps a position in ``keys`` to the answer (None: the position itself)."""

    def __init__(self, keys: np.ndarray, order: np.ndarray | None = None, targets: np.ndarray | None = None):
        self.keys = keys
        self.order = order
        self.targets = targets
        self.size = int(keys.shape[0])

    def get(self, key: str) -> int | None:
        """The index ``key`` maps to, or None. Exact match (numpy drops trailing NULs from its
        strings, so the match is confirmed on the Python string)."""
        if not self.size:
            return None
        pos = int(np.searchsorted(self.keys, key, sorter=self.order))
        if pos >= self.size:
            return None
        at = int(self.order[pos]) if self.order is not None else pos
        if str(self.keys[at]) != key:
            return None
        return int(self.targets[at]) if self.targets is not None else at

    def get_many(self, keys: list[str]) -> np.ndarray:
        """Indices (int64) of the keys found, in input order; unknown keys are skipped."""
        if not keys or not self.size:
            return _NO_INDICES
        if len(keys) <= 4:
            found = [i for i in map(self.get, keys) if i is not None]
            return np.array(found, dtype=np.int64)
        # A key with trailing NULs would match its stripped form inside numpy: look those up alone.
        plain = [k for k in keys if not k.endswith("\x00")]
        wanted = np.array(plain, dtype=str) if plain else np.empty(0, dtype="<U1")
        pos = np.minimum(np.searchsorted(self.keys, wanted, sorter=self.order), self.size - 1)
        at = self.order[pos] if self.order is not None else pos
        hit = self.keys[at] == wanted
        found = at[hit].astype(np.int64)
        if self.targets is not None:
            found = self.targets[found].astype(np.int64)
        return found


class ServingModel:
    """One model version in memory, answering queries. Immutable; thread-safe; ``close()`` once
    nothing uses it (unmaps its Annoy files)."""

    def __init__(self, loaded: LoadedVersion, *, recommend_method: str | None = None,
                 similar_method: str | None = None, precomputed: bool = True):
        """Index ``loaded``. ``recommend_method``/``similar_method`` ("exact" or "annoy") override
        the manifest's choice (e.g. to test the Annoy path on a catalog where exact was chosen);
        precomputed lists made by another method are then not used. ``precomputed`` False
        answers everything by search."""
        art = loaded.artifacts
        manifest = loaded.manifest
        lookups = loaded.lookups
        self.loaded = loaded
        self.manifest: Manifest = manifest
        self.version: int = manifest.model_version
        self.num_users = art.num_users
        self.num_artists = art.num_artists
        self.user_ids = art.user_ids
        self.artist_ids = art.artist_ids
        self.artist_names = art.artist_names
        self.user_factors = art.user_factors
        self.users = SortedLookup(art.user_ids, lookups.user_id_order)
        self.artists = SortedLookup(art.artist_ids, lookups.artist_id_order)
        self.names = SortedLookup(lookups.artist_name_keys, None, lookups.artist_name_artists)
        self.seen_indptr = art.seen_indptr
        self.seen_indices = art.seen_indices
        self.recommend_params = search_params(manifest.recommend_search, recommend_method)
        self.similar_params = search_params(manifest.similar_search, similar_method)
        self.recommend_search = InnerProductSearch(
            item_vectors_with_bias(art.artist_factors, art.artist_bias), loaded.recommend_index,
            self.recommend_params)
        self.similar_search = CosineSearch(art.artist_factors, loaded.similar_index, self.similar_params)
        # Precomputed lists, when the version has them and they were made by the search in use.
        top, made = loaded.top, manifest.precomputed
        self.recommend_top = self.recommend_top_scores = None
        self.similar_top = self.similar_top_scores = None
        self.recommend_n = self.similar_n = 0
        if precomputed and top is not None and made is not None:
            if made.recommend_n and made.recommend_method == self.recommend_params.method:
                self.recommend_top, self.recommend_top_scores = top.recommend_top, top.recommend_top_scores
                self.recommend_n = made.recommend_n
            if made.similar_n and made.similar_method == self.similar_params.method:
                self.similar_top, self.similar_top_scores = top.similar_top, top.similar_top_scores
                self.similar_n = made.similar_n
        self.closed = False

    # -- queries ----------------------------------------------------------------------------

    def user_index(self, user_id: str) -> int:
        """Index of ``user_id``; INVALID_ARGUMENT when empty, NOT_FOUND when unknown."""
        user = self.users.get(user_id)
        if user is None:
            if not user_id:
                raise InvalidArgument("user_id is required")
            raise NotFound(f"unknown user_id {user_id!r}")
        return user

    def recommend(self, user_id: str, k: int = 0, include_seen: bool = False,
                  exclude_artist_ids: Sequence[str] = ()) -> Ranking:
        """The k artists with the highest model score for ``user_id`` (factors . factors + bias),
        best first; seen artists excluded unless ``include_seen``; ``exclude_artist_ids`` never
        returned (unknown ids ignored, at most ``MAX_EXCLUDED``). Fewer than k when the catalog
        runs out."""
        k = resolve_k(k)
        user = self.user_index(user_id)
        extra = self._artist_indices(exclude_artist_ids) if exclude_artist_ids else None
        if self.recommend_top is not None and not include_seen and k <= self.recommend_n:
            answer = _from_list(self.recommend_top[user], self.recommend_top_scores[user], k, extra)
            if answer is not None:
                return answer
        return self.search_recommend(user, k, include_seen, extra)

    def search_recommend(self, user: int, k: int, include_seen: bool = False,
                         extra: np.ndarray | None = None) -> Ranking:
        """Recommend for user index ``user`` by search (no precomputed list); ``extra``: artist
        indices excluded besides the seen ones."""
        exclude = None
        if not include_seen:
            exclude = self.seen_indices[self.seen_indptr[user]:self.seen_indptr[user + 1]]
        if extra is not None and extra.shape[0]:
            exclude = extra if exclude is None else np.concatenate((exclude, extra))
        indices, scores = self.recommend_search.search(user_query(self.user_factors[user]), k, exclude)
        return Ranking(indices, scores)

    def similar(self, artist_id: str | None = None, artist_name: str | None = None, k: int = 0) -> SimilarRanking:
        """The k artists closest to the query artist by cosine of their factors, itself excluded.

        The artist is given by id or by name (case-insensitive; among artists sharing the name,
        the one with the most listeners)."""
        k = resolve_k(k)
        artist = self.resolve_artist(artist_id, artist_name)
        if self.similar_top is not None and k <= self.similar_n:
            answer = _from_list(self.similar_top[artist], self.similar_top_scores[artist], k, None)
            if answer is not None:
                return SimilarRanking(artist, answer)
        return SimilarRanking(artist, self.search_similar(artist, k))

    def search_similar(self, artist: int, k: int) -> Ranking:
        """SimilarArtists for artist index ``artist`` by search (no precomputed list)."""
        indices, scores = self.similar_search.search(artist, k)
        return Ranking(indices, scores)

    def resolve_artist(self, artist_id: str | None = None, artist_name: str | None = None) -> int:
        """Index of the artist named by id or name; NOT_FOUND if unknown, INVALID_ARGUMENT if neither."""
        if artist_id:
            index = self.artists.get(artist_id)
            if index is None:
                raise NotFound(f"unknown artist_id {artist_id!r}")
            return index
        if artist_name and artist_name.strip():
            index = self.names.get(name_key(artist_name))
            if index is None:
                raise NotFound(f"no artist named {artist_name!r}")
            return index
        raise InvalidArgument("give an artist_id or an artist_name")

    def _artist_indices(self, artist_ids: Iterable[str]) -> np.ndarray:
        ids = list(artist_ids)
        if len(ids) > MAX_EXCLUDED:
            raise InvalidArgument(f"at most {MAX_EXCLUDED} exclude_artist_ids, got {len(ids)}")
        return self.artists.get_many(ids)

    # -- life cycle -------------------------------------------------------------------------

    def warm_up(self, queries: int = WARM_UP_QUERIES) -> None:
        """Answer a few queries of each kind, by both paths, so first requests do not pay for
        page faults and lazy initialization."""
        for user in np.linspace(0, self.num_users - 1, min(queries, self.num_users)).astype(int).tolist():
            self.recommend(str(self.user_ids[user]), DEFAULT_K)
            self.search_recommend(user, DEFAULT_K)
        for artist in np.linspace(0, self.num_artists - 1, min(queries, self.num_artists)).astype(int).tolist():
            self.similar(artist_id=str(self.artist_ids[artist]), k=DEFAULT_K)
            self.search_similar(artist, DEFAULT_K)

    def close(self) -> None:
        """Unmap the Annoy files. Call once no request uses the model; idempotent."""
        if self.closed:
            return
        self.closed = True
        # Searches fall back to exact if anything still held a reference (defensive: the
        # holder's reference count means nothing should).
        self.recommend_search.index = None
        self.similar_search.index = None
        self.loaded.close()


def _from_list(row: np.ndarray, scores: np.ndarray, k: int, exclude: np.ndarray | None) -> Ranking | None:
    """The first k entries of a precomputed list (-1 padded) not in ``exclude``; None when
    exclusions leave fewer than k of a full list (the search must answer). A list that is not
    full holds every candidate there is, so a short answer from it is complete."""
    if exclude is None or not exclude.shape[0]:
        indices = row[:k]
        if indices.shape[0] and indices[-1] < 0:
            keep = indices >= 0
            return Ranking(indices[keep], scores[:k][keep])
        return Ranking(indices, scores[:k])
    keep = (row >= 0) & ~np.isin(row, exclude)
    indices = row[keep][:k]
    if indices.shape[0] < k and row[-1] >= 0:
        return None
    return Ranking(indices, scores[keep][:k])
