"""benchmarks.json and benchmarks.md from the parts' results.

The Markdown is ``bench/report_template.md`` (the fixed text: protocols, what each column means)
with the tables rendered here from the results: a line ``{{name}}`` becomes the table block of that
name, a block after ``<!-- part NAME -->`` is left out when the part has no results, and
``{{cmd}}`` is the command that reproduces the run. Every figure comes from the results.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from bench.settings import REPO_ROOT

GIB = 1024 ** 3
MIB = 1024 ** 2
PLOT_NAME = "ann_recall_latency.png"
TEMPLATE = Path(__file__).with_name("report_template.md")

# The serving targets (issue 10; the plumbing's, issue 19). Throughput at 16 in flight.
H2LOAD_TARGETS_PER_S = {1: 6_000, 2: 8_000}
TARGET_INFLIGHT = 16
P99_TARGET_MS = 3.0
P99_TARGET_RATE = 2_000
SWAP_RATIO_TARGET = 1.5
FULL_SCALE_TARGET_PER_S = 4_000
FULL_SCALE_RECALL = 0.98
WORKER_USS_TARGET_BYTES = 150 * MIB
METRICS_SHARE_TARGET = 0.05
RPC_NAMES = {"recommend": "Recommend", "similar": "SimilarArtists"}


# -- numbers ---------------------------------------------------------------------------------

def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x, digits: int = 2) -> str:
    return f"{x:,.{digits}f}" if finite(x) else "n/a"


def ratio(a, b, digits: int = 2) -> str:
    return f"{a / b:.{digits}f}x" if finite(a) and finite(b) and b else "n/a"


def mib(x) -> str:
    if not finite(x):
        return "n/a"
    return f"{x / MIB:,.1f} MiB" if x < 100 * MIB else f"{x / MIB:,.0f} MiB"


def gib(x) -> str:
    return f"{x / GIB:.2f} GiB" if finite(x) else "n/a"


def millions(x) -> str:
    return f"{num(x / 1e6)}M" if finite(x) else "n/a"


def percent(x) -> str:
    return f"{100 * x:.0f}%" if finite(x) else "n/a"


def at_least(x, bound) -> bool:
    return finite(x) and x >= bound


def at_most(x, bound) -> bool:
    return finite(x) and x <= bound


def clean(obj):
    """JSON-safe: NaN and infinity become null (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


_PORT = re.compile(r"\b(127\.0\.0\.1|localhost|0\.0\.0\.0|\[::\]):\d+")


def portable(obj, repo_root: Path = REPO_ROOT):
    """The results without this checkout's paths or the run's ports: paths under ``repo_root``
    become repo-relative (its siblings ``../name``) and ``127.0.0.1:PORT`` becomes
    ``127.0.0.1:<port>``, so that the generated files read the same from any checkout."""
    if isinstance(obj, str):
        for root, relative in ((repo_root, ""), (repo_root.parent, "../")):
            obj = re.sub(rf"(?<![\w.-]){re.escape(str(root))}/", relative, obj)
        return _PORT.sub(r"\1:<port>", obj)
    if isinstance(obj, dict):
        return {k: portable(v, repo_root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v, repo_root) for v in obj]
    return obj


def table(rows: list, columns: list[tuple[str, object]]) -> list[str]:
    """A Markdown table: one row per item of ``rows``, ``columns`` as (header, cell) where a cell
    is a function of the row or a key of it (a missing key renders empty)."""
    cells = [[str(c(r) if callable(c) else r.get(c, "")) for _, c in columns] for r in rows]
    return (["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
            + ["| " + " | ".join(row) + " |" for row in cells] + [""])


def bullets(notes) -> list[str]:
    return [f"- {n}" for n in notes or []] + ([""] if notes else [])


def server_mode(row: dict) -> str:
    workers = row.get("workers", 1)
    return "1 process" if workers == 1 else f"{workers} workers"


def mode(row: dict) -> str:
    """"h2load, 1 process" / "python, 2 workers": the generator and the server mode of a row."""
    return f"{row['generator']}, {server_mode(row)}"


def cores_of(results: dict) -> int | None:
    """The recorded machine's core count (None when the results do not say)."""
    cores = (results.get("machine") or {}).get("cpu_cores")
    return cores if isinstance(cores, int) and cores > 0 else None


def cores_text(cores: int | None) -> str:
    return f"{cores} core" + ("" if cores == 1 else "s") if cores else "the machine's cores"


# -- targets ---------------------------------------------------------------------------------

def target(part: str, what: str, measured: str, met, limit: str = "") -> dict:
    """One target: ``met`` True, False or None (not measured; ``measured`` says why)."""
    return {"part": part, "target": what, "measured": measured, "met": met, "limit": "" if met else limit}


def targets(results: dict) -> list[dict]:
    """Every target with the measured figure, met or not, and what limits it."""
    parts, quick, cores = results.get("parts", {}), results.get("quick", False), cores_of(results)
    out = [target("quality", t["target"], t.get("measured") or f"ours {num(t['ours'], 4)} vs {num(t['peer'], 4)}",
                  t["met"], "HR@10 of the default hyperparameters; see the quality table")
           for ds in (parts.get("quality") or {}).get("datasets", []) for t in ds.get("targets", [])]
    if (parts.get("scale") or {}).get("sizes"):
        out += _scale_targets(parts["scale"]["sizes"][-1], quick, cores, results.get("load_average", {}))
    if parts.get("serving"):
        out += _serving_targets(parts["serving"], cores)
    if parts.get("history"):
        out += _history_targets(parts["history"], quick)
    if parts.get("live"):
        out += _live_targets(parts["live"], quick)
    return out


def _scale_targets(big: dict, quick: bool, cores, load: dict) -> list[dict]:
    where = f"{big['label']} ({big['artists']:,} artists)" + (" - quick mode, not full scale" if quick else "")
    rate = (big.get("plain_bpr") or {}).get("samples_per_second")
    load_ms = (big.get("service") or {}).get("load_ms_median")
    rec = (big.get("in_process") or {}).get("recommend", {})
    return [
        target("scale", f"training >= 2.5M samples/s at {where}, 64 factors, plain BPR triples (one uniform "
                        "negative each)",
               f"{millions(rate)} samples/s (median epoch, trainer alone); the default's "
               f"{big.get('negative_candidates', '?')} negative candidates per triple: "
               f"{millions(big.get('samples_per_second'))} (whole pipeline)", at_least(rate, 2.5e6),
               f"memory latency: each triple reads three random rows of the factor tables; {cores_text(cores)} for "
               f"the XLA loop and the sampler (load average {load.get('scale', '?')} when the part started)"),
        target("scale", f"peak trainer RSS <= 3 GiB at {where}", gib(big.get("peak_rss_bytes")),
               at_most(big.get("peak_rss_bytes"), 3 * GIB)),
        target("scale", f"version load <= 0.5 s at {where}, every checksum verified",
               f"{num(load_ms, 0)} ms (index service, median)", at_most(load_ms, 500),
               f"validation hashes every file; see the load breakdown table ({cores_text(cores)})"),
        target("scale", f"Recommend p50 in-process < 1 ms with recall@10 >= 0.95 at {where}",
               f"p50 {num(rec.get('p50_ms'), 3)} ms, recall@10 {num(rec.get('recall_at_10'), 3)} "
               f"({rec.get('method', '?')})",
               finite(rec.get("p50_ms")) and rec["p50_ms"] < 1.0 and at_least(rec.get("recall_at_10"), 0.95)),
    ]


def _rate(row: dict) -> str:
    return f"{num(row['requests_per_s'], 0)}/s"


def _throughput_limit(row: dict, cores: int | None) -> str:
    """The ceilings a closed-loop run's CPU figures imply (the template says how they are read)."""
    cpu, main = row.get("server_cpu_ms_per_request"), row.get("server_main_thread_ms_per_request")
    if not (finite(cpu) and finite(main)) or cpu <= 0 or main <= 0:
        return "see the serving section"
    texts = [f"server CPU {num(cpu, 3)} ms/request, main thread(s) {num(main, 3)} ms, busy {percent(row.get('server_main_thread_busy'))} of a core"]
    if row.get("workers", 1) == 1:
        texts.append(f"one main thread cannot pass ~{1000 / main:,.0f}/s")
    client = row.get("client_cpu_ms_per_request")
    if cores:
        texts.append(f"{cores_text(cores)} cannot pass ~{cores * 1000 / cpu:,.0f}/s"
                     + (f", ~{cores * 1000 / (cpu + client):,.0f}/s with the load generator's {num(client, 3)} ms"
                        if finite(client) and client > 0 else ""))
    texts.append("the plumbing table gives the bare grpc.aio handler's rate")
    return "; ".join(texts)


def _serving_targets(serving: dict, cores: int | None) -> list[dict]:
    closed, modes = serving.get("closed_loop", []), serving.get("workers") or [1]
    out = []

    def closed_row(rpc: str, generator: str, workers: int) -> dict | None:
        return next((r for r in closed if r["rpc"] == rpc and r["generator"] == generator
                     and r["inflight"] == TARGET_INFLIGHT and r.get("workers", 1) == workers), None)

    for workers in modes:
        row, goal = closed_row("recommend", "h2load", workers), H2LOAD_TARGETS_PER_S.get(workers)
        if row and goal:
            out.append(target("serving", f">= {goal:,} Recommend/s at {TARGET_INFLIGHT} in flight ({mode(row)})",
                              _rate(row), at_least(row["requests_per_s"], goal), _throughput_limit(row, cores)))
    for row in serving.get("open_loop", []):
        if row["rpc"] == "recommend" and row["rate"] == P99_TARGET_RATE and row.get("workers", 1) == 1:
            out.append(target("serving", f"Recommend p99 <= {P99_TARGET_MS:g} ms at a steady {P99_TARGET_RATE:,}/s "
                                         f"({mode(row)})",
                              f"p99 {num(row['p99_ms'])} ms (p50 {num(row['p50_ms'])} ms)", at_most(row["p99_ms"], P99_TARGET_MS),
                              f"queueing: server CPU {num(row.get('server_cpu_ms_per_request'), 3)} ms/request x "
                              f"{row['rate']:,}/s on one main thread, the load generator on the same "
                              f"{cores_text(cores)}"))
    for row in serving.get("swaps", []):
        out.append(target("serving", f"{RPC_NAMES.get(row['rpc'], row['rpc'])} p99 during swaps <= "
                                     f"{SWAP_RATIO_TARGET:g}x steady at {row['rate']:,}/s ({mode(row)})",
                          f"p99 {num(row['p99_ms'])} ms vs steady {num(row['steady_p99_ms'])} ms "
                          f"({num(row.get('p99_ratio_to_steady'))}x), "
                          f"{row['swaps']} swaps", at_most(row.get("p99_ratio_to_steady"), SWAP_RATIO_TARGET),
                          "each swap validates, loads and indexes a version in a thread of the serving process "
                          "(the GIL)"))
    out += [target("serving", f"0 errors during swaps ({row['rpc']}, {mode(row)})",
                   f"{row['errors_total']} errors in {row['runs']} runs", row["errors_total"] == 0)
            for row in serving.get("swaps", [])]
    plumbing = serving.get("plumbing") or {}
    if plumbing.get("ran", True) and plumbing:
        out.append(target("serving", f"{plumbing['rpc']}/s of the index service >= {plumbing['target']:g}x a bare "
                                     f"grpc.aio handler (h2load, {plumbing['inflight']} in flight)",
                          f"{num(plumbing['service_rps_median'], 0)}/s vs {num(plumbing['bare_rps_median'], 0)}/s "
                          f"({num(plumbing['ratio'])}x)", at_least(plumbing["ratio"], plumbing["target"]),
                          "see the per-wrapper costs in the plumbing table"))
        added_us = next(w["us_per_call"] for w in plumbing["wrappers"] if w["name"] == "metrics")
        share = added_us / plumbing["service_cpu_us_median"]
        out.append(target("serving", f"Recording Prometheus metrics adds <= {METRICS_SHARE_TARGET:.0%} to the index "
                                     "service's server CPU per Recommend (the wrapper ladder's metrics row)",
                          f"{num(added_us, 1)} us of {num(plumbing['service_cpu_us_median'], 1)} us per call "
                          f"({percent(share)})", at_most(share, METRICS_SHARE_TARGET),
                          "the counters and the latency histogram of every call"))
    elif plumbing:
        out.append(target("serving", "the index service against a bare grpc.aio handler", plumbing["note"], None))
    return out + _full_scale_targets(serving.get("full_scale"), cores)


def _full_scale_targets(full: dict | None, cores: int | None) -> list[dict]:
    """Recommend throughput with its recall, and workers' unique memory, at full scale; met None
    (not measured) with the reason when the full-scale version was not there."""
    throughput = (f">= {FULL_SCALE_TARGET_PER_S:,} Recommend/s at {TARGET_INFLIGHT} in flight, full scale, "
                  f"recall@10 >= {FULL_SCALE_RECALL} against exact")
    memory = f"each worker beyond the first adds <= {mib(WORKER_USS_TARGET_BYTES)} of unique memory (USS)"
    if full is None:  # results of a run before these rows existed
        return []
    if not full.get("ran"):
        failed = bool(full.get("failed"))
        return [target("serving", what, ("" if failed else "not measured: ") + full.get("note", ""),
                       False if failed else None, "see the serving log (benchmarks.json: full_scale.traceback)")
                for what in (f"{throughput} (h2load, 1 process)", f"{memory}, full scale")]
    where = "" if full.get("full_scale") else f" - quick mode, {full['artists']:,} artists, not full scale"
    out = []
    row = full.get("throughput")
    if row:
        recall = full.get("recall_at_10")
        out.append(target("serving", f"{throughput} ({mode(row)}){where}",
                          f"{_rate(row)}; recall@10 {num(recall, 3)} ({full.get('recommend_method')}; the "
                          "manifest's figure)",
                          at_least(row.get("requests_per_s"), FULL_SCALE_TARGET_PER_S)
                          and at_least(recall, FULL_SCALE_RECALL), _throughput_limit(row, cores)))
    workers = (full.get("memory_workers") or {}).get("workers") or []
    if workers:
        beyond = full["memory_workers"].get("uss_beyond_first_max")
        one = full.get("memory_one_process") or {}
        out.append(target("serving", f"{memory}, --workers {len(workers)}, full scale{where}",
                          "USS " + ", ".join(f"worker {w['worker']} {mib(w['uss'])}" for w in workers)
                          + f" (RSS {', '.join(mib(w['rss']) for w in workers)}); one process alone: USS "
                            f"{mib(one.get('uss'))}, RSS {mib(one.get('rss'))}",
                          at_most(beyond, WORKER_USS_TARGET_BYTES),
                          f"a worker's unique memory is {mib(beyond)} (one process alone: {mib(one.get('uss'))}): "
                          "the Python runtime, gRPC and what each worker builds for itself"))
    return out


def _history_targets(part: dict, quick: bool) -> list[dict]:
    """The fold-in quality, RecommendForHistory p50 and BatchRecommend targets."""
    from bench.history import (BATCH_TARGET_SPEEDUP, FOLD_IN_TARGET_VS_IN_MODEL, FOLD_IN_TARGET_VS_POPULARITY,
                               HISTORY_P50_TARGET_MS)

    note = " - quick mode: few epochs, one seed" if quick else ""
    out = [target("history", f"{ds['dataset']}: fold-in HR@10 >= {FOLD_IN_TARGET_VS_IN_MODEL}x in-model and >= "
                             f"{FOLD_IN_TARGET_VS_POPULARITY:g}x popularity",
                  f"{num(ds.get('fold_in_bpr_hr10'), 4)} = "
                  f"{ratio(ds.get('fold_in_bpr_hr10'), ds.get('in_model_hr10'))} "
                  f"in-model ({num(ds.get('in_model_hr10'), 4)}), "
                  f"{ratio(ds.get('fold_in_bpr_hr10'), ds.get('popularity_hr10'))} popularity "
                  f"({num(ds.get('popularity_hr10'), 4)}); {ds.get('heldout_users')} held-out users{note}",
                  at_least(ds.get("vs_in_model"), FOLD_IN_TARGET_VS_IN_MODEL)
                  and at_least(ds.get("vs_popularity"), FOLD_IN_TARGET_VS_POPULARITY),
                  "HR@10 over a few hundred held-out users moves between seeds: see the per-seed table")
           for ds in part.get("fold_in", [])]
    speed = part.get("speed") or {}
    if speed:
        p50 = speed.get("history_p50_ms")
        out.append(target("history", f"RecommendForHistory p50 <= {HISTORY_P50_TARGET_MS:g} ms in-process, "
                                     f"{speed.get('history_length')}-artist history at {speed.get('artists', 0):,} "
                                     "artists",
                          f"{num(p50, 3)} ms (fold-in fit alone {num(speed.get('fit_p50_ms'), 3)} ms)",
                          at_most(p50, HISTORY_P50_TARGET_MS), "the fold-in's Newton steps; see the load average"))
        out.append(target("history", f"BatchRecommend of 100 >= {BATCH_TARGET_SPEEDUP:g}x the requests/s of single "
                                     "Recommend calls (gRPC)",
                          f"{num(speed.get('batch_speedup'), 1)}x (the faster of sequential and 16 in flight)",
                          at_least(speed.get("batch_speedup"), BATCH_TARGET_SPEEDUP)))
    return out


def _live_targets(part: dict, quick: bool) -> list[dict]:
    """RecordPlays throughput, freshness across replicas, serving while writing, live quality."""
    from bench.live import (FRESHNESS_P99_TARGET_S, LIVE_VS_RETRAIN_TARGET, RECORD_TARGET_PER_S,
                            SERVING_RATIO_TARGET)

    stores = part["record"]["stores"]
    sqlite = stores["sqlite"]["plays_per_s"]
    postgres = (stores.get("postgresql") or {}).get("plays_per_s")
    fresh, writing, quality = part["freshness"], part["writing"], part["quality"]
    out = [target("live", f"RecordPlays >= {RECORD_TARGET_PER_S:,} plays/s acknowledged durable, one index process, "
                          f"batches of {part['record']['batch']}, SQLite",
                  f"{num(sqlite, 0)} plays/s (PostgreSQL: {num(postgres, 0)})", at_least(sqlite, RECORD_TARGET_PER_S),
                  "each acknowledged batch is one durable commit; see the load average"),
           target("live", f"freshness: RecordPlays on one replica to Recommend on another, p99 <= "
                          f"{FRESHNESS_P99_TARGET_S * 1e3:g} ms",
                  f"p50 {num(fresh['p50_ms'], 0)} ms, p99 {num(fresh['p99_ms'], 0)} ms ({fresh['samples']} samples)",
                  at_most(fresh["p99_ms"], FRESHNESS_P99_TARGET_S * 1e3), "the tailer's poll interval and re-fits")]
    if writing.get("ran"):
        out.append(target("live", f"Recommend throughput while taking {writing['write_rate']:,} plays/s >= "
                                   f"{SERVING_RATIO_TARGET:g}x without writes (h2load, {writing['inflight']} in flight)",
                          f"{num(writing['ratio'])}x ({num(writing['with_requests_per_s'], 0)} vs "
                          f"{num(writing['without_requests_per_s'], 0)} requests/s)",
                          at_least(writing["ratio"], SERVING_RATIO_TARGET), "the writes' commits and re-fits"))
    else:
        out.append(target("live", "Recommend throughput while writing", writing.get("note", ""), None))
    note = " - quick mode: few epochs, one seed, a subset of listeners" if quick else ""
    for group, row in (quality.get("groups") or {}).items():
        out.append(target("live", f"{quality['dataset']}, {group} listeners: live HR@10 >= "
                                  f"{LIVE_VS_RETRAIN_TARGET:g}x a full retrain and above stale",
                          f"live {num(row['live_hr10'], 4)}, retrain {num(row['retrain_hr10'], 4)} "
                          f"({num(row['live_vs_retrain'])}x), stale {num(row['stale_hr10'], 4)}; "
                          f"{row['users']} listeners{note}",
                          at_least(row["live_vs_retrain"], LIVE_VS_RETRAIN_TARGET)
                          and row["live_hr10"] > row["stale_hr10"]))
    if not quality.get("ran"):
        out.append(target("live", "live quality", quality.get("note", ""), None))
    return out


def _met_text(met) -> str:
    """A target's "met" cell: yes, **no**, or "not measured" (None: the rows did not run)."""
    return "not measured" if met is None else "yes" if met else "**no**"


# -- the blocks of the template --------------------------------------------------------------

def _header(results: dict) -> list[str]:
    cmd = _command(results)
    seconds, finished = results.get("part_seconds", {}), results.get("part_finished_at", {})
    timing = ", ".join(f"{p} {num(seconds.get(p, float('nan')) / 60, 1)} min"
                       + (f" (finished {finished[p]})" if p in finished else "") for p in results.get("parts", {}))
    return [f"Generated by `{'make bench-quick' if results.get('quick') else 'make bench'}` (`{cmd}`; one part "
            f"alone: `{cmd} --parts NAME`), {num(sum(seconds.values()) / 60, 1)} minutes in all: {timing}. Every "
            "figure is in `docs/benchmarks.json` with its per-run values. "
            + ("**Quick mode: small data, one run, short loads - not the real figures.**" if results.get("quick")
               else f"Figures are medians of {results.get('runs')} runs unless a table says otherwise.")]


def _targets(results: dict) -> list[str]:
    goals = targets(results)
    if not goals:
        return []
    return ["## Targets", ""] + table(goals, [("part", "part"), ("target", "target"), ("measured", "measured"),
                                              ("met", lambda t: _met_text(t["met"])), ("what limits it", "limit")])


def _machine(results: dict) -> list[str]:
    m = results.get("machine", {})
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items() if v)
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})" for b in m.get("blas", []))
    return ["## Machine", "",
            f"- CPU: {m.get('cpu_model')}, {m.get('cpu_cores')} cores; memory {m.get('memory_gib')} GiB; "
            f"Linux {m.get('kernel')}",
            f"- Python {m.get('python')}; {libs}",
            f"- BLAS: {blas or 'n/a'}; h2load: {m.get('h2load') or 'not installed'}",
            f"- Load average (1, 5, 15 min) at start: {m.get('load_average_at_start')}; per part: "
            + ", ".join(f"{p} {v}" for p, v in results.get("load_average", {}).items()),
            "- The machine is shared with other engineers' work: figures move by tens of percent between runs."] + (
        [f"- OpenBLAS environment: {m['openblas_env']}"] if m.get("openblas_env") else [])


def _errors(results: dict) -> list[str]:
    return [f"**The {name} part failed:** `{err.splitlines()[-1] if err else ''}` (see benchmarks.json)\n"
            for name, err in results.get("errors", {}).items()]


def _time_to_quality(row: dict) -> str:
    if row["method"] == "popularity":
        return "n/a"
    if "seconds_to_threshold" not in row:
        return "not measured"
    seconds, runs = row["seconds_to_threshold"], row.get("runs", 1)
    reached = row.get("runs_reaching_threshold", runs)
    text = "never" if seconds is None else num(seconds, 1)
    return text if reached in (0, runs) else f"{text} ({reached}/{runs} runs got there)"


def _quality(part: dict) -> list[str]:
    lines = []
    for ds in part.get("datasets", []):
        ours = next((r for r in ds["rows"] if r["method"] == "ours (default)"), {})

        def rate(r: dict) -> str:
            if finite(r.get("samples_per_second")):
                return millions(r["samples_per_second"])
            return f"({millions(r['interactions_per_second'])} interactions/s)" \
                if finite(r.get("interactions_per_second")) else "n/a"

        lines += [f"### {ds['dataset']}: {ds['users']:,} users, {ds['artists']:,} artists, "
                  f"{ds['interactions']:,} interactions ({ds['evaluated_users']:,} evaluated users)", ""]
        lines += table(ds["rows"], [
            ("method", "method"), ("HR@10", lambda r: num(r["hit_rate_at_10"], 4)),
            ("NDCG@10", lambda r: num(r["ndcg_at_10"], 4)), ("AUC", lambda r: num(r["auc"], 4)),
            ("train s", lambda r: num(r["train_seconds"], 1)), ("samples/s", rate),
            ("ours' HR@10 / this", lambda r: ratio(ours.get("hit_rate_at_10"), r["hit_rate_at_10"])),
            ("this train time / ours'", lambda r: "" if r["method"] == "popularity"
             else ratio(r["train_seconds"], ours.get("train_seconds"))),
            ("s to HR@10 >= 0.19", _time_to_quality), ("runs", lambda r: r.get("runs", 1)),
            ("settings", "description")])
        lines += bullets(ds.get("notes"))
    return lines + bullets(part.get("notes"))


def _scale(part: dict) -> list[str]:
    sizes = part.get("sizes", [])

    def search(s: dict, rpc: str) -> str:
        r = s["in_process"].get(rpc, {})
        return f"{num(r.get('p50_ms'), 3)} / {num(r.get('p99_ms'), 3)} ms, {num(r.get('recall_at_10'), 3)} " \
               f"({r.get('method')})"

    lines = table(sizes, [
        ("size", lambda s: f"{s['label']} ({s['preset']})"), ("users", lambda s: f"{s['users']:,}"),
        ("artists", lambda s: f"{s['artists']:,}"), ("interactions", lambda s: f"{s['interactions']:,}"),
        ("epochs", "epochs"),
        ("pipeline phases (s)", lambda s: ", ".join(f"{k} {num(v, 1)}" for k, v in s.get("phase_seconds", {}).items())),
        ("train samples/s (median; per epoch)",
         lambda s: f"{millions(s['samples_per_second'])} "
                   f"({', '.join(num(r / 1e6) for r in s['epoch_samples_per_second'])})"),
        ("plain BPR samples/s (trainer alone)", lambda s: millions((s.get("plain_bpr") or {}).get("samples_per_second"))
         if s.get("plain_bpr") else ""),
        ("trainer peak RSS", lambda s: gib(s["peak_rss_bytes"])),
        ("version on disk", lambda s: mib(s["version_bytes"])),
        ("service load", lambda s: f"{num(s['service']['load_ms_median'], 0)} ms"),
        ("service RSS", lambda s: mib(s["service"]["rss_bytes_first"])),
        ("Recommend p50 / p99, recall@10", lambda s: search(s, "recommend")),
        ("SimilarArtists p50 / p99, recall@10", lambda s: search(s, "similar"))])
    if len(sizes) >= 2:
        steps = [(prev, cur) for prev, cur in zip(sizes, sizes[1:])]
        lines += ["How cost grows, each size against the previous one:", ""]
        lines += table(steps, [
            ("step", lambda p: f"{p[0]['label']} -> {p[1]['label']}"),
            ("interactions", lambda p: ratio(p[1]["interactions"], p[0]["interactions"], 1)),
            ("pipeline wall time", lambda p: ratio(p[1]["train_wall_seconds"], p[0]["train_wall_seconds"])),
            ("peak RSS", lambda p: ratio(p[1]["peak_rss_bytes"], p[0]["peak_rss_bytes"])),
            ("version size", lambda p: ratio(p[1]["version_bytes"], p[0]["version_bytes"])),
            ("load time", lambda p: ratio(p[1]["service"]["load_ms_median"], p[0]["service"]["load_ms_median"])),
            ("Recommend p50", lambda p: ratio(p[1]["in_process"]["recommend"]["p50_ms"],
                                              p[0]["in_process"]["recommend"]["p50_ms"]))])
    for s in sizes:
        hr, pop = s["metrics"].get("hit_rate_at_10"), s["metrics"].get("popularity_hit_rate_at_10")
        if finite(hr) and finite(pop) and hr < 1.2 * pop:
            lines += [f"Note: after {s['epochs']} epochs the {s['label']} model ranks little better than popularity "
                      f"(HR@10 {num(hr, 4)} vs {num(pop, 4)}): most users share a top 10 and the Recommend search is "
                      "easy for any index; for recall on a trained model see part 3's Last.fm 2K rows.", ""]
    lines += ["Where a version's load time goes (measured in the benchmark process, same steps as the service):", ""]

    def step_ms(key: str):
        return lambda s: f"{num(s['service'].get('breakdown', {}).get(key, float('nan')) * 1000, 0)} ms"

    lines += table(sizes, [("size", "label"), ("checksum validation", step_ms("validate_sha256_s")),
                           ("read arrays + map Annoy", step_ms("read_arrays_s")),
                           ("build ServingModel", step_ms("serving_model_s")), ("warm-up", step_ms("warm_up_s")),
                           ("service total (median)", lambda s: f"{num(s['service']['load_ms_median'], 0)} ms")])
    lines += ["Search settings chosen at publish (manifest):", ""]
    lines += table(sizes, [
        ("size", "label"),
        ("Recommend", lambda s: f"{s['recommend_search']['method']} ({s['recommend_search']['n_trees']} trees, "
                                f"search_k {s['recommend_search']['search_k']}, "
                                f"{s['recommend_search']['candidates_per_result']} candidates/result)"),
        ("Recommend recall", lambda s: s["recommend_search"]["recall_at_10"]),
        ("SimilarArtists", lambda s: f"{s['similar_search']['method']} (search_k {s['similar_search']['search_k']})"),
        ("SimilarArtists recall", lambda s: s["similar_search"]["recall_at_10"]),
        ("HR@10 vs popularity", lambda s: f"{num(s['metrics'].get('hit_rate_at_10'), 4)} vs "
                                          f"{num(s['metrics'].get('popularity_hit_rate_at_10'), 4)}")])
    return lines


def _ann(part: dict, plot_note: str | None) -> list[str]:
    lines = [f"({plot_note})" if plot_note else f"![recall against latency]({PLOT_NAME})", ""]
    for model in part.get("models", []):
        lines += [f"### {model['label']}: {model['artists']:,} artists, {model['factors']} factors, "
                  f"{model['queries']:,} queries", ""]
        exact = next((r for r in model["rows"] if r["search"] == "recommend" and r["method"] == "exact"), {})
        for search, title in (("recommend", "Recommend (inner product)"), ("similar", "SimilarArtists (cosine)")):
            rows = [r for r in model["rows"] if r["search"] == search]
            if not rows:
                continue
            base = next((r for r in rows if r["method"] == "exact"), exact)
            lines += [f"{title}:", ""]
            lines += table(rows, [("method", "method"), ("setting", "setting"),
                                  ("recall@10", lambda r: num(r["recall_at_10"], 3)),
                                  ("p50 ms", lambda r: num(r["p50_ms"], 3)), ("p99 ms", lambda r: num(r["p99_ms"], 3)),
                                  ("speed-up vs exact (p50)", lambda r: ratio(base.get("p50_ms"), r["p50_ms"])),
                                  ("build s", lambda r: "" if r.get("build_s") is None else num(r["build_s"], 1))])
        lines += _ann_comparison(model) + bullets(model.get("notes"))
    return lines + bullets(part.get("notes"))


def _ann_comparison(model: dict, recall: float = 0.95) -> list[str]:
    """One line per search: the fastest setting of each method reaching ``recall``, side by side."""
    lines = []
    for search in ("recommend", "similar"):
        rows = [r for r in model["rows"] if r["search"] == search]
        best: dict[str, dict] = {}
        for r in rows:
            if at_least(r["recall_at_10"], recall) and r["p50_ms"] < best.get(r["method"], {}).get("p50_ms", math.inf):
                best[r["method"]] = r
        if not best:
            continue
        ours = best.get("our annoy")
        text = f"- {search}: fastest p50 at recall@10 >= {recall}: " + "; ".join(
            f"{m} {num(r['p50_ms'], 3)} ms"
            + (f" ({ratio(r['p50_ms'], ours['p50_ms'])} our annoy's p50)" if ours and r is not ours else "")
            for m, r in best.items())
        missing = sorted({r["method"] for r in rows} - set(best))
        if missing:
            text += "; never reaching it: " + ", ".join(
                f"{m} (best recall {num(max(r['recall_at_10'] for r in rows if r['method'] == m), 3)})"
                for m in missing)
        lines.append(text)
    return lines + [""] if lines else []


def _behind(row: dict) -> bool:
    return finite(row.get("requests_per_s")) and row["requests_per_s"] < 0.95 * row["rate"]


def _achieved(row: dict) -> str:
    return num(row["requests_per_s"], 0) + (" (behind)" if _behind(row) else "")


def _error_kinds(rows: list[dict]) -> list[str]:
    """The kinds of errors the Python generator saw in ``rows``' runs, once each (status code and
    first message)."""
    kinds: dict[str, str] = {}
    for run in (run for row in rows for run in row.get("per_run", [])):
        for code, text in (run.get("error_details") or {}).items():
            kinds.setdefault(f"Python client {code}", text)
    return [f"{k}: {v}" for k, v in kinds.items()]


# Columns shared by the serving tables.
RUN = [("RPC", "rpc"), ("generator", "generator"), ("server", server_mode),
       ("connections", lambda r: r.get("connections", 1))]
LATENCY = [("p50 ms", lambda r: num(r["p50_ms"])), ("p99 ms", lambda r: num(r["p99_ms"]))]
ERRORS = [("errors", "errors_total"), ("runs", "runs")]


def _ms(key: str, digits: int = 3):
    return lambda r: num(r.get(key), digits)


def _serving(part: dict, cores: int | None) -> list[str]:
    model = part.get("model", {})
    ids = part.get("python_ids") or {}
    lines = [f"- Model: Last.fm 2K, {model.get('artists', 0):,} artists, {model.get('users', 0):,} users; Recommend "
             f"{model.get('recommend_method')}, SimilarArtists {model.get('similar_method')}; the Python generator "
             f"over {ids.get('recommend', 0):,} users / {ids.get('similar', 0):,} artists, "
             f"{part.get('generators', {}).get('python_processes')} process(es) for concurrent and paced runs; "
             f"swaps every {part.get('swap_interval_s', 2):g} s"]
    lines += [f"- index service, {server_mode({'workers': int(w)})}: `{c}`"
              for w, c in part.get("server_commands", {}).items()]
    lines += [f"- Request check: {rpc} real client OK ({v['client_response_bytes']} bytes)"
              + (f", nghttp HTTP {v['http_status']} grpc-status {v['grpc_status']}" if "grpc_status" in v else "")
              for rpc, v in part.get("verification", {}).items()]
    lines.append("")
    closed, open_loop, swaps = part.get("closed_loop", []), part.get("open_loop", []), part.get("swaps", [])
    if closed:
        lines += ["Closed loop (throughput at a fixed number of requests in flight):", ""]
        lines += table(closed, RUN + [
            ("in flight", "inflight"), ("requests/s", _ms("requests_per_s", 0))] + LATENCY + [
            ("server CPU ms/request", _ms("server_cpu_ms_per_request")),
            ("server main thread(s) ms/request", _ms("server_main_thread_ms_per_request")),
            ("main thread(s) busy, % of a core", lambda r: percent(r.get("server_main_thread_busy"))),
            ("server cores busy", _ms("server_cores_busy", 2)),
            ("client CPU ms/request", _ms("client_cpu_ms_per_request"))] + ERRORS)
    if open_loop:
        lines += ["Open loop (paced):", ""]
        lines += table(open_loop, RUN + [
            ("rate/s", lambda r: f"{r['rate']:,}"), ("achieved/s", _achieved), ("p50 ms", _ms("p50_ms", 2)),
            ("p90 ms", _ms("p90_ms", 2)), ("p99 ms", _ms("p99_ms", 2)),
            ("max ms", _ms("max_ms", 2)), ("server CPU ms/request", _ms("server_cpu_ms_per_request")),
            ("client CPU ms/request", _ms("client_cpu_ms_per_request"))] + ERRORS)
        kinds = _error_kinds(open_loop)
        if kinds:
            lines += ["Errors in the paced runs: " + "; ".join(f"`{k}`" for k in kinds) + ".", ""]
    if swaps:
        lines += ["While versions swap:", ""]
        lines += table(swaps, RUN[:3] + [
            ("rate/s", lambda r: f"{r['rate']:,}"), ("swaps", "swaps")] + LATENCY + [
            ("steady p99 ms", _ms("steady_p99_ms", 2)), ("p99 / steady", _ms("p99_ratio_to_steady", 2)),
            ("max ms", _ms("max_ms", 2))] + ERRORS)
    lines += _plumbing(part.get("plumbing"))
    lines += _full_scale(part.get("full_scale"))
    examples = part.get("commands", {})
    if examples:
        lines += ["Example commands (as run):", ""] + bullets(f"{k}: `{v}`" for k, v in examples.items())
    return lines + bullets(part.get("notes"))


def _plumbing(plumbing: dict | None) -> list[str]:
    """The index service against a bare grpc.aio handler on the same proto, alternating rounds."""
    if not plumbing:
        return []
    if not plumbing.get("ran", True):
        return [f"Plumbing not measured in this run: {plumbing['note']}.", ""]
    lines = ["### Plumbing: the index service against a bare grpc.aio handler", "",
             f"{plumbing['rpc']} under h2load at {plumbing['inflight']} in flight, the bare handler and the index "
             f"service alternating round by round. Medians: bare {num(plumbing['bare_rps_median'], 0)}/s, index "
             f"service {num(plumbing['service_rps_median'], 0)}/s ({num(plumbing['ratio'])}x; target "
             f">= {plumbing['target']:g}x).", ""]
    lines += table(list(enumerate(plumbing.get("rounds", []), 1)), [
        ("round", lambda r: r[0]), ("bare requests/s", lambda r: num(r[1]["bare_rps"], 0)),
        ("index service requests/s", lambda r: num(r[1]["service_rps"], 0)),
        ("ratio", lambda r: ratio(r[1]["service_rps"], r[1]["bare_rps"]))])
    if plumbing.get("wrappers"):
        lines += ["Each wrapper's cost per call:", ""]
        lines += table(plumbing["wrappers"], [("wrapper", "name"), ("requests/s (median)", _ms("rps_median", 0)),
                                              ("us per call", _ms("us_per_call", 2))])
    return lines


def _full_scale(full: dict | None) -> list[str]:
    """The full-scale serving rows: throughput with recall, and the workers' memory."""
    if full is None:
        return []
    lines = ["### Serving at full scale", ""]
    if not full.get("ran"):
        what = "The full-scale rows" if full.get("failed") else "Not measured in this run"
        return lines + [f"{what}: {full.get('note', '')}.", ""]
    scale = "the scale part's full-scale version" if full.get("full_scale") else \
        "**quick mode: the scale part's largest version, not full scale**"
    lines += [f"The index service serves {scale} ({full['users']:,} users, {full['artists']:,} artists; "
              f"`{full['server_commands'].get('1', '')}`); Recommend at {full.get('inflight')} in flight, the user "
              "with the median number of seen artists; recall@10 against exact search as the version's manifest "
              f"records it for what answers that request ({full.get('search_method')} search alone: recall "
              f"{num(full.get('search_recall_at_10'), 3)} on {full.get('recall_sample_size', 0):,} sampled users).", ""]
    rows = [r for r in (full.get("throughput"), full.get("throughput_workers")) if r]
    lines += table(rows, [("generator", "generator"), ("server", server_mode), ("connections", "connections"),
                          ("in flight", "inflight"), ("requests/s", _ms("requests_per_s", 0))]
                   + LATENCY + [("server CPU ms/request", _ms("server_cpu_ms_per_request")),
                                ("Recommend search", lambda r: full.get("recommend_method")),
                                ("recall@10", lambda r: num(full.get("recall_at_10"), 3))] + ERRORS) if rows else []
    memory = full.get("memory_workers") or {}
    workers = memory.get("workers") or []
    if workers:
        procs = [("one process (no --workers)", full.get("memory_one_process") or {})]
        procs += [(f"worker {w['worker']} of {len(workers)}", w) for w in workers]
        procs += [("supervisor", memory["supervisor"])] if memory.get("supervisor") else []
        lines += [f"Memory with `{full['server_commands'].get(str(len(workers)), '--workers N')}`, after the version "
                  "loaded and a closed-loop run reached every worker (psutil `memory_full_info()`: USS = pages only "
                  "this process maps; PSS = shared pages divided among their users; RSS counts shared pages in "
                  f"full). Total PSS of the {len(workers)} workers and the supervisor: {mib(memory.get('total_pss'))}.",
                  ""]
        lines += table(procs, [("process", lambda p: p[0])]
                       + [(k.upper(), lambda p, k=k: mib(p[1].get(k))) for k in ("uss", "pss", "rss")])
    return lines + bullets(full.get("notes"))


def _history(part: dict) -> list[str]:
    datasets = part.get("fold_in", [])
    lines = table(datasets, [
        ("data set", "dataset"), ("seeds", lambda d: f"{d['seeds']} ({d['heldout_users']:,} users)"),
        ("fold-in (BPR) HR@10", _ms("fold_in_bpr_hr10", 4)), ("in-model HR@10", _ms("in_model_hr10", 4)),
        ("popularity HR@10", _ms("popularity_hr10", 4)),
        ("fold-in / in-model", lambda d: ratio(d.get("fold_in_bpr_hr10"), d.get("in_model_hr10"))),
        ("fold-in / popularity", lambda d: ratio(d.get("fold_in_bpr_hr10"), d.get("popularity_hr10"))),
        ("fit p50 ms (real histories)", _ms("fold_in_bpr_fit_ms_p50"))]) if datasets else []
    if datasets:
        lines += ["Per seed (fold-in / in-model / popularity HR@10, held-out users, median history length):", ""]
        lines += bullets(f"{d['dataset']}: " + "; ".join(
            f"seed {r['seed']}: {num(r['fold_in_bpr_hr10'], 3)} / {num(r['in_model_hr10'], 3)} / "
            f"{num(r['popularity_hr10'], 3)} ({r['heldout_users']}, {num(r['history_length_median'], 0)})"
            for r in d.get("per_run", [])) for d in datasets)
    speed = part.get("speed") or {}
    if speed:
        lines += [f"Speed on {speed.get('artists', 0):,} artists x {speed.get('factors')} factors "
                  f"({speed.get('recommend_method')} search), {speed.get('history_length')}-artist histories, k 10, "
                  f"{speed.get('history_queries')} queries; the fold-in: {speed.get('fold_in_newton_steps')} Newton "
                  f"steps, a pool of {speed.get('fold_in_negatives')} negatives, the "
                  f"{speed.get('fold_in_hard_negatives')} hardest weighted as the hardest of "
                  f"{speed.get('fold_in_negative_candidates')} draws; gRPC over {speed.get('users', 0):,} users.", ""]
        lines += table([("RecommendForHistory (whole answer)", "history"), ("fold-in fit alone", "fit")], [
            ("in-process", lambda m: m[0]), ("p50 ms", lambda m: num(speed.get(f"{m[1]}_p50_ms"), 3)),
            ("p90 ms", lambda m: num(speed.get(f"{m[1]}_p90_ms"), 3))])
        lines += table(list((speed.get("batch") or {}).items()), [
            ("Recommend requests", lambda b: "default (precomputed lists)" if b[0] == "lists"
             else "include_seen (searched, one matrix product)"),
            ("single, one at a time (/s)", lambda b: num(b[1].get("single_sequential_rps"), 0)),
            ("single, 16 in flight (/s)", lambda b: num(b[1].get("single_16_in_flight_rps"), 0)),
            ("BatchRecommend of 100 (requests/s)", lambda b: num(b[1].get("batch_of_100_rps"), 0)),
            ("batch / one at a time", lambda b: f"{num(b[1].get('speedup_vs_sequential'), 1)}x"),
            ("batch / 16 in flight", lambda b: f"{num(b[1].get('speedup_vs_16_in_flight'), 1)}x")])
    return lines + bullets(part.get("notes"))


def _live(part: dict) -> list[str]:
    record, fresh, writing, quality = part["record"], part["freshness"], part["writing"], part["quality"]
    lines = table(list(record["stores"].items()), [
        ("play log", lambda s: s[0]), ("plays/s (median)", lambda s: num(s[1]["plays_per_s"], 0)),
        ("plays/s per run", lambda s: ", ".join(num(r["plays_per_s"], 0) for r in s[1]["per_run"]))])
    lines += [f"Freshness over {fresh['samples']} new listeners: p50 {num(fresh['p50_ms'], 0)} ms, p90 "
              f"{num(fresh['p90_ms'], 0)} ms, p99 {num(fresh['p99_ms'], 0)} ms, max {num(fresh['max_ms'], 0)} ms "
              f"({fresh['gave_up']} not visible within {fresh['give_up_s']:g} s).", ""]
    if writing.get("ran"):
        lines += [f"Serving while writing: {num(writing['with_requests_per_s'], 0)} Recommend/s with "
                  f"{num(writing['write_plays_per_s'], 0)} plays/s recorded, {num(writing['without_requests_per_s'], 0)}"
                  f" without ({num(writing['ratio'])}x); {writing['errors_total']} errors.", ""]
    else:
        lines += [f"Serving while writing not measured: {writing.get('note')}.", ""]
    if quality.get("ran"):
        lines += [f"Live quality on {quality['dataset']}, {quality['seeds']} seed(s) pooled:", ""]
        lines += table(list(quality["groups"].items()), [
            ("listeners", lambda g: f"{g[0]} ({g[1]['users']:,})"), ("stale HR@10", lambda g: num(g[1]["stale_hr10"], 4)),
            ("live HR@10", lambda g: num(g[1]["live_hr10"], 4)), ("retrain HR@10", lambda g: num(g[1]["retrain_hr10"], 4)),
            ("live / retrain", lambda g: ratio(g[1]["live_hr10"], g[1]["retrain_hr10"]))])
    else:
        lines += [f"Live quality not measured: {quality.get('note')}.", ""]
    return lines + bullets(record.get("notes")) + ["Command (as run): " + f"`{record['command']}`", ""]


# -- the document ----------------------------------------------------------------------------

def _command(results: dict) -> str:
    return ".venv/bin/python -m bench" + (" --quick" if results.get("quick") else "")


def markdown(results: dict, plot_note: str | None) -> str:
    """benchmarks.md: the template with the results' tables (``plot_note``: why the plot is missing)."""
    parts, cores = results.get("parts", {}), cores_of(results)
    blocks = {
        "header": lambda: _header(results), "targets": lambda: _targets(results),
        "machine": lambda: _machine(results), "errors": lambda: _errors(results),
        "quality": lambda: _quality(parts["quality"]), "scale": lambda: _scale(parts["scale"]),
        "ann": lambda: _ann(parts["ann"], plot_note), "serving": lambda: _serving(parts["serving"], cores),
        "history": lambda: _history(parts["history"]), "live": lambda: _live(parts["live"]),
    }
    head, *sections = re.split(r"^<!-- part (\w+) -->\n", TEMPLATE.read_text(encoding="utf-8"), flags=re.M)
    text = head + "".join(body for name, body in zip(sections[::2], sections[1::2]) if parts.get(name))
    text = re.sub(r"^\{\{(\w+)\}\}\n", lambda m: "".join(f"{line}\n" for line in blocks[m[1]]()), text, flags=re.M)
    text = text.replace("{{cmd}}", _command(results))
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def write(results: dict, out_dir: Path) -> tuple[Path, Path, str | None]:
    """Write benchmarks.json, benchmarks.md and the plot into ``out_dir``; (json, md, plot note)."""
    from bench.plot import recall_latency_png

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_note = None
    if results.get("parts", {}).get("ann"):
        plot_note = recall_latency_png(results["parts"]["ann"], out_dir / PLOT_NAME)
    results = portable(clean(dict(results, targets=targets(results))))
    json_path = out_dir / "benchmarks.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    md_path = out_dir / "benchmarks.md"
    md_path.write_text(markdown(results, plot_note), encoding="utf-8")
    return json_path, md_path, plot_note


def summary(results: dict) -> str:
    """A few lines for the terminal: each target, met or not."""
    lines = ["", "Benchmark summary" + (" (quick mode)" if results.get("quick") else ""), ""]
    for t in targets(results):
        mark = "SKIPPED" if t["met"] is None else "met" if t["met"] else "MISSED"
        lines.append(f"  [{mark}] {t['target']}: {t['measured']}")
    lines += [f"  [FAILED] part {name}: {err.splitlines()[-1] if err else ''}"
              for name, err in results.get("errors", {}).items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report [DIR]``: render DIR/benchmarks.md again from DIR/benchmarks.json
    (default docs/), after an edit of the template or of this renderer; measures nothing."""
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else REPO_ROOT / "docs"
    results = json.loads((out_dir / "benchmarks.json").read_text(encoding="utf-8"))
    (out_dir / "benchmarks.md").write_text(markdown(results, None), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
