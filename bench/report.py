"""benchmarks.json and benchmarks.md from the parts' results: tables, targets, machine, commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

GIB = 1024 ** 3
MIB = 1024 ** 2
PLOT_NAME = "ann_recall_latency.png"


# -- numbers ---------------------------------------------------------------------------------

def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x, digits: int = 2) -> str:
    if not _finite(x):
        return "n/a"
    return f"{x:,.{digits}f}"


def ratio(a, b, digits: int = 2) -> str:
    return f"{a / b:.{digits}f}x" if _finite(a) and _finite(b) and b else "n/a"


def mib(x) -> str:
    if not _finite(x):
        return "n/a"
    return f"{x / MIB:,.1f} MiB" if x < 100 * MIB else f"{x / MIB:,.0f} MiB"


def gib(x) -> str:
    return f"{x / GIB:.2f} GiB" if _finite(x) else "n/a"


def clean(obj):
    """JSON-safe: NaN and infinity become null (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# -- targets ---------------------------------------------------------------------------------

def targets(results: dict) -> list[dict]:
    """Every target of the issues with the measured figure, met or not (None: not measured, the
    measured text says why), and what limits it."""
    parts = results.get("parts", {})
    quick = results.get("quick", False)
    out: list[dict] = []
    for dataset in (parts.get("quality") or {}).get("datasets", []):
        for t in dataset.get("targets", []):
            out.append({"part": "quality", "target": t["target"],
                        "measured": t.get("measured") or f"ours {num(t['ours'], 4)} vs {num(t['peer'], 4)}",
                        "met": t["met"],
                        "limit": "" if t["met"] else "HR@10 of the default hyperparameters; see the quality table"})
    sizes = (parts.get("scale") or {}).get("sizes", [])
    if sizes:
        big = sizes[-1]
        where = f"{big['label']} ({big['artists']:,} artists)" + (" - quick mode, not full scale" if quick else "")
        rate = (big.get("plain_bpr") or {}).get("samples_per_second")
        default_rate = big.get("samples_per_second")
        out.append({"part": "scale", "target": f"training >= 2.5M samples/s at {where}, 64 factors, plain BPR "
                                                f"triples (one uniform negative each)",
                    "measured": f"{num(rate / 1e6 if _finite(rate) else rate)}M samples/s (median epoch, trainer "
                                f"alone); the default's {big.get('negative_candidates', '?')} negative candidates "
                                f"per triple: {num(default_rate / 1e6 if _finite(default_rate) else default_rate)}M "
                                f"(whole pipeline)",
                    "met": _finite(rate) and rate >= 2.5e6,
                    "limit": "" if _finite(rate) and rate >= 2.5e6 else
                    "each triple reads three random rows of tables of 92 MB and 41 MB (memory latency; "
                    "docs/training.md has the per-part profile: `python -m bench.train_speed`); "
                    f"{_cores_text(_cores(results))} for the XLA training loop and the background sampler, "
                    "shared with other work "
                    f"(load average {results.get('load_average', {}).get('scale', '?')} when the part started)"})
        rss = big.get("peak_rss_bytes")
        out.append({"part": "scale", "target": f"peak trainer RSS <= 3 GiB at {where}", "measured": gib(rss),
                    "met": _finite(rss) and rss <= 3 * GIB, "limit": ""})
        load = (big.get("service") or {}).get("load_ms_median")
        out.append({"part": "scale", "target": f"version load <= 0.5 s at {where}, every checksum verified",
                    "measured": f"{num(load, 0)} ms (index service, median)",
                    "met": _finite(load) and load <= 500,
                    "limit": "" if _finite(load) and load <= 500 else
                    "validation hashes every file (BLAKE3, in parallel threads, while the Annoy structure "
                    "checks read both indexes), then arrays are memory-mapped and checked; on "
                    f"{_cores_text(_cores(results))} the hashing and the structure checks alone take most of it"})
        rec = (big.get("in_process") or {}).get("recommend", {})
        ok = _finite(rec.get("p50_ms")) and rec["p50_ms"] < 1.0 and _finite(rec.get("recall_at_10")) \
            and rec["recall_at_10"] >= 0.95
        out.append({"part": "scale", "target": f"Recommend p50 in-process < 1 ms with recall@10 >= 0.95 at {where}",
                    "measured": f"p50 {num(rec.get('p50_ms'), 3)} ms, recall@10 {num(rec.get('recall_at_10'), 3)} "
                                f"({rec.get('method', '?')})", "met": ok, "limit": ""})
    if parts.get("serving"):
        out += _serving_targets(parts["serving"], _cores(results), quick)
    if parts.get("history"):
        out += _history_targets(parts["history"], quick)
    return out


# Issue 10's serving targets. Throughput at 16 in flight (h2load) by server processes; the Python
# generator's (a different user on every request) as a ratio to the floor, the same for both RPCs.
FLOOR_RATIO_TARGET = 0.8
H2LOAD_TARGETS_PER_S = {1: 6_000, 2: 8_000}
TARGET_INFLIGHT = 16
P99_TARGET_MS = 3.0
P99_TARGET_RATE = 2_000
SWAP_RATIO_TARGET = 1.5
FULL_SCALE_TARGET_PER_S = 4_000
FULL_SCALE_RECALL = 0.98
WORKER_USS_TARGET_BYTES = 150 * MIB
_RPC_NAMES = {"recommend": "Recommend", "similar": "SimilarArtists"}


def _cores(results: dict) -> int | None:
    """The recorded machine's core count (None when the results do not say)."""
    cores = (results.get("machine") or {}).get("cpu_cores")
    return cores if isinstance(cores, int) and cores > 0 else None


def _cores_text(cores: int | None) -> str:
    return f"{cores} core" + ("" if cores == 1 else "s") if cores else "the machine's cores"


def _vs_floor(row: dict) -> str:
    return (f"{num(row['requests_per_s'], 0)}/s; floor {num(row.get('floor_requests_per_s'), 0)}/s "
            f"({num(row.get('ratio_to_floor'))}x)")


def _serving_targets(serving: dict, cores: int | None, quick: bool) -> list[dict]:
    """The serving targets of issue 10, each with the measured figure beside the floor's."""
    out: list[dict] = []
    closed = serving.get("closed_loop", [])
    open_loop = serving.get("open_loop", [])
    modes = serving.get("workers") or [1]
    ids = serving.get("python_ids") or {}

    def closed_row(rpc: str, generator: str, workers: int) -> dict | None:
        return next((r for r in closed if r["rpc"] == rpc and r["generator"] == generator
                     and r["inflight"] == TARGET_INFLIGHT and r.get("workers", 1) == workers), None)

    for rpc in ("recommend", "similar"):
        what = "user" if rpc == "recommend" else "artist"
        for workers in modes:
            row = closed_row(rpc, "python", workers)
            if row is None:
                continue
            met = _finite(row.get("ratio_to_floor")) and row["ratio_to_floor"] >= FLOOR_RATIO_TARGET
            count = row.get("ids") or ids.get(rpc)
            over = f"over all {count:,} {what}s" if isinstance(count, int) else f"over all {what}s"
            out.append({"part": "serving",
                        "target": f"{_RPC_NAMES[rpc]}/s >= {FLOOR_RATIO_TARGET}x the floor (Python generator, a "
                                  f"different {what} on every request {over}, {TARGET_INFLIGHT} in flight, "
                                  f"{_server_mode(row)})",
                        "measured": _vs_floor(row), "met": met,
                        "limit": "" if met else _throughput_limit(row, cores)})
    for workers in modes:
        target = H2LOAD_TARGETS_PER_S.get(workers)
        row = closed_row("recommend", "h2load", workers)
        if target is None or row is None:
            continue
        met = _finite(row["requests_per_s"]) and row["requests_per_s"] >= target
        out.append({"part": "serving",
                    "target": f">= {target:,} Recommend/s at {TARGET_INFLIGHT} in flight ({_mode(row)})",
                    "measured": _vs_floor(row), "met": met,
                    "limit": "" if met else _throughput_limit(row, cores, target)})
    for row in open_loop:
        if not (row["rpc"] == "recommend" and row["rate"] == P99_TARGET_RATE and row.get("workers", 1) == 1):
            continue
        met = _finite(row["p99_ms"]) and row["p99_ms"] <= P99_TARGET_MS
        out.append({"part": "serving",
                    "target": f"Recommend p99 <= {P99_TARGET_MS:g} ms at a steady {P99_TARGET_RATE:,}/s ({_mode(row)})",
                    "measured": f"p99 {num(row['p99_ms'])} ms (p50 {num(row['p50_ms'])} ms); floor p99 "
                                f"{num(row.get('floor_p99_ms'))} ms",
                    "met": met, "limit": "" if met else _latency_limit(row, cores)})
    for row in serving.get("swaps", []):
        met = _finite(row.get("p99_ratio_to_steady")) and row["p99_ratio_to_steady"] <= SWAP_RATIO_TARGET
        out.append({"part": "serving",
                    "target": f"{_RPC_NAMES.get(row['rpc'], row['rpc'])} p99 during swaps <= {SWAP_RATIO_TARGET:g}x "
                              f"steady at {row['rate']:,}/s ({_mode(row)})",
                    "measured": f"p99 {num(row['p99_ms'])} ms vs steady {num(row['steady_p99_ms'])} ms "
                                f"({num(row.get('p99_ratio_to_steady'))}x; floor p99 {num(row.get('floor_p99_ms'))} "
                                f"ms), {row['swaps']} swaps",
                    "met": met, "limit": "" if met else _swap_limit(row, cores)})
    for row in serving.get("swaps", []):
        out.append({"part": "serving", "target": f"0 errors during swaps ({row['rpc']}, {_mode(row)})",
                    "measured": f"{row['errors_total']} errors in {row['runs']} runs", "met": row["errors_total"] == 0,
                    "limit": ""})
    overhead = serving.get("metrics_overhead") or {}
    if overhead.get("ran"):
        met = _finite(overhead.get("ratio")) and overhead["ratio"] >= METRICS_RATIO_TARGET
        out.append({"part": "serving",
                    "target": f"Recording Prometheus metrics costs <= {1 - METRICS_RATIO_TARGET:.0%} of Recommend "
                              f"throughput (one process, {overhead['generator']} x{overhead['inflight']})",
                    "measured": f"{num(overhead['on_requests_per_s'], 0)}/s on vs {num(overhead['off_requests_per_s'], 0)}"
                                f"/s off ({num(overhead['ratio'], 3)}x)",
                    "met": met, "limit": "" if met else "alternating runs on a shared machine: see the per-run figures"})
    out += _full_scale_targets(serving.get("full_scale"), cores, quick)
    return out


METRICS_RATIO_TARGET = 0.95


def _metrics_overhead(overhead: dict | None, cmd: str) -> list[str]:
    """Metrics on vs off: the cost of recording Prometheus metrics on the serving path."""
    if not overhead:
        return []
    lines = ["### Prometheus metrics on and off", ""]
    if not overhead.get("ran"):
        return lines + [f"Not measured in this run: {overhead.get('note', '')}.", ""]
    lines += [f"Reproduce: `{cmd} --parts serving` (or `python -m bench.serving` for this comparison alone). Two "
              "index processes serve the same version, one with `--metrics-port 0`; closed-loop Recommend runs "
              f"({overhead['generator']}, {overhead['inflight']} in flight, {overhead['seconds_per_run']:g} s each) "
              f"alternate between them, {overhead['pairs']} pairs, the order flipping every pair; medians.", ""]
    runs = overhead.get("per_run", {})
    lines += _table(["metrics", "requests/s (median)", "server CPU ms/request (median)", "requests/s per run"],
                    [[mode, num(overhead[f"{mode}_requests_per_s"], 0),
                      num(overhead[f"{mode}_server_cpu_ms_per_request"], 3),
                      ", ".join(num(r["requests_per_s"], 0) for r in runs.get(mode, []))] for mode in ("off", "on")])
    lines += ["", f"On / off: {num(overhead['ratio'], 3)}x. The metrics endpoint counted "
              f"{num(overhead.get('recorded_recommend_calls'), 0)} Recommend calls answered OK over the runs "
              "(warm-ups and verification included; the server adds calls to its metrics once a second, so the "
              "last second's may be missing).", ""]
    cost = overhead.get("recording_cost_us") or {}
    if cost:
        lines += ["The recording itself, without gRPC or the machine's noise (`bench.serving.recording_cost_us`: the "
                  "handler wrapper around a handler that returns at once, fastest of 5 passes of 100,000 calls): "
                  + "; ".join(f"{mode.replace('_', ' ')} {num(c['off_us'], 2)} -> {num(c['on_us'], 2)} us per call "
                              f"(+{num(c['added_us'], 2)} us)" for mode, c in cost.items())
                  + ", against the server CPU per request in the table above.", ""]
    return lines


def _full_scale_targets(full: dict | None, cores: int | None, quick: bool) -> list[dict]:
    """Recommend throughput with its recall, and workers' unique memory, at full scale; met None
    (not measured) with the reason when the full-scale version was not there."""
    throughput_target = (f">= {FULL_SCALE_TARGET_PER_S:,} Recommend/s at {TARGET_INFLIGHT} in flight, full scale, "
                         f"recall@10 >= {FULL_SCALE_RECALL} against exact (h2load, 1 process)")
    memory_target = (f"each worker beyond the first adds <= {mib(WORKER_USS_TARGET_BYTES)} of unique memory (USS), "
                     "full scale")
    if full is None:  # results of a run before this row existed
        return []
    if not full.get("ran"):
        failed = bool(full.get("failed"))
        measured = f"{'' if failed else 'not measured: '}{full.get('note', '')}"
        return [{"part": "serving", "target": t, "measured": measured, "met": False if failed else None,
                 "limit": "see the serving log (benchmarks.json: full_scale.traceback)" if failed else ""}
                for t in (throughput_target, memory_target)]
    where = "" if full.get("full_scale") else f" - quick mode, {full['artists']:,} artists, not full scale"
    out = []
    row = full.get("throughput") or {}
    if row:
        recall = full.get("recall_at_10")
        met = (_finite(row.get("requests_per_s")) and row["requests_per_s"] >= FULL_SCALE_TARGET_PER_S
               and _finite(recall) and recall >= FULL_SCALE_RECALL)
        out.append({"part": "serving", "target": throughput_target.replace("(h2load, 1 process)", f"({_mode(row)})")
                    + where,
                    "measured": f"{_vs_floor(row)}; recall@10 {num(recall, 3)} ({full.get('recommend_method')}; "
                                "the manifest's figure)",
                    "met": met, "limit": "" if met else _throughput_limit(row, cores, FULL_SCALE_TARGET_PER_S)})
    memory = full.get("memory_workers") or {}
    workers = memory.get("workers") or []
    if workers:
        beyond = memory.get("uss_beyond_first_max")
        met = _finite(beyond) and beyond <= WORKER_USS_TARGET_BYTES
        one = full.get("memory_one_process") or {}
        measured = ("USS " + ", ".join(f"worker {w['worker']} {mib(w['uss'])}" for w in workers)
                    + f" (RSS {', '.join(mib(w['rss']) for w in workers)}); one process alone: USS "
                      f"{mib(one.get('uss'))}, RSS {mib(one.get('rss'))}")
        out.append({"part": "serving", "target": memory_target.replace("full scale", f"--workers {len(workers)}, full "
                                                                                     "scale") + where,
                    "measured": measured, "met": met,
                    "limit": "" if met else _memory_limit(beyond, one.get("uss"))})
    return out


def _memory_limit(worker_uss, one_process_uss) -> str:
    """Why a worker adds more unique memory than the target, from its USS against one process's."""
    if _finite(worker_uss) and _finite(one_process_uss) and one_process_uss and worker_uss > 0.5 * one_process_uss:
        return (f"a worker's unique memory ({mib(worker_uss)}) is most of one process's ({mib(one_process_uss)}): "
                "each worker holds its own copy of the version's arrays (private pages), not one copy shared "
                "through the page cache or shared memory")
    return (f"a worker's unique memory is {mib(worker_uss)} (one process alone: {mib(one_process_uss)}): the Python "
            "runtime, gRPC and whatever part of the version each worker builds for itself")


def _mode(row: dict) -> str:
    """"h2load, 1 process" / "python, 2 workers": the generator and the server mode of a row."""
    return f"{row['generator']}, {_server_mode(row)}"


def _throughput_limit(row: dict, cores: int | None, target_per_s: float | None = None) -> str:
    """Why a closed-loop run could not go faster, from the server's CPU figures beside the floor's
    and the machine's ``cores``."""
    cpu, main = row.get("server_cpu_ms_per_request"), row.get("server_main_thread_ms_per_request")
    busy, cores_busy = row.get("server_main_thread_busy"), row.get("server_cores_busy")
    workers = row.get("workers", 1)
    if not (_finite(cpu) and _finite(main)) or cpu <= 0 or main <= 0:
        return "see the serving section"
    floor_cpu = row.get("floor_server_cpu_ms_per_request")
    texts = []
    if _finite(floor_cpu):
        texts.append(f"the server uses {num(cpu, 3)} ms of CPU per request where the floor (the same server with "
                     f"an empty handler) uses {num(floor_cpu, 3)} ms: the handler's own work (the model's search, "
                     f"the response) adds {num(cpu - floor_cpu, 3)} ms per request")
    else:
        texts.append(f"the server uses {num(cpu, 3)} ms of CPU per request")
    ceiling = f"{_cores_text(cores)} cannot pass ~{cores * 1000 / cpu:,.0f}/s even with nothing else running" \
        if cores else ""
    if workers > 1:
        texts.append(f"{workers} worker processes keep {num(cores_busy)} cores busy (main threads {num(main, 3)} ms "
                     f"per request, {num(busy)} cores)")
        if target_per_s:
            texts.append(f"{num(cpu, 3)} ms x {target_per_s:,}/s = {cpu * target_per_s / 1000:.1f} cores, and the "
                         f"machine has {cores or '?'}, shared with the load generator")
    else:
        texts.append(f"{num(main, 3)} ms of it in the main thread, which runs the asyncio loop and every handler "
                     f"under the GIL (busy {num(100 * busy if _finite(busy) else busy, 0)}% of a core): one process "
                     f"cannot pass ~{1000 / main:,.0f}/s")
    if ceiling:
        texts.append(ceiling)
    floor_rate = row.get("floor_requests_per_s")
    if target_per_s and _finite(floor_rate) and floor_rate < target_per_s:
        texts.append(f"the floor itself answers only {floor_rate:,.0f}/s in this run: no handler on this runtime "
                     "and machine can pass it")
    client = row.get("client_cpu_ms_per_request")
    if _finite(client) and client > 0:
        texts.append(f"the load generator adds {num(client, 3)} ms per request on the same {_cores_text(cores)}"
                     + (f", so together they cannot pass ~{cores * 1000 / (cpu + client):,.0f}/s" if cores else ""))
    return "; ".join(texts)


def _swap_limit(row: dict, cores: int | None) -> str:
    """Why requests slow down during swaps."""
    text = ("each swap validates (checksums), loads and indexes a version in a worker thread of the same process: "
            "it holds the GIL in stretches and delays requests")
    workers = row.get("workers", 1)
    if workers > 1:
        text += (f"; with {workers} workers every worker does so at the same moment, {workers} loads at once on the "
                 f"{_cores_text(cores)} shared with the load generator")
    return text


def _latency_limit(row: dict, cores: int | None) -> str:
    """Why a paced run's p99 is over the target: the CPU it needs against the machine's cores."""
    cpu, client = row.get("server_cpu_ms_per_request"), row.get("client_cpu_ms_per_request")
    rate = row.get("rate", 0)
    if not _finite(cpu):
        return "queueing: the run needs more CPU than the machine has to spare"
    need = cpu * rate / 1000.0
    total = need + (client * rate / 1000.0 if _finite(client) else 0.0)
    where = ("one process's main thread (one core under the GIL)" if row.get("workers", 1) == 1
             else f"the {row['workers']} workers")
    floor = (f"; the floor's p99 at this rate is {num(row['floor_p99_ms'])} ms"
             if _finite(row.get("floor_p99_ms")) else "")
    return (f"{num(cpu, 3)} ms of server CPU per request x {rate:,}/s = {need:.2f} cores for {where}, plus the load "
            f"generator's {num(client, 3)} ms per request: {total:.2f} of the machine's {_cores_text(cores)}; near "
            f"or past saturation requests queue and queueing dominates the tail{floor}")


# -- markdown --------------------------------------------------------------------------------

def _machine(results: dict) -> list[str]:
    m = results.get("machine", {})
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items() if v)
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})" for b in m.get("blas", []))
    lines = [
        "## Machine",
        "",
        f"- CPU: {m.get('cpu_model')}, {m.get('cpu_cores')} cores; memory {m.get('memory_gib')} GiB; "
        f"Linux {m.get('kernel')}",
        f"- Python {m.get('python')}; {libs}",
        f"- BLAS: {blas or 'n/a'}; h2load: {m.get('h2load') or 'not installed'}",
        f"- Load average (1, 5, 15 min) at start: {m.get('load_average_at_start')}; per part: "
        + ", ".join(f"{p} {v}" for p, v in results.get("load_average", {}).items()),
        "- The machine is shared with other engineers' work: figures move by tens of percent between runs.",
    ]
    if m.get("openblas_env"):
        lines.append(f"- OpenBLAS environment: {m['openblas_env']}")
    return lines


def _quality(part: dict, cmd: str) -> list[str]:
    lines = ["## 1. Quality and training time (leave-one-out)", "",
             f"Reproduce: `{cmd} --parts quality`. Protocol: `trainer_service/evaluation.py` (one held-out "
             "artist per user with >= 5 interactions; every artist not heard in training is ranked; HR@10, "
             "NDCG@10, AUC). One split (seed 0) for every method; training seeds 0..n-1; medians of the runs. "
             "All interactions are used (MovieLens: every rating is an interaction). implicit is fed the "
             "training split only and ranked by our evaluator from its factors.", ""]
    for ds in part.get("datasets", []):
        by = {r["method"]: r for r in ds["rows"]}
        ours = by.get("ours (default)", {})
        lines += [f"### {ds['dataset']}: {ds['users']:,} users, {ds['artists']:,} artists, "
                  f"{ds['interactions']:,} interactions ({ds['evaluated_users']:,} evaluated users)", ""]
        rows = []
        for r in ds["rows"]:
            rate, als_rate = r.get("samples_per_second"), r.get("interactions_per_second")
            rate_text = f"{num(rate / 1e6)}M" if _finite(rate) else (
                f"({num(als_rate / 1e6)}M interactions/s)" if _finite(als_rate) else "n/a")
            rows.append([r["method"], num(r["hit_rate_at_10"], 4), num(r["ndcg_at_10"], 4), num(r["auc"], 4),
                         num(r["train_seconds"], 1), rate_text,
                         ratio(ours.get("hit_rate_at_10"), r["hit_rate_at_10"]),
                         ratio(r["train_seconds"], ours.get("train_seconds")) if r["method"] != "popularity" else "",
                         _time_to_quality(r), r.get("runs", 1), r.get("description", "")])
        lines += _table(["method", "HR@10", "NDCG@10", "AUC", "train s", "samples/s", "ours' HR@10 / this",
                         "this train time / ours'", "s to HR@10 >= 0.19", "runs", "settings"], rows)
        lines += [""] + [f"- {n}" for n in ds.get("notes", [])]
        lines.append("")
    lines += [f"- {n}" for n in part.get("notes", [])]
    lines += ["Training time is wall time of the whole fit (for ours: sampler start, XLA compilation and all "
              "epochs); samples/s for ours is the median epoch's, for implicit BPR iterations x interactions / "
              "fit time. ALS samples no triples (its rate is interactions x iterations per second).",
              "Time to HR@10 >= 0.19: training seconds (as \"train s\", compilation included) until the first "
              "evaluation at or above 0.19; each run is evaluated on the same held-out users about 20 times along "
              "the way (every epoch or iteration for short runs) and at its end, the evaluations' time left out; "
              "median of the runs, a run that never got there counting as never ('never' when the median run "
              "did not); n/a for popularity, which does not train.", ""]
    return lines


def _time_to_quality(row: dict) -> str:
    if row["method"] == "popularity":
        return "n/a"
    if "seconds_to_threshold" not in row:
        return "not measured"
    seconds = row["seconds_to_threshold"]
    runs = row.get("runs", 1)
    reached = row.get("runs_reaching_threshold", runs)
    text = "never" if seconds is None else num(seconds, 1)
    return text if reached in (0, runs) else f"{text} ({reached}/{runs} runs got there)"


def _scale(part: dict, cmd: str) -> list[str]:
    sizes = part.get("sizes", [])
    lines = ["## 2. Scale (synthetic generator)", "",
             f"Reproduce: `{cmd} --parts scale`. Each size trains {part.get('epochs')} epochs (bounded: the "
             f"default is {part.get('default_epochs', '?')}) through the trainer's pipeline in a child process "
             "(`python -m bench.train_child --source synthetic:SIZE --epochs N`), whose peak RSS is read with "
             "`os.wait4`. Load time is the index service's own (validate every checksum, load, index, warm up), "
             "median of its loads of the version and renumbered copies; latency is in-process "
             "(`ServingModel`, BLAS on one thread), p50/p99 per call, recall@10 against exact search with the "
             "same exclusions. One training run per size (a full-scale run takes minutes): its samples/s is the "
             "median of its epochs (the first one includes XLA compilation).", ""]
    rows = []
    for s in sizes:
        ph = s.get("phase_seconds", {})
        rec = s["in_process"].get("recommend", {})
        sim = s["in_process"].get("similar", {})
        rows.append([
            f"{s['label']} ({s['preset']})", f"{s['users']:,}", f"{s['artists']:,}", f"{s['interactions']:,}",
            ", ".join(f"{k} {num(v, 1)}" for k, v in ph.items()),
            f"{num(s['samples_per_second'] / 1e6)}M ({', '.join(num(r / 1e6) for r in s['epoch_samples_per_second'])})",
            gib(s["peak_rss_bytes"]), mib(s["version_bytes"]),
            f"{num(s['service']['load_ms_median'], 0)} ms", mib(s["service"]["rss_bytes_first"]),
            f"{num(rec.get('p50_ms'), 3)} / {num(rec.get('p99_ms'), 3)} ms, {num(rec.get('recall_at_10'), 3)} "
            f"({rec.get('method')})",
            f"{num(sim.get('p50_ms'), 3)} / {num(sim.get('p99_ms'), 3)} ms, {num(sim.get('recall_at_10'), 3)} "
            f"({sim.get('method')})",
        ])
    lines += _table(["size", "users", "artists", "interactions", "pipeline phases (s)",
                     "train samples/s (median; per epoch)", "trainer peak RSS", "version on disk", "service load",
                     "service RSS", "Recommend p50 / p99, recall@10", "SimilarArtists p50 / p99, recall@10"], rows)
    if len(sizes) >= 2:
        lines += ["", "How cost grows, each size against the previous one:", ""]
        growth = []
        for prev, cur in zip(sizes, sizes[1:]):
            growth.append([f"{prev['label']} -> {cur['label']}", ratio(cur["interactions"], prev["interactions"], 1),
                           ratio(cur["train_wall_seconds"], prev["train_wall_seconds"]),
                           ratio(cur["peak_rss_bytes"], prev["peak_rss_bytes"]),
                           ratio(cur["version_bytes"], prev["version_bytes"]),
                           ratio(cur["service"]["load_ms_median"], prev["service"]["load_ms_median"]),
                           ratio(cur["in_process"]["recommend"]["p50_ms"], prev["in_process"]["recommend"]["p50_ms"])])
        lines += _table(["step", "interactions", "pipeline wall time", "peak RSS", "version size", "load time",
                         "Recommend p50"], growth)
    for s in sizes:
        hr, pop = s["metrics"].get("hit_rate_at_10"), s["metrics"].get("popularity_hit_rate_at_10")
        if _finite(hr) and _finite(pop) and hr < 1.2 * pop:
            lines += ["", f"Note: after {s['epochs']} epochs the {s['label']} model ranks little better than "
                      f"popularity (HR@10 {num(hr, 4)} vs {num(pop, 4)}): its scores are dominated by the artist "
                      "bias, so most users share a top 10 and the Recommend search is easy for any index. Its "
                      "latency and memory figures stand; for recall on a trained model see the Last.fm 2K rows of "
                      "part 3."]
    lines += ["", "Where a version's load time goes (measured in the benchmark process, same steps as the service):",
              ""]
    lines += _table(["size", "checksum validation", "read arrays + map Annoy", "build ServingModel", "warm-up",
                     "service total (median)"],
                    [[s["label"]] + [f"{num(s['service'].get('breakdown', {}).get(k, float('nan')) * 1000, 0)} ms"
                                     for k in ("validate_sha256_s", "read_arrays_s", "serving_model_s", "warm_up_s")]
                     + [f"{num(s['service']['load_ms_median'], 0)} ms"] for s in sizes])
    lines += ["", "Search settings chosen at publish (manifest):", ""]
    for s in sizes:
        r, m = s["recommend_search"], s["similar_search"]
        lines.append(f"- {s['label']}: Recommend {r['method']} ({r['n_trees']} trees, search_k {r['search_k']}, "
                     f"{r['candidates_per_result']} candidates/result, recall {r['recall_at_10']}); SimilarArtists "
                     f"{m['method']} (search_k {m['search_k']}, recall {m['recall_at_10']}); evaluation "
                     f"HR@10 {num(s['metrics'].get('hit_rate_at_10'), 4)} vs popularity "
                     f"{num(s['metrics'].get('popularity_hit_rate_at_10'), 4)}")
    lines.append("")
    return lines


def _ann(part: dict, cmd: str, plot_note: str | None) -> list[str]:
    lines = ["## 3. Nearest-neighbour search", "",
             f"Reproduce: `{cmd} --parts scale,ann` (the 160,000-artist model comes from the scale part). "
             "The task is Recommend's: the 10 highest `[user factors, 1] . [artist factors, bias]` over all "
             "artists (seen ones not excluded, as in the notebook), one query at a time, BLAS on one thread. "
             "Recall@10 is tie-aware against exact search; latency is per query, median over runs of each "
             "run's p50/p99.", ""]
    if plot_note:
        lines += [f"({plot_note})", ""]
    else:
        lines += [f"![recall against latency]({PLOT_NAME})", ""]
    for model in part.get("models", []):
        lines += [f"### {model['label']}: {model['artists']:,} artists, {model['factors']} factors, "
                  f"{model['queries']:,} queries", ""]
        exact = next((r for r in model["rows"] if r["search"] == "recommend" and r["method"] == "exact"), {})
        for search in ("recommend", "similar"):
            rows = [r for r in model["rows"] if r["search"] == search]
            if not rows:
                continue
            base = next((r for r in rows if r["method"] == "exact"), exact)
            lines += [f"{'Recommend (inner product)' if search == 'recommend' else 'SimilarArtists (cosine)'}:", ""]
            lines += _table(["method", "setting", "recall@10", "p50 ms", "p99 ms", "speed-up vs exact (p50)",
                             "build s"],
                            [[r["method"], r["setting"], num(r["recall_at_10"], 3), num(r["p50_ms"], 3),
                              num(r["p99_ms"], 3), ratio(base.get("p50_ms"), r["p50_ms"]),
                              num(r.get("build_s"), 1) if r.get("build_s") is not None else ""] for r in rows])
            lines.append("")
        lines += _ann_comparison(model)
        lines += [f"- {n}" for n in model.get("notes", [])]
    lines += [f"- {n}" for n in part.get("notes", [])]
    lines.append("")
    return lines


def _ann_comparison(model: dict, recall: float = 0.95) -> list[str]:
    """One line per search: the fastest setting of each method reaching ``recall``, side by side."""
    lines = []
    for search in ("recommend", "similar"):
        rows = [r for r in model["rows"] if r["search"] == search]
        best = {}
        for r in rows:
            if _finite(r["recall_at_10"]) and r["recall_at_10"] >= recall and (
                    r["method"] not in best or r["p50_ms"] < best[r["method"]]["p50_ms"]):
                best[r["method"]] = r
        if not best:
            continue
        ours = best.get("our annoy")
        parts = [f"{m} {num(r['p50_ms'], 3)} ms"
                 + (f" ({ratio(r['p50_ms'], ours['p50_ms'])} our annoy's p50)" if ours and r is not ours else "")
                 for m, r in best.items()]
        missing = sorted({r["method"] for r in rows} - set(best))
        text = f"- {search}: fastest p50 at recall@10 >= {recall}: " + "; ".join(parts)
        if missing:
            text += "; never reaching it: " + ", ".join(
                f"{m} (best recall {num(max(r['recall_at_10'] for r in rows if r['method'] == m), 3)})"
                for m in missing)
        lines.append(text)
    return lines + [""] if lines else []


def _percent(x) -> str:
    return f"{100 * x:.0f}%" if _finite(x) else "n/a"


def _error_kinds(rows: list[dict]) -> list[str]:
    """The kinds of errors seen in ``rows``' runs, once each (status code and first message)."""
    kinds: dict[str, str] = {}
    for row in rows:
        for run in row.get("per_run", []):
            for code, text in (run.get("error_details") or {}).items():
                kinds.setdefault(f"Python client {code}", text)
            if run.get("grpc_errors"):
                kinds.setdefault("h2load", f"{run['done'] - run['http_ok']} of {run['done']} requests without an "
                                 "HTTP 200 (reset streams) in one run")
    return [f"{k}: {v}" for k, v in kinds.items()]


def _server_mode(row: dict) -> str:
    workers = row.get("workers", 1)
    return "1 process" if workers == 1 else f"{workers} workers"


def _behind(row: dict) -> bool:
    return _finite(row.get("requests_per_s")) and row["requests_per_s"] < 0.95 * row["rate"]


def _serving(part: dict, cmd: str, cores: int | None) -> list[str]:
    model = part.get("model", {})
    ids = part.get("python_ids") or {}
    floor = part.get("floor") or {}
    floor_commands = floor.get("server_commands") or {}
    over = (f"a different user on every request, over all {ids['recommend']:,} users of the model in a shuffled "
            f"order (SimilarArtists: all {ids['similar']:,} artists)" if ids.get("recommend") and ids.get("similar")
            else "requests over many users/artists")
    lines = ["## 4. Serving over gRPC", "",
             f"Reproduce: `{cmd} --parts serving` (with the full-scale rows: `{cmd} --parts scale,serving`). The "
             "index service runs as a real process "
             f"(`{part.get('server_command', 'python -m index_service ...')}`) serving the Last.fm 2K model "
             f"({model.get('artists', 0):,} artists, {model.get('users', 0):,} users; Recommend "
             f"{model.get('recommend_method')}, SimilarArtists {model.get('similar_method')}); the load comes from "
             "other processes on 127.0.0.1: `h2load` (one HTTP/2 connection against one process, the same serialized "
             "request every time) and the Python `grpc.aio` generator (`python -m bench.grpc_load`, "
             f"{part.get('generators', {}).get('python_processes')} process(es) for concurrent and paced runs, "
             f"{over}). Server CPU per request comes from `/proc/PID/stat` of the server "
             "and all its descendants before and after each run. Medians of the runs; errors are summed over all "
             "runs.", ""]
    if floor.get("closed_loop"):
        lines += ["**The floor**: beside the index service in each server mode, the same runs (same generators, "
                  "requests, in-flight levels, rates and repetitions, each repetition right before the index's, so "
                  "that both see the shared machine alike) go to "
                  f"`{floor_commands.get('1', 'python -m bench.floor_server --port 0')}`: an IndexService on the same "
                  "proto, built by the same `build_server` with the same `ServerConfig` defaults (error mapping, "
                  "health, reflection, max concurrent RPCs), the same event loop (uvloop when installed) and the "
                  "same `--workers` supervisor, whose Recommend and SimilarArtists return an empty response without "
                  "reading the request. It is what the gRPC runtime costs on this machine; every index figure below "
                  "stands beside the floor's (\"/ floor\": index requests/s over the floor's).", ""]
    multi = [w for w in part.get("workers", [1]) if w > 1]
    if multi:
        commands = part.get("server_commands", {})
        lines += [f"Each scenario runs against one process (\"1 process\") and again against the multi-process mode "
                  f"(\"N workers\": `{commands.get(str(multi[0]), 'python -m index_service --workers N ...')}`: a "
                  "supervisor and N worker processes sharing the port with SO_REUSEPORT; the floor likewise, "
                  f"`{floor_commands.get(str(multi[0]), 'python -m bench.floor_server --workers N')}`). The kernel "
                  "spreads connections, not calls, over the workers, so against N workers h2load opens several "
                  "connections (`-c C -m M` with C x M the same total in flight; `--rps` per connection) and each "
                  "Python generator process several channels (`--channels`), calls spread over them in turn; "
                  "\"connections\" is the total. Server CPU and main-thread figures sum the supervisor and its workers "
                  "(main-thread busy can pass 100%: one main thread per worker). Swaps count distinct versions (each "
                  "worker logs its own swap).", ""]
    verification = part.get("verification", {})
    if verification:
        lines.append("Request check (once, before the runs): " + "; ".join(
            f"{rpc}: real client OK ({v['client_response_bytes']} bytes)"
            + (f", nghttp HTTP {v.get('http_status')} grpc-status {v.get('grpc_status')}" if "grpc_status" in v else "")
            for rpc, v in verification.items())
            + " (the floor's: an empty message, checked the same way). h2load counts HTTP 200 as success, so each "
              "h2load run also checks that the DATA bytes received equal the responses done times the verified "
              "response size; a gRPC error carries no message and is counted as an error.")
        lines.append("")
    closed = part.get("closed_loop", [])
    if closed:
        lines += ["Closed loop (throughput at a fixed number of requests in flight):", ""]
        lines += _table(["RPC", "generator", "server", "connections", "in flight", "requests/s", "floor requests/s",
                         "/ floor", "p50 ms", "p99 ms", "floor p99 ms", "server CPU ms/request",
                         "floor server CPU ms/request", "server main thread(s) ms/request",
                         "main thread(s) busy, % of a core", "server cores busy", "client CPU ms/request", "errors",
                         "runs"],
                        [[r["rpc"], r["generator"], _server_mode(r), r.get("connections", 1), r["inflight"],
                          num(r["requests_per_s"], 0), num(r.get("floor_requests_per_s"), 0),
                          num(r.get("ratio_to_floor")), num(r["p50_ms"]), num(r["p99_ms"]),
                          num(r.get("floor_p99_ms")), num(r["server_cpu_ms_per_request"], 3),
                          num(r.get("floor_server_cpu_ms_per_request"), 3),
                          num(r.get("server_main_thread_ms_per_request"), 3),
                          _percent(r.get("server_main_thread_busy")), num(r.get("server_cores_busy")),
                          num(r.get("client_cpu_ms_per_request"), 3),
                          r["errors_total"], r["runs"]] for r in closed])
        lines.append("")
    open_loop = part.get("open_loop", [])
    if open_loop:
        lines += ["Open loop (paced; latency from the moment each request was due, for the Python generator; "
                  "from the moment h2load sent it, for h2load):", ""]
        lines += _table(["RPC", "generator", "server", "connections", "rate/s", "achieved/s", "p50 ms", "p90 ms",
                         "p99 ms", "floor p99 ms", "max ms", "server CPU ms/request", "client CPU ms/request",
                         "errors", "runs"],
                        [[r["rpc"], r["generator"], _server_mode(r), r.get("connections", 1), f"{r['rate']:,}",
                          num(r["requests_per_s"], 0)
                          + (" (behind)" if _behind(r) else ""), num(r["p50_ms"]), num(r["p90_ms"]), num(r["p99_ms"]),
                          num(r.get("floor_p99_ms")), num(r["max_ms"]), num(r["server_cpu_ms_per_request"], 3),
                          num(r.get("client_cpu_ms_per_request"), 3), r["errors_total"], r["runs"]]
                         for r in open_loop])
        lines.append("")
        kinds = _error_kinds(open_loop)
        if kinds:
            lines += ["Errors in the paced runs: " + "; ".join(f"`{k}`" for k in kinds) + ". RST_STREAM error code 7 "
                      "is REFUSED_STREAM: the server refused the stream without processing it once requests piled up "
                      "beyond what it serves per second (gRPC clients may retry it: UNAVAILABLE is retryable in "
                      "`musicrec.rpc.channel_config`; these generators do not retry).", ""]
        if any(_behind(r) for r in open_loop):
            lines += ["\"(behind)\": the achieved rate is under 95% of the pace asked for: the server and the load "
                      f"generator together need more than the {_cores_text(cores)}, requests queue, and the latency "
                      "is queueing time (client CPU per request shows the generator's share).", ""]
    swaps = part.get("swaps", [])
    if swaps:
        lines += ["While a new version appears every "
                  f"{part.get('swap_interval_s', 2):g} s (a renumbered hard-linked copy of the served version, "
                  "moved into place with one rename as `publish_version` does; the service validates, loads and "
                  "swaps each one):", ""]
        lines += _table(["RPC", "generator", "server", "rate/s", "swaps", "p50 ms", "p99 ms", "steady p99 ms",
                         "p99 / steady", "floor p99 ms", "max ms", "errors", "runs"],
                        [[r["rpc"], r["generator"], _server_mode(r), f"{r['rate']:,}", r["swaps"], num(r["p50_ms"]),
                          num(r["p99_ms"]), num(r["steady_p99_ms"]), num(r.get("p99_ratio_to_steady")),
                          num(r.get("floor_p99_ms")), num(r["max_ms"]), r["errors_total"], r["runs"]] for r in swaps])
        lines.append("")
    lines += _floor_tables(floor)
    breakdown = part.get("cpu_breakdown", [])
    if breakdown:
        lines += ["Where the server's CPU goes per request (the busiest closed-loop run). The floor's server CPU is "
                  "the gRPC runtime's with an empty handler, measured the same way. The main thread runs "
                  "the asyncio loop, the servicer and the model under the GIL; the other threads are gRPC's C core "
                  "(HTTP/2, polling). The model's own share is the `ServingModel` call in-process (p50, BLAS on "
                  "one thread); the rest of the main thread's time is the Python side of gRPC (asyncio server, "
                  "protobuf, the interceptor).", ""]
        lines += _table(["RPC", "server", "run", "requests/s", "floor requests/s", "server CPU ms/request",
                         "floor server CPU ms/request", "main thread ms/request", "of which ServingModel ms",
                         "other threads ms/request", "main thread busy", "ceiling: main threads (1 core each)",
                         f"ceiling: {_cores_text(cores)}, nothing else running"],
                        [[r["rpc"], _server_mode(r), f"{r['generator']} x{r['inflight']}",
                          num(r.get("requests_per_s"), 0), num(r.get("floor_requests_per_s"), 0),
                          num(r["server_cpu_ms_per_request"], 3), num(r.get("floor_server_cpu_ms_per_request"), 3),
                          num(r.get("main_thread_ms_per_request"), 3),
                          num(r["model_ms"], 3), num(r.get("other_threads_ms_per_request"), 3),
                          _percent(r.get("main_thread_busy")), f"{num(r.get('main_thread_ceiling_per_s'), 0)}/s",
                          f"{num(r.get('machine_ceiling_per_s'), 0)}/s"] for r in breakdown])
        lines.append("")
    lines += _metrics_overhead(part.get("metrics_overhead"), cmd)
    lines += _full_scale(part.get("full_scale"), cmd)
    examples = part.get("commands", {})
    if examples:
        lines += ["Example commands (as run):", ""] + [f"- {k}: `{v}`" for k, v in examples.items()] + [""]
    lines += [f"- {n}" for n in part.get("notes", [])]
    lines.append("")
    return lines


def _floor_tables(floor: dict) -> list[str]:
    """The floor's own rows (the denominators of the ratios above)."""
    closed, open_loop = floor.get("closed_loop", []), floor.get("open_loop", [])
    if not (closed or open_loop):
        return []
    lines = ["The floor's own runs (empty Recommend and SimilarArtists, same runs as above):", ""]
    rows = [[r["rpc"], r["generator"], _server_mode(r), r.get("connections", 1), f"x{r['inflight']}",
             num(r["requests_per_s"], 0), num(r["p50_ms"]), num(r["p99_ms"]), num(r["server_cpu_ms_per_request"], 3),
             num(r.get("server_main_thread_ms_per_request"), 3), num(r.get("client_cpu_ms_per_request"), 3),
             r["errors_total"], r["runs"]] for r in closed]
    rows += [[r["rpc"], r["generator"], _server_mode(r), r.get("connections", 1), f"{r['rate']:,}/s paced",
              num(r["requests_per_s"], 0) + (" (behind)" if _behind(r) else ""), num(r["p50_ms"]), num(r["p99_ms"]),
              num(r["server_cpu_ms_per_request"], 3), num(r.get("server_main_thread_ms_per_request"), 3),
              num(r.get("client_cpu_ms_per_request"), 3), r["errors_total"], r["runs"]] for r in open_loop]
    lines += _table(["RPC", "generator", "server", "connections", "load", "requests/s", "p50 ms", "p99 ms",
                     "server CPU ms/request", "server main thread(s) ms/request", "client CPU ms/request", "errors",
                     "runs"], rows)
    return lines + [""]


def _full_scale(full: dict | None, cmd: str) -> list[str]:
    """The full-scale serving rows: throughput with recall, and the workers' memory."""
    if full is None:
        return []
    lines = ["### Serving at full scale", ""]
    if not full.get("ran"):
        what = "The full-scale rows" if full.get("failed") else "Not measured in this run"
        return lines + [f"{what}: {full.get('note', '')}.", ""]
    scale = "the scale part's full-scale version" if full.get("full_scale") else \
        "**quick mode: the scale part's largest version, not full scale**"
    lines += [f"Reproduce: `{cmd} --parts scale,serving`. The index service serves {scale} "
              f"({full['users']:,} users, {full['artists']:,} artists; `{full['server_commands'].get('1', '')}`); "
              f"Recommend at {full.get('inflight')} in flight, the same request as the Last.fm rows' (the user with "
              "the median number of seen artists); recall@10 against exact search as the version's manifest records "
              "it for what answers that request (the precomputed lists when the version has them, else the "
              f"{full.get('search_method')} search: recall {num(full.get('search_recall_at_10'), 3)} on "
              f"{full.get('recall_sample_size', 0):,} sampled users).", ""]
    rows = [r for r in (full.get("throughput"), full.get("throughput_workers")) if r]
    if rows:
        lines += _table(["generator", "server", "connections", "in flight", "requests/s", "floor requests/s",
                         "/ floor", "p50 ms", "p99 ms", "server CPU ms/request", "Recommend search", "recall@10",
                         "errors", "runs"],
                        [[r["generator"], _server_mode(r), r.get("connections", 1), r["inflight"],
                          num(r["requests_per_s"], 0), num(r.get("floor_requests_per_s"), 0),
                          num(r.get("ratio_to_floor")), num(r["p50_ms"]), num(r["p99_ms"]),
                          num(r["server_cpu_ms_per_request"], 3), full.get("recommend_method"),
                          num(full.get("recall_at_10"), 3), r["errors_total"], r["runs"]] for r in rows])
        lines += ["", "The floor beside each row is the floor's run of the same kind above (the floor serves no "
                  "model: its figures do not depend on the version's size).", ""]
    memory = full.get("memory_workers") or {}
    workers = memory.get("workers") or []
    if workers:
        one = full.get("memory_one_process") or {}
        table = [["one process (no --workers)", mib(one.get("uss")), mib(one.get("pss")), mib(one.get("rss"))]]
        table += [[f"worker {w['worker']} of {len(workers)}", mib(w["uss"]), mib(w["pss"]), mib(w["rss"])]
                  for w in workers]
        sup = memory.get("supervisor")
        if sup:
            table.append(["supervisor", mib(sup["uss"]), mib(sup["pss"]), mib(sup["rss"])])
        lines += [f"Memory with `{full['server_commands'].get(str(len(workers)), '--workers N')}`, read after the "
                  "version loaded and warmed up and a closed-loop run reached every worker (psutil "
                  "`memory_full_info()`: USS = pages only this process maps, what it frees on exit; PSS = shared "
                  "pages divided among their users; RSS counts shared pages in full). Each worker beyond the first "
                  "adds its USS; PSS over all processes is the real total.", ""]
        lines += _table(["process", "USS", "PSS", "RSS"], table)
        lines += ["", f"Total PSS of the {len(workers)} workers and the supervisor: {mib(memory.get('total_pss'))} "
                  f"(one process alone: {mib(one.get('pss'))}).", ""]
    lines += [f"- {n}" for n in full.get("notes", [])]
    return lines + [""]


# -- history (issue 11): new listeners from their history, batches ---------------------------

def _history_targets(part: dict, quick: bool) -> list[dict]:
    """Issue 11's fold-in quality, RecommendForHistory p50 and BatchRecommend targets."""
    from bench.history import (BATCH_TARGET_SPEEDUP, FOLD_IN_TARGET_VS_IN_MODEL, FOLD_IN_TARGET_VS_POPULARITY,
                               HISTORY_P50_TARGET_MS)

    note = " - quick mode: few epochs, one seed" if quick else ""
    out = []
    for ds in part.get("fold_in", []):
        vs_model, vs_pop = ds.get("vs_in_model"), ds.get("vs_popularity")
        out.append({"part": "history", "target": f"{ds['dataset']}: fold-in HR@10 >= "
                    f"{FOLD_IN_TARGET_VS_IN_MODEL}x in-model and >= {FOLD_IN_TARGET_VS_POPULARITY:g}x popularity",
                    "measured": f"{num(ds.get('fold_in_bpr_hr10'), 4)} = {ratio(ds.get('fold_in_bpr_hr10'), ds.get('in_model_hr10'))} "
                                f"in-model ({num(ds.get('in_model_hr10'), 4)}), "
                                f"{ratio(ds.get('fold_in_bpr_hr10'), ds.get('popularity_hr10'))} popularity "
                                f"({num(ds.get('popularity_hr10'), 4)}); {ds.get('heldout_users')} held-out users{note}",
                    "met": _finite(vs_model) and _finite(vs_pop) and vs_model >= FOLD_IN_TARGET_VS_IN_MODEL
                    and vs_pop >= FOLD_IN_TARGET_VS_POPULARITY,
                    "limit": "" if _finite(vs_model) and vs_model >= FOLD_IN_TARGET_VS_IN_MODEL else
                    "HR@10 over a few hundred held-out users moves by about 0.03 between seeds; see the per-seed table"})
    speed = part.get("speed") or {}
    p50 = speed.get("history_p50_ms")
    if speed:
        out.append({"part": "history", "target": f"RecommendForHistory p50 <= {HISTORY_P50_TARGET_MS:g} ms in-process, "
                    f"{speed.get('history_length')}-artist history at {speed.get('artists', 0):,} artists",
                    "measured": f"{num(p50, 3)} ms (fold-in fit alone {num(speed.get('fit_p50_ms'), 3)} ms)",
                    "met": _finite(p50) and p50 <= HISTORY_P50_TARGET_MS,
                    "limit": "" if _finite(p50) and p50 <= HISTORY_P50_TARGET_MS else
                    "the fold-in's Newton steps; other work shared the cores (see the load average)"})
        speedup = speed.get("batch_speedup")
        out.append({"part": "history", "target": f"BatchRecommend of 100 >= {BATCH_TARGET_SPEEDUP:g}x the requests/s of "
                    "single Recommend calls (gRPC)",
                    "measured": f"{num(speedup, 1)}x (the faster of sequential and 16 in flight)",
                    "met": _finite(speedup) and speedup >= BATCH_TARGET_SPEEDUP, "limit": ""})
    return out


def _history(part: dict, cmd: str) -> list[str]:
    lines = ["## 5. New listeners from their history (RecommendForHistory) and batches", "",
             f"Reproduce: `{cmd} --parts history` (one data set and seed: `.venv/bin/python -m bench.fold_in "
             "--data hetrec:../shared/data/lastfm-2k --seed 0`; speed alone: `.venv/bin/python -m bench.history_batch`). "
             "Fold-in protocol (`bench/fold_in.py`): 10% of the users (with >= 5 artists) held out of training "
             "entirely (model A); for each, one artist (seeded) is the target and the listener's vector is "
             "fitted against model A from all their other artists (`index_service/fold_in.py`), ranked with "
             "those artists excluded; in-model is the same users in training with only the target left out "
             "(model B, leave-one-out); popularity ranks by model A's training listeners. Both models with "
             "the trainer's default hyperparameters; HR@10 pooled over the seeds' held-out users.", ""]
    rows = []
    for ds in part.get("fold_in", []):
        rows.append([ds["dataset"], f"{ds['seeds']} ({ds['heldout_users']:,} users)",
                     num(ds.get("fold_in_bpr_hr10"), 4), num(ds.get("in_model_hr10"), 4),
                     num(ds.get("popularity_hr10"), 4),
                     ratio(ds.get("fold_in_bpr_hr10"), ds.get("in_model_hr10")),
                     ratio(ds.get("fold_in_bpr_hr10"), ds.get("popularity_hr10")),
                     num(ds.get("fold_in_bpr_fit_ms_p50"), 3)])
    if rows:
        lines += _table(["data set", "seeds", "fold-in (BPR) HR@10", "in-model HR@10", "popularity HR@10",
                         "fold-in / in-model", "fold-in / popularity",
                         "fit p50 ms (real histories)"], rows)
        lines += ["", "Per seed (fold-in / in-model / popularity HR@10, held-out users, median history length):", ""]
        for ds in part.get("fold_in", []):
            per = "; ".join(f"seed {r['seed']}: {num(r['fold_in_bpr_hr10'], 3)} / {num(r['in_model_hr10'], 3)} / "
                            f"{num(r['popularity_hr10'], 3)} ({r['heldout_users']}, {num(r['history_length_median'], 0)})"
                            for r in ds.get("per_run", []))
            lines.append(f"- {ds['dataset']}: {per}")
        lines.append("")
    speed = part.get("speed") or {}
    if speed:
        lines += [f"Speed on a random-factor version of {speed.get('artists', 0):,} artists x {speed.get('factors')} "
                  f"factors ({speed.get('recommend_method')} search), in-process with BLAS on one thread: "
                  f"RecommendForHistory with a {speed.get('history_length')}-artist history, k 10, response "
                  f"encoded: p50 {num(speed.get('history_p50_ms'), 3)} ms, p90 {num(speed.get('history_p90_ms'), 3)} ms; "
                  f"the fold-in fit alone in the same loop ({speed.get('fold_in_newton_steps')} Newton steps, "
                  f"a pool of {speed.get('fold_in_negatives')} negatives"
                  + (f", the {speed.get('fold_in_hard_negatives')} hardest weighted as the hardest of "
                     f"{speed.get('fold_in_negative_candidates')} draws"
                     if (speed.get('fold_in_negative_candidates') or 1) > 1 else "")
                  + f"): p50 {num(speed.get('fit_p50_ms'), 3)} ms, "
                  f"p90 {num(speed.get('fit_p90_ms'), 3)} ms ({speed.get('history_queries')} queries).", ""]
        batch_rows = []
        for label, row in (speed.get("batch") or {}).items():
            what = "default (precomputed lists)" if label == "lists" else "include_seen (searched, one matrix product)"
            batch_rows.append([what, num(row.get("single_sequential_rps"), 0), num(row.get("single_16_in_flight_rps"), 0),
                               num(row.get("batch_of_100_rps"), 0), f"{num(row.get('speedup_vs_sequential'), 1)}x",
                               f"{num(row.get('speedup_vs_16_in_flight'), 1)}x"])
        lines += _table(["Recommend requests", "single, one at a time (/s)", "single, 16 in flight (/s)",
                         "BatchRecommend of 100 (requests/s)", "batch / one at a time", "batch / 16 in flight"],
                        batch_rows)
        lines += ["", "Over real gRPC in one process (an index service on port 0 and a grpc.aio client, "
                  f"{speed.get('users', 0):,} users).", ""]
    lines += [f"- {n}" for n in part.get("notes", [])]
    return lines


def _met_text(met) -> str:
    """A target's "met" cell: yes, **no**, or "not measured" (None: the rows did not run)."""
    return "not measured" if met is None else "yes" if met else "**no**"


def markdown(results: dict, plot_note: str | None) -> str:
    cmd = ".venv/bin/python -m bench" + (" --quick" if results.get("quick") else "")
    parts = results.get("parts", {})
    part_seconds = results.get("part_seconds", {})
    finished = results.get("part_finished_at", {})
    timing = ", ".join(f"{p} {num(part_seconds.get(p, float('nan')) / 60, 1)} min"
                       + (f" (finished {finished[p]})" if p in finished else "") for p in parts)
    lines = ["# Benchmarks", "",
             f"Generated by `{'make bench-quick' if results.get('quick') else 'make bench'}` "
             f"(`{cmd}`; one part alone: `{cmd} --parts NAME`), {num(sum(part_seconds.values()) / 60, 1)} "
             f"minutes in all: {timing}. Every figure is in `docs/benchmarks.json` with its per-run values. "
             + ("**Quick mode: small data, one run, short loads - not the real figures.**" if results.get("quick")
                else f"Figures are medians of {results.get('runs')} runs unless a table says otherwise."), ""]
    goals = targets(results)
    if goals:
        lines += ["## Targets", ""]
        lines += _table(["part", "target", "measured", "met", "what limits it"],
                        [[t["part"], t["target"], t["measured"], _met_text(t["met"]), t["limit"]]
                         for t in goals])
        lines.append("")
    lines += _machine(results) + [""]
    errors = results.get("errors", {})
    for name, err in errors.items():
        lines += [f"**The {name} part failed:** `{err.splitlines()[-1] if err else ''}` (see benchmarks.json)", ""]
    if parts.get("quality"):
        lines += _quality(parts["quality"], cmd)
    if parts.get("scale"):
        lines += _scale(parts["scale"], cmd)
    if parts.get("ann"):
        lines += _ann(parts["ann"], cmd, plot_note)
    if parts.get("serving"):
        lines += _serving(parts["serving"], cmd, _cores(results))
    if parts.get("history"):
        lines += _history(parts["history"], cmd)
    return "\n".join(lines).rstrip() + "\n"


def write(results: dict, out_dir: Path) -> tuple[Path, Path, str | None]:
    """Write benchmarks.json, benchmarks.md and the plot into ``out_dir``; (json, md, plot note)."""
    from bench.plot import recall_latency_png

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_note = None
    if results.get("parts", {}).get("ann"):
        plot_note = recall_latency_png(results["parts"]["ann"], out_dir / PLOT_NAME)
    results = dict(results, targets=targets(results))
    json_path = out_dir / "benchmarks.json"
    json_path.write_text(json.dumps(clean(results), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    md_path = out_dir / "benchmarks.md"
    md_path.write_text(markdown(results, plot_note), encoding="utf-8")
    return json_path, md_path, plot_note


def summary(results: dict) -> str:
    """A few lines for the terminal: each target, met or not."""
    lines = ["", "Benchmark summary" + (" (quick mode)" if results.get("quick") else ""), ""]
    for t in targets(results):
        mark = "SKIPPED" if t["met"] is None else "met" if t["met"] else "MISSED"
        lines.append(f"  [{mark}] {t['target']}: {t['measured']}")
    for name, err in results.get("errors", {}).items():
        lines.append(f"  [FAILED] part {name}: {err.splitlines()[-1] if err else ''}")
    return "\n".join(lines)
