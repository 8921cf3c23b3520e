"""``--workers N``: N index-service processes sharing one port (SO_REUSEPORT), under one supervisor.

One ``grpc.aio`` process runs every handler on one thread (the GIL): on a multi-core machine it
tops out at about one core. N worker processes, each the complete service (its own watcher, its
own loaded version; the memory-mapped Annoy files are shared through the page cache), bind the
same port with SO_REUSEPORT and the kernel spreads *connections* over them (a single HTTP/2
connection stays on one worker: clients need several connections to use several workers).

The supervisor (this module; no gRPC, no numpy) does only process management:

- reserves the port first: binds a socket with SO_REUSEPORT (port 0 picks a free one) and keeps
  it bound, not listening, until it exits, so no other program can take the port while a worker
  restarts; a bound socket that does not listen gets no connections;
- starts the workers (``python -m index_service ... --port P`` plus the hidden ``--reuse-port``
  and ``--ready-fd``) and logs ``index service listening on HOST:PORT`` once all have bound;
- on SIGTERM or SIGINT, sends SIGTERM to every worker (each shuts down gracefully) and exits 0
  once all have stopped (SIGKILL for any still running ``grace + STOP_SLACK_S`` later);
- restarts a worker that dies, after a backoff doubling from ``RESTART_MIN_S`` to
  ``RESTART_MAX_S`` (reset once a worker has lived ``STABLE_S``). A worker that dies before it
  ever bound the port (bad TLS files, say) stops the whole service with exit status 1.

With ``--metrics-port``, the supervisor serves every worker's metrics on that one port: it makes a
fresh directory for this run (removed at exit), starts the workers with
``PROMETHEUS_MULTIPROC_DIR`` pointing at it (each records into its own files there), serves their
aggregate (``musicrec.metrics.multiprocess_registry``) plus the process metrics of itself and each
worker, and drops a dead worker's live gauges when it reaps it. One scrape target per replica,
whatever N, and counters that survive a worker's restart (docs/operations.md says why).

Workers run in their own session (a terminal's Ctrl-C reaches only the supervisor, which
forwards SIGTERM once) and get SIGTERM from the kernel if the supervisor dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
STABLE_S = 30.0
STOP_SLACK_S = 10.0
START_TIMEOUT_S = 120.0
_TICK_S = 0.1


def add_worker_arguments(parser) -> None:
    """The options a ``Supervisor`` puts on its workers' command lines (hidden from --help), and
    ``--workers N`` itself, for any server program the supervisor runs."""
    import argparse

    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="serve from N processes sharing the port with SO_REUSEPORT (default 1); "
                             "the kernel spreads connections, not calls, over them")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-number", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--metrics-dir", default=None, help=argparse.SUPPRESS)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT (port 0: a free port), not listening.
    Raises OSError when the port is taken by a socket without SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Slot:
    """One worker position: its process, when it started, and its restart backoff."""

    number: int
    process: subprocess.Popen | None = None
    ready_fd: int | None = None
    ready: bool = False
    started_at: float = 0.0
    restart_at: float | None = None
    backoff_s: float = RESTART_MIN_S
    restarts: int = field(default=0)


class Supervisor:
    """Runs ``workers`` copies of ``worker_argv`` (which must not name a port) on ``host:port``."""

    def __init__(self, worker_argv: Sequence[str], workers: int, host: str, port: int, grace_s: float, *,
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1"):
        """``metrics_port``: serve the workers' metrics there (0: a free port); None: none."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.worker_argv = list(worker_argv)
        self.host = host
        self.requested_port = port
        self.grace_s = grace_s
        self.slots = [_Slot(number=n) for n in range(1, workers + 1)]
        self.port = 0
        self._stop_signal: int | None = None
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.metrics_dir: str | None = None
        self._metrics_endpoint = None

    # -- worker processes ---------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        read_fd, write_fd = os.pipe()
        argv = [*self.worker_argv, "--port", str(self.port), "--reuse-port", "--ready-fd", str(write_fd),
                "--worker-number", str(slot.number), "--supervisor-pid", str(os.getpid())]
        env = None
        if self.metrics_dir is not None:
            argv += ["--metrics-dir", self.metrics_dir]
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}
        try:
            slot.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, pass_fds=(write_fd,),
                                            start_new_session=True, env=env)
        finally:
            os.close(write_fd)
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
        slot.ready_fd = read_fd
        slot.ready = False
        slot.started_at = time.monotonic()
        slot.restart_at = None
        log.info("started worker %d (pid %d)", slot.number, slot.process.pid)

    def _collect_ready(self, timeout_s: float) -> None:
        """Mark the workers that reported binding the port (each writes one line, then closes)."""
        waiting = {slot.ready_fd: slot for slot in self.slots if not slot.ready and slot.ready_fd is not None}
        if not waiting:
            time.sleep(timeout_s)
            return
        try:
            readable, _, _ = select.select(list(waiting), [], [], timeout_s)
        except InterruptedError:
            return
        for fd in readable:
            slot = waiting[fd]
            data = os.read(fd, 64)
            if data.startswith(b"ready"):
                slot.ready = True
            os.close(fd)
            slot.ready_fd = None

    def _reap(self) -> list[_Slot]:
        """Slots whose worker has exited (since last time)."""
        dead = []
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is not None:
                dead.append(slot)
        return dead

    # -- life cycle ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status (0 after a requested stop, 1 if the
        service could not start)."""
        try:
            reservation = reserve_port(self.host, self.requested_port)
        except OSError as exc:
            log.error("cannot start: cannot bind %s:%d: %s", self.host, self.requested_port, exc.strerror or exc)
            return 1
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.port = reservation.getsockname()[1]
            if self.metrics_port is not None:
                try:
                    self._start_metrics()
                except OSError as exc:
                    log.error("cannot start: %s", exc.strerror or exc)
                    return 1
            return self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            reservation.close()
            self._stop_metrics()
            for slot in self.slots:
                if slot.ready_fd is not None:
                    os.close(slot.ready_fd)
                    slot.ready_fd = None

    def _live_pids(self) -> list[tuple[str, int]]:
        """(worker label, pid) of the supervisor ("0") and each running worker."""
        pids = [("0", os.getpid())]
        for slot in list(self.slots):
            process = slot.process
            if process is not None and process.returncode is None:
                pids.append((str(slot.number), process.pid))
        return pids

    def _start_metrics(self) -> None:
        from musicrec.metrics import MetricsEndpoint, multiprocess_registry

        self.metrics_dir = tempfile.mkdtemp(prefix="musicrec-index-metrics-")
        log.info("workers record metrics in %s", self.metrics_dir)
        try:
            self._metrics_endpoint = MetricsEndpoint(multiprocess_registry(self.metrics_dir, self._live_pids),
                                                     self.metrics_host, self.metrics_port)
        except OSError:
            self._stop_metrics()
            raise

    def _stop_metrics(self) -> None:
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.close()
            self._metrics_endpoint = None
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None

    def _supervise(self) -> int:
        for slot in self.slots:
            self._spawn(slot)
        address = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        announced = False
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._stop_signal is None:
            self._collect_ready(_TICK_S)
            now = time.monotonic()
            for slot in self._reap():
                code = slot.process.returncode
                if not announced and not slot.ready:
                    log.error("worker %d exited with status %s before serving; stopping", slot.number, code)
                    self._stop_all()
                    return 1
                if now - slot.started_at >= STABLE_S:
                    slot.backoff_s = RESTART_MIN_S
                log.warning("worker %d (pid %d) exited with status %s; restarting in %.1f s", slot.number,
                            slot.process.pid, code, slot.backoff_s)
                if self.metrics_dir is not None:
                    from musicrec.metrics import mark_worker_dead

                    mark_worker_dead(self.metrics_dir, slot.process.pid)
                slot.restart_at = now + slot.backoff_s
                slot.backoff_s = min(slot.backoff_s * 2, RESTART_MAX_S)
                slot.process = None
            for slot in self.slots:
                if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                    slot.restarts += 1
                    self._spawn(slot)
            if not announced and all(slot.ready for slot in self.slots):
                announced = True
                log.info("index service listening on %s:%d (%d worker processes, SO_REUSEPORT)%s", address,
                         self.port, len(self.slots),
                         f"; metrics on {self._metrics_endpoint.url}" if self._metrics_endpoint else "")
            if not announced and now > deadline:
                log.error("workers did not bind within %.0f s; stopping", START_TIMEOUT_S)
                self._stop_all()
                return 1
        log.info("received %s, stopping %d workers", signal.Signals(self._stop_signal).name, len(self.slots))
        self._stop_all()
        log.info("index service stopped")
        return 0

    def _stop_all(self) -> None:
        """SIGTERM every worker, wait for all (SIGKILL after the grace period and some slack)."""
        running = [slot.process for slot in self.slots if slot.process is not None and slot.process.poll() is None]
        for process in running:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.grace_s + STOP_SLACK_S
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
            if process.returncode not in (0, None):
                log.warning("worker pid %d exited with status %s", process.pid, process.returncode)
