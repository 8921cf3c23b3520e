"""Publishing a version atomically, and retention.

A publish writes every file into ``MODELS_DIR/.tmp-<version>-<random>/``, fsyncs each file (once,
on a few threads at a time: the waits overlap, and each file's digest is read back from the
page cache meanwhile), writes ``manifest.json`` last, fsyncs the directory, renames it to
``MODELS_DIR/<version>`` and fsyncs ``MODELS_DIR``. A crash at any point leaves either no new version or a complete one; the
leftover temporary directory is removed by the next publish. Publishers are serialized by an
exclusive ``flock`` on ``MODELS_DIR/.publish.lock``.

The publisher builds the indexes and precomputed lists first (``ranking.build_indexes``) and hands
them to ``publish_version``, which only writes them: the store knows the files, not how they are
made, and the lock is not held while they are built.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from model_store.artifacts import ArtistTags, BuiltIndexes, Lookups, ModelArtifacts
from model_store.checksums import file_digest
from model_store.errors import PublishError
from model_store.format import (
    ARRAY_FILES,
    CHECKSUM_BY_FORMAT,
    FORMAT_VERSION,
    LOOKUP_FILES,
    MANIFEST_NAME,
    PRECOMPUTED_FILES,
    RECOMMEND_INDEX_FILE,
    SIMILAR_INDEX_FILE,
    TAG_FILES,
    TEMP_PREFIX,
    FileEntry,
    Manifest,
    TrainingRecord,
)
from model_store.reader import list_versions

log = logging.getLogger(__name__)

LOCK_NAME = ".publish.lock"
TRASH_PREFIX = ".trash-"
DEFAULT_KEEP = 3

# Test hook: called with a step name at each step of a publish ("files-written", "manifest-written",
# "renamed"), so fault-injection tests can kill the process at a chosen point.
PublishHook = Callable[[str], None]


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as .npy (fsynced with the others, see ``_synced_entries``)."""
    with open(path, "xb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def _save_index(path: Path, index: AnnoyIndex) -> None:
    index.save(str(path))  # Annoy then serves the index object from the saved file, memory-mapped


@contextlib.contextmanager
def publish_lock(models_dir: Path) -> Iterator[None]:
    """Hold the exclusive publish lock of ``models_dir`` (blocks until it is free)."""
    fd = os.open(models_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def clean_stale(models_dir: Path) -> list[str]:
    """Remove temporary and trash directories left by crashed publishes. Call with the lock held."""
    removed = []
    for entry in models_dir.iterdir():
        if entry.name.startswith((TEMP_PREFIX, TRASH_PREFIX)) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("removed stale publish leftovers: %s", ", ".join(sorted(removed)))
    return removed


def apply_retention(models_dir: Path, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` versions (rename to trash first, so no reader ever sees a
    half-deleted version). Mapped files stay readable to a process that has them open."""
    if keep <= 0:
        return []
    versions = list_versions(models_dir)
    doomed = versions[:-keep] if len(versions) > keep else []
    for version in doomed:
        trash = models_dir / f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(models_dir / str(version), trash)
            shutil.rmtree(trash, ignore_errors=True)
        except OSError as exc:
            log.warning("retention could not remove version %s: %s", version, exc)
    return doomed


def publish_version(
    models_dir: str | os.PathLike,
    artifacts: ModelArtifacts,
    *,
    indexes: BuiltIndexes,
    data_source: str,
    data_fingerprint: str,
    num_interactions: int,
    hyperparameters: dict,
    metrics: dict,
    keep: int = DEFAULT_KEEP,
    min_version: int = 1,
    hook: PublishHook | None = None,
    training: TrainingRecord | None = None,
    play_log_position: int = 0,
) -> Manifest:
    """Write ``artifacts`` and ``indexes`` (built for them by ``ranking.build_indexes``) as the next
    version of ``models_dir`` and return its manifest (``training``: the optional manifest section
    on how it was trained; ``play_log_position``: the play log position the training read through).

    The version number is one more than the highest on disk and at least ``min_version`` (a
    trainer passes one more than the highest it ever published, so numbers keep growing even if
    the directory was emptied). Raises PublishError (nothing published) on any I/O failure.
    """
    artifacts.check()
    indexes.check(artifacts)
    root = Path(models_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with publish_lock(root):
            clean_stale(root)
            existing = list_versions(root)
            version = max([min_version - 1, *existing]) + 1
            tmp = root / f"{TEMP_PREFIX}{version}-{uuid.uuid4().hex[:12]}"
            tmp.mkdir()
            try:
                manifest = _write_files(tmp, version, artifacts, data_source, data_fingerprint,
                                        num_interactions, hyperparameters, metrics, indexes, hook,
                                        training, play_log_position)
                _fsync_path(tmp, directory=True)
                os.rename(tmp, root / str(version))
                _fsync_path(root, directory=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if hook:
                hook("renamed")
            apply_retention(root, keep)
    except OSError as exc:
        raise PublishError(f"could not publish to {root}: {exc.strerror or exc}") from exc
    log.info("published version %d to %s", version, root)
    return manifest


# Files fsynced (and digested) at once: fsync and the hashing release the GIL.
_SYNC_THREADS = 8


def _synced_entries(tmp: Path, algorithm: str) -> dict[str, FileEntry]:
    """fsync every file of ``tmp`` and return its manifest entry (size, digest), by file name."""

    def entry(path: Path) -> tuple[str, FileEntry]:
        _fsync_path(path)
        size, digest = file_digest(path, algorithm)
        return path.name, FileEntry(size=size, digest=digest, algorithm=algorithm)

    paths = sorted(tmp.iterdir())
    with ThreadPoolExecutor(max(1, min(_SYNC_THREADS, len(paths)))) as pool:
        return dict(pool.map(entry, paths))


def _write_files(tmp: Path, version: int, artifacts: ModelArtifacts, data_source: str, data_fingerprint: str,
                 num_interactions: int, hyperparameters: dict, metrics: dict, indexes: BuiltIndexes,
                 hook: PublishHook | None, training: TrainingRecord | None = None,
                 play_log_position: int = 0) -> Manifest:
    for name, filename in ARRAY_FILES.items():
        _save_array(tmp / filename, getattr(artifacts, name))
    # Written in every format-3 version: no tags is an empty vocabulary, so the file set is fixed.
    tags = artifacts.tags if artifacts.tags is not None else ArtistTags.empty(artifacts.num_artists)
    for name, filename in TAG_FILES.items():
        _save_array(tmp / filename, getattr(tags, name))
    lookups = Lookups.build(artifacts)
    for name, filename in LOOKUP_FILES.items():
        _save_array(tmp / filename, getattr(lookups, name))
    # Format 4: a side built without an Annoy index (it serves exact) has no file.
    for filename, index in ((RECOMMEND_INDEX_FILE, indexes.recommend_index), (SIMILAR_INDEX_FILE, indexes.similar_index)):
        if index is not None:
            _save_index(tmp / filename, index)
    for name, filename in PRECOMPUTED_FILES.items():
        _save_array(tmp / filename, getattr(indexes.top, name))
    files = _synced_entries(tmp, CHECKSUM_BY_FORMAT[FORMAT_VERSION])
    if hook:
        hook("files-written")
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_version=version,
        created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        data_source=data_source,
        data_fingerprint=data_fingerprint,
        num_users=artifacts.num_users,
        num_artists=artifacts.num_artists,
        num_interactions=int(num_interactions),
        num_factors=artifacts.num_factors,
        hyperparameters=dict(hyperparameters),
        metrics=dict(metrics),
        recommend_search=indexes.recommend,
        similar_search=indexes.similar,
        files=files,
        precomputed=indexes.precomputed,
        training=training,
        play_log_position=play_log_position,
    )
    with open(tmp / MANIFEST_NAME, "x", encoding="utf-8") as fh:
        fh.write(manifest.dumps())
        fh.flush()
        os.fsync(fh.fileno())
    if hook:
        hook("manifest-written")
    return manifest
