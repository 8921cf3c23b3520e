"""Training jobs: their state machine, and the small job-history file that outlives the process.

A job is plain data (no gRPC, no TensorFlow): the ``TrainingRequest`` it was started with and
its latest ``Progress`` (both from ``trainer_service.training_request``, held as they are), its state,
metrics and result. Its lifecycle::

    QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
    QUEUED -> CANCELLED | FAILED

Terminal states never change again. ``SUCCEEDED`` is the only state with a published version;
``FAILED`` and ``CANCELLED`` jobs published nothing.

The history (``STATE_DIR/jobs.json``) is rewritten atomically (temporary file, fsync, rename,
directory fsync) at every state or phase change, so after a crash it holds the last state
change. It also remembers the highest version this trainer ever published, so that version
numbers keep growing even if the models directory is emptied. A job found QUEUED or RUNNING when
the history is loaded belonged to a process that died: it is reported FAILED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicrec.rpc.errors import AlreadyExists, FailedPrecondition, NotFound
from trainer_service.data import DataSourceSpec
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.training_request import Progress, TrainingOptions, TrainingRequest

log = logging.getLogger(__name__)

HISTORY_NAME = "jobs.json"
LOCK_NAME = "trainer.lock"
HISTORY_FORMAT = 1
# Jobs kept in the history file (oldest dropped first): enough to see what happened recently
# without the file growing without bound under a schedule.
DEFAULT_MAX_JOBS = 200
RESTARTED_ERROR = "trainer restarted while the job was running"


class JobState(enum.Enum):
    """Lifecycle state of a job (values as in the proto's JobState without the prefix)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


_ALLOWED = {
    JobState.QUEUED: {JobState.RUNNING, JobState.FAILED, JobState.CANCELLED},
    JobState.RUNNING: {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED},
    JobState.SUCCEEDED: set(),
    JobState.FAILED: set(),
    JobState.CANCELLED: set(),
}


class JobNotFoundError(NotFound):
    """No job with this id (NOT_FOUND)."""

    def __init__(self, job_id: str):
        super().__init__(f"no training job with id {job_id!r}")
        self.job_id = job_id


class JobAlreadyRunningError(AlreadyExists):
    """A second job was asked for while one runs (ALREADY_EXISTS; the message names the job).

    The trainer runs one job at a time rather than queueing: training saturates the machine,
    a queue would publish stale models in a burst, and a caller that wants the running job's
    result can watch it by the id named in the message.
    """

    def __init__(self, job: "Job"):
        super().__init__(f"training job {job.job_id} is already {job.state.value.lower()} "
                         f"(phase {job.progress.phase!r}); one training runs at a time: watch or cancel it")
        self.job_id = job.job_id


class JobEndedError(FailedPrecondition):
    """The job has already ended and cannot be cancelled (FAILED_PRECONDITION)."""

    def __init__(self, job: "Job"):
        super().__init__(f"training job {job.job_id} has already ended ({job.state.value})")
        self.job_id = job.job_id


class TrainerStateLockedError(RuntimeError):
    """Another trainer process holds the state directory."""


@dataclass
class Job:
    """One training job: what it trains (``request``), where it is (``progress``, replaced by
    each new one), its latest ``metrics`` (manifest key names), its result. Times are Unix
    seconds (None until reached)."""

    job_id: str
    state: JobState
    request: TrainingRequest
    progress: Progress = field(default_factory=Progress)
    metrics: dict[str, float] = field(default_factory=dict)
    published_version: int = 0
    error: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def new(cls, request: TrainingRequest) -> "Job":
        return cls(job_id=uuid.uuid4().hex[:16], state=JobState.QUEUED, request=request, created_at=time.time())

    def transition(self, state: JobState, *, error: str = "", now: float | None = None) -> None:
        """Move to ``state``; raise ValueError for a transition the lifecycle does not allow."""
        if state not in _ALLOWED[self.state]:
            raise ValueError(f"job {self.job_id}: cannot go from {self.state.value} to {state.value}")
        now = time.time() if now is None else now
        self.state = state
        if state is JobState.RUNNING:
            self.started_at = now
        if state.is_terminal:
            self.finished_at = now
            self.error = error
            if state is not JobState.SUCCEEDED:
                self.published_version = 0

    def snapshot(self) -> "Job":
        """An independent copy (for watchers: later updates do not change what was sent). The
        request and progress are immutable and shared."""
        return dataclasses.replace(self, metrics=dict(self.metrics))

    def to_json(self) -> dict[str, Any]:
        """The job as the history file stores it (the request as its two parts, flat)."""
        data = dataclasses.asdict(self)
        del data["request"]
        data["source"] = dataclasses.asdict(self.request.source)
        data["hyperparameters"] = self.request.hyperparameters.to_dict()
        data["options"] = self.request.options.to_json()
        data["play_log"] = self.request.play_log
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Job":
        """The inverse of ``to_json``; ValueError, TypeError or KeyError for a malformed entry."""
        progress = dict(data.get("progress") or {})
        return cls(
            job_id=str(data["job_id"]),
            state=JobState(data["state"]),
            request=TrainingRequest(source=DataSourceSpec(**(data.get("source") or {})),
                                    hyperparameters=Hyperparameters(**(data.get("hyperparameters") or {})),
                                    options=TrainingOptions.from_json(data.get("options") or {}),
                                    play_log=str(data.get("play_log") or "default")),
            progress=Progress(**{**progress, "metrics": dict(progress.get("metrics") or {})}),
            metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
            published_version=int(data.get("published_version") or 0),
            error=str(data.get("error") or ""),
            created_at=float(data.get("created_at") or 0.0),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
        )


class JobRegistry:
    """The jobs this trainer knows (newest last) and the highest version it ever published,
    persisted to ``state_dir/jobs.json``.

    Not thread-safe: the trainer mutates it from its event loop only. ``open()`` takes an
    exclusive lock on the state directory, so two trainers never share one history.
    """

    def __init__(self, state_dir: str | os.PathLike, *, max_jobs: int = DEFAULT_MAX_JOBS):
        self.state_dir = Path(state_dir)
        self.max_jobs = max_jobs
        self.highest_published_version = 0
        self._jobs: dict[str, Job] = {}
        self._lock_fd: int | None = None

    @property
    def path(self) -> Path:
        return self.state_dir / HISTORY_NAME

    def open(self) -> None:
        """Lock the state dir, load the history, and fail jobs a dead process left running."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TrainerStateLockedError(
                f"another trainer is using the state directory {self.state_dir}") from None
        self._lock_fd = fd
        self._load()
        interrupted = [job for job in self._jobs.values() if not job.state.is_terminal]
        for job in interrupted:
            job.transition(JobState.FAILED, error=RESTARTED_ERROR)
            log.warning("job %s was %s when the trainer stopped: marked FAILED", job.job_id, "running")
        if interrupted:
            self.save()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        try:
            data = json.loads(text)
            if data.get("format") != HISTORY_FORMAT:
                raise ValueError(f"unknown history format {data.get('format')!r}")
            jobs = [Job.from_json(item) for item in data.get("jobs", [])]
            highest = int(data.get("highest_published_version", 0))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # A broken history must not keep the trainer down: keep it aside for a human and start fresh.
            aside = self.path.with_name(f"{HISTORY_NAME}.broken-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("job history %s is unreadable (%s); moved to %s, starting with an empty history",
                      self.path, exc, aside)
            return
        self._jobs = {job.job_id: job for job in jobs}
        self.highest_published_version = max(highest, 0)

    def save(self) -> bool:
        """Rewrite the history atomically (a reader or a crash sees the old or the new file).

        Best effort: when the state directory cannot be written (deleted along with the models
        dir, full, unreadable) the error is logged and the history stays in memory, so the
        trainer keeps working; its jobs then fail on their own with the publish error. Raising
        here instead wedged the trainer: StartTraining failed with INTERNAL after registering
        its job, which stayed QUEUED, so every later StartTraining was ALREADY_EXISTS. The next
        save tries again (recreating a deleted directory). Returns whether the file was written.
        """
        data = {
            "format": HISTORY_FORMAT,
            "highest_published_version": self.highest_published_version,
            "jobs": [job.to_json() for job in self._jobs.values()],
        }
        tmp = self.path.with_name(f".{HISTORY_NAME}.{os.getpid()}.tmp")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True, allow_nan=False)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.state_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.error("cannot write the job history %s: %s; keeping it in memory", self.path, exc.strerror or exc)
            return False
        return True

    def add(self, job: Job) -> None:
        """Register a new job (and drop the oldest ended jobs beyond ``max_jobs``)."""
        self._jobs[job.job_id] = job
        while len(self._jobs) > self.max_jobs:
            oldest = next((j for j in self._jobs.values() if j.state.is_terminal), None)
            if oldest is None:
                break
            del self._jobs[oldest.job_id]

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None

    def jobs(self) -> list[Job]:
        """All known jobs, oldest first."""
        return list(self._jobs.values())

    def active(self) -> Job | None:
        """The job that is queued or running, if any (at most one)."""
        return next((job for job in self._jobs.values() if not job.state.is_terminal), None)

    def record_published(self, version: int) -> None:
        self.highest_published_version = max(self.highest_published_version, int(version))
