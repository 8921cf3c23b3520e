"""docs/benchmarks.md is what bench/report.py renders from docs/benchmarks.json, byte for byte,
and the generated files carry no checkout paths or port numbers."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``bench`` ships with the repository, not the wheel
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402

DOCS = REPO / "docs"


def committed() -> dict:
    return json.loads((DOCS / "benchmarks.json").read_text(encoding="utf-8"))


def test_the_committed_markdown_is_the_committed_json_rendered():
    rendered = report.markdown(committed(), plot_note=None)
    assert rendered == (DOCS / "benchmarks.md").read_text(encoding="utf-8"), (
        "docs/benchmarks.md differs from bench/report.py's rendering of docs/benchmarks.json: edit "
        "bench/report_template.md (never the .md) and run `python -m bench.report`")


def test_the_committed_files_hold_no_absolute_paths_or_ports():
    for name in ("benchmarks.json", "benchmarks.md"):
        text = (DOCS / name).read_text(encoding="utf-8")
        assert not re.search(r"(?<![\w.~-])/(work|home|tmp|root|Users)/", text), name
        assert not re.search(r"127\.0\.0\.1:\d", text), name


def test_portable_strips_the_checkout_and_the_ports():
    root = Path("/srv/checkout/musicrec")
    results = {"cmd": f"h2load -d {root}/bench/results/tmp/work/r.body http://127.0.0.1:41234/x",
               "rows": [{"data": f"{root.parent}/shared/data", "other": "/srv/checkoutmusicrec/a", "n": 3}]}
    assert report.portable(results, root) == {
        "cmd": "h2load -d bench/results/tmp/work/r.body http://127.0.0.1:<port>/x",
        "rows": [{"data": "../shared/data", "other": "/srv/checkoutmusicrec/a", "n": 3}]}


def test_a_part_without_results_leaves_its_section_out_and_every_placeholder_is_filled():
    results = committed()
    results["parts"] = {k: v for k, v in results["parts"].items() if k != "ann"}
    text = report.markdown(results, plot_note=None)
    assert "## 3. Nearest-neighbour search" not in text and "## 4. Serving over gRPC" in text
    assert "{{" not in text and "<!--" not in text


def test_the_plumbing_section_renders_when_the_serving_part_has_it():
    results = committed()
    results["parts"]["serving"].pop("plumbing", None)
    assert "Plumbing:" not in report.markdown(results, None)  # absent key: nothing
    results["parts"]["serving"]["plumbing"] = {
        "rpc": "Recommend", "inflight": 16, "target": 0.85,
        "rounds": [{"bare_rps": 9000.0, "service_rps": 8100.0}, {"bare_rps": 10000.0, "service_rps": 8000.0}],
        "bare_rps_median": 9500.0, "service_rps_median": 8050.0, "ratio": 0.9,  # recorded; recomputed from rounds
        "service_cpu_us_median": 120.0,
        "wrappers": [{"name": "errors", "rps_median": 9300.0, "us_per_call": 2.5},
                     {"name": "metrics", "rps_median": 9000.0, "us_per_call": 7.2}]}
    text = report.markdown(results, None)
    assert "### Plumbing: the index service against a bare grpc.aio handler" in text
    assert "| 2 | 10,000 | 8,000 | 0.80x |" in text and "| errors | 9,300 | 2.50 |" in text
    plumbing = next(t for t in report.targets(results) if "bare grpc.aio" in t["target"])
    # The median of the rounds' ratios (0.90x and 0.80x): 0.85x, met.
    assert plumbing["met"] is True and plumbing["measured"] == (
        "0.85x, the median of 2 alternated rounds' ratios (rounds 0.80x-0.90x; medians 8,050/s vs 9,500/s)")
    # A load that came in one round moves both of its runs: the paired ratio sees through it, the
    # ratio of the medians (4,600/s against 9,000/s: 0.51x) does not.
    results["parts"]["serving"]["plumbing"]["rounds"] = [
        {"bare_rps": 10000.0, "service_rps": 9000.0}, {"bare_rps": 5000.0, "service_rps": 4600.0},
        {"bare_rps": 9000.0, "service_rps": 4000.0}]
    plumbing = next(t for t in report.targets(results) if "bare grpc.aio" in t["target"])
    assert plumbing["met"] is True and plumbing["measured"].startswith("0.90x, the median of 3 alternated rounds'")
    metrics = next(t for t in report.targets(results) if "Prometheus" in t["target"])
    assert metrics["met"] is False and metrics["measured"] == "7.2 us of 120.0 us per call (6%)"
    results["parts"]["serving"]["plumbing"] = {"ran": False, "note": "h2load is not installed"}
    assert "Plumbing not measured in this run: h2load is not installed." in report.markdown(results, None)
    skipped = next(t for t in report.targets(results) if "bare grpc.aio" in t["target"])
    assert skipped["met"] is None and skipped["measured"] == "h2load is not installed"


LIVE = {"record": {"batch": 100, "command": "python -m index_service --events sqlite:///x.db", "notes": [],
                   "stores": {"sqlite": {"plays_per_s": 21000.0, "per_run": [{"plays_per_s": 20000.0},
                                                                            {"plays_per_s": 22000.0}]},
                              "postgresql": {"plays_per_s": 9000.0, "per_run": [{"plays_per_s": 9000.0}]}}},
        "freshness": {"samples": 30, "p50_ms": 50.0, "p90_ms": 98.0, "p99_ms": 1200.0, "max_ms": 1300.0,
                      "gave_up": 0, "give_up_s": 10.0},
        "writing": {"ran": True, "inflight": 16, "write_rate": 1000, "without_requests_per_s": 4000.0,
                    "with_requests_per_s": 3800.0, "ratio": 0.95, "errors_total": 0, "write_plays_per_s": 1003.0},
        "quality": {"ran": True, "dataset": "lastfm-2k", "seeds": 1, "groups": {
            "known": {"stale_hr10": 0.06, "live_hr10": 0.09, "retrain_hr10": 0.09, "users": 268, "live_vs_retrain": 1.0},
            "new": {"stale_hr10": 0.1, "live_hr10": 0.1, "retrain_hr10": 0.1, "users": 30, "live_vs_retrain": 1.0}}}}


def test_the_live_section_and_its_targets_render():
    results = committed()
    results["parts"]["live"] = LIVE
    text = report.markdown(results, None)
    assert "## 6. Live plays (RecordPlays)" in text
    assert "| sqlite | 21,000 | 20,000, 22,000 |" in text and "| known (268) | 0.0600 | 0.0900 | 0.0900 | 1.00x |" in text
    assert "p50 50 ms, p90 98 ms, p99 1,200 ms, max 1,300 ms (0 not visible within 10 s)" in text
    assert "3,800 Recommend/s with 1,003 plays/s recorded, 4,000 without (0.95x); 0 errors" in text
    live = {t["target"].split(":")[0].split(" >=")[0]: t for t in report.targets(results) if t["part"] == "live"}
    assert live["RecordPlays"]["met"] is True and live["RecordPlays"]["measured"] == \
        "21,000 plays/s (PostgreSQL: 9,000)"
    assert live["freshness"]["met"] is False and "p99 1,200 ms (30 samples)" in live["freshness"]["measured"]
    assert live["Recommend throughput while taking 1,000 plays/s"]["met"] is True
    groups = {t["target"].split(":")[0].split(", ")[1]: t["met"] for t in live.values() if "listeners" in t["target"]}
    assert groups == {"known listeners": True, "new listeners": False}  # new: live not above stale
    results["parts"]["live"] = dict(LIVE, writing={"ran": False, "note": "h2load is not installed"},
                                    quality={"ran": False, "note": "no lastfm-2k"})
    text = report.markdown(results, None)
    assert "Serving while writing not measured: h2load is not installed." in text
    assert "Live quality not measured: no lastfm-2k." in text
    skipped = [t for t in report.targets(results) if t["part"] == "live" and t["met"] is None]
    assert [t["measured"] for t in skipped] == ["h2load is not installed", "no lastfm-2k"]


def test_a_warm_run_at_fewer_than_the_default_epochs_is_shown_without_a_target():
    results = committed()
    datasets = results["parts"]["warm"]["datasets"]
    full = [ds for ds in datasets if ds["dataset"] == "synthetic:full"]
    assert [ds["default_epochs"] for ds in full] == [True, False]  # the committed run has both
    text = report.markdown(results, None)
    assert "synthetic:full, 40 epochs cold (the trainer's default):" in text
    assert "synthetic:full, 3 epochs cold (the scale part's, not the default):" in text
    warm = [t for t in report.targets(results) if t["part"] == "warm" and t["target"].startswith("synthetic:full")]
    assert len(warm) == 1 and "2 epochs" in warm[0]["measured"]  # the default-epochs run only
    short = full[1]
    fixed = short["loading_s"] + short["evaluating_s"] + short["publishing_s"]
    assert (f"loading, evaluating and publishing, warm: {fixed:.1f} s, "
            f"{fixed / short['cold_wall_s']:.0%} of the cold wall time") in text


def test_parts_run_on_different_machines_are_named_with_their_machine():
    results = committed()
    intel = {"cpu_model": "Intel Xeon", "cpu_cores": 2, "memory_gib": 23.6, "kernel": "6.1", "blas": ["SkylakeX"]}
    amd = {**intel, "cpu_model": "AMD EPYC", "blas": ["Haswell"]}
    results["part_machine"] = {"quality": intel, "scale": intel, "warm": amd}
    text = report.markdown(results, plot_note=None)
    assert "**The parts of this file ran on 2 different machines**" in text
    assert "- quality, scale: Intel Xeon, 2 cores, 23.6 GiB, Linux 6.1, BLAS kernels SkylakeX" in text
    assert "- warm: AMD EPYC, 2 cores, 23.6 GiB, Linux 6.1, BLAS kernels Haswell" in text
    results["part_machine"] = {"quality": intel, "warm": intel}
    assert "different machines" not in report.markdown(results, plot_note=None)


def test_a_part_rerun_alone_keeps_the_machine_the_other_parts_ran_on(tmp_path):
    from bench.__main__ import _merge_previous

    old = {"quick": False, "machine": {"cpu_model": "Intel Xeon", "cpu_cores": 2, "blas": [{"architecture": "SkylakeX"}]},
           "parts": {"quality": {}, "warm": {}}}
    (tmp_path / "benchmarks.json").write_text(json.dumps(old), encoding="utf-8")
    amd = {"cpu_model": "AMD EPYC", "cpu_cores": 2, "memory_gib": None, "kernel": None, "blas": ["Haswell"]}
    now = {"quick": False, "machine": {"cpu_model": "AMD EPYC"}, "parts": {"warm": {}}, "errors": {},
           "load_average": {}, "part_seconds": {}, "part_finished_at": {}, "part_machine": {"warm": amd}}
    merged = _merge_previous(tmp_path / "benchmarks.json", False, now)
    assert merged["part_machine"]["warm"] == amd
    assert merged["part_machine"]["quality"]["cpu_model"] == "Intel Xeon"
    assert merged["part_machine"]["quality"]["blas"] == ["SkylakeX"]
