"""Every resource a client can grow is bounded; each bound has a test.

| resource                          | bound                          | test |
|-----------------------------------|--------------------------------|------|
| k (Recommend, SimilarArtists)     | 0..1000 (0 = 10)               | here; fuzzed in test_fuzz_index_rpc.py |
| exclude_artist_ids                | at most 1000                   | here |
| request size, both services       | 4 MiB (musicrec/rpc/server.py) | here (index) and test_fuzz_trainer_rpc.py (trainer) |
| concurrent RPCs per server        | --max-concurrent-rpcs (1000)   | test_rpc_server.py::test_concurrent_rpc_bound_refuses_the_excess |
| HTTP/2 streams per connection     | 256                            | configured in ServerConfig.max_concurrent_streams |
| WatchTrainingJob streams          | --max-watchers (32)            | test_fuzz_trainer_rpc.py (process), test_trainer_service.py, test_trainer_runner.py |
| training jobs                     | one at a time (ALREADY_EXISTS) | test_fuzz_trainer_rpc.py, test_trainer_service.py |
| job history                       | 200 jobs                       | test_trainer_jobs.py::test_history_keeps_at_most_max_jobs_dropping_the_oldest_ended |
| hyperparameters                   | factors <= 1024, epochs <= 10,000, batch <= 2^20 | test_trainer_service.py, test_fuzz_trainer_rpc.py |
| manifest size                     | 1 MiB                          | test_faults_corruption.py |
| token file                        | 4 KiB                          | test_security_auth.py |
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from index_service.app import IndexServiceApp, IndexServiceConfig
from index_service.serving_model import MAX_EXCLUDED, MAX_K
from musicrec.rpc.server import DEFAULT_MAX_MESSAGE_BYTES, ServerConfig
from musicrec.v1 import index_pb2, index_pb2_grpc
from test_faults_harness import marked_model, publish_model

ARTISTS = 1200  # more artists than MAX_K, so k = 1000 returns 1000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    models = tmp_path_factory.mktemp("limits") / "models"
    publish_model(models, marked_model(1, num_users=4, num_artists=ARTISTS, factors=4))
    return models


@contextlib.asynccontextmanager
async def index_stub(models):
    app = IndexServiceApp(IndexServiceConfig(models_dir=models, server=ServerConfig(port=0), poll_interval_s=0.02))
    await app.start()
    try:
        while app.holder.current is None:
            await asyncio.sleep(0.02)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield index_pb2_grpc.IndexServiceStub(channel)
    finally:
        await app.stop(0)


async def outcome(call):
    """(status code, response or error details)."""
    try:
        return grpc.StatusCode.OK, await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()


def test_k_is_bounded(models):
    async def main():
        async with index_stub(models) as stub:
            results = {}
            for k in (MAX_K, MAX_K + 1, -1, 2**31 - 1):
                results[("recommend", k)] = await outcome(stub.Recommend(index_pb2.RecommendRequest(user_id="u0", k=k)))
                results[("similar", k)] = await outcome(
                    stub.SimilarArtists(index_pb2.SimilarArtistsRequest(artist_id="a0", k=k)))
            return results

    results = asyncio.run(main())
    for rpc in ("recommend", "similar"):
        code, response = results[(rpc, MAX_K)]
        assert code == grpc.StatusCode.OK and len(response.artists) == MAX_K
        for k in (MAX_K + 1, -1, 2**31 - 1):
            code, details = results[(rpc, k)]
            assert code == grpc.StatusCode.INVALID_ARGUMENT and f"between 0 and {MAX_K}" in details


def test_exclude_list_is_bounded(models):
    async def main():
        async with index_stub(models) as stub:
            at_bound = await outcome(stub.Recommend(index_pb2.RecommendRequest(
                user_id="u0", k=5, include_seen=True, exclude_artist_ids=[f"a{i}" for i in range(MAX_EXCLUDED)])))
            over = await outcome(stub.Recommend(index_pb2.RecommendRequest(
                user_id="u0", k=5, exclude_artist_ids=["a1"] * (MAX_EXCLUDED + 1))))
            return at_bound, over

    (code, response), (over_code, details) = asyncio.run(main())
    assert code == grpc.StatusCode.OK
    assert all(int(a.artist_id[1:]) >= MAX_EXCLUDED for a in response.artists)  # a0..a999 excluded
    assert over_code == grpc.StatusCode.INVALID_ARGUMENT and f"at most {MAX_EXCLUDED}" in details


def test_request_size_is_bounded(models):
    async def main():
        async with index_stub(models) as stub:
            just_under = await outcome(stub.Recommend(index_pb2.RecommendRequest(
                user_id="u" * (DEFAULT_MAX_MESSAGE_BYTES - 64))))
            over = await outcome(stub.Recommend(index_pb2.RecommendRequest(user_id="u" * DEFAULT_MAX_MESSAGE_BYTES)))
            after = await outcome(stub.Recommend(index_pb2.RecommendRequest(user_id="u0", k=1)))
            return just_under, over, after

    just_under, over, after = asyncio.run(main())
    assert just_under[0] == grpc.StatusCode.NOT_FOUND  # read, looked up, unknown
    assert over[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert after[0] == grpc.StatusCode.OK
