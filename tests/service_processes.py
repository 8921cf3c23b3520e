"""The services as real OS processes on port 0, for tests: the launcher's process harness
(``launcher.processes``) with test failures.

``ServiceProcess.start()`` waits for the ``listening on HOST:PORT`` line; a process that exits
first, or does not listen in time, fails the test with ``AssertionError`` and its log's tail, and
so does one that does not stop within ``STOP_TIMEOUT_S`` of SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psutil

from launcher import processes

# Generous: the machine is shared and these are not timing assertions, only hang protection.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0
PYTHON = sys.executable


class ServiceProcess(processes.ServiceProcess):
    """One service process; ``port`` is known once ``start()`` has returned."""

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "ServiceProcess":
        try:
            return super().start(timeout_s)
        except processes.ServiceStartError as exc:
            raise AssertionError(str(exc)) from None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait: the exit status; AssertionError if it had to be killed."""
        assert self.process is not None, f"{self.name} was not started"
        code = super().stop(timeout_s)
        if self.killed:
            raise AssertionError(f"{self.name} did not stop within {timeout_s:g} s:\n{self.tail()}")
        return code

    def log(self) -> str:
        """What this process has logged so far (``log_text``)."""
        return self.log_text()


def trainer(tmp: Path, models_dir: Path, data_dir: Path | None = None, *extra: str,
            default_source: str = "synthetic:tiny", name: str = "trainer") -> ServiceProcess:
    """A trainer process (not started) on port 0."""
    argv = [PYTHON, "-m", "trainer_service", "serve", "--models-dir", str(models_dir), "--port", "0",
            "--default-source", default_source, *extra]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return ServiceProcess(name, argv, tmp / f"{name}.log")


def index_service(tmp: Path, models_dir: Path, name: str = "index") -> ServiceProcess:
    """An index-service process (not started) on port 0, polling fast."""
    argv = [PYTHON, "-m", "index_service", "--models-dir", str(models_dir), "--port", "0", "--poll-interval", "0.2"]
    return ServiceProcess(name, argv, tmp / f"{name}.log")


def exited(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie (exited, not yet reaped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def child_pids(pid: int) -> list[int]:
    """PIDs of the live direct children of ``pid`` ([] once it has exited)."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []
