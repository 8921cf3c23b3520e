"""Timing of RecommendForHistory and BatchRecommend, in-process, for the ``history`` part of
``make bench`` (``bench/history.py``).

Publishes a version with random factors at Last.fm 2K's size (17,632 artists, 64 factors) and the
trainer's default hyperparameters in its manifest (the fold-in follows them) into a temporary
directory (exact search; the users' lists precomputed, no SimilarArtists lists: not timed here),
then measures:

- RecommendForHistory: p50/p90 of ``ServingModel.recommend_for_history`` plus response encoding
  for 100-artist histories (random artists and plays), k = 10, with BLAS on one thread as the
  index service runs it; beside it, in the same loop, the fold-in fit alone
  (``FoldIn.fit`` on the same history) and the rest of the request (lookups, search, encoding).
- BatchRecommend against single calls, both over real gRPC in this process (an IndexServiceApp
  on port 0 and a grpc.aio client, as tests/test_index_service.py runs them): requests/s of
  single Recommend calls (one at a time, and 16 in flight) against BatchRecommend calls of 100,
  for default requests (answered from the precomputed lists) and include_seen requests (searched:
  one matrix product per batch on an exact-search version).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from threadpoolctl import threadpool_limits

from index_service.app import IndexServiceApp, IndexServiceConfig
from index_service.response_encoding import ResponseEncoder
from index_service.serving_model import HistoryQuery, ServingModel
from model_store import ModelArtifacts, load_version, publish_version
from ranking import BuildSettings, build_indexes
from musicrec.rpc.server import ServerConfig
from musicrec.v1 import index_pb2, index_pb2_grpc
from trainer_service.hyperparameters import Hyperparameters  # no TensorFlow


def random_artifacts(num_users: int, num_artists: int, factors: int, seed: int = 0) -> ModelArtifacts:
    """A version's arrays of random factors: users ``u0..``, artists ``a0..``, 50 seen artists each."""
    rng = np.random.default_rng(seed)
    seen = [np.sort(rng.choice(num_artists, size=50, replace=False)) for _ in range(num_users)]
    artists = np.arange(num_artists).astype(str)
    return ModelArtifacts(
        user_ids=np.char.add("u", np.arange(num_users).astype(str)),
        user_factors=rng.normal(0, 0.3, (num_users, factors)).astype(np.float32),
        artist_ids=np.char.add("a", artists), artist_names=np.char.add("Artist ", artists),
        artist_factors=rng.normal(0, 0.3, (num_artists, factors)).astype(np.float32),
        artist_bias=rng.normal(0, 0.5, num_artists).astype(np.float32),
        artist_listeners=rng.integers(1, 1000, num_artists).astype(np.int32),
        seen_indptr=np.concatenate([[0], np.cumsum([s.size for s in seen])]).astype(np.int64),
        seen_indices=np.concatenate(seen).astype(np.int32),
    )


def _manifest_hyperparameters(factors: int) -> dict:
    """The trainer's default hyperparameters with ``factors`` as a manifest records them."""
    return Hyperparameters(factors=factors).manifest_dict()


def history_timing(model: ServingModel, reps: int, rng, history_length: int = 100) -> dict:
    """p50/p90 ms of a whole RecommendForHistory answer (fit, search, encoding) and, alternating
    with it on the same histories, of the fold-in fit alone; BLAS on one thread."""
    encoder = ResponseEncoder(model.artist_ids, model.artist_names, model.version)
    times, fits = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(reps):
            artists = rng.choice(model.num_artists, size=history_length, replace=False)
            plays = rng.integers(1, 5000, history_length).astype(np.float64)
            history = [(str(model.artist_ids[a]), float(p)) for a, p in zip(artists, plays)]
            start = time.perf_counter()
            answer = model.recommend_for_history(HistoryQuery(tuple(history), k=10))
            encoder.recommend(answer.ranking, answer.unknown_artist_ids, answer.popularity_fallback)
            times.append(time.perf_counter() - start)
            order = np.argsort(artists)
            start = time.perf_counter()
            model.fold_in.fit(artists[order], plays[order])
            fits.append(time.perf_counter() - start)
    times_ms, fits_ms = np.array(times) * 1e3, np.array(fits) * 1e3
    return {"history_length": history_length, "history_queries": reps,
            "history_p50_ms": float(np.percentile(times_ms, 50)), "history_p90_ms": float(np.percentile(times_ms, 90)),
            "fit_p50_ms": float(np.percentile(fits_ms, 50)), "fit_p90_ms": float(np.percentile(fits_ms, 90)),
            "fold_in_negatives": int(model.fold_in.pool.shape[0]),
            "fold_in_negative_candidates": int(model.fold_in.negative_candidates),
            "fold_in_hard_negatives": int(model.fold_in.hard_negatives),
            "fold_in_newton_steps": int(model.fold_in.newton_steps)}


async def grpc_timing(models_dir: Path, num_users: int, rounds: int, rng) -> dict:
    app = IndexServiceApp(IndexServiceConfig(models_dir=models_dir, server=ServerConfig(port=0), poll_interval_s=0.05))
    await app.start()
    out: dict = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = index_pb2_grpc.IndexServiceStub(channel)
            while True:
                try:
                    await stub.Recommend(index_pb2.RecommendRequest(user_id="u0"))
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            for label, include_seen in (("lists", False), ("searched", True)):
                requests = [index_pb2.RecommendRequest(user_id=f"u{u}", k=10, include_seen=include_seen)
                            for u in rng.integers(0, num_users, 100 * rounds)]
                start = time.perf_counter()
                for request in requests:
                    await stub.Recommend(request)
                sequential = len(requests) / (time.perf_counter() - start)
                start = time.perf_counter()
                for at in range(0, len(requests), 16):
                    await asyncio.gather(*(stub.Recommend(r) for r in requests[at:at + 16]))
                concurrent = len(requests) / (time.perf_counter() - start)
                start = time.perf_counter()
                for at in range(0, len(requests), 100):
                    await stub.BatchRecommend(index_pb2.BatchRecommendRequest(requests=requests[at:at + 100]))
                batched = len(requests) / (time.perf_counter() - start)
                out[label] = {"single_sequential_rps": round(sequential), "single_16_in_flight_rps": round(concurrent),
                              "batch_of_100_rps": round(batched),
                              "speedup_vs_sequential": round(batched / sequential, 1),
                              "speedup_vs_16_in_flight": round(batched / concurrent, 1)}
    finally:
        await app.stop(0)
    return out


def measure(artists: int, users: int, factors: int, reps: int, rounds: int) -> dict:
    """Publish a random-factor version of ``artists`` x ``factors`` with ``users`` users, then the
    in-process RecommendForHistory timing (``reps`` histories) and the gRPC single-versus-batch
    rates (``rounds`` batches of 100 per measurement)."""
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = Path(tmp) / "models"
        artifacts = random_artifacts(users, artists, factors)
        indexes = build_indexes(artifacts, BuildSettings(n_jobs=1, tuning_budget_s=2.0, method="exact", similar_n=0))
        manifest = publish_version(models_dir, artifacts, indexes=indexes,
                                   data_source="timing: random factors", data_fingerprint="0" * 64,
                                   num_interactions=users * 50, hyperparameters=_manifest_hyperparameters(factors),
                                   metrics={})
        model = ServingModel(load_version(models_dir / str(manifest.model_version)))
        results = {"artists": artists, "factors": factors, "users": users,
                   "recommend_method": model.recommend_params.method}
        try:
            model.warm_up()
            model.build_hash_indexes()
            results.update(history_timing(model, reps, rng))
        finally:
            model.close()
        results["batch"] = asyncio.run(grpc_timing(models_dir, users, rounds, rng))
    return results

