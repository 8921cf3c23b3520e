"""The trainer service over real gRPC: ``python -m trainer_service serve`` as an OS process on
port 0, real grpc.aio clients, real (TensorFlow) training on the tiny synthetic preset with few
epochs.

Covered: StartTraining + WatchTrainingJob stream contents (ordered epochs, final state with the
version) and ListModelVersions; a second StartTraining while one runs (ALREADY_EXISTS naming the
job); cancel (CANCELLED, nothing published); a bad data file (FAILED with the loader's message);
paths leaving --data-dir, a symlink among them (INVALID_ARGUMENT, no job); out-of-range
hyperparameters (INVALID_ARGUMENT); the watcher bound (RESOURCE_EXHAUSTED); the training child
killed with SIGKILL (FAILED, the server keeps serving); SIGTERM with a job running (CANCELLED, exit
0); the trainer killed and restarted (the interrupted job FAILED, versions still listed, version
numbers keep growing after the models dir is emptied); the quality gate (a bad model's job
FAILED with both figures, nothing published, the index keeps serving its version; the gate off
publishes it, recorded in the manifest and the job's options).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from model_store import load_version, read_manifest
from play_log import Play, open_play_log
from musicrec.v1 import index_pb2, index_pb2_grpc, model_pb2, trainer_pb2, trainer_pb2_grpc
from service_processes import ServiceProcess, child_pids, exited, index_service, trainer

pytestmark = pytest.mark.slow

TINY = trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=trainer_pb2.SYNTHETIC_SIZE_TINY, seed=3))
QUICK = model_pb2.Hyperparameters(epochs=3, factors=8)
# A job that would run for minutes: the tests cancel or kill it after its first epoch.
LONG = model_pb2.Hyperparameters(epochs=10_000, factors=8)
# Three epochs of 8 factors do not reliably beat popularity on the tiny preset: the tests of other
# things turn the quality gate off (the gate's own test sends no options).
GATE_OFF = trainer_pb2.TrainingOptions(gate=trainer_pb2.QUALITY_GATE_OFF)
COLD = trainer_pb2.TrainingOptions(warm_start=trainer_pb2.WARM_START_NONE)
GATE_OFF_COLD = trainer_pb2.TrainingOptions(gate=trainer_pb2.QUALITY_GATE_OFF, warm_start=trainer_pb2.WARM_START_NONE)
# One epoch at a negligible learning rate: a model that still ranks at random, far below popularity.
UNTRAINED = model_pb2.Hyperparameters(epochs=1, factors=8, learning_rate=1e-6)
RUNNING = trainer_pb2.JOB_STATE_RUNNING
SUCCEEDED = trainer_pb2.JOB_STATE_SUCCEEDED
FAILED = trainer_pb2.JOB_STATE_FAILED
CANCELLED = trainer_pb2.JOB_STATE_CANCELLED
WAIT_S = 120.0  # hang protection only


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


def stub(channel) -> trainer_pb2_grpc.TrainerServiceStub:
    return trainer_pb2_grpc.TrainerServiceStub(channel)


async def start(channel, source=TINY, hyperparameters=QUICK, options=GATE_OFF) -> trainer_pb2.TrainingJob:
    request = trainer_pb2.StartTrainingRequest(hyperparameters=hyperparameters, options=options)
    if source is not None:
        request.source.CopyFrom(source)
    return await stub(channel).StartTraining(request)


async def watch(channel, job_id: str) -> list[trainer_pb2.TrainingJob]:
    call = stub(channel).WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job_id))
    return [update async for update in call]


async def watch_until_epoch(channel, job_id: str, epoch: int = 1):
    """Open a watch, read until the job has completed ``epoch`` epochs; return the open call."""
    call = stub(channel).WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job_id))
    async for update in call:
        assert update.state == RUNNING, update
        if update.progress.phase == "training" and update.progress.epoch >= epoch:
            return call
    raise AssertionError("the stream ended before the epoch")


async def versions(channel) -> list[int]:
    reply = await stub(channel).ListModelVersions(trainer_pb2.ListModelVersionsRequest())
    return [v.version for v in reply.versions]


async def get(channel, job_id: str) -> trainer_pb2.TrainingJob:
    return await stub(channel).GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job_id))


def training_child(trainer_process: ServiceProcess) -> int:
    """PID of the trainer's training child (the spawn child, not the resource tracker)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for pid in child_pids(trainer_process.process.pid):
            try:
                cmdline = " ".join(psutil.Process(pid).cmdline())
            except psutil.Error:
                continue
            if "spawn_main" in cmdline:
                return pid
        time.sleep(0.05)
    raise AssertionError("no training child process found")


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while not exited(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One trainer for the tests that do not restart it, with a data dir holding a broken
    notebook file, a symlink that leads out of the data dir, and a file outside it."""
    tmp = tmp_path_factory.mktemp("trainer")
    data = tmp / "data"
    (data / "broken").mkdir(parents=True)
    (data / "broken" / "lastfm_play.csv").write_text("user_id,artist_id,plays\nu1,a1,12\nu2,a2,lots\n")
    (data / "broken" / "lastfm_artist.csv").write_text("artist_id,artist_name\na1,One\na2,Two\n")
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "lastfm_play.csv").write_text("user_id,artist_id,plays\nu1,a1,1\n")
    os.symlink(outside, data / "escape")
    process = trainer(tmp, tmp / "models", data, "--max-watchers", "2").start()
    yield process, tmp / "models"
    assert process.stop() == 0, process.tail()


def test_health_is_serving_once_listening(service):
    process, _ = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            return reply.status

    assert run(main()) == health_pb2.HealthCheckResponse.SERVING


def test_watch_streams_ordered_epochs_and_the_final_version(service):
    process, models_dir = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            before = await versions(channel)
            job = await start(channel)
            updates = await watch(channel, job.job_id)
            late = await watch(channel, job.job_id)
            return before, job, updates, late, await get(channel, job.job_id), await versions(channel)

    before, job, updates, late, got, after = run(main())
    assert job.state == RUNNING and job.job_id
    assert job.hyperparameters.epochs == 3 and job.hyperparameters.factors == 8
    assert job.source.synthetic.size == trainer_pb2.SYNTHETIC_SIZE_TINY and job.source.synthetic.seed == 3
    final = updates[-1]
    assert final.state == SUCCEEDED, final.error
    assert final.published_version == (max(before) + 1 if before else 1)
    assert final.metrics.evaluated_users > 0 and 0 < final.metrics.auc <= 1
    assert final.HasField("finished_at") and final.HasField("started_at")
    assert all(update.state == RUNNING for update in updates[:-1])
    epochs = [u.progress.epoch for u in updates if u.progress.phase == "training" and u.progress.epoch > 0]
    # one update per epoch, in order (the watch starts before the child has even imported TF,
    # so it sees epoch 1; contiguity is what matters)
    assert epochs and epochs == list(range(epochs[0], 4))
    assert all(u.progress.total_epochs == 3 for u in updates if u.progress.phase == "training")
    phases = [u.progress.phase for u in updates]
    assert phases.index("training") < phases.index("evaluating") < phases.index("publishing")
    assert [u.state for u in late] == [SUCCEEDED]  # after the end: the final state, then the end
    assert got == final
    assert after[0] == final.published_version and after == sorted(after, reverse=True)


@pytest.mark.slow
def test_a_distributed_job_trains_on_a_local_cluster_and_publishes(service):
    """StartTraining with ``options.distributed``: the job trains on a local cluster of 2 ps and 2
    worker processes, publishes a normal version that records where it trained, and leaves no
    task running."""
    process, models_dir = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            options = trainer_pb2.TrainingOptions(gate=trainer_pb2.QUALITY_GATE_OFF, distributed="ps=2,workers=2")
            job = await start(channel, options=options)
            return job, await watch(channel, job.job_id)

    job, updates = run(main())
    assert job.options.distributed == "ps=2,workers=2"
    final = updates[-1]
    assert final.state == SUCCEEDED, final.error
    manifest = read_manifest(models_dir / str(final.published_version))
    assert manifest.training is not None and manifest.training.cluster == "ps=2,workers=2"
    assert manifest.num_users > 0 and load_version(models_dir / str(final.published_version)) is not None
    deadline = time.monotonic() + 30
    while _cluster_tasks() and time.monotonic() < deadline:  # the tasks die with the training process
        time.sleep(0.2)
    assert not _cluster_tasks()


def _cluster_tasks() -> list[int]:
    """PIDs of running distributed training tasks (any on this machine)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if "trainer_service.distributed.task" in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


def test_second_start_is_already_exists_and_cancel_publishes_nothing(service):
    process, _ = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            before = await versions(channel)
            job = await start(channel, hyperparameters=LONG)
            call = await watch_until_epoch(channel, job.job_id)
            with pytest.raises(grpc.aio.AioRpcError) as second:
                await start(channel)
            cancelled = await stub(channel).CancelTraining(trainer_pb2.CancelTrainingRequest(job_id=job.job_id))
            rest = [update async for update in call]
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await stub(channel).CancelTraining(trainer_pb2.CancelTrainingRequest(job_id=job.job_id))
            return job, second.value, cancelled, rest[-1], again.value, before, await versions(channel)

    job, second, cancelled, final, again, before, after = run(main())
    assert second.code() == grpc.StatusCode.ALREADY_EXISTS and job.job_id in second.details()
    assert cancelled.job_id == job.job_id
    assert final.state == CANCELLED and final.published_version == 0
    assert final.error == "cancelled on request"
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert after == before


def test_bad_data_fails_the_job_with_the_loaders_message(service):
    process, _ = service
    broken = trainer_pb2.DataSource(
        files=trainer_pb2.FileSource(path="broken", format=trainer_pb2.DATA_FORMAT_NOTEBOOK))

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            before = await versions(channel)
            job = await start(channel, source=broken)
            final = (await watch(channel, job.job_id))[-1]
            return final, before, await versions(channel)

    final, before, after = run(main())
    assert final.state == FAILED and final.published_version == 0
    assert "lastfm_play.csv" in final.error and "lots" in final.error, final.error
    assert final.source.files.path == "broken"
    assert after == before


@pytest.mark.parametrize("path", ["../outside", "/etc", "escape", "broken/../../outside"])
def test_paths_leaving_the_data_dir_are_invalid_argument(service, path):
    process, _ = service
    source = trainer_pb2.DataSource(files=trainer_pb2.FileSource(path=path))

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await start(channel, source=source)
            return info.value

    error = run(main())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "data directory" in error.details()


@pytest.mark.parametrize("hyperparameters, field", [
    (model_pb2.Hyperparameters(epochs=0), "epochs"),
    (model_pb2.Hyperparameters(factors=5000), "factors"),
    (model_pb2.Hyperparameters(learning_rate=-1), "learning_rate"),
])
def test_out_of_range_hyperparameters_are_invalid_argument(service, hyperparameters, field):
    process, _ = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await start(channel, hyperparameters=hyperparameters)
            return info.value

    error = run(main())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and field in error.details()


@pytest.mark.parametrize("options", [trainer_pb2.TrainingOptions(patience=5000),
                                     trainer_pb2.TrainingOptions(gate=42),
                                     trainer_pb2.TrainingOptions(distributed="ps=2"),
                                     trainer_pb2.TrainingOptions(distributed="ps=100,workers=2")])
def test_bad_options_are_invalid_argument(service, options):
    process, _ = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await start(channel, options=options)
            return info.value

    error = run(main())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "invalid options" in error.details()


def test_unknown_job_is_not_found(service):
    process, _ = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            errors = []
            for call in (get(channel, "nope"), watch(channel, "nope"),
                         stub(channel).CancelTraining(trainer_pb2.CancelTrainingRequest(job_id="nope"))):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                errors.append(info.value.code())
            return errors

    assert run(main()) == [grpc.StatusCode.NOT_FOUND] * 3


def test_watchers_beyond_the_bound_are_resource_exhausted_and_a_killed_child_fails_the_job(service):
    process, _ = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            job = await start(channel, hyperparameters=LONG)
            first = await watch_until_epoch(channel, job.job_id)
            second = await watch_until_epoch(channel, job.job_id)
            with pytest.raises(grpc.aio.AioRpcError) as third:
                await watch(channel, job.job_id)
            os.kill(training_child(process), signal.SIGKILL)
            final = [update async for update in first][-1]
            [update async for update in second]
            # the server keeps serving: the slot is free and a new job trains
            after = await start(channel)
            after_final = (await watch(channel, after.job_id))[-1]
            return third.value, final, after_final

    exhausted, final, after_final = run(main())
    assert exhausted.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert final.state == FAILED and final.published_version == 0
    assert "killed by SIGKILL" in final.error, final.error
    assert after_final.state == SUCCEEDED


def test_restarts_sigterm_cancels_and_sigkill_fails_the_running_job(tmp_path):
    """One trainer history across three processes: A publishes v1, is stopped with SIGTERM while
    a job runs (CANCELLED, exit 0); B sees that, starts a job and is SIGKILLed (its training
    child dies with it); C reports that job FAILED, still lists v1, and after the models dir is
    emptied publishes v2 (numbers never reuse)."""
    models = tmp_path / "models"

    async def phase_a(process):
        async with grpc.aio.insecure_channel(process.address) as channel:
            done = (await watch(channel, (await start(channel)).job_id))[-1]
            job = await start(channel, hyperparameters=LONG)
            call = await watch_until_epoch(channel, job.job_id)
            process.process.send_signal(signal.SIGTERM)
            final = [update async for update in call][-1]
            return done, final

    a = trainer(tmp_path, models, name="trainer-a").start()
    done, cancelled = run(phase_a(a))
    assert a.process.wait(WAIT_S) == 0, a.tail()
    assert done.state == SUCCEEDED and done.published_version == 1
    assert cancelled.state == CANCELLED and "shutting down" in cancelled.error
    assert cancelled.published_version == 0

    async def phase_b(process):
        async with grpc.aio.insecure_channel(process.address) as channel:
            after_restart = await get(channel, cancelled.job_id)
            job = await start(channel, hyperparameters=LONG)
            await watch_until_epoch(channel, job.job_id)
            return after_restart, job

    b = trainer(tmp_path, models, name="trainer-b").start()
    after_restart, interrupted = run(phase_b(b))
    assert after_restart.state == CANCELLED
    child = training_child(b)
    b.kill()  # SIGKILL: no cleanup at all
    wait_gone(child)  # the training child dies with its parent

    async def phase_c(process):
        async with grpc.aio.insecure_channel(process.address) as channel:
            job = await get(channel, interrupted.job_id)
            listed = await versions(channel)
            shutil.rmtree(models / "1")
            fresh = (await watch(channel, (await start(channel)).job_id))[-1]
            return job, listed, fresh, await versions(channel)

    c = trainer(tmp_path, models, name="trainer-c").start()
    job, listed, fresh, after = run(phase_c(c))
    assert c.stop() == 0, c.tail()
    assert job.state == FAILED and job.error == "trainer restarted while the job was running"
    assert listed == [1]
    assert fresh.state == SUCCEEDED and fresh.published_version == 2 and after == [2], fresh.error


def test_including_the_play_log_on_a_trainer_without_one_is_failed_precondition(service):
    process, _ = service

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub(channel).StartTraining(trainer_pb2.StartTrainingRequest(
                    source=TINY, hyperparameters=QUICK, options=GATE_OFF, play_log=trainer_pb2.PLAY_LOG_USE_INCLUDE))
            return info.value

    error = run(main())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "--events" in error.details()


def test_retrain_after_plays_starts_exactly_one_job_per_n_plays(tmp_path):
    """--retrain-after-plays 3: two plays start nothing; the third starts one job, which
    publishes a version trained through position 3 (with the new listener); no second job
    follows while no new plays arrive (the version's mark covers them)."""
    url = f"sqlite:///{tmp_path / 'plays.db'}"
    models = tmp_path / "models"
    process = trainer(tmp_path, models, None, "--events", url, "--retrain-after-plays", "3", "--retrain-poll",
                      "0.1", name="volume").start()
    now = time.time()

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            with open_play_log(url) as log:
                log.record("a", [Play("listener-new", "artist-new", 2, now), Play("listener-new", "artist-1", 1, now)])
                await asyncio.sleep(1.0)  # ten polls
                before = await versions(channel)
                log.record("b", [Play("listener-new", "artist-2", 1, now)])
                deadline = time.monotonic() + WAIT_S
                while not await versions(channel):
                    assert time.monotonic() < deadline, "no job published after the third play"
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.5)  # fifteen polls after the publish
                return before, await versions(channel)

    try:
        before, after = run(main())
    finally:
        status = process.stop()
    assert status == 0, process.tail()
    assert before == [] and after == [1]
    manifest = read_manifest(models / "1")
    assert manifest.play_log_position == 3
    loaded = load_version(models / "1")
    try:
        assert "listener-new" in loaded.artifacts.user_ids.tolist()
    finally:
        loaded.close()
    assert process.log().count("retrain on volume: 3 plays since position 0; started job") == 1, process.tail()
    assert "retrain on volume:" not in process.log().split("started job", 1)[1], process.tail()


def test_schedule_retrains_from_the_default_source_without_a_request(tmp_path):
    process = trainer(tmp_path, tmp_path / "models", None, "--schedule", "1", name="scheduled").start()

    async def main():
        async with grpc.aio.insecure_channel(process.address) as channel:
            deadline = time.monotonic() + WAIT_S
            while not await versions(channel):
                assert time.monotonic() < deadline, "the schedule never published"
                await asyncio.sleep(0.2)
            reply = await stub(channel).ListModelVersions(trainer_pb2.ListModelVersionsRequest())
            return reply.versions[0]

    try:
        version = run(main())
    finally:
        status = process.stop()
    assert status == 0, process.tail()
    assert version.version >= 1 and "tiny" in version.data_source


def test_the_gate_fails_a_bad_model_and_the_index_keeps_its_version(tmp_path):
    models = tmp_path / "models"
    index = index_service(tmp_path, models).start()
    trainer_process = trainer(tmp_path, models).start()

    async def served(index_stub) -> int:
        info = await index_stub.GetIndexInfo(index_pb2.GetIndexInfoRequest())
        return info.model.version

    async def main():
        async with grpc.aio.insecure_channel(trainer_process.address) as channel, \
                grpc.aio.insecure_channel(index.address) as ichannel:
            index_stub = index_pb2_grpc.IndexServiceStub(ichannel)
            first = (await watch(channel, (await start(channel)).job_id))[-1]
            assert first.state == SUCCEEDED, first.error
            deadline = time.monotonic() + WAIT_S
            while True:
                try:
                    if await served(index_stub) == first.published_version:
                        break
                except grpc.aio.AioRpcError:
                    pass
                assert time.monotonic() < deadline, "the first version was never served"
                await asyncio.sleep(0.1)
            # Untrained means a cold start: warm, it would begin at the first version's factors.
            refused_job = await start(channel, hyperparameters=UNTRAINED, options=COLD)
            refused = (await watch(channel, refused_job.job_id))[-1]
            listed = await versions(channel)
            await asyncio.sleep(1.0)  # five index polls
            still = await served(index_stub)
            forced = (await watch(channel, (await start(channel, hyperparameters=UNTRAINED,
                                                        options=GATE_OFF_COLD)).job_id))[-1]
            return first, refused_job, refused, listed, still, forced

    try:
        first, refused_job, refused, listed, still, forced = run(main())
    finally:
        statuses = trainer_process.stop(), index.stop()
    assert statuses == (0, 0), trainer_process.tail() + index.tail()
    assert refused_job.options.gate == trainer_pb2.QUALITY_GATE_ON  # unset gate: on
    assert refused.state == FAILED and refused.published_version == 0
    assert refused.error.startswith("quality gate refused the model: HR@10 "), refused.error
    assert "is not above the popularity baseline's" in refused.error
    figures = [float(word.rstrip(",;'s")) for word in refused.error.split() if word[:2] == "0."]
    assert len(figures) == 2 and figures[0] < figures[1], refused.error
    assert listed == [first.published_version] and still == first.published_version
    # The gate off publishes the same bad model, and says so in the manifest.
    assert forced.state == SUCCEEDED and forced.published_version == first.published_version + 1
    assert forced.options.gate == trainer_pb2.QUALITY_GATE_OFF
    record = read_manifest(models / str(forced.published_version)).training
    assert record.gate_mode == "off" and not record.gate_passed
    assert record.gate_figures["hit_rate_at_10"] < record.gate_figures["popularity_hit_rate_at_10"]


def _logged_pids(process: ServiceProcess, text: str, count: int) -> list[int]:
    """The pids of the first ``count`` log lines "<text> (pid N...", waiting for them."""
    deadline = time.monotonic() + WAIT_S
    while True:
        pids = [int(m) for m in re.findall(re.escape(text) + r" \(pid (\d+)", process.log())]
        if len(pids) >= count:
            return pids[:count]
        assert time.monotonic() < deadline, f"fewer than {count} lines {text!r}:\n{process.tail()}"
        time.sleep(0.05)


def test_a_job_runs_in_the_standby_process_and_stopping_the_trainer_ends_the_next_one(tmp_path):
    """By default the trainer starts a training process ahead of the first job (TensorFlow
    imported); the job runs in it, the next one starts when the job ends, and a stop ends it."""
    process = trainer(tmp_path, tmp_path / "models", name="standby").start()
    try:
        [first] = _logged_pids(process, "standby training process started", 1)
        final = run(watch_job_to_end(process))
        [second] = _logged_pids(process, "standby training process started", 2)[1:]
        deadline = time.monotonic() + WAIT_S
        while process.log().count("standby: ready for a job") < 2:
            assert time.monotonic() < deadline, process.tail()
            time.sleep(0.05)
    finally:
        status = process.stop()
    assert status == 0, process.tail()
    assert final.state == SUCCEEDED, final.error
    assert f"started (pid {first}, the standby)" in process.log(), process.tail()
    assert second != first
    wait_gone(second)
    # The first standby had no version to compile for; the second compiled the training step for
    # version 1's sizes (the tiny preset's 300 users and 200 artists) with a quarter of headroom.
    ready = re.findall(r"standby: ready for a job \(([^)]*)\)", process.log())
    assert "no version to compile ahead for" in ready[0], ready
    assert "the training step compiled for up to 375 users and 250 artists (version 1's" in ready[1], ready


def test_without_standby_a_job_starts_its_own_process(tmp_path):
    process = trainer(tmp_path, tmp_path / "models", None, "--no-standby", name="no-standby").start()
    try:
        waiting = [pid for pid in child_pids(process.process.pid)
                   if "spawn_main" in " ".join(psutil.Process(pid).cmdline())]
        final = run(watch_job_to_end(process))
    finally:
        status = process.stop()
    assert status == 0, process.tail()
    assert waiting == [] and final.state == SUCCEEDED, final.error
    assert "standby training process" not in process.log() and "the standby)" not in process.log(), process.tail()


async def watch_job_to_end(process: ServiceProcess):
    async with grpc.aio.insecure_channel(process.address) as channel:
        return (await watch(channel, (await start(channel)).job_id))[-1]
