"""Driving ``h2load`` (Debian's ``nghttp2-client``) as a low-overhead gRPC load generator.

gRPC over HTTP/2 is a POST to ``/package.Service/Method`` with ``content-type: application/grpc``
and ``te: trailers``, whose body is one length-prefixed message (1 byte "not compressed", 4 bytes
big-endian length, the serialized request). h2load sends that body from a file on every request.

h2load counts any HTTP 200 as a success, but gRPC reports failures in the ``grpc-status`` trailer
of an HTTP 200 response. So every run is checked another way: a failed call has no response
message, so the DATA bytes h2load received must equal the requests done times the size of the
(known, verified once with ``nghttp``) successful response frame. ``gRPC errors`` are the shortfall.
"""

from __future__ import annotations

import re
import shlex
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.measures import latency_summary_ms

_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"traffic: .*?, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data")
_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def available() -> bool:
    return shutil.which("h2load") is not None and shutil.which("nghttp") is not None


def ensure_installed(allow_install: bool) -> tuple[bool, str]:
    """(available, note). Installs Debian's nghttp2-client with apt-get when missing and allowed
    (the bench runs as root on the project's machines)."""
    if available():
        return True, ""
    if not allow_install or shutil.which("apt-get") is None:
        return False, "h2load is not installed (apt-get install nghttp2-client); h2load rows skipped"
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nghttp2-client"]):
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"could not install nghttp2-client ({exc}); h2load rows skipped"
    return available(), "" if available() else "nghttp2-client installed but h2load not found; rows skipped"


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: flag 0 (uncompressed), 4-byte big-endian length, payload."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def write_body(path: Path, message: bytes) -> Path:
    path.write_bytes(grpc_frame(message))
    return path


def url(port: int, method: str) -> str:
    return f"http://127.0.0.1:{port}{method}"


def verify_with_nghttp(port: int, method: str, body: Path, timeout_s: float = 30.0) -> dict:
    """Send the body once with ``nghttp -v`` and read the response: HTTP status, grpc-status
    trailer, and the DATA frame length (the size every successful response must have)."""
    argv = ["nghttp", "-v", "-H", ":method: POST", *[a for h in GRPC_HEADERS for a in ("-H", h)],
            "-d", str(body), url(port, method)]
    out = subprocess.run(argv, capture_output=True, timeout=timeout_s)
    text = out.stdout.decode("utf-8", errors="replace")
    status = re.search(r"recv \(stream_id=\d+\) :status: (\d+)", text)
    grpc_status = re.search(r"recv \(stream_id=\d+\) grpc-status: (\d+)", text)
    data = [int(m) for m in re.findall(r"recv DATA frame <length=(\d+)", text)]
    return {
        "http_status": int(status.group(1)) if status else None,
        "grpc_status": int(grpc_status.group(1)) if grpc_status else None,
        "data_bytes": sum(data),
        "command": shlex.join(argv),
    }


@dataclass(frozen=True)
class H2loadRun:
    """One h2load run: the command, requests done (all of them, warm-up included) and those with
    HTTP 200, gRPC errors (by the DATA byte check), throughput and latency percentiles over the
    measured window (after the warm-up), from the per-request log."""

    command: str
    done: int
    http_ok: int
    grpc_errors: int
    seconds: float
    requests_per_s: float
    latency: dict

    def as_dict(self) -> dict:
        return {"command": self.command, "done": self.done, "http_ok": self.http_ok, "grpc_errors": self.grpc_errors,
                "seconds": self.seconds, "requests_per_s": self.requests_per_s, **self.latency}


def run(port: int, method: str, body: Path, response_bytes: int, log_file: Path, *, inflight: int,
        duration_s: float, warm_up_s: float = 0.0, timeout_s: float = 120.0, connections: int = 1) -> H2loadRun:
    """One closed-loop h2load run on ``connections`` connections (one thread): ``-m inflight`` for
    ``warm_up_s`` + ``duration_s``, the warm-up's requests left out of the figures.
    ``response_bytes`` is the DATA length of one successful response (see ``verify_with_nghttp``).

    With several connections, ``inflight`` is the total, split evenly (h2load's ``-m`` is per
    connection): it must be a multiple of ``connections``.

    The warm-up is cut from the log here rather than with h2load's ``--warm-up-time``, which
    leaves warm-up requests out of its counts and log: every request the server handled must be
    counted to divide its CPU time by."""
    if connections < 1 or inflight % connections:
        raise ValueError(f"{inflight} in flight cannot be split evenly over {connections} connections")
    argv = ["h2load", "-c", str(connections), "-t", "1", "-m", str(inflight // connections)]
    for header in GRPC_HEADERS:
        argv += ["-H", header]
    argv += ["-d", str(body), "--log-file", str(log_file), "-D", f"{max(1, round((duration_s + warm_up_s) * 1000))}ms",
             url(port, method)]
    log_file.unlink(missing_ok=True)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    text = out.stdout + out.stderr
    requests_match = _REQUESTS.search(text)
    finished = _FINISHED.search(text)
    traffic = _TRAFFIC.search(text)
    if out.returncode != 0 or not (requests_match and finished and traffic):
        raise RuntimeError(f"h2load failed (exit {out.returncode}): {shlex.join(argv)}\n{text[-2000:]}")
    done = int(requests_match.group(3))
    succeeded = int(requests_match.group(4))
    status = _STATUS.search(text)
    http_ok = int(status.group(1)) if status else succeeded
    data_bytes = int(traffic.group(2))
    # A failed gRPC call carries no message: each one is a whole response frame missing.
    grpc_ok = min(http_ok, round(data_bytes / response_bytes)) if response_bytes else http_ok
    latencies, window_s = _log_latencies_s(log_file, skip_s=warm_up_s)
    if warm_up_s == 0.0 or window_s <= 0:
        window_s = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    return H2loadRun(
        command=shlex.join(argv), done=done, http_ok=http_ok, grpc_errors=done - grpc_ok,
        seconds=window_s, requests_per_s=len(latencies) / window_s if window_s > 0 else 0.0,
        latency=latency_summary_ms(latencies),
    )


def _log_latencies_s(log_file: Path, skip_s: float = 0.0) -> tuple[list[float], float]:
    """(latencies in seconds, measured window in seconds) from h2load's --log-file (start us,
    status, duration us): requests answered 200 that started ``skip_s`` seconds or more after the
    first one; the window runs from that cut to the last one's end."""
    rows = []
    try:
        with open(log_file, encoding="ascii") as fh:
            for line in fh:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1] == "200":
                    rows.append((int(parts[0]), int(parts[2])))
    except OSError:
        return [], 0.0
    if not rows:
        return [], 0.0
    cut = min(start for start, _ in rows) + skip_s * 1e6
    kept = [(start, duration) for start, duration in rows if start >= cut]
    if not kept:
        return [], 0.0
    window = (max(start + duration for start, duration in kept) - cut) / 1e6
    return [duration / 1e6 for _, duration in kept], window
