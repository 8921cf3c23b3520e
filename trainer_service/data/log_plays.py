"""Training data = a source + the play log: the plays the index services recorded, through a
position taken when the training starts (no gRPC, no TensorFlow here).

The log's plays become interactions beside the source's (a listener or artist the source does
not have becomes a new row of the model; plays of a pair are summed), and every listener
forgotten through that position (``ForgetUser``) loses their rows from the source: their log
plays before the forget are already deleted, and plays recorded after it are a new history and
kept. The version records the position (``data.play_log_position``), so the index services
overlay only the plays after it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from play_log import PlayLog, PlayRecorded
from trainer_service.data.coding import build_interactions
from trainer_service.data.columns import Catalog
from trainer_service.data.errors import DataError
from trainer_service.data.interactions import Interactions
from trainer_service.data.tags import carry_tags

# Changes read per query while reading the log through the mark.
READ_BATCH = 100_000


def read_through(log: PlayLog, through: int) -> tuple[list[PlayRecorded], set[str]]:
    """Every play in ``log`` at positions <= ``through``, oldest first, and the listeners
    forgotten at or before it."""
    plays: list[PlayRecorded] = []
    position = 0
    while True:
        changes = log.changes_since(position, READ_BATCH, through=through)
        if not changes:
            break
        plays += [change for change in changes if isinstance(change, PlayRecorded)]
        position = changes[-1].position
    return plays, log.forgotten_users(through)


def with_log_plays(data: Interactions, plays: list[PlayRecorded], forgotten: set[str], through: int) -> Interactions:
    """``data`` without the rows of ``forgotten`` listeners, plus ``plays``, coded anew (artist
    names and tags kept from ``data``; artists only the log knows have none). ``DataError`` when nothing
    is left."""
    keep = np.ones(data.num_interactions, dtype=bool)
    if forgotten:
        gone = np.isin(data.user_ids, np.array(sorted(forgotten), dtype=str))
        keep = ~gone[data.users]
    users = np.concatenate((data.user_ids[data.users[keep]], np.array([p.play.user_id for p in plays], dtype=str)))
    artists = np.concatenate((data.artist_ids[data.artists[keep]],
                              np.array([p.play.artist_id for p in plays], dtype=str)))
    weights = np.concatenate((data.weights[keep].astype(np.float64),
                              np.array([p.play.plays for p in plays], dtype=np.float64)))
    source = f"{data.source} + play log through position {through}"
    if users.size == 0:
        raise DataError(f"{source}: no interactions left")
    coded = build_interactions(pa.chunked_array([pa.array(users, pa.string())]),
                               pa.chunked_array([pa.array(artists, pa.string())]), weights,
                               source=source, shown=source,
                               catalog=Catalog(ids=pa.array(data.artist_ids, pa.string()),
                                               names=pa.array(data.artist_names, pa.string())))
    return dataclasses.replace(coded, tags=carry_tags(data.tags, data.artist_ids, coded.artist_ids))
