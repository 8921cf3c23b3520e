"""The models directory deleted, emptied, made unreadable, or full.

Index service (a real process serving a version): it keeps serving from memory, health stays
SERVING, and it picks up new versions once the directory is back.

Unreadable as root: tests run as root, and root ignores ``chmod 000`` (CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH). The services run here without those two capabilities
(``setpriv --bounding-set=-dac_override,-dac_read_search``: still uid 0, but file permissions
apply as to any user), so ``chmod 000`` has its real effect. Not root: plain ``chmod``. Without
``setpriv`` the test is skipped.

Full: a 2 MiB tmpfs mounted as the models dir (root only; skipped with the reason when ``mount``
is refused), filled up with a file: a publish fails with ``PublishError`` and leaves nothing
behind, the index keeps serving, and once space is freed the next version is published and taken.

The trainer's side of the same faults (its job fails with a clear error and publishes nothing)
is in tests/test_faults_trainer.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from model_store import PublishError, list_versions
from test_faults_harness import (
    SERVING,
    IndexClient,
    index_process,
    marked_model,
    marked_top,
    publish_model,
    wait_until,
    without_file_permission_override,
)

pytestmark = pytest.mark.slow


def assert_serves(client: IndexClient, version: int) -> None:
    assert client.health() == SERVING
    response = client.recommend("u1", 1, include_seen=True)
    assert response.model_version == version
    assert [a.artist_id for a in response.artists] == [marked_top(version)]


WAITING = "no model versions in"


def wait_noticed_no_versions(process, before: int) -> None:
    """Wait until the index has logged that it sees no versions (once more than ``before``
    times): it has looked at the changed directory and kept what it serves."""
    wait_until(lambda: process.log().count(WAITING) > before, "the index noticed the directory has no versions")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m"):
    """Mount a tmpfs of ``size`` at ``path`` (skips the test when mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(directory: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system of ``directory`` with one file, leaving about ``leave_bytes`` free."""
    filler = directory / "filler"
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as fh:
        try:
            fh.write(b"\0" * max(0, free - leave_bytes))
        except OSError:
            pass  # full already: that is the point
    return filler


def test_deleted_and_emptied_models_dir_keeps_serving_then_takes_new_versions(tmp_path):
    models = tmp_path / "models"
    publish_model(models, marked_model(1))
    index = index_process(tmp_path, models).start()
    try:
        with IndexClient(index.address) as client:
            client.wait_serving(1)
            shutil.rmtree(models)  # deleted
            wait_noticed_no_versions(index, 0)
            assert_serves(client, 1)
            publish_model(models, marked_model(2), min_version=2)  # recreated
            client.wait_serving(2)
            assert_serves(client, 2)

            for entry in models.iterdir():  # emptied, the directory itself kept
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            wait_noticed_no_versions(index, 1)
            assert_serves(client, 2)
            publish_model(models, marked_model(3), min_version=3)
            client.wait_serving(3)
            assert client.rejected() == {}
        assert index.process.poll() is None
    finally:
        assert index.stop() == 0, index.tail()


def test_unreadable_models_dir_keeps_serving_then_takes_new_versions(tmp_path):
    prefix = without_file_permission_override()
    if prefix is None:
        pytest.skip("running as root without setpriv(1): chmod 000 would not stop this process")
    models = tmp_path / "models"
    publish_model(models, marked_model(1))
    index = index_process(tmp_path, models, prefix=prefix).start()
    try:
        with IndexClient(index.address) as client:
            client.wait_serving(1)
            os.chmod(models, 0)  # the whole directory unreadable
            wait_noticed_no_versions(index, 0)
            assert_serves(client, 1)
            os.chmod(models, 0o755)
            publish_model(models, marked_model(2))
            client.wait_serving(2)

            # One new version unreadable: refused with the reason, the old one keeps serving;
            # readable again, it is looked at again and taken.
            publish_model(tmp_path / "staging", marked_model(3), min_version=3)
            os.chmod(tmp_path / "staging" / "3", 0)
            os.rename(tmp_path / "staging" / "3", models / "3")
            wait_until(lambda: 3 in client.rejected(), "unreadable version 3 refused")
            assert "Permission denied" in client.rejected()[3]
            assert_serves(client, 2)
            os.chmod(models / "3", 0o755)
            client.wait_serving(3)
            assert client.rejected() == {}
        assert index.process.poll() is None
    finally:
        with contextlib.suppress(OSError):
            os.chmod(models, 0o755)
        assert index.stop() == 0, index.tail()


def test_full_models_dir_fails_the_publish_cleanly_and_the_index_keeps_serving(tmp_path):
    models = tmp_path / "models"
    with tmpfs(models):
        publish_model(models, marked_model(1))
        index = index_process(tmp_path, models).start()
        try:
            with IndexClient(index.address) as client:
                client.wait_serving(1)
                filler = fill(models)
                with pytest.raises(PublishError, match="No space left on device"):
                    publish_model(models, marked_model(2))
                assert list_versions(models) == [1]
                assert [p.name for p in models.iterdir() if p.name.startswith(".tmp-")] == []
                assert_serves(client, 1)
                assert client.rejected() == {}
                filler.unlink()
                publish_model(models, marked_model(2))
                client.wait_serving(2)
                assert_serves(client, 2)
            assert index.process.poll() is None
        finally:
            assert index.stop() == 0, index.tail()
