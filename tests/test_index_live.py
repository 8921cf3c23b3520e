"""Plays in, recommendations follow: RecordPlays, GetUserPlays and ForgetUser over real gRPC, on
the tiny known-answer model (conftest.tiny_artifacts), with a real SQLite file and a real
PostgreSQL server as the play log; two replicas sharing one log."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from index_service.app import IndexServiceApp, IndexServiceConfig
from musicrec.rpc.server import ServerConfig
from musicrec.v1 import index_pb2, index_pb2_grpc
from play_log import Play, open_play_log
from tests.postgres_server import fresh_database, postgres_server

TOKEN = "live-test-token-0123456789"
_databases = itertools.count()


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def events_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plays.db'}"
    return fresh_database(request.getfixturevalue("postgres_url"), f"live_{next(_databases)}")


@pytest.fixture
def tiny_models(models_dir, publish, tiny_artifacts) -> Path:
    publish(tiny_artifacts)
    return models_dir


@contextlib.asynccontextmanager
async def replica(models_dir: Path, **config):
    """An index service on port 0 serving the models dir, once it serves a version; yields its stub."""
    app = IndexServiceApp(IndexServiceConfig(models_dir=models_dir, server=ServerConfig(port=0), poll_interval_s=0.05,
                                             events_poll_interval_s=0.05, **config))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = index_pb2_grpc.IndexServiceStub(channel)
            deadline = time.monotonic() + 30
            while app.holder.current is None:
                assert time.monotonic() < deadline, "no version served"
                await asyncio.sleep(0.02)
            yield stub
    finally:
        await app.stop(0)


def run(coroutine_function, *args):
    asyncio.run(coroutine_function(*args))


def plays_request(*entries, request_id: str = "") -> index_pb2.RecordPlaysRequest:
    return index_pb2.RecordPlaysRequest(request_id=request_id, plays=[
        index_pb2.PlayEvent(user_id=user, artist_id=artist, plays=count) for user, artist, count in entries])


async def top(stub, user_id: str, k: int = 3, **kwargs) -> list[str]:
    response = await stub.Recommend(index_pb2.RecommendRequest(user_id=user_id, k=k, **kwargs))
    return [a.artist_id for a in response.artists]


async def eventually(check, what: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await check()
        except (AssertionError, grpc.aio.AioRpcError):
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout_s} s: {what}") from None
        await asyncio.sleep(0.05)


def test_a_new_listener_is_personalized_from_their_recorded_plays(tiny_models, events_url):
    async def main():
        async with replica(tiny_models, events_url=events_url) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await top(stub, "new1")
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            answer = await stub.RecordPlays(plays_request(("new1", "a3", 5), ("new1", "zz-new", 2), request_id="r1"))
            assert (answer.recorded, answer.duplicate, list(answer.unknown_artist_ids)) == (2, False, ["zz-new"])
            assert answer.last_position - answer.first_position == 1
            # Genre 1's strongest artist played: the other two of genre 1, best first; a3 counts as seen.
            assert await top(stub, "new1", k=2) == ["a4", "a5"]
            response = await stub.Recommend(index_pb2.RecommendRequest(user_id="new1", k=2))
            assert not response.popularity_fallback
            # Pages and allow-lists see the same live state.
            assert await top(stub, "new1", k=1, offset=1) == ["a5"]
            assert await top(stub, "new1", k=2, only_artist_ids=["a3", "a5", "a0"]) == ["a5", "a0"]
            batch = await stub.BatchRecommend(index_pb2.BatchRecommendRequest(requests=[
                index_pb2.RecommendRequest(user_id="new1", k=2), index_pb2.RecommendRequest(user_id="u0", k=3)]))
            assert [[a.artist_id for a in r.response.artists] for r in batch.results] == [["a4", "a5"],
                                                                                         ["a1", "a2", "a11"]]

    run(main)


def test_a_known_listener_is_refitted_and_their_new_artists_count_as_seen(tiny_models, events_url):
    async def main():
        async with replica(tiny_models, events_url=events_url) as stub:
            assert await top(stub, "u0") == ["a1", "a2", "a11"]
            await stub.RecordPlays(plays_request(("u0", "a6", 100)))
            after = await top(stub, "u0")
            assert "a6" not in after and "a0" not in after and "a7" in after
            # A listener without new plays costs and answers what they did before.
            assert await top(stub, "u2") == ["a4", "a5", "a2"]

    run(main)


def test_a_listener_with_only_unknown_artists_gets_the_popular_ones(tiny_models, events_url):
    async def main():
        async with replica(tiny_models, events_url=events_url) as stub:
            answer = await stub.RecordPlays(plays_request(("new2", "nobody-knows", 3)))
            assert list(answer.unknown_artist_ids) == ["nobody-knows"]
            response = await stub.Recommend(index_pb2.RecommendRequest(user_id="new2", k=2))
            assert response.popularity_fallback
            assert [a.artist_id for a in response.artists] == ["a7", "a4"]  # 9 and 3 listeners

    run(main)


def test_a_retried_request_is_counted_once_and_get_user_plays_shows_the_log(tiny_models, events_url):
    async def main():
        async with replica(tiny_models, events_url=events_url) as stub:
            stamp = Timestamp(seconds=1_700_000_000, nanos=500_000_000)
            request = index_pb2.RecordPlaysRequest(request_id="same", plays=[
                index_pb2.PlayEvent(user_id="new3", artist_id="a9", time=stamp),
                index_pb2.PlayEvent(user_id="new3", artist_id="a10", plays=4)])
            first = await stub.RecordPlays(request)
            again = await stub.RecordPlays(request)
            assert again.duplicate and (again.first_position, again.recorded) == (first.first_position, 2)
            shown = await stub.GetUserPlays(index_pb2.GetUserPlaysRequest(user_id="new3"))
            assert [(p.artist_id, p.plays) for p in shown.plays] == [("a9", 1.0), ("a10", 4.0)]
            assert shown.plays[0].time == stamp
            assert (shown.model_version, shown.trained_through_position) == (1, 0)

    run(main)


def test_forget_user_removes_plays_and_live_state(tiny_models, events_url):
    async def main():
        async with replica(tiny_models, events_url=events_url) as stub:
            await stub.RecordPlays(plays_request(("new4", "a3", 5), ("u0", "a6", 100)))
            assert await top(stub, "new4", k=2) == ["a4", "a5"]
            for user, deleted in (("new4", 1), ("u0", 1)):
                answer = await stub.ForgetUser(index_pb2.ForgetUserRequest(user_id=user))
                assert answer.plays_deleted == deleted and answer.position > 0
            assert not (await stub.GetUserPlays(index_pb2.GetUserPlaysRequest(user_id="new4"))).plays
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await top(stub, "new4")
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            assert await top(stub, "u0") == ["a1", "a2", "a11"]

    run(main)


def test_another_replica_sharing_the_log_follows_within_a_second(tiny_models, events_url):
    async def main():
        async with replica(tiny_models, events_url=events_url) as one, \
                replica(tiny_models, events_url=events_url) as two:
            await one.RecordPlays(plays_request(("new5", "a3", 5)))
            started = time.monotonic()

            async def follows():
                assert await top(two, "new5", k=2) == ["a4", "a5"]

            await eventually(follows, "the second replica serves new5")
            assert time.monotonic() - started < 5  # generous: the poll interval here is 0.05 s
            await two.ForgetUser(index_pb2.ForgetUserRequest(user_id="new5"))

            async def forgotten():
                try:
                    answer = await top(one, "new5")
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND
                    return
                raise AssertionError(f"new5 still answered: {answer}")

            await eventually(forgotten, "the first replica forgets new5")

    run(main)


@pytest.mark.parametrize("event, words", [
    (index_pb2.PlayEvent(user_id="", artist_id="a1"), "plays[1]: user_id is empty"),
    (index_pb2.PlayEvent(user_id="u", artist_id=""), "plays[1]: artist_id is empty"),
    (index_pb2.PlayEvent(user_id="u", artist_id="a1", plays=0), "plays[1]: plays must be a finite count >= 1"),
    (index_pb2.PlayEvent(user_id="u", artist_id="a1", plays=float("nan")), "plays must be a finite count"),
    (index_pb2.PlayEvent(user_id="u", artist_id="a1", plays=-3), "plays must be a finite count"),
    (index_pb2.PlayEvent(user_id="u" * 300, artist_id="a1"), "plays[1]: user_id has 300 characters"),
    (index_pb2.PlayEvent(user_id="u", artist_id="a1", time=Timestamp(seconds=-5)), "plays[1]: time must be"),
])
def test_a_bad_entry_is_invalid_argument_and_nothing_is_recorded(tiny_models, tmp_path, event, words):
    url = f"sqlite:///{tmp_path / 'plays.db'}"

    async def main():
        async with replica(tiny_models, events_url=url) as stub:
            good = index_pb2.PlayEvent(user_id="u1", artist_id="a1")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.RecordPlays(index_pb2.RecordPlaysRequest(plays=[good, event]))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in raised.value.details()

    run(main)
    with open_play_log(url) as log:
        assert log.last_position() == 0


def test_too_many_or_no_plays_are_refused(tiny_models, tmp_path):
    async def main():
        async with replica(tiny_models, events_url=f"sqlite:///{tmp_path / 'plays.db'}") as stub:
            for count, words in ((0, "no plays"), (10_001, "10,001 plays in one request (at most 10,000)")):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.RecordPlays(plays_request(*[("u", "a1", 1)] * count))
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in raised.value.details()

    run(main)


def test_without_a_play_log_the_play_rpcs_name_the_flag(tiny_models):
    async def main():
        async with replica(tiny_models) as stub:
            for call, request in ((stub.RecordPlays, plays_request(("u0", "a1", 1))),
                                  (stub.GetUserPlays, index_pb2.GetUserPlaysRequest(user_id="u0")),
                                  (stub.ForgetUser, index_pb2.ForgetUserRequest(user_id="u0"))):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call(request)
                assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "--events URL" in raised.value.details()
            assert await top(stub, "u0") == ["a1", "a2", "a11"]

    run(main)


def test_writes_need_the_token_and_reads_stay_open(tiny_models, tmp_path):
    async def main():
        async with replica(tiny_models, events_url=f"sqlite:///{tmp_path / 'plays.db'}", auth_token=TOKEN) as stub:
            for call, request in ((stub.RecordPlays, plays_request(("u0", "a6", 1))),
                                  (stub.ForgetUser, index_pb2.ForgetUserRequest(user_id="u0"))):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call(request)
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answer = await stub.RecordPlays(plays_request(("u0", "a6", 1)),
                                            metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert answer.recorded == 1
            assert (await stub.GetUserPlays(index_pb2.GetUserPlaysRequest(user_id="u0"))).plays
            assert await top(stub, "u2") == ["a4", "a5", "a2"]

    run(main)


def test_a_log_that_goes_away_fails_writes_unavailable_and_recommendations_go_on(tiny_models, tmp_path):
    path = tmp_path / "plays.db"

    async def main():
        async with replica(tiny_models, events_url=f"sqlite:///{path}") as stub:
            await stub.RecordPlays(plays_request(("new6", "a3", 5)))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.RecordPlays(plays_request(("new6", "a4", 1)))
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "removed or replaced" in raised.value.details()
            assert await top(stub, "new6", k=2) == ["a4", "a5"]
            assert await top(stub, "u0") == ["a1", "a2", "a11"]

    run(main)


def test_a_log_of_a_newer_schema_stops_the_start_with_a_clear_message(tiny_models, tmp_path):
    import sqlite3

    path = tmp_path / "plays.db"
    open_play_log(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE play_log_schema SET version = 7")

    async def main():
        app = IndexServiceApp(IndexServiceConfig(models_dir=tiny_models, server=ServerConfig(port=0),
                                                 events_url=f"sqlite:///{path}"))
        with pytest.raises(ValueError, match="schema version 7, newer than this code's 1"):
            await app.start()
        await app.stop(0)

    run(main)


def test_plays_recorded_elsewhere_before_the_start_are_served(tiny_models, tmp_path):
    url = f"sqlite:///{tmp_path / 'plays.db'}"
    with open_play_log(url) as log:
        log.record("", [Play("new7", "a3", 5.0, time.time())])

    async def main():
        async with replica(tiny_models, events_url=url) as stub:
            async def served():
                assert await top(stub, "new7", k=2) == ["a4", "a5"]

            await eventually(served, "plays recorded before the start")

    run(main)


def test_sigkill_right_after_an_acknowledgement_loses_no_play(tmp_path, events_url):
    """An index process killed (SIGKILL) right after each of 20 acknowledged RecordPlays: every
    acknowledged play is in the log (SQLite and PostgreSQL), and a new process serves them."""
    from test_faults_harness import IndexClient, index_process, publish_model

    models = tmp_path / "models"
    publish_model(models)
    url = events_url
    acknowledged: list[tuple[str, str]] = []
    for round_number in range(3):
        process = index_process(tmp_path, models, "--events", url, name=f"index-{round_number}").start()
        client = IndexClient(process.address, retry=False)
        try:
            client.wait_serving(1)
            for request in range(20 if round_number < 2 else 0):
                user = f"k{round_number}-{request}"
                answer = client.stub.RecordPlays(plays_request((user, "a3", 5), (user, "a4", 1)), timeout=30)
                assert answer.recorded == 2
                acknowledged += [(user, "a3"), (user, "a4")]
            if round_number < 2:
                process.kill()  # SIGKILL, at once after the last acknowledgement
            else:
                # The restarted service serves what the killed ones acknowledged (once its tailer read it).
                deadline = time.monotonic() + 10
                while True:
                    try:
                        served = [a.artist_id for a in client.recommend("k1-19", 2).artists]
                        break
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline
                        time.sleep(0.05)
                assert served[0] == "a5" and not {"a3", "a4"} & set(served)
        finally:
            client.close()
        if round_number == 2:
            assert process.stop() == 0
    with open_play_log(url) as log:
        logged = [(c.play.user_id, c.play.artist_id) for c in log.changes_since(0)]
    assert logged == acknowledged


def test_concurrent_writes_are_group_committed_and_each_answered(tiny_models, tmp_path):
    """40 RecordPlays in flight at once: each gets its own positions, and the log holds each once."""
    url = f"sqlite:///{tmp_path / 'plays.db'}"

    async def main():
        async with replica(tiny_models, events_url=url) as stub:
            answers = await asyncio.gather(*[
                stub.RecordPlays(plays_request((f"g{n}", "a3", 1), (f"g{n}", "a4", 2), request_id=f"req-{n}"))
                for n in range(40)])
            spans = sorted((a.first_position, a.last_position) for a in answers)
            assert all(last - first == 1 for first, last in spans)
            assert [first for first, _ in spans] == list(range(1, 81, 2))
            assert await top(stub, "g7", k=1) == ["a5"]

    run(main)
    with open_play_log(url) as log:
        assert len(log.changes_since(0)) == 80
