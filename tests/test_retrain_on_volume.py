"""RetrainOnVolume's rule, with scripted positions and a scripted start (known answers; the
real trainer with a real log is in test_trainer_service.py)."""

from __future__ import annotations

import asyncio

import pytest

from play_log import PlayLogError
from trainer_service.data import DataSourceSpec
from trainer_service.jobs import Job, JobAlreadyRunningError
from trainer_service.scheduler import RetrainOnVolume, trained_through
from trainer_service.training_request import TrainingRequest


class Script:
    """``positions()`` answers the next (last position, mark) or raises; ``start()`` starts a
    job unless told one is running."""

    def __init__(self):
        self.answer: tuple[int, int] | Exception = (0, 0)
        self.running = False
        self.started: list[Job] = []

    def positions(self) -> tuple[int, int]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def start(self) -> Job:
        if self.running:
            raise JobAlreadyRunningError(self.started[-1])
        self.started.append(Job.new(TrainingRequest(DataSourceSpec.synthetic("tiny"))))
        return self.started[-1]


def test_one_job_per_n_plays_past_the_mark_and_no_loop_on_a_failed_job():
    script = Script()
    trigger = RetrainOnVolume(3, 1.0, script.positions, script.start)

    def poll(last: int, mark: int) -> Job | None:
        script.answer = (last, mark)
        return asyncio.run(trigger.poll())

    assert poll(2, 0) is None  # 2 plays: too few
    assert poll(3, 0) is script.started[0]  # the third
    assert poll(5, 0) is None  # 2 since that job's start
    script.running = True
    assert poll(6, 0) is None and trigger.skipped == 1  # 3 more, but one job at a time
    script.running = False
    assert poll(6, 0) is script.started[1]
    # That job failed (no new version: the mark is still 0): the same plays start nothing again.
    assert poll(6, 0) is None and poll(8, 0) is None
    # A version trained through 10 sets the mark: plays count from there.
    assert poll(12, 10) is None and poll(13, 10) is script.started[2]
    assert trigger.started == 3 and len(script.started) == 3


def test_an_unreadable_log_starts_nothing_and_is_retried():
    script = Script()
    trigger = RetrainOnVolume(1, 1.0, script.positions, script.start)
    script.answer = PlayLogError("the log is down")
    assert asyncio.run(trigger.poll()) is None
    script.answer = (1, 0)
    assert asyncio.run(trigger.poll()) is script.started[0]


def test_bad_settings_and_the_newest_versions_mark(tmp_path, models_dir, publish, tiny_artifacts):
    with pytest.raises(ValueError, match="plays"):
        RetrainOnVolume(0, 1.0, lambda: (0, 0), lambda: None)
    with pytest.raises(ValueError, match="poll"):
        RetrainOnVolume(1, 0.0, lambda: (0, 0), lambda: None)
    assert trained_through(tmp_path / "nothing") == 0
    publish(tiny_artifacts)
    assert trained_through(models_dir) == 0  # trained without the log
    publish(tiny_artifacts, play_log_position=42)
    assert trained_through(models_dir) == 42
