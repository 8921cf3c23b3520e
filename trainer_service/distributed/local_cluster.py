"""A training cluster of processes on this machine: P parameter servers and W workers on 127.0.0.1.

``LocalCluster(spec)`` is a context manager. Entering it picks free ports (one for the chief, the
calling process, and one per task), starts every task as ``python -m
trainer_service.distributed.task`` with its own ``TF_CONFIG``, and waits until each listens.
``config`` is then the chief's ``TFConfig``. Leaving it, on success, exception or Ctrl-C, stops
every process it started (SIGTERM, then SIGKILL after ``stop_grace_s``) and reaps it. While it
runs, ``check()`` (the trainer calls it while it waits) restarts a worker that died, as
Kubernetes restarts a pod, and raises ``ClusterError`` when a ps task died.

Nothing outlives the chief: each task runs in a session of its own (Ctrl-C in a terminal reaches
only the chief, which stops the tasks) and asks the kernel to SIGKILL it when the chief dies
(``musicrec.process_lifetime``), so a chief killed by SIGTERM or SIGKILL leaves no orphan. The
kernel ties that signal to the thread that started the tasks: start a cluster from a thread that
lives as long as it (the main thread, as the pipeline does).

This is the only cluster machinery here: process start, restart and stop. Connecting, scheduling,
reconnecting and re-running lost work are TensorFlow's (``ParameterServerStrategy``, ``ClusterCoordinator``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from musicrec.rpc.errors import Unavailable
from trainer_service.distributed.cluster_config import CHIEF, PS, WORKER, LocalClusterSpec, TFConfig
from trainer_service.distributed.task import PARENT_PID_ENV

HOST = "127.0.0.1"
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
# A worker that dies is started again (same address), as Kubernetes restarts a pod; TensorFlow's
# coordinator then reconnects it. A worker that dies more often than this fails the run.
MAX_WORKER_RESTARTS = 3
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_STOP_GRACE_S = 5.0


class ClusterError(Unavailable):
    """A task did not start, or died while the cluster was in use; the message names it and
    quotes the end of its log (UNAVAILABLE: the run failed; a new run starts a new cluster)."""


@dataclass
class TaskProcess:
    """A started task: its role, address, process and log file."""

    task_type: str
    task_index: int
    address: str
    process: subprocess.Popen
    log_path: Path

    @property
    def name(self) -> str:
        return f"{self.task_type}:{self.task_index}"

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        return "\n".join("    " + line for line in kept)


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports free on ``host`` right now (bound to port 0, then released; a
    process could take one before the task binds it, which the start-up check reports)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


class LocalCluster:
    """``spec.ps`` ps tasks and ``spec.workers`` worker tasks as child processes (see the module).

    ``log_dir``: where each task's log goes (``ps-0.log``, ``worker-1.log``; default a temporary
    directory removed on stop). ``start_timeout_s``: how long to wait for every task to listen.
    """

    def __init__(self, spec: LocalClusterSpec, *, log_dir: str | os.PathLike | None = None,
                 start_timeout_s: float = DEFAULT_START_TIMEOUT_S, stop_grace_s: float = DEFAULT_STOP_GRACE_S,
                 python: str = sys.executable):
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self.stop_grace_s = stop_grace_s
        self._python = python
        self._given_log_dir = Path(log_dir) if log_dir is not None else None
        self._temp_dir: tempfile.TemporaryDirectory | None = None
        self.tasks: list[TaskProcess] = []
        self.config: TFConfig | None = None
        self.restarts: dict[str, int] = {}  # task name -> times restarted
        self._log_dir = Path(".")

    # -- start ------------------------------------------------------------------------------------

    def start(self) -> TFConfig:
        """Start every task and wait until each listens; returns the chief's ``TFConfig``. On any
        failure every started task is stopped before ``ClusterError`` is raised."""
        if self.tasks:
            raise RuntimeError("this cluster is already started")
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> TFConfig:
        if self._given_log_dir is not None:
            log_dir = self._given_log_dir
            log_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="musicrec-cluster-")
            log_dir = Path(self._temp_dir.name)
        ports = iter(free_ports(1 + self.spec.ps + self.spec.workers))
        jobs = {CHIEF: [f"{HOST}:{next(ports)}"],
                WORKER: [f"{HOST}:{next(ports)}" for _ in range(self.spec.workers)],
                PS: [f"{HOST}:{next(ports)}" for _ in range(self.spec.ps)]}
        chief = TFConfig.for_task(jobs, CHIEF, 0)
        self._log_dir = log_dir
        for task_type in (PS, WORKER):
            for index, address in enumerate(jobs[task_type]):
                self.tasks.append(self._launch(chief.with_task(task_type, index), address))
        self._wait_listening()
        self.config = chief
        return chief

    def _launch(self, config: TFConfig, address: str) -> TaskProcess:
        env = dict(os.environ, TF_CONFIG=config.to_json(), PYTHONUNBUFFERED="1",
                   **{PARENT_PID_ENV: str(os.getpid())})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO_ROOT, env.get("PYTHONPATH")]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log_path = self._log_dir / f"{config.task_type}-{config.task_index}.log"
        with open(log_path, "ab") as log:
            # A session of its own: Ctrl-C in a terminal reaches the chief, which stops it.
            process = subprocess.Popen([self._python, "-m", "trainer_service.distributed.task"],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        return TaskProcess(config.task_type, config.task_index, address, process, log_path)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        waiting = list(self.tasks)
        while waiting:
            self.check()
            waiting = [task for task in waiting if not _listening(task.address)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(task.name for task in waiting)
                raise ClusterError(f"cluster task(s) {names} did not listen within {self.start_timeout_s:g} s:\n"
                                   + waiting[0].log_tail())
            time.sleep(0.1)

    # -- while running ----------------------------------------------------------------------------

    def exited(self) -> list[TaskProcess]:
        """The tasks that have exited (they should serve until stopped)."""
        return [task for task in self.tasks if task.process.poll() is not None]

    def check(self) -> None:
        """Restart a worker that has exited (the coordinator reconnects it and re-runs the work it
        lost); raise ``ClusterError`` if a ps task has exited (its shards are lost: the run
        cannot go on) or a worker exited more than ``MAX_WORKER_RESTARTS`` times."""
        for position, task in enumerate(self.tasks):
            if task.process.poll() is None:
                continue
            restarts = self.restarts.get(task.name, 0)
            if task.task_type == WORKER and restarts < MAX_WORKER_RESTARTS and self.config is not None:
                self.restarts[task.name] = restarts + 1
                self.tasks[position] = self._launch(self.config.with_task(WORKER, task.task_index), task.address)
                continue
            why = ("a parameter server holds shards of the tables" if task.task_type == PS
                   else f"it exited {restarts + 1} times")
            raise ClusterError(f"cluster task {task.name} exited (status {task.process.returncode}); training "
                               f"cannot go on: {why}. End of its log:\n{task.log_tail()}")

    def pids(self) -> list[int]:
        return [task.process.pid for task in self.tasks]

    # -- stop -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM every task's process group, SIGKILL what is left after ``stop_grace_s``, reap all.
        Idempotent."""
        for task in self.tasks:
            if task.process.poll() is None:
                _signal_group(task.process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        for task in self.tasks:
            try:
                task.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(task.process, signal.SIGKILL)
                task.process.wait()
        self.tasks = []
        self.config = None
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the task's process group (its session: the task and anything it started)."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
