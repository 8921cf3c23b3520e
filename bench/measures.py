"""Small measuring tools: medians, percentiles, wall clocks, CPU time and memory of processes
(psutil, of the ``bench`` and ``dev`` extras).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import psutil


def median(values: Iterable[float]) -> float:
    """Median of finite values (NaN when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(finite) if finite else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``; NaN when empty."""
    if not len(values):
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean in milliseconds of latencies given in seconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "mean_ms": statistics.fmean(ms) if ms else math.nan,
        "count": len(ms),
    }


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (wall clock, monotonic)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> "Stopwatch":
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self._started


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants now, ``pid`` first ([] once ``pid`` has exited)."""
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _tree_sum(pid: int, measure: Callable[[psutil.Process], float]) -> float:
    """``measure`` summed over ``pid`` and its live descendants; one that exits in between is skipped."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += measure(psutil.Process(member))
        except psutil.NoSuchProcess:
            continue
    return total


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _main_thread_cpu_seconds(process: psutil.Process) -> float:
    """The main thread's (its thread id is the pid): in a Python ``grpc.aio`` server, the thread
    that runs the asyncio loop and every handler."""
    return sum(t.user_time + t.system_time for t in process.threads() if t.id == process.pid)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (a supervisor and its
    workers), all threads."""
    return _tree_sum(pid, _cpu_seconds)


def tree_main_threads_cpu_seconds(pid: int) -> float:
    """Sum of the main threads' user + system CPU seconds over ``pid`` and its live descendants."""
    return _tree_sum(pid, _main_thread_cpu_seconds)


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its live descendants in bytes, summed (shared pages counted
    in each)."""
    return int(_tree_sum(pid, lambda process: process.memory_info().rss))


def process_rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes. Raises OSError when the process is gone."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess as exc:
        raise OSError(f"cannot read the memory of pid {pid}: {exc}") from None


def process_memory_bytes(pid: int) -> dict[str, int]:
    """Memory of process ``pid`` in bytes: ``uss`` (unique: pages no other process maps, what
    the process frees when it exits), ``pss`` (each shared page divided among its users) and
    ``rss`` (every resident page, shared ones included). Raises OSError when the process is gone
    or unreadable."""
    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
        raise OSError(f"cannot read the memory of pid {pid}: {exc}") from None
    return {"uss": int(info.uss), "pss": int(getattr(info, "pss", 0)), "rss": int(info.rss)}


def directory_bytes(path: str | os.PathLike) -> int:
    """Total size in bytes of the regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                total += os.path.getsize(full)
    return total
