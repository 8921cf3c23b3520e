"""The benchmark's quick mode, end to end, so the bench code never rots.

Runs ``python -m bench --quick`` (every part, small) into a temporary directory and checks the
structure of what it writes: every part present and without error, the key figures present and
finite (the plumbing comparison beside the serving rows, the full-scale rows on the quick run's
largest version), the Markdown and the plot written. Never a figure's value: the machine is shared.
Skips cleanly when the optional peers (``pip install -e '.[bench]'``) or the shared data are missing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# ``bench`` is not an installed package (it ships with the repository, not the wheel): make it
# importable however pytest was started.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
PEERS = ("implicit", "hnswlib", "matplotlib")
QUICK_TIMEOUT_S = 1500

missing_peers = [name for name in PEERS if importlib.util.find_spec(name) is None]
QUICK_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_peers), reason=f"bench extras not installed ({', '.join(missing_peers)}): "
                                                   "pip install -e '.[bench]'"),
    pytest.mark.skipif(not (SHARED_DATA / "lastfm-2k").is_dir(),
                       reason=f"shared data not found at {SHARED_DATA} (HetRec Last.fm 2K)"),
]


def quick_mode(test):
    """The marks of a test that needs the quick run (slow; skipped without the extras or data)."""
    for mark in QUICK_MARKS:
        test = mark(test)
    return test


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench-out")
    work = tmp_path_factory.mktemp("bench-work")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out-dir", str(out), "--workdir", str(work),
                           "--data-dir", str(SHARED_DATA)],
                          cwd=REPO, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert proc.returncode == 0, f"bench --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "Benchmark summary" in proc.stdout
    return json.loads((out / "benchmarks.json").read_text(encoding="utf-8")), out


@quick_mode
def test_every_part_ran_and_the_files_are_written(quick):
    results, out = quick
    assert results["quick"] is True
    assert results["errors"] == {}
    assert set(results["parts"]) == {"quality", "scale", "ann", "serving", "history", "live", "tags", "warm", "chain"}
    assert results["machine"]["cpu_cores"] >= 1 and results["machine"]["python"]
    md = (out / "benchmarks.md").read_text(encoding="utf-8")
    for heading in ("## Targets", "## Machine", "## 1. Quality", "## 2. Scale", "## 3. Nearest-neighbour",
                    "## 4. Serving", "## 5. New listeners", "## 6. Live plays", "## 7. Tags", "## 8. Warm-started retrains",
                    "## 9. Chains of warm starts"):
        assert heading in md
    assert (out / "ann_recall_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["targets"] and all({"target", "measured", "met"} <= set(t) for t in results["targets"])


@quick_mode
def test_warm_rows(quick):
    results, _ = quick
    warm = results["parts"]["warm"]
    dataset = warm["datasets"][0]
    assert dataset["same_data"] is True  # the table plus the log are exactly the whole data
    for key in ("cold_hr10", "hr10", "hr_ratio", "time_ratio", "cold_wall_s", "wall_s"):
        assert finite(dataset[key]) and dataset[key] > 0, key
    assert all(run["base"]["warm_from"] == 0 and run["cold"]["warm_from"] == 0 and run["warm"]["warm_from"] == 1
               for run in dataset["per_run"])
    assert [row["default"] for row in dataset["schedules"]] == [True]
    fresh = warm["freshness"]
    assert fresh["trained_through"] >= fresh["plays"] > 0 and fresh["warm_from"] == 1 and finite(fresh["seconds"])


@quick_mode
def test_chain_rows(quick):
    results, _ = quick
    chain = results["parts"]["chain"]
    rows = chain["generations"]
    assert [row["generation"] for row in rows] == [1, 2]  # the quick settings' 2 warm starts in a row
    assert 0.0 < rows[0]["growth"] < rows[1]["growth"]
    for row in rows:
        assert finite(row["hr_ratio_mean"]) and row["hr_ratio_mean"] > 0 and row["hr_ratio_min"] <= row["hr_ratio_mean"]
    run = chain["per_run"][0]
    sizes = [run["root_interactions"]] + [step["interactions"] for step in run["steps"]]
    assert sizes == sorted(set(sizes))  # every generation adds plays to the one before
    assert rows[-1]["growth"] == sizes[-1] / sizes[0] - 1  # one seed: its own growth
    assert chain["rule_max_growth"] in (0.0, *(row["growth"] for row in rows))


@quick_mode
def test_quality_rows(quick):
    results, _ = quick
    dataset = results["parts"]["quality"]["datasets"][0]
    methods = {row["method"]: row for row in dataset["rows"]}
    assert set(methods) == {"ours (default)", "notebook recipe", "implicit BPR", "implicit ALS", "EASE", "popularity"}
    assert dataset["split_seeds"] and 0 not in dataset["split_seeds"]  # never the old reported split
    for row in methods.values():
        for key in ("hit_rate_at_10", "ndcg_at_10", "auc"):
            assert finite(row[key]) and 0.0 <= row[key] <= 1.0, (row["method"], key)
        assert row["hit_rate_min"] <= row["hit_rate_at_10"] <= row["hit_rate_max"], row["method"]
        assert row["runs"] == len(dataset["split_seeds"]) == len(row["per_run"]), row["method"]
        assert [r["split_seed"] for r in row["per_run"]] == dataset["split_seeds"], row["method"]
        assert finite(row["train_seconds"])
    assert finite(methods["ours (default)"]["samples_per_second"])


@quick_mode
def test_scale_rows(quick):
    results, _ = quick
    sizes = results["parts"]["scale"]["sizes"]
    assert len(sizes) >= 2
    for size in sizes:
        for key in ("samples_per_second", "peak_rss_bytes", "version_bytes", "train_wall_seconds"):
            assert finite(size[key]) and size[key] > 0, (size["label"], key)
        assert finite(size["service"]["load_ms_median"]) and size["service"]["rss_bytes_first"] > 0
        for rpc in ("recommend", "similar"):
            figures = size["in_process"][rpc]
            assert finite(figures["p50_ms"]) and finite(figures["p99_ms"])
            assert 0.0 <= figures["recall_at_10"] <= 1.0


@quick_mode
def test_ann_rows(quick):
    results, _ = quick
    models = results["parts"]["ann"]["models"]
    assert len(models) == 2  # Last.fm 2K and the largest scale model
    for model in models:
        methods = {row["method"] for row in model["rows"] if row["search"] == "recommend"}
        assert methods == {"exact", "notebook annoy", "our annoy", "hnswlib"}
        for row in model["rows"]:
            assert 0.0 <= row["recall_at_10"] <= 1.0 and finite(row["p50_ms"]) and finite(row["p99_ms"])
        assert any(row.get("manifest_choice") for row in model["rows"] if row["method"] == "our annoy")


@quick_mode
def test_serving_rows(quick):
    results, _ = quick
    serving = results["parts"]["serving"]
    # Throughput from h2load where nghttp2-client is installed; latency at a pace from the Python generator.
    closed = "h2load" if serving["generators"]["h2load"] else "python"
    assert {row["generator"] for row in serving["closed_loop"]} == {closed}
    assert {row["generator"] for row in serving["open_loop"] + serving["swaps"]} == {"python"}
    for section in ("closed_loop", "open_loop", "swaps"):
        rows = serving[section]
        assert {row["rpc"] for row in rows} == {"recommend", "similar"}
        for row in rows:
            assert finite(row["requests_per_s"]) and row["requests_per_s"] > 0, (section, row)
            assert finite(row["p50_ms"]) and finite(row["p99_ms"]) and finite(row["server_cpu_ms_per_request"])
            assert isinstance(row["errors_total"], int)
    for row in serving["swaps"]:
        assert row["swaps"] >= 1 and finite(row["steady_p99_ms"]), row  # the steady run of the same kind beside it
        assert row["p99_ratio_to_steady"] == row["p99_ms"] / row["steady_p99_ms"]
    # The Python generator goes over every user (artist) of the served model.
    model = serving["model"]
    assert serving["python_ids"] == {"recommend": model["users"], "similar": model["artists"]}
    assert all(row["ids"] == serving["python_ids"][row["rpc"]]
               for row in serving["open_loop"] + serving["swaps"])


@quick_mode
def test_serving_plumbing_rows(quick):
    from bench.plumbing import LADDER

    results, _ = quick
    serving = results["parts"]["serving"]
    plumbing = serving["plumbing"]
    if not serving["generators"]["h2load"]:
        assert plumbing["ran"] is False and "h2load" in plumbing["note"]
        return
    assert [w["name"] for w in plumbing["wrappers"]] == list(LADDER)
    for wrapper in plumbing["wrappers"]:  # quick mode: one ladder round, so its own difference
        assert wrapper["us_per_call"] == pytest.approx(wrapper["us_per_call_rounds"][0]), wrapper["name"]
        assert len(wrapper["us_per_call_rounds"]) == 1, wrapper["name"]
    for key in ("bare_rps_median", "service_rps_median", "handler_rps_median", "bare_cpu_us_median"):
        assert finite(plumbing[key]) and plumbing[key] > 0, key
    assert plumbing["ratio_of_medians"] == plumbing["service_rps_median"] / plumbing["bare_rps_median"]
    ratios = sorted(r["service_rps"] / r["bare_rps"] for r in plumbing["rounds"])
    assert len(ratios) == 2 and plumbing["ratio"] == pytest.approx((ratios[0] + ratios[1]) / 2)
    assert any("bare grpc.aio handler" in t["target"] for t in results["targets"])


@quick_mode
def test_serving_full_scale_rows(quick):
    results, _ = quick
    full = results["parts"]["serving"]["full_scale"]
    # Quick mode serves the scale part's largest (small) version, so the rows run and say so.
    assert full["ran"] is True and full["full_scale"] is False and full["notes"]
    assert 0.0 <= full["recall_at_10"] <= 1.0
    row = full["throughput"]
    assert row["inflight"] == 16 and row["workers"] == 1 and row["errors_total"] == 0
    assert finite(row["requests_per_s"]) and row["requests_per_s"] > 0
    workers = full["memory_workers"]["workers"]
    assert [w["worker"] for w in workers] == list(range(1, len(workers) + 1)) and len(workers) >= 2
    for memory in (*workers, full["memory_one_process"]):
        assert 0 < memory["uss"] <= memory["rss"]
    assert full["memory_workers"]["uss_beyond_first_max"] == max(w["uss"] for w in workers[1:])
    targets = [t for t in results["targets"] if t["part"] == "serving" and "full scale" in t["target"]]
    assert len(targets) == 2 and all(isinstance(t["met"], bool) for t in targets)


# -- known answers for the measuring tools (fast, no peers needed) ----------------------------


def test_percentiles_and_medians_interpolate_linearly():
    from bench.measures import latency_summary_ms, median, percentile

    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))
    assert median([3.0, float("nan"), 1.0, 2.0]) == 2.0
    summary = latency_summary_ms([0.001, 0.002, 0.003])
    assert summary["p50_ms"] == pytest.approx(2.0) and summary["count"] == 3


def test_grpc_frame_is_the_length_prefixed_message():
    from bench.h2load import grpc_frame

    assert grpc_frame(b"\x0a\x01\x32") == b"\x00\x00\x00\x00\x03\x0a\x01\x32"


def test_h2load_log_skips_the_warm_up_and_failed_requests(tmp_path):
    from bench.h2load import _log_latencies_s

    log = tmp_path / "h2load.log"
    # start (us since epoch), HTTP status, duration (us)
    log.write_text("1000000\t200\t500\n1400000\t200\t700\n1600000\t503\t900\n2100000\t200\t1100\n")
    assert _log_latencies_s(log) == ([0.0005, 0.0007, 0.0011], pytest.approx(1.1011))
    assert _log_latencies_s(log, skip_s=0.5) == ([0.0011], pytest.approx(0.6011))


def test_phase_seconds_and_epoch_rates_from_progress_events():
    from bench.scale import epoch_rates, phase_seconds

    events = [{"t": 0.0, "phase": "loading"}, {"t": 2.0, "phase": "training"},
              {"t": 5.0, "phase": "training", "epoch": 1, "samples_per_second": 10.0},
              {"t": 7.0, "phase": "training", "epoch": 2, "samples_per_second": 20.0},
              {"t": 8.0, "phase": "publishing"}]
    assert phase_seconds(events, total=10.0) == {"loading": 2.0, "training": 6.0, "publishing": 2.0}
    assert epoch_rates(events) == [10.0, 20.0]


def test_connections_against_workers_split_the_inflight_evenly():
    from bench.serving import connections_for

    assert [connections_for(1, n) for n in (1, 16, 64, 256)] == [1, 1, 1, 1]
    assert [connections_for(2, n) for n in (1, 16, 64, 256)] == [1, 8, 8, 8]
    assert connections_for(3, 18) == 9 and connections_for(2, 7) == 7 and connections_for(4, 10) == 10


def test_h2load_refuses_an_uneven_split(tmp_path):
    from bench import h2load

    with pytest.raises(ValueError, match="evenly"):
        h2load.run(1, "/m", tmp_path / "body", 10, tmp_path / "log", inflight=16, duration_s=1.0, connections=3)


def test_closed_and_open_loops_send_a_different_id_on_every_request():
    import asyncio

    from bench.grpc_load import run_closed, run_open

    payloads = [f"user{i}".encode() for i in range(50)]

    def recorder(sent: list[bytes]):
        async def call(payload: bytes, timeout: float) -> bytes:
            sent.append(payload)
            await asyncio.sleep(0)
            return b""
        return call

    sent: list[bytes] = []
    asyncio.run(run_closed(recorder(sent), payloads, inflight=8, duration_s=30.0, warm_up_s=0.0, max_requests=120,
                           timeout_s=1.0, first_index=10))
    assert len(sent) == 120
    assert sent[:50] == payloads[10:] + payloads[:10]  # one pass over every id, none twice, from --first-index
    assert sent[50:100] == sent[:50]
    sent = []
    asyncio.run(run_open(recorder(sent), payloads, rate=5000.0, duration_s=0.01, warm_up_s=0.0, max_requests=50,
                         max_inflight=100, timeout_s=1.0, first_index=3))
    assert sent == payloads[3:] + payloads[:3]


def test_a_row_is_the_median_of_its_runs_with_every_error_summed():
    from types import SimpleNamespace

    from bench.serving import _row

    results = iter([{"requests_per_s": 100.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "max_ms": 4.0,
                     "error_count": 0, "connections": 2},
                    {"requests_per_s": 300.0, "p50_ms": 5.0, "p90_ms": 6.0, "p99_ms": 9.0, "max_ms": 9.5,
                     "error_count": 2},
                    {"requests_per_s": 200.0, "p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 4.0, "max_ms": 5.0,
                     "grpc_errors": 1}])
    calls = []

    def python_run(rpc, **kwargs):
        calls.append((rpc, kwargs))
        return next(results)

    runs = SimpleNamespace(settings=SimpleNamespace(runs=3), workers=2, python_run=python_run)
    row = _row(runs, "python", "similar", rate=500)
    assert calls == [("similar", {"rate": 500})] * 3
    assert (row["rpc"], row["generator"], row["workers"], row["rate"], row["connections"]) == \
        ("similar", "python", 2, 500, 2)
    assert row["requests_per_s"] == 200.0 and row["p99_ms"] == 4.0 and row["max_ms"] == 5.0
    assert row["errors_total"] == 3 and row["runs"] == 3 and len(row["per_run"]) == 3
    assert "inflight" not in row and "swaps" not in row


@quick_mode
def test_history_rows(quick):
    results, _ = quick
    part = results["parts"]["history"]
    (dataset,) = part["fold_in"]  # quick: Last.fm 2K, one seed
    assert dataset["dataset"] == "lastfm-2k" and dataset["seeds"] == 1 and dataset["heldout_users"] > 0
    for key in ("fold_in_bpr_hr10", "in_model_hr10", "popularity_hr10"):
        assert finite(dataset[key]) and 0.0 <= dataset[key] <= 1.0, key
    speed = part["speed"]
    assert speed["artists"] == 17_632 and speed["history_length"] == 100
    assert 0 < speed["fit_p50_ms"] and 0 < speed["history_p50_ms"] and finite(speed["batch_speedup"])
    for label in ("lists", "searched"):
        assert speed["batch"][label]["batch_of_100_rps"] > 0
    assert sum(t["part"] == "history" for t in results["targets"]) == 3


@quick_mode
def test_live_rows(quick):
    results, _ = quick
    part = results["parts"]["live"]
    stores = part["record"]["stores"]
    assert "sqlite" in stores or part["record"]["notes"]
    for store in stores.values():
        assert finite(store["plays_per_s"]) and store["plays_per_s"] > 0
        assert all(run["plays"] % part["record"]["batch"] == 0 for run in store["per_run"])
    fresh = part["freshness"]
    assert fresh["samples"] == 30 and fresh["gave_up"] == 0 and 0 < fresh["p50_ms"] <= fresh["p99_ms"]
    writing = part["writing"]
    if writing["ran"]:
        assert finite(writing["ratio"]) and writing["errors_total"] == 0 and writing["write_plays_per_s"] > 0
    groups = part["quality"]["groups"]
    assert set(groups) == {"known", "new"} and part["quality"]["seeds"] == 1
    for row in groups.values():
        for key in ("stale_hr10", "live_hr10", "retrain_hr10"):
            assert 0.0 <= row[key] <= 1.0, key
        assert row["users"] > 0
    assert groups["new"]["stale_hr10"] == 0.0  # the stale version does not know them
    live_targets = [t for t in results["targets"] if t["part"] == "live"]
    # Every target judged, except the throughput while writing where h2load is not installed.
    judged = [t for t in live_targets if writing["ran"] or "while taking" not in t["target"]]
    assert len(live_targets) == 5 and len(judged) == 5 - (not writing["ran"])
    assert all(isinstance(t["met"], bool) for t in judged)


def test_live_split_keeps_targets_and_new_listeners_out_of_training():
    import numpy as np

    from bench.live import split_plays

    class Data:
        num_users = 40
        users = np.repeat(np.arange(40), 10)

    train, retrain, cases = split_plays(Data, seed=0, max_users=30)
    assert len(cases) == 30 and sum(new for *_, new in cases) == 3
    assert not train[Data.users >= 30].any() and not retrain[Data.users >= 30].any()
    for user, target, streamed, new in cases:
        rows = np.flatnonzero(Data.users == user)
        assert not train[target] and not retrain[target] and target not in streamed
        assert not train[streamed].any() and retrain[streamed].all()
        assert streamed.size == (9 if new else 1)  # new: all but the target; known: 20% less the target
        assert train[rows].sum() == (0 if new else 8)


def test_history_section_and_targets_from_a_part():
    from bench import report

    run = {"seed": 0, "heldout_users": 189, "history_length_median": 45.0, "fold_in_bpr_hr10": 0.2,
           "in_model_hr10": 0.21, "popularity_hr10": 0.09}
    dataset = {"dataset": "lastfm-2k", "seeds": 1, "heldout_users": 189, "fold_in_bpr_hr10": 0.2,
               "in_model_hr10": 0.21, "popularity_hr10": 0.09,
               "fold_in_bpr_fit_ms_p50": 0.4, "vs_in_model": 0.2 / 0.21, "vs_popularity": 0.2 / 0.09,
               "per_run": [run]}
    speed = {"artists": 17_632, "factors": 64, "history_length": 100, "history_p50_ms": 2.5, "fit_p50_ms": 1.0,
             "batch_speedup": 12.0, "batch": {"lists": {"single_sequential_rps": 1000, "batch_of_100_rps": 12000}}}
    results = {"quick": False, "machine": {"cpu_cores": 2},
               "parts": {"history": {"fold_in": [dataset], "speed": speed, "notes": []}}}
    by = {t["target"].split(":")[0].split(" p50")[0]: t for t in report.targets(results) if t["part"] == "history"}
    assert by["lastfm-2k"]["met"] is True and "0.95x in-model" in by["lastfm-2k"]["measured"]
    assert by["RecommendForHistory"]["met"] is False and "2.500 ms" in by["RecommendForHistory"]["measured"]
    assert next(t for t in report.targets(results) if "BatchRecommend" in t["target"])["met"] is True
    markdown = report.markdown(results, None)
    assert "## 5. New listeners" in markdown and "| lastfm-2k | 1 (189 users) | 0.2000 |" in markdown


def test_report_reads_the_cores_and_says_when_full_scale_did_not_run():
    from bench import report

    row = {"rpc": "recommend", "generator": "h2load", "workers": 1, "inflight": 16, "requests_per_s": 3000.0,
           "p50_ms": 4.0, "p99_ms": 9.0, "server_cpu_ms_per_request": 0.4, "server_main_thread_ms_per_request": 0.3,
           "server_main_thread_busy": 0.9, "server_cores_busy": 1.2,
           "client_cpu_ms_per_request": 0.05, "errors_total": 0, "runs": 1}
    results = {"quick": False, "machine": {"cpu_cores": 8},
               "parts": {"serving": {"workers": [1], "closed_loop": [row], "open_loop": [], "swaps": [],
                                     "full_scale": {"ran": False, "note": "the scale part did not run"}}}}
    targets = report.targets(results)
    h2load = next(t for t in targets if t["target"].startswith(">= 6,000 Recommend/s"))
    assert h2load["met"] is False and "8 cores" in h2load["limit"] and "2 cores" not in h2load["limit"]
    skipped = [t for t in targets if t["part"] == "serving" and "full scale" in t["target"]]
    assert len(skipped) == 2 and all(t["met"] is None and "did not run" in t["measured"] for t in skipped)
    assert "not measured" in report.markdown(results, None)
    assert "[SKIPPED]" in report.summary(results)


def test_process_memory_of_this_process():
    import os

    from bench.measures import process_memory_bytes

    memory = process_memory_bytes(os.getpid())
    assert 0 < memory["uss"] <= memory["rss"] and 0 < memory["pss"] <= memory["rss"]


def test_the_bare_plumbing_server_answers_an_empty_recommend(tmp_path):
    import grpc

    from bench.grpc_load import METHODS, serialized_requests
    from bench.serving import ServerProcess

    server = ServerProcess([sys.executable, "-m", "bench.plumbing", "--serve", "bare", "--port", "0"],
                           tmp_path / "bare.log").start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            raw = channel.unary_unary(METHODS["recommend"])(serialized_requests("recommend", ["anyone"])[0], timeout=10)
            assert raw == b""  # RecommendResponse(): no fields
            with pytest.raises(grpc.RpcError) as error:  # only Recommend is implemented
                channel.unary_unary(METHODS["similar"])(serialized_requests("similar", ["anyone"])[0], timeout=10)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop()


def test_process_tree_sums_the_children():
    import os

    from bench.measures import process_tree, tree_cpu_seconds

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tree = process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        assert tree_cpu_seconds(os.getpid()) >= 0.0
    finally:
        child.kill()
        child.wait()
