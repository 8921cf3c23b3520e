"""The one harness for running a service as a child process: the launcher's services, the tests'
servers and the benchmark's servers all start, wait for and stop their children through it.

A service logs ``... listening on HOST:PORT`` once its port is bound (``LISTENING``); that line
says it started and which port it got, so a child can be started on port 0. A child:

- writes stdout and stderr to its log file (appended to, so a log directory keeps earlier runs;
  only what this run wrote counts for readiness and ``log_text``);
- runs in a session of its own, so a terminal's Ctrl-C reaches only the parent, which stops its
  children in order;
- gets SIGTERM from the kernel if the parent dies (``tied_argv``), so no orphan keeps a
  port bound;
- is stopped with SIGTERM, and SIGKILL if it has not exited within the given time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from musicrec.process_lifetime import tied_argv

# The line every service logs once it listens; group 1 is the port (IPv6 hosts are bracketed).
LISTENING = re.compile(r"listening on (?:\[[^\]]+\]|[^\s:]+):(\d+)")
# Defaults, in seconds: importing TensorFlow on a busy machine takes a while, and a trainer that
# is cancelling a job gets its own 30 s cancel grace before it exits.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
_POLL_S = 0.05


class ServiceStartError(RuntimeError):
    """The child exited, or did not listen in time, while starting; the message ends with the
    tail of its log."""


class ServiceProcess:
    """One service as a child process, its output in ``log_path``; ``port`` is known once
    ``wait_listening`` (or ``start``) has returned.

    ``env``: the child's environment (default: this process's), with unbuffered output and
    TensorFlow's start-up chatter off unless set; ``cwd``: its working directory; ``ready``:
    an extra readiness test on what the child has logged so far (e.g. "serves a version"),
    checked after the listening line.
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, ready: Callable[[str], bool] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.ready = ready
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.killed = False  # set when ``wait`` had to SIGKILL it
        self._log_start = 0  # where this run's output begins in the log file, in bytes

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` once it listens (every service here is started on loopback)."""
        return f"127.0.0.1:{self.port}"

    def spawn(self) -> "ServiceProcess":
        """Start the child without waiting for it to listen."""
        env = dict(os.environ if self.env is None else self.env, PYTHONUNBUFFERED="1")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            # SIGTERM when the thread that started it dies (start from a long-lived one); no
            # preexec_fn: see tied_argv (a forked child of a gRPC process can abort before exec).
            self.process = subprocess.Popen(tied_argv(self.argv, signal.SIGTERM), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                            start_new_session=True)
        return self

    def wait_listening(self, timeout_s: float = START_TIMEOUT_S) -> int:
        """Wait until the child logs its listening line (and ``ready`` agrees); return its port.
        ServiceStartError if it exits first or takes longer than ``timeout_s`` seconds (then it is
        stopped)."""
        assert self.process is not None, f"{self.name} was not started"
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log_text()
            match = LISTENING.search(text)
            if match and (self.ready is None or self.ready(text)):
                self.port = int(match.group(1))
                return self.port
            code = self.process.poll()
            if code is not None:
                raise ServiceStartError(f"{self.name} exited with {code} while starting; "
                                        f"last lines of {self.log_path}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceStartError(f"{self.name} did not start within {timeout_s:g} s; "
                                        f"last lines of {self.log_path}:\n{self.tail()}")
            time.sleep(_POLL_S)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "ServiceProcess":
        """``spawn`` then ``wait_listening``."""
        self.spawn().wait_listening(timeout_s)
        return self

    def exit_code(self) -> int | None:
        """Its exit status once it has exited (negative: the signal that ended it), else None."""
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        """What this child has written to its log so far."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of ``log_text``."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def terminate(self) -> None:
        """Send SIGTERM if it still runs (it shuts down gracefully); do not wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Wait for it to exit; SIGKILL it (and set ``killed``) after ``timeout_s`` seconds.
        Its exit status; None if it was never started."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.process.kill()
            return self.process.wait()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """``terminate`` then ``wait``: its exit status (0 when it stopped cleanly)."""
        self.terminate()
        return self.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL it now and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
