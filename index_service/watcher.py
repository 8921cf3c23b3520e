"""Finding, validating, loading and swapping in model versions from MODELS_DIR.

``VersionWatcher.poll_once()`` (blocking: call it in a worker thread) does one scan:

- The target is the newest version on disk that is not known bad, or only ``--version N`` when
  pinned. A version is validated (manifest, sizes, checksums, shapes: ``model_store.load_version``),
  loaded (arrays and Annoy memory-mapped), warmed up, and swapped in through ``ModelHolder.swap``.
- A version that fails is logged with its reason (the model store's reason for a bad version,
  the traceback for anything unexpected) and remembered as rejected together with the
  identity of its files (directory and manifest inode and mtime); it is retried only when that
  identity changes. The service keeps serving what it has.
- If the served version disappears from disk it keeps being served from memory. If the
  directory is recreated (its versions may be numbered lower than the one served), the newest
  valid one on disk is taken: the rule is always "the newest valid version on disk".
- A directory replaced under the same number (different identity) is loaded again.

``VersionWatcher.run()`` polls forever from the event loop, doing each scan in a thread so the
loop never blocks on hashing or loading.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from index_service.holder import ModelHolder, ServedVersion
from index_service.response_encoding import ResponseEncoder
from index_service.serving_model import ServingModel
from model_store import InvalidVersionError, list_versions, load_version
from model_store.format import MANIFEST_NAME

log = logging.getLogger(__name__)

# Nice value of the thread that validates and loads versions (and of the threads it starts:
# hashing, structure checks, BLAKE3's own), so requests win the cores while a version loads.
BACKGROUND_NICE = 10


def background_priority() -> None:
    """Lower the calling thread's CPU priority to ``BACKGROUND_NICE`` (on Linux the nice value is
    per thread, and threads it starts inherit it). Best effort: left as is where not allowed."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted
        log.debug("cannot lower the version watcher's priority: %s", exc)


@dataclass(frozen=True)
class Rejection:
    """A version refused, why, and the identity of its files when it was refused."""

    version: int
    reason: str
    identity: tuple


def version_identity(version_dir: Path) -> tuple | None:
    """What changes when a version directory is replaced or its manifest rewritten: (dir inode,
    dir mtime ns, manifest inode, manifest mtime ns, manifest size); manifest fields are None
    when it is missing. None when the directory does not exist."""
    try:
        dir_stat = os.stat(version_dir)
    except OSError:
        return None
    try:
        man = os.stat(version_dir / MANIFEST_NAME)
        manifest_part = (man.st_ino, man.st_mtime_ns, man.st_size)
    except OSError:
        manifest_part = (None, None, None)
    return (dir_stat.st_ino, dir_stat.st_mtime_ns, *manifest_part)


class VersionWatcher:
    """Keeps ``holder`` serving the newest valid version of ``models_dir`` (or ``pinned``)."""

    def __init__(self, models_dir: str | os.PathLike, holder: ModelHolder, *, pinned: int | None = None,
                 recommend_method: str | None = None, similar_method: str | None = None,
                 precomputed: bool = True, on_refused: Callable[[str], None] | None = None):
        """``recommend_method``/``similar_method`` override the manifests' search methods;
        ``precomputed`` False answers by search only (see ``ServingModel``). ``on_refused(kind)``
        is called (in the polling thread) for each refusal, ``kind`` one of "invalid" (the
        model store refused it: logged in one line), "unreadable" (loading failed otherwise, e.g.
        it could not be mapped: logged with the traceback), "warm_up" (with the traceback)."""
        self.models_dir = Path(models_dir)
        self.holder = holder
        self.pinned = pinned
        self._methods = {"recommend_method": recommend_method, "similar_method": similar_method,
                         "precomputed": precomputed}
        self._rejected: dict[int, Rejection] = {}  # only the polling thread touches this
        self._rejected_view: tuple[Rejection, ...] = ()  # replaced whole: safe to read anywhere
        self._waiting_logged = False
        self._on_refused = on_refused

    @property
    def rejected(self) -> list[Rejection]:
        """Versions refused and still on disk, newest first (safe from any thread)."""
        return list(self._rejected_view)

    def _publish_rejected(self) -> None:
        self._rejected_view = tuple(sorted(self._rejected.values(), key=lambda r: r.version, reverse=True))

    def poll_once(self) -> ServedVersion | None:
        """One scan (blocking). Returns the newly swapped-in version, or None if nothing changed."""
        on_disk = list_versions(self.models_dir)
        gone = [v for v in self._rejected if v not in on_disk]
        for version in gone:
            del self._rejected[version]  # gone: forget it (and its reason)
        if gone:
            self._publish_rejected()
        if self.pinned is not None:
            candidates = [self.pinned] if self.pinned in on_disk else []
        else:
            candidates = on_disk[::-1]
        if not candidates:
            self._log_waiting(on_disk)
            return None
        self._waiting_logged = False
        current = self.holder.current
        for version in candidates:
            vdir = self.models_dir / str(version)
            identity = version_identity(vdir)
            if identity is None:
                continue  # removed since the listing
            if current is not None and current.version == version and current.identity == identity:
                return None  # already serving the newest valid version
            rejection = self._rejected.get(version)
            if rejection is not None and rejection.identity == identity:
                continue  # the same bad files as last time
            served = self._load(vdir, version, identity)
            if served is None:
                continue
            old = self.holder.swap(served)
            if self._rejected.pop(version, None) is not None:
                self._publish_rejected()
            log.info("serving model version %d (%d users, %d artists; recommend %s, similar %s; "
                     "loaded in %.1f ms)%s", version, served.model.num_users, served.model.num_artists,
                     served.model.recommend_params.method, served.model.similar_params.method,
                     served.load_duration_ms, f", replacing version {old.version}" if old else "",
                     extra={"version": version, "load_ms": round(served.load_duration_ms, 1)})
            served.model.build_hash_indexes()  # after the swap: requests bisect until it is done
            return served
        return None

    def _load(self, vdir: Path, version: int, identity: tuple) -> ServedVersion | None:
        started = time.perf_counter()
        try:
            loaded = load_version(vdir)
        except InvalidVersionError as exc:  # the model store's verdict on the files: its reason says it all
            self._reject(version, exc.reason, identity, "invalid")
            return None
        except Exception as exc:  # noqa: BLE001 - not a bad version (load_version says those): log the traceback
            self._reject(version, f"cannot load: {type(exc).__name__}: {exc}", identity, "unreadable", exc)
            return None
        try:
            model = ServingModel(loaded, **self._methods)
            encoder = ResponseEncoder(model.artist_ids, model.artist_names, model.version, model.tags)
            model.warm_up()
            model.precomputed_answers = 0  # count what clients get, not the warm-up
        except Exception as exc:  # noqa: BLE001 - any failure refuses this version, never the service
            loaded.close()
            self._reject(version, f"failed warm-up: {type(exc).__name__}: {exc}", identity, "warm_up", exc)
            return None
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return ServedVersion(model=model, loaded_at=datetime.now(timezone.utc), load_duration_ms=elapsed_ms,
                             identity=identity, encoder=encoder)

    def _reject(self, version: int, reason: str, identity: tuple, kind: str,
                unexpected: BaseException | None = None) -> None:
        """Refuse ``version`` (logged, remembered, counted); an ``unexpected`` error's traceback is
        logged with it."""
        log.warning("refusing model version %d: %s (still serving %s)", version, reason,
                    f"version {self.holder.current.version}" if self.holder.current else "nothing",
                    exc_info=unexpected, extra={"version": version, "reason": kind})
        self._rejected[version] = Rejection(version, reason, identity)
        self._publish_rejected()
        if self._on_refused is not None:
            self._on_refused(kind)

    def _log_waiting(self, on_disk: list[int]) -> None:
        if self._waiting_logged:
            return
        self._waiting_logged = True
        if self.pinned is not None:
            log.info("pinned version %d is not in %s (found %s); waiting", self.pinned, self.models_dir,
                     on_disk or "no versions")
        else:
            log.info("no model versions in %s yet; waiting", self.models_dir)

    async def run(self, interval_s: float, on_swap: Callable[[ServedVersion], Awaitable[None]] | None = None) -> None:
        """Poll every ``interval_s`` seconds until cancelled; each scan runs in the watcher's own
        thread, at background priority (``background_priority``). ``on_swap`` is awaited in the
        loop after each swap (e.g. to report health SERVING)."""
        loop = asyncio.get_running_loop()
        scans = ThreadPoolExecutor(1, thread_name_prefix="version-watcher", initializer=background_priority)
        try:
            while True:
                try:
                    served = await loop.run_in_executor(scans, self.poll_once)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the watcher must outlive any one bad scan
                    log.exception("scanning %s failed; will retry", self.models_dir)
                    served = None
                if served is not None and on_swap is not None:
                    await on_swap(served)
                await asyncio.sleep(interval_s)
        finally:
            scans.shutdown(wait=False, cancel_futures=True)
