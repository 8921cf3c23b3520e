"""A loaded model version ready to answer Recommend and SimilarArtists (no gRPC here).

``ServingModel`` is built once per version from ``model_store.LoadedVersion`` and never changes
afterwards, so any number of requests (and threads) can use it at once. Everything a request
needs is precomputed: id -> index dicts, the name index, each user's query vector
``[user_factors, 1]`` and the item matrix ``[artist_factors, artist_bias]`` (so a score is one
dot product), seen artists as CSR slices (views, no copy), and ids and names as Python lists
(so building a response does not convert numpy strings).

Request rules (the error classes carry their gRPC status code, see ``musicrec.rpc.errors``):
k = 0 means ``DEFAULT_K``; k < 0 or k > ``MAX_K`` is INVALID_ARGUMENT; more than
``MAX_EXCLUDED`` excluded ids is INVALID_ARGUMENT; an unknown user or artist is NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from model_store import LoadedVersion, Manifest
from model_store.format import SearchConfig
from model_store.inner_product import item_vectors_with_bias
from model_store.search import CosineSearch, InnerProductSearch, SearchParams
from musicrec.rpc.errors import InvalidArgument, NotFound

DEFAULT_K = 10
MAX_K = 1000
MAX_EXCLUDED = 1000
WARM_UP_QUERIES = 8


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


def _name_key(name: str) -> str:
    return name.strip().casefold()


def build_name_index(names: Sequence[str], listeners: Sequence[int]) -> dict[str, int]:
    """Case-insensitive name -> artist index. When several artists share a name, the one with
    the most listeners wins (then the lowest index). Empty names are not indexed."""
    index: dict[str, int] = {}
    for i, (name, count) in enumerate(zip(names, listeners)):
        key = _name_key(name)
        if not key:
            continue
        held = index.get(key)
        if held is None or count > listeners[held]:
            index[key] = i
    return index


class ServingModel:
    """One model version in memory, answering queries. Immutable; thread-safe; ``close()`` once
    nothing uses it (unmaps its Annoy files)."""

    def __init__(self, loaded: LoadedVersion, *, recommend_method: str | None = None,
                 similar_method: str | None = None):
        """Index ``loaded``. ``recommend_method``/``similar_method`` ("exact" or "annoy") override
        the manifest's choice (e.g. to test the Annoy path on a catalog where exact was chosen)."""
        art = loaded.artifacts
        manifest = loaded.manifest
        self.loaded = loaded
        self.manifest: Manifest = manifest
        self.version: int = manifest.model_version
        self.num_users = art.num_users
        self.num_artists = art.num_artists
        self.user_ids: list[str] = art.user_ids.tolist()
        self.artist_ids: list[str] = art.artist_ids.tolist()
        self.artist_names: list[str] = art.artist_names.tolist()
        self.user_index = {user_id: i for i, user_id in enumerate(self.user_ids)}
        self.artist_index = {artist_id: i for i, artist_id in enumerate(self.artist_ids)}
        self.name_index = build_name_index(self.artist_names, art.artist_listeners.tolist())
        # Query row u is [user_factors[u], 1]: its dot product with an item row is the model score.
        queries = np.ones((art.num_users, art.num_factors + 1), dtype=np.float32)
        queries[:, :-1] = art.user_factors
        self.user_queries = queries
        self.seen_indptr: list[int] = art.seen_indptr.tolist()
        self.seen_indices = np.ascontiguousarray(art.seen_indices, dtype=np.int64)
        self.recommend_params = search_params(manifest.recommend_search, recommend_method)
        self.similar_params = search_params(manifest.similar_search, similar_method)
        self.recommend_search = InnerProductSearch(
            item_vectors_with_bias(art.artist_factors, art.artist_bias), loaded.recommend_index,
            self.recommend_params)
        self.similar_search = CosineSearch(art.artist_factors, loaded.similar_index, self.similar_params)
        self.closed = False

    # -- queries ----------------------------------------------------------------------------

    def recommend(self, user_id: str, k: int = 0, include_seen: bool = False,
                  exclude_artist_ids: Iterable[str] = ()) -> Ranking:
        """The k artists with the highest model score for ``user_id`` (factors . factors + bias),
        best first; seen artists excluded unless ``include_seen``; ``exclude_artist_ids`` never
        returned (unknown ids ignored, at most ``MAX_EXCLUDED``). Fewer than k when the catalog
        runs out."""
        k = resolve_k(k)
        user = self.user_index.get(user_id)
        if user is None:
            if not user_id:
                raise InvalidArgument("user_id is required")
            raise NotFound(f"unknown user_id {user_id!r}")
        exclude = None
        if not include_seen:
            exclude = self.seen_indices[self.seen_indptr[user]:self.seen_indptr[user + 1]]
        if exclude_artist_ids:
            extra = self._artist_indices(exclude_artist_ids)
            if extra.shape[0]:
                exclude = extra if exclude is None else np.concatenate((exclude, extra))
        indices, scores = self.recommend_search.search(self.user_queries[user], k, exclude)
        return Ranking(indices, scores)

    def similar(self, artist_id: str | None = None, artist_name: str | None = None, k: int = 0) -> SimilarRanking:
        """The k artists closest to the query artist by cosine of their factors, itself excluded.

        The artist is given by id or by name (case-insensitive; among artists sharing the name,
        the one with the most listeners)."""
        k = resolve_k(k)
        artist = self.resolve_artist(artist_id, artist_name)
        indices, scores = self.similar_search.search(artist, k)
        return SimilarRanking(artist, Ranking(indices, scores))

    def resolve_artist(self, artist_id: str | None = None, artist_name: str | None = None) -> int:
        """Index of the artist named by id or name; NOT_FOUND if unknown, INVALID_ARGUMENT if neither."""
        if artist_id:
            index = self.artist_index.get(artist_id)
            if index is None:
                raise NotFound(f"unknown artist_id {artist_id!r}")
            return index
        if artist_name and artist_name.strip():
            index = self.name_index.get(_name_key(artist_name))
            if index is None:
                raise NotFound(f"no artist named {artist_name!r}")
            return index
        raise InvalidArgument("give an artist_id or an artist_name")

    def _artist_indices(self, artist_ids: Iterable[str]) -> np.ndarray:
        ids = list(artist_ids)
        if len(ids) > MAX_EXCLUDED:
            raise InvalidArgument(f"at most {MAX_EXCLUDED} exclude_artist_ids, got {len(ids)}")
        lookup = self.artist_index.get
        found = [index for index in map(lookup, ids) if index is not None]
        return np.array(found, dtype=np.int64)

    # -- life cycle -------------------------------------------------------------------------

    def warm_up(self, queries: int = WARM_UP_QUERIES) -> None:
        """Answer a few queries of each kind so first requests do not pay for page faults and
        lazy initialization."""
        for user in np.linspace(0, self.num_users - 1, min(queries, self.num_users)).astype(int).tolist():
            self.recommend(self.user_ids[user], DEFAULT_K)
        for artist in np.linspace(0, self.num_artists - 1, min(queries, self.num_artists)).astype(int).tolist():
            self.similar(artist_id=self.artist_ids[artist], k=DEFAULT_K)

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
