"""Retraining without a request: every N seconds (``RetrainSchedule``), or once N plays have
arrived in the play log since the newest version's mark (``RetrainOnVolume``).

A tick that finds a job running is skipped (not queued): the running job already produces a
fresh model, and a backlog of ticks would only train the same data again back to back. A tick
that fails to start a job logs the reason and the schedule keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from model_store import InvalidVersionError, list_versions, read_manifest
from play_log import PlayLog, open_play_log
from trainer_service.jobs import Job, JobAlreadyRunningError

log = logging.getLogger(__name__)


class RetrainSchedule:
    """Calls ``start_job()`` every ``interval_s`` seconds (first call one interval after
    ``run()`` starts) until cancelled. ``start_job`` returns the started job or raises
    ``JobAlreadyRunningError`` when one runs."""

    def __init__(self, interval_s: float, start_job: Callable[[], Job]):
        if not interval_s > 0:
            raise ValueError(f"schedule interval must be positive seconds, got {interval_s}")
        self.interval_s = float(interval_s)
        self._start_job = start_job
        self.started = 0
        self.skipped = 0

    async def run(self) -> None:
        """Run until cancelled. Ticks keep a fixed cadence (loop time), not "interval after the
        previous job ended", so a slow job does not shift every later tick."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.interval_s
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += self.interval_s
            # Ticks missed while the loop was busy collapse into one.
            if next_tick < loop.time():
                next_tick = loop.time() + self.interval_s
            self.tick()

    def tick(self) -> Job | None:
        """One scheduled attempt: the started job, or None if skipped or failed to start."""
        try:
            job = self._start_job()
        except JobAlreadyRunningError as exc:
            self.skipped += 1
            log.info("scheduled retraining skipped: %s", exc)
            return None
        except Exception:
            log.exception("scheduled retraining could not start a job")
            return None
        self.started += 1
        log.info("scheduled retraining started job %s", job.job_id)
        return job


def trained_through(models_dir: str | os.PathLike) -> int:
    """The play log position the newest version with a readable manifest was trained through
    (``data.play_log_position``; 0 for none, or a version trained without the log)."""
    for version in reversed(list_versions(models_dir)):
        try:
            return read_manifest(Path(models_dir) / str(version)).play_log_position
        except (InvalidVersionError, OSError):
            continue
    return 0


class LogPositions:
    """What ``RetrainOnVolume`` polls: the play log's last position (the log opened on first
    use, and again after an error) and the newest version's mark in ``models_dir``. Blocking:
    call it off the event loop."""

    def __init__(self, events_url: str, models_dir: str | os.PathLike):
        self._url = events_url
        self._models_dir = models_dir
        self._log: PlayLog | None = None

    def __call__(self) -> tuple[int, int]:
        """(the log's last position, the newest version's mark). ``PlayLogError`` when the log
        cannot be read."""
        if self._log is None:
            self._log = open_play_log(self._url)
        try:
            last = self._log.last_position()
        except Exception:
            self.close()
            raise
        return last, trained_through(self._models_dir)

    def close(self) -> None:
        if self._log is not None:
            log_, self._log = self._log, None
            with contextlib.suppress(Exception):
                log_.close()


class RetrainOnVolume:
    """Starts a job (``start_job()``) once ``plays`` plays have arrived in the play log since
    the newest version's mark, polling ``positions()`` (``LogPositions``: the log's last
    position and that mark; run in a thread, never on a request's path) every ``poll_s``
    seconds.

    Positions count plays (a ``ForgetUser`` takes one too). One job at a time: a poll that
    finds a job running is skipped, and the job it started covers the plays up to its own
    mark. A started job raises the floor to the position seen when it started, so a job that
    fails (the quality gate refused it, bad data) is not retried on the same plays in a loop:
    the next one waits for ``plays`` more."""

    def __init__(self, plays: int, poll_s: float, positions: Callable[[], tuple[int, int]],
                 start_job: Callable[[], Job]):
        if plays < 1:
            raise ValueError(f"plays must be at least 1, got {plays}")
        if not poll_s > 0:
            raise ValueError(f"poll interval must be positive seconds, got {poll_s}")
        self.plays = int(plays)
        self.poll_s = float(poll_s)
        self._positions = positions
        self._start_job = start_job
        self._floor = 0  # the log position when the last job this trigger started began
        self._failing = False
        self.started = 0
        self.skipped = 0

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.poll_s)
            await self.poll()

    async def poll(self) -> Job | None:
        """One poll: the started job, or None (too few new plays, a job running, the log
        unreadable, or the job could not start)."""
        try:
            last, mark = await asyncio.to_thread(self._positions)
        except Exception as exc:
            if not self._failing:
                log.warning("retrain on volume: cannot read the play log (%s); will retry",
                            getattr(exc, "message", exc))
            self._failing = True
            return None
        if self._failing:
            log.info("retrain on volume: the play log reads again")
        self._failing = False
        since = max(mark, self._floor)
        arrived = last - since
        if arrived < self.plays:
            return None
        try:
            job = self._start_job()
        except JobAlreadyRunningError:
            self.skipped += 1
            return None
        except Exception:
            log.exception("retrain on volume could not start a job")
            return None
        self._floor = last
        self.started += 1
        log.info("retrain on volume: %d plays since position %d; started job %s", arrived, since, job.job_id)
        return job
