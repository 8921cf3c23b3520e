"""What a version is made of, as it is written and read: the model's arrays, the lookups, the
precomputed lists, and (when publishing) the built indexes with their search settings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from annoy import AnnoyIndex

from model_store.format import PrecomputedConfig, SearchConfig


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
      (F + 2 dims); ``similar_index``: angular Annoy index over the (A, F) artist factors. Both
      built and not yet saved: the writer saves them into the version directory.
    - ``recommend`` / ``similar``: each search's settings and measured figures (the manifest's
      ``recommend_search`` / ``similar_search``).
    - ``top``: the precomputed lists; ``precomputed``: how they were made.
    """

    recommend: SearchConfig
    similar: SearchConfig
    recommend_index: AnnoyIndex
    similar_index: AnnoyIndex
    top: PrecomputedTop
    precomputed: PrecomputedConfig

    def check(self, artifacts: ModelArtifacts) -> None:
        """Raise ValueError unless the indexes and lists were built for ``artifacts``."""
        for name, index, config in (("recommend", self.recommend_index, self.recommend),
                                    ("similar", self.similar_index, self.similar)):
            if index.get_n_items() != artifacts.num_artists or index.f != config.dims:
                raise ValueError(f"{name} index has {index.get_n_items()} items of {index.f} dims, expected "
                                 f"{artifacts.num_artists} of {config.dims}")
        self.top.check(artifacts, self.precomputed.recommend_n, self.precomputed.similar_n)
