"""The index service restarted under load: clients configured with the shipped service config
(``musicrec.rpc.channel_config.channel_options``: retries for UNAVAILABLE, plus
``wait_for_ready``) see no failure, and each restarted process comes back on the newest *valid*
version on disk.

Restarts alternate a graceful stop (SIGTERM) and a crash (SIGKILL). While the service is down a
new version and a corrupt newer one are published, so each restart must pick the good one. The
replacement process binds the same port (the clients' target does not change).

Why these retry settings: while the process is down the channel cannot connect;
``wait_for_ready`` makes a call wait for the channel instead of failing at once. Once it is back,
the first calls can still meet UNAVAILABLE (a call cut by the crash, or "no model version is
loaded yet" in the moment between binding and loading), which the retry policy repeats with
backoff. And a graceful stop under load cancels the calls gRPC core has received but not yet
handed to the application (they never ran): the client sees CANCELLED. The index service is
read-only, so its clients also retry CANCELLED (``IDEMPOTENT_RETRYABLE_CODES``). A second set of
clients retrying UNAVAILABLE only runs alongside as the control: it may fail with CANCELLED, and
with nothing else; its count is printed and recorded in docs/reliability.md.
"""

from __future__ import annotations

import os
import signal

import pytest

from model_store import list_versions
from musicrec.rpc.channel_config import DEFAULT_RETRYABLE_CODES
from test_faults_harness import Hammer, IndexClient, index_process, marked_model, publish_model

pytestmark = pytest.mark.slow

RESTARTS = ["SIGTERM", "SIGKILL", "SIGTERM", "SIGKILL"]


def corrupt_newer(models, tmp, version: int) -> None:
    """Put a version ``version`` on disk whose checksums do not match."""
    staging = tmp / f"staging-{version}"
    publish_model(staging, marked_model(version), min_version=version)
    path = staging / str(version) / "artist_factors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.rename(staging / str(version), models / str(version))


def test_restarts_under_load_fail_no_request_and_come_back_on_the_newest_valid_version(tmp_path):
    models = tmp_path / "models"
    publish_model(models, marked_model(1))
    index = index_process(tmp_path, models, name="index-0").start()
    port = index.port
    try:
        with IndexClient(index.address) as probe, \
                Hammer(index.address, 2, wait_for_ready=True) as hammer, \
                Hammer(index.address, 1, wait_for_ready=True, retryable_codes=DEFAULT_RETRYABLE_CODES) as control:
            probe.wait_serving(1)
            hammer.wait_for_more(300, "load on the first process")
            for number, how in enumerate(RESTARTS, start=1):
                if how == "SIGTERM":
                    assert index.stop() == 0, index.tail()
                else:
                    index.process.send_signal(signal.SIGKILL)
                    assert index.process.wait(60) == -signal.SIGKILL
                # While it is down: a good version, then a corrupt newer one.
                good = max(list_versions(models)) + 1
                served = publish_model(models, marked_model(good)).model_version
                assert served == good
                corrupt_newer(models, tmp_path, served + 1)
                index = index_process(tmp_path, models, name=f"index-{number}", port=port).start()
                probe.wait_serving(served)
                assert (served + 1) in probe.rejected()
                hammer.wait_for_more(300, f"load on process {number}")
        print(f"\nrestarts: {len(RESTARTS)} ({', '.join(RESTARTS)}), {hammer.total} requests, "
              f"{len(hammer.errors)} failed; versions answered {sorted(hammer.versions)}; control clients "
              f"(UNAVAILABLE only): {control.total} requests, {len(control.errors)} failed {sorted(set(control.errors))}")
        assert hammer.errors == [], hammer.errors[:5]
        assert {error.split(":")[0] for error in control.errors} <= {"StatusCode.CANCELLED"}, control.errors[:5]
        assert len(hammer.versions) == len(RESTARTS) + 1
    finally:
        if index.process.poll() is None:
            assert index.stop() == 0, index.tail()


def test_graceful_stop_under_heavy_load_cancels_only_calls_that_never_ran(tmp_path):
    """In process, 24 concurrent clients (half retrying UNAVAILABLE only, half also CANCELLED)
    hammer the index while it stops gracefully. Every call a handler started completes; the calls
    gRPC core had received but not dispatched are cancelled, and only the first half sees them
    (counted: the figure in docs/reliability.md). Once the port is closed calls fail to connect
    (UNAVAILABLE): the clients here do not wait for a server that will not come back."""
    import asyncio

    import grpc

    from index_service.app import IndexServiceApp, IndexServiceConfig
    from musicrec.rpc.channel_config import IDEMPOTENT_RETRYABLE_CODES, channel_options
    from musicrec.rpc.server import ServerConfig
    from musicrec.v1 import index_pb2, index_pb2_grpc
    from test_faults_harness import INDEX_SERVICE, marked_top

    models = tmp_path / "models"
    publish_model(models, marked_model(1))

    async def main():
        app = IndexServiceApp(IndexServiceConfig(models_dir=models, server=ServerConfig(port=0),
                                                 poll_interval_s=0.02))
        handled = {"started": 0, "finished": 0}
        original = app.servicer.Recommend

        async def counted(request, context):
            handled["started"] += 1
            response = await original(request, context)
            handled["finished"] += 1
            return response

        app.servicer.Recommend = counted  # before start(): the server binds the methods then
        await app.start()
        while app.holder.current is None:
            await asyncio.sleep(0.02)
        stopped = asyncio.Event()
        results = {"default": [], "idempotent": []}

        async def client(group: str, codes) -> None:
            options = channel_options([INDEX_SERVICE], retryable_codes=codes)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=options) as channel:
                stub = index_pb2_grpc.IndexServiceStub(channel)
                while not stopped.is_set():
                    try:
                        response = await stub.Recommend(index_pb2.RecommendRequest(user_id="u1", k=1,
                                                                                   include_seen=True), timeout=30)
                        assert response.artists[0].artist_id == marked_top(1)
                        results[group].append("OK")
                    except grpc.aio.AioRpcError as error:
                        results[group].append(error.code().name)
                        if error.code() == grpc.StatusCode.UNAVAILABLE:
                            await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(client("default" if i % 2 else "idempotent",
                                            DEFAULT_RETRYABLE_CODES if i % 2 else IDEMPOTENT_RETRYABLE_CODES))
                 for i in range(24)]
        while len(results["default"]) + len(results["idempotent"]) < 2000:
            await asyncio.sleep(0.02)
        await app.stop(5)
        await asyncio.sleep(0.3)
        stopped.set()
        await asyncio.gather(*tasks)
        return results, handled

    results, handled = asyncio.run(main())
    summary = {group: {code: outcomes.count(code) for code in sorted(set(outcomes))}
               for group, outcomes in results.items()}
    print(f"\ngraceful stop under 24 clients: {summary}; handlers started {handled['started']}, "
          f"finished {handled['finished']}")
    assert handled["started"] == handled["finished"]  # every call that ran completed
    assert results["idempotent"].count("OK") + results["default"].count("OK") == handled["finished"]
    assert set(results["idempotent"]) <= {"OK", "UNAVAILABLE"}
    assert set(results["default"]) <= {"OK", "UNAVAILABLE", "CANCELLED"}


def test_the_documented_service_config_is_the_one_the_code_builds():
    """docs/reliability.md shows the index clients' service config as JSON (for clients in any
    language); it must be what ``channel_options`` actually sets."""
    import json
    import re
    from pathlib import Path

    from musicrec.rpc.channel_config import IDEMPOTENT_RETRYABLE_CODES, retry_service_config

    doc = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text()
    block = re.search(r"<!-- service-config:index -->\s*```json\n(.*?)```", doc, re.S)
    assert block, "the service config block is missing from docs/reliability.md"
    assert json.loads(block.group(1)) == retry_service_config(
        ["musicrec.v1.IndexService"], retryable_codes=IDEMPOTENT_RETRYABLE_CODES, wait_for_ready=True)
