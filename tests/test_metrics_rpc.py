"""RpcMetrics' exposition: calls counted in plain numbers reach /metrics as the handled counter and
the handling-time histogram (cumulative buckets, count, sum) after a flush, and the supervisor's
aggregate over multiprocess files shows the same histogram summed over workers."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from musicrec.metrics import RpcMetrics, new_registry

METHOD = "/musicrec.v1.IndexService/Recommend"
LABELS = {"service": "musicrec.v1.IndexService", "method": "Recommend"}


def samples(registry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels) -> float:
    return found[(name, tuple(sorted({**LABELS, **labels}.items())))]


def record(metrics: RpcMetrics) -> None:
    recorder = metrics.method(METHOD)
    for code, seconds in (("OK", 0.0002), ("OK", 0.0002), ("NOT_FOUND", 0.003)):
        recorder.started()
        recorder.finished(code, seconds)
    recorder.started()  # one still in flight


def test_histogram_and_counts_after_flush():
    metrics = RpcMetrics(new_registry(process_metrics=False))
    record(metrics)
    assert value(samples(metrics.registry), "musicrec_rpc_handling_seconds_count") == 0  # until the flush
    metrics.flush()
    found = samples(metrics.registry)
    assert value(found, "musicrec_rpc_handled_total", code="OK") == 2
    assert value(found, "musicrec_rpc_handled_total", code="NOT_FOUND") == 1
    assert value(found, "musicrec_rpc_handling_seconds_bucket", le="0.0001") == 0
    assert value(found, "musicrec_rpc_handling_seconds_bucket", le="0.00025") == 2
    assert value(found, "musicrec_rpc_handling_seconds_bucket", le="0.0025") == 2
    assert value(found, "musicrec_rpc_handling_seconds_bucket", le="0.005") == 3
    assert value(found, "musicrec_rpc_handling_seconds_bucket", le="+Inf") == 3
    assert value(found, "musicrec_rpc_handling_seconds_count") == 3
    assert value(found, "musicrec_rpc_handling_seconds_sum") == pytest.approx(0.0034)
    assert value(found, "musicrec_rpc_in_flight") == 1
    # The counters carrying the histogram are not exposed themselves.
    assert not any("bucket_calls" in name or "seconds_time" in name for name, _ in found)
    metrics.flush()  # nothing new: the same figures
    assert value(samples(metrics.registry), "musicrec_rpc_handling_seconds_count") == 3


def test_also_on_flush_runs_with_each_flush():
    metrics = RpcMetrics(new_registry(process_metrics=False))
    flushed = []
    metrics.also_on_flush(lambda: flushed.append(1))
    metrics.flush()
    metrics.flush()
    assert flushed == [1, 1]


WORKER = """
import sys
from musicrec.metrics import RpcMetrics, new_registry
metrics = RpcMetrics(new_registry(process_metrics=False))
recorder = metrics.method("/musicrec.v1.IndexService/Recommend")
recorder.started(); recorder.finished("OK", 0.0002)
metrics.flush()
"""


def test_multiprocess_aggregate_sums_the_histogram_over_workers(tmp_path):
    import os

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, timeout=60)
    from musicrec.metrics import multiprocess_registry

    found = samples(multiprocess_registry(str(tmp_path), lambda: []))
    assert value(found, "musicrec_rpc_handled_total", code="OK") == 2
    assert value(found, "musicrec_rpc_handling_seconds_bucket", le="0.00025") == 2
    assert value(found, "musicrec_rpc_handling_seconds_count") == 2
    assert value(found, "musicrec_rpc_handling_seconds_sum") == pytest.approx(0.0004)


def test_a_worker_file_not_yet_sized_does_not_fail_the_scrape(tmp_path):
    """A restarting worker's file exists at 0 bytes before prometheus_client sizes it: a scrape at
    that moment must still answer, with every other worker's samples."""
    import os

    from prometheus_client import generate_latest

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, timeout=60)
    (tmp_path / "counter_999999.db").touch()
    (tmp_path / "gauge_livesum_999999.db").touch()
    from musicrec.metrics import multiprocess_registry

    registry = multiprocess_registry(str(tmp_path), lambda: [])
    assert b"musicrec_rpc_handled_total" in generate_latest(registry)
    found = samples(registry)
    assert value(found, "musicrec_rpc_handled_total", code="OK") == 1
    assert value(found, "musicrec_rpc_handling_seconds_count") == 1
