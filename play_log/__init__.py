"""The play log: the third contract between the services (beside the protos and the model store).

The index service appends listeners' plays as they arrive (``RecordPlays``) and tails the log to
serve from them; the trainer reads the log up to a position and records that position in the
version it publishes, so each replica overlays only the plays after its served version's mark.

One small interface (``PlayLog``, in ``play_log.store``), two stores behind it: SQLite (the
embedded default: one file that every process on one host shares, WAL mode) and PostgreSQL (for
many hosts). ``open_play_log(url)`` picks the store from the URL (``sqlite:///PATH``,
``postgresql://...``). Each store creates and migrates its own schema and refuses a log written
by a newer schema. This package imports neither service nor gRPC: errors carry the name of the
gRPC status code the services answer with, as ``musicrec.rpc.errors`` does.
"""

from play_log.changes import (
    MAX_ID_CHARS,
    MAX_PLAYS_PER_REQUEST,
    Change,
    Play,
    PlayColumns,
    PlayRecorded,
    Recorded,
    UserForgotten,
    validate_plays,
)
from play_log.errors import InvalidPlay, PlayLogError, PlayLogUnavailable, SchemaTooNew
from play_log.store import PlayLog, open_play_log

__all__ = [
    "MAX_ID_CHARS",
    "MAX_PLAYS_PER_REQUEST",
    "Change",
    "InvalidPlay",
    "Play",
    "PlayLog",
    "PlayLogError",
    "PlayColumns",
    "PlayLogUnavailable",
    "PlayRecorded",
    "Recorded",
    "SchemaTooNew",
    "UserForgotten",
    "open_play_log",
    "validate_plays",
]
