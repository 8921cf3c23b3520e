"""Training data = a source + the play log: the plays the index services recorded, through a
position taken when the training starts (no gRPC, no TensorFlow here).

The log's plays become interactions beside the source's (a listener or artist the source does
not have becomes a new row of the model; plays of a pair are summed), and every listener
forgotten through that position (``ForgetUser``) loses their rows from the source: their log
plays before the forget are already deleted, and plays recorded after it are a new history and
kept. The version records the position (``data.play_log_position``), so the index services
overlay only the plays after it.

The merge is exactly ``build_interactions`` over the source's remaining rows followed by the
log's plays in position order (the same ids in the same order, the same sums added in the same
order, so the same float32 weights), without coding the source's millions of rows again: only
the ids are merged, the source's sorted (user, artist) keys are renumbered, and the few keys the
log touches or adds are summed and inserted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from play_log import PlayColumns, PlayLog, PlayRecorded
from trainer_service.data.coding import code_ids, float32_weights
from trainer_service.data.columns import Catalog
from trainer_service.data.errors import DataError
from trainer_service.data.interactions import Interactions
from trainer_service.data.tags import carry_tags


def read_through(log: PlayLog, through: int) -> tuple[PlayColumns, set[str]]:
    """Every play in ``log`` at positions <= ``through``, oldest first, and the listeners
    forgotten at or before it."""
    return log.plays_through(through), log.forgotten_users(through)


def _merged_ids(ids: np.ndarray, present: np.ndarray, log_ids: pa.Array) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray, bool]:
    """The ids of the merged data, coded as ``build_interactions`` codes them: (ids (K,) sorted,
    new code of each of ``ids`` (-1 where not ``present``), new code of each of ``log_ids``,
    whether the present ids keep their order, so the source's sorted keys stay sorted)."""
    encoded = log_ids.dictionary_encode()
    present_ids = ids[present]
    candidates = pa.chunked_array([pa.array(present_ids, pa.string()), encoded.dictionary], type=pa.string())
    codes, merged = code_ids(candidates)
    source_codes = np.full(ids.size, -1, dtype=np.int64)
    source_codes[present] = codes[:present_ids.size]
    log_codes = codes[present_ids.size:][encoded.indices.to_numpy(zero_copy_only=False)].astype(np.int64)
    return merged, source_codes, log_codes, bool(np.all(np.diff(codes[:present_ids.size]) > 0))


def _sum_in_order(keys: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys, sorted; each key's weights summed in the order given), as
    ``build_interactions`` sums duplicates."""
    if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        keys, inverse = np.unique(keys, return_inverse=True)
        return keys, np.bincount(inverse.reshape(-1), weights=weights, minlength=keys.size)
    return keys, weights


def _merged_keys(source_keys: np.ndarray, source_weights: np.ndarray, log_keys: np.ndarray,
                 log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_sum_in_order`` of the source's rows then the log's, given ``source_keys`` strictly
    increasing: only the source rows whose key the log plays are summed again (each from its
    source weight, then the plays in order), the log's new keys inserted in place."""
    n = source_keys.size
    weights = source_weights.astype(np.float64)
    at = np.searchsorted(source_keys, log_keys)
    hit = np.zeros(log_keys.size, dtype=bool) if n == 0 else \
        (at < n) & (source_keys[np.minimum(at, n - 1)] == log_keys)
    touched = np.unique(at[hit])
    keys, sums = _sum_in_order(np.concatenate((source_keys[touched], log_keys)),
                               np.concatenate((weights[touched], log_weights)))
    at = np.searchsorted(source_keys, keys)
    known = np.zeros(keys.size, dtype=bool) if n == 0 else (at < n) & (source_keys[np.minimum(at, n - 1)] == keys)
    weights[at[known]] = sums[known]
    return np.insert(source_keys, at[~known], keys[~known]), np.insert(weights, at[~known], sums[~known])


def with_log_plays(data: Interactions, plays: PlayColumns | Sequence[PlayRecorded], forgotten: set[str],
                   through: int) -> Interactions:
    """``data`` without the rows of ``forgotten`` listeners, plus ``plays`` (columns, or the
    ``PlayRecorded`` changes), coded anew (artist names and tags kept from ``data``; artists only
    the log knows have none). ``DataError`` when nothing is left."""
    if not isinstance(plays, PlayColumns):
        plays = PlayColumns.of(plays)
    source = f"{data.source} + play log through position {through}"
    users, artists, weights = data.users, data.artists, data.weights
    if forgotten:
        keep = ~np.isin(data.user_ids, np.array(sorted(forgotten), dtype=str))[users]
        users, artists, weights = users[keep], artists[keep], weights[keep]
    log_users = pa.array(plays.user_ids, pa.string())
    log_artists = pa.array(plays.artist_ids, pa.string())
    log_weights = np.asarray(plays.plays, dtype=np.float64)
    if users.size + log_weights.size == 0:
        raise DataError(f"{source}: no interactions left")
    positive = log_weights > 0  # a store holds plays >= 1; as build_interactions, drop any other
    if not positive.all():
        if users.size == 0 and not positive.any():
            raise DataError(f"{source}: no interactions: all {log_weights.size:,} rows have weight 0")
        log_users, log_artists = log_users.filter(pa.array(positive)), log_artists.filter(pa.array(positive))
        log_weights = log_weights[positive]
    user_ids, user_codes, log_user_codes, users_in_order = _merged_ids(
        data.user_ids, np.bincount(users, minlength=data.num_users) > 0, log_users)
    artist_ids, artist_codes, log_artist_codes, artists_in_order = _merged_ids(
        data.artist_ids, np.bincount(artists, minlength=data.num_artists) > 0, log_artists)
    width = artist_ids.size
    source_keys = user_codes[users] * width + artist_codes[artists]
    log_keys = log_user_codes * width + log_artist_codes
    if users_in_order and artists_in_order:  # the source's rows stay sorted by (user, artist)
        keys, summed = _merged_keys(source_keys, weights, log_keys, log_weights)
    else:  # a log id changed the ids' order (a non-numeric id among numeric ones): code it all
        keys, summed = _sum_in_order(np.concatenate((source_keys, log_keys)),
                                     np.concatenate((weights.astype(np.float64), log_weights)))
    coded = float32_weights(summed, lambda i: (user_ids[keys[i] // width], artist_ids[keys[i] % width]), source)
    catalog = Catalog(ids=pa.array(data.artist_ids, pa.string()), names=pa.array(data.artist_names, pa.string()))
    merged = Interactions(user_ids=user_ids, artist_ids=artist_ids, artist_names=catalog.lookup(artist_ids),
                          users=(keys // width).astype(np.int32), artists=(keys % width).astype(np.int32),
                          weights=coded, source=source)
    return dataclasses.replace(merged, tags=carry_tags(data.tags, data.artist_ids, merged.artist_ids))
