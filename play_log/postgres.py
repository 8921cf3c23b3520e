"""The play log in PostgreSQL (psycopg 3), for index replicas on many hosts.

Positions come from an identity column. An identity value is taken at insert, not at commit, so
two concurrent writers could commit positions out of order and a reader that had passed the
higher one would never see the lower: each write takes the table's EXCLUSIVE lock (readers are
not blocked), which makes commit order position order. Commits are durable before ``record``
returns (``synchronous_commit`` as the server has it: keep the default, ``on``).

One connection per instance, guarded by a lock; a connection that fails is dropped and a new one
is opened on the next call, so a database restart costs the calls made while it is down
(``PlayLogUnavailable``), not the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import psycopg

from play_log.changes import (
    SELECT_CHANGES,
    SELECT_PLAY_COLUMNS,
    Change,
    Play,
    PlayColumns,
    PlayRecorded,
    Recorded,
    UserForgotten,
    change_from_row,
    validate_plays,
)
from play_log.errors import PlayLogUnavailable, SchemaTooNew
from play_log.store import DEFAULT_READ_LIMIT, PlayLog, redact

SCHEMA_VERSION = 1
CONNECT_TIMEOUT_S = 5
# Serializes schema migrations of processes starting together (an arbitrary, fixed key).
_MIGRATION_LOCK_KEY = 0x706C61796C6F67  # "playlog"

MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE play_log_changes (
               position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               kind TEXT NOT NULL CHECK (kind IN ('play', 'forget')),
               user_id TEXT NOT NULL,
               artist_id TEXT,
               plays DOUBLE PRECISION,
               time_s DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX play_log_changes_by_user ON play_log_changes (user_id, position)",
        """CREATE TABLE play_log_requests (
               request_id TEXT PRIMARY KEY,
               count INTEGER NOT NULL,
               first_position BIGINT NOT NULL,
               last_position BIGINT NOT NULL)""",
    ),
]
assert len(MIGRATIONS) == SCHEMA_VERSION



class PostgresPlayLog(PlayLog):
    """The log in the PostgreSQL database at ``url`` (tables ``play_log_*``, created when missing)."""

    def __init__(self, url: str):
        self.url = url
        self.where = redact(url)
        self._lock = threading.Lock()
        self._connection: psycopg.Connection | None = None
        self._closed = False
        with self._lock:
            self._run(self._migrate)

    def _connect(self) -> psycopg.Connection:
        if self._closed:
            raise PlayLogUnavailable(f"the play log {self.where} is closed")
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        return self._connection

    def _run(self, work):
        """``work(connection)`` inside one transaction; a failed connection is dropped."""
        try:
            connection = self._connect()
            with connection.transaction():
                return work(connection)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            raise PlayLogUnavailable(f"cannot reach the play log {self.where}: {str(exc).strip()}") from exc

    def _migrate(self, connection: psycopg.Connection) -> None:
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        connection.execute("CREATE TABLE IF NOT EXISTS play_log_schema (version INTEGER NOT NULL)")
        row = connection.execute("SELECT version FROM play_log_schema").fetchone()
        found = 0 if row is None else row[0]
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(found, SCHEMA_VERSION, self.where)
        for statements in MIGRATIONS[found:]:
            for statement in statements:
                connection.execute(statement)
        if row is None:
            connection.execute("INSERT INTO play_log_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        else:
            connection.execute("UPDATE play_log_schema SET version = %s", (SCHEMA_VERSION,))

    def _locked(self, work):
        with self._lock:
            return self._run(work)

    def record_many(self, requests: Sequence[tuple[str, Sequence[Play]]]) -> list[Recorded]:
        for request_id, plays in requests:
            validate_plays(request_id, plays)

        def work(connection: psycopg.Connection) -> list[Recorded]:
            connection.execute("LOCK TABLE play_log_changes IN EXCLUSIVE MODE")
            return [self._record_one(connection, request_id, plays) for request_id, plays in requests]

        return self._locked(work)

    @staticmethod
    def _record_one(connection: psycopg.Connection, request_id: str, plays: Sequence[Play]) -> Recorded:
        if request_id:
            row = connection.execute(
                "SELECT count, first_position, last_position FROM play_log_requests WHERE request_id = %s",
                (request_id,)).fetchone()
            if row is not None:
                return Recorded(row[0], row[1], row[2], duplicate=True)
        positions = connection.execute(
            "INSERT INTO play_log_changes (kind, user_id, artist_id, plays, time_s) "
            "SELECT 'play', * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[]) "
            "RETURNING position",
            ([p.user_id for p in plays], [p.artist_id for p in plays],
             [float(p.plays) for p in plays], [float(p.time_s) for p in plays])).fetchall()
        values = [row[0] for row in positions]
        recorded = Recorded(len(plays), min(values), max(values))
        if request_id:
            connection.execute("INSERT INTO play_log_requests VALUES (%s, %s, %s, %s)",
                               (request_id, recorded.count, recorded.first_position, recorded.last_position))
        return recorded

    def changes_since(self, position: int, limit: int = DEFAULT_READ_LIMIT,
                      through: int | None = None) -> list[Change]:
        def work(connection: psycopg.Connection) -> list[Change]:
            if through is None:
                rows = connection.execute(f"{SELECT_CHANGES} WHERE position > %s ORDER BY position LIMIT %s",
                                          (position, limit)).fetchall()
            else:
                rows = connection.execute(
                    f"{SELECT_CHANGES} WHERE position > %s AND position <= %s ORDER BY position LIMIT %s",
                    (position, through, limit)).fetchall()
            return [change_from_row(row) for row in rows]

        return self._locked(work)

    def plays_through(self, through: int, after: int = 0) -> PlayColumns:
        def work(connection: psycopg.Connection) -> PlayColumns:
            return PlayColumns.from_rows(connection.execute(
                f"{SELECT_PLAY_COLUMNS} AND position > %s AND position <= %s ORDER BY position",
                (after, through)).fetchall())

        return self._locked(work)

    def last_position(self) -> int:
        # The identity's last value, not max(position): a forget may have deleted the newest rows.
        def work(connection: psycopg.Connection) -> int:
            row = connection.execute(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM "
                "play_log_changes_position_seq").fetchone()
            return int(row[0])

        return self._locked(work)

    def user_plays(self, user_id: str, after: int = 0) -> list[PlayRecorded]:
        def work(connection: psycopg.Connection) -> list[PlayRecorded]:
            rows = connection.execute(
                f"{SELECT_CHANGES} WHERE user_id = %s AND kind = 'play' AND position > %s ORDER BY position",
                (user_id, after)).fetchall()
            return [change_from_row(row) for row in rows]

        return self._locked(work)

    def forget_user(self, user_id: str) -> tuple[UserForgotten, int]:
        def work(connection: psycopg.Connection) -> tuple[UserForgotten, int]:
            connection.execute("LOCK TABLE play_log_changes IN EXCLUSIVE MODE")
            deleted = connection.execute("DELETE FROM play_log_changes WHERE user_id = %s AND kind = 'play'",
                                         (user_id,)).rowcount
            position = connection.execute(
                "INSERT INTO play_log_changes (kind, user_id, time_s) VALUES ('forget', %s, %s) RETURNING position",
                (user_id, time.time())).fetchone()[0]
            return UserForgotten(position, user_id), deleted

        return self._locked(work)

    def forgotten_users(self, through: int) -> set[str]:
        def work(connection: psycopg.Connection) -> set[str]:
            rows = connection.execute(
                "SELECT DISTINCT user_id FROM play_log_changes WHERE kind = 'forget' AND position <= %s",
                (through,)).fetchall()
            return {row[0] for row in rows}

        return self._locked(work)

    def schema_version(self) -> int:
        return self._locked(lambda connection: connection.execute("SELECT version FROM play_log_schema").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None
