"""What the log holds: plays, and the changes a reader sees in position order.

A ``Play`` is built once where a play enters (the index servicer converts each ``PlayEvent``) and
is stored as is; readers get it back inside a ``PlayRecorded`` with its position. Forgetting a
listener deletes their plays and appends a ``UserForgotten``, so a reader tailing the log learns
to drop that listener's live state, and a training that reads through it leaves them out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from play_log.errors import InvalidPlay

# Longest user or artist id, in characters (the same bound the index service puts on ids).
MAX_ID_CHARS = 256
# Most plays one RecordPlays request may carry: one transaction stays short for the other writers.
MAX_PLAYS_PER_REQUEST = 10_000
# Longest request id, in characters.
MAX_REQUEST_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class Play:
    """``plays`` listens of ``artist_id`` by ``user_id`` at ``time_s`` (Unix seconds)."""

    user_id: str
    artist_id: str
    plays: float
    time_s: float


@dataclass(frozen=True, slots=True)
class PlayRecorded:
    """A play as the log holds it, at ``position`` (positions only grow, in commit order)."""

    position: int
    play: Play


@dataclass(frozen=True, slots=True)
class UserForgotten:
    """At ``position``, every play of ``user_id`` recorded before was deleted."""

    position: int
    user_id: str


Change = PlayRecorded | UserForgotten

# How every store selects changes: the columns ``change_from_row`` reads, in its order.
SELECT_CHANGES = "SELECT position, kind, user_id, artist_id, plays, time_s FROM play_log_changes"
# How every store selects plays as columns: the columns ``PlayColumns.from_rows`` reads, in its order.
SELECT_PLAY_COLUMNS = "SELECT position, user_id, artist_id, plays FROM play_log_changes WHERE kind = 'play'"


@dataclass(frozen=True, slots=True)
class PlayColumns:
    """N plays as columns, oldest first: ``positions``, ``user_ids``, ``artist_ids``, ``plays``
    (lists of N). What a reader of a whole log gets (a training reads every play): one list per
    column instead of two objects per play, which at a million plays is most of the reading time."""

    positions: list[int]
    user_ids: list[str]
    artist_ids: list[str]
    plays: list[float]

    def __len__(self) -> int:
        return len(self.positions)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple]) -> "PlayColumns":
        """The plays of ``SELECT_PLAY_COLUMNS`` rows (position, user_id, artist_id, plays)."""
        if not rows:
            return cls([], [], [], [])
        return cls(*map(list, zip(*rows)))

    @classmethod
    def of(cls, changes: Iterable[Change]) -> "PlayColumns":
        """The plays among ``changes`` (forgets skipped), in their order."""
        return cls.from_rows([(c.position, c.play.user_id, c.play.artist_id, c.play.plays)
                              for c in changes if isinstance(c, PlayRecorded)])


def change_from_row(row: tuple) -> Change:
    """A change from a ``SELECT_CHANGES`` row (position, kind, user_id, artist_id, plays, time_s)."""
    position, kind, user_id, artist_id, plays, time_s = row
    if kind == "forget":
        return UserForgotten(position, user_id)
    return PlayRecorded(position, Play(user_id, artist_id, plays, time_s))


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer to ``record``: ``count`` plays durable at positions ``first_position`` ..
    ``last_position``; ``duplicate`` when the request id had been recorded before (then these
    are the first recording's figures and nothing was written again)."""

    count: int
    first_position: int
    last_position: int
    duplicate: bool = False


def _check_id(value: str, what: str, index: int) -> None:
    if not value:
        raise InvalidPlay(index, f"{what} is empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidPlay(index, f"{what} has {len(value)} characters (at most {MAX_ID_CHARS})")
    if "\x00" in value:
        raise InvalidPlay(index, f"{what} contains a NUL character")


def validate_plays(request_id: str, plays: Sequence[Play]) -> None:
    """Raise ``InvalidPlay`` naming the first bad entry of a request, or the request itself."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidPlay(None, f"request_id has {len(request_id)} characters (at most {MAX_REQUEST_ID_CHARS})")
    if "\x00" in request_id:
        raise InvalidPlay(None, "request_id contains a NUL character")
    if not plays:
        raise InvalidPlay(None, f"no plays: a request records 1 to {MAX_PLAYS_PER_REQUEST:,} plays")
    if len(plays) > MAX_PLAYS_PER_REQUEST:
        raise InvalidPlay(None, f"{len(plays):,} plays in one request (at most {MAX_PLAYS_PER_REQUEST:,})")
    for index, play in enumerate(plays):
        _check_id(play.user_id, "user_id", index)
        _check_id(play.artist_id, "artist_id", index)
        if not math.isfinite(play.plays) or play.plays < 1:
            raise InvalidPlay(index, f"plays must be a finite count >= 1, got {play.plays!r}")
        if not math.isfinite(play.time_s) or play.time_s < 0:
            raise InvalidPlay(index, f"time must be a finite time after 1970, got {play.time_s!r}")
