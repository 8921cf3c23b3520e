"""Small measuring tools: medians, percentiles, wall clocks, CPU time and memory of processes.

No third-party imports needed: Linux ``/proc`` and ``resource``; psutil (the ``bench`` extra) is
used for a process's unique memory when installed, and reads the same ``/proc`` files.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from collections.abc import Iterable, Sequence

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads), from /proc."""
    return process_cpu_seconds_of(f"/proc/{pid}/stat")


def main_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the main thread of ``pid`` (its thread id is the pid): in a
    Python ``grpc.aio`` server, the thread that runs the asyncio loop and every handler."""
    return process_cpu_seconds_of(f"/proc/{pid}/task/{pid}/stat")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (from /proc/PID/task/TID/children), parents first."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children", encoding="ascii") as fh:
                    queue.extend(int(child) for child in fh.read().split())
            except OSError:
                continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (a supervisor and its
    workers); a process that exited in between is skipped."""
    return sum(_cpu_or_zero(f"/proc/{p}/stat") for p in process_tree(pid))


def tree_main_threads_cpu_seconds(pid: int) -> float:
    """Sum of the main threads' CPU seconds over ``pid`` and its live descendants."""
    return sum(_cpu_or_zero(f"/proc/{p}/task/{p}/stat") for p in process_tree(pid))


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its live descendants, summed (shared pages counted in each)."""
    total = 0
    for p in process_tree(pid):
        try:
            total += process_rss_bytes(p)
        except OSError:
            continue
    return total


def _cpu_or_zero(stat_path: str) -> float:
    try:
        return process_cpu_seconds_of(stat_path)
    except OSError:
        return 0.0


def process_cpu_seconds_of(stat_path: str) -> float:
    """User + system CPU seconds from a /proc ``stat`` file (a process's or a thread's)."""
    # After the command name: field 3 is the state, so utime/stime (fields 14/15) are at 11/12.
    with open(stat_path, encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (VmRSS from /proc; 0 when unknown)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def process_memory_bytes(pid: int) -> dict[str, int]:
    """Memory of process ``pid`` in bytes: ``uss`` (unique: pages no other process maps, what
    the process frees when it exits), ``pss`` (each shared page divided among its users) and
    ``rss`` (every resident page, shared ones included). psutil's ``memory_full_info()`` when
    installed, else ``/proc/PID/smaps_rollup`` (the file psutil reads). Raises OSError when the
    process is gone."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            info = psutil.Process(pid).memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
            raise OSError(f"cannot read the memory of pid {pid}: {exc}") from None
        return {"uss": int(info.uss), "pss": int(getattr(info, "pss", 0)), "rss": int(info.rss)}
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[name] = int(parts[0]) * 1024
    return {"uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
            + fields.get("Private_Hugetlb", 0), "pss": fields.get("Pss", 0), "rss": fields.get("Rss", 0)}


def children_peak_rss_bytes() -> int:
    """Largest peak RSS (bytes) of any waited-for child process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def self_peak_rss_bytes() -> int:
    """Peak RSS (bytes) of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def directory_bytes(path: str | os.PathLike) -> int:
    """Total size in bytes of the regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                total += os.path.getsize(full)
    return total
