"""The ``live`` part: plays in through RecordPlays, answers from them (issue 20). On the Last.fm 2K
model (``bench.models.lastfm_version``), index services with ``--events`` as real processes:

- ``record``: RecordPlays throughput of one index process, batches of ``BATCH`` plays,
  ``RECORD_INFLIGHT`` requests in flight from a ``grpc.aio`` client here, ``load_seconds`` per
  run; SQLite (a file in the workdir) and PostgreSQL (a server started as the tests start it,
  ``tests.postgres_server``; skipped with a note where it cannot be) alternating runs, medians.
- ``freshness``: replicas A and B on one SQLite log; a new listener's plays recorded on A, then
  Recommend for them polled on B (every ``POLL_S``) until it answers: acknowledgement to answer.
- ``writing``: Recommend under h2load (``SERVING_INFLIGHT`` in flight) on one process, rounds
  with and without a paced writer (``WRITE_RATE`` plays/s in batches of ``WRITE_BATCH``, other
  listeners) alternating, the order flipping every round; medians.
- ``quality``: per seed, each listener's plays (>= 5 artists) split 80/20 at random and 10% of
  them (new listeners) left out of training entirely; a version trained on the 80% (the trainer's
  pipeline, default hyperparameters); of each listener's 20% one artist is the target and the
  rest (for new listeners: everything but the target) is streamed into a ``LiveState`` in
  process, the servicer's code path without the log's I/O. HR@10 of the target for the stale
  version, the live answers (``ServingModel.recommend`` with the live listener) and a version
  retrained on everything but the targets; seeds pooled until ``live_min_new_users`` new ones.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import itertools
import logging
import random
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from bench import h2load
from bench.measures import latency_summary_ms, median
from bench.models import LASTFM, data_path, lastfm_version, present_datasets, publish_trained
from bench.serving import IndexServer, RequestMaterial
from bench.settings import BenchSettings

log = logging.getLogger(__name__)

METHOD = "/musicrec.v1.IndexService/RecordPlays"
BATCH = 100
RECORD_INFLIGHT = 8
RECORD_TARGET_PER_S = 20_000
FRESHNESS_P99_TARGET_S = 1.0
POLL_S = 0.002
GIVE_UP_S = 10.0
SERVING_INFLIGHT = 16
WRITE_RATE = 1_000
WRITE_BATCH = 100  # as backends send plays (and the throughput target): 10 commits a second
SERVING_RATIO_TARGET = 0.9
LIVE_VS_RETRAIN_TARGET = 0.9
NEW_FRACTION = 0.1
STREAM_FRACTION = 0.2
MAX_SEEDS = 5


def _plays_body(users, artists, count: int, rng) -> bytes:
    """A serialized RecordPlaysRequest of ``count`` plays (random listeners and artists), no id."""
    from musicrec.v1 import index_pb2

    return index_pb2.RecordPlaysRequest(plays=[
        index_pb2.PlayEvent(user_id=rng.choice(users), artist_id=rng.choice(artists), plays=1 + rng.randrange(5))
        for _ in range(count)]).SerializeToString()


def _with_id(body: bytes, request_id: str) -> bytes:
    """``body`` with its request_id set (serialized messages concatenated are merged)."""
    from musicrec.v1 import index_pb2

    return index_pb2.RecordPlaysRequest(request_id=request_id).SerializeToString() + body


def _record_run(target: str, bodies: list[bytes], tag: str, seconds: float) -> dict:
    """RecordPlays at ``RECORD_INFLIGHT`` in flight for ``seconds``: plays acknowledged per second.

    Blocking calls from ``RECORD_INFLIGHT`` threads: this process has run grpc.aio clients on
    other event loops before (the serving part), and a grpc.aio client on yet another loop was
    the bottleneck here (the same rate on SQLite and PostgreSQL, several times below what a fresh
    process measures)."""
    import grpc

    from musicrec.v1 import index_pb2

    counter = itertools.count()
    recorded = []
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD, response_deserializer=index_pb2.RecordPlaysResponse.FromString)
        call(_with_id(bodies[0], f"{tag}-warm"), timeout=30)
        started = time.perf_counter()
        deadline = started + seconds

        def sender() -> int:
            done = 0
            while time.perf_counter() < deadline:
                n = next(counter)
                done += call(_with_id(bodies[n % len(bodies)], f"{tag}-{n}"), timeout=30).recorded
            return done

        with ThreadPoolExecutor(RECORD_INFLIGHT) as pool:
            recorded = sum(pool.map(lambda _: sender(), range(RECORD_INFLIGHT)))
        elapsed = time.perf_counter() - started
    return {"plays": recorded, "seconds": elapsed, "plays_per_s": recorded / elapsed}


def record_throughput(settings: BenchSettings, here: Path, models_dir: Path, users, artists) -> dict:
    stores = {"sqlite": f"sqlite:///{here / 'record.db'}"}
    notes: list[str] = []
    with _postgres(notes) as postgres_url:
        if postgres_url:
            stores["postgresql"] = postgres_url
        servers = {name: IndexServer(models_dir, here / f"record-{name}.log", extra_args=("--events", url))
                   for name, url in stores.items()}
        rng = random.Random(0)
        bodies = [_plays_body(users, artists, BATCH, rng) for _ in range(20)]
        runs: dict[str, list[dict]] = {name: [] for name in stores}
        try:
            for server in servers.values():
                server.start()
            for n in range(settings.runs):
                for name in (list(stores) if n % 2 == 0 else list(stores)[::-1]):
                    runs[name].append(_record_run(servers[name].target, bodies, f"{name}{n}", settings.load_seconds))
                    log.info("live record %s: %.0f plays/s", name, runs[name][-1]["plays_per_s"])
        finally:
            for server in servers.values():
                server.stop()
    return {"batch": BATCH, "inflight": RECORD_INFLIGHT, "seconds_per_run": settings.load_seconds,
            "stores": {name: {"plays_per_s": median(r["plays_per_s"] for r in done), "per_run": done}
                       for name, done in runs.items()},
            "command": servers["sqlite"].command, "notes": notes}


class _postgres:
    """A PostgreSQL server for the block, its URL (None with a note where it cannot start)."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self._context = None

    def __enter__(self) -> str | None:
        try:
            import pytest

            from tests.postgres_server import fresh_database, postgres_server
        except ImportError as exc:
            self.notes.append(f"PostgreSQL not measured: {exc}")
            return None
        self._context = postgres_server()
        try:
            return fresh_database(self._context.__enter__(), "bench_live")
        except (pytest.skip.Exception, RuntimeError) as exc:
            self._context = None
            self.notes.append(f"PostgreSQL not measured: {exc}")
            return None

    def __exit__(self, *exc_info) -> None:
        if self._context is not None:
            self._context.__exit__(*exc_info)


def freshness(settings: BenchSettings, here: Path, models_dir: Path, artists) -> dict:
    """Acknowledgement on replica A to a Recommend answer on replica B for a new listener."""
    import grpc

    from musicrec.v1 import index_pb2, index_pb2_grpc

    url = f"sqlite:///{here / 'freshness.db'}"
    replicas = [IndexServer(models_dir, here / f"freshness-{name}.log", extra_args=("--events", url))
                for name in "ab"]
    rng = random.Random(1)
    delays, gave_up = [], 0
    try:
        for server in replicas:
            server.start()
        with grpc.insecure_channel(replicas[0].target) as a, grpc.insecure_channel(replicas[1].target) as b:
            record = index_pb2_grpc.IndexServiceStub(a).RecordPlays
            recommend = index_pb2_grpc.IndexServiceStub(b).Recommend
            for n in range(settings.live_freshness_samples):
                time.sleep(rng.uniform(0, 0.1))  # no lock-step with the tailer's polls
                user = f"bench-fresh-{n}"
                record(index_pb2.RecordPlaysRequest(request_id=user, plays=[
                    index_pb2.PlayEvent(user_id=user, artist_id=rng.choice(artists)) for _ in range(5)]), timeout=30)
                acked = time.perf_counter()
                while time.perf_counter() - acked < GIVE_UP_S:
                    try:
                        if recommend(index_pb2.RecommendRequest(user_id=user), timeout=30).artists:
                            break
                    except grpc.RpcError as error:
                        if error.code() != grpc.StatusCode.NOT_FOUND:
                            raise
                    time.sleep(POLL_S)
                else:
                    gave_up += 1
                delays.append(time.perf_counter() - acked)
    finally:
        for server in replicas:
            server.stop()
    summary = latency_summary_ms(delays)
    log.info("live freshness: p50 %.0f ms, p99 %.0f ms", summary["p50_ms"], summary["p99_ms"])
    return {**summary, "samples": len(delays), "gave_up": gave_up, "poll_ms": POLL_S * 1e3,
            "give_up_s": GIVE_UP_S, "command": replicas[0].command}


class _Writer:
    """RecordPlays at ``WRITE_RATE`` plays/s in batches of ``WRITE_BATCH`` while in the block."""

    def __init__(self, target: str, users, artists):
        self.target, self.users, self.artists = target, users, artists
        self.plays = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-writer", daemon=True)

    def _loop(self) -> None:
        import grpc

        rng = random.Random(2)
        with grpc.insecure_channel(self.target) as channel:
            call = channel.unary_unary(METHOD)
            started = time.perf_counter()
            for n in itertools.count():
                due = started + n * WRITE_BATCH / WRITE_RATE
                if self._stop.wait(max(0.0, due - time.perf_counter())):
                    break
                call(_with_id(_plays_body(self.users, self.artists, WRITE_BATCH, rng), f"w{started}-{n}"), timeout=30)
                self.plays += WRITE_BATCH
            self.seconds = time.perf_counter() - started

    def __enter__(self) -> "_Writer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(30)


def serving_while_writing(settings: BenchSettings, here: Path, models_dir: Path, version_dir: Path, users,
                          artists) -> dict:
    from musicrec.v1 import index_pb2

    if not h2load.available():
        return {"ran": False, "note": "h2load (nghttp2-client) is not installed"}
    material = RequestMaterial.for_version(version_dir, here / "requests")
    asked = index_pb2.RecommendRequest.FromString(material.single["recommend"]).user_id
    others = [u for u in users if u != asked]  # the h2load listener stays off the live path
    server = IndexServer(models_dir, here / "writing.log",
                         extra_args=("--events", f"sqlite:///{here / 'writing.db'}")).start()
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    try:
        method = "/musicrec.v1.IndexService/Recommend"
        seen = h2load.verify_with_nghttp(server.port, method, material.bodies["recommend"])
        if seen["grpc_status"] != 0:
            raise RuntimeError(f"the h2load Recommend request is not a valid gRPC call: {seen}")
        for n in range(max(settings.runs, 4)):
            for mode in (("without", "with") if n % 2 == 0 else ("with", "without")):
                def load() -> dict:
                    return h2load.run(server.port, method, material.bodies["recommend"], seen["data_bytes"],
                                      here / "h2load.log", inflight=SERVING_INFLIGHT, duration_s=settings.load_seconds,
                                      warm_up_s=settings.warm_up_seconds).as_dict()
                if mode == "with":
                    with _Writer(server.target, others, artists) as writer:
                        row = load()
                    row["write_plays_per_s"] = writer.plays / writer.seconds
                else:
                    row = load()
                runs[mode].append(row)
                log.info("live serving %s writes: %.0f Recommend/s", mode, row["requests_per_s"])
    finally:
        server.stop()
    rps = {mode: median(r["requests_per_s"] for r in done) for mode, done in runs.items()}
    return {"ran": True, "inflight": SERVING_INFLIGHT, "write_rate": WRITE_RATE, "write_batch": WRITE_BATCH,
            "without_requests_per_s": rps["without"], "with_requests_per_s": rps["with"],
            "ratio": rps["with"] / rps["without"] if rps["without"] else float("nan"),
            "errors_total": sum(r["grpc_errors"] for done in runs.values() for r in done),
            "write_plays_per_s": median(r["write_plays_per_s"] for r in runs["with"]), "per_run": runs}


# -- quality -------------------------------------------------------------------------------------

def split_plays(data, seed: int, max_users: int | None):
    """(training rows mask, retraining rows mask, [(user index, target row, streamed rows, new)]);
    only the first ``max_users`` listeners (None: all) are trained on and evaluated."""
    rng = np.random.default_rng(seed)
    indptr = np.searchsorted(data.users, np.arange(data.num_users + 1))
    eligible = np.flatnonzero(np.diff(indptr)[:max_users] >= 5)
    new = set(rng.choice(eligible, size=int(round(NEW_FRACTION * eligible.size)), replace=False).tolist())
    train = data.users < (max_users or data.num_users)
    retrain = train.copy()
    cases = []
    for user in eligible.tolist():
        rows = rng.permutation(np.arange(indptr[user], indptr[user + 1]))
        held = max(2, int(round(STREAM_FRACTION * rows.size)))
        target, streamed = rows[0], rows[1:held]
        if user in new:
            streamed = rows[1:]
            train[rows] = False
        else:
            train[rows[:held]] = False
        retrain[target] = False
        cases.append((user, int(target), streamed, user in new))
    return train, retrain, cases


def _publish(data, mask: np.ndarray, directory: Path, settings: BenchSettings, seed: int):
    """A version trained (the trainer's pipeline) on ``data[mask]``, written as HetRec files."""
    from index_service.serving_model import ServingModel
    from model_store import load_version

    import dataclasses

    files = directory / "data"
    files.mkdir(parents=True)
    lines = [f"{data.user_ids[u]}\t{data.artist_ids[a]}\t{w:g}\n"
             for u, a, w in zip(data.users[mask], data.artists[mask], data.weights[mask].tolist())]
    (files / "user_artists.dat").write_text("userID\tartistID\tweight\n" + "".join(lines), encoding="utf-8")
    shutil.copy(data_path(settings, LASTFM) / "artists.dat", files)
    version = publish_trained(directory / "models", "hetrec:data", dataclasses.replace(settings, data_dir=directory),
                              epochs=settings.quality_epochs, seed=seed)
    return ServingModel(load_version(version))


def _quality_seed(data, seed: int, here: Path, settings: BenchSettings) -> dict:
    from index_service.live import LiveState, recorded_changes
    from index_service.serving_model import RecommendQuery
    from musicrec.rpc.errors import NotFound
    from play_log import Play

    train, retrain, cases = split_plays(data, seed, settings.quality_max_users)
    stale = _publish(data, train, here / f"seed{seed}-stale", settings, seed)
    full = _publish(data, retrain, here / f"seed{seed}-retrain", settings, seed)
    state = LiveState(max_users=len(cases))
    plays = [Play(str(data.user_ids[user]), str(data.artist_ids[data.artists[row]]), float(data.weights[row]), 0.0)
             for user, _, streamed, _ in cases for row in streamed.tolist()]
    state.plays.apply(recorded_changes(1, plays))
    hits: dict[str, dict[str, list[float]]] = {"known": {}, "new": {}}

    def hit(model, query, target: str, live=None) -> float:
        try:
            ranking = model.recommend(query, live)
        except NotFound:  # a listener the version does not know
            return 0.0
        return float(target in {str(model.artist_ids[i]) for i in ranking.indices.tolist()})

    for user, target_row, _, new in cases:
        query = RecommendQuery(user_id=str(data.user_ids[user]), k=10)
        target = str(data.artist_ids[data.artists[target_row]])
        found = hits["new" if new else "known"]
        found.setdefault("stale", []).append(hit(stale, query, target))
        found.setdefault("live", []).append(hit(stale, query, target, state.listener(stale, query.user_id)))
        found.setdefault("retrain", []).append(hit(full, query, target))
    stale.close()
    full.close()
    return hits


def live_quality(settings: BenchSettings, here: Path) -> dict:
    names, notes = present_datasets(settings, (LASTFM,))
    if not names:
        return {"ran": False, "note": "; ".join(notes)}
    from bench.fold_in import load

    data = load(f"hetrec:{data_path(settings, LASTFM)}")
    pooled: dict[str, dict[str, list[float]]] = {"known": {}, "new": {}}
    seeds = 0
    while seeds < (1 if settings.quick else MAX_SEEDS):
        for group, found in _quality_seed(data, seeds, here, settings).items():
            for answer, values in found.items():
                pooled[group].setdefault(answer, []).extend(values)
        seeds += 1
        if len(pooled["new"]["live"]) >= settings.live_min_new_users:
            break
    groups = {}
    for group, found in pooled.items():
        row = {f"{answer}_hr10": float(np.mean(values)) for answer, values in found.items()}
        row.update(users=len(found["live"]), live_vs_retrain=row["live_hr10"] / row["retrain_hr10"],
                   live_vs_stale=row["live_hr10"] / row["stale_hr10"] if row["stale_hr10"] else float("inf"))
        groups[group] = row
        log.info("live quality %s listeners: %s", group, row)
    return {"ran": True, "dataset": LASTFM, "seeds": seeds, "epochs": settings.quality_epochs,
            "max_users": settings.quality_max_users, "groups": groups}


def run(settings: BenchSettings, workdir: Path) -> dict:
    version_dir = lastfm_version(workdir, settings)
    here = workdir / "live"
    shutil.rmtree(here, ignore_errors=True)  # a log left by an earlier run would answer at once
    here.mkdir(parents=True)
    users = np.load(version_dir / "user_ids.npy", allow_pickle=False).tolist()
    artists = np.load(version_dir / "artist_ids.npy", allow_pickle=False).tolist()
    models_dir = version_dir.parent
    return {"record": record_throughput(settings, here, models_dir, users, artists),
            "freshness": freshness(settings, here, models_dir, artists),
            "writing": serving_while_writing(settings, here, models_dir, version_dir, users, artists),
            "quality": live_quality(settings, here / "quality")}
