"""The index service over real gRPC: a server on port 0, grpc.aio clients, the tiny known-answer
model (conftest.tiny_artifacts), health transitions, every error code, hot swap under load,
refused versions, pinning."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from index_service.app import SERVICE_NAME, IndexServiceApp, IndexServiceConfig
from model_store import ModelArtifacts
from musicrec.rpc.channel_config import channel_options
from musicrec.rpc.server import ServerConfig
from musicrec.v1 import index_pb2, index_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_S = 30.0  # an upper bound for things that happen within a few poll intervals


class Client:
    def __init__(self, channel):
        self.index = index_pb2_grpc.IndexServiceStub(channel)
        self.health_stub = health_pb2_grpc.HealthStub(channel)

    async def health(self, service: str = "") -> int:
        return (await self.health_stub.Check(health_pb2.HealthCheckRequest(service=service))).status

    async def recommend(self, user_id: str, k: int = 0, **kwargs) -> index_pb2.RecommendResponse:
        return await self.index.Recommend(index_pb2.RecommendRequest(user_id=user_id, k=k, **kwargs))

    async def similar(self, **kwargs) -> index_pb2.SimilarArtistsResponse:
        return await self.index.SimilarArtists(index_pb2.SimilarArtistsRequest(**kwargs))

    async def info(self) -> index_pb2.GetIndexInfoResponse:
        return await self.index.GetIndexInfo(index_pb2.GetIndexInfoRequest())

    async def history(self, history: list[tuple[str, float]], k: int = 0, **kwargs) -> index_pb2.RecommendResponse:
        return await self.index.RecommendForHistory(index_pb2.RecommendForHistoryRequest(
            history=[index_pb2.ArtistPlays(artist_id=a, plays=p) for a, p in history], k=k, **kwargs))

    async def batch(self, *requests: index_pb2.RecommendRequest) -> index_pb2.BatchRecommendResponse:
        return await self.index.BatchRecommend(index_pb2.BatchRecommendRequest(requests=requests))


@contextlib.asynccontextmanager
async def running(models_dir: Path, **config):
    app = IndexServiceApp(IndexServiceConfig(models_dir=models_dir, server=ServerConfig(port=0),
                                             poll_interval_s=0.02, **config))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield app, Client(channel)
    finally:
        await app.stop(0)


@contextlib.asynccontextmanager
async def serving(models_dir: Path, **config):
    """``running``, from the moment health says SERVING (a version is loaded)."""
    async with running(models_dir, **config) as (app, client):
        await eventually(lambda: _healthy(client), "SERVING")
        yield app, client


def serve(models_dir: Path, check, **config) -> None:
    """Run ``await check(app, client)`` against a service on ``models_dir`` once it is SERVING."""
    async def main():
        async with serving(models_dir, **config) as (app, client):
            await check(app, client)

    asyncio.run(main())


async def eventually(check, what: str):
    """Await ``check()`` until it is truthy (bounded by WAIT_S); return its value."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not (value := await check()):
                await asyncio.sleep(0.02)
            return value
    except TimeoutError:
        raise AssertionError(f"not within {WAIT_S} s: {what}") from None


async def _healthy(client: Client) -> bool:
    return await client.health() == SERVING


def artist_ids(response) -> list[str]:
    return [a.artist_id for a in response.artists]


async def expect_code(code: grpc.StatusCode, call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value.details()


def test_health_and_unavailable_until_a_version_arrives(models_dir, publish, tiny_artifacts):
    async def main():
        async with running(models_dir) as (app, client):
            assert await client.health() == NOT_SERVING
            assert await client.health(SERVICE_NAME) == NOT_SERVING
            await expect_code(grpc.StatusCode.UNAVAILABLE, client.recommend("u0"))
            await expect_code(grpc.StatusCode.UNAVAILABLE, client.similar(artist_id="a0"))
            info = await client.info()
            assert not info.HasField("model") and not info.pinned
            await asyncio.to_thread(publish, tiny_artifacts)
            await eventually(lambda: _healthy(client), "SERVING after the first version")
            assert await client.health(SERVICE_NAME) == SERVING
            assert (await client.recommend("u0", 1)).model_version == 1
            await app.stop(0)
            assert app.server.health._server_status[""] == NOT_SERVING

    asyncio.run(main())


def test_every_rpc_gives_the_known_answer(models_dir, publish, tiny_artifacts):
    publish(tiny_artifacts)

    async def check(app: IndexServiceApp, client: Client) -> None:
        response = await client.recommend("u0", 3)
        assert artist_ids(response) == ["a1", "a2", "a11"] and response.model_version == 1
        assert [a.name for a in response.artists] == ["Artist 1", "Artist 2", "Artist 11"]
        np.testing.assert_allclose([a.score for a in response.artists], [1.999, 0.998, 0.189], rtol=1e-5)
        assert artist_ids(await client.recommend("u0", 3, include_seen=True)) == ["a0", "a1", "a2"]
        assert artist_ids(await client.recommend("u0", 2, exclude_artist_ids=["a1", "unknown"])) == ["a2", "a11"]
        assert len((await client.recommend("u0")).artists) == 10  # k = 0: the default
        assert len((await client.recommend("u0", 1000)).artists) == 11  # catalog exhausted

        similar = await client.similar(artist_id="a3", k=4)
        assert artist_ids(similar) == ["a4", "a5", "a2", "a1"]
        assert (similar.artist.artist_id, similar.artist.name, similar.artist.score) == ("a3", "Artist 3", 1.0)
        by_name = await client.similar(artist_name="THE TWINS", k=2)
        assert by_name.artist.artist_id == "a7" and by_name.artist.name == "the twins"
        assert artist_ids(by_name) == ["a6", "a8"]  # a7 = [0, 0, 2, .1]: a6 = [0, 0, 3, 0] is closest
        assert by_name.model_version == 1

        info = await client.info()
        assert info.model.version == 1
        assert (info.model.num_users, info.model.num_artists) == (8, 12)
        assert info.model.hyperparameters.factors == 4 and info.model.hyperparameters.epochs == 1
        assert info.model.metrics.hit_rate_at_10 == 0.5 and info.model.metrics.evaluated_users == 8
        assert info.model.recommend_search.method in ("exact", "annoy")
        assert info.model.recommend_search.n_trees > 0
        # Every artist has a precomputed list: SimilarArtists gets no Annoy index by default.
        assert (info.model.similar_search.method, info.model.similar_search.n_trees) == ("exact", 0)
        assert info.model.created_at.seconds > 0 and info.loaded_at.seconds > 0
        assert info.load_duration_ms > 0 and not info.pinned and not info.rejected_versions

    serve(models_dir, check)


def test_every_error_has_its_status_code(models_dir, publish, tiny_artifacts):
    publish(tiny_artifacts)
    code = grpc.StatusCode

    async def check(app: IndexServiceApp, client: Client) -> None:
        assert "nobody" in await expect_code(code.NOT_FOUND, client.recommend("nobody"))
        assert "a404" in await expect_code(code.NOT_FOUND, client.similar(artist_id="a404"))
        assert "Nobody Band" in await expect_code(code.NOT_FOUND, client.similar(artist_name="Nobody Band"))
        await expect_code(code.INVALID_ARGUMENT, client.similar(k=3))
        await expect_code(code.INVALID_ARGUMENT, client.recommend(""))
        for k in (-1, 1001, 2**31 - 1):
            await expect_code(code.INVALID_ARGUMENT, client.recommend("u0", k))
            await expect_code(code.INVALID_ARGUMENT, client.similar(artist_id="a0", k=k))
        too_many = [f"x{i}" for i in range(1001)]
        await expect_code(code.INVALID_ARGUMENT, client.recommend("u0", 3, exclude_artist_ids=too_many))
        await expect_code(code.INVALID_ARGUMENT, client.recommend("u0", 3, only_artist_ids=["a1"] * 10_001))
        for k, offset in ((10, -1), (10, 991), (1000, 1)):
            await expect_code(code.INVALID_ARGUMENT, client.recommend("u0", k, offset=offset))
            await expect_code(code.INVALID_ARGUMENT, client.history([("a0", 1)], k, offset=offset))
        for plays in (0.0, -2.0, float("nan"), float("inf")):
            assert "plays" in await expect_code(code.INVALID_ARGUMENT, client.history([("a0", plays)], 3))
        await expect_code(code.INVALID_ARGUMENT, client.history([("a0", 1)] * 1001, 3))
        await expect_code(code.INVALID_ARGUMENT, client.history([("a0", 1)], 3, only_artist_ids=["a1"] * 10_001))
        await expect_code(code.INVALID_ARGUMENT, client.history([("a0", 1)], 3, exclude_artist_ids=too_many))
        one = index_pb2.RecommendRequest(user_id="u0", k=1)
        assert "1000" in await expect_code(code.INVALID_ARGUMENT, client.batch(*[one] * 1001))
        assert await client.health() == SERVING  # client mistakes never hurt the service

    serve(models_dir, check)


def test_history_batch_pages_and_allow_lists_over_grpc(models_dir, publish, tiny_artifacts):
    publish(tiny_artifacts)
    code = grpc.StatusCode

    async def check(app: IndexServiceApp, client: Client) -> None:
        folded = await client.history([("a3", 10), ("nope", 1), ("a4", 2)], 1)
        assert artist_ids(folded) == ["a5"] and list(folded.unknown_artist_ids) == ["nope"]
        assert not folded.popularity_fallback and folded.model_version == 1
        popular = await client.history([("nope", 1)], 2)
        assert artist_ids(popular) == ["a7", "a4"] and popular.popularity_fallback
        assert [a.score for a in popular.artists] == [9.0, 3.0]
        plain = await client.recommend("u0", 3)
        assert not plain.unknown_artist_ids and not plain.popularity_fallback

        assert artist_ids(await client.recommend("u0", 2, offset=1)) == ["a2", "a11"]
        assert artist_ids(await client.recommend("u0", 5, only_artist_ids=["a5", "a1", "zz"])) == ["a1", "a5"]
        assert artist_ids(await client.history([("a3", 1)], 2, offset=1, include_seen=True)) == ["a4", "a5"]

        requests = [index_pb2.RecommendRequest(user_id="u0", k=3), index_pb2.RecommendRequest(user_id="nobody"),
                    index_pb2.RecommendRequest(user_id="u2", k=2, include_seen=True, offset=1),
                    index_pb2.RecommendRequest(user_id="u0", k=-1)]
        batch = await client.batch(*requests)
        assert [r.WhichOneof("result") for r in batch.results] == ["response", "error", "response", "error"]
        for request, result in zip(requests, batch.results):
            if result.WhichOneof("result") == "response":
                assert result.response == await client.index.Recommend(request)
            else:
                with pytest.raises(grpc.aio.AioRpcError) as single:
                    await client.index.Recommend(request)
                assert result.error.code == single.value.code().value[0]
                assert result.error.message == single.value.details()
        assert batch.results[1].error.code == code.NOT_FOUND.value[0]
        assert not (await client.batch()).results

    serve(models_dir, check)


def rotating_model(version: int, num_artists: int = 30, num_users: int = 4) -> ModelArtifacts:
    """Every user's ranking depends on the version: artist a scores ((a + version) mod A) + 1, so
    the top artists of version v are a{(A-1-v) mod A}, a{(A-2-v) mod A}, ..."""
    strength = ((np.arange(num_artists) + version) % num_artists + 1).astype(np.float32)
    return ModelArtifacts(
        user_ids=np.array([f"u{u}" for u in range(num_users)]),
        user_factors=np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (num_users, 1)),
        artist_ids=np.array([f"a{a}" for a in range(num_artists)]),
        artist_names=np.array([f"Artist {a}" for a in range(num_artists)]),
        artist_factors=np.stack([strength, np.ones(num_artists, np.float32)], axis=1),
        artist_bias=np.zeros(num_artists, np.float32),
        artist_listeners=np.ones(num_artists, np.int32),
        seen_indptr=np.zeros(num_users + 1, np.int64),
        seen_indices=np.zeros(0, np.int32),
    )


def expected_top(version: int, k: int, num_artists: int = 30) -> list[str]:
    return [f"a{(num_artists - 1 - version - j) % num_artists}" for j in range(k)]


def test_hot_swap_under_load_never_fails_or_mixes_versions(models_dir, publish):
    publish(rotating_model(1))
    swaps = 6

    async def check(app: IndexServiceApp, client: Client) -> None:
        served_objects = [app.holder.current]
        stop = asyncio.Event()
        seen_versions: set[int] = set()
        failures: list[str] = []
        answered = 0

        async def hammer(channel_client: Client, user: str):
            nonlocal answered
            while not stop.is_set():
                try:
                    response = await channel_client.recommend(user, 5)
                except grpc.aio.AioRpcError as error:
                    failures.append(f"{error.code()}: {error.details()}")
                    continue
                answered += 1
                seen_versions.add(response.model_version)
                if artist_ids(response) != expected_top(response.model_version, 5):
                    failures.append(f"mixed answer for version {response.model_version}: {artist_ids(response)}")

        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for _ in range(2):
                channel = await stack.enter_async_context(
                    grpc.aio.insecure_channel(f"127.0.0.1:{app.port}",
                                              options=channel_options([SERVICE_NAME])))
                clients.append(Client(channel))
            workers = [asyncio.create_task(hammer(clients[i % 2], f"u{i % 4}")) for i in range(8)]
            for version in range(2, 2 + swaps):
                await asyncio.to_thread(publish, rotating_model(version))
                await eventually(lambda v=version: _is_serving(client, v), f"version {version} served")
                served_objects.append(app.holder.current)
                before = answered
                await eventually(lambda b=before: _async_true(answered > b + 20), "traffic on the new version")
            stop.set()
            await asyncio.gather(*workers)

        assert failures == []
        assert answered > 0
        assert seen_versions >= set(range(2, 2 + swaps))
        current = app.holder.current
        for old in served_objects:
            if old is not current:
                assert old.model.closed and old.users == 0  # old Annoy files unloaded
        assert not current.model.closed

    serve(models_dir, check)


async def _async_true(value: bool) -> bool:
    return value


async def _is_serving(client: Client, version: int) -> bool:
    return (await client.info()).model.version == version


def _corrupt_checksum(vdir: Path) -> None:
    path = vdir / "user_factors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate_annoy(vdir: Path) -> None:
    path = vdir / "recommend.ann"
    path.write_bytes(path.read_bytes()[:1000])


def _remove_manifest(vdir: Path) -> None:
    (vdir / "manifest.json").unlink()


def test_corrupt_versions_are_refused_while_the_old_one_serves(models_dir, publish, tiny_artifacts, tmp_path):
    publish(tiny_artifacts)

    async def check(app: IndexServiceApp, client: Client) -> None:
        staging = tmp_path / "staging"
        for version, corrupt in ((2, _corrupt_checksum), (3, _truncate_annoy), (4, _remove_manifest)):
            # Corrupted before it appears in the models dir, so the watcher never sees it whole.
            publish(tiny_artifacts, into=staging, min_version=version)
            corrupt(staging / str(version))
            os.rename(staging / str(version), models_dir / str(version))
            await eventually(lambda v=version: _rejected(client, v), f"version {version} rejected")
            assert await client.health() == SERVING
            response = await client.recommend("u0", 3)
            assert artist_ids(response) == ["a1", "a2", "a11"] and response.model_version == 1
        info = await client.info()
        assert [r.version for r in info.rejected_versions] == [4, 3, 2]
        reasons = {r.version: r.reason for r in info.rejected_versions}
        assert "checksum mismatch" in reasons[2]
        assert "recommend.ann" in reasons[3]
        assert "manifest.json" in reasons[4]
        assert info.model.version == 1
        publish(tiny_artifacts)  # a good version 5 is still taken
        await eventually(lambda: _is_serving(client, 5), "version 5 served")

    serve(models_dir, check)


async def _rejected(client: Client, version: int) -> bool:
    return any(r.version == version for r in (await client.info()).rejected_versions)


def test_pinned_version_is_served_and_reported(models_dir, publish, tiny_artifacts):
    for _ in range(3):
        publish(tiny_artifacts)

    async def check(app: IndexServiceApp, client: Client) -> None:
        assert (await client.recommend("u0", 1)).model_version == 2
        publish(tiny_artifacts)
        await asyncio.sleep(0.2)  # several polls: still version 2
        info = await client.info()
        assert info.pinned and info.model.version == 2

    serve(models_dir, check, pinned_version=2)



# -- the process: how it says that it cannot start or that it failed ------------------------------

# Serves on a free port and shuts down at once, its stop failing after the real stop with an
# OSError: a start-up error's type, raised when the service had long started.
_FAILING_STOP = """
import sys
from index_service.__main__ import main
from index_service.app import IndexServiceApp
from musicrec.rpc.server import GrpcServer

real_stop = IndexServiceApp.stop

async def no_wait(self, *args):
    return 0

async def failing_stop(self, grace_s=None):
    await real_stop(self, grace_s)
    raise OSError("the disk went away while stopping")

GrpcServer.wait_for_shutdown_signal = no_wait
IndexServiceApp.stop = failing_stop
sys.exit(main(sys.argv[1:]))
"""


def _index_process(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)


def test_a_start_up_error_is_one_line_and_exit_1(models_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _index_process("-m", "index_service", "--models-dir", str(models_dir), "--port", str(port))
    assert done.returncode == 1, done.stderr
    assert f"cannot start: cannot bind 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr and "listening on" not in done.stderr


def test_a_failure_after_start_is_logged_with_its_traceback_and_exit_1(models_dir):
    done = _index_process("-c", _FAILING_STOP, "--models-dir", str(models_dir), "--port", "0")
    assert done.returncode == 1, done.stderr
    assert "listening on" in done.stderr and "index service failed while serving or stopping" in done.stderr
    assert "Traceback" in done.stderr and "OSError: the disk went away while stopping" in done.stderr
    assert "cannot start" not in done.stderr
