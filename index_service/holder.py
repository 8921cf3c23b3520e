"""The one reference to the version being served, with reference counting for safe unloading.

A request calls ``holder.acquire()`` once at its start and uses what it got to the end::

    with holder.acquire() as model:     # raises Unavailable when no version is loaded
        ranking = model.recommend(...)  # the same version for the whole request

A swap replaces the single reference (under a lock) and *retires* the old version: its Annoy
files are unmapped by whichever comes last, the swap (no request was using it) or the release of
the last request that was. No request ever sees a closed model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime

from index_service.response_encoding import ResponseEncoder
from index_service.serving_model import ServingModel
from musicrec.rpc.errors import Unavailable

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ServedVersion:
    """A ``ServingModel`` in service: when it was loaded, how long that took, the identity of its
    directory on disk (to notice a directory replaced under the same number), its response
    encoder, and the number of requests using it. Use through ``ModelHolder.acquire()`` as a context manager."""

    model: ServingModel
    loaded_at: datetime
    load_duration_ms: float
    identity: tuple = ()
    encoder: ResponseEncoder | None = None  # this version's response bytes (see response_encoding)
    _holder: "ModelHolder | None" = field(default=None, repr=False)
    users: int = 0
    retired: bool = False

    @property
    def version(self) -> int:
        return self.model.version

    def __enter__(self) -> ServingModel:
        return self.model

    def __exit__(self, *exc_info) -> None:
        self._holder.release(self)


class ModelHolder:
    """Holds the served version; thread-safe (the watcher swaps from a worker thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: ServedVersion | None = None

    @property
    def current(self) -> ServedVersion | None:
        """The version being served, or None (no lease: do not query a model read this way)."""
        return self._current

    def acquire(self) -> ServedVersion:
        """Lease the current version for one request; release by leaving the ``with`` block.
        Raises Unavailable while no version is loaded."""
        with self._lock:
            served = self._current
            if served is None:
                raise Unavailable("no model version is loaded yet")
            served.users += 1
        return served

    def release(self, served: ServedVersion) -> None:
        """End one lease; unload the version if it was retired and this was its last user."""
        with self._lock:
            served.users -= 1
            last = served.retired and served.users == 0
        if last:
            _close(served)

    def swap(self, new: ServedVersion) -> ServedVersion | None:
        """Serve ``new`` from now on; retire the previous version (unloaded now if unused, else
        by its last request). Returns the previous version."""
        new._holder = self
        return self._replace(new)

    def clear(self) -> None:
        """Stop serving (shutdown): retire and, when unused, unload the current version."""
        self._replace(None)

    def _replace(self, new: ServedVersion | None) -> ServedVersion | None:
        """Make ``new`` current; retire the previous one, closing it now if no request uses it."""
        with self._lock:
            old = self._current
            self._current = new
            if old is not None:
                old.retired = True
                unused = old.users == 0
        if old is not None and unused:
            _close(old)
        return old


def _close(served: ServedVersion) -> None:
    log.info("unloading model version %d", served.version)
    served.model.close()
