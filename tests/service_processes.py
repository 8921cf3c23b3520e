"""Helpers for tests that run the services as real OS processes on port 0.

Each service logs ``... listening on HOST:PORT`` once its port is bound; ``ServiceProcess`` starts
the command with its output in a log file, waits for that line (or the process's early exit, which
fails the test with the log's tail), and stops it with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

_LISTENING = re.compile(r"listening on (?:\[[^\]]+\]|[^\s:]+):(\d+)")
# Generous: the machine is shared and these are not timing assertions, only hang protection.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0
PYTHON = sys.executable


class ServiceProcess:
    """One service process; ``port`` is known once ``start()`` has returned."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "ServiceProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            match = _LISTENING.search(self.log())
            if match:
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode} while starting:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.name} did not listen within {START_TIMEOUT_S} s:\n{self.tail()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM and wait; the exit status (killed and failed if it does not stop)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {STOP_TIMEOUT_S} s:\n{self.tail()}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


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


def child_pids(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
