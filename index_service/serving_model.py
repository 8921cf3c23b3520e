"""A loaded model version ready to answer Recommend and SimilarArtists (no gRPC here).

``ServingModel`` is built once per version from ``model_store.LoadedVersion`` and never changes
afterwards, so any number of requests (and threads) can use it at once. Building it copies
nothing per user and runs no Python loop over users or artists: the arrays stay memory-mapped
(several worker processes share their pages), ids and names are found by binary search in the
version's sorted lookups (``model_store.Lookups``), and only the two item matrices the searches
scan are made (``[artist_factors, artist_bias]`` transposed, normalized factors). A single id
or name is looked up through a hash index of int32 arrays (``SortedLookup.get``), made on first
use (``warm_up``) in one pass over the ids.

Answers come from the version's precomputed lists (format 2) when they can: a Recommend with
k <= the list length, seen artists excluded (the default), and enough artists left after
``exclude_artist_ids``; a SimilarArtists with k <= the list length. The lists hold the top by
the model's own scores, made in batches at publish (``ranking.precompute``: exact, or IVF with
the recall@10 the manifest records), so a list answer is the exact answer up to that recall and
float32 rounding. Everything else, and format-1 versions, goes to the search
(``ranking.search``: exact or Annoy re-ranked exactly, as the manifest chose).

Each request arrives as one frozen query (``RecommendQuery`` and ``HistoryQuery``, both a
``ListenerQuery``; ``SimilarQuery``), made from the proto once by the servicer and carried as it is
into these methods.

Paging: a request for ranks offset .. offset + k - 1 is answered as a request for the top
offset + k, sliced; both paths give the same ranking, so pages concatenate to the unpaged list.
An allow-list (``only_artist_ids``) is ranked exactly over the allowed artists' rows
(``InnerProductSearch.search_among``), whatever the search method. A listener from their history
(``recommend_for_history``) gets a vector fitted by ``index_service.fold_in`` and is then ranked
by the same searches; with no known artist, by popularity (training listeners). A batch
(``batch_recommend``) answers from the lists what they can and scores the rest of an exact-search
version as one matrix product.

Tags (format 3): a query's ``tag_options`` (``TagOptions``: ``tags``, ``exclude_tags``,
``max_per_tag``) make a request's artists a filter (``ranking.filtered.tag_filter``, with the
allow-list and the exclusions), searched as
``ranking.filtered`` plans it (exact over few allowed rows, ANN over-fetch for many, the threshold
from the latencies measured at publish) or taken from the precomputed list when it holds the
answer (``ranking.filtered.from_list``: exact for an exact list, with the list's recall for an
approximate one); ``max_per_tag`` caps the artists per top tag (``ranking.diversity``). A tag the
version does not know empties the answer (``unknown_tags`` lists it). See docs/serving.md.

Request rules (the error classes carry their gRPC status code, see ``musicrec.rpc.errors``):
k = 0 means ``DEFAULT_K``; k < 0 or k > ``MAX_K`` is INVALID_ARGUMENT; offset < 0 or
offset + k > ``MAX_K`` is INVALID_ARGUMENT; more than ``MAX_EXCLUDED`` excluded ids, more than
``MAX_ONLY`` allowed ids, more than ``MAX_HISTORY`` history entries, a history entry whose plays
are not a positive finite number, or more than ``MAX_BATCH`` requests in a batch is
INVALID_ARGUMENT; an unknown user or artist is NOT_FOUND; more than ``MAX_TAGS`` names in
``tags`` or ``exclude_tags``, a blank one or one over ``MAX_TAG_LENGTH`` characters, or
``max_per_tag`` outside [0, ``MAX_PER_TAG``] is INVALID_ARGUMENT; a tag filter or cap on a version
without tags is FAILED_PRECONDITION.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from model_store import LoadedVersion, Manifest
from model_store.artifacts import ArtistTags, name_key, tag_key
from ranking.diversity import diversified, top_tag_of
from ranking.filtered import (ArtistFilter, FilterPlan, cosine_space, filtered_search, from_list,
                              inner_product_space, tag_filter)
from ranking.inner_product import item_vectors_with_bias, user_query
from index_service.fold_in import DEFAULT_REGULARIZATION, FoldIn, popularity_order
from ranking.search import CosineSearch, InnerProductSearch, search_params
from musicrec.rpc.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError

if TYPE_CHECKING:
    from index_service.live import LiveListener

DEFAULT_K = 10
log = logging.getLogger(__name__)

MAX_K = 1000  # also the largest offset + k
MAX_EXCLUDED = 1000
MAX_ONLY = 10_000
MAX_HISTORY = 1000
MAX_BATCH = 1000
WARM_UP_QUERIES = 8
MAX_TAGS = 100  # per field: tags, exclude_tags
MAX_TAG_LENGTH = 256  # characters
MAX_PER_TAG = 1000  # Diversity.max_per_tag
TAGS_SHOWN = 3  # ScoredArtist.tags with include_tags: the artist's heaviest
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


def resolve_page(k: int, offset: int) -> tuple[int, int]:
    """(k, offset) of a paged request: k as ``resolve_k``; offset < 0 or offset + k > ``MAX_K``
    is an error."""
    k = resolve_k(k)
    if offset < 0:
        raise InvalidArgument(f"offset must be >= 0, got {offset}")
    if offset + k > MAX_K:
        raise InvalidArgument(f"offset + k must be at most {MAX_K}, got {offset} + {k}")
    return k, offset


@dataclass(frozen=True, slots=True)
class TagOptions:
    """The tag fields of a ranking request: ``tags`` (any of them) and ``exclude_tags`` (none of
    them) filter the artists, ``max_per_tag`` (0: off) caps the artists sharing a top tag,
    ``include_tags`` asks for each artist's top tags in the answer.

    One value rather than four query fields: most requests set none of them and share
    ``NO_TAG_OPTIONS``, so an unfiltered request builds nothing for tags and its query has one
    field to set instead of four (a frozen dataclass pays a ``object.__setattr__`` per field)."""

    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    max_per_tag: int = 0
    include_tags: bool = False

    @property
    def asks_filter(self) -> bool:
        """True when the options change which artists rank (a filter or a cap), not only the encoding."""
        return bool(self.tags or self.exclude_tags or self.max_per_tag)


NO_TAG_OPTIONS = TagOptions()


# The queries are NamedTuples rather than frozen dataclasses: one is built per request, and a
# frozen dataclass's __init__ pays an ``object.__setattr__`` per field where a tuple is built in
# one step. They stay immutable and one shape; ``_replace`` makes a changed copy.


class RecommendQuery(NamedTuple):
    """One Recommend request as the domain sees it (the servicer makes it from the proto once):
    a listener of the training data, by ``user_id``; the rest as in ``ListenerQuery``."""

    user_id: str
    k: int = 0
    include_seen: bool = False
    exclude_artist_ids: tuple[str, ...] = ()
    only_artist_ids: tuple[str, ...] = ()
    offset: int = 0
    tag_options: TagOptions = NO_TAG_OPTIONS


class HistoryQuery(NamedTuple):
    """One RecommendForHistory request: a listener the model does not know, given by their
    ``history`` of (artist id, plays); the rest as in ``ListenerQuery``."""

    history: tuple[tuple[str, float], ...]
    k: int = 0
    include_seen: bool = False
    exclude_artist_ids: tuple[str, ...] = ()
    only_artist_ids: tuple[str, ...] = ()
    offset: int = 0
    tag_options: TagOptions = NO_TAG_OPTIONS


ListenerQuery = RecommendQuery | HistoryQuery
"""What a ranking for a listener asks for, however the listener is given: ranks ``offset`` ..
``offset + k - 1`` (k = 0: ``DEFAULT_K``), seen artists included or not, ``exclude_artist_ids``
never returned, ``only_artist_ids`` (when given) the only artists ranked; ``tag_options`` the
tag filter, cap and ``include_tags`` (``TagOptions``)."""


class SimilarQuery(NamedTuple):
    """One SimilarArtists request: the query artist by ``artist_id`` or, when that is empty, by
    ``artist_name``; ``k`` and ``tag_options`` as in ``ListenerQuery``."""

    artist_id: str = ""
    artist_name: str = ""
    k: int = 0
    tag_options: TagOptions = NO_TAG_OPTIONS


@dataclass(frozen=True)
class HistoryRanking:
    """A RecommendForHistory answer: the ranking, the history's unknown artist ids (request order,
    each once), and whether no artist was known so the ranking is by popularity."""

    ranking: Ranking
    unknown_artist_ids: tuple[str, ...] = ()
    popularity_fallback: bool = False


@dataclass(frozen=True)
class TagRequest:
    """A request's tag fields resolved against a version: tag indices of ``tags`` and
    ``exclude_tags``, the cap (0: none), and the names the version does not know."""

    tags: tuple[int, ...] = ()
    exclude_tags: tuple[int, ...] = ()
    max_per_tag: int = 0
    unknown: tuple[str, ...] = ()


def _check_tag_names(field: str, names: Sequence[str]) -> None:
    if len(names) > MAX_TAGS:
        raise InvalidArgument(f"at most {MAX_TAGS} {field}, got {len(names)}")
    for at, name in enumerate(names):
        if len(name) > MAX_TAG_LENGTH:
            raise InvalidArgument(f"{field}[{at}] is {len(name)} characters long (at most {MAX_TAG_LENGTH})")
        if not name.strip():
            raise InvalidArgument(f"{field}[{at}] is empty")


_HASH_CHUNK = 65_536  # keys turned into Python strings at a time while hashing


class _HashIndex:
    """Positions of a unicode array's keys bucketed by ``hash(str(key)) & mask`` (``mask + 1``
    buckets, a power of two >= the number of keys): bucket b holds ``members[starts[b]:starts[b + 1]]``.
    Memoryviews over int32 arrays, so a lookup indexes them as Python ints."""

    def __init__(self, mask: int, starts: np.ndarray, members: np.ndarray):
        self.mask = mask
        self.starts = memoryview(starts)
        self.members = memoryview(members)

    @classmethod
    def of(cls, keys: np.ndarray) -> "_HashIndex":
        n = int(keys.shape[0])
        buckets = 1 << max(n - 1, 0).bit_length()
        mask = buckets - 1
        hashes = np.empty(n, dtype=np.int64)
        for start in range(0, n, _HASH_CHUNK):
            chunk = keys[start:start + _HASH_CHUNK].tolist()
            hashes[start:start + len(chunk)] = np.fromiter(map(hash, chunk), dtype=np.int64, count=len(chunk))
        slots = hashes & mask
        members = np.argsort(slots, kind="stable").astype(np.int32)
        starts = np.searchsorted(slots[members], np.arange(buckets + 1)).astype(np.int32)
        return cls(mask, starts, members)


class SortedLookup:
    """``key -> index`` over a unicode array: many keys by binary search through its argsort, one
    key (``get``) through a hash index.

    ``keys`` (n,) unicode and ``order`` (n,) int with ``keys[order]`` strictly increasing;
    ``targets`` maps a position in ``keys`` to the answer (None: the position itself).

    ``get`` (one key, the per-request case) bisects until ``build_hash_index`` has made a hash
    index of the keys in this process (Python's string hash is per process, so it cannot be
    stored with the version): keys bucketed by hash, as int32 arrays, 8 to 12 bytes per key, where
    a dict of Python strings would hold every key as an object. Making it hashes every key once,
    a chunk at a time; the watcher does that once the version serves, so a swap does not wait
    for it (docs/serving.md)."""

    def __init__(self, keys: np.ndarray, order: np.ndarray | None = None, targets: np.ndarray | None = None):
        self.keys = keys
        self.order = order
        self.targets = targets
        self.size = int(keys.shape[0])
        self._hashed: _HashIndex | None = None

    def get(self, key: str) -> int | None:
        """The index ``key`` maps to, or None. Exact match (numpy drops trailing NULs from its
        strings, so a key with one never matches: its hash differs from the stored key's)."""
        hashed = self._hashed
        if hashed is None:
            return self._bisect(key)
        bucket = hash(key) & hashed.mask
        keys = self.keys
        for at in hashed.members[hashed.starts[bucket]:hashed.starts[bucket + 1]]:
            if keys[at] == key:
                return at if self.targets is None else int(self.targets[at])
        return None

    def _bisect(self, key: str) -> int | None:
        if not self.size:
            return None
        pos = min(int(np.searchsorted(self.keys, key, sorter=self.order)), self.size - 1)
        at = int(self.order[pos]) if self.order is not None else pos
        if str(self.keys[at]) != key:  # also refuses a key whose trailing NULs numpy dropped
            return None
        return at if self.targets is None else int(self.targets[at])

    def build_hash_index(self) -> None:
        """Make the hash index ``get`` uses from now on (idempotent; assigned in one step, so
        concurrent ``get`` calls see either no index or a whole one)."""
        if self._hashed is None:
            self._hashed = _HashIndex.of(self.keys)

    def get_many(self, keys: Sequence[str]) -> np.ndarray:
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

    def indices_or_missing(self, keys: Sequence[str]) -> np.ndarray:
        """(len(keys),) int64: each key's index in input order, -1 where unknown."""
        out = np.full(len(keys), -1, dtype=np.int64)
        if not keys or not self.size:
            return out
        wanted = np.array(keys, dtype=str)
        pos = np.minimum(np.searchsorted(self.keys, wanted, sorter=self.order), self.size - 1)
        at = (self.order[pos] if self.order is not None else pos).astype(np.int64)
        hit = self.keys[at] == wanted
        if self.targets is not None:
            at = self.targets[at].astype(np.int64)
        out[hit] = at[hit]
        if "\x00" in "".join(keys):  # numpy drops trailing NULs: confirm those keys one by one
            for i, key in enumerate(keys):
                if key.endswith("\x00"):
                    found = self.get(key)
                    out[i] = -1 if found is None else found
        return out


class ServingModel:
    """One model version in memory, answering queries. Immutable; thread-safe; ``close()`` once
    nothing uses it (unmaps its Annoy files)."""

    def __init__(self, loaded: LoadedVersion, *, recommend_method: str | None = None,
                 similar_method: str | None = None, precomputed: bool = True):
        """Index ``loaded``. ``recommend_method``/``similar_method`` ("exact" or "annoy") override
        the manifest's choice (e.g. to test the Annoy path on a catalog where exact was chosen);
        precomputed lists made by another method than the override are then not used. "annoy"
        on a side the version holds no Annoy index for serves exact (logged; ``*_params.method``
        says what serves).
        ``precomputed`` False answers everything by search."""
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
        recommend_method = _servable(manifest, "recommend", loaded.recommend_index, recommend_method)
        similar_method = _servable(manifest, "similar", loaded.similar_index, similar_method)
        self.recommend_params = search_params(manifest.recommend_search, recommend_method)
        self.similar_params = search_params(manifest.similar_search, similar_method)
        self.recommend_search = InnerProductSearch(
            item_vectors_with_bias(art.artist_factors, art.artist_bias), loaded.recommend_index,
            self.recommend_params)
        self.similar_search = CosineSearch(art.artist_factors, loaded.similar_index, self.similar_params)
        # Precomputed lists, when the version has them, unless a method override asks for
        # another search than the one that made them (lists made in batches, "exact", "ivf" or "warm",
        # stand for the manifest's own searches; see ranking.precompute).
        top, made = loaded.top, manifest.precomputed
        self.recommend_top = self.recommend_top_scores = None
        self.similar_top = self.similar_top_scores = None
        self.recommend_n = self.similar_n = 0
        if precomputed and top is not None and made is not None:
            if made.recommend_n and recommend_method in (None, made.recommend_method):
                self.recommend_top, self.recommend_top_scores = top.recommend_top, top.recommend_top_scores
                self.recommend_n = made.recommend_n
            if made.similar_n and similar_method in (None, made.similar_method):
                self.similar_top, self.similar_top_scores = top.similar_top, top.similar_top_scores
                self.similar_n = made.similar_n
        # Tags (format 3): the vocabulary looked up by name, each artist's top tag for diversity,
        # and the filtered-search plans from the latencies measured at publish.
        self.tags: ArtistTags | None = loaded.tags
        self.tag_names = None if self.tags is None else SortedLookup(self.tags.names, np.argsort(self.tags.names))
        self.top_tag = None if self.tags is None else top_tag_of(self.tags.indptr, self.tags.indices)
        self.recommend_plan = FilterPlan.of(manifest.recommend_search, self.recommend_params)
        self.similar_plan = FilterPlan.of(manifest.similar_search, self.similar_params)
        self.artist_listeners = art.artist_listeners
        self._popularity: np.ndarray | None = None  # artist indices by listeners; made on first use
        regularization = manifest.hyperparameters.get("regularization", DEFAULT_REGULARIZATION)
        self.fold_in = FoldIn(art.artist_factors, art.artist_bias, regularization=float(regularization),
                              negative_candidates=int(manifest.hyperparameters.get("negative_candidates", 1)))
        self.closed = False
        # Answers taken from the precomputed lists (read by the metrics; a plain int: per call cheap).
        self.precomputed_answers = 0

    # -- queries ----------------------------------------------------------------------------

    def user_index(self, user_id: str) -> int:
        """Index of ``user_id``; INVALID_ARGUMENT when empty, NOT_FOUND when unknown."""
        user = self.users.get(user_id)
        if user is None:
            if not user_id:
                raise InvalidArgument("user_id is required")
            raise NotFound(f"unknown user_id {user_id!r}")
        return user

    def recommend(self, query: RecommendQuery, live: "LiveListener | None" = None) -> Ranking:
        """Ranks offset .. offset + k - 1 of the artists by model score for ``query.user_id``
        (factors . factors + bias), best first; seen artists excluded unless ``include_seen``;
        ``exclude_artist_ids`` never returned (unknown ids ignored, at most ``MAX_EXCLUDED``);
        ``only_artist_ids``, when given, the only artists ranked (unknown ids ignored, at most
        ``MAX_ONLY``). Fewer than k when the catalog (or the allow-list) runs out.

        ``live``: the listener's live state (plays recorded after this version's mark, see
        ``index_service.live``): then their re-fitted vector ranks, their live artists count as
        seen, and a listener the version does not know is answered too."""
        if live is not None:
            return self._recommend_live(query, live)
        return self._recommend_user(*self._checked(query))

    def _recommend_live(self, query: RecommendQuery, live: "LiveListener") -> Ranking:
        k, offset = resolve_page(query.k, query.offset)
        extra = self._artist_indices(query.exclude_artist_ids) if query.exclude_artist_ids else None
        allowed = self._allowed_indices(query.only_artist_ids) if query.only_artist_ids else None
        tagged = self.tag_request(query)
        return _page(self._rank_fitted(live.query, live.seen, offset + k, query.include_seen, extra, allowed, tagged),
                     offset)

    def _rank_fitted(self, vector: np.ndarray | None, seen: np.ndarray, end: int, include_seen: bool,
                     extra: np.ndarray | None, allowed: np.ndarray | None,
                     tagged: TagRequest | None = None) -> Ranking:
        """The top ``end`` for a fitted listener: ``vector`` (F + 1,) (None: none of their
        artists is known, so by popularity), ``seen`` their artists (sorted indices)."""
        if include_seen or not seen.shape[0]:
            exclude = extra
        else:
            exclude = seen if extra is None else np.concatenate((seen, extra))
        if tagged is not None:
            return self._rank_fitted_tagged(vector, end, exclude, allowed, tagged)
        if vector is None:
            return self.popular(end, exclude, allowed)
        if allowed is not None:
            return self.search_among(vector, end, allowed, exclude)
        indices, scores = self.recommend_search.search(vector, end, exclude)
        return Ranking(indices, scores)

    # The tagged branches are methods of their own: their closures would otherwise make cells of
    # the caller's variables, which every unfiltered call would pay for too.
    def _rank_fitted_tagged(self, vector: np.ndarray | None, end: int, exclude: np.ndarray | None,
                            allowed: np.ndarray | None, tagged: TagRequest) -> Ranking:
        if tagged.unknown:
            return _NO_RANKING
        flt = self.artist_filter(tagged, allowed, exclude)
        if vector is None:
            return self._diversified(lambda depth: self.popular(depth, flt.exclude, flt.allowed), end, tagged)
        space = inner_product_space(self.recommend_search, vector)
        return self._diversified(
            lambda depth: Ranking(*filtered_search(space, depth, flt, self.recommend_plan)), end, tagged)

    def _checked(self, query: RecommendQuery) -> tuple[int, int, int, bool, np.ndarray | None, np.ndarray | None,
                                                       TagRequest | None]:
        """A checked request: (user, k, offset, include_seen, extra excluded, allowed or None,
        its tag fields resolved or None)."""
        k, offset = resolve_page(query.k, query.offset)
        tagged = self.tag_request(query)
        user = self.user_index(query.user_id)
        extra = self._artist_indices(query.exclude_artist_ids) if query.exclude_artist_ids else None
        allowed = self._allowed_indices(query.only_artist_ids) if query.only_artist_ids else None
        return user, k, offset, query.include_seen, extra, allowed, tagged

    def _from_lists(self, user: int, end: int, include_seen: bool, extra: np.ndarray | None,
                    allowed: np.ndarray | None) -> Ranking | None:
        """The top ``end`` from the user's precomputed list, or None when the list cannot answer."""
        if allowed is not None or self.recommend_top is None or include_seen or end > self.recommend_n:
            return None
        answer = _from_list(self.recommend_top, self.recommend_top_scores, user, end, extra)
        if answer is not None:
            self.precomputed_answers += 1
        return answer

    def _recommend_user(self, user: int, k: int, offset: int, include_seen: bool, extra: np.ndarray | None,
                        allowed: np.ndarray | None, tagged: TagRequest | None = None) -> Ranking:
        end = offset + k
        if tagged is not None:
            return _page(self._recommend_user_tagged(user, end, include_seen, extra, allowed, tagged), offset)
        answer = self._from_lists(user, end, include_seen, extra, allowed)
        if answer is None:
            if allowed is not None:
                exclude = self._exclusions(user, include_seen, extra)
                answer = self.search_among(user_query(self.user_factors[user]), end, allowed, exclude)
            else:
                answer = self.search_recommend(user, end, include_seen, extra)
        return _page(answer, offset)

    def _recommend_user_tagged(self, user: int, end: int, include_seen: bool, extra: np.ndarray | None,
                               allowed: np.ndarray | None, tagged: TagRequest) -> Ranking:
        if tagged.unknown:
            return _NO_RANKING
        # A list never holds the user's seen artists, so the filter it is read with need not
        # drop them (the cheaper filter); the search's filter is made only for a search.
        list_filter = (self.artist_filter(tagged, allowed, extra)
                       if not include_seen and self.recommend_top is not None else None)

        def search_filter() -> ArtistFilter:
            return self.artist_filter(tagged, allowed, self._exclusions(user, include_seen, extra))

        return self._diversified(lambda depth: self._filtered_user(user, depth, list_filter, search_filter),
                                 end, tagged)

    def _filtered_user(self, user: int, depth: int, list_filter: ArtistFilter | None,
                       search_filter: Callable[[], ArtistFilter]) -> Ranking:
        """The top ``depth`` of user index ``user`` among the artists ``search_filter()`` leaves:
        from the user's list read with ``list_filter`` when the list holds them (``from_list``;
        given only when the request excludes seen artists, as the lists do), else by the planned
        search."""
        if list_filter is not None and depth <= self.recommend_n:
            answer = from_list(self.recommend_top[user], self.recommend_top_scores[user], depth, list_filter)
            if answer is not None:
                self.precomputed_answers += 1
                return Ranking(*answer)
        space = inner_product_space(self.recommend_search, user_query(self.user_factors[user]))
        return Ranking(*filtered_search(space, depth, search_filter(), self.recommend_plan))

    def tag_request(self, query: "ListenerQuery | SimilarQuery") -> TagRequest | None:
        """The query's tag fields resolved against this version; None when it asks no filter and
        no diversity (``include_tags`` alone changes only the encoding). Over the limits:
        INVALID_ARGUMENT; a filter or diversity on a version without tags: FAILED_PRECONDITION."""
        options = query.tag_options
        if options is NO_TAG_OPTIONS or not options.asks_filter:
            return None
        _check_tag_names("tags", options.tags)
        _check_tag_names("exclude_tags", options.exclude_tags)
        if options.max_per_tag < 0 or options.max_per_tag > MAX_PER_TAG:
            raise InvalidArgument(f"diversity.max_per_tag must be between 0 and {MAX_PER_TAG}, got {options.max_per_tag}")
        if self.tag_names is None:
            raise FailedPrecondition(f"the served version ({self.version}) has no tags: tags, exclude_tags and "
                                     "diversity need a version trained from a source with tags")
        unknown: dict[str, None] = {}

        def resolve(names: Sequence[str]) -> tuple[int, ...]:
            found = []
            for name in names:
                at = self.tag_names.get(tag_key(name))
                if at is None:
                    unknown[name] = None
                else:
                    found.append(at)
            return tuple(dict.fromkeys(found))

        return TagRequest(resolve(options.tags), resolve(options.exclude_tags), options.max_per_tag, tuple(unknown))

    def unknown_tags(self, query: "ListenerQuery | SimilarQuery") -> tuple[str, ...]:
        """The query's tags and exclude_tags this version does not know (request order, each once)."""
        tagged = self.tag_request(query)
        return () if tagged is None else tagged.unknown

    def artist_filter(self, tagged: TagRequest, allowed: np.ndarray | None, exclude: np.ndarray | None) -> ArtistFilter:
        tags = self.tags
        return tag_filter(tags.tag_indptr, tags.tag_artists, self.num_artists, tagged.tags, tagged.exclude_tags,
                          allowed, exclude)

    def _diversified(self, top, end: int, tagged: TagRequest) -> Ranking:
        """``top(end)`` (a Ranking of the best ``end``), or with ``tagged.max_per_tag`` its
        diversified top ``end`` (``ranking.diversity``)."""
        if not tagged.max_per_tag:
            return top(end)
        return Ranking(*diversified(top, end, self.top_tag, tagged.max_per_tag, self.num_artists))

    def _exclusions(self, user: int, include_seen: bool, extra: np.ndarray | None) -> np.ndarray | None:
        exclude = None
        if not include_seen:
            exclude = self.seen_indices[self.seen_indptr[user]:self.seen_indptr[user + 1]]
        if extra is not None and extra.shape[0]:
            exclude = extra if exclude is None else np.concatenate((exclude, extra))
        return exclude

    def search_recommend(self, user: int, k: int, include_seen: bool = False,
                         extra: np.ndarray | None = None) -> Ranking:
        """Recommend for user index ``user`` by search (no precomputed list); ``extra``: artist
        indices excluded besides the seen ones."""
        exclude = self._exclusions(user, include_seen, extra)
        indices, scores = self.recommend_search.search(user_query(self.user_factors[user]), k, exclude)
        return Ranking(indices, scores)

    def search_among(self, query: np.ndarray, k: int, allowed: np.ndarray,
                     exclude: np.ndarray | None = None) -> Ranking:
        """The top k of ``allowed`` (sorted distinct artist indices) minus ``exclude`` for the
        query vector (F + 1,), scored exactly."""
        if exclude is not None and exclude.shape[0] and allowed.shape[0]:
            allowed = allowed[~np.isin(allowed, exclude)]
        indices, scores = self.recommend_search.search_among(query, k, allowed)
        return Ranking(indices, scores)

    def recommend_for_history(self, query: HistoryQuery) -> HistoryRanking:
        """Ranks offset .. offset + k - 1 for a listener the model does not know, from their
        history of (artist id, plays): the listener's vector is fitted by ``self.fold_in``, then
        ranked as ``recommend`` ranks a user (the history's artists play the seen ones). Unknown
        history artists are ignored and reported; with none known, artists by listeners."""
        history = query.history
        if len(history) > MAX_HISTORY:
            raise InvalidArgument(f"at most {MAX_HISTORY} history entries, got {len(history)}")
        ids = [artist_id for artist_id, _ in history]
        plays = np.array([p for _, p in history], dtype=np.float64)
        bad = np.flatnonzero(~(np.isfinite(plays) & (plays > 0)))
        if bad.shape[0]:
            at = int(bad[0])
            raise InvalidArgument(f"history[{at}].plays must be a positive finite number, got {history[at][1]!r}")
        k, offset = resolve_page(query.k, query.offset)
        extra = self._artist_indices(query.exclude_artist_ids) if query.exclude_artist_ids else None
        allowed = self._allowed_indices(query.only_artist_ids) if query.only_artist_ids else None
        tagged = self.tag_request(query)
        found = self.artists.indices_or_missing(ids)
        known = found >= 0
        unknown = tuple(dict.fromkeys(artist_id for artist_id, hit in zip(ids, known.tolist()) if not hit))
        end = offset + k
        if not known.any():
            if tagged is not None:
                ranking = self._rank_fitted(None, _NO_INDICES, end, True, extra, allowed, tagged)
                return HistoryRanking(_page(ranking, offset), unknown, True)
            return HistoryRanking(_page(self.popular(end, extra, allowed), offset), unknown, True)
        artists, inverse = np.unique(found[known], return_inverse=True)
        weights = np.bincount(inverse, weights=plays[known])  # an artist listed twice: plays summed
        ranking = self._rank_fitted(self.fold_in.fit(artists, weights), artists, end, query.include_seen, extra,
                                    allowed, tagged)
        return HistoryRanking(_page(ranking, offset), unknown, False)

    def popular(self, k: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None) -> Ranking:
        """The k artists with the most training listeners (ties to the lower index), none in
        ``exclude``, only from ``allowed`` when given; scores are the listener counts."""
        if allowed is not None:
            if exclude is not None and exclude.shape[0]:
                allowed = allowed[~np.isin(allowed, exclude)]
            order = allowed[np.argsort(-self.artist_listeners[allowed].astype(np.int64), kind="stable")][:k]
        else:
            if self._popularity is None:
                self._popularity = popularity_order(self.artist_listeners)
            n_exclude = 0 if exclude is None else int(exclude.shape[0])
            order = self._popularity[:k + n_exclude]
            if n_exclude:
                order = order[~np.isin(order, exclude)]
            order = order[:k]
        order = order.astype(np.int64, copy=False)
        return Ranking(order, self.artist_listeners[order].astype(np.float32))

    def batch_recommend(self, queries: Sequence[RecommendQuery],
                        live: Mapping[str, "LiveListener"] = MappingProxyType({})) -> list[Ranking | ServiceError]:
        """``recommend`` for every query, in order: a Ranking, or the ServiceError that query
        alone would have raised. More than ``MAX_BATCH`` queries is INVALID_ARGUMENT (for all).

        What the precomputed lists cannot answer is searched; on an exact-search version the
        plain (no allow-list) searches are scored as one (n, D) x (D, A) matrix product. Its
        scores can differ from a single call's in the last float32 bit (the product sums in
        another order), so near-ties may order differently than in a single call. ``live``: the
        live listeners among the queries' users, by user id (see ``recommend``)."""
        if len(queries) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} requests in a batch, got {len(queries)}")
        results: list[Ranking | ServiceError | None] = [None] * len(queries)
        pending: list[tuple[int, int, int, int, np.ndarray | None]] = []  # (position, user, end, offset, exclude)
        together = self.recommend_search.batches_exactly
        for position, query in enumerate(queries):
            try:
                listener = live.get(query.user_id) if live else None
                if listener is not None:
                    results[position] = self._recommend_live(query, listener)
                    continue
                user, k, offset, include_seen, extra, allowed, tagged = self._checked(query)
                end = offset + k
                if tagged is not None:
                    results[position] = self._recommend_user(user, k, offset, include_seen, extra, allowed, tagged)
                    continue
                answer = self._from_lists(user, end, include_seen, extra, allowed)
                if answer is not None:
                    results[position] = _page(answer, offset)
                elif together and allowed is None:
                    pending.append((position, user, end, offset, self._exclusions(user, include_seen, extra)))
                else:
                    results[position] = self._recommend_user(user, k, offset, include_seen, extra, allowed)
            except ServiceError as error:
                results[position] = error
        if pending:
            users = np.array([p[1] for p in pending], dtype=np.int64)
            queries_matrix = np.ones((users.shape[0], self.user_factors.shape[1] + 1), dtype=np.float32)
            queries_matrix[:, :-1] = self.user_factors[users]
            answers = self.recommend_search.exact_many(queries_matrix, [p[2] for p in pending], [p[4] for p in pending])
            for (position, _, _, offset, _), (indices, scores) in zip(pending, answers):
                results[position] = _page(Ranking(indices, scores), offset)
        return results  # type: ignore[return-value]

    def similar(self, query: SimilarQuery) -> SimilarRanking:
        """The k artists closest to the query artist by cosine of their factors, itself excluded.

        The artist is given by id or by name (case-insensitive; among artists sharing the name,
        the one with the most listeners)."""
        k = resolve_k(query.k)
        tagged = self.tag_request(query)
        artist = self.resolve_artist(query.artist_id, query.artist_name)
        if tagged is not None:
            return SimilarRanking(artist, self._similar_tagged(artist, k, tagged))
        if self.similar_top is not None and k <= self.similar_n:
            answer = _from_list(self.similar_top, self.similar_top_scores, artist, k, None)
            if answer is not None:
                self.precomputed_answers += 1
                return SimilarRanking(artist, answer)
        return SimilarRanking(artist, self.search_similar(artist, k))

    def _similar_tagged(self, artist: int, k: int, tagged: TagRequest) -> Ranking:
        if tagged.unknown:
            return _NO_RANKING
        flt = self.artist_filter(tagged, None, np.array([artist], dtype=np.int64))
        return self._diversified(lambda depth: self._filtered_similar(artist, depth, flt), k, tagged)

    def _filtered_similar(self, artist: int, depth: int, flt: ArtistFilter) -> Ranking:
        """The ``depth`` artists most similar to ``artist`` among those ``flt`` leaves (it
        excludes ``artist``): from its list when that holds them (``from_list``), else searched."""
        if self.similar_top is not None and depth <= self.similar_n:
            answer = from_list(self.similar_top[artist], self.similar_top_scores[artist], depth, flt)
            if answer is not None:
                self.precomputed_answers += 1
                return Ranking(*answer)
        return Ranking(*filtered_search(cosine_space(self.similar_search, artist), depth, flt, self.similar_plan))

    def search_similar(self, artist: int, k: int) -> Ranking:
        """SimilarArtists for artist index ``artist`` by search (no precomputed list)."""
        indices, scores = self.similar_search.search(artist, k)
        return Ranking(indices, scores)

    def resolve_artist(self, artist_id: str = "", artist_name: str = "") -> int:
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

    def _artist_indices(self, artist_ids: Sequence[str]) -> np.ndarray:
        if len(artist_ids) > MAX_EXCLUDED:
            raise InvalidArgument(f"at most {MAX_EXCLUDED} exclude_artist_ids, got {len(artist_ids)}")
        return self.artists.get_many(artist_ids)

    def _allowed_indices(self, artist_ids: Sequence[str]) -> np.ndarray:
        """Sorted distinct indices of the known ids (possibly none: nothing is then ranked)."""
        if len(artist_ids) > MAX_ONLY:
            raise InvalidArgument(f"at most {MAX_ONLY} only_artist_ids, got {len(artist_ids)}")
        return np.unique(self.artists.get_many(artist_ids))

    # -- life cycle -------------------------------------------------------------------------

    def warm_up(self, queries: int = WARM_UP_QUERIES) -> None:
        """Answer a few queries of each kind, by both paths, so first requests do not pay for
        page faults and lazy initialization."""
        for user in np.linspace(0, self.num_users - 1, min(queries, self.num_users)).astype(int).tolist():
            self.recommend(RecommendQuery(str(self.user_ids[user]), k=DEFAULT_K))
            self.search_recommend(user, DEFAULT_K)
        for artist in np.linspace(0, self.num_artists - 1, min(queries, self.num_artists)).astype(int).tolist():
            self.similar(SimilarQuery(artist_id=str(self.artist_ids[artist]), k=DEFAULT_K))
            self.search_similar(artist, DEFAULT_K)
        history = tuple((str(self.artist_ids[a]), 1.0) for a in range(min(queries, self.num_artists)))
        self.recommend_for_history(HistoryQuery(history, k=DEFAULT_K))
        if self.tag_names is not None and self.num_users:
            # The tag lookup's hash index, and a filtered search of each kind (the most common tag).
            common = (str(self.tags.names[0]),)
            self.recommend(RecommendQuery(str(self.user_ids[0]), k=DEFAULT_K,
                                          tag_options=TagOptions(tags=common, max_per_tag=2)))
            self.similar(SimilarQuery(artist_id=str(self.artist_ids[0]), k=DEFAULT_K,
                                      tag_options=TagOptions(tags=common)))

    def build_hash_indexes(self) -> None:
        """The hash indexes of user ids, artist ids, names and tags (``SortedLookup.build_hash_index``).
        Lookups are right without them (they bisect); the watcher calls this once the version
        serves, so a swap does not wait for it."""
        for lookup in (self.users, self.artists, self.names, self.tag_names):
            if lookup is not None:
                lookup.build_hash_index()

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


_NO_RANKING = Ranking(_NO_INDICES, np.empty(0, dtype=np.float32))


def _servable(manifest: Manifest, side: str, index, method: str | None) -> str | None:
    """The method override a side can serve: "annoy" asked of a version without that side's
    Annoy index (format 4, its manifest says exact) serves exact instead, logged once per load."""
    if method == "annoy" and index is None:
        log.warning("version %d has no Annoy index for %s: serving it exact although told "
                    "--%s-method annoy", manifest.model_version, side, side)
        return "exact"
    return method


def _page(ranking: Ranking, offset: int) -> Ranking:
    """Ranks offset and after of a ranking."""
    if not offset:
        return ranking
    return Ranking(ranking.indices[offset:], ranking.scores[offset:])


def _from_list(top: np.ndarray, top_scores: np.ndarray, at: int, k: int,
               exclude: np.ndarray | None) -> Ranking | None:
    """The first k (<= the list length) entries of precomputed list ``at`` (row of ``top`` and
    ``top_scores``, -1 padded) not in ``exclude``; None when exclusions leave fewer than k of a
    full list (the search must answer). A list that is not full holds every candidate there is,
    so a short answer from it is complete."""
    if exclude is None or not exclude.shape[0]:
        # Sliced from the matrices, and the padding tested on a Python int: the most common
        # answer, made with as few numpy calls as it takes.
        indices = top[at, :k]
        if k and top.item(at, k - 1) < 0:
            keep = indices >= 0
            return Ranking(indices[keep], top_scores[at, :k][keep])
        return Ranking(indices, top_scores[at, :k])
    row, scores = top[at], top_scores[at]
    keep = (row >= 0) & ~np.isin(row, exclude)
    indices = row[keep][:k]
    if indices.shape[0] < k and row[-1] >= 0:
        return None
    return Ranking(indices, scores[keep][:k])
