"""Resolving data paths, confined to the data directory when the trainer has one.

A path that comes from a request must not read outside ``--data-dir``: absolute paths and ``..``
components are refused outright, and every directory and file is resolved with
``os.path.realpath`` and checked with ``os.path.commonpath``, so a symlink that leads out is
refused too. (A symlink swapped between the check and the open is out of scope: the data
directory is the operator's.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

from trainer_service.data.errors import DataError, DataPathError


@dataclass(frozen=True)
class DataFile:
    """A resolved path: ``path`` to open, ``shown`` to name it in messages (relative to the data
    directory when there is one, so messages do not reveal the server's layout)."""

    path: str
    shown: str


class DataRoot:
    """Resolves the paths of a data source; with a directory, confines them to it.

    ``DataRoot(None)`` resolves relative to the working directory and confines nothing (the
    command line, where the operator names the files).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        if directory is None:
            self._root: str | None = None
            return
        root = os.path.realpath(os.fspath(directory))
        if not os.path.isdir(root):
            raise DataError(f"data directory {os.fspath(directory)!r} does not exist or is not a directory")
        self._root = root

    @property
    def confined(self) -> bool:
        """True when paths are confined to a data directory."""
        return self._root is not None

    def resolve(self, path: str | os.PathLike[str]) -> DataFile:
        """Resolves a path as the user wrote it. Confined: relative to the data directory, and
        refused (``DataPathError``) when absolute, containing ``..``, or resolving outside."""
        text = os.fspath(path)
        if "\x00" in text:
            raise DataPathError(f"data path {text!r} contains a NUL character")
        if self._root is None:
            if text == "":
                raise DataError("data path is empty")
            return DataFile(path=text, shown=text)
        if text == "":
            raise DataPathError("data path is empty; give a path relative to the data directory")
        if os.path.isabs(text) or PureWindowsPath(text).anchor or text.startswith(("/", "\\")):
            raise DataPathError(f"data path {text!r} is absolute; give a path relative to the data directory")
        parts = PurePosixPath(text.replace("\\", "/")).parts
        if ".." in parts:
            raise DataPathError(f"data path {text!r} contains '..'; paths must stay inside the data directory")
        return self._confine(os.path.join(self._root, text), text)

    def child(self, directory: DataFile, name: str) -> DataFile:
        """A file named ``name`` inside an already resolved directory, checked again (the file
        itself may be a symlink that leads out)."""
        shown = f"{directory.shown.rstrip('/')}/{name}" if directory.shown not in ("", ".") else name
        joined = os.path.join(directory.path, name)
        if self._root is None:
            return DataFile(path=joined, shown=shown)
        return self._confine(joined, shown)

    def _confine(self, joined: str, shown: str) -> DataFile:
        assert self._root is not None
        real = os.path.realpath(joined)
        if os.path.commonpath([real, self._root]) != self._root:
            raise DataPathError(f"data path {shown!r} resolves outside the data directory (a symlink?)")
        return DataFile(path=real, shown=shown)
