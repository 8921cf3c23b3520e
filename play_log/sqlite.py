"""The embedded play log: one SQLite file in WAL mode, shared by every process on one host.

Durability: ``synchronous=FULL`` makes each commit reach the disk before ``record`` returns (WAL's
``NORMAL`` may lose the last commits at a power cut, which would lose acknowledged plays).
Writers are serialized by SQLite (``BEGIN IMMEDIATE``), so positions (an AUTOINCREMENT rowid,
never reused even after a forget deletes the newest rows) follow commit order. WAL needs every
process on one host sharing a local file; across hosts use PostgreSQL.

A log file deleted or replaced under a running process is not written to: SQLite would go on
writing the unlinked file, acknowledging plays nobody else sees, so each write first checks that
the path still names the file that was opened, and answers ``PlayLogUnavailable`` otherwise.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

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
from play_log.store import DEFAULT_READ_LIMIT, PlayLog

SCHEMA_VERSION = 1
# How long a writer waits for another process's transaction before giving up, in seconds.
BUSY_TIMEOUT_S = 5.0

# Statements that take a log from version N-1 to N (index N-1). Append; never edit a released one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE play_log_changes (
               position INTEGER PRIMARY KEY AUTOINCREMENT,
               kind TEXT NOT NULL CHECK (kind IN ('play', 'forget')),
               user_id TEXT NOT NULL,
               artist_id TEXT,
               plays REAL,
               time_s REAL NOT NULL)""",
        "CREATE INDEX play_log_changes_by_user ON play_log_changes (user_id, position)",
        """CREATE TABLE play_log_requests (
               request_id TEXT PRIMARY KEY,
               count INTEGER NOT NULL,
               first_position INTEGER NOT NULL,
               last_position INTEGER NOT NULL)""",
    ),
]
assert len(MIGRATIONS) == SCHEMA_VERSION



class SqlitePlayLog(PlayLog):
    """The log in the SQLite file ``path`` (created with its directory when missing)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.where = f"sqlite:///{self.path}"
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                               check_same_thread=False)
            self._identity = self._file_identity()
            self._set_up()
        except (sqlite3.Error, OSError) as exc:
            raise PlayLogUnavailable(f"cannot open the play log {self.where}: {exc}") from exc

    def _set_up(self) -> None:
        """WAL mode and the schema. Switching a new file to WAL needs the file to itself, and
        SQLite answers "database is locked" at once, without its busy handler, while another
        connection opens the same new file: retried here for up to ``BUSY_TIMEOUT_S``."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._connection.execute("PRAGMA journal_mode=WAL")
                self._connection.execute("PRAGMA synchronous=FULL")
                self._migrate()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _file_identity(self) -> tuple[int, int]:
        status = os.stat(self.path)
        return status.st_dev, status.st_ino

    def _migrate(self) -> None:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute("CREATE TABLE IF NOT EXISTS play_log_schema (version INTEGER NOT NULL)")
            row = connection.execute("SELECT version FROM play_log_schema").fetchone()
            found = 0 if row is None else row[0]
            if found > SCHEMA_VERSION:
                raise SchemaTooNew(found, SCHEMA_VERSION, self.where)
            for statements in MIGRATIONS[found:]:
                for statement in statements:
                    connection.execute(statement)
            if row is None:
                connection.execute("INSERT INTO play_log_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                connection.execute("UPDATE play_log_schema SET version = ?", (SCHEMA_VERSION,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _check_file(self) -> None:
        try:
            same = self._file_identity() == self._identity
        except OSError:
            same = False
        if not same:
            raise PlayLogUnavailable(f"the play log file {self.path} was removed or replaced; "
                                     "restart the service to open the log anew")

    def _write(self, work):
        """Run ``work(connection)`` in one immediate transaction; map store failures."""
        with self._lock:
            self._check_file()
            connection = self._connection
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = work(connection)
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise PlayLogUnavailable(f"cannot write the play log {self.where}: {exc}") from exc
            return result

    def _read(self, sql: str, parameters: tuple) -> list[tuple]:
        with self._lock:
            try:
                return self._connection.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise PlayLogUnavailable(f"cannot read the play log {self.where}: {exc}") from exc

    def record_many(self, requests: Sequence[tuple[str, Sequence[Play]]]) -> list[Recorded]:
        for request_id, plays in requests:
            validate_plays(request_id, plays)

        def work(connection: sqlite3.Connection) -> list[Recorded]:
            return [self._record_one(connection, request_id, plays) for request_id, plays in requests]

        return self._write(work)

    @staticmethod
    def _record_one(connection: sqlite3.Connection, request_id: str, plays: Sequence[Play]) -> Recorded:
        if request_id:
            row = connection.execute(
                "SELECT count, first_position, last_position FROM play_log_requests WHERE request_id = ?",
                (request_id,)).fetchone()
            if row is not None:
                return Recorded(row[0], row[1], row[2], duplicate=True)
        connection.executemany(
            "INSERT INTO play_log_changes (kind, user_id, artist_id, plays, time_s) VALUES ('play', ?, ?, ?, ?)",
            [(p.user_id, p.artist_id, float(p.plays), float(p.time_s)) for p in plays])
        # One writer at a time and AUTOINCREMENT: these rows are contiguous.
        last = connection.execute("SELECT max(position) FROM play_log_changes").fetchone()[0]
        recorded = Recorded(len(plays), last - len(plays) + 1, last)
        if request_id:
            connection.execute("INSERT INTO play_log_requests VALUES (?, ?, ?, ?)",
                               (request_id, recorded.count, recorded.first_position, recorded.last_position))
        return recorded

    def changes_since(self, position: int, limit: int = DEFAULT_READ_LIMIT,
                      through: int | None = None) -> list[Change]:
        if through is None:
            rows = self._read(f"{SELECT_CHANGES} WHERE position > ? ORDER BY position LIMIT ?", (position, limit))
        else:
            rows = self._read(f"{SELECT_CHANGES} WHERE position > ? AND position <= ? ORDER BY position LIMIT ?",
                              (position, through, limit))
        return [change_from_row(row) for row in rows]

    def plays_through(self, through: int, after: int = 0) -> PlayColumns:
        return PlayColumns.from_rows(self._read(f"{SELECT_PLAY_COLUMNS} AND position > ? AND position <= ? "
                                                "ORDER BY position", (after, through)))

    def last_position(self) -> int:
        # The sequence table remembers the highest position ever given, even if a forget deleted it.
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'play_log_changes'", ())
        return rows[0][0] if rows else 0

    def user_plays(self, user_id: str, after: int = 0) -> list[PlayRecorded]:
        rows = self._read(f"{SELECT_CHANGES} WHERE user_id = ? AND kind = 'play' AND position > ? ORDER BY position",
                          (user_id, after))
        return [change_from_row(row) for row in rows]

    def forget_user(self, user_id: str) -> tuple[UserForgotten, int]:
        def work(connection: sqlite3.Connection) -> tuple[UserForgotten, int]:
            deleted = connection.execute("DELETE FROM play_log_changes WHERE user_id = ? AND kind = 'play'",
                                         (user_id,)).rowcount
            cursor = connection.execute(
                "INSERT INTO play_log_changes (kind, user_id, time_s) VALUES ('forget', ?, ?)", (user_id, time.time()))
            return UserForgotten(cursor.lastrowid, user_id), deleted

        return self._write(work)

    def forgotten_users(self, through: int) -> set[str]:
        rows = self._read("SELECT DISTINCT user_id FROM play_log_changes WHERE kind = 'forget' AND position <= ?",
                          (through,))
        return {row[0] for row in rows}

    def schema_version(self) -> int:
        return self._read("SELECT version FROM play_log_schema", ())[0][0]

    def close(self) -> None:
        with self._lock:
            self._connection.close()
