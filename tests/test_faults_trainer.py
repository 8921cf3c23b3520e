"""Faults around the trainer service (real processes: a trainer, and an index service serving
what it publishes; real TensorFlow training on the tiny synthetic preset, one epoch).

1. The training process SIGKILLed while its job is publishing, then the whole trainer SIGKILLed
   while publishing and restarted: no partial version is ever visible or served, the index keeps
   serving the last good version (or takes the new one, when the kill came after the rename),
   the job reports what happened, and the next job publishes cleanly (leftovers removed).
2. The models directory made unreadable, full, and deleted under a running trainer: the job
   fails with a clear error and publishes nothing, the trainer stays healthy and accepts the next
   job, the index keeps serving from memory, and once the directory is back a new version is
   published (numbered after every earlier one) and taken by the index.

The model store's publish steps are killed one by one in tests/test_faults_publish.py. Found and
fixed here: a job history that could not be written (the state dir lives in the models dir by
default) made StartTraining fail with INTERNAL after registering its job, leaving it QUEUED for
ever, so every later StartTraining was ALREADY_EXISTS (trainer_service/jobs.py
``JobRegistry.save`` is now best effort).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import grpc
import pytest

from model_store import list_versions, validate_version
from musicrec.v1 import trainer_pb2
from test_faults_harness import (
    SERVING,
    IndexClient,
    TrainerClient,
    index_process,
    marked_model,
    publish_model,
    synthetic_request,
    trainer_process,
    exited,
    training_child,
    wait_until,
    without_file_permission_override,
)

pytestmark = pytest.mark.slow

SUCCEEDED = trainer_pb2.JOB_STATE_SUCCEEDED
FAILED = trainer_pb2.JOB_STATE_FAILED


def quick(seed: int) -> trainer_pb2.StartTrainingRequest:
    return synthetic_request(epochs=1, seed=seed, factors=8)


def hidden_leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.name.startswith((".tmp-", ".trash-")))


def kill_when_publishing(client: TrainerClient, job_id: str, kill) -> str:
    """Follow the job's watch stream; call ``kill()`` as soon as the job reports the publishing
    phase. Returns the last phase seen."""
    phase = ""
    try:
        for update in client.stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job_id), timeout=300):
            phase = update.progress.phase
            if phase == "publishing":
                kill()
                break
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:  # the trainer itself was the one killed
            raise
    return phase


def assert_no_partial_version(models: Path) -> None:
    for version in list_versions(models):
        validate_version(models / str(version))  # every visible version is complete


def test_sigkill_mid_publish_of_the_training_process_and_of_the_trainer(tmp_path):
    models = tmp_path / "models"
    publish_model(models, marked_model(1))  # the last good version (published directly: faster)
    trainer = trainer_process(tmp_path, models, name="trainer-a").start()
    index = index_process(tmp_path, models).start()
    outcomes = []
    try:
        with IndexClient(index.address) as reader:
            with TrainerClient(trainer.address) as client:
                reader.wait_serving(1)

                # 1. The training process killed while publishing.
                job = client.start(quick(2))
                child = training_child(trainer)
                phase = kill_when_publishing(client, job.job_id, lambda: os.kill(child, signal.SIGKILL))
                assert phase == "publishing"
                ended = client.wait_ended(job.job_id)
                assert_no_partial_version(models)
                if ended.state == FAILED:  # killed before the rename: nothing visible
                    assert "killed by SIGKILL" in ended.error and ended.published_version == 0
                    assert list_versions(models) == [1]
                    outcomes.append("child killed before the rename: job FAILED, nothing published")
                else:  # killed after the rename: the version is complete, and the job says so
                    assert ended.state == SUCCEEDED and ended.published_version == 2, ended
                    outcomes.append("child killed after the rename: job SUCCEEDED with the complete version")
                assert reader.health() == SERVING
                assert reader.rejected() == {}
                served_before = list_versions(models)[-1]
                reader.wait_serving(served_before)

            # 2. The whole trainer killed while publishing (its training child dies with it).
            with TrainerClient(trainer.address) as client:
                job = client.start(quick(3))
                child = training_child(trainer)
                kill_when_publishing(client, job.job_id, lambda: trainer.process.send_signal(signal.SIGKILL))
            assert trainer.process.wait(60) == -signal.SIGKILL
            wait_until(lambda: exited(child),
                       "the training process died with the trainer")
            assert_no_partial_version(models)
            assert reader.rejected() == {}
            assert reader.health() == SERVING

            restarted = trainer_process(tmp_path, models, name="trainer-b").start()
            trainer = restarted
            with TrainerClient(trainer.address) as client:
                interrupted = client.get(job.job_id)
                assert interrupted.state == FAILED and "restarted" in interrupted.error
                visible = list_versions(models)
                outcomes.append(f"trainer killed while publishing: versions visible after {visible}")
                fresh = client.wait_ended(client.start(quick(4)).job_id)
                assert fresh.state == SUCCEEDED and fresh.published_version > max(visible)
                assert hidden_leftovers(models) == []  # the publish removed what the kills left
                reader.wait_serving(fresh.published_version)
                assert_no_partial_version(models)
        print("\nmid-publish kills: " + "; ".join(outcomes))
    finally:
        trainer.kill()
        assert index.stop() == 0, index.tail()




@contextlib.contextmanager
def small_volume(path: Path, size: str = "4m"):
    """A tmpfs of ``size`` at ``path``; yields False (no full-disk step) when mounting is refused."""
    path.mkdir(parents=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                 capture_output=True, timeout=30).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def test_models_dir_unreadable_full_and_deleted_under_a_running_trainer(tmp_path):
    prefix = without_file_permission_override()
    if prefix is None:
        pytest.skip("running as root without setpriv(1): chmod 000 would not stop the trainer")
    volume = tmp_path / "volume"
    with small_volume(volume) as can_fill:
        models = volume / "models"
        trainer = trainer_process(tmp_path, models, prefix=prefix).start()
        index = index_process(tmp_path, models, prefix=prefix).start()
        steps = []
        try:
            with TrainerClient(trainer.address) as client, IndexClient(index.address) as reader:
                # Published by the trainer, so it remembers version 1 when the directory is deleted.
                assert client.wait_ended(client.start(quick(1)).job_id).state == SUCCEEDED
                reader.wait_serving(1)

                def failing_job(seed: int, words: str) -> None:
                    ended = client.wait_ended(client.start(quick(seed)).job_id)
                    assert ended.state == FAILED and words in ended.error, ended
                    assert ended.published_version == 0
                    assert client.health() == SERVING
                    steps.append(f"{words}: job FAILED ({ended.error})")

                # Unreadable (and unwritable) to the trainer and the index.
                os.chmod(models, 0)
                try:
                    failing_job(2, "Permission denied")
                    assert reader.served_version() == 1 and reader.health() == SERVING
                finally:
                    os.chmod(models, 0o755)
                assert list_versions(models) == [1] and hidden_leftovers(models) == []

                # Full.
                if can_fill:
                    filler = volume / "filler"
                    with open(filler, "wb") as fh, contextlib.suppress(OSError):
                        fh.write(b"\0" * (8 << 20))
                    try:
                        failing_job(3, "No space left on device")
                    finally:
                        filler.unlink()
                    assert list_versions(models) == [1] and hidden_leftovers(models) == []
                    assert reader.served_version() == 1 and reader.health() == SERVING
                else:
                    steps.append("full: skipped (mount -t tmpfs not permitted)")

                # Deleted while the trainer is idle (its job history with it): the next job
                # recreates it and publishes a version numbered after every earlier one.
                shutil.rmtree(models)
                ended = client.wait_ended(client.start(quick(4)).job_id)
                assert ended.state == SUCCEEDED and ended.published_version == 2, ended
                steps.append("deleted: the next job recreated it and published version 2")
                reader.wait_serving(2)
                assert (models / ".trainer" / "jobs.json").exists()  # history written again
            print("\nmodels dir faults: " + "; ".join(steps))
        finally:
            with contextlib.suppress(OSError):
                os.chmod(models, 0o755)
            assert trainer.stop() == 0, trainer.tail()
            assert index.stop() == 0, index.tail()


def test_concurrent_start_requests_start_exactly_one_job(tmp_path):
    """Eight clients call StartTraining at once: exactly one job starts, the others get
    ALREADY_EXISTS naming it. (Cancelled at once: only the race matters here.)"""
    models = tmp_path / "models"
    trainer = trainer_process(tmp_path, models).start()
    try:
        with TrainerClient(trainer.address) as client:
            results: list = []
            lock = threading.Lock()

            def start(seed: int) -> None:
                try:
                    outcome = client.start(quick(seed))
                except grpc.RpcError as error:
                    outcome = error
                with lock:
                    results.append(outcome)

            threads = [threading.Thread(target=start, args=(seed,)) for seed in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            started = [r for r in results if isinstance(r, trainer_pb2.TrainingJob)]
            refused = [r for r in results if isinstance(r, grpc.RpcError)]
            assert len(started) == 1 and len(refused) == 7
            assert all(r.code() == grpc.StatusCode.ALREADY_EXISTS and started[0].job_id in r.details()
                       for r in refused)
            client.stub.CancelTraining(trainer_pb2.CancelTrainingRequest(job_id=started[0].job_id), timeout=30)
            assert client.wait_ended(started[0].job_id).state == trainer_pb2.JOB_STATE_CANCELLED
            assert list_versions(models) == []
    finally:
        assert trainer.stop() == 0, trainer.tail()
