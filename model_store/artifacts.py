"""The arrays that make up a trained model, as they are written to and read from a version."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    def check(self) -> None:
        """Raise ValueError unless every array has the dtype and shape the contract requires."""
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
        if len(set(self.user_ids.tolist())) != u:
            raise ValueError("user_ids are not unique")
        if len(set(self.artist_ids.tolist())) != a:
            raise ValueError("artist_ids are not unique")
