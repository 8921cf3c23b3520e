"""Timing of RecommendForHistory and BatchRecommend, in-process (run by hand, not by ``make bench``).

    .venv/bin/python -m bench.history_batch [--artists 17632] [--users 2000] [--json]

Publishes a version with random factors at Last.fm 2K's size (17,632 artists, 64 factors) into a
temporary directory, then measures:

- RecommendForHistory: p50/p90 of ``ServingModel.recommend_for_history`` plus response encoding
  for 100-artist histories (random artists and plays), k = 10.
- BatchRecommend against single calls, both over real gRPC in this process (an IndexServiceApp
  on port 0 and a grpc.aio client, as tests/test_index_service.py runs them): requests/s of
  single Recommend calls (one at a time, and 16 in flight) against BatchRecommend calls of 100,
  for default requests (answered from the precomputed lists) and include_seen requests (searched:
  one matrix product per batch on an exact-search version).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from index_service.app import IndexServiceApp, IndexServiceConfig  # noqa: E402
from index_service.response_encoding import ResponseEncoder  # noqa: E402
from index_service.serving_model import ServingModel  # noqa: E402
from model_store import ModelArtifacts, load_version, publish_version  # noqa: E402
from model_store.ann_build import BuildSettings  # noqa: E402
from musicrec.rpc.server import ServerConfig  # noqa: E402
from musicrec.v1 import index_pb2, index_pb2_grpc  # noqa: E402


def random_artifacts(num_users: int, num_artists: int, factors: int, seed: int = 0) -> ModelArtifacts:
    rng = np.random.default_rng(seed)
    seen = [np.sort(rng.choice(num_artists, size=50, replace=False)) for _ in range(num_users)]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum([s.size for s in seen], out=indptr[1:])
    return ModelArtifacts(
        user_ids=np.array([f"u{u}" for u in range(num_users)]),
        user_factors=rng.normal(0, 0.3, (num_users, factors)).astype(np.float32),
        artist_ids=np.array([f"a{a}" for a in range(num_artists)]),
        artist_names=np.array([f"Artist {a}" for a in range(num_artists)]),
        artist_factors=rng.normal(0, 0.3, (num_artists, factors)).astype(np.float32),
        artist_bias=rng.normal(0, 0.5, num_artists).astype(np.float32),
        artist_listeners=rng.integers(1, 1000, num_artists).astype(np.int32),
        seen_indptr=indptr,
        seen_indices=np.concatenate(seen).astype(np.int32),
    )


def history_timing(model: ServingModel, reps: int, rng) -> dict:
    encoder = ResponseEncoder(model.artist_ids, model.artist_names, model.version)
    times = []
    for _ in range(reps):
        artists = rng.choice(model.num_artists, size=100, replace=False)
        history = [(str(model.artist_ids[a]), float(p)) for a, p in zip(artists, rng.integers(1, 5000, 100))]
        start = time.perf_counter()
        answer = model.recommend_for_history(history, 10)
        encoder.recommend(answer.ranking, answer.unknown_artist_ids, answer.popularity_fallback)
        times.append(time.perf_counter() - start)
    times_ms = np.array(times) * 1e3
    return {"history_p50_ms": float(np.percentile(times_ms, 50)), "history_p90_ms": float(np.percentile(times_ms, 90))}


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artists", type=int, default=17_632)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10, help="batches of 100 per measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = Path(tmp) / "models"
        manifest = publish_version(models_dir, random_artifacts(args.users, args.artists, args.factors),
                                   data_source="timing: random factors", data_fingerprint="0" * 64,
                                   num_interactions=args.users * 50, hyperparameters={"regularization": 0.003},
                                   metrics={}, build_settings=BuildSettings(n_jobs=1, tuning_budget_s=5.0))
        model = ServingModel(load_version(models_dir / str(manifest.model_version)))
        results = {"artists": args.artists, "factors": args.factors, "recommend_method": model.recommend_params.method}
        try:
            model.warm_up()
            results.update(history_timing(model, args.reps, rng))
        finally:
            model.close()
        results.update(asyncio.run(grpc_timing(models_dir, args.users, args.rounds, rng)))
    print(json.dumps(results, indent=None if not args.json else 2))
    return results


if __name__ == "__main__":
    main()
