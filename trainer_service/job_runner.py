"""Runs training jobs, one at a time, each in its own child process, and lets clients watch them.

The middle of a job's one path: the servicer hands ``start_job`` the job's ``TrainingRequest``
(made once from the proto); the runner checks that its data source may be read here
(``check_source_paths``), registers the job, and hands the same request to a ``WorkerProcess``.
The worker's ``Progress`` objects and its result come back as events and become the job's state,
which watchers receive as snapshots.

Everything here runs on the server's event loop thread (the worker's reader thread hands its
messages over with ``loop.call_soon_threadsafe``), so the registry needs no lock. No gRPC here:
the servicer converts requests and results.

Policies (the contract the servicer documents):

- **One job at a time.** ``start_job`` while a job is queued or running raises
  ``JobAlreadyRunningError`` naming it (no queue; see that class).
- **Cancel** sets the child's stop flag; the pipeline checks it between phases and within each
  epoch (every chunk of minibatches), before publishing, and the job ends CANCELLED having
  published nothing. A child that has not stopped ``cancel_grace_s`` seconds later is killed.
  Publishing is not interruptible by the flag: a cancel that arrives once the job is publishing
  lets the publish finish within the grace period, and the job ends SUCCEEDED with that version
  (the cancel came too late; the log says so, ``error`` stays empty as for any success). If the
  grace period ends mid-publish, the child is killed; the model store's atomic rename means the
  version either is complete or does not exist. If it exists, the job ends SUCCEEDED with it (a
  CANCELLED job never has a visible version); if not, CANCELLED. The same rule holds for every
  way a job can end: CANCELLED and FAILED jobs never have a visible version.
- **A child that dies** (SIGKILL, out of memory, a crash) fails its job with the exit code or
  signal; the same "did it publish?" check applies, and the server keeps serving.
- **Shutdown** cancels the running job the same way and waits for it to end.
- **The standby** (``standby=True``, ``serve``'s default): a training process started ahead of
  the next job (``worker.Standby``), started by ``start_standby`` once the server is up and again
  when each job ends, never while one runs; a job is handed to it, or starts its own process
  when none is waiting or it died idle. Shutdown ends it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from model_store import InvalidVersionError, Manifest, list_versions, read_manifest, validate_version
from musicrec.rpc.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from trainer_service.data import DataSourceSpec
from trainer_service.data.paths import DataRoot
from trainer_service.data.sources import check_source_paths
from trainer_service.jobs import (
    Job,
    JobAlreadyRunningError,
    JobEndedError,
    JobRegistry,
    JobState,
)
from trainer_service.training_request import Progress, TrainingOptions, TrainingRequest
from trainer_service.warm_start import DEFAULT_WARM_START, WARM_STARTS
from trainer_service.worker import (
    Cancelled,
    Failed,
    Succeeded,
    Standby,
    WorkerExit,
    WorkerProcess,
    WorkerRequest,
    child_main,
)

if TYPE_CHECKING:
    from trainer_service.metrics import TrainerMetrics

log = logging.getLogger(__name__)

DEFAULT_CANCEL_GRACE_S = 30.0
DEFAULT_MAX_WATCHERS = 32
CANCELLED_BY_REQUEST = "cancelled on request"
CANCELLED_BY_SHUTDOWN = "cancelled: the trainer is shutting down"


class TooManyWatchersError(ResourceExhausted):
    """More concurrent WatchTrainingJob streams than the trainer allows (RESOURCE_EXHAUSTED)."""


class TrainerShuttingDownError(Unavailable):
    """The trainer is stopping and starts no new job (UNAVAILABLE)."""


def published_versions(models_dir: str | os.PathLike) -> list[Manifest]:
    """Manifests of the valid published versions, newest first. A version whose manifest or
    files (type and size; checksums are the index service's job) are invalid is skipped."""
    root = Path(models_dir)
    manifests = []
    for version in reversed(list_versions(root)):
        try:
            manifests.append(validate_version(root / str(version), verify_checksums=False))
        except (InvalidVersionError, OSError) as exc:
            log.warning("skipping version %s in the listing: %s", version, exc)
    return manifests


class _Run:
    """The bookkeeping of the job being run: its worker and its cancel state."""

    def __init__(self, job: Job, worker: WorkerProcess, versions_before: int):
        self.job = job
        self.worker = worker
        self.versions_before = versions_before
        self.cancel_reason: str | None = None
        self.killed_for_timeout = False
        self.kill_timer: asyncio.TimerHandle | None = None
        self.ended = asyncio.Event()


class JobRunner:
    """Starts, tracks, cancels and streams training jobs. Create and use on the event loop.

    ``data_dir``: where file sources are read (confined to it); None allows only synthetic
    sources. ``events_url``: the play log jobs also train on (None: none; a request may leave it
    out). ``default_source``: what a job without a source trains on; ``default_warm_start``:
    the warm start of a job that does not choose one (and of scheduled and triggered jobs).
    Both sources are checked here:
    ``DataError`` (a ValueError) for a data dir that is not a directory or a default source this
    trainer could never read.
    """

    def __init__(
        self,
        registry: JobRegistry,
        models_dir: str | os.PathLike,
        *,
        data_dir: str | os.PathLike | None,
        default_source: DataSourceSpec,
        keep: int = 3,
        cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
        max_watchers: int = DEFAULT_MAX_WATCHERS,
        worker_target: Callable[..., None] = child_main,
        metrics: "TrainerMetrics | None" = None,
        events_url: str | None = None,
        default_warm_start: str = DEFAULT_WARM_START,
        standby: bool = False,
    ):
        self.registry = registry
        self.models_dir = Path(models_dir)
        self.data_dir = None if data_dir is None else Path(data_dir)
        self._data_root = None if data_dir is None else DataRoot(data_dir)
        check_source_paths(default_source, self._data_root)
        self.default_source = default_source
        self.events_url = events_url
        if default_warm_start not in WARM_STARTS:
            raise ValueError(f"warm start must be one of {', '.join(WARM_STARTS)}; got {default_warm_start!r}")
        self.default_warm_start = default_warm_start
        self.keep = keep
        self.cancel_grace_s = cancel_grace_s
        self.max_watchers = max_watchers
        self._worker_target = worker_target
        self.standby = standby
        self._standby: Standby | None = None
        self._run: _Run | None = None
        self._watchers: dict[str, set[asyncio.Queue]] = {}
        self._watcher_count = 0
        self._closing = False
        self.metrics = metrics

    def record_last_published(self) -> None:
        """Set the last-published metrics from the newest valid version on disk (at start)."""
        if self.metrics is None:
            return
        newest = published_versions(self.models_dir)[:1]
        if newest:
            self.metrics.published(newest[0].model_version, newest[0].metrics)

    # -- queries -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """A snapshot of the job; JobNotFoundError if unknown."""
        return self.registry.get(job_id).snapshot()

    async def list_versions(self) -> list[Manifest]:
        """Valid published versions, newest first (disk reads run off the event loop)."""
        return await asyncio.to_thread(published_versions, self.models_dir)

    def trains_on_log(self, request: TrainingRequest) -> bool:
        """Whether a job of ``request`` trains on this trainer's play log."""
        return self.events_url is not None and request.play_log != "exclude"

    # -- starting ------------------------------------------------------------------------------

    def start_job(self, request: TrainingRequest | None = None) -> Job:
        """Start a job training ``request`` (None: the default source with the default
        hyperparameters and options); return its snapshot (RUNNING, or FAILED if the process
        could not start).

        Raises InvalidArgument (a source this trainer may not read: no data dir, a path leaving
        it; nothing started), FailedPrecondition (the request includes the play log and this
        trainer has none), JobAlreadyRunningError (another job is queued or running) and
        TrainerShuttingDownError. Without a request the job warm-starts as
        ``default_warm_start`` says."""
        if self._closing:
            raise TrainerShuttingDownError("the trainer is shutting down and starts no new job")
        if request is None:
            request = TrainingRequest(self.default_source, options=TrainingOptions(warm_start=self.default_warm_start))
        try:
            check_source_paths(request.source, self._data_root)
        except ValueError as exc:
            raise InvalidArgument(f"invalid data source: {exc}") from None
        if request.play_log == "include" and self.events_url is None:
            raise FailedPrecondition("this trainer has no play log (start it with --events URL) to include")
        running = self.registry.active()
        if running is not None:
            raise JobAlreadyRunningError(running)

        job = Job.new(request)
        self.registry.add(job)
        self.registry.save()
        loop = asyncio.get_running_loop()
        on_disk = list_versions(self.models_dir)
        versions_before = max([self.registry.highest_published_version, *on_disk])
        worker_request = WorkerRequest(
            training=request,
            models_dir=str(self.models_dir),
            data_dir=None if self.data_dir is None else str(self.data_dir),
            keep=self.keep,
            # Numbers keep growing even when the models dir was emptied.
            min_version=self.registry.highest_published_version + 1,
            events_url=self.events_url if self.trains_on_log(request) else None,
        )

        def deliver(message: Progress | WorkerExit) -> None:
            try:
                loop.call_soon_threadsafe(self._on_worker_message, job.job_id, message)
            except RuntimeError:  # the loop is closed: the process is exiting anyway
                pass

        worker = WorkerProcess(worker_request, deliver, self._worker_target)
        standby, self._standby = self._standby, None
        try:
            worker.start(standby)
        except OSError as exc:
            job.transition(JobState.FAILED, error=f"could not start the training process: {exc}")
            self._record_end(job)
            self.registry.save()
            self._notify(job)
            self.start_standby()
            return job.snapshot()
        self._run = _Run(job, worker, versions_before)
        job.transition(JobState.RUNNING)
        # The proto's first phase: the child starts, imports TensorFlow and loads the data.
        job.progress = Progress("loading", total_epochs=request.hyperparameters.epochs)
        self.registry.save()
        self._notify(job)
        if self.metrics is not None:
            self.metrics.job_started()
        log.info("job %s started (pid %s%s): %s, %s",
                 job.job_id, worker.pid, ", the standby" if standby is not None and standby.pid == worker.pid else "",
                 request.source.describe(), request.hyperparameters,
                 extra={"job_id": job.job_id})
        return job.snapshot()

    # -- cancelling ----------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str = CANCELLED_BY_REQUEST) -> Job:
        """Ask a running job to stop (see the module docstring). Returns the job's snapshot: it
        may still be RUNNING; watch it for the end. JobEndedError if it has already ended."""
        job = self.registry.get(job_id)
        if job.state.is_terminal:
            raise JobEndedError(job)
        run = self._run
        if run is None or run.job is not job:  # queued, never started
            job.transition(JobState.CANCELLED, error=reason)
            self._record_end(job)
            self.registry.save()
            self._notify(job)
            return job.snapshot()
        if run.cancel_reason is None:
            run.cancel_reason = reason
            run.worker.request_stop()
            run.kill_timer = asyncio.get_running_loop().call_later(self.cancel_grace_s, self._kill_after_grace, run)
            log.info("job %s: cancel requested (%s)", job_id, reason)
        return job.snapshot()

    def _kill_after_grace(self, run: _Run) -> None:
        if run.ended.is_set():
            return
        log.warning("job %s did not stop within %g s of the cancel: killing the training process",
                    run.job.job_id, self.cancel_grace_s)
        run.killed_for_timeout = True
        run.worker.kill()

    async def shutdown(self) -> None:
        """Refuse new jobs, cancel the running one, and wait until it has ended; end the standby
        training process."""
        self._closing = True
        run = self._run
        if run is not None and not run.ended.is_set():
            self.cancel(run.job.job_id, CANCELLED_BY_SHUTDOWN)
            await run.ended.wait()
        standby, self._standby = self._standby, None
        if standby is not None:
            await asyncio.to_thread(standby.close)
        self.registry.save()

    # -- the standby process ---------------------------------------------------------------------

    @property
    def standby_pid(self) -> int | None:
        """The process id of the standby waiting for the next job (None: none is waiting)."""
        return None if self._standby is None else self._standby.pid

    def start_standby(self) -> None:
        """With ``standby`` on, start the process the next job is handed to (``worker.Standby``),
        unless one is waiting or a job is running (its process would compete with the job for
        the cores while it imports; the runner starts the next one when the job ends). A
        standby that cannot start is logged; the next job then starts its own process."""
        if not self.standby or self._closing or self._run is not None:
            return
        if self._standby is not None:
            if self._standby.alive():
                return
            log.warning("the standby training process %s exited while idle: starting another", self._standby.pid)
            self._standby.close(0)
            self._standby = None
        try:
            preload = self._worker_target is child_main
            self._standby = Standby(self._worker_target, preload_first=preload,
                                    models_dir=str(self.models_dir) if preload else None)
        except OSError as exc:
            log.warning("could not start a standby training process (%s): jobs start their own", exc)
            return
        log.info("standby training process started (pid %s)", self._standby.pid)

    # -- watching ------------------------------------------------------------------------------

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[AsyncIterator[Job]]:
        """``async with runner.watch(job_id) as updates: async for job in updates: ...``

        The updates are the job's current state at once, then one snapshot per change (each
        epoch and phase), then the final state, after which the iterator ends. A job that has
        already ended yields its final state only. Raises JobNotFoundError, and
        TooManyWatchersError beyond ``max_watchers`` concurrent watches, before yielding.
        """
        job = self.registry.get(job_id)
        if self._watcher_count >= self.max_watchers:
            raise TooManyWatchersError(
                f"too many concurrent WatchTrainingJob streams (at most {self.max_watchers}); "
                "poll GetTrainingJob instead or retry later")
        queue: asyncio.Queue[Job] = asyncio.Queue()
        queue.put_nowait(job.snapshot())
        subscribers = self._watchers.setdefault(job_id, set())
        if not job.state.is_terminal:
            subscribers.add(queue)
        self._watcher_count += 1

        async def updates() -> AsyncIterator[Job]:
            while True:
                snapshot = await queue.get()
                yield snapshot
                if snapshot.state.is_terminal:
                    return

        try:
            yield updates()
        finally:
            self._watcher_count -= 1
            subscribers.discard(queue)
            if not subscribers:
                self._watchers.pop(job_id, None)

    def _notify(self, job: Job) -> None:
        # Queues are unbounded but a job sends a bounded number of updates (epochs + phases).
        for queue in self._watchers.get(job.job_id, ()):
            queue.put_nowait(job.snapshot())
        if job.state.is_terminal:
            self._watchers.pop(job.job_id, None)

    # -- worker messages (on the loop thread) ---------------------------------------------------

    def _on_worker_message(self, job_id: str, message: Progress | WorkerExit) -> None:
        run = self._run
        if run is None or run.job.job_id != job_id:
            return
        job = run.job
        if isinstance(message, WorkerExit):
            self._on_worker_exit(run, message)
            return
        if job.state.is_terminal:
            return
        phase_changed = message.phase != job.progress.phase
        job.progress = message
        if self.metrics is not None:
            self.metrics.job_progress(message.samples_per_second, message.loss)
        if message.metrics:
            job.metrics = dict(message.metrics)
        if phase_changed:
            # Phase changes are rare and worth surviving a crash; per-epoch progress is not.
            self.registry.save()
        self._notify(job)

    def _on_worker_exit(self, run: _Run, exit_: WorkerExit) -> None:
        job = run.job
        was_terminal = job.state.is_terminal
        if run.kill_timer is not None:
            run.kill_timer.cancel()
        result = exit_.result
        if job.state.is_terminal:
            pass
        elif isinstance(result, Succeeded):
            if run.cancel_reason is not None:
                log.warning("job %s: %s too late: it was already publishing", job.job_id, run.cancel_reason)
            self._succeed(job, result.version, result.metrics)
        elif isinstance(result, Cancelled):
            job.transition(JobState.CANCELLED, error=run.cancel_reason or "cancelled by the training process")
        elif isinstance(result, Failed):
            job.transition(JobState.FAILED, error=result.error or "training failed")
        elif not self._adopt_published(run):
            if run.cancel_reason is not None:
                detail = (f"the training process did not stop within {self.cancel_grace_s:g} s and was killed"
                          if run.killed_for_timeout else exit_.describe())
                job.transition(JobState.CANCELLED, error=f"{run.cancel_reason}; {detail}")
            else:
                job.transition(JobState.FAILED, error=exit_.describe())
        self.registry.save()
        self._run = None
        run.ended.set()
        self._notify(job)
        if not was_terminal:
            self._record_end(job)
        log.info("job %s ended %s%s", job.job_id, job.state.value,
                 f" (version {job.published_version})" if job.published_version else f": {job.error}",
                 extra={"job_id": job.job_id, "state": job.state.value,
                        **({"version": job.published_version} if job.published_version else {})})
        self.start_standby()

    def _record_end(self, job: Job) -> None:
        """Count a job that has just reached its final state (and what it published)."""
        if self.metrics is None:
            return
        started = job.started_at if job.started_at is not None else job.created_at
        self.metrics.job_ended(job.state.value, None if job.finished_at is None else job.finished_at - started)
        if job.published_version:
            self.metrics.published(job.published_version, job.metrics)

    def _succeed(self, job: Job, version: int, metrics: dict[str, float]) -> None:
        if metrics:
            job.metrics = dict(metrics)
        job.progress = dataclasses.replace(job.progress, phase="done")
        job.transition(JobState.SUCCEEDED)
        job.published_version = version
        self.registry.record_published(version)

    def _adopt_published(self, run: _Run) -> bool:
        """After the child died without a result: if it had already renamed a new version into
        place, the job did publish; report it SUCCEEDED with that version (never CANCELLED or
        FAILED with a visible model). True if so."""
        newer = [v for v in list_versions(self.models_dir) if v > run.versions_before]
        for version in sorted(newer, reverse=True):
            try:
                manifest = read_manifest(self.models_dir / str(version))
            except InvalidVersionError:
                continue
            note = ("the training process died after publishing" if run.cancel_reason is None
                    else f"{run.cancel_reason} too late: the version was already published")
            self._succeed(run.job, manifest.model_version, {k: float(v) for k, v in manifest.metrics.items()})
            log.warning("job %s: %s (version %d)", run.job.job_id, note, version)
            return True
        return False
