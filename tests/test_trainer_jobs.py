"""Training jobs: the state machine, the job-history file, and the retraining schedule."""

from __future__ import annotations

import asyncio
import json

import pytest

from trainer_service.data import DataSourceSpec
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.jobs import (
    RESTARTED_ERROR,
    Job,
    JobAlreadyRunningError,
    JobNotFoundError,
    JobRegistry,
    JobState,
    TrainerStateLockedError,
)
from trainer_service.training_request import Progress, TrainingRequest
from trainer_service.scheduler import RetrainSchedule


def new_job() -> Job:
    return Job.new(TrainingRequest(DataSourceSpec.synthetic("tiny", 1), Hyperparameters(epochs=2, factors=8)))


def test_lifecycle_allows_only_forward_transitions():
    job = new_job()
    assert job.state is JobState.QUEUED and job.started_at is None
    job.transition(JobState.RUNNING)
    assert job.started_at is not None and job.finished_at is None
    job.published_version = 4
    job.transition(JobState.SUCCEEDED)
    assert job.finished_at is not None and job.published_version == 4
    for target in JobState:
        with pytest.raises(ValueError, match="cannot go from SUCCEEDED"):
            job.transition(target)


def test_failed_and_cancelled_jobs_have_no_published_version():
    for end in (JobState.FAILED, JobState.CANCELLED):
        job = new_job()
        job.transition(JobState.RUNNING)
        job.published_version = 3
        job.transition(end, error="why")
        assert job.published_version == 0 and job.error == "why"


def test_snapshot_is_independent_of_later_updates():
    job = new_job()
    snap = job.snapshot()
    job.progress = Progress("training", epoch=5)
    job.metrics["auc"] = 0.9
    assert snap.progress.epoch == 0 and snap.metrics == {}


def test_history_round_trips_and_remembers_the_highest_version(tmp_path):
    registry = JobRegistry(tmp_path)
    registry.open()
    job = new_job()
    registry.add(job)
    job.transition(JobState.RUNNING)
    job.progress = Progress("training", epoch=1, total_epochs=2, loss=0.5, metrics={"auc": 0.7})
    job.metrics = {"auc": 0.75}
    job.published_version = 9
    job.transition(JobState.SUCCEEDED)
    registry.record_published(9)
    registry.record_published(5)  # never goes down
    registry.save()
    registry.close()

    again = JobRegistry(tmp_path)
    again.open()
    loaded = again.get(job.job_id)
    assert loaded == job
    assert again.highest_published_version == 9
    # The file keeps the request as plain data: the source's and the hyperparameters' fields.
    stored = json.loads((tmp_path / "jobs.json").read_text())["jobs"][0]
    assert stored["source"]["kind"] == "synthetic" and stored["source"]["size"] == "tiny"
    assert stored["hyperparameters"]["epochs"] == 2 and stored["hyperparameters"]["optimizer"] == "sgd"
    assert again.active() is None
    again.close()


def test_a_job_running_when_the_trainer_died_is_failed_after_restart(tmp_path):
    registry = JobRegistry(tmp_path)
    registry.open()
    job = new_job()
    registry.add(job)
    job.transition(JobState.RUNNING)
    registry.save()
    registry.close()  # the process "dies" here: no terminal state was written

    again = JobRegistry(tmp_path)
    again.open()
    loaded = again.get(job.job_id)
    assert loaded.state is JobState.FAILED
    assert loaded.error == RESTARTED_ERROR
    assert again.active() is None
    # and the correction itself is on disk
    on_disk = json.loads((tmp_path / "jobs.json").read_text())
    assert on_disk["jobs"][0]["state"] == "FAILED"
    again.close()


def test_a_second_trainer_cannot_share_the_state_dir(tmp_path):
    first = JobRegistry(tmp_path)
    first.open()
    with pytest.raises(TrainerStateLockedError, match="another trainer"):
        JobRegistry(tmp_path).open()
    first.close()
    second = JobRegistry(tmp_path)
    second.open()
    second.close()


def test_a_broken_history_is_moved_aside_not_fatal(tmp_path):
    (tmp_path / "jobs.json").write_text("{not json")
    registry = JobRegistry(tmp_path)
    registry.open()
    assert registry.jobs() == []
    assert list(tmp_path.glob("jobs.json.broken-*"))
    registry.close()


def test_history_keeps_at_most_max_jobs_dropping_the_oldest_ended(tmp_path):
    registry = JobRegistry(tmp_path, max_jobs=3)
    registry.open()
    jobs = []
    for _ in range(5):
        job = new_job()
        registry.add(job)
        job.transition(JobState.FAILED, error="x")
        jobs.append(job)
    assert [j.job_id for j in registry.jobs()] == [j.job_id for j in jobs[-3:]]
    with pytest.raises(JobNotFoundError):
        registry.get(jobs[0].job_id)
    registry.close()


def test_already_running_error_names_the_job():
    job = new_job()
    job.transition(JobState.RUNNING)
    job.progress = Progress("training")
    error = JobAlreadyRunningError(job)
    assert job.job_id in error.message and error.code_name == "ALREADY_EXISTS"


def test_schedule_skips_a_tick_while_a_job_runs_and_survives_errors():
    running = new_job()
    outcomes = iter([JobAlreadyRunningError(running), RuntimeError("disk full"), new_job()])

    def start_job():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    schedule = RetrainSchedule(0.01, start_job)
    assert schedule.tick() is None and schedule.skipped == 1
    assert schedule.tick() is None  # logged, not raised
    assert schedule.tick() is not None and schedule.started == 1


def test_schedule_runs_ticks_until_cancelled():
    calls = []

    async def main():
        schedule = RetrainSchedule(0.01, lambda: calls.append(1) or new_job())
        task = asyncio.create_task(schedule.run())
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 30))
    assert len(calls) >= 3


def test_schedule_refuses_a_non_positive_interval():
    with pytest.raises(ValueError, match="positive"):
        RetrainSchedule(0, new_job)


@pytest.mark.parametrize("cluster", [None, "ps=2,workers=3"])
def test_a_jobs_training_options_survive_a_restart(tmp_path, cluster):
    from trainer_service.distributed import LocalClusterSpec
    from trainer_service.training_request import TrainingOptions

    registry = JobRegistry(tmp_path)
    registry.open()
    options = TrainingOptions(gate="off", final_fit="all", patience=2,
                              cluster=LocalClusterSpec.parse(cluster) if cluster else None)
    job = Job.new(TrainingRequest(DataSourceSpec.synthetic("tiny", 1), Hyperparameters(epochs=2, factors=8), options))
    registry.add(job)
    registry.save()
    registry.close()
    again = JobRegistry(tmp_path)
    again.open()
    assert again.get(job.job_id).request.options == options
    again.close()
