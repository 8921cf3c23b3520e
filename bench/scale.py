"""Scale: the synthetic generator at Last.fm 360K scale, and at 1/10 and 1/100 of it.

Per size, the trainer's pipeline runs in a child process (``bench.train_child``: generate, split,
train ``scale_epochs`` epochs, evaluate on a sample, publish) and the parent samples its peak RSS
(``run_child``). Then, from the published version:

- its size on disk;
- the index service's load time and resident memory: a real ``python -m index_service`` process
  loads it, and then ``runs - 1`` renumbered copies (each load is validated, checksums checked,
  loaded and warmed up, as in production; the time is the service's own "loaded in" figure);
- Recommend and SimilarArtists in-process (``bench.in_process``): p50/p99 latency and recall@10.

The figure a user waits for is quoted beside the phases: ``request_to_published_seconds``, the
child's wall time from its start to the version published (generation, training, evaluation,
publishing, the interpreter's start included), and the manifest's ``precomputed`` section (how
the lists were made, their recall, their seconds). Last.fm 2K is timed the same way through the
trainer's own command (``lastfm_train``: ``python -m trainer_service train --data hetrec:...``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from bench.in_process import in_process_latency
from bench.measures import directory_bytes, median, process_rss_bytes
from bench.settings import REPO_ROOT, BenchSettings, child_env
from bench.serving import IndexServer, VersionSwapper

log = logging.getLogger(__name__)

PRESET_BY_SIZE = {(300, 200, 6_000): "tiny", (3_600, 1_600, 175_000): "small",
                  (36_000, 16_000, 1_750_000): "medium", (360_000, 160_000, 17_500_000): "full"}
_LOADED_IN = re.compile(r"serving model version (\d+) .*loaded in ([\d.]+) ms")
TRAIN_TIMEOUT_S = 1500.0
RSS_SAMPLE_S = 0.02  # how often a training child's resident memory is read for its peak


def run_child(argv: list[str], output: Path, errors: Path | None = None) -> tuple[int, float, int]:
    """Run ``argv`` (stdout to ``output``, stderr to ``errors`` or there too) until it exits or
    ``TRAIN_TIMEOUT_S`` (then killed): (exit code, wall seconds from start to exit, its peak
    resident memory in bytes).

    The peak is the child's own RSS sampled every ``RSS_SAMPLE_S``, not ``os.wait4``'s
    ``ru_maxrss``: Linux carries the high-water mark of the memory a child started with (the
    forking parent's, this benchmark process) across ``exec``, so ``ru_maxrss`` reports the
    parent's resident memory whenever that is larger than the child's own peak."""
    started = time.perf_counter()
    with open(output, "wb") as fh, open(errors or os.devnull, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=err if errors else subprocess.STDOUT,
                                env=child_env(), cwd=REPO_ROOT)
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    peak = 0
    while True:
        try:
            peak = max(peak, process_rss_bytes(proc.pid))
        except OSError:
            pass  # exiting: reaped just below
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, _ = os.wait4(proc.pid, 0)
            break
        time.sleep(RSS_SAMPLE_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - started, peak


def train_in_child(source: str, models_dir: Path, epochs: int, out: Path, log_path: Path) -> dict:
    """Run the pipeline in a child; its JSON result plus ``peak_rss_bytes`` and ``wall_seconds``."""
    argv = [sys.executable, "-m", "bench.train_child", "--source", source, "--models-dir", str(models_dir),
            "--epochs", str(epochs), "--out", str(out)]
    returncode, wall, peak_rss = run_child(argv, log_path)
    if returncode != 0 or not out.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"training {source} failed (exit {returncode}):\n{tail}")
    result = json.loads(out.read_text(encoding="utf-8"))
    result["peak_rss_bytes"] = peak_rss
    result["wall_seconds"] = wall
    result["command"] = " ".join(["python"] + argv[1:])
    return result


def phase_seconds(events: list[dict], total: float) -> dict[str, float]:
    """Seconds spent in each pipeline phase: from its first event to the next phase's first."""
    firsts: list[tuple[str, float]] = []
    for event in events:
        phase = str(event.get("phase", ""))
        if phase and (not firsts or firsts[-1][0] != phase):
            firsts.append((phase, float(event["t"])))
    spans: dict[str, float] = {}
    for n, (phase, t) in enumerate(firsts):
        end = firsts[n + 1][1] if n + 1 < len(firsts) else total
        spans[phase] = spans.get(phase, 0.0) + (end - t)
    return spans


def epoch_rates(events: list[dict]) -> list[float]:
    """Samples/s of each completed epoch, from the training progress events."""
    rates, seen = [], set()
    for event in events:
        epoch = int(event.get("epoch", 0) or 0)
        rate = float(event.get("samples_per_second", 0.0) or 0.0)
        if epoch and rate and epoch not in seen:
            seen.add(epoch)
            rates.append(rate)
    return rates


def service_loads(version_dir: Path, workdir: Path, loads: int) -> dict:
    """Load ``version_dir`` in a real index service, then ``loads - 1`` renumbered copies; the
    service's own load times (ms) and its resident memory after the first and the last load."""
    models_dir = workdir / "service-models"
    shutil.rmtree(models_dir, ignore_errors=True)
    models_dir.mkdir(parents=True)
    swapper = VersionSwapper(version_dir, models_dir, interval_s=0)
    swapper.publish_one()
    server = IndexServer(models_dir, workdir / "index-service.log", poll_interval_s=0.2).start()
    try:
        rss_first = process_rss_bytes(server.pid)
        for n in range(1, loads):
            swapper.publish_one()
            deadline = time.monotonic() + 300
            while len(server.versions_served()) < n + 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        time.sleep(0.5)  # the retired version is unloaded once its last request ends
        rss_last = process_rss_bytes(server.pid)
        times = [float(ms) for _v, ms in _LOADED_IN.findall(server.log_text())]
    finally:
        server.stop()
        shutil.rmtree(models_dir, ignore_errors=True)
    return {"load_ms": times, "load_ms_median": median(times), "rss_bytes_first": rss_first,
            "rss_bytes_after_reloads": rss_last, "server_command": " ".join(["python"] + server.argv[1:])}


def load_breakdown(version_dir: Path) -> dict:
    """Where a version's load time goes, in this process (seconds): checksum validation of every
    file (BLAKE3 in format 2; the key keeps its old name), reading (memory-mapping) the arrays,
    checking the Annoy files and mapping them, building the ``ServingModel``, and its warm-up. The
    service does the same steps (it runs the Annoy structure checks while it hashes), and builds the
    id hash indexes once it serves the version (timed here apart)."""
    from index_service.serving_model import ServingModel
    from model_store import load_version, validate_version

    timings = {}
    with threadpool_limits(limits=1, user_api="blas"):
        started = time.perf_counter()
        validate_version(version_dir, verify_checksums=True)
        timings["validate_sha256_s"] = time.perf_counter() - started
        started = time.perf_counter()
        loaded = load_version(version_dir, verify_checksums=False)
        timings["read_arrays_s"] = time.perf_counter() - started
        started = time.perf_counter()
        model = ServingModel(loaded)
        timings["serving_model_s"] = time.perf_counter() - started
        started = time.perf_counter()
        model.warm_up()
        timings["warm_up_s"] = time.perf_counter() - started
        started = time.perf_counter()
        model.build_hash_indexes()  # the service does this after the swap: not in its load time
        timings["hash_indexes_s"] = time.perf_counter() - started
        model.close()
    return timings


def measure_size(label: str, users: int, artists: int, interactions: int, settings: BenchSettings,
                 workdir: Path) -> dict:
    preset = PRESET_BY_SIZE.get((users, artists, interactions))
    if preset is None:
        raise ValueError(f"no synthetic preset for {users} users x {artists} artists x {interactions} interactions")
    size_dir = workdir / f"scale-{preset}"
    shutil.rmtree(size_dir, ignore_errors=True)
    size_dir.mkdir(parents=True)
    source = f"synthetic:{preset}:seed=0"
    log.info("scale %s (%s): training %d epochs in a child process", label, source, settings.scale_epochs)
    trained = train_in_child(source, size_dir / "models", settings.scale_epochs, size_dir / "train.json",
                             size_dir / "train.log")
    version_dir = Path(trained["version_dir"])
    # The pipeline reports its own phase times and epoch history; the events are the fallback.
    phases = trained["result"].get("seconds") or phase_seconds(trained["events"], trained["total_seconds"])
    history = trained["result"].get("history") or []
    rates = [float(h["samples_per_second"]) for h in history] or epoch_rates(trained["events"])
    log.info("scale %s: load in the index service", label)
    service = service_loads(version_dir, size_dir, max(1, settings.runs))
    service["breakdown"] = load_breakdown(version_dir)
    log.info("scale %s: in-process latency and recall", label)
    latency = in_process_latency(version_dir, settings.scale_latency_queries, settings.runs)
    manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
    return {
        "request_to_published_seconds": trained["wall_seconds"], "precomputed": manifest.get("precomputed") or {},
        "label": label, "preset": preset, "source": source, "users": trained["num_users"],
        "artists": trained["num_artists"], "interactions": trained["num_interactions"],
        "epochs": settings.scale_epochs, "phase_seconds": phases,
        "negative_candidates": trained["hyperparameters"].get("negative_candidates"),
        "generation_seconds": phases.get("loading"), "publish_seconds": phases.get("publishing"),
        "epoch_samples_per_second": rates, "samples_per_second": median(rates),
        "train_wall_seconds": trained["wall_seconds"], "peak_rss_bytes": trained["peak_rss_bytes"],
        "metrics": trained["metrics"], "recommend_search": trained["recommend_search"],
        "similar_search": trained["similar_search"], "version_bytes": directory_bytes(version_dir),
        "version_dir": str(version_dir), "service": service, "in_process": latency,
        "train_command": trained["command"],
    }


def plain_bpr_speed(preset: str, settings: BenchSettings, workdir: Path) -> dict:
    """Epoch throughput of plain BPR (one uniform negative per triple, no hard-negative candidates)
    on the same synthetic data, trainer alone (``bench.train_child --trainer-only``): the step's
    speed without the default's extra candidate rows, at 64 factors (the target's width, kept when
    the default became 96 so the figure stays comparable). The first epoch (start-up, compilation)
    is left out."""
    out = workdir / f"scale-{preset}" / "plain-bpr.json"
    epochs = max(2, settings.scale_epochs)
    argv = [sys.executable, "-m", "bench.train_child", "--source", f"synthetic:{preset}",
            "--trainer-only", "negative_candidates=1,factors=64", "--epochs", str(epochs), "--out", str(out)]
    log.info("scale %s: plain BPR epoch throughput (%s)", preset, " ".join(argv[1:]))
    subprocess.run(argv, check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    rates = json.loads(out.read_text(encoding="utf-8"))["epoch_samples_per_second"][1:]
    return {"epoch_samples_per_second": rates, "samples_per_second": median(rates), "epochs": epochs,
            "command": "python " + " ".join(argv[1:]).replace(str(workdir), "WORKDIR")}


def lastfm_train(settings: BenchSettings, workdir: Path) -> dict | None:
    """``python -m trainer_service train --data hetrec:DATA/lastfm-2k --json`` (the defaults; quick
    mode: ``settings.scale_epochs`` epochs, gate off), ``settings.runs`` times, each into an empty
    models directory (a first training: cold, as a user's first ``train`` is; into one directory
    the later runs would warm-start from the earlier ones, the warm part's measurement):
    per run the command's wall time (start to published version, as a user waits for it), its
    phases as the pipeline reports them, the lists' seconds, and its peak RSS (sampled, ``run_child``).
    None when the data set is absent."""
    data = settings.data_dir / "lastfm-2k"
    if not data.exists():
        return None
    models_dir = workdir / "lastfm-train-models"
    shutil.rmtree(models_dir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "trainer_service", "train", "--data", f"hetrec:{data}", "--models-dir",
            str(models_dir), "--json", "--quiet"]
    if settings.quick:  # a few epochs do not pass the quality gate: published anyway, to time it
        argv += ["--epochs", str(settings.scale_epochs), "--gate", "off"]
    runs = []
    output, errors = workdir / "lastfm-train.json", workdir / "lastfm-train.log"
    for _ in range(max(1, settings.runs)):
        shutil.rmtree(models_dir, ignore_errors=True)
        returncode, wall, peak_rss = run_child(argv, output, errors)
        if returncode != 0:
            tail = errors.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv[1:])} failed (exit {returncode}): {tail}")
        result = json.loads(output.read_text(encoding="utf-8"))
        manifest = json.loads((models_dir / str(result["version"]) / "manifest.json").read_text(encoding="utf-8"))
        runs.append({"wall_seconds": wall, "phase_seconds": result.get("seconds", {}),
                     "precomputed": manifest.get("precomputed") or {}, "peak_rss_bytes": peak_rss})
    shutil.rmtree(models_dir, ignore_errors=True)
    publishing = [float(r["phase_seconds"].get("publishing", math.nan)) for r in runs]
    training = [float(r["phase_seconds"].get("training", math.nan)) for r in runs]
    return {"runs": runs, "wall_seconds": median([r["wall_seconds"] for r in runs]),
            "publish_seconds": median(publishing), "fit_seconds": median(training),
            "precompute_seconds": median([float(r["precomputed"].get("seconds", math.nan)) for r in runs]),
            "command": " ".join(["python"] + argv[1:]).replace(str(settings.data_dir), "DATA")
            .replace(str(models_dir), "MODELS")}


def run(settings: BenchSettings, workdir: Path) -> dict:
    """The scale part: the Last.fm 2K training command, timed from start to published version;
    then the sizes, smallest first; the largest version is kept for the ANN part."""
    from trainer_service.hyperparameters import Hyperparameters

    # The Last.fm 2K command first, on a machine no full-scale run has just used: measured right
    # after them, one run's three took 10.2, 9.1 and 7.9 s in turn (the training phase 7.5, 6.9
    # and 5.9 s), and a 2.3 GiB training just ended is no user's situation.
    log.info("scale: the Last.fm 2K training command, %d runs", max(1, settings.runs))
    lastfm = lastfm_train(settings, workdir)
    rows = [measure_size(label, u, a, n, settings, workdir) for label, u, a, n in settings.scale_sizes]
    if rows:
        rows[-1]["plain_bpr"] = plain_bpr_speed(rows[-1]["preset"], settings, workdir)
    return {"sizes": rows, "largest_version_dir": rows[-1]["version_dir"] if rows else None,
            "epochs": settings.scale_epochs, "default_epochs": Hyperparameters().epochs,
            "lastfm_train": lastfm}
