"""Serving over gRPC: the index service as a real process, loaded from separate processes.

For each RPC (Recommend, SimilarArtists):

- closed loop at each of ``closed_loop_inflight`` requests in flight: throughput, from
  ``h2load`` (the same serialized request every time, a client that costs the shared cores
  little; the Python generator where h2load is missing);
- open loop paced at each of ``open_loop_rates`` requests/s: p50/p99 latency, from the Python
  ``grpc.aio`` generator ``bench.grpc_load`` (``python_load_processes`` processes, a different
  user or artist on every request over all of the served version's, latency from the moment each
  request was due);
- the same paced run at the first rate while a new model version appears every
  ``swap_interval_s`` seconds: latency and errors (which must be 0).

Every scenario runs against one index process and again against ``--workers N`` processes
(SO_REUSEPORT) for each N in ``serving_workers`` beyond 1 (RPCs ``multi_worker_rpcs``). The
kernel spreads connections, not calls, over the workers, so against several workers both
generators open several connections (``connections_for``) with the same total in flight.

When the scale part left a version of ``FULL_SCALE_ARTISTS`` artists (quick mode: its largest,
small one), ``full_scale`` serves it too: Recommend throughput at 16 in flight (h2load; the
Python generator where h2load is missing), the recall@10 its manifest records, and the unique
memory (USS) of each ``--workers`` process.

``bench.plumbing``: what gRPC and each of our wrappers (metrics included) cost per call.

The server's CPU time per request comes from the CPU times (psutil) of the server and all its
descendants (the supervisor and its workers) before and after each run. All on
127.0.0.1; every run bounded in time (``load_seconds``) and requests.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

from bench import h2load
from bench.grpc_load import DEFAULT_K, METHODS, serialized_requests
from bench.measures import (latency_summary_ms, median, process_memory_bytes, tree_cpu_seconds,
                            tree_main_threads_cpu_seconds, tree_rss_bytes)
from bench.models import lastfm_version
from bench.settings import REPO_ROOT, BenchSettings, child_env
from launcher.processes import ServiceProcess
from model_store import list_versions, read_manifest
from model_store.format import MANIFEST_NAME, TEMP_PREFIX
from model_store.writer import apply_retention

log = logging.getLogger(__name__)

_SERVING = re.compile(r"serving model version (\d+)")
RPCS = ("recommend", "similar")
# Room for gRPC's own deadline and process start-up beyond a run's planned length.
_RUN_SLACK_S = 60.0
# Time for the Python generator processes to start, connect and warm up before a run begins.
_PYTHON_START_S = 2.5
# The synthetic full scale (Last.fm 360K): the scale part's largest size.
FULL_SCALE_ARTISTS = 160_000
FULL_SCALE_INFLIGHT = 16


class ServerProcess(ServiceProcess):
    """A gRPC server as a child process on 127.0.0.1, port 0, its log in a file (the launcher's
    process harness); started once its log says ``listening on HOST:PORT`` (and ``_ready`` agrees)."""

    what = "server"

    def __init__(self, argv: list[str], log_path: Path, workers: int = 1):
        super().__init__(self.what, argv, log_path, env=child_env(), cwd=REPO_ROOT, ready=self._ready)
        self.workers = workers

    @property
    def target(self) -> str:
        return self.address

    @property
    def command(self) -> str:
        return " ".join(["python"] + self.argv[1:])

    def _ready(self, text: str) -> bool:
        return True

    def worker_pids(self) -> dict[int, int]:
        """{worker number: pid}: with ``--workers N`` the supervisor's children that carry
        ``--worker-number``; one process: {1: its pid}."""
        if self.workers <= 1:
            return {1: self.pid}
        found = {}
        for child in psutil.Process(self.pid).children(recursive=True):
            try:
                argv = child.cmdline()
            except psutil.Error:  # exited in between
                continue
            if "--worker-number" in argv[:-1]:
                found[int(argv[argv.index("--worker-number") + 1])] = child.pid
        return dict(sorted(found.items()))


class IndexServer(ServerProcess):
    """``python -m index_service`` on 127.0.0.1, port 0, its log in a file; ready once every
    process serves a version."""

    what = "index service"

    def __init__(self, models_dir: Path, log_path: Path, poll_interval_s: float = 1.0, workers: int = 1,
                 extra_args: tuple[str, ...] = ()):
        argv = [sys.executable, "-m", "index_service", "--models-dir", str(models_dir), "--port", "0",
                "--poll-interval", f"{poll_interval_s:g}", "--log-level", "INFO", *extra_args]
        if workers > 1:
            argv += ["--workers", str(workers)]
        super().__init__(argv, log_path, workers)
        self.models_dir = models_dir

    def versions_served(self) -> list[int]:
        """Version numbers the server has swapped in, in order (from its log). With N workers each
        one logs its own swaps: a version appears up to N times (count distinct versions)."""
        return [int(v) for v in _SERVING.findall(self.log_text())]

    def _ready(self, text: str) -> bool:
        return len(_SERVING.findall(text)) >= self.workers


class VersionSwapper:
    """Makes a new version appear in ``models_dir`` every ``interval_s`` seconds while running.

    Each new version is the prepared ``source`` version renumbered: its files hard-linked into a
    hidden temporary directory, a manifest with the new number written, and the directory renamed
    into place - the same atomic rename ``model_store.publish_version`` ends with (building Annoy
    indexes every 2 s would measure the trainer's CPU, not the index service). Retention keeps
    the newest 3, as the trainer does.
    """

    def __init__(self, source: Path, models_dir: Path, interval_s: float):
        self.source = source
        self.models_dir = models_dir
        self.interval_s = interval_s
        self.published: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish_one(self) -> int:
        manifest = read_manifest(self.source)
        version = max([0, *list_versions(self.models_dir)]) + 1
        tmp = self.models_dir / f"{TEMP_PREFIX}{version}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        for name in manifest.files:
            os.link(self.source / name, tmp / name)
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        renumbered = dataclasses.replace(manifest, model_version=version, created_at=created)
        (tmp / MANIFEST_NAME).write_text(renumbered.dumps(), encoding="utf-8")
        os.rename(tmp, self.models_dir / str(version))
        apply_retention(self.models_dir, 3)
        self.published.append(version)
        return version

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.publish_one()

    def __enter__(self) -> "VersionSwapper":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="version-swapper", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def _pick_ids(version_dir: Path) -> tuple[list[str], list[str], str, str]:
    """Every user and every artist of the version, each list in a shuffled order (seed 0), for the
    Python generator; and one typical user and artist for h2load (whose body is fixed): the user
    with the median number of seen artists, the artist with the median number of listeners."""
    rng = np.random.default_rng(0)
    user_ids = np.load(version_dir / "user_ids.npy", allow_pickle=False)
    artist_ids = np.load(version_dir / "artist_ids.npy", allow_pickle=False)
    indptr = np.load(version_dir / "seen_indptr.npy", allow_pickle=False)
    seen = np.diff(indptr)
    typical_user = int(np.argsort(seen, kind="stable")[seen.size // 2])
    listeners = np.load(version_dir / "artist_listeners.npy", allow_pickle=False)
    typical_artist = int(np.argsort(listeners, kind="stable")[listeners.size // 2])
    return (user_ids[rng.permutation(user_ids.size)].tolist(), artist_ids[rng.permutation(artist_ids.size)].tolist(),
            str(user_ids[typical_user]), str(artist_ids[typical_artist]))


@dataclass(frozen=True)
class RequestMaterial:
    """What the generators send to a server of one version:
    per RPC, a JSON file of every id in a shuffled order (the Python generator sends the next one
    on every request), its length, one serialized request and the h2load body framing it."""

    ids_files: dict[str, Path]
    ids_counts: dict[str, int]
    single: dict[str, bytes]
    bodies: dict[str, Path]

    @classmethod
    def for_version(cls, version_dir: Path, directory: Path) -> "RequestMaterial":
        directory.mkdir(parents=True, exist_ok=True)
        users, artists, user, artist = _pick_ids(version_dir)
        ids_files, counts = {}, {}
        for rpc, ids in (("recommend", users), ("similar", artists)):
            path = directory / f"{rpc}-ids.json"
            path.write_text(json.dumps(ids), encoding="utf-8")
            ids_files[rpc] = path
            counts[rpc] = len(ids)
        single = {"recommend": serialized_requests("recommend", [user])[0],
                  "similar": serialized_requests("similar", [artist])[0]}
        bodies = {rpc: h2load.write_body(directory / f"{rpc}.body", msg) for rpc, msg in single.items()}
        return cls(ids_files=ids_files, ids_counts=counts, single=single, bodies=bodies)


def _verify_with_client(target: str, rpc: str, message: bytes) -> int:
    """Send ``message`` once with a real gRPC client; return the serialized response's size.
    Raises if the call fails, or if the response has no artists."""
    import grpc

    from musicrec.v1 import index_pb2

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHODS[rpc])
        raw = call(message, timeout=30)
    parsed = (index_pb2.RecommendResponse if rpc == "recommend" else index_pb2.SimilarArtistsResponse).FromString(raw)
    if not parsed.artists:
        raise RuntimeError(f"{rpc} answered no artists: the benchmark request is wrong")
    return len(raw)


class _ServingRuns:
    """The serving runs against one server: verification and one run of each kind, with the
    request material of the version served."""

    def __init__(self, settings: BenchSettings, workdir: Path, server: ServerProcess, material: RequestMaterial):
        self.settings = settings
        self.workdir = workdir
        self.server = server
        self.ids_files = material.ids_files
        self.ids_counts = material.ids_counts
        self.single = material.single
        self.bodies = material.bodies
        self.response_bytes: dict[str, int] = {}
        self.python_command = ""
        self.workers = server.workers

    def verify(self, use_h2load: bool, rpcs: tuple[str, ...] = RPCS) -> dict:
        """Each request once with a real client (and with nghttp: HTTP 200, grpc-status 0)."""
        checks = {}
        for rpc in rpcs:
            size = _verify_with_client(self.server.target, rpc, self.single[rpc])
            check = {"client_response_bytes": size}
            if use_h2load:
                seen = h2load.verify_with_nghttp(self.server.port, METHODS[rpc], self.bodies[rpc])
                if seen["http_status"] != 200 or seen["grpc_status"] != 0 or seen["data_bytes"] != size + 5:
                    raise RuntimeError(f"the h2load request for {rpc} is not a valid gRPC call: {seen}")
                check.update(seen)
            self.response_bytes[rpc] = size + 5  # plus the 5-byte gRPC message prefix
            checks[rpc] = check
        return checks

    # -- one run of each generator ------------------------------------------------------------

    def _snapshot(self) -> tuple[float, float, float]:
        """(server CPU s, its main threads' CPU s, wall clock s); the server is its process and
        every descendant (with ``--workers N``: the supervisor and the N workers)."""
        pid = self.server.pid
        return tree_cpu_seconds(pid), tree_main_threads_cpu_seconds(pid), time.perf_counter()

    def _server_figures(self, before: tuple[float, float, float], requests: int) -> dict:
        """Server CPU per request (all threads of all its processes, and the main threads that run
        the asyncio loops and the handlers) and how busy the main threads were during the run
        (summed over processes, in cores: up to N with N workers)."""
        cpu0, main0, t0 = before
        cpu1, main1, t1 = self._snapshot()
        return {"server_cpu_ms_per_request": (cpu1 - cpu0) * 1000.0 / max(requests, 1),
                "server_main_thread_ms_per_request": (main1 - main0) * 1000.0 / max(requests, 1),
                "server_main_thread_busy": (main1 - main0) / (t1 - t0) if t1 > t0 else float("nan"),
                "server_cores_busy": (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else float("nan"),
                "server_rss_bytes": tree_rss_bytes(self.server.pid)}

    def h2load_run(self, rpc: str, *, inflight: int = 1) -> dict:
        """One closed-loop h2load run (paced runs are the Python generator's: see ``run``)."""
        s = self.settings
        before = self._snapshot()
        client0 = _children_cpu_seconds()
        log_file = self.workdir / "h2load.log"
        connections = connections_for(self.workers, inflight)
        run = h2load.run(self.server.port, METHODS[rpc], self.bodies[rpc], self.response_bytes[rpc], log_file,
                         inflight=inflight, duration_s=s.load_seconds, warm_up_s=s.warm_up_seconds,
                         timeout_s=s.load_seconds + s.warm_up_seconds + _RUN_SLACK_S, connections=connections)
        handled = _count_lines(log_file)
        return {**run.as_dict(), **self._server_figures(before, handled), "connections": connections,
                "client_cpu_ms_per_request": (_children_cpu_seconds() - client0) * 1000.0 / max(handled, 1)}

    def python_run(self, rpc: str, *, inflight: int = 1, rate: float | None = None,
                   seconds: float | None = None) -> dict:
        s = self.settings
        seconds = seconds or s.load_seconds
        processes = s.python_load_processes if (rate is not None or inflight >= s.python_load_processes) else 1
        start_at = time.time() + _PYTHON_START_S  # every process connected and warm before the first timed request
        procs, outs, errs = [], [], []
        connections = connections_for(self.workers, inflight if rate is None else 256)
        channel_counts: list[int] = []
        for n in range(processes):
            out = self.workdir / f"grpc-load-{n}.json"
            err = self.workdir / f"grpc-load-{n}.err"
            out.unlink(missing_ok=True)
            # Each process starts its pass over the ids at its own share of the list.
            first = n * self.ids_counts[rpc] // processes
            argv = [sys.executable, "-m", "bench.grpc_load", "--target", self.server.target, "--rpc", rpc,
                    "--ids-file", str(self.ids_files[rpc]), "--first-index", str(first), "--duration", f"{seconds:g}",
                    "--warm-up", f"{s.warm_up_seconds:g}", "--start-at", f"{start_at:.3f}", "--out", str(out)]
            if rate is None:
                share = inflight // processes + (1 if n < inflight % processes else 0)
                argv += ["--mode", "closed", "--inflight", str(share),
                         "--max-requests", str(int(20_000 * (seconds + s.warm_up_seconds)))]
                channels = max(1, min(share, -(-connections // processes)))
            else:
                argv += ["--mode", "open", "--rate", f"{rate / processes:g}"]
                channels = max(1, -(-connections // processes))
            argv += ["--channels", str(channels)]
            channel_counts.append(channels)
            with open(err, "wb") as err_fh:
                procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=err_fh, env=child_env(), cwd=REPO_ROOT))
            outs.append(out)
            errs.append(err)
        self.python_command = " ".join(["python"] + argv[1:])
        deadline = time.monotonic() + _PYTHON_START_S + seconds + s.warm_up_seconds + _RUN_SLACK_S
        time.sleep(max(0.0, start_at - time.time()))
        before = self._snapshot()
        for proc in procs:
            try:
                proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        results = []
        for proc, out, err in zip(procs, outs, errs):
            if proc.returncode != 0 or not out.exists():
                tail = err.read_text(encoding="utf-8", errors="replace")[-2000:] if err.exists() else ""
                raise RuntimeError(f"the Python load generator failed (exit {proc.returncode}):\n{tail}")
            results.append(json.loads(out.read_text(encoding="utf-8")))
        latencies = [us / 1e6 for r in results for us in r["latencies_us"]]
        ok = sum(r["ok"] for r in results)
        errors: dict[str, int] = {}
        details: dict[str, str] = {}
        for r in results:
            for code, n in r["errors"].items():
                errors[code] = errors.get(code, 0) + n
            for code, text in r.get("error_details", {}).items():
                details.setdefault(code, text)
        window = max((r["window_s"] for r in results), default=0.0)
        sent = sum(r["sent"] for r in results)
        server = self._server_figures(before, sent)
        return {
            "processes": processes, "connections": sum(channel_counts), "ids": self.ids_counts[rpc],
            "ok": ok, "errors": errors, "error_details": details,
            "error_count": sum(errors.values()),
            "shed": sum(r["shed"] for r in results), "seconds": window,
            "requests_per_s": ok / window if window > 0 else 0.0,
            **server,
            "client_cpu_ms_per_request": sum(r["cpu_seconds"] for r in results) * 1000.0 / max(sent, 1),
            "command": self.python_command, **latency_summary_ms(latencies),
        }


def connections_for(workers: int, inflight: int) -> int:
    """Connections a generator opens against ``workers`` processes for ``inflight`` requests in
    flight: 1 against one process; else the most, up to 4 per worker, that divides ``inflight``
    (the kernel hashes each connection to a worker: a few per worker keep the spread even)."""
    if workers <= 1:
        return 1
    return max(c for c in range(1, min(inflight, 4 * workers) + 1) if inflight % c == 0)


def _children_cpu_seconds() -> float:
    """User + system CPU of this process's waited-for children so far (h2load runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def _median_row(runs: list[dict], keys: tuple[str, ...]) -> dict:
    """Medians of ``keys`` over ``runs``; error counts are summed (every error counts)."""
    row = {key: median(r.get(key) for r in runs) for key in keys}
    row["errors_total"] = sum(int(r.get("grpc_errors", r.get("error_count", 0)) or 0) for r in runs)
    row["runs"] = len(runs)
    return row


_SERVER_KEYS = ("server_cpu_ms_per_request", "server_main_thread_ms_per_request", "server_main_thread_busy",
                "server_cores_busy", "client_cpu_ms_per_request")
_THROUGHPUT_KEYS = ("requests_per_s", "p50_ms", "p99_ms", *_SERVER_KEYS)
_LATENCY_KEYS = ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", *_SERVER_KEYS)


def _example_commands(closed: list[dict], open_loop: list[dict]) -> dict[str, str]:
    """One command line of each kind of run, as it was run (ports and paths of this run)."""
    examples = {}
    for label, rows in (("closed loop", closed), ("paced", open_loop)):
        for row in rows:
            key = f"{row['generator']} {label}"
            if row.get("workers", 1) > 1:
                key += f", {row['workers']} workers"
            if key not in examples and row["rpc"] == "recommend" and row.get("per_run"):
                examples[key] = row["per_run"][0].get("command", "")
    return examples


def run(settings: BenchSettings, workdir: Path, scale_version: Path | None = None) -> dict:
    """The serving part; returns its section of benchmarks.json. Every row carries ``workers``:
    the number of server processes it ran against. ``scale_version``: the scale part's largest
    version, for the full-scale rows (None: they are skipped with a note)."""
    workdir.mkdir(parents=True, exist_ok=True)
    version_dir = lastfm_version(workdir, settings)
    models_dir = workdir / "serving-models"
    shutil.rmtree(models_dir, ignore_errors=True)
    models_dir.mkdir()
    swapper = VersionSwapper(version_dir, models_dir, settings.swap_interval_s)
    swapper.publish_one()
    manifest = read_manifest(version_dir)
    use_h2load, h2load_note = h2load.ensure_installed(allow_install=not settings.quick)
    use_h2load = use_h2load and h2load.available()
    # Throughput from h2load, whose client costs the shared cores least (the Python generator where
    # it is missing); latency at a pace from the Python generator, which times each request from
    # the moment it was due (h2load from when it sent it, hiding a stalled server's queue).
    closed_generator = "h2load" if use_h2load else "python"
    material = RequestMaterial.for_version(version_dir, workdir / "requests")
    result: dict = {
        "model": {"data_source": manifest.data_source, "users": manifest.num_users, "artists": manifest.num_artists,
                  "factors": manifest.num_factors, "recommend_method": manifest.recommend_search.method,
                  "similar_method": manifest.similar_search.method},
        "generators": {"h2load": use_h2load, "python_processes": settings.python_load_processes},
        "python_ids": dict(material.ids_counts),
        "notes": [h2load_note] if h2load_note else [],
        "workers": list(settings.serving_workers),
        "server_commands": {}, "verification_by_workers": {}, "server_rss_bytes_by_workers": {},
        "server_log_tails": {}, "closed_loop": [], "open_loop": [], "swaps": [],
    }
    rate = settings.open_loop_rates[0]
    for workers in settings.serving_workers:
        rpcs = RPCS if workers == 1 else tuple(r for r in RPCS if r in settings.multi_worker_rpcs)
        server = IndexServer(models_dir, workdir / f"index-service-w{workers}.log", workers=workers).start()
        result["server_commands"][str(workers)] = server.command
        try:
            runs = _ServingRuns(settings, workdir, server, material)
            result["verification_by_workers"][str(workers)] = runs.verify(use_h2load)
            for rpc in rpcs:
                result["closed_loop"] += [_row(runs, closed_generator, rpc, inflight=n)
                                          for n in settings.closed_loop_inflight]
                result["open_loop"] += [_row(runs, "python", rpc, rate=r) for r in settings.open_loop_rates]
            for rpc in rpcs:
                steady = next(r for r in result["open_loop"] if (r["rpc"], r["rate"], r["workers"])
                              == (rpc, rate, workers))
                row = _row(runs, "python", rpc, swapper=swapper, rate=rate, seconds=settings.swap_seconds)
                row.update(steady_p99_ms=steady["p99_ms"], p99_ratio_to_steady=_ratio(row["p99_ms"], steady["p99_ms"]))
                result["swaps"].append(row)
            result["server_rss_bytes_by_workers"][str(workers)] = tree_rss_bytes(server.pid)
        finally:
            server.stop()
            result["server_log_tails"][str(workers)] = server.log_text()[-1500:]
    first = str(settings.serving_workers[0])
    result.update({
        "server_command": result["server_commands"][first], "verification": result["verification_by_workers"][first],
        "swap_interval_s": settings.swap_interval_s,
        "commands": _example_commands(result["closed_loop"], result["open_loop"]),
        "server_rss_bytes": result["server_rss_bytes_by_workers"][first],
        "server_log_tail": result["server_log_tails"][first],
    })
    from bench import plumbing
    try:
        result["plumbing"] = plumbing.measure(settings, workdir, models_dir, material, use_h2load)
    except Exception as exc:  # noqa: BLE001 - the figures above stand without it
        log.exception("serving: plumbing failed")
        result["plumbing"] = {"ran": False, "note": f"failed: {type(exc).__name__}: {exc}"[:600]}
    try:
        result["full_scale"] = full_scale(settings, workdir, scale_version, use_h2load)
    except Exception as exc:  # noqa: BLE001 - the figures above stand without the full-scale rows
        log.exception("serving at full scale failed")
        result["full_scale"] = {"ran": False, "failed": True, "note": f"failed: {type(exc).__name__}: {exc}"[:600],
                                "traceback": traceback.format_exc()}
    return result


def _ratio(a, b) -> float:
    return a / b if b and np.isfinite(a) and np.isfinite(b) else float("nan")


def _row(runs: _ServingRuns, generator: str, rpc: str, *, repeats: int | None = None,
         swapper: VersionSwapper | None = None, **kwargs) -> dict:
    """``repeats`` (default: the settings' runs) runs of one kind, as one row of medians (errors
    summed) with the runs under ``per_run``. ``inflight`` makes it a closed loop, ``rate`` a
    paced one; with ``swapper`` a new version appears every few seconds during each run and the
    row counts the distinct versions swapped in (with N workers each logs every swap)."""
    one = runs.h2load_run if generator == "h2load" else runs.python_run
    done = []
    for _ in range(repeats or runs.settings.runs):
        if swapper is None:
            done.append(one(rpc, **kwargs))
            continue
        before = set(runs.server.versions_served())
        with swapper:
            done.append(one(rpc, **kwargs))
        done[-1]["swaps"] = len(set(runs.server.versions_served()) - before)
    keys = _THROUGHPUT_KEYS if "inflight" in kwargs else _LATENCY_KEYS
    row = {"rpc": rpc, "generator": generator, "server": "index", "workers": runs.workers,
           **{k: v for k, v in kwargs.items() if k in ("inflight", "rate")},
           "connections": done[0].get("connections", 1), **({"ids": done[0]["ids"]} if "ids" in done[0] else {}),
           **_median_row(done, keys), "per_run": done}
    if swapper is not None:
        row["swaps"] = sum(r["swaps"] for r in done)
    log.info("serving %s %s %s, %d worker(s): %.0f req/s, p99 %.2f ms, %d errors", rpc, generator, kwargs,
             runs.workers, row["requests_per_s"], row["p99_ms"], row["errors_total"])
    return row


# -- full scale ------------------------------------------------------------------------------

def _skipped(note: str) -> dict:
    log.info("serving full scale: %s", note)
    return {"ran": False, "note": note}


def full_scale(settings: BenchSettings, workdir: Path, version_dir: Path | None, use_h2load: bool) -> dict:
    """The index service serving the scale part's full-scale version: Recommend at
    ``FULL_SCALE_INFLIGHT`` in flight against one process (h2load; the Python generator when
    h2load is missing); the recall@10 against exact
    that the version's manifest records; and the memory of each process of ``--workers
    full_scale_workers`` (USS, PSS, RSS) after load, warm-up and a closed-loop run, beside one
    process's. In quick mode it serves the scale part's largest version, whatever its size;
    otherwise a version under ``FULL_SCALE_ARTISTS`` artists is skipped, as is no version."""
    if version_dir is None or not version_dir.is_dir():
        return _skipped("the scale part did not run in this run (or left no version), so there is no full-scale "
                        "version to serve: run the whole benchmark, or `--parts scale,serving`")
    manifest = read_manifest(version_dir)
    if manifest.num_artists < FULL_SCALE_ARTISTS and not settings.quick:
        return _skipped(f"the scale part's largest version has {manifest.num_artists:,} artists, not the full "
                        f"{FULL_SCALE_ARTISTS:,}: full-scale rows skipped")
    out: dict = {
        "ran": True, "full_scale": manifest.num_artists >= FULL_SCALE_ARTISTS, "version_dir": str(version_dir),
        "data_source": manifest.data_source, "users": manifest.num_users, "artists": manifest.num_artists,
        "inflight": FULL_SCALE_INFLIGHT, **served_recall(manifest), "server_commands": {}, "notes": [],
    }
    if not out["full_scale"]:
        out["notes"].append(f"quick mode: the scale part's largest version ({manifest.num_artists:,} artists), "
                            "not full scale")
    here = workdir / "serving-full-scale"
    shutil.rmtree(here, ignore_errors=True)
    models_dir = here / "models"
    models_dir.mkdir(parents=True)
    VersionSwapper(version_dir, models_dir, interval_s=0).publish_one()  # hard links: no copy
    material = RequestMaterial.for_version(version_dir, here / "requests")
    generator = "h2load" if use_h2load else "python"
    if not use_h2load:
        out["notes"].append("h2load is not installed: throughput from the Python generator (all users, shuffled)")
    rpcs = ("recommend",)

    server = IndexServer(models_dir, here / "index-service-w1.log").start()
    out["server_commands"]["1"] = server.command
    try:
        runs = _ServingRuns(settings, here, server, material)
        out["verification"] = runs.verify(use_h2load, rpcs)
        out["throughput"] = row = _row(runs, generator, "recommend", inflight=FULL_SCALE_INFLIGHT)
        out["memory_one_process"] = process_memory_bytes(server.pid)
        log.info("serving full scale (%d artists), %s x%d, 1 process: %.0f req/s", manifest.num_artists, generator,
                 FULL_SCALE_INFLIGHT, row["requests_per_s"])
    finally:
        server.stop()
        out["server_log_tail"] = server.log_text()[-1500:]

    workers = settings.full_scale_workers
    server = IndexServer(models_dir, here / f"index-service-w{workers}.log", workers=workers).start()
    out["server_commands"][str(workers)] = server.command
    try:
        runs = _ServingRuns(settings, here, server, material)
        runs.verify(use_h2load, rpcs)
        # One closed-loop run so that every worker has served requests before its memory is read.
        out["throughput_workers"] = _row(runs, generator, "recommend", repeats=1, inflight=FULL_SCALE_INFLIGHT)
        out["memory_workers"] = _worker_memory(server)
    finally:
        server.stop()
        out["server_log_tail_workers"] = server.log_text()[-1500:]
    beyond = [w["uss"] for w in out["memory_workers"]["workers"][1:]]
    out["memory_workers"]["uss_beyond_first_max"] = max(beyond) if beyond else float("nan")
    log.info("serving full scale, %d workers: USS per worker %s MiB", workers,
             ", ".join(f"{w['uss'] / 2**20:.0f}" for w in out["memory_workers"]["workers"]))
    return out


def served_recall(manifest) -> dict:
    """The recall@10 against exact search that the manifest records for what answers the
    benchmark's Recommend (k = ``DEFAULT_K``): the precomputed lists' when the version has lists
    of at least k (format 2), else the search's. Both are kept when present."""
    search = manifest.recommend_search
    out = {"search_method": search.method, "search_recall_at_10": getattr(search, "recall_at_10", float("nan")),
           "recall_sample_size": getattr(search, "recall_sample_size", 0)}
    pre = getattr(manifest, "precomputed", None)
    if pre is not None and getattr(pre, "recommend_n", 0) >= DEFAULT_K:
        out.update(precomputed_n=pre.recommend_n, precomputed_method=pre.recommend_method,
                   precomputed_recall_at_10=pre.recommend_recall_at_10, recall_at_10=pre.recommend_recall_at_10,
                   recommend_method=f"precomputed top {pre.recommend_n} ({pre.recommend_method})")
    else:
        out.update(recall_at_10=out["search_recall_at_10"], recommend_method=search.method)
    return out


def _worker_memory(server: ServerProcess) -> dict:
    """USS, PSS and RSS (bytes) of the supervisor and of each worker, in worker-number order."""
    workers = []
    for number, pid in server.worker_pids().items():
        try:
            workers.append({"worker": number, "pid": pid, **process_memory_bytes(pid)})
        except OSError:
            continue
    if len(workers) != server.workers:
        raise RuntimeError(f"found {len(workers)} of the {server.workers} worker processes to measure")
    supervisor = process_memory_bytes(server.pid) if server.workers > 1 else None
    return {"workers": workers, "supervisor": supervisor,
            "total_pss": sum(w["pss"] for w in workers) + (supervisor["pss"] if supervisor else 0)}
