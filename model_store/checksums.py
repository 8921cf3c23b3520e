"""File checksums of a version: SHA-256 (format 1) and BLAKE3 (format 2).

Files are hashed through a read-only memory map of an already opened descriptor (no copy, and the
file checked as regular is the file hashed). Both hashes release the GIL while they work, so a
version being validated in a background thread does not stall requests; BLAKE3 also uses every
core on large files.
"""

from __future__ import annotations

import hashlib
import mmap
import os

import blake3

ALGORITHMS = ("sha256", "blake3")


def _hasher(algorithm: str):
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "blake3":
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def fd_digest(fd: int, algorithm: str) -> tuple[int, str]:
    """(size in bytes, hex digest) of the open regular file ``fd`` (its whole content)."""
    size = os.fstat(fd).st_size
    hasher = _hasher(algorithm)
    if size:
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
            hasher.update(view)
    return size, hasher.hexdigest()


def file_digest(path: str | os.PathLike, algorithm: str) -> tuple[int, str]:
    """(size in bytes, hex digest) of the file at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return fd_digest(fd, algorithm)
    finally:
        os.close(fd)
