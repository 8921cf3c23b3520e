"""A publishing process killed with SIGKILL at every step of a publish, while an index-service
process serves under continuous load.

The publisher is a child process running ``model_store.publish_version``; it sends itself a real
SIGKILL (no cleanup, no ``finally``) at one step:

- before writing files (temporary directory made, nothing in it), during (some arrays written),
  while building the Annoy indexes (arrays written, no index), after writing files (the model
  store's ``files-written`` hook), after writing the manifest and before the rename
  (``manifest-written``), and after the rename (``renamed``).

Before the rename nothing new is visible: no version directory, the index keeps serving the last
good version and never logs a refusal (it never saw a partial version). After the rename the
version is complete and valid, and the index takes it. In every case the next publish removes the
leftovers and publishes a complete version, and the client under load sees no failed request.
(tests/test_model_store.py::test_crash_before_rename_leaves_no_visible_version covers the two
hook steps with ``os._exit`` and no index; the trainer process killed mid-publish is in
tests/test_faults_trainer.py.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model_store import list_versions, validate_version
from test_faults_harness import Hammer, IndexClient, index_process, marked_model, marked_top, publish_model, wait_until

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# Runs in the child: publish marked_model(VERSION), SIGKILL itself at STEP.
KILLED_PUBLISH = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import model_store.writer as writer
    from test_faults_harness import marked_model, publish_model

    STEP = {step!r}

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    saves = 0
    real_save = writer._save_array
    def save_array(path, array):
        global saves
        saves += 1
        if STEP == "before-files" and saves == 1:
            die()
        real_save(path, array)
        if STEP == "during-files" and saves == 4:
            die()
    writer._save_array = save_array

    real_save_index = writer._save_index
    def save_index(path, index):
        if STEP == "saving-indexes":
            die()
        real_save_index(path, index)
    writer._save_index = save_index

    def hook(step):
        if step == STEP:
            die()

    publish_model({models!r}, marked_model({version}), hook=hook, min_version={version})
    print("published without being killed")
""")

STEPS_BEFORE_RENAME = ["before-files", "during-files", "saving-indexes", "files-written", "manifest-written"]


def publish_killed_at(models: Path, step: str, version: int) -> subprocess.CompletedProcess:
    script = KILLED_PUBLISH.format(tests=str(TESTS), step=step, models=str(models), version=version)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def hidden_leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.name.startswith((".tmp-", ".trash-")))


def test_sigkill_at_every_publish_step_never_shows_a_partial_version(tmp_path):
    models = tmp_path / "models"
    publish_model(models, marked_model(1), min_version=1)
    index = index_process(tmp_path, models).start()
    try:
        with IndexClient(index.address) as client, Hammer(index.address) as load:
            client.wait_serving(1)
            good = 1
            for step in STEPS_BEFORE_RENAME:
                attempt = good + 1
                proc = publish_killed_at(models, step, attempt)
                assert proc.returncode == -signal.SIGKILL, (step, proc.returncode, proc.stdout, proc.stderr)
                # Nothing visible; a hidden temporary directory is all that is left.
                assert list_versions(models) == list(range(1, good + 1)), step
                assert len(hidden_leftovers(models)) == 1, (step, hidden_leftovers(models))
                # The index never saw a partial version and keeps serving the last good one.
                assert client.served_version() == good
                assert [a.artist_id for a in client.recommend("u0", 1, include_seen=True).artists] == [
                    marked_top(good)]
                assert client.rejected() == {}, step
                # The next publish removes the leftover and publishes the same number, complete.
                manifest = publish_model(models, marked_model(attempt), min_version=attempt)
                assert manifest.model_version == attempt
                assert hidden_leftovers(models) == [], step
                validate_version(models / str(attempt))
                client.wait_serving(attempt)
                good = attempt

            # Killed right after the rename: the version is complete, valid, and taken.
            attempt = good + 1
            proc = publish_killed_at(models, "renamed", attempt)
            assert proc.returncode == -signal.SIGKILL, proc.stderr
            assert list_versions(models)[-1] == attempt
            validate_version(models / str(attempt))
            client.wait_serving(attempt)
            assert hidden_leftovers(models) == []
            wait_until(lambda: load.versions >= {1, attempt}, "load saw the first and last versions")
        assert load.errors == [], load.errors[:5]
        assert load.total > 0
        assert "refusing model version" not in index.log()
        print(f"\npublish kills: {len(STEPS_BEFORE_RENAME) + 1} kills, {load.total} requests, {len(load.errors)} failed")
    finally:
        assert index.stop() == 0, index.tail()
