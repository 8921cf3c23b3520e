"""The job runner with scripted training children (no TensorFlow): the worker protocol, watching,
cancel, a child that ignores the cancel, a child that crashes, one that dies right after
publishing, the watcher bound, and shutdown.

Each scripted child is a real process started with the "spawn" context, like the real one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import psutil
import pytest

from model_store import ModelArtifacts, list_versions, publish_version
from ranking import BuildSettings, build_indexes
from musicrec.rpc.errors import InvalidArgument
from trainer_service.data import DataError, DataSourceSpec
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.job_runner import JobRunner, TooManyWatchersError, TrainerShuttingDownError
from trainer_service.jobs import JobAlreadyRunningError, JobEndedError, JobNotFoundError, JobRegistry, JobState
from trainer_service.training_request import Progress, TrainingRequest
from trainer_service.worker import Cancelled, Failed, Succeeded

EPOCHS = 3


def _progress(conn, phase, epoch=0, loss=0.0):
    conn.send(Progress(phase, epoch=epoch, total_epochs=EPOCHS, loss=loss, samples_per_second=100.0))


def child_succeeds(request, conn, stop):
    _progress(conn, "loading")
    _progress(conn, "training")
    for epoch in range(1, EPOCHS + 1):
        _progress(conn, "training", epoch, loss=1.0 / epoch)
    _progress(conn, "evaluating", EPOCHS)
    _progress(conn, "publishing", EPOCHS)
    conn.send(Succeeded(request.min_version, {"auc": 0.9}))


def child_waits_for_stop(request, conn, stop):
    _progress(conn, "training", 1)
    while not stop.wait(0.05):
        pass
    conn.send(Cancelled())


def child_ignores_stop(request, conn, stop):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _progress(conn, "training", 1)
    while True:
        time.sleep(0.05)


def child_is_killed(request, conn, stop):
    _progress(conn, "training", 1)
    os.kill(os.getpid(), signal.SIGKILL)


def child_fails(request, conn, stop):
    _progress(conn, "loading")
    conn.send(Failed("lastfm_play.csv line 3: plays must be a number, got 'x'"))


def child_publishes_then_dies(request, conn, stop):
    _progress(conn, "publishing", EPOCHS)
    rng = np.random.default_rng(0)
    artifacts = ModelArtifacts(
        user_ids=np.array(["u0", "u1"]), user_factors=rng.standard_normal((2, 4)).astype(np.float32),
        artist_ids=np.array(["a0", "a1", "a2"]), artist_names=np.array(["A", "B", "C"]),
        artist_factors=rng.standard_normal((3, 4)).astype(np.float32),
        artist_bias=np.zeros(3, np.float32), artist_listeners=np.ones(3, np.int32),
        seen_indptr=np.array([0, 1, 2], np.int64), seen_indices=np.array([0, 1], np.int32),
    )
    publish_version(request.models_dir, artifacts, data_source="scripted", data_fingerprint="0" * 64,
                    num_interactions=2, hyperparameters={"factors": 4}, metrics={"auc": 0.5},
                    min_version=request.min_version,
                    indexes=build_indexes(artifacts, BuildSettings(exact_only_up_to=0, n_trees=2, sample_size=2)))
    os.kill(os.getpid(), signal.SIGKILL)


def make_runner(tmp_path, target, **kwargs) -> JobRunner:
    registry = JobRegistry(tmp_path / "models" / ".trainer")
    registry.open()
    return JobRunner(registry, tmp_path / "models", data_dir=tmp_path, default_source=DataSourceSpec.synthetic("tiny"),
                     worker_target=target, **kwargs)


async def watch_all(runner, job_id):
    async with runner.watch(job_id) as updates:
        return [job async for job in updates]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_a_job_streams_ordered_epochs_and_ends_succeeded(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_succeeds)
        job = runner.start_job(TrainingRequest(DataSourceSpec.synthetic("tiny"),
                                               Hyperparameters(epochs=EPOCHS, factors=8)))
        assert job.state is JobState.RUNNING
        assert job.request.source == DataSourceSpec.synthetic("tiny")
        assert (job.request.hyperparameters.epochs, job.request.hyperparameters.factors) == (EPOCHS, 8)
        updates = await watch_all(runner, job.job_id)
        late = await watch_all(runner, job.job_id)  # after the end: the final state only
        again = runner.start_job()  # the slot is free again
        await watch_all(runner, again.job_id)
        await runner.shutdown()
        return job, updates, late, runner

    job, updates, late, runner = run(main())
    final = updates[-1]
    assert final.state is JobState.SUCCEEDED and final.published_version == 1
    assert final.metrics == {"auc": 0.9} and final.progress.phase == "done" and final.error == ""
    assert all(u.state is JobState.RUNNING for u in updates[:-1])
    epochs = [u.progress.epoch for u in updates if u.progress.phase == "training"]
    assert epochs == sorted(epochs) and epochs[-1] == EPOCHS
    phases = [u.progress.phase for u in updates]
    assert phases.index("training") < phases.index("evaluating") < phases.index("publishing")
    assert [u.state for u in late] == [JobState.SUCCEEDED]
    # min_version grows with every publish the trainer remembers
    assert runner.registry.highest_published_version == 2


def test_second_start_while_running_is_already_exists_naming_the_job(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_waits_for_stop)
        job = runner.start_job()
        with pytest.raises(JobAlreadyRunningError) as info:
            runner.start_job()
        assert job.job_id in info.value.message
        runner.cancel(job.job_id)
        final = (await watch_all(runner, job.job_id))[-1]
        with pytest.raises(JobEndedError):
            runner.cancel(job.job_id)
        await runner.shutdown()
        with pytest.raises(TrainerShuttingDownError):
            runner.start_job()
        return final

    final = run(main())
    assert final.state is JobState.CANCELLED and final.error == "cancelled on request"
    assert final.published_version == 0
    assert list_versions(tmp_path / "models") == []


def test_a_source_this_trainer_may_not_read_is_refused_before_a_job_exists(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_succeeds)
        with pytest.raises(InvalidArgument, match="invalid data source: .*contains '..'"):
            runner.start_job(TrainingRequest(DataSourceSpec.files("../etc", "hetrec")))
        no_data_dir = JobRunner(runner.registry, tmp_path / "models", data_dir=None,
                                default_source=DataSourceSpec.synthetic("tiny"), worker_target=child_succeeds)
        with pytest.raises(InvalidArgument, match="no --data-dir: only the synthetic generator"):
            no_data_dir.start_job(TrainingRequest(DataSourceSpec.files("lastfm-2k", "hetrec")))
        with pytest.raises(JobNotFoundError):
            runner.get("nope")
        assert runner.registry.jobs() == []
        await runner.shutdown()

    run(main())


def test_a_child_that_ignores_cancel_is_killed_and_the_job_cancelled(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_ignores_stop, cancel_grace_s=0.5)
        job = runner.start_job()
        async with runner.watch(job.job_id) as updates:
            async for update in updates:
                if update.state is JobState.RUNNING and update.progress.epoch == 1:
                    runner.cancel(job.job_id)  # repeated cancels are harmless
                final = update
        await runner.shutdown()
        return final

    final = run(main())
    assert final.state is JobState.CANCELLED
    assert "did not stop within 0.5 s and was killed" in final.error


def test_a_killed_child_fails_the_job_with_the_signal(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_is_killed)
        job = runner.start_job()
        final = (await watch_all(runner, job.job_id))[-1]
        await runner.shutdown()
        return final

    final = run(main())
    assert final.state is JobState.FAILED
    assert "killed by SIGKILL" in final.error


def test_a_failing_child_reports_the_loader_message(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_fails)
        job = runner.start_job()
        final = (await watch_all(runner, job.job_id))[-1]
        await runner.shutdown()
        return final

    final = run(main())
    assert final.state is JobState.FAILED
    assert final.error == "lastfm_play.csv line 3: plays must be a number, got 'x'"


def test_a_child_that_dies_after_publishing_is_reported_with_its_version(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_publishes_then_dies)
        runner.registry.record_published(6)  # versions keep growing past what the trainer published
        job = runner.start_job()
        final = (await watch_all(runner, job.job_id))[-1]
        await runner.shutdown()
        return final

    final = run(main())
    assert final.state is JobState.SUCCEEDED and final.published_version == 7
    assert final.error == ""  # a success, reported as one (the log says the child died)
    assert list_versions(tmp_path / "models") == [7]


def test_watchers_are_bounded(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_waits_for_stop, max_watchers=2)
        job = runner.start_job()
        async with runner.watch(job.job_id), runner.watch(job.job_id):
            with pytest.raises(TooManyWatchersError):
                async with runner.watch(job.job_id):
                    pass
        async with runner.watch(job.job_id):  # released slots are reusable
            pass
        await runner.shutdown()
        return runner.get(job.job_id)

    final = run(main())
    assert final.state is JobState.CANCELLED
    assert final.error == "cancelled: the trainer is shutting down"


def test_a_runner_refuses_a_default_source_it_could_never_read(tmp_path):
    registry = JobRegistry(tmp_path / "state")
    with pytest.raises(DataError, match="no --data-dir"):
        JobRunner(registry, tmp_path / "models", data_dir=None, default_source=DataSourceSpec.files("plays.csv"))
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        JobRunner(registry, tmp_path / "models", data_dir=tmp_path / "missing",
                  default_source=DataSourceSpec.synthetic("tiny"))
    with pytest.raises(DataError, match="contains '..'"):
        JobRunner(registry, tmp_path / "models", data_dir=tmp_path, default_source=DataSourceSpec.files("../x"))


def test_a_domain_error_fails_the_job_in_one_line_and_a_bug_with_its_traceback_logged(tmp_path, monkeypatch,
                                                                                         caplog):
    from trainer_service import pipeline, worker
    from trainer_service.evaluation import TrainingDiverged

    request = worker.WorkerRequest(training=TrainingRequest(DataSourceSpec.synthetic("tiny")),
                                   models_dir=str(tmp_path), data_dir=None, keep=1, min_version=1)
    raised: list[Exception] = []

    def training_that_raises(*args, **kwargs):
        raise raised[-1]

    monkeypatch.setattr(pipeline, "run_training", training_that_raises)
    raised.append(TrainingDiverged("training diverged in epoch 3 (loss nan): lower the learning rate"))
    assert worker.run_request(request, lambda progress: None, lambda: False) == Failed(
        "training diverged in epoch 3 (loss nan): lower the learning rate")
    raised.append(DataError("plays.csv line 3: plays must be a number, got 'x'"))
    assert worker.run_request(request, lambda progress: None, lambda: False) == Failed(
        "plays.csv line 3: plays must be a number, got 'x'")
    assert not caplog.records
    raised.append(ValueError("a bug: index 7 out of range"))
    with caplog.at_level("ERROR", logger="trainer_service.worker"):
        result = worker.run_request(request, lambda progress: None, lambda: False)
    assert result == Failed(worker.UNEXPECTED_ERROR) and "index 7" not in result.error
    assert caplog.records[-1].exc_info is not None and "index 7 out of range" in caplog.text


# -- the standby process -----------------------------------------------------------------------


def child_names_its_process(request, conn, stop):
    conn.send(Failed(f"pid {os.getpid()}"))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_job_runs_in_the_standby_started_before_it_and_the_next_one_starts_when_it_ends(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_names_its_process, standby=True)
        assert runner.standby_pid is None  # none until the server asks
        runner.start_standby()
        first = runner.standby_pid
        assert first is not None and not _gone(first)
        runner.start_standby()  # one is waiting: no second
        assert runner.standby_pid == first
        job = runner.start_job()
        during = runner.standby_pid  # taken; none starts while the job runs
        runner.start_standby()
        during_asked = runner.standby_pid
        final = (await watch_all(runner, job.job_id))[-1]
        second = runner.standby_pid
        await runner.shutdown()
        return first, during, during_asked, final, second, runner.standby_pid

    first, during, during_asked, final, second, after = run(main())
    assert (during, during_asked) == (None, None)
    assert final.state is JobState.FAILED and final.error == f"pid {first}"  # the job ran in the standby
    assert second is not None and second != first
    assert after is None and _gone(second)  # shutdown ended the standby no job took


def test_a_standby_that_died_idle_gives_way_to_a_new_process_and_the_job_runs(tmp_path, caplog):
    async def main():
        runner = make_runner(tmp_path, child_names_its_process, standby=True)
        runner.start_standby()
        dead = runner.standby_pid
        os.kill(dead, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not _gone(dead) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        job = runner.start_job()
        final = (await watch_all(runner, job.job_id))[-1]
        await runner.shutdown()
        return dead, final

    dead, final = run(main())
    assert final.state is JobState.FAILED and final.error.startswith("pid ")
    assert final.error != f"pid {dead}"
    assert f"the standby training process {dead} could not take the job" in caplog.text


def test_without_standby_no_process_waits(tmp_path):
    async def main():
        runner = make_runner(tmp_path, child_names_its_process)
        runner.start_standby()
        job = runner.start_job()
        final = (await watch_all(runner, job.job_id))[-1]
        pid = runner.standby_pid
        await runner.shutdown()
        return final, pid

    final, pid = run(main())
    assert pid is None and final.error.startswith("pid ")
