"""The training data every loader produces: integer-coded user-artist interactions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from model_store.artifacts import ArtistTags


@dataclass(frozen=True)
class Interactions:
    """Distinct (user, artist, weight) interactions, coded as integer indices.

    Shapes (U users, A artists, N interactions):

    - ``user_ids``: (U,) unicode, unique; ``artist_ids``: (A,) unicode, unique;
      ``artist_names``: (A,) unicode ("" when the catalog has no name).
    - ``users``, ``artists``: (N,) int32 indices into ``user_ids`` / ``artist_ids``;
      ``weights``: (N,) float32, finite and > 0 (play counts; duplicates of a pair are summed).
      Rows are sorted by (user, artist) and each pair occurs once.
    - ``source``: a human-readable description of where the data came from.
    - ``tags``: the artists' tags, rows aligned with ``artist_ids`` (``trainer_service.data.tags``),
      or None when the source carries none. Not part of the fingerprint: they do not change the
      trained factors.

    Every user and every artist has at least one interaction.
    """

    user_ids: np.ndarray
    artist_ids: np.ndarray
    artist_names: np.ndarray
    users: np.ndarray
    artists: np.ndarray
    weights: np.ndarray
    source: str
    tags: ArtistTags | None = None

    @property
    def num_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def num_artists(self) -> int:
        return int(self.artist_ids.shape[0])

    @property
    def num_interactions(self) -> int:
        return int(self.users.shape[0])

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr (U + 1,) int64, indices (N,) int32): each user's artists, sorted. Rows are
        already sorted by (user, artist), so this is a bincount and a view."""
        counts = np.bincount(self.users, minlength=self.num_users)
        indptr = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr, self.artists

    def listeners_per_artist(self) -> np.ndarray:
        """(A,) int32: number of distinct users per artist."""
        return np.bincount(self.artists, minlength=self.num_artists).astype(np.int32)

    def fingerprint(self) -> str:
        """SHA-256 (hex) over ids, names, interactions and weights: equal data, equal fingerprint."""
        digest = hashlib.sha256()
        for array in (self.user_ids, self.artist_ids, self.artist_names):
            digest.update("\x1f".join(array.tolist()).encode("utf-8"))
            digest.update(b"\x1e")
        for array in (self.users, self.artists, self.weights):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
