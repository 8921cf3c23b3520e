"""End to end: the trainer and the index service as separate OS processes sharing a temporary
models dir, driven over gRPC.

The trainer trains on the tiny synthetic preset (planted genres); once the index serves version 1,
Recommend and SimilarArtists must mostly stay inside the planted genres (the generator's truth,
regenerated here from the same seed). Then the trainer trains again while client tasks call
Recommend continuously: version 2 gets served and not one request fails.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from musicrec.rpc.channel_config import channel_options
from musicrec.v1 import index_pb2, index_pb2_grpc, model_pb2, trainer_pb2, trainer_pb2_grpc
from service_processes import index_service, trainer
from trainer_service.data import generate

pytestmark = pytest.mark.slow

SEED = 11
SOURCE = trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=trainer_pb2.SYNTHETIC_SIZE_TINY, seed=SEED))
# Enough epochs for the genres to show on 300 users x 200 artists, few enough to take seconds.
HYPERPARAMETERS = model_pb2.Hyperparameters(epochs=15, factors=16)
CLIENTS = 4
WAIT_S = 180.0  # hang protection only
OPTIONS = channel_options(["musicrec.v1.IndexService", "musicrec.v1.TrainerService"])


async def train(trainer_stub) -> trainer_pb2.TrainingJob:
    job = await trainer_stub.StartTraining(trainer_pb2.StartTrainingRequest(source=SOURCE,
                                                                             hyperparameters=HYPERPARAMETERS))
    updates = [u async for u in trainer_stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id))]
    assert updates[-1].state == trainer_pb2.JOB_STATE_SUCCEEDED, updates[-1].error
    return updates[-1]


async def served_version(index_stub) -> int:
    try:
        info = await index_stub.GetIndexInfo(index_pb2.GetIndexInfoRequest())
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        return 0
    return info.model.version if info.HasField("model") else 0


async def wait_served(index_stub, version: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while await served_version(index_stub) < version:
        assert time.monotonic() < deadline, f"version {version} never served"
        await asyncio.sleep(0.1)


def genre_truth():
    """(artist id -> genre, user id -> set of the user's planted genres) from the generator."""
    data = generate("tiny", seed=SEED)
    interactions = data.interactions
    artist_genre = dict(zip(interactions.artist_ids.tolist(), data.artist_genres.tolist()))
    user_genres = {uid: {int(main), int(second)} - {-1} for uid, main, second in
                   zip(interactions.user_ids.tolist(), data.user_genres, data.user_second_genres)}
    return artist_genre, user_genres, data


def test_train_serve_and_retrain_under_load(tmp_path):
    models = tmp_path / "models"
    index = index_service(tmp_path, models).start()
    trainer_process = trainer(tmp_path, models).start()
    artist_genre, user_genres, data = genre_truth()
    # The 20 most active users: enough history for their genres to be learnable.
    activity = np.bincount(data.interactions.users, minlength=data.interactions.num_users)
    users = [str(data.interactions.user_ids[u]) for u in np.argsort(-activity, kind="stable")[:20]]

    async def main():
        async with grpc.aio.insecure_channel(trainer_process.address, options=OPTIONS) as tchannel, \
                grpc.aio.insecure_channel(index.address, options=OPTIONS) as ichannel:
            trainer_stub = trainer_pb2_grpc.TrainerServiceStub(tchannel)
            index_stub = index_pb2_grpc.IndexServiceStub(ichannel)
            first = await train(trainer_stub)
            assert first.published_version == 1
            await wait_served(index_stub, 1)

            recommendations = {}
            for user in users:
                reply = await index_stub.Recommend(index_pb2.RecommendRequest(user_id=user, k=10))
                assert reply.model_version == 1 and len(reply.artists) == 10
                recommendations[user] = reply
            popular = str(data.interactions.artist_ids[np.argmax(data.interactions.listeners_per_artist())])
            similar = await index_stub.SimilarArtists(index_pb2.SimilarArtistsRequest(artist_id=popular, k=10))

            # Retrain while clients call Recommend continuously (bounded by time and count).
            counts = {"ok": 0, "failed": [], "versions": set()}
            stop = asyncio.Event()

            async def client(i: int):
                deadline = time.monotonic() + WAIT_S
                n = 0
                while not stop.is_set() and time.monotonic() < deadline and n < 100_000:
                    n += 1
                    try:
                        user = users[(i + n) % len(users)]
                        reply = await index_stub.Recommend(index_pb2.RecommendRequest(user_id=user, k=10))
                        counts["ok"] += 1
                        counts["versions"].add(reply.model_version)
                    except grpc.aio.AioRpcError as exc:
                        counts["failed"].append(exc.code())
                    await asyncio.sleep(0.005)  # leave CPU to the training on a 2-core machine

            tasks = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
            second = await train(trainer_stub)
            await wait_served(index_stub, second.published_version)
            # A few more calls on the new version, then stop.
            seen_before = counts["ok"]
            while counts["ok"] < seen_before + 50:
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*tasks)
            return first, second, recommendations, similar, counts

    try:
        first, second, recommendations, similar, counts = asyncio.run(asyncio.wait_for(main(), 600))
    finally:
        trainer_status, index_status = trainer_process.stop(), index.stop()
    assert (trainer_status, index_status) == (0, 0), trainer_process.tail() + index.tail()

    # Known-answer-ish: recommendations mostly in the user's planted genres, far above the share
    # of the catalog those genres hold (what a genre-blind ranking would get on average).
    in_genre = [np.mean([artist_genre[a.artist_id] in user_genres[u] for a in reply.artists])
                for u, reply in recommendations.items()]
    catalog_share = [np.mean([g in user_genres[u] for g in artist_genre.values()]) for u in recommendations]
    print(f"in-genre share of top-10: {np.mean(in_genre):.2f} (catalog share {np.mean(catalog_share):.2f}); "
          f"{counts['ok']} Recommend calls during the retraining, versions {sorted(counts['versions'])}")
    assert np.mean(in_genre) >= 0.75, (np.mean(in_genre), np.mean(catalog_share))
    assert np.mean(in_genre) > np.mean(catalog_share) + 0.2
    assert all(a.name for reply in recommendations.values() for a in reply.artists)  # names are served
    query_genre = artist_genre[similar.artist.artist_id]
    assert np.mean([artist_genre[a.artist_id] == query_genre for a in similar.artists]) >= 0.5
    assert all(-1.0 <= a.score <= 1.0 for a in similar.artists)

    assert second.published_version == 2
    assert counts["failed"] == [], counts["failed"][:5]
    assert counts["versions"] == {1, 2}, counts["versions"]
