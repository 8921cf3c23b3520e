"""Hot swap without gRPC: ModelHolder reference counting and VersionWatcher's choice of version
(newest valid, rejected versions remembered, disappearing and recreated directories, pinning)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime, timezone

import pytest

import index_service.watcher as watcher_module
from index_service.holder import ModelHolder, ServedVersion
from index_service.serving_model import RecommendQuery
from index_service.watcher import VersionWatcher
from model_store.format import MANIFEST_NAME, RECOMMEND_INDEX_FILE
from model_store.checksums import file_digest
from musicrec.rpc.errors import Unavailable
from conftest import ANNOY_BUILD


class FakeModel:
    def __init__(self, version: int):
        self.version = version
        self.closed = False

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True


def served(version: int) -> ServedVersion:
    return ServedVersion(model=FakeModel(version), loaded_at=datetime.now(timezone.utc), load_duration_ms=1.0)


# -- ModelHolder -------------------------------------------------------------------------------

def test_holder_without_a_version_is_unavailable():
    with pytest.raises(Unavailable):
        ModelHolder().acquire()


def test_swap_unloads_an_unused_version_at_once():
    holder = ModelHolder()
    first, second = served(1), served(2)
    holder.swap(first)
    with holder.acquire() as model:
        assert model.version == 1
    assert holder.swap(second) is first
    assert first.model.closed and not second.model.closed


def test_swap_waits_for_the_last_request_of_the_old_version():
    holder = ModelHolder()
    first, second, third = served(1), served(2), served(3)
    holder.swap(first)
    lease_a, lease_b = holder.acquire(), holder.acquire()
    holder.swap(second)
    assert not first.model.closed  # two requests still use it
    with lease_a as model:
        assert model.version == 1  # a request keeps the version it started with
    assert not first.model.closed
    with holder.acquire() as model:
        assert model.version == 2  # new requests get the new version
    with lease_b:
        pass
    assert first.model.closed and first.users == 0
    holder.swap(third)
    assert second.model.closed
    holder.clear()
    assert third.model.closed
    with pytest.raises(Unavailable):
        holder.acquire()


def test_a_failing_request_still_releases_its_lease():
    holder = ModelHolder()
    first = served(1)
    holder.swap(first)
    with pytest.raises(RuntimeError):
        with holder.acquire():
            raise RuntimeError("request failed")
    assert first.users == 0
    holder.swap(served(2))
    assert first.model.closed


# -- VersionWatcher ----------------------------------------------------------------------------

@pytest.fixture
def watcher(models_dir):
    holder = ModelHolder()
    w = VersionWatcher(models_dir, holder)
    yield w
    holder.clear()


def served_version(w: VersionWatcher) -> int | None:
    return w.holder.current.version if w.holder.current else None


def test_empty_or_missing_dir_waits(watcher, models_dir):
    assert watcher.poll_once() is None  # missing
    models_dir.mkdir()
    assert watcher.poll_once() is None  # empty
    assert served_version(watcher) is None


def test_serves_the_newest_and_swaps_to_newer(watcher, publish, tiny_artifacts):
    publish(tiny_artifacts)
    publish(tiny_artifacts)
    first = watcher.poll_once()
    assert first is not None and first.version == 2
    assert watcher.poll_once() is None  # nothing new
    publish(tiny_artifacts)
    assert watcher.poll_once().version == 3
    assert first.model.closed
    assert first.load_duration_ms > 0


def corrupt_checksum(vdir):
    path = vdir / "artist_factors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate_annoy_keeping_manifest_consistent(vdir):
    path = vdir / RECOMMEND_INDEX_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    manifest_path = vdir / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    size, digest = file_digest(path, "blake3")
    manifest["files"][RECOMMEND_INDEX_FILE] = {"size": size, "blake3": digest}
    manifest_path.write_text(json.dumps(manifest))


def remove_manifest(vdir):
    (vdir / MANIFEST_NAME).unlink()


@pytest.mark.parametrize("corrupt, reason", [
    (corrupt_checksum, "checksum mismatch"),
    (truncate_annoy_keeping_manifest_consistent, "recommend.ann"),
    (remove_manifest, "manifest.json"),
])
def test_a_bad_version_is_refused_once_and_the_old_one_kept(watcher, publish, models_dir, tiny_artifacts,
                                                            monkeypatch, corrupt, reason):
    publish(tiny_artifacts)
    assert watcher.poll_once().version == 1
    publish(tiny_artifacts)
    corrupt(models_dir / "2")
    calls = []
    real_load = watcher_module.load_version
    monkeypatch.setattr(watcher_module, "load_version", lambda path: calls.append(path) or real_load(path))
    assert watcher.poll_once() is None
    assert served_version(watcher) == 1
    (rejection,) = watcher.rejected
    assert rejection.version == 2 and reason in rejection.reason
    assert watcher.poll_once() is None
    assert len(calls) == 1  # remembered: not validated again on every poll
    # A version that changes on disk is looked at again.
    os.utime(models_dir / "2", ns=(1, 1))
    watcher.poll_once()
    assert len(calls) == 2 and served_version(watcher) == 1
    # A newer good version is taken; the bad one stays listed while it is on disk.
    publish(tiny_artifacts)
    assert watcher.poll_once().version == 3
    assert [r.version for r in watcher.rejected] == [2]
    shutil.rmtree(models_dir / "2")
    watcher.poll_once()
    assert watcher.rejected == []


def test_only_unexpected_refusals_log_a_traceback(publish, models_dir, tiny_artifacts, monkeypatch, caplog):
    """A bad version is the model store's verdict: one line. A load or warm-up that fails for any
    other reason (here a bug) refuses the version too, with the traceback; the old one serves."""
    kinds: list[str] = []
    w = VersionWatcher(models_dir, ModelHolder(), on_refused=kinds.append)
    publish(tiny_artifacts)
    assert w.poll_once().version == 1
    publish(tiny_artifacts)
    corrupt_checksum(models_dir / "2")
    publish(tiny_artifacts)
    real_load = watcher_module.load_version

    def load(path):
        if path.name == "3":
            raise RuntimeError("a bug while loading")
        return real_load(path)

    monkeypatch.setattr(watcher_module, "load_version", load)
    with caplog.at_level(logging.WARNING, logger=watcher_module.__name__):
        assert w.poll_once() is None  # 3, then 2: both refused
        publish(tiny_artifacts)
        monkeypatch.setattr(watcher_module.ServingModel, "warm_up", lambda self: 1 / 0)
        assert w.poll_once() is None
    assert served_version(w) == 1 and kinds == ["unreadable", "invalid", "warm_up"]
    refusals = {r.version: r for r in caplog.records if r.getMessage().startswith("refusing")}
    assert refusals[2].exc_info is None and "checksum mismatch" in refusals[2].getMessage()
    assert refusals[3].exc_info[0] is RuntimeError
    assert "cannot load: RuntimeError: a bug while loading" in refusals[3].getMessage()
    assert refusals[4].exc_info[0] is ZeroDivisionError and "failed warm-up" in refusals[4].getMessage()
    assert [r.version for r in w.rejected] == [4, 3, 2]
    w.holder.clear()


def test_served_version_survives_deletion_and_a_recreated_dir_wins(watcher, publish, models_dir, tiny_artifacts):
    for _ in range(3):
        publish(tiny_artifacts)
    assert watcher.poll_once().version == 3
    shutil.rmtree(models_dir)
    assert watcher.poll_once() is None
    assert served_version(watcher) == 3  # kept in memory
    with watcher.holder.acquire() as model:
        assert model.recommend(RecommendQuery("u0", k=1)).indices.tolist() == [1]  # and still answering
    publish(tiny_artifacts)  # the recreated directory starts again at 1
    assert watcher.poll_once().version == 1


def test_a_version_replaced_under_the_same_number_is_reloaded(watcher, publish, models_dir, tiny_artifacts):
    publish(tiny_artifacts)
    first = watcher.poll_once()
    shutil.rmtree(models_dir / "1")
    publish(tiny_artifacts)
    again = watcher.poll_once()
    assert again is not None and again.version == 1 and again is not first
    assert first.model.closed


def test_pinned_version_is_served_and_never_swapped(publish, models_dir, tiny_artifacts):
    holder = ModelHolder()
    w = VersionWatcher(models_dir, holder, pinned=2)
    publish(tiny_artifacts)
    assert w.poll_once() is None  # version 2 not there yet: wait
    publish(tiny_artifacts)
    publish(tiny_artifacts)
    assert w.poll_once().version == 2
    publish(tiny_artifacts)
    assert w.poll_once() is None and holder.current.version == 2
    holder.clear()


def test_method_override_reaches_the_model(publish, models_dir, tiny_artifacts):
    holder = ModelHolder()
    publish(tiny_artifacts, build_settings=ANNOY_BUILD)  # both indexes, for the override to take
    VersionWatcher(models_dir, holder, recommend_method="annoy", similar_method="annoy").poll_once()
    assert holder.current.model.recommend_params.method == "annoy"
    assert holder.current.model.similar_params.method == "annoy"
    holder.clear()
