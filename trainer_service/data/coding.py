"""Coding string-keyed rows as ``Interactions``, and checking an ``Interactions``' invariants.

Ids are ordered numerically when every id of a kind is a canonical non-negative integer ("2" before
"10"), lexicographically otherwise, so the coding does not depend on the order of the rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer_service.data.columns import Catalog
from trainer_service.data.errors import DataError
from trainer_service.data.interactions import Interactions

_CANONICAL_INTEGER = r"0|[1-9][0-9]{0,17}"


def code_ids(values: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(codes (N,) int32, ids (K,) unicode) with ids sorted (see the module docstring): how every
    loader and the play-log merge code ids."""
    if pa.types.is_string(values.type) and sum(chunk.nbytes for chunk in values.chunks) >= 2**31 - 2**20:
        values = values.cast(pa.large_string())  # one combined chunk must fit 32-bit offsets
    encoded = values.combine_chunks().dictionary_encode()
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    uniques = encoded.dictionary
    if bool(pc.all(pc.match_substring_regex(uniques, f"^({_CANONICAL_INTEGER})$")).as_py() or len(uniques) == 0):
        order = np.argsort(pc.cast(uniques, pa.int64()).to_numpy(zero_copy_only=False), kind="stable")
    else:
        order = pc.array_sort_indices(uniques).to_numpy(zero_copy_only=False)  # code point order
    rank = np.empty(order.size, dtype=np.int32)
    rank[order] = np.arange(order.size, dtype=np.int32)
    ids = np.asarray(uniques.take(pa.array(order)).to_numpy(zero_copy_only=False), dtype=str)
    if ids.size == 0:
        ids = ids.astype("<U1")
    return rank[indices], ids


def float32_weights(summed: np.ndarray, pair: Callable[[int], tuple[str, str]], shown: str) -> np.ndarray:
    """(N,) float32 of the summed (N,) float64 weights; ``DataError`` naming the (user id,
    artist id) ``pair(i)`` of the first row whose sum does not fit."""
    with np.errstate(over="ignore"):  # an overflow becomes inf, found and named just below
        coded = summed.astype(np.float32)
    overflow = np.flatnonzero(~np.isfinite(coded))
    if overflow.size:
        i = int(overflow[0])
        user, artist = pair(i)
        raise DataError(f"{shown}: the weight of user {user!r} and artist {artist!r} ({summed[i]:.3g}) "
                        "does not fit in float32")
    return coded


def build_interactions(
    users: pa.ChunkedArray,
    artists: pa.ChunkedArray,
    weights: np.ndarray,
    *,
    source: str,
    shown: str,
    catalog: Catalog | None = None,
) -> Interactions:
    """Codes rows as ``Interactions``: rows with weight 0 dropped, duplicates of a pair summed, rows
    sorted by (user, artist), names from ``catalog`` ("" where it has none).

    ``users``, ``artists``: (N,) string ids; ``weights``: (N,) float64, finite and >= 0 (checked by
    the caller). ``shown`` names the data in the ``DataError`` raised when nothing is left.
    """
    if len(users) == 0:
        raise DataError(f"{shown}: no interactions: no data rows")
    positive = weights > 0
    if not positive.all():
        if not positive.any():
            raise DataError(f"{shown}: no interactions: all {len(users):,} rows have weight 0")
        keep = pa.array(positive)
        users = users.filter(keep)
        artists = artists.filter(keep)
        weights = weights[positive]
    user_codes, user_ids = code_ids(users)
    artist_codes, artist_ids = code_ids(artists)
    key = user_codes.astype(np.int64) * artist_ids.size + artist_codes
    if key.size > 1 and not bool(np.all(key[1:] > key[:-1])):
        key, inverse = np.unique(key, return_inverse=True)
        summed = np.bincount(inverse.reshape(-1), weights=weights, minlength=key.size)
        del inverse
        user_codes = (key // artist_ids.size).astype(np.int32)
        artist_codes = (key % artist_ids.size).astype(np.int32)
    else:
        summed = weights
    coded = float32_weights(summed, lambda i: (user_ids[user_codes[i]], artist_ids[artist_codes[i]]), shown)
    names = catalog.lookup(artist_ids) if catalog is not None else np.full(artist_ids.size, "", dtype="<U1")
    return Interactions(
        user_ids=user_ids,
        artist_ids=artist_ids,
        artist_names=names,
        users=np.ascontiguousarray(user_codes, dtype=np.int32),
        artists=np.ascontiguousarray(artist_codes, dtype=np.int32),
        weights=coded,
        source=source,
    )


def check_interactions(data: Interactions) -> None:
    """Raises ``ValueError`` naming the first broken invariant of ``Interactions`` (see its
    docstring): shapes and dtypes, unique ids, rows sorted by (user, artist) with each pair once,
    finite positive weights, every user and artist used, sound tags."""
    U, A, N = data.num_users, data.num_artists, data.num_interactions
    for name in ("user_ids", "artist_ids", "artist_names"):
        array = getattr(data, name)
        if array.ndim != 1 or array.dtype.kind != "U":
            raise ValueError(f"{name} must be a 1-D unicode array, got {array.dtype} {array.shape}")
    if data.artist_names.shape != (A,):
        raise ValueError(f"artist_names has shape {data.artist_names.shape}, expected ({A},)")
    for name, dtype in (("users", np.int32), ("artists", np.int32), ("weights", np.float32)):
        array = getattr(data, name)
        if array.dtype != dtype or array.shape != (N,):
            raise ValueError(f"{name} must be ({N},) {np.dtype(dtype)}, got {array.dtype} {array.shape}")
    if np.unique(data.user_ids).size != U or np.unique(data.artist_ids).size != A:
        raise ValueError("user_ids and artist_ids must be unique")
    if N == 0:
        raise ValueError("no interactions")
    if data.users.min() < 0 or data.users.max() >= U or data.artists.min() < 0 or data.artists.max() >= A:
        raise ValueError("an index is out of range")
    key = data.users.astype(np.int64) * A + data.artists
    if not bool(np.all(key[1:] > key[:-1])):
        raise ValueError("rows must be sorted by (user, artist) with each pair once")
    if not bool(np.all(np.isfinite(data.weights))) or not bool(np.all(data.weights > 0)):
        raise ValueError("weights must be finite and > 0")
    if np.bincount(data.users, minlength=U).min() < 1 or np.bincount(data.artists, minlength=A).min() < 1:
        raise ValueError("every user and every artist must have an interaction")
    if data.tags is not None:
        data.tags.check(A)
