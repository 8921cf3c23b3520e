"""What a version is made of, as it is written and read: the model's arrays, the artists' tags, the
lookups, the precomputed lists, and (when publishing) the built indexes with their search settings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from annoy import AnnoyIndex

from model_store.format import PrecomputedConfig, SearchConfig


# The heaviest tags an artist keeps (format 3 refuses a version whose artist carries more).
MAX_TAGS_PER_ARTIST = 20


def tag_key(name: str) -> str:
    """The form tag names are stored and matched in: surrounding spaces stripped, case folded."""
    return name.strip().casefold()


@dataclass(frozen=True)
class ArtistTags:
    """Each artist's tags with weights, and the tag vocabulary (format 3).

    - ``names``: (T,) unicode, tag names in ``tag_key`` form, ordered by how many artists carry
      the tag (descending), ties by name; tag index t is the position here.
    - ``counts``: (T,) int64, the number of artists carrying tag t.
    - ``indptr``: (A+1,) int64 and ``indices``: (nnz,) int32: artist a's tags are
      ``indices[indptr[a]:indptr[a+1]]``, heaviest first (ties: lower tag index first), so the
      first one is the artist's top tag; at most ``MAX_TAGS_PER_ARTIST``; an artist may have none.
    - ``weights``: (nnz,) float32 > 0, aligned with ``indices`` (HetRec: listeners who applied it).
    - ``tag_indptr``: (T+1,) int64 and ``tag_artists``: (nnz,) int32: the transpose, tag t's
      artist rows ascending in ``tag_artists[tag_indptr[t]:tag_indptr[t+1]]`` (stored so that
      serving builds nothing at load).
    """

    names: np.ndarray
    counts: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    tag_indptr: np.ndarray
    tag_artists: np.ndarray

    @property
    def num_tags(self) -> int:
        return int(self.names.shape[0])

    @property
    def num_artists(self) -> int:
        return int(self.indptr.shape[0]) - 1

    def artist_tag_indices(self, artist: int) -> np.ndarray:
        """Tag indices of artist row ``artist``, heaviest first."""
        return self.indices[self.indptr[artist]:self.indptr[artist + 1]]

    def artist_tag_names(self, artist: int) -> list[str]:
        """Tag names of artist row ``artist``, heaviest first."""
        return [str(self.names[t]) for t in self.artist_tag_indices(artist)]

    def tag_artist_rows(self, tag: int) -> np.ndarray:
        """Artist rows carrying tag index ``tag``, ascending."""
        return self.tag_artists[self.tag_indptr[tag]:self.tag_indptr[tag + 1]]

    @classmethod
    def empty(cls, num_artists: int) -> "ArtistTags":
        """No tags for ``num_artists`` artists (what a format-3 version without tags stores)."""
        return cls.from_triples(num_artists, [], [], [])

    @classmethod
    def from_triples(cls, num_artists: int, artist_rows, tag_names, weights,
                     max_per_artist: int = MAX_TAGS_PER_ARTIST) -> "ArtistTags":
        """Build from aligned (artist row, tag name, weight) triples.

        Names are put in ``tag_key`` form; the weights of repeated (artist, tag) pairs add up;
        each artist keeps its ``max_per_artist`` heaviest tags (ties: by name). Raises ValueError
        for a row out of range, an empty name, or a weight that is not finite and > 0.
        """
        keys = [tag_key(str(name)) for name in tag_names]
        vocabulary, codes = np.unique(np.array(keys, dtype=str) if keys else np.zeros(0, dtype="<U1"),
                                      return_inverse=True)
        return cls.from_codes(num_artists, artist_rows, codes, vocabulary, weights, max_per_artist)

    @classmethod
    def from_codes(cls, num_artists: int, artist_rows, codes, vocabulary: np.ndarray, weights,
                   max_per_artist: int = MAX_TAGS_PER_ARTIST) -> "ArtistTags":
        """``from_triples`` with the names already coded: triple i names ``vocabulary[codes[i]]``,
        where ``vocabulary`` is sorted, distinct and in ``tag_key`` form (codes in name order), so
        that a loader with many triples of few names builds no per-triple string. Entries no
        triple uses are left out. Raises ValueError as ``from_triples`` does."""
        rows = np.asarray(artist_rows, dtype=np.int64).reshape(-1)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        codes = np.asarray(codes).reshape(-1).astype(np.int64)
        if not (rows.shape[0] == w.shape[0] == codes.shape[0]):
            raise ValueError(f"{rows.shape[0]} rows, {codes.shape[0]} names and {w.shape[0]} weights: not aligned")
        if rows.size and (rows.min() < 0 or rows.max() >= num_artists):
            raise ValueError(f"artist rows out of range [0, {num_artists})")
        if codes.size and (codes.min() < 0 or codes.max() >= vocabulary.size):
            raise ValueError(f"tag codes out of range [0, {vocabulary.size})")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("tag weights must be finite and > 0")
        if vocabulary.size and not vocabulary[0]:  # sorted: an empty name comes first
            raise ValueError("empty tag name")
        pairs, inverse = np.unique(rows * max(1, vocabulary.size) + codes, return_inverse=True)
        summed = np.bincount(inverse.reshape(-1), weights=w, minlength=pairs.size).astype(np.float32)
        if not np.all(np.isfinite(summed)):
            raise ValueError("a tag's summed weight does not fit in float32")
        pair_rows, pair_codes = pairs // max(1, vocabulary.size), pairs % max(1, vocabulary.size)
        # Each artist's heaviest first (ties by name), then its first max_per_artist kept.
        order = np.lexsort((pair_codes, -summed, pair_rows))
        pair_rows, pair_codes, summed = pair_rows[order], pair_codes[order], summed[order]
        starts = np.searchsorted(pair_rows, pair_rows, side="left")
        keep = np.arange(pair_rows.size) - starts < max_per_artist
        pair_rows, pair_codes, summed = pair_rows[keep], pair_codes[keep], summed[keep]
        carried = np.bincount(pair_codes, minlength=vocabulary.size)
        used = np.flatnonzero(carried)
        ranked = used[np.lexsort((used, -carried[used]))]  # codes are name order: ties by name
        tag_of_code = np.full(vocabulary.size, -1, dtype=np.int64)
        tag_of_code[ranked] = np.arange(ranked.size)
        tags = tag_of_code[pair_codes]
        # Heaviest first; equal weights keep the more common tag first (tag index order).
        order = np.lexsort((tags, -summed, pair_rows))
        indptr = np.zeros(num_artists + 1, dtype=np.int64)
        np.cumsum(np.bincount(pair_rows, minlength=num_artists), out=indptr[1:])
        names = vocabulary[ranked]
        return cls._with_transpose(
            names=names if names.size else np.zeros(0, dtype="<U1"),
            counts=carried[ranked].astype(np.int64),
            indptr=indptr, indices=tags[order].astype(np.int32), weights=summed[order])

    @classmethod
    def _with_transpose(cls, names, counts, indptr, indices, weights) -> "ArtistTags":
        rows = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int32), np.diff(indptr))
        order = np.lexsort((rows, indices))  # by tag, then artist row
        tag_indptr = np.zeros(names.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(indices, minlength=names.shape[0]), out=tag_indptr[1:])
        return cls(names=names, counts=counts, indptr=indptr, indices=indices, weights=weights,
                   tag_indptr=tag_indptr, tag_artists=rows[order].astype(np.int32))

    def check(self, num_artists: int) -> None:
        """Raise ValueError unless the tags are sound for ``num_artists`` artists: shapes and
        dtypes, names in ``tag_key`` form and distinct, ordered by (count desc, name), counts
        matching the transpose, indices and rows in range, weights finite and > 0 and heaviest
        first, at most ``MAX_TAGS_PER_ARTIST`` tags per artist, and the transpose exact."""
        t = self.names.shape[0] if self.names.ndim == 1 else -1
        if t < 0 or self.names.dtype.kind != "U":
            raise ValueError(f"tag names have shape {self.names.shape} and dtype {self.names.dtype}, expected (T,) unicode")
        nnz = int(self.indptr[-1]) if self.indptr.ndim == 1 and self.indptr.shape[0] else -1
        expected = {
            "counts": (self.counts, (t,)), "indptr": (self.indptr, (num_artists + 1,)),
            "indices": (self.indices, (nnz,)), "weights": (self.weights, (nnz,)),
            "tag_indptr": (self.tag_indptr, (t + 1,)), "tag_artists": (self.tag_artists, (nnz,)),
        }
        for name, (array, shape) in expected.items():
            kind = "f" if name == "weights" else "i"
            if array.shape != shape or array.dtype.kind != kind:
                raise ValueError(f"tag array {name} has shape {array.shape} and dtype {array.dtype}, "
                                 f"expected {shape} of kind {kind!r}")
        for name, ptr in (("indptr", self.indptr), ("tag_indptr", self.tag_indptr)):
            if ptr[0] != 0 or np.any(np.diff(ptr) < 0) or ptr[-1] != nnz:
                raise ValueError(f"tag {name} must start at 0, never decrease and end at {nnz}")
        if np.diff(self.indptr).max(initial=0) > MAX_TAGS_PER_ARTIST:
            raise ValueError(f"an artist carries more than {MAX_TAGS_PER_ARTIST} tags")
        if nnz and (self.indices.min() < 0 or self.indices.max() >= t):
            raise ValueError("tag indices out of range")
        if nnz and (self.tag_artists.min() < 0 or self.tag_artists.max() >= num_artists):
            raise ValueError("tag artist rows out of range")
        if not np.all(np.isfinite(self.weights)) or np.any(self.weights <= 0):
            raise ValueError("tag weights must be finite and > 0")
        names = self.names.tolist()
        if any(not name or name != tag_key(name) for name in names):
            raise ValueError("tag names must be non-empty, stripped and case folded")
        if len(set(names)) != len(names):
            raise ValueError("tag names are not distinct")
        if not np.array_equal(self.counts, np.diff(self.tag_indptr)):
            raise ValueError("tag counts do not match the artists carrying each tag")
        ranked = list(zip((-self.counts).tolist(), names))
        if any(a >= b for a, b in zip(ranked, ranked[1:])):
            raise ValueError("tag names are not ordered by (count desc, name)")
        rows = np.repeat(np.arange(num_artists, dtype=np.int64), np.diff(self.indptr))
        same_artist = rows[1:] == rows[:-1]
        if np.any(self.weights[1:][same_artist] > self.weights[:-1][same_artist]):
            raise ValueError("an artist's tags are not heaviest first")
        tags = np.repeat(np.arange(t, dtype=np.int64), np.diff(self.tag_indptr))
        order = np.lexsort((rows, self.indices))
        if not (np.array_equal(self.indices[order], tags) and np.array_equal(rows[order], self.tag_artists)):
            raise ValueError("tag_artists is not the transpose of the artists' tags")
        if np.any((self.tag_artists[1:] <= self.tag_artists[:-1]) & (tags[1:] == tags[:-1])):
            raise ValueError("an artist carries a tag twice")


@dataclass(frozen=True)
class ModelArtifacts:
    """A trained BPR model and the catalog data the index service needs.

    Shapes (U users, A artists, F factors, N distinct user-artist interactions):

    - ``user_ids``: (U,) unicode; ``user_factors``: (U, F) float32.
    - ``artist_ids``, ``artist_names``: (A,) unicode; ``artist_factors``: (A, F) float32;
      ``artist_bias``: (A,) float32; ``artist_listeners``: (A,) int32, number of distinct users
      who listened to the artist (used to break ties between artists that share a name).
    - ``seen_indptr``: (U + 1,) int64 and ``seen_indices``: (N,) int32, a CSR matrix of every
      user's seen artists (all interactions, held-out ones included), sorted within each row.
    - ``tags``: the artists' tags (``ArtistTags``), or None for a version without tags.

    The model score of user u for artist a is ``user_factors[u] @ artist_factors[a] + artist_bias[a]``.
    """

    user_ids: np.ndarray
    user_factors: np.ndarray
    artist_ids: np.ndarray
    artist_names: np.ndarray
    artist_factors: np.ndarray
    artist_bias: np.ndarray
    artist_listeners: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    tags: ArtistTags | None = None

    @property
    def num_users(self) -> int:
        return int(self.user_factors.shape[0])

    @property
    def num_artists(self) -> int:
        return int(self.artist_factors.shape[0])

    @property
    def num_factors(self) -> int:
        return int(self.user_factors.shape[1])

    def check(self, unique_ids: bool = True) -> None:
        """Raise ValueError unless every array has the dtype and shape the contract requires.

        ``unique_ids`` False skips the id uniqueness check (a Python set of every id): a format-2
        reader checks uniqueness vectorized through ``Lookups.check`` instead."""
        u, a = self.user_ids.shape[0], self.artist_ids.shape[0]
        if self.user_factors.ndim != 2 or self.artist_factors.ndim != 2:
            raise ValueError("factors must be 2-D")
        f = self.user_factors.shape[1]
        expected = {
            "user_ids": (self.user_ids, (u,), "U"),
            "user_factors": (self.user_factors, (u, f), "f"),
            "artist_ids": (self.artist_ids, (a,), "U"),
            "artist_names": (self.artist_names, (a,), "U"),
            "artist_factors": (self.artist_factors, (a, f), "f"),
            "artist_bias": (self.artist_bias, (a,), "f"),
            "artist_listeners": (self.artist_listeners, (a,), "i"),
            "seen_indptr": (self.seen_indptr, (u + 1,), "i"),
            "seen_indices": (self.seen_indices, (int(self.seen_indptr[-1]) if u >= 0 and len(self.seen_indptr) else 0,), "i"),
        }
        for name, (array, shape, kind) in expected.items():
            if array.shape != shape:
                raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
            if array.dtype.kind != kind:
                raise ValueError(f"{name} has dtype {array.dtype}, expected kind {kind!r}")
        if u == 0 or a == 0 or f == 0:
            raise ValueError(f"empty model: {u} users, {a} artists, {f} factors")
        if not (np.all(np.isfinite(self.user_factors)) and np.all(np.isfinite(self.artist_factors))
                and np.all(np.isfinite(self.artist_bias))):
            raise ValueError("factors or bias contain NaN or infinity")
        if self.seen_indptr[0] != 0 or np.any(np.diff(self.seen_indptr) < 0):
            raise ValueError("seen_indptr must start at 0 and never decrease")
        if self.seen_indices.size and (self.seen_indices.min() < 0 or self.seen_indices.max() >= a):
            raise ValueError("seen_indices out of range")
        if unique_ids and len(set(self.user_ids.tolist())) != u:
            raise ValueError("user_ids are not unique")
        if unique_ids and len(set(self.artist_ids.tolist())) != a:
            raise ValueError("artist_ids are not unique")
        if self.tags is not None:
            self.tags.check(a)


def name_key(name: str) -> str:
    """The form artist names are matched in: surrounding spaces stripped, case folded."""
    return name.strip().casefold()


def name_index(names: list[str], listeners: list[int]) -> dict[str, int]:
    """``name_key`` -> artist index. When several artists share a key, the one with the most
    listeners wins (then the lowest index). Empty names are not indexed."""
    index: dict[str, int] = {}
    for i, (name, count) in enumerate(zip(names, listeners)):
        key = name_key(name)
        if not key:
            continue
        held = index.get(key)
        if held is None or count > listeners[held]:
            index[key] = i
    return index


@dataclass(frozen=True)
class Lookups:
    """Id and name lookups as arrays (format 2 stores them; format 1 builds them at load).

    - ``user_id_order`` (U,) int64 and ``artist_id_order`` (A,) int64: the argsort of the ids, so
      an id is found with ``np.searchsorted(ids, id, sorter=order)``.
    - ``artist_name_keys`` (M,) unicode, sorted, distinct ``name_key``s of non-empty names, and
      ``artist_name_artists`` (M,) int64: the artist each key names. When several artists share a
      key, the one with the most listeners wins, then the lowest index.
    """

    user_id_order: np.ndarray
    artist_id_order: np.ndarray
    artist_name_keys: np.ndarray
    artist_name_artists: np.ndarray

    @classmethod
    def build(cls, artifacts: ModelArtifacts) -> "Lookups":
        keys = name_index(artifacts.artist_names.tolist(), artifacts.artist_listeners.tolist())
        ordered = sorted(keys)
        return cls(
            user_id_order=np.argsort(artifacts.user_ids, kind="stable").astype(np.int64),
            artist_id_order=np.argsort(artifacts.artist_ids, kind="stable").astype(np.int64),
            artist_name_keys=np.array(ordered, dtype=f"<U{max((len(k) for k in ordered), default=1)}"),
            artist_name_artists=np.array([keys[k] for k in ordered], dtype=np.int64),
        )

    def check(self, artifacts: ModelArtifacts) -> None:
        """Raise ValueError unless the lookups are sound for ``artifacts``: each order a
        permutation that sorts its ids strictly (so ids are unique), name keys sorted and
        distinct, every named artist in range."""
        for name, order, ids in (("user", self.user_id_order, artifacts.user_ids),
                                 ("artist", self.artist_id_order, artifacts.artist_ids)):
            n = ids.shape[0]
            if order.shape != (n,) or order.dtype.kind != "i":
                raise ValueError(f"{name}_id_order has shape {order.shape} and dtype {order.dtype}, expected ({n},) int")
            if n and (order.min() < 0 or order.max() >= n or np.bincount(order, minlength=n).max() != 1):
                raise ValueError(f"{name}_id_order is not a permutation")
            ordered = ids[order]
            if n > 1 and not np.all(ordered[1:] > ordered[:-1]):
                raise ValueError(f"{name}_ids are not unique (or {name}_id_order does not sort them)")
        keys, artists = self.artist_name_keys, self.artist_name_artists
        if keys.ndim != 1 or keys.dtype.kind != "U" or artists.shape != keys.shape or artists.dtype.kind != "i":
            raise ValueError("artist_name_keys / artist_name_artists have the wrong shape or dtype")
        if keys.shape[0] > 1 and not np.all(keys[1:] > keys[:-1]):
            raise ValueError("artist_name_keys are not sorted and distinct")
        if artists.shape[0] and (artists.min() < 0 or artists.max() >= artifacts.num_artists):
            raise ValueError("artist_name_artists out of range")


@dataclass(frozen=True)
class PrecomputedTop:
    """Precomputed answers (format 2), -1 padded where the catalog runs out:

    - ``recommend_top`` (U, Nr) int32 / ``recommend_top_scores`` (U, Nr) float32: each user's best
      artists, seen ones excluded, best first, exactly as the serving search ranks them.
    - ``similar_top`` (A, Ns) int32 / ``similar_top_scores`` (A, Ns) float32: each artist's most
      similar artists, itself excluded.
    """

    recommend_top: np.ndarray
    recommend_top_scores: np.ndarray
    similar_top: np.ndarray
    similar_top_scores: np.ndarray

    def check(self, artifacts: ModelArtifacts, recommend_n: int, similar_n: int) -> None:
        """Raise ValueError unless shapes, dtypes and index ranges fit ``artifacts``."""
        u, a = artifacts.num_users, artifacts.num_artists
        for name, rows, n in (("recommend_top", u, recommend_n), ("similar_top", a, similar_n)):
            top, scores = getattr(self, name), getattr(self, name + "_scores")
            if top.shape != (rows, n) or top.dtype.kind != "i":
                raise ValueError(f"{name} has shape {top.shape} and dtype {top.dtype}, expected ({rows}, {n}) int")
            if scores.shape != (rows, n) or scores.dtype.kind != "f":
                raise ValueError(f"{name}_scores has shape {scores.shape} and dtype {scores.dtype}, "
                                 f"expected ({rows}, {n}) float")
            if top.size and (top.min() < -1 or top.max() >= a):
                raise ValueError(f"{name} holds artist indices out of range")


@dataclass(frozen=True)
class BuiltIndexes:
    """What a publisher hands ``publish_version`` beside the model's arrays (made by
    ``ranking.build_indexes``; the store only writes it down):

    - ``recommend_index``: angular Annoy index over the A artists' augmented score vectors
      (F + 2 dims); ``similar_index``: angular Annoy index over the (A, F) artist factors. Built
      and not yet saved: the writer saves them into the version directory. Either is None for a
      side built without an Annoy index (its config says so: ``SearchConfig.has_index`` False,
      method "exact"; format 4).
    - ``recommend`` / ``similar``: each search's settings and measured figures (the manifest's
      ``recommend_search`` / ``similar_search``).
    - ``top``: the precomputed lists; ``precomputed``: how they were made.
    """

    recommend: SearchConfig
    similar: SearchConfig
    recommend_index: AnnoyIndex | None
    similar_index: AnnoyIndex | None
    top: PrecomputedTop
    precomputed: PrecomputedConfig

    def check(self, artifacts: ModelArtifacts) -> None:
        """Raise ValueError unless the indexes and lists were built for ``artifacts`` and each
        side holds an index exactly when its config says it has one."""
        for name, index, config in (("recommend", self.recommend_index, self.recommend),
                                    ("similar", self.similar_index, self.similar)):
            if (index is not None) != config.has_index:
                raise ValueError(f"{name} config has n_trees {config.n_trees} but the index is "
                                 f"{'missing' if index is None else 'built'}")
            if not config.has_index and config.method != "exact":
                raise ValueError(f"{name} has no Annoy index, so its method must be 'exact', got {config.method!r}")
            if index is not None and (index.get_n_items() != artifacts.num_artists or index.f != config.dims):
                raise ValueError(f"{name} index has {index.get_n_items()} items of {index.f} dims, expected "
                                 f"{artifacts.num_artists} of {config.dims}")
        self.top.check(artifacts, self.precomputed.recommend_n, self.precomputed.similar_n)
