"""The play log's interface, and ``open_play_log(url)`` choosing a store by URL.

The shape follows event-sourcing recorders: append a batch atomically; read changes from a
position with a limit; the last position. A position is a commit-ordered sequence number: a
reader that has seen every change through position N never later finds one at or below N, so
"trained through N" (recorded in a model version) splits the log exactly.

Every method blocks (the stores are synchronous libraries); callers on an event loop run them in
a thread. An instance is safe to share between threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from urllib.parse import urlsplit

from play_log.changes import Change, Play, PlayColumns, PlayRecorded, Recorded, UserForgotten

# Most changes one read returns unless asked for fewer.
DEFAULT_READ_LIMIT = 10_000


class PlayLog(ABC):
    """An append-only log of plays with positions, shared by the processes that open its URL."""

    #: Where the log is, for messages (a PostgreSQL URL without its password).
    where: str

    def record(self, request_id: str, plays: Sequence[Play]) -> Recorded:
        """Append ``plays`` in one transaction and return once they are durable.

        A non-empty ``request_id`` recorded before is not recorded again: the answer repeats the
        first recording's figures with ``duplicate=True``. Raises ``InvalidPlay`` (nothing
        recorded) or ``PlayLogUnavailable``."""
        return self.record_many([(request_id, plays)])[0]

    @abstractmethod
    def record_many(self, requests: Sequence[tuple[str, Sequence[Play]]]) -> list[Recorded]:
        """``record`` for each (request id, plays), in order, all in ONE transaction (one commit:
        a group commit of requests that arrived together). Every request is checked before
        anything is written: one bad request raises ``InvalidPlay`` and nothing is recorded."""

    @abstractmethod
    def changes_since(self, position: int, limit: int = DEFAULT_READ_LIMIT,
                      through: int | None = None) -> list[Change]:
        """Changes after ``position`` (and at most ``through``), oldest first, at most ``limit``."""

    @abstractmethod
    def plays_through(self, through: int, after: int = 0) -> PlayColumns:
        """Every play at positions after ``after`` and at most ``through``, oldest first, as
        columns, read in one statement (one snapshot of the log)."""

    @abstractmethod
    def last_position(self) -> int:
        """The position of the newest change (0 for an empty log)."""

    @abstractmethod
    def user_plays(self, user_id: str, after: int = 0) -> list[PlayRecorded]:
        """``user_id``'s plays after position ``after``, oldest first."""

    @abstractmethod
    def forget_user(self, user_id: str) -> tuple[UserForgotten, int]:
        """Delete every play of ``user_id`` and append a ``UserForgotten`` (so readers drop what
        they derived from them); return it and how many plays were deleted."""

    @abstractmethod
    def forgotten_users(self, through: int) -> set[str]:
        """Users with a ``UserForgotten`` at or before position ``through``."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the log is at."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Further calls raise."""

    def __enter__(self) -> "PlayLog":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def redact(url: str) -> str:
    """``url`` without a password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_play_log(url: str) -> PlayLog:
    """Open (creating or migrating its schema) the log at ``url``: ``sqlite:///PATH`` (a path
    relative to the working directory after the third slash, ``sqlite:////abs/path`` absolute)
    or ``postgresql://user:password@host:port/database``. Raises ``ValueError`` for a URL of
    another kind, ``PlayLogUnavailable`` when the store cannot be reached, ``SchemaTooNew``."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from play_log.sqlite import SqlitePlayLog

        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(f"a SQLite play log URL is sqlite:///PATH, got {url!r}")
        return SqlitePlayLog(url[len(prefix):])
    if scheme in ("postgresql", "postgres"):
        from play_log.postgres import PostgresPlayLog

        return PostgresPlayLog(url)
    raise ValueError(f"unknown play log URL {redact(url)!r}: expected sqlite:///PATH or postgresql://...")
