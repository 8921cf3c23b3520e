"""The index service's side of the play log: RecordPlays, GetUserPlays and ForgetUser, and the
tailer that keeps this replica's ``LiveState`` current (no gRPC here).

A write answers once the log made it durable, then applies the plays to this replica's state at
once (so its next Recommend reflects them); other replicas read them from the log within a poll
interval. Writes that arrive while a commit is in progress are committed together in the next
transaction (a group commit: one disk flush for all of them, each still answered only after it),
so concurrent writers do not queue one flush each. The tailer runs on the event loop and does its blocking reads, and the re-fits of the
listeners they touched, in worker threads, off the request path. Reads and writes use separate
connections, so a tailer read never waits behind a commit.

A log that cannot be reached fails writes with UNAVAILABLE (nothing recorded) and leaves
recommendations as they are; the tailer retries every poll and catches up when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from index_service.holder import ModelHolder
from index_service.live import LiveState, PlaysRecorded, UserPlays, recorded_changes, unknown_artists
from musicrec.rpc.errors import FailedPrecondition, InvalidArgument, ServiceError, Unavailable
from play_log import (
    InvalidPlay,
    validate_plays,
    Play,
    PlayLog,
    PlayLogError,
    PlayLogUnavailable,
    SchemaTooNew,
    UserForgotten,
    open_play_log,
)
from play_log.store import redact

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 0.1
# Changes read per tailer query: a backlog is read in pieces of this size, without sleeping between.
READ_BATCH = 10_000
# Most plays one group commit takes (requests beyond wait for the next): keeps transactions short.
GROUP_COMMIT_PLAYS = 10_000
# At most one "cannot reach the play log" warning per this many seconds.
WARN_EVERY_S = 30.0


def service_error(error: PlayLogError) -> ServiceError:
    """The status a client gets for a play-log error."""
    if isinstance(error, InvalidPlay):
        return InvalidArgument(error.message)
    if isinstance(error, SchemaTooNew):
        return FailedPrecondition(error.message)
    return Unavailable(error.message)


class LiveLog:
    """The play log at ``url`` for this replica. ``await start()`` before use, ``await stop()``."""

    def __init__(self, url: str, holder: ModelHolder, state: LiveState,
                 poll_interval_s: float = DEFAULT_POLL_INTERVAL_S):
        if not poll_interval_s > 0:
            raise ValueError(f"the play log poll interval must be positive, got {poll_interval_s}")
        self.url = url
        self.where = redact(url)
        self.holder = holder
        self.state = state
        self.poll_interval_s = poll_interval_s
        self._writer: PlayLog | None = None
        self._reader: PlayLog | None = None
        self._task: asyncio.Task | None = None
        self._warned_at = float("-inf")
        # Requests waiting for the next group commit: (request id, plays, the future answering it).
        self._pending: list[tuple[str, Sequence[Play], asyncio.Future]] = []
        self._committing = False

    async def start(self) -> None:
        """Open the log (creating its schema) and start tailing. A log that cannot be reached
        now is opened by the tailer later; a schema newer than this code, or a bad URL, raises."""
        try:
            await self._open()
        except PlayLogUnavailable as exc:
            self._warn(f"{exc.message}; recording plays fails until it can be reached")
        self._task = asyncio.create_task(self._tail(), name="play-log-tailer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for store in (self._writer, self._reader):
            if store is not None:
                await asyncio.to_thread(store.close)
        self._writer = self._reader = None

    async def _open(self) -> None:
        if self._writer is None:
            self._writer = await asyncio.to_thread(open_play_log, self.url)
        if self._reader is None:
            self._reader = await asyncio.to_thread(open_play_log, self.url)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("play log %s: %s", self.where, message)

    def _store(self) -> PlayLog:
        if self._writer is None:
            raise Unavailable(f"the play log {self.where} cannot be reached yet; retry later")
        return self._writer

    async def record(self, request_id: str, plays: Sequence[Play]) -> PlaysRecorded:
        """Make ``plays`` durable (in the next group commit), then live on this replica."""
        self._store()
        try:
            validate_plays(request_id, plays)
        except InvalidPlay as error:
            raise service_error(error) from None
        answer: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((request_id, plays, answer))
        if not self._committing:
            self._committing = True
            asyncio.create_task(self._commit_pending(), name="play-log-group-commit")
        recorded = await answer
        if not recorded.duplicate:
            self.state.plays.apply(recorded_changes(recorded.first_position, plays))
        served = self.holder.current
        unknown = unknown_artists(served.model, plays) if served is not None else ()
        return PlaysRecorded(recorded.count, recorded.first_position, recorded.last_position,
                             recorded.duplicate, unknown)

    async def _commit_pending(self) -> None:
        """Commit what is pending, in groups, until nothing is; answer each request's future."""
        try:
            while self._pending:
                group, total = [], 0
                while self._pending and (not group or total + len(self._pending[0][1]) <= GROUP_COMMIT_PLAYS):
                    group.append(self._pending.pop(0))
                    total += len(group[-1][1])
                try:
                    results = await asyncio.to_thread(self._store().record_many, [(r, p) for r, p, _ in group])
                except PlayLogError as error:
                    outcome = [service_error(error)] * len(group)
                except Exception as error:  # noqa: BLE001 - each waiting request gets it (INTERNAL)
                    outcome = [error] * len(group)
                else:
                    outcome = results
                for (_, _, answer), result in zip(group, outcome):
                    if answer.done():  # the caller went away (cancelled); the plays are durable
                        continue
                    if isinstance(result, BaseException):
                        answer.set_exception(result)
                    else:
                        answer.set_result(result)
        finally:
            self._committing = False

    async def user_plays(self, user_id: str) -> UserPlays:
        """``user_id``'s plays after the served version's mark."""
        if not user_id:
            raise InvalidArgument("user_id is required")
        store = self._store()
        served = self.holder.current
        mark = served.model.manifest.play_log_position if served is not None else 0
        try:
            plays = await asyncio.to_thread(store.user_plays, user_id, mark)
        except PlayLogError as error:
            raise service_error(error) from None
        return UserPlays(tuple(plays), served.version if served is not None else 0, mark)

    async def forget(self, user_id: str) -> tuple[UserForgotten, int]:
        """Delete ``user_id``'s plays from the log and their live state here (other replicas
        drop it when their tailer reads the forget)."""
        if not user_id:
            raise InvalidArgument("user_id is required")
        store = self._store()
        try:
            forgotten, deleted = await asyncio.to_thread(store.forget_user, user_id)
        except PlayLogError as error:
            raise service_error(error) from None
        self.state.plays.apply([forgotten])
        return forgotten, deleted

    async def _tail(self) -> None:
        while True:
            try:
                more = await self._tail_once()
            except PlayLogUnavailable as exc:
                self._warn(exc.message)
                more = False
            except Exception:  # noqa: BLE001 - the tailer must survive; the next pass retries
                log.exception("reading the play log %s failed", self.where)
                more = False
            if not more:
                await asyncio.sleep(self.poll_interval_s)

    async def _tail_once(self) -> bool:
        """One read; True when there may be more to read at once."""
        await self._open()
        served = self.holder.current
        if served is None:
            return False
        self.state.follow(served.model.manifest.play_log_position)
        changes = await asyncio.to_thread(self._reader.changes_since, self.state.position, READ_BATCH)
        if not changes:
            return False
        touched = self.state.plays.apply(changes)
        self.state.position = changes[-1].position
        if touched:
            await asyncio.to_thread(self._refit, touched)
        return len(changes) == READ_BATCH

    def _refit(self, user_ids: set[str]) -> None:
        try:
            served = self.holder.acquire()
        except ServiceError:
            return
        with served as model:
            self.state.listeners.refit(model, user_ids)
