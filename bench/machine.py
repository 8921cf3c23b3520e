"""What the benchmark ran on: CPU, cores, memory, load, Python and library versions."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

LIBRARIES = ("numpy", "tensorflow-cpu", "keras", "annoy", "grpcio", "protobuf", "implicit", "hnswlib",
             "scipy", "threadpoolctl", "matplotlib", "psutil")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return float("nan")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def h2load_version() -> str | None:
    """``h2load --version`` ("h2load nghttp2/1.52.0"), or None when h2load is not installed."""
    try:
        out = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def blas_info() -> list[dict]:
    """The BLAS libraries numpy uses (threadpoolctl), e.g. OpenBLAS and its kernel."""
    try:
        import numpy  # noqa: F401 - loads the BLAS threadpoolctl reports
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{key: info.get(key) for key in ("internal_api", "version", "architecture", "num_threads")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def identity(described: dict) -> dict:
    """What tells one machine from another in ``describe()``'s record (CPU, cores, memory,
    kernel, BLAS kernels): the part of it that a part's figures depend on, without the load."""
    return {"cpu_model": described.get("cpu_model"), "cpu_cores": described.get("cpu_cores"),
            "memory_gib": described.get("memory_gib"), "kernel": described.get("kernel"),
            "blas": sorted({b.get("architecture") or "?" for b in described.get("blas", [])})}


def describe() -> dict:
    """The machine and software, as recorded in benchmarks.json."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "h2load": h2load_version(),
        "blas": blas_info(),
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ},
        "load_average_at_start": load_average(),
    }
