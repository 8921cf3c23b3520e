"""Listing, validating and loading versions.

Validation order: the manifest is read (size-capped), parsed and checked first; only then are the
files it names opened, each required to be a regular file (not a symlink) inside the version
directory, of the recorded size and SHA-256. Arrays load with ``allow_pickle=False``; Annoy files
are checked for a sound structure (``model_store.annoy_file``), then memory-mapped.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from model_store.annoy_file import check_annoy_structure
from model_store.artifacts import ModelArtifacts
from model_store.errors import InvalidVersionError
from model_store.format import (
    ARRAY_FILES,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    RECOMMEND_INDEX_FILE,
    SIMILAR_INDEX_FILE,
    VERSION_DIR_PATTERN,
    Manifest,
    ManifestError,
)

_CHUNK = 1 << 20


def list_versions(models_dir: str | os.PathLike) -> list[int]:
    """Published version numbers in ``models_dir``, oldest first. Only directories named by a
    positive integer count (temporary and trash directories are hidden). Missing dir: []."""
    root = Path(models_dir)
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    versions = []
    for entry in entries:
        if VERSION_DIR_PATTERN.match(entry.name) and entry.is_dir(follow_symlinks=False):
            versions.append(int(entry.name))
    return sorted(versions)


def _open_regular(path: Path):
    """Open a file for reading, refusing symlinks and anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise InvalidVersionError(path.parent, f"cannot open {path.name}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidVersionError(path.parent, f"{path.name} is not a regular file")
    return os.fdopen(fd, "rb")


def read_manifest(version_dir: str | os.PathLike) -> Manifest:
    """Parse and validate ``version_dir/manifest.json``; raise InvalidVersionError with the reason."""
    vdir = Path(version_dir)
    with _open_regular(vdir / MANIFEST_NAME) as fh:
        text = fh.read(MAX_MANIFEST_BYTES + 1)
    try:
        manifest = Manifest.loads(text)
    except ManifestError as exc:
        raise InvalidVersionError(vdir, f"bad manifest: {exc}") from None
    if VERSION_DIR_PATTERN.match(vdir.name) and int(vdir.name) != manifest.model_version:
        raise InvalidVersionError(
            vdir, f"manifest says model_version {manifest.model_version} but the directory is {vdir.name}")
    return manifest


def validate_version(version_dir: str | os.PathLike, verify_checksums: bool = True) -> Manifest:
    """Validate the manifest, then every file's type, size and (optionally) SHA-256.

    Returns the manifest; raises InvalidVersionError naming the first problem found.
    """
    vdir = Path(version_dir)
    manifest = read_manifest(vdir)
    for name, entry in manifest.files.items():
        with _open_regular(vdir / name) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size != entry.size:
                raise InvalidVersionError(vdir, f"{name} is {size} bytes, manifest says {entry.size}")
            if verify_checksums:
                digest = hashlib.sha256()
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                if digest.hexdigest() != entry.sha256:
                    raise InvalidVersionError(vdir, f"{name} checksum mismatch (sha256 {digest.hexdigest()[:12]}..., "
                                                    f"manifest says {entry.sha256[:12]}...)")
    return manifest


@dataclass
class LoadedVersion:
    """A validated version in memory: its manifest, arrays, and both Annoy indexes (memory-mapped).

    Call ``close()`` when no request uses it any more, to unmap the Annoy files.
    """

    path: Path
    manifest: Manifest
    artifacts: ModelArtifacts
    recommend_index: AnnoyIndex
    similar_index: AnnoyIndex

    @property
    def version(self) -> int:
        return self.manifest.model_version

    def close(self) -> None:
        self.recommend_index.unload()
        self.similar_index.unload()


def _load_array(vdir: Path, name: str) -> np.ndarray:
    with _open_regular(vdir / ARRAY_FILES[name]) as fh:
        try:
            return np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidVersionError(vdir, f"{ARRAY_FILES[name]} is not a valid .npy array: {exc}") from None


def _load_annoy(vdir: Path, filename: str, dims: int, expected_items: int) -> AnnoyIndex:
    path = vdir / filename
    with _open_regular(path):
        pass  # type and symlink check; Annoy opens the path itself
    try:
        # Annoy trusts its file: a malformed one (even with matching checksums) could crash us.
        check_annoy_structure(str(path), dims, expected_items)
    except (ValueError, OSError) as exc:
        raise InvalidVersionError(vdir, f"{filename} is not a valid Annoy index: {exc}") from None
    index = AnnoyIndex(dims, "angular")
    try:
        index.load(str(path), prefault=False)
    except OSError as exc:
        raise InvalidVersionError(vdir, f"cannot load Annoy index {filename}: {exc}") from None
    if index.get_n_items() != expected_items:
        n = index.get_n_items()
        index.unload()
        raise InvalidVersionError(vdir, f"{filename} has {n} items, expected {expected_items}")
    return index


def load_version(version_dir: str | os.PathLike, verify_checksums: bool = True) -> LoadedVersion:
    """Validate and load a version. Raises InvalidVersionError (never anything else for bad files)."""
    vdir = Path(version_dir)
    manifest = validate_version(vdir, verify_checksums=verify_checksums)
    arrays = {name: _load_array(vdir, name) for name in ARRAY_FILES}
    artifacts = ModelArtifacts(**arrays)
    try:
        artifacts.check()
    except ValueError as exc:
        raise InvalidVersionError(vdir, f"inconsistent arrays: {exc}") from None
    counts = (artifacts.num_users, artifacts.num_artists, artifacts.num_factors)
    if counts != (manifest.num_users, manifest.num_artists, manifest.num_factors):
        raise InvalidVersionError(vdir, f"arrays hold (users, artists, factors) = {counts}, manifest says "
                                        f"{(manifest.num_users, manifest.num_artists, manifest.num_factors)}")
    if manifest.recommend_search.dims != manifest.num_factors + 2 or manifest.similar_search.dims != manifest.num_factors:
        raise InvalidVersionError(vdir, "search dims do not match num_factors")
    rec = _load_annoy(vdir, RECOMMEND_INDEX_FILE, manifest.recommend_search.dims, manifest.num_artists)
    try:
        sim = _load_annoy(vdir, SIMILAR_INDEX_FILE, manifest.similar_search.dims, manifest.num_artists)
    except BaseException:
        rec.unload()
        raise
    return LoadedVersion(path=vdir, manifest=manifest, artifacts=artifacts, recommend_index=rec, similar_index=sim)
