"""Periodic retraining: start a job from the default source every N seconds.

A tick that finds a job running is skipped (not queued): the running job already produces a
fresh model, and a backlog of ticks would only train the same data again back to back. A tick
that fails to start a job logs the reason and the schedule keeps going.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

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
