"""The training child process, and the parent's handle on it.

Training runs in a separate OS process started with multiprocessing's "spawn" context, so
TensorFlow never blocks the server's event loop, and a crash or an out-of-memory kill of the
child takes down only the job, not the server. The child receives a ``WorkerRequest`` (the job's
``TrainingRequest`` and where to publish) and answers over a pipe, one way, with the pipeline's
own objects:

- a ``trainer_service.training_request.Progress`` at each phase change and epoch, as the
  pipeline reported it;
- then exactly one result: ``Succeeded(version, metrics)``, ``Failed(error)`` or ``Cancelled()``.

A domain failure (bad data, a publish error, the quality gate's refusal with both figures, a
diverged model: any ``ServiceError``) fails the job with its own one-line message. Anything else
is a bug: the job fails with a generic message and the traceback goes to the log.

A ``Standby`` is such a child started before its job: it imports TensorFlow and the pipeline,
then waits for the ``WorkerRequest`` on a second pipe and runs the same entry point, so a job
handed to it skips the interpreter's start and the imports (``standby_main``). The job runner
keeps one waiting when the trainer runs with ``--standby`` (the default).

The parent asks the child to stop by setting a shared event; the child checks it at each epoch
boundary (through ``run_training(should_stop=...)``) and answers ``Cancelled``. A child that does
not stop in time is killed (SIGKILL). The child also treats SIGTERM as a stop request, ignores
SIGINT (Ctrl-C in a terminal reaches the whole process group; the server decides), and dies with
its parent (``musicrec.process_lifetime``), so an orphan never publishes behind a restarted
trainer's back.

The parent reads the pipe in a daemon thread and hands each progress, and finally the exit
status with the result, to a callback (the trainer passes one that uses
``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from musicrec.log_format import LOG_FORMAT_ENV, configure_logging
from musicrec.process_lifetime import die_with_parent, exit_without_teardown
from trainer_service.training_request import Progress, TrainingRequest

log = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")
UNEXPECTED_ERROR = "training failed with an unexpected error; the trainer's log has the traceback"
# How long the reader waits for the child to exit after its pipe closed before killing it, seconds.
_EXIT_WAIT_S = 30.0


@dataclass(frozen=True)
class WorkerRequest:
    """What the child does: train ``training``, publish into ``models_dir`` (keeping ``keep``
    versions) a version numbered at least ``min_version``; file sources are read relative to
    ``data_dir``; ``events_url``: the play log trained on too (None: none)."""

    training: TrainingRequest
    models_dir: str
    data_dir: str | None
    keep: int
    min_version: int
    events_url: str | None = None


@dataclass(frozen=True)
class Succeeded:
    """The child published ``version`` with these evaluation ``metrics`` (manifest key names)."""

    version: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """The run failed; ``error`` is the job's error message (bad data, a publish error, ...)."""

    error: str


@dataclass(frozen=True)
class Cancelled:
    """The run stopped on request; nothing was published."""


WorkerResult = Succeeded | Failed | Cancelled


@dataclass(frozen=True)
class WorkerExit:
    """How the child ended: its exit code (negative: killed by that signal), and the result it
    sent before, or None if it died without sending one."""

    exitcode: int | None
    result: WorkerResult | None

    def describe(self) -> str:
        """A sentence for a job's error when the child ended without a result."""
        code = self.exitcode
        if code is None:
            return "the training process did not exit"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (killed from outside, e.g. by the out-of-memory killer)" if -code == signal.SIGKILL else ""
            return f"the training process was killed by {name}{hint}"
        if code == 0:
            return "the training process exited without reporting a result"
        return f"the training process exited with code {code}"


# ---------------------------------------------------------------------------------------------
# Child side


def child_main(request: WorkerRequest, conn, stop_event) -> None:
    """Entry point of the training process: run the pipeline, report over ``conn``, exit.

    Exits with ``os._exit`` right after the result, skipping interpreter teardown
    (TensorFlow's can take seconds; everything that matters is already fsynced by the publish).
    """
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    configure_logging(logging.INFO, os.environ.get(LOG_FORMAT_ENV, "text"),
                      text_format=f"%(asctime)s training[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
                      fields={"training_pid": os.getpid()})

    def should_stop() -> bool:
        return stop_event.is_set() or terminated.is_set() or os.getppid() != parent

    result = run_request(request, conn.send, should_stop)
    try:
        conn.send(result)
        conn.close()
    finally:
        exit_without_teardown(0)


def preload() -> None:
    """Import what a training imports, TensorFlow first (``tensorflow_env`` settings applied by
    ``trainer_service.bpr``): seconds of a job's start on a small data set, paid ahead of it by a
    standby process."""
    import trainer_service.bpr  # noqa: F401 - TensorFlow
    import trainer_service.pipeline  # noqa: F401 - the data loaders, evaluation, warm start
    import ranking.ann_build  # noqa: F401 - Annoy and the lists
    import model_store  # noqa: F401


def compile_for_newest(models_dir: str) -> str:
    """Compile the training step ahead for the trainer's default hyperparameters (with the newest
    version's factors) at the sizes of the newest version in ``models_dir`` (``bpr.compile_ahead``:
    with headroom, so a retrain with a few more users, artists and plays fits); what was done, for
    the log. Never raises: a failure leaves exact shapes (the job then compiles, as without a
    standby)."""
    try:
        from trainer_service.bpr import compile_ahead, reserve_shapes
        from trainer_service.hyperparameters import Hyperparameters
        from trainer_service.pipeline import newest_manifest

        newest = newest_manifest(models_dir)
        if newest is None:
            return "no version to compile ahead for"
        try:
            # A default job warm-starts from this version and keeps its factor count.
            hp = Hyperparameters(factors=newest.num_factors)
            shapes = compile_ahead(newest.num_users, newest.num_artists, newest.num_interactions, hp)
        except Exception:
            reserve_shapes(None)
            raise
        return (f"the training step compiled for up to {shapes.users:,} users and {shapes.artists:,} artists "
                f"(version {newest.model_version}'s, with headroom)")
    except Exception as exc:  # noqa: BLE001 - an optimization: the job compiles its own
        log.warning("standby: could not compile the training step ahead (%s: %s)", type(exc).__name__, exc)
        return "the training step not compiled ahead"


def standby_main(target: Callable[..., None], preload_first: bool, models_dir: str | None, requests, conn,
                 stop_event) -> None:
    """Entry point of a standby training process (``Standby``): the process settings of
    ``child_main``, ``preload()`` when ``preload_first`` (and, with ``models_dir``,
    ``compile_for_newest``), then wait for the job's ``WorkerRequest`` on ``requests`` and run
    ``target(request, conn, stop_event)`` as a freshly started child would. The trainer closing
    its end of ``requests`` (a standby no job took) ends the process quietly."""
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # no job yet: nothing to stop cleanly
    configure_logging(logging.INFO, os.environ.get(LOG_FORMAT_ENV, "text"),
                      text_format=f"%(asctime)s training[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
                      fields={"training_pid": os.getpid()})
    if preload_first:
        started = time.perf_counter()
        preload()
        compiled = "" if models_dir is None else "; " + compile_for_newest(models_dir)
        log.info("standby: ready for a job (TensorFlow and the pipeline imported%s; %.1f s)",
                 compiled, time.perf_counter() - started)
    try:
        request = requests.recv()
    except (EOFError, OSError):
        os._exit(0)
    requests.close()
    target(request, conn, stop_event)


def run_request(request: WorkerRequest, send: Callable[[Progress], None],
                should_stop: Callable[[], bool]) -> WorkerResult:
    """Run the pipeline for ``request``, handing each ``Progress`` to ``send``; return the
    result to report (domain failures as their own message, anything else as
    ``UNEXPECTED_ERROR`` with the traceback logged)."""
    try:
        from model_store import PublishError
        from musicrec.rpc.errors import ServiceError
        from trainer_service.data import DataError
        from trainer_service.pipeline import TrainingCancelled, run_training

        try:
            trained = run_training(
                request.training.source,
                request.training.hyperparameters,
                request.models_dir,
                data_dir=request.data_dir,
                on_progress=send,
                should_stop=should_stop,
                keep=request.keep,
                min_version=request.min_version,
                options=request.training.options,
                events_url=request.events_url,
            )
        except TrainingCancelled:
            return Cancelled()
        except (DataError, ServiceError) as exc:  # bad data, the gate's refusal, a diverged model
            return Failed(str(exc))
        except PublishError as exc:
            return Failed(f"publish failed: {exc}")
        return Succeeded(int(trained.manifest.model_version),
                         {str(k): float(v) for k, v in trained.manifest.metrics.items()})
    except Exception:  # a bug, not the job's data or settings: the log gets the traceback
        log.exception("training failed with an unexpected error")
        return Failed(UNEXPECTED_ERROR)


# ---------------------------------------------------------------------------------------------
# Parent side


class Standby:
    """A training process started before its job (``standby_main``): it has imported TensorFlow
    and the pipeline and waits for a ``WorkerRequest``, so a job handed to it starts training
    without an interpreter's start and TensorFlow's import (seconds on a small data set).

    ``hand_over(request)`` gives it a job and returns what a ``WorkerProcess`` watches (the
    process, the result pipe, the stop flag); a standby serves one job. ``close()`` ends one
    that no job took. Start it from a long-lived thread, as ``WorkerProcess``."""

    def __init__(self, target: Callable[..., None] = child_main, preload_first: bool = True,
                 models_dir: str | None = None):
        self._stop = _SPAWN.Event()
        requests_receive, self._requests = _SPAWN.Pipe(duplex=False)
        self._receive, send = _SPAWN.Pipe(duplex=False)
        self._process = _SPAWN.Process(target=standby_main,
                                       args=(target, preload_first, models_dir, requests_receive, send, self._stop),
                                       name="musicrec-training", daemon=False)
        try:
            self._process.start()
        except BaseException:
            self._receive.close()
            self._requests.close()
            raise
        finally:
            # The parent's copies of the child's ends must go, or the pipes never report EOF.
            send.close()
            requests_receive.close()
        self.pid = self._process.pid
        self._taken = False

    def alive(self) -> bool:
        """Whether the process is still waiting (a standby that died idle serves no job)."""
        return not self._taken and self._process.exitcode is None

    def hand_over(self, request: WorkerRequest):
        """Send ``request`` to the process: (process, result pipe, stop event) to watch.
        Raises OSError when the process is gone (its pipe is broken) or already served a job."""
        if self._taken:
            raise OSError("this standby training process already took a job")
        if self._process.exitcode is not None:
            raise OSError(f"the standby training process exited (code {self._process.exitcode})")
        self._requests.send(request)  # BrokenPipeError (an OSError) when the child is gone
        self._taken = True
        self._requests.close()
        return self._process, self._receive, self._stop

    def close(self, wait_s: float = 1.0) -> None:
        """End a standby no job took: close its request pipe (it exits on EOF once its imports
        are done), then kill it if it is still there after ``wait_s`` (an idle standby holds
        nothing that a kill could leave half done)."""
        if self._taken:
            return
        self._taken = True
        self._requests.close()
        self._receive.close()
        self._process.join(wait_s)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()


class WorkerProcess:
    """The parent's handle on one training process.

    ``deliver(message)`` is called from a reader thread with each ``Progress``, then once with
    a ``WorkerExit`` when the child has exited. ``target(request, conn, stop_event)`` is the
    child's entry point (tests substitute scripted children). Start it from a long-lived thread (the
    event loop's): Linux sends the parent-death signal when the *thread* that forked exits.
    """

    def __init__(self, request: WorkerRequest, deliver: Callable[[Progress | WorkerExit], None],
                 target: Callable[..., None] = child_main):
        self.request = request
        self._target = target
        self._deliver = deliver
        self._stop = _SPAWN.Event()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._reader: threading.Thread | None = None
        self.pid: int | None = None

    def start(self, standby: Standby | None = None) -> None:
        """Start the child and the reader thread: hand the request to ``standby`` when one is
        given and still waiting, else start a new process (a standby that died idle is logged
        and skipped). Raises OSError if the process cannot start."""
        process = None
        if standby is not None:
            try:
                process, receive, self._stop = standby.hand_over(self.request)
            except OSError as exc:
                log.warning("the standby training process %s could not take the job (%s): starting a new one",
                            standby.pid, exc)
                standby.close(0)
                process = None
        if process is None:
            receive, send = _SPAWN.Pipe(duplex=False)
            process = _SPAWN.Process(target=self._target, args=(self.request, send, self._stop),
                                     name="musicrec-training", daemon=False)
            try:
                process.start()
            finally:
                # The parent's copy of the write end must go, or the pipe never reports EOF.
                send.close()
        self._process = process
        self.pid = process.pid
        self._reader = threading.Thread(target=self._read, args=(receive,), name=f"training-reader-{process.pid}",
                                        daemon=True)
        self._reader.start()

    def request_stop(self) -> None:
        """Ask the child to stop at its next epoch boundary."""
        self._stop.set()

    def kill(self) -> None:
        """SIGKILL the child (the reader then reports its exit)."""
        if self._process is not None and self._process.exitcode is None:
            self._process.kill()

    def _read(self, receive) -> None:
        result = None
        try:
            while True:
                try:
                    message = receive.recv()
                except (EOFError, OSError):
                    break
                if isinstance(message, Progress):
                    self._deliver(message)
                elif isinstance(message, (Succeeded, Failed, Cancelled)):
                    result = message
        finally:
            receive.close()
            assert self._process is not None
            self._process.join(_EXIT_WAIT_S)
            if self._process.exitcode is None:
                log.warning("training process %s closed its pipe but did not exit: killing it", self._process.pid)
                self._process.kill()
                self._process.join()
            exitcode = self._process.exitcode
            self._deliver(WorkerExit(exitcode=exitcode, result=result))
