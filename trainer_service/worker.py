"""The training child process, and the parent's handle on it.

Training runs in a separate OS process started with multiprocessing's "spawn" context, so
TensorFlow never blocks the server's event loop, and a crash or an out-of-memory kill of the
child takes down only the job, not the server. The protocol is plain data (dicts of str, int,
float), one way, over a pipe from child to parent:

- ``{"type": "progress", "phase": str, "epoch": int, "total_epochs": int, "loss": float,
  "samples_per_second": float, "metrics": {str: float}}`` at each phase change and epoch;
- then exactly one terminal message: ``{"type": "succeeded", "version": int, "metrics": {...}}``,
  ``{"type": "failed", "error": str}`` or ``{"type": "cancelled"}``.

The parent asks the child to stop by setting a shared event; the child checks it at each epoch
boundary (through ``run_training(should_stop=...)``) and answers "cancelled". A child that does
not stop in time is killed (SIGKILL). The child also treats SIGTERM as a stop request, ignores
SIGINT (Ctrl-C in a terminal reaches the whole process group; the server decides), and dies with
its parent (``PR_SET_PDEATHSIG``), so an orphan never publishes behind a restarted trainer's back.

The parent reads the pipe in a daemon thread and hands each message, and finally the exit status,
to a callback (the trainer passes one that uses ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")
# How long the reader waits for the child to exit after its pipe closed before killing it, seconds.
_EXIT_WAIT_S = 30.0


@dataclass(frozen=True)
class WorkerRequest:
    """What the child trains: a data source (``DataSourceSpec`` fields as a dict), resolved
    hyperparameters (a dict of the Hyperparameters fields), where to publish, and the lowest
    version number it may publish."""

    source: dict[str, Any]
    hyperparameters: dict[str, Any]
    models_dir: str
    data_dir: str | None
    keep: int
    min_version: int


@dataclass(frozen=True)
class WorkerExit:
    """How the child ended: its exit code (negative: killed by that signal), and the terminal
    message it sent before, or None if it died without sending one."""

    exitcode: int | None
    final: dict[str, Any] | None

    def describe(self) -> str:
        """A sentence for a job's error when the child ended without a terminal message."""
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


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _plain_progress(event: Any) -> dict[str, Any]:
    """The pipeline's progress event as a protocol message (plain data only)."""
    data = dataclasses.asdict(event) if dataclasses.is_dataclass(event) else dict(event)
    metrics = data.get("metrics") or {}
    return {
        "type": "progress",
        "phase": str(data.get("phase", "")),
        "epoch": int(data.get("epoch", 0) or 0),
        "total_epochs": int(data.get("total_epochs", 0) or 0),
        "loss": float(data.get("loss", 0.0) or 0.0),
        "samples_per_second": float(data.get("samples_per_second", 0.0) or 0.0),
        "metrics": {str(k): float(v) for k, v in dict(metrics).items()},
    }


def child_main(request: WorkerRequest, conn, stop_event) -> None:
    """Entry point of the training process: run the pipeline, report over ``conn``, exit.

    Exits with ``os._exit`` right after the terminal message, skipping interpreter teardown
    (TensorFlow's can take seconds; everything that matters is already fsynced by the publish).
    """
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s training[{os.getpid()}] %(levelname)s %(name)s: %(message)s")

    def should_stop() -> bool:
        return stop_event.is_set() or terminated.is_set() or os.getppid() != parent

    def on_progress(event: Any) -> None:
        conn.send(_plain_progress(event))

    final: dict[str, Any]
    try:
        from model_store import PublishError
        from trainer_service.data import DataError, DataSourceSpec
        from trainer_service.hyperparameters import Hyperparameters
        from trainer_service.pipeline import TrainingCancelled, run_training

        try:
            result = run_training(
                DataSourceSpec(**request.source),
                Hyperparameters(**request.hyperparameters),
                request.models_dir,
                data_dir=request.data_dir,
                on_progress=on_progress,
                should_stop=should_stop,
                keep=request.keep,
                min_version=request.min_version,
            )
            final = {"type": "succeeded", "version": int(result.manifest.model_version),
                     "metrics": {str(k): float(v) for k, v in result.manifest.metrics.items()}}
        except TrainingCancelled:
            final = {"type": "cancelled"}
        except (DataError, ValueError) as exc:  # bad data, data too small, a diverged model
            final = {"type": "failed", "error": str(exc)}
        except PublishError as exc:
            final = {"type": "failed", "error": f"publish failed: {exc}"}
    except Exception as exc:  # the job's error, not a crash: the parent reports it on the job
        traceback.print_exc()
        final = {"type": "failed", "error": f"training failed: {type(exc).__name__}: {exc}"}
    try:
        conn.send(final)
        conn.close()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# ---------------------------------------------------------------------------------------------
# Parent side


class WorkerProcess:
    """The parent's handle on one training process.

    ``deliver(message)`` is called from a reader thread with each progress message, then once
    with a ``WorkerExit`` when the child has exited. ``target(request, conn, stop_event)`` is the
    child's entry point (tests substitute scripted children). Start it from a long-lived thread (the
    event loop's): Linux sends the parent-death signal when the *thread* that forked exits.
    """

    def __init__(self, request: WorkerRequest, deliver: Callable[[dict[str, Any] | WorkerExit], None],
                 target: Callable[..., None] = child_main):
        self.request = request
        self._target = target
        self._deliver = deliver
        self._stop = _SPAWN.Event()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._reader: threading.Thread | None = None
        self.pid: int | None = None

    def start(self) -> None:
        """Start the child and the reader thread. Raises OSError if the process cannot start."""
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
        final = None
        try:
            while True:
                try:
                    message = receive.recv()
                except (EOFError, OSError):
                    break
                if not isinstance(message, dict):
                    continue
                if message.get("type") == "progress":
                    self._deliver(message)
                else:
                    final = message
        finally:
            receive.close()
            assert self._process is not None
            self._process.join(_EXIT_WAIT_S)
            if self._process.exitcode is None:
                log.warning("training process %s closed its pipe but did not exit: killing it", self._process.pid)
                self._process.kill()
                self._process.join()
            exitcode = self._process.exitcode
            self._deliver(WorkerExit(exitcode=exitcode, final=final))
