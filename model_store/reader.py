"""Listing, validating and loading versions (formats 1 to 4).

Validation order: the manifest is read (size-capped), parsed and checked first; only then are the
files it names opened, each required to be a regular file (not a symlink) inside the version
directory, of the recorded size and checksum (SHA-256 in format 1, BLAKE3 in format 2; files are
hashed in parallel threads, which the hashes allow by releasing the GIL). Arrays are
memory-mapped read-only from the descriptor that was checked (never pickled objects), so several
processes serving one version share its pages and loading copies nothing; Annoy files are checked
for a sound structure (``model_store.annoy_file``), then memory-mapped. A format-4 side without an
Annoy index (``SearchConfig.has_index`` False) loads as None and serves exact.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from model_store.annoy_file import check_annoy_structure
from model_store.artifacts import ArtistTags, Lookups, ModelArtifacts, PrecomputedTop
from model_store.checksums import fd_digest
from model_store.errors import InvalidVersionError
from model_store.format import (
    ARRAY_FILES,
    LOOKUP_FILES,
    PRECOMPUTED_FILES,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    RECOMMEND_INDEX_FILE,
    SIMILAR_INDEX_FILE,
    TAG_FILES,
    VERSION_DIR_PATTERN,
    Manifest,
    ManifestError,
)

# Threads hashing a version's files (each hash releases the GIL; BLAKE3 also splits big files).
_HASH_THREADS = max(1, min(4, os.cpu_count() or 1))


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
    """Validate the manifest, then every file's type, size and (optionally) checksum.

    Returns the manifest; raises InvalidVersionError naming the first problem found (in the
    manifest's file order).
    """
    vdir = Path(version_dir)
    manifest = read_manifest(vdir)
    handles = []
    try:
        for name, entry in manifest.files.items():
            fh = _open_regular(vdir / name)
            handles.append((name, entry, fh))
            size = os.fstat(fh.fileno()).st_size
            if size != entry.size:
                raise InvalidVersionError(vdir, f"{name} is {size} bytes, manifest says {entry.size}")
        if verify_checksums:
            with ThreadPoolExecutor(_HASH_THREADS) as pool:
                digests = list(pool.map(lambda h: fd_digest(h[2].fileno(), h[1].algorithm)[1], handles))
            for (name, entry, _), digest in zip(handles, digests):
                if digest != entry.digest:
                    raise InvalidVersionError(vdir, f"{name} checksum mismatch ({entry.algorithm} {digest[:12]}..., "
                                                    f"manifest says {entry.digest[:12]}...)")
    finally:
        for _, _, fh in handles:
            fh.close()
    return manifest


@dataclass
class LoadedVersion:
    """A validated version in memory: its manifest, arrays, and its Annoy indexes (memory-mapped;
    None for a side the version holds no index for, format 4).

    Call ``close()`` when no request uses it any more, to unmap the Annoy files.
    """

    path: Path
    manifest: Manifest
    artifacts: ModelArtifacts
    recommend_index: AnnoyIndex | None
    similar_index: AnnoyIndex | None
    lookups: Lookups
    top: PrecomputedTop | None = None  # format 2: precomputed answers
    # Format 3: the artists' tags; None for formats 1 and 2 and for a version stored without tags.
    tags: ArtistTags | None = None

    @property
    def version(self) -> int:
        return self.manifest.model_version

    def close(self) -> None:
        for index in (self.recommend_index, self.similar_index):
            if index is not None:
                index.unload()


def _load_array(vdir: Path, filename: str) -> np.ndarray:
    """A .npy file memory-mapped read-only (copy-on-nothing: pages shared between processes)."""
    with _open_regular(vdir / filename) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if dtype.hasobject:
                raise ValueError("object arrays are not allowed")
            offset = fh.tell()
            count = int(np.prod(shape, dtype=np.int64))
            size = os.fstat(fh.fileno()).st_size
            if offset + count * dtype.itemsize != size:
                raise ValueError(f"{size - offset} data bytes for shape {shape} of {dtype}")
            if count == 0:
                return np.zeros(shape, dtype=dtype)
            return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape,
                             order="F" if fortran else "C").view(np.ndarray)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidVersionError(vdir, f"{filename} is not a valid .npy array: {exc}") from None


def _check_structure_async(pool: ThreadPoolExecutor, vdir: Path, filename: str, dims: int, expected_items: int):
    """Start the Annoy structure check of ``filename`` in ``pool`` (it reads the whole file, so it
    runs while the checksums are computed). The future's result is None or the reason it failed."""
    try:
        fh = _open_regular(vdir / filename)
    except InvalidVersionError as exc:
        return pool.submit(lambda: exc.reason)

    def check() -> str | None:
        try:
            # Annoy trusts its file: a malformed one (even with matching checksums) could crash us.
            check_annoy_structure(fh, dims, expected_items)
            return None
        except (ValueError, OSError) as exc:
            return f"{filename} is not a valid Annoy index: {exc}"
        finally:
            fh.close()

    return pool.submit(check)


def _load_annoy(vdir: Path, filename: str, dims: int, expected_items: int, structure_problem: str | None) -> AnnoyIndex:
    path = vdir / filename
    with _open_regular(path):
        pass  # type and symlink check; Annoy opens the path itself
    if structure_problem is not None:
        raise InvalidVersionError(vdir, structure_problem)
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
    first = read_manifest(vdir)
    with ThreadPoolExecutor(2) as pool:
        structure = [_check_structure_async(pool, vdir, filename, search.dims, first.num_artists)
                     if search.has_index else None
                     for filename, search in ((RECOMMEND_INDEX_FILE, first.recommend_search),
                                              (SIMILAR_INDEX_FILE, first.similar_search))]
        manifest = validate_version(vdir, verify_checksums=verify_checksums)
        problems = [None if future is None else future.result() for future in structure]
    if manifest != first:
        raise InvalidVersionError(vdir, "manifest.json changed while the version was being validated")
    return _load_validated(vdir, manifest, problems)


def _load_validated(vdir: Path, manifest: Manifest, annoy_problems: list[str | None]) -> LoadedVersion:
    arrays = {name: _load_array(vdir, filename) for name, filename in ARRAY_FILES.items()}
    tags = None
    if manifest.format_version >= 3:
        tags = ArtistTags(**{name: _load_array(vdir, f) for name, f in TAG_FILES.items()})
    artifacts = ModelArtifacts(**arrays, tags=tags)
    top = None
    try:
        if manifest.format_version >= 2:
            artifacts.check(unique_ids=False)  # Lookups.check proves uniqueness, vectorized
            lookups = Lookups(**{name: _load_array(vdir, f) for name, f in LOOKUP_FILES.items()})
            lookups.check(artifacts)
            top = PrecomputedTop(**{name: _load_array(vdir, f) for name, f in PRECOMPUTED_FILES.items()})
            top.check(artifacts, manifest.precomputed.recommend_n, manifest.precomputed.similar_n)
        else:
            artifacts.check()
            lookups = Lookups.build(artifacts)
    except ValueError as exc:
        raise InvalidVersionError(vdir, f"inconsistent arrays: {exc}") from None
    if tags is not None and not tags.num_tags:
        artifacts = dataclasses.replace(artifacts, tags=None)  # an empty vocabulary: stored without tags
    counts = (artifacts.num_users, artifacts.num_artists, artifacts.num_factors)
    if counts != (manifest.num_users, manifest.num_artists, manifest.num_factors):
        raise InvalidVersionError(vdir, f"arrays hold (users, artists, factors) = {counts}, manifest says "
                                        f"{(manifest.num_users, manifest.num_artists, manifest.num_factors)}")
    if manifest.recommend_search.dims != manifest.num_factors + 2 or manifest.similar_search.dims != manifest.num_factors:
        raise InvalidVersionError(vdir, "search dims do not match num_factors")
    rec = sim = None
    if manifest.recommend_search.has_index:
        rec = _load_annoy(vdir, RECOMMEND_INDEX_FILE, manifest.recommend_search.dims, manifest.num_artists,
                          annoy_problems[0])
    try:
        if manifest.similar_search.has_index:
            sim = _load_annoy(vdir, SIMILAR_INDEX_FILE, manifest.similar_search.dims, manifest.num_artists,
                              annoy_problems[1])
    except BaseException:
        if rec is not None:
            rec.unload()
        raise
    return LoadedVersion(path=vdir, manifest=manifest, artifacts=artifacts, recommend_index=rec, similar_index=sim,
                         lookups=lookups, top=top, tags=artifacts.tags)
