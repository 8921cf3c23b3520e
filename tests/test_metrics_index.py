"""The index service's /metrics, scraped over HTTP from real servers and parsed with
prometheus_client's parser: RPC counts by method and code match the calls made, the version
gauges follow a swap, refusals are counted by reason, precomputed answers are counted; with
``--workers 2`` the supervisor serves the sum of both workers on one port."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from index_service.app import IndexServiceApp, IndexServiceConfig
from musicrec.rpc.server import ServerConfig
from musicrec.v1 import index_pb2, index_pb2_grpc
from service_processes import PYTHON, ServiceProcess, child_pids

WAIT_S = 30.0  # hang protection only
INDEX = "musicrec.v1.IndexService"
_METRICS_URL = re.compile(r"metrics on (http://\S+/metrics)")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of ``url``'s exposition: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape_until(url: str, ready, what: str) -> dict:
    """Scrape ``url`` until ``ready(samples)`` (RPC counts reach the metrics about once a second)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        samples = scrape(url)
        if ready(samples):
            return samples
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        time.sleep(0.1)


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def handled(samples: dict, method: str, code: str) -> float:
    return value(samples, "musicrec_rpc_handled_total", service=INDEX, method=method, code=code) or 0.0


async def eventually(check, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.05)


def test_rpcs_versions_and_refusals_are_counted(models_dir, publish, tiny_artifacts, tmp_path):
    publish(tiny_artifacts, metrics={"hit_rate_at_10": 0.5, "ndcg_at_10": 0.25, "auc": 0.9})

    async def main():
        app = IndexServiceApp(IndexServiceConfig(models_dir=models_dir, server=ServerConfig(port=0),
                                                 poll_interval_s=0.02, metrics_port=0))
        await app.start()
        url = app.metrics_endpoint.url
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                stub = index_pb2_grpc.IndexServiceStub(channel)

                async def serving(version: int) -> bool:
                    info = await stub.GetIndexInfo(index_pb2.GetIndexInfoRequest())
                    return info.model.version == version

                await eventually(lambda: serving(1), "version 1 served")
                for _ in range(3):
                    await stub.Recommend(index_pb2.RecommendRequest(user_id="u0", k=2))
                for _ in range(2):
                    await stub.SimilarArtists(index_pb2.SimilarArtistsRequest(artist_id="a3", k=2))
                for request, code in ((index_pb2.RecommendRequest(user_id="nobody"), grpc.StatusCode.NOT_FOUND),
                                      (index_pb2.RecommendRequest(user_id="nobody"), grpc.StatusCode.NOT_FOUND),
                                      (index_pb2.RecommendRequest(user_id="u0", k=-1),
                                       grpc.StatusCode.INVALID_ARGUMENT)):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.Recommend(request)
                    assert info.value.code() == code
                model = app.holder.current.model
                from_lists = model.recommend_top is not None, model.similar_top is not None

                async def flushed():
                    samples = await asyncio.to_thread(scrape, url)
                    expected = 3 * from_lists[0] + 2 * from_lists[1]
                    done = (value(samples, "musicrec_index_precomputed_answers_total") == expected
                            and handled(samples, "Recommend", "INVALID_ARGUMENT") == 1)
                    return samples if done else None

                samples = await eventually(flushed, "the calls reach the metrics")
                assert handled(samples, "Recommend", "OK") == 3
                assert handled(samples, "Recommend", "NOT_FOUND") == 2
                assert handled(samples, "Recommend", "INVALID_ARGUMENT") == 1
                assert handled(samples, "SimilarArtists", "OK") == 2
                assert value(samples, "musicrec_rpc_handling_seconds_count", service=INDEX, method="Recommend") == 6
                assert value(samples, "musicrec_rpc_handling_seconds_bucket", service=INDEX, method="Recommend",
                             le="+Inf") == 6
                assert value(samples, "musicrec_rpc_in_flight", service=INDEX, method="Recommend") == 0
                assert value(samples, "musicrec_index_model_version") == 1
                assert value(samples, "musicrec_index_model_hit_rate_at_10") == 0.5
                assert value(samples, "musicrec_index_model_ndcg_at_10") == 0.25
                assert value(samples, "musicrec_index_versions_loaded_total") == 1
                assert value(samples, "musicrec_index_model_load_seconds") > 0
                assert value(samples, "musicrec_index_last_swap_timestamp_seconds") > 0
                method = model.recommend_params.method
                assert value(samples, "musicrec_index_search_method", kind="recommend", method=method) == 1
                assert value(samples, "process_resident_memory_bytes") > 0
                assert value(samples, "musicrec_index_versions_refused_total", reason="invalid") == 0

                # A corrupt version 2 is refused; a good version 3 moves the gauges.
                staging = tmp_path / "staging"
                publish(tiny_artifacts, into=staging, min_version=2)
                (staging / "2" / "manifest.json").unlink()
                os.rename(staging / "2", models_dir / "2")

                async def refused() -> bool:
                    info = await stub.GetIndexInfo(index_pb2.GetIndexInfoRequest())
                    return [r.version for r in info.rejected_versions] == [2]

                await eventually(refused, "version 2 refused")
                publish(tiny_artifacts, min_version=3, metrics={"hit_rate_at_10": 0.75, "ndcg_at_10": 0.5})
                await eventually(lambda: serving(3), "version 3 served")
                samples = await asyncio.to_thread(scrape, url)
                assert value(samples, "musicrec_index_model_version") == 3
                assert value(samples, "musicrec_index_model_hit_rate_at_10") == 0.75
                assert value(samples, "musicrec_index_versions_loaded_total") == 2
                assert value(samples, "musicrec_index_versions_refused_total", reason="invalid") == 1
                assert handled(samples, "GetIndexInfo", "OK") >= 2
        finally:
            await app.stop(0)

    asyncio.run(main())


@pytest.mark.slow
def test_workers_metrics_are_served_summed_on_one_port(models_dir, publish, tiny_artifacts, tmp_path):
    publish(tiny_artifacts)
    argv = [PYTHON, "-m", "index_service", "--models-dir", str(models_dir), "--port", "0", "--poll-interval", "0.2",
            "--workers", "2", "--metrics-port", "0"]
    service = ServiceProcess("index-workers", argv, tmp_path / "index.log").start()
    try:
        url = _METRICS_URL.search(service.log()).group(1)
        metrics_dir = Path(re.search(r"workers record metrics in (\S+)", service.log()).group(1))
        assert metrics_dir.is_dir()

        def versions() -> list[float]:
            return [v for (name, _), v in scrape(url).items() if name == "musicrec_index_model_version"]

        async def both_loaded():
            return await asyncio.to_thread(versions) == [1.0, 1.0]  # one series per live worker (label pid)

        asyncio.run(eventually(both_loaded, "both workers serving version 1"))
        calls = 0

        async def load():
            nonlocal calls
            # Several channels (connections), so the kernel spreads them over both workers.
            for _ in range(6):
                async with grpc.aio.insecure_channel(service.address,
                                                     options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                    stub = index_pb2_grpc.IndexServiceStub(channel)
                    for _ in range(5):
                        await stub.Recommend(index_pb2.RecommendRequest(user_id="u0", k=2), wait_for_ready=True)
                        calls += 1

        asyncio.run(asyncio.wait_for(load(), 120))
        assert calls == 30
        samples = scrape_until(url, lambda s: handled(s, "Recommend", "OK") >= calls, "30 calls counted")
        assert handled(samples, "Recommend", "OK") == calls

        # A worker killed and restarted: its calls stay counted, its version series goes with it.
        def version_pids() -> set[str]:
            return {dict(labels)["pid"] for (name, labels) in scrape(url) if name == "musicrec_index_model_version"}

        before = version_pids()
        victim = child_pids(service.process.pid)[0]
        os.kill(victim, signal.SIGKILL)

        async def replaced():
            pids = await asyncio.to_thread(version_pids)
            return len(pids) == 2 and str(victim) not in pids and pids != before

        asyncio.run(eventually(replaced, "the killed worker replaced in the metrics"))
        assert handled(scrape(url), "Recommend", "OK") == calls
        workers = {dict(labels)["worker"] for (name, labels) in samples if name == "process_resident_memory_bytes"}
        assert workers == {"0", "1", "2"}
    finally:
        assert service.stop() == 0, service.tail()
    assert not metrics_dir.exists()  # the run's directory is removed at exit


def test_malformed_and_failing_calls_are_counted_with_their_codes(models_dir, publish, tiny_artifacts):
    """Bytes that do not parse: INVALID_ARGUMENT; a handler that raises: INTERNAL; both counted."""
    publish(tiny_artifacts)

    async def main():
        app = IndexServiceApp(IndexServiceConfig(models_dir=models_dir, server=ServerConfig(port=0),
                                                 poll_interval_s=0.02, metrics_port=0))
        await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                raw = channel.unary_unary(f"/{INDEX}/Recommend")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await raw(b"\xff\xff\xff")
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

                stub = index_pb2_grpc.IndexServiceStub(channel)

                async def serving() -> bool:
                    return (await stub.GetIndexInfo(index_pb2.GetIndexInfoRequest())).model.version == 1

                await eventually(serving, "version 1 served")

                def broken(*args, **kwargs):
                    raise RuntimeError("boom")

                app.holder.current.model.similar = broken
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.SimilarArtists(index_pb2.SimilarArtistsRequest(artist_id="a3"))
                assert info.value.code() == grpc.StatusCode.INTERNAL

            def counted():
                samples = scrape(app.metrics_endpoint.url)
                done = handled(samples, "Recommend", "INVALID_ARGUMENT") == 1 and \
                    handled(samples, "SimilarArtists", "INTERNAL") == 1
                return samples if done else None

            samples = await eventually(lambda: asyncio.to_thread(counted), "both calls counted")
            assert handled(samples, "Recommend", "OK") == 0 and handled(samples, "SimilarArtists", "OK") == 0
        finally:
            await app.stop(0)

    asyncio.run(main())
