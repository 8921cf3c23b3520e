"""The play log's contract, one suite run unchanged against each store (SQLite file, PostgreSQL
server started by the tests): known plays in, the same plays and positions out."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time

import pytest

from play_log import (
    MAX_PLAYS_PER_REQUEST,
    InvalidPlay,
    Play,
    PlayColumns,
    PlayLogUnavailable,
    PlayRecorded,
    Recorded,
    SchemaTooNew,
    UserForgotten,
    open_play_log,
)
from tests.postgres_server import fresh_database, postgres_server

T0 = 1_700_000_000.0
_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request, tmp_path):
    """A URL to a new, empty log in each store."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plays.db'}"
    server = request.getfixturevalue("postgres_url")
    return fresh_database(server, f"plays_{next(_databases)}")


@pytest.fixture
def log(log_url):
    with open_play_log(log_url) as opened:
        yield opened


def plays(*triples, time_s=T0):
    return [Play(user, artist, count, time_s) for user, artist, count in triples]


def test_an_empty_log_is_at_position_zero(log):
    assert log.last_position() == 0
    assert log.changes_since(0) == []
    assert log.schema_version() == 1


def test_recorded_plays_come_back_in_order_with_their_positions(log):
    first = log.record("r1", plays(("u1", "a1", 1), ("u1", "a2", 3)))
    second = log.record("r2", plays(("u2", "a1", 2)))
    assert first == Recorded(2, 1, 2)
    assert second == Recorded(1, 3, 3)
    assert log.last_position() == 3
    assert log.changes_since(0) == [
        PlayRecorded(1, Play("u1", "a1", 1.0, T0)),
        PlayRecorded(2, Play("u1", "a2", 3.0, T0)),
        PlayRecorded(3, Play("u2", "a1", 2.0, T0)),
    ]
    assert [c.position for c in log.changes_since(1)] == [2, 3]
    assert [c.position for c in log.changes_since(0, limit=2)] == [1, 2]
    assert [c.position for c in log.changes_since(0, through=2)] == [1, 2]
    assert log.changes_since(3) == []


def test_a_retried_request_id_is_recorded_once(log):
    first = log.record("same", plays(("u1", "a1", 1), ("u1", "a2", 1)))
    again = log.record("same", plays(("u1", "a1", 1), ("u1", "a2", 1)))
    assert again == Recorded(first.count, first.first_position, first.last_position, duplicate=True)
    assert len(log.changes_since(0)) == 2
    # Requests without an id are never deduplicated.
    log.record("", plays(("u1", "a1", 1)))
    log.record("", plays(("u1", "a1", 1)))
    assert len(log.changes_since(0)) == 4


@pytest.mark.parametrize("bad, index, words", [
    (Play("", "a1", 1, T0), 1, "user_id is empty"),
    (Play("u1", "", 1, T0), 1, "artist_id is empty"),
    (Play("u1", "a1", 0.5, T0), 1, "plays must be a finite count >= 1"),
    (Play("u1", "a1", float("nan"), T0), 1, "plays must be a finite count >= 1"),
    (Play("u1", "a1", float("inf"), T0), 1, "plays must be a finite count >= 1"),
    (Play("u1", "x" * 257, 1, T0), 1, "artist_id has 257 characters"),
    (Play("u1", "a1", 1, float("nan")), 1, "time must be"),
    (Play("u\x00", "a1", 1, T0), 1, "user_id contains a NUL character"),
])
def test_a_bad_entry_is_named_and_nothing_of_its_request_is_recorded(log, bad, index, words):
    with pytest.raises(InvalidPlay) as raised:
        log.record("r", [Play("u1", "a1", 1, T0), bad])
    assert raised.value.index == index
    assert words in raised.value.message and raised.value.message.startswith(f"plays[{index}]")
    assert raised.value.code_name == "INVALID_ARGUMENT"
    assert log.changes_since(0) == [] and log.last_position() == 0


def test_request_limits(log):
    with pytest.raises(InvalidPlay, match="no plays"):
        log.record("r", [])
    with pytest.raises(InvalidPlay, match="at most 10,000"):
        log.record("r", plays(("u", "a", 1)) * (MAX_PLAYS_PER_REQUEST + 1))
    with pytest.raises(InvalidPlay, match="request_id has 300 characters"):
        log.record("r" * 300, plays(("u", "a", 1)))


def test_user_plays_after_a_position(log):
    log.record("r1", plays(("u1", "a1", 1), ("u2", "a2", 1), ("u1", "a3", 2)))
    assert [(c.position, c.play.artist_id) for c in log.user_plays("u1")] == [(1, "a1"), (3, "a3")]
    assert [c.position for c in log.user_plays("u1", after=1)] == [3]
    assert log.user_plays("nobody") == []


def test_forgetting_a_user_deletes_their_plays_and_tells_readers(log):
    log.record("r1", plays(("u1", "a1", 1), ("u2", "a2", 1), ("u1", "a3", 2)))
    forgotten, deleted = log.forget_user("u1")
    assert deleted == 2 and forgotten == UserForgotten(4, "u1")
    assert log.user_plays("u1") == []
    assert log.changes_since(0) == [PlayRecorded(2, Play("u2", "a2", 1.0, T0)), UserForgotten(4, "u1")]
    assert log.forgotten_users(through=4) == {"u1"} and log.forgotten_users(through=3) == set()
    # The position after the forget is new, even though the newest play rows are gone.
    assert log.last_position() == 4
    assert log.record("r2", plays(("u1", "a9", 1))).first_position == 5
    # A retry of a request recorded before the forget does not bring the plays back.
    assert log.record("r1", plays(("u1", "a1", 1))).duplicate


def test_plays_through_reads_the_plays_as_columns(log):
    """The columnar read a training uses equals the plays among the changes, forgets skipped."""
    log.record("r1", plays(("u1", "a1", 2), ("u2", "a2", 1)))
    log.forget_user("u1")
    log.record("r2", plays(("u1", "a3", 4), ("u3", "a1", 1.5)))
    log.record("r3", plays(("u4", "a4", 1)))
    columns = log.plays_through(5)
    assert columns == PlayColumns.of(log.changes_since(0, through=5))
    assert list(zip(columns.positions, columns.user_ids, columns.artist_ids, columns.plays)) == [
        (2, "u2", "a2", 1.0), (4, "u1", "a3", 4.0), (5, "u3", "a1", 1.5)]
    assert log.plays_through(5, after=4).user_ids == ["u3"] and len(log.plays_through(0)) == 0


def test_reopening_keeps_everything(log_url):
    with open_play_log(log_url) as log:
        log.record("r1", plays(("u1", "a1", 1)))
    with open_play_log(log_url) as log:
        assert [c.position for c in log.changes_since(0)] == [1]
        assert log.record("r1", plays(("u1", "a1", 1))).duplicate


def test_a_log_written_by_a_newer_schema_is_refused(log_url):
    with open_play_log(log_url) as log:
        log.record("r1", plays(("u1", "a1", 1)))
    if log_url.startswith("sqlite"):
        with sqlite3.connect(log_url[len("sqlite:///"):]) as connection:
            connection.execute("UPDATE play_log_schema SET version = 99")
    else:
        import psycopg

        with psycopg.connect(log_url, autocommit=True) as connection:
            connection.execute("UPDATE play_log_schema SET version = 99")
    with pytest.raises(SchemaTooNew, match="schema version 99, newer than this code's 1"):
        open_play_log(log_url)


def test_concurrent_writers_lose_nothing(log_url):
    """Four writers, each with its own connection, 50 requests of 20 plays: every play is
    recorded once, each request's positions are contiguous, and positions are unique."""
    results: dict[str, Recorded] = {}
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            with open_play_log(log_url) as log:
                for request in range(50):
                    batch = plays(*[(f"w{number}", f"a{request}-{i}", 1) for i in range(20)])
                    results[f"w{number}-{request}"] = log.record(f"w{number}-{request}", batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    with open_play_log(log_url) as log:
        changes = log.changes_since(0, limit=100_000)
    assert len(changes) == 4 * 50 * 20
    assert [c.position for c in changes] == sorted({c.position for c in changes})
    by_position = {c.position: c.play for c in changes}
    for request_id, recorded in results.items():
        writer_name, request = request_id.split("-")
        assert recorded.last_position - recorded.first_position + 1 == 20
        assert {by_position[p].artist_id for p in range(recorded.first_position, recorded.last_position + 1)} == {
            f"a{request}-{i}" for i in range(20)}
        assert by_position[recorded.first_position].user_id == writer_name


def test_a_sqlite_file_removed_under_the_process_is_unavailable_not_silently_written(tmp_path):
    path = tmp_path / "plays.db"
    with open_play_log(f"sqlite:///{path}") as log:
        log.record("r1", plays(("u1", "a1", 1)))
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"plays.db{suffix}").unlink(missing_ok=True)
        with pytest.raises(PlayLogUnavailable, match="removed or replaced") as raised:
            log.record("r2", plays(("u1", "a2", 1)))
        assert raised.value.code_name == "UNAVAILABLE"


def test_an_unreachable_postgresql_server_is_unavailable():
    pytest.importorskip("psycopg")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(PlayLogUnavailable, match="cannot reach the play log postgresql://u:\\*\\*\\*@127.0.0.1"):
        open_play_log(f"postgresql://u:secret@127.0.0.1:{port}/db")
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://relative", "sqlite:///", "plays.db"])
def test_an_unknown_url_is_refused_with_the_expected_forms(url):
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        open_play_log(url)


def test_a_group_commit_records_each_request_in_order_and_all_or_nothing(log):
    results = log.record_many([("g1", plays(("u1", "a1", 1), ("u1", "a2", 1))), ("", plays(("u2", "a3", 2))),
                               ("g1", plays(("u1", "a1", 1)))])
    assert results == [Recorded(2, 1, 2), Recorded(1, 3, 3), Recorded(2, 1, 2, duplicate=True)]
    with pytest.raises(InvalidPlay):
        log.record_many([("g2", plays(("u3", "a1", 1))), ("g3", plays(("", "a1", 1)))])
    assert log.last_position() == 3 and not log.record("g2", plays(("u3", "a1", 1))).duplicate
