"""The ``tags`` part of ``make bench``: filtered recall and latency by selectivity, diversity, and
the tag coherence figure (issue 22).

- Filtered recall@10 against the exact filtered answer, at filters leaving about 0.01%, 0.1%, 1%,
  10% and 50% of the artists: on the Last.fm 2K model (trained as ``bench.models`` trains it, its
  HetRec tags; the filter for a share is the tag whose artists come closest to it, or the most
  common tags together for shares no single tag reaches) and on a synthetic version of random
  factors (``scale_artists`` artists; each share a planted tag carried by that many random
  artists). Each version is served twice: as published (its manifest's method, the lists) and
  with Annoy forced without lists, so the planned path (exact over few rows, over-fetch for many)
  is measured where it can miss. A third synthetic version is published as full scale publishes:
  Annoy search and IVF lists (``ivf_settings``; the bench's few users would get exact lists), and
  served as published, so filters read from approximate lists are measured where they can miss.
  recall = |answer's top 10 & exact top 10| / |exact top 10|.
- Filtered Recommend p50 in-process (``ServingModel.recommend``, BLAS on one thread) at each share,
  beside the unfiltered p50, the same users in the same loop.
- Diversity on Last.fm 2K (leave-one-out split, the trainer's default hyperparameters): distinct
  top tags in the top 10 and HR@10 with ``max_per_tag`` = ``DIVERSITY_CAP`` and without.
- Over gRPC: Recommend against a real index process serving the Last.fm 2K version, h2load at
  ``GRPC_INFLIGHT`` in flight, unfiltered and filtered by the most common tag, alternated
  ``settings.runs`` pairs (``grpc_throughput``).
- Tag coherence: the share of SimilarArtists' top 10 that carry one of the query artist's top 3
  tags (``tag_coherence``), for that model and for random factors (the chance level); query
  artists drawn in proportion to their listeners (the quality table's figure), and uniformly
  among the artists with tags.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bench.models import LASTFM, data_path, lastfm_version
from bench.settings import BenchSettings
from index_service.serving_model import RecommendQuery, ServingModel, TagOptions
from model_store import load_version, publish_version
from model_store.artifacts import ArtistTags
from ranking.diversity import cap_per_group, top_tag_of
from ranking.filtered import exact_filtered_search, inner_product_space
from ranking.inner_product import user_query

log = logging.getLogger(__name__)

SHARES = (0.0001, 0.001, 0.01, 0.1, 0.5)
RECALL_TARGET = 0.98
P50_RATIO_TARGET = 2.0
DIVERSITY_CAP = 2
DIVERSITY_TAGS_TARGET = 4.0
DIVERSITY_HR_TARGET = 0.9
COHERENCE_QUERIES = 2_000
GRPC_INFLIGHT = 16
GRPC_RATIO_TARGET = 0.7
K = 10


def tag_coherence(artist_factors: np.ndarray, tags: ArtistTags, listeners: np.ndarray | None = None, k: int = K,
                  top: int = 3, queries: int = COHERENCE_QUERIES, seed: int = 0) -> float | None:
    """Mean over query artists of the share of their k most cosine-similar artists (itself
    excluded) that carry one of the query's ``top`` heaviest tags. Queries: ``queries`` draws
    (seeded) among the artists with tags, in proportion to ``listeners`` when given (SimilarArtists
    is asked about the artists people listen to), else uniformly. None when no artist has tags."""
    with_tags = np.flatnonzero(np.diff(tags.indptr) > 0)
    if not with_tags.shape[0]:
        return None
    rng = np.random.default_rng(seed)
    if listeners is None:
        chosen = rng.choice(with_tags, size=min(queries, with_tags.shape[0]), replace=False)
    else:
        weight = np.asarray(listeners, dtype=np.float64)[with_tags]
        chosen = rng.choice(with_tags, size=queries, p=weight / weight.sum())
    chosen = np.sort(chosen)
    factors = np.asarray(artist_factors, dtype=np.float32)
    normalized = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    shares = []
    for start in range(0, chosen.shape[0], 256):
        block = chosen[start:start + 256]
        scores = normalized[block] @ normalized.T
        scores[np.arange(block.shape[0]), block] = -np.inf
        nearest = np.argpartition(-scores, k, axis=1)[:, :k]
        for query, found in zip(block.tolist(), nearest):
            first, end = int(tags.indptr[query]), int(tags.indptr[query + 1])
            wanted = tags.indices[first:min(first + top, end)]  # the query's own tags only
            carriers = np.zeros(factors.shape[0], dtype=bool)
            for t in wanted.tolist():
                carriers[tags.tag_artists[tags.tag_indptr[t]:tags.tag_indptr[t + 1]]] = True
            shares.append(float(carriers[found].mean()))
    return float(np.mean(shares))


def share_filters(tags: ArtistTags, num_artists: int) -> list[dict]:
    """Per target share: the tag names whose artists (any of them) come closest to it."""
    counts = np.asarray(tags.counts)
    out = []
    for share in SHARES:
        goal = share * num_artists
        if counts.shape[0] and counts[0] >= goal:
            best = int(np.argmin(np.abs(counts - goal)))
            names = [str(tags.names[best])]
        else:  # the most common tags together until their union reaches the share
            covered = np.zeros(num_artists, dtype=bool)
            names = []
            for t in range(counts.shape[0]):
                covered[tags.tag_artists[tags.tag_indptr[t]:tags.tag_indptr[t + 1]]] = True
                names.append(str(tags.names[t]))
                if covered.sum() >= goal:
                    break
        rows = np.unique(np.concatenate([tags.tag_artists[tags.tag_indptr[t]:tags.tag_indptr[t + 1]]
                                         for t in (np.flatnonzero(tags.names == n)[0] for n in names)]))
        out.append({"target_share": share, "tags": names, "artists": int(rows.shape[0]),
                    "share": rows.shape[0] / num_artists})
    return out


def _p50_ms(times: list[float]) -> float:
    return float(np.median(times) * 1e3) if times else float("nan")


def filtered_figures(model: ServingModel, filters: list[dict], users: np.ndarray, label: str) -> list[dict]:
    """Recall@10 against the exact filtered answer and p50 ms, per filter, over ``users``; the
    unfiltered p50 of the same users alongside (same loop)."""
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        for flt in filters:
            recalls, filtered_s, plain_s = [], [], []
            for user in users.tolist():
                user_id = str(model.user_ids[user])
                query = RecommendQuery(user_id, k=K, tag_options=TagOptions(tags=tuple(flt["tags"])))
                start = time.perf_counter()
                ranking = model.recommend(query)
                filtered_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                model.recommend(RecommendQuery(user_id, k=K))
                plain_s.append(time.perf_counter() - start)
                tagged = model.tag_request(query)
                exclude = model.seen_indices[model.seen_indptr[user]:model.seen_indptr[user + 1]]
                space = inner_product_space(model.recommend_search, user_query(model.user_factors[user]))
                exact, _ = exact_filtered_search(space, K, model.artist_filter(tagged, None, exclude))
                if exact.shape[0]:
                    recalls.append(len(set(exact.tolist()) & set(ranking.indices.tolist())) / exact.shape[0])
            rows.append({**flt, "model": label, "method": model.recommend_params.method,
                         "lists": model.recommend_top is not None, "users": int(users.shape[0]),
                         "recall_at_10": float(np.mean(recalls)) if recalls else None,
                         "p50_ms": _p50_ms(filtered_s), "unfiltered_p50_ms": _p50_ms(plain_s),
                         "p50_ratio": _p50_ms(filtered_s) / max(_p50_ms(plain_s), 1e-9)})
            log.info("tags %s %s share %.4f%%: recall %.4f, p50 %.4f ms (unfiltered %.4f ms)", label,
                     rows[-1]["method"], flt["share"] * 100, rows[-1]["recall_at_10"] or 0, rows[-1]["p50_ms"],
                     rows[-1]["unfiltered_p50_ms"])
    return rows


def _served(version_dir: Path, **kwargs) -> ServingModel:
    model = ServingModel(load_version(version_dir), **kwargs)
    model.warm_up()
    return model


AS_PUBLISHED = ({},)
BOTH_WAYS = ({}, {"recommend_method": "annoy", "precomputed": False})


def _figures(version_dir: Path, label: str, users: np.ndarray, ways: tuple[dict, ...] = BOTH_WAYS) -> list[dict]:
    """The figures with the version served each of ``ways`` (``ServingModel`` keyword arguments;
    ``BOTH_WAYS``: as published, and with Annoy forced and no lists)."""
    rows = []
    for kwargs in ways:
        model = _served(version_dir, **kwargs)
        try:
            rows += filtered_figures(model, share_filters(model.tags, model.num_artists), users, label)
        finally:
            model.close()
    return rows


def synthetic_settings():
    """How the synthetic version is published: the search method and lists as measured, Annoy
    measured at any size (``exact_only_up_to`` 0: the quick run's catalog is under the trainer's
    line, and the part times the Annoy path too)."""
    from ranking import BuildSettings

    return BuildSettings(sample_size=100, tuning_budget_s=10.0, similar_n=0, exact_only_up_to=0)


def ivf_settings():
    """The synthetic version published as full scale publishes it: Annoy search and IVF lists
    (lists are exact below ``ranking.precompute.EXACT_UP_TO`` queries x artists, which the
    bench's few users are)."""
    return dataclasses.replace(synthetic_settings(), method="annoy", exact_up_to=0)


def synthetic_version(directory: Path, num_users: int, num_artists: int, seed: int = 0, build=None) -> Path:
    """A version of random factors whose tags are one planted tag per share in ``SHARES``
    (``share-<percent>``, carried by that many random artists) plus one of 20 "genres" per artist
    (the top tag, for diversity); ``build``: its ``BuildSettings`` (None: ``synthetic_settings``)."""
    from bench.history_batch import random_artifacts
    from ranking import build_indexes

    rng = np.random.default_rng(seed)
    artifacts = random_artifacts(num_users, num_artists, 64, seed)
    rows, names, weights = [np.arange(num_artists)], [np.char.add("genre ", (np.arange(num_artists) % 20).astype(str))], \
        [np.full(num_artists, 10.0)]
    for share in SHARES:
        n = max(1, round(share * num_artists))
        rows.append(np.sort(rng.choice(num_artists, size=n, replace=False)))
        names.append(np.full(n, f"share-{share * 100:g}%"))
        weights.append(np.ones(n))
    tags = ArtistTags.from_triples(num_artists, np.concatenate(rows), np.concatenate(names), np.concatenate(weights))
    artifacts = dataclasses.replace(artifacts, tags=tags)
    indexes = build_indexes(artifacts, build or synthetic_settings())
    manifest = publish_version(directory, artifacts, indexes=indexes, data_source="bench: random factors, planted tags",
                               data_fingerprint="0" * 64, num_interactions=int(artifacts.seen_indptr[-1]),
                               hyperparameters={"factors": 64}, metrics={}, keep=10)
    return directory / str(manifest.model_version)


def diversity_figures(settings: BenchSettings) -> dict:
    """HR@10 and distinct top tags in the top 10, with and without the cap, on a leave-one-out
    split of Last.fm 2K (the quality part's first split seed; the trainer's default
    hyperparameters, trained with that seed), and the model's tag coherence."""
    from bench.quality import FORMATS
    from trainer_service.bpr import BPRTrainer
    from trainer_service.data import load_files
    from trainer_service.evaluation import leave_one_out_split, sample_heldout
    from trainer_service.hyperparameters import Hyperparameters

    data = load_files(data_path(settings, LASTFM), FORMATS[LASTFM])
    if data.tags is None:
        return {"ran": False, "note": "the Last.fm 2K source carries no tags"}
    split_seed = settings.quality_split_seeds[0]
    split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists,
                                seed=split_seed)
    selection = sample_heldout(split, settings.quality_max_users, split_seed)
    hp = Hyperparameters(seed=split_seed).resolved(data.num_interactions, data.num_users)
    if settings.quality_epochs is not None:
        hp = hp.with_overrides(epochs=settings.quality_epochs)
    with BPRTrainer(split.train_users, split.train_artists, split.train_weights, split.num_users,
                    split.num_artists, hp) as trainer:
        for _ in range(hp.epochs):
            trainer.train_epoch()
        factors = trainer.factors()
    groups = top_tag_of(data.tags.indptr, data.tags.indices)
    results = {"plain": [], "diverse": []}
    tags_seen = {"plain": [], "diverse": []}
    depth = K * 20
    for at in np.asarray(selection).tolist():
        user, target = int(split.heldout_users[at]), int(split.heldout_artists[at])
        scores = factors.artist_factors @ factors.user_factors[user] + factors.artist_bias
        seen = split.train_artists[split.train_indptr[user]:split.train_indptr[user + 1]]
        scores[seen] = -np.inf
        order = np.argpartition(-scores, depth)[:depth]
        order = order[np.lexsort((order, -scores[order]))]
        for name, top in (("plain", order[:K]), ("diverse", order[cap_per_group(order, groups, DIVERSITY_CAP)][:K])):
            results[name].append(target in top.tolist())
            top_tags = groups[top]
            tags_seen[name].append(len(set(top_tags[top_tags >= 0].tolist())))
    out = {"ran": True, "dataset": LASTFM, "users": len(results["plain"]), "cap": DIVERSITY_CAP,
           "epochs": hp.epochs}
    for name in ("plain", "diverse"):
        out[f"{name}_hr10"] = float(np.mean(results[name]))
        out[f"{name}_distinct_top_tags"] = float(np.mean(tags_seen[name]))
    out["hr_ratio"] = out["diverse_hr10"] / out["plain_hr10"] if out["plain_hr10"] else None
    listeners = data.listeners_per_artist()
    random_factors = np.random.default_rng(0).normal(size=factors.artist_factors.shape)
    out["tag_coherence"] = tag_coherence(factors.artist_factors, data.tags, listeners)
    out["random_tag_coherence"] = tag_coherence(random_factors, data.tags, listeners)
    out["uniform_tag_coherence"] = tag_coherence(factors.artist_factors, data.tags)
    out["uniform_random_tag_coherence"] = tag_coherence(random_factors, data.tags)
    return out


def grpc_throughput(version_dir: Path, settings: BenchSettings, workdir: Path) -> dict:
    """Recommend requests/s over gRPC against one ``python -m index_service`` process serving
    ``version_dir``: the same user unfiltered and with ``tags`` = the version's most common tag,
    h2load at ``GRPC_INFLIGHT`` in flight, ``settings.runs`` alternated pairs; medians and their
    ratio. Skipped (a note) without h2load."""
    from bench import h2load
    from bench.serving import METHODS, IndexServer, VersionSwapper
    from musicrec.v1 import index_pb2

    if not h2load.available():
        return {"ran": False, "note": "h2load is not installed"}
    loaded = load_version(version_dir)
    try:
        user, tag = str(loaded.artifacts.user_ids[0]), str(loaded.tags.names[0])
        carriers, artists = int(loaded.tags.counts[0]), loaded.artifacts.num_artists
    finally:
        loaded.close()
    here = workdir / "tags-grpc"
    models_dir = here / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    VersionSwapper(version_dir, models_dir, interval_s=0).publish_one()  # hard links: no copy
    bodies = {
        "unfiltered": h2load.write_body(here / "unfiltered.bin",
                                        index_pb2.RecommendRequest(user_id=user, k=K).SerializeToString()),
        "filtered": h2load.write_body(here / "filtered.bin",
                                      index_pb2.RecommendRequest(user_id=user, k=K, tags=[tag]).SerializeToString()),
    }
    method = METHODS["recommend"]
    server = IndexServer(models_dir, here / "index-service.log").start()
    runs: dict[str, list[float]] = {"unfiltered": [], "filtered": []}
    try:
        sizes = {}
        for name, body in bodies.items():
            seen = h2load.verify_with_nghttp(server.port, method, body)
            if seen["grpc_status"] != 0:
                raise RuntimeError(f"{name} Recommend failed: {seen}")
            sizes[name] = seen["data_bytes"]
        for _ in range(settings.runs):
            for name, body in bodies.items():
                run = h2load.run(server.port, method, body, sizes[name], here / f"{name}.log", inflight=GRPC_INFLIGHT,
                                 duration_s=settings.load_seconds, warm_up_s=settings.warm_up_seconds)
                if run.grpc_errors:
                    raise RuntimeError(f"{name}: {run.grpc_errors} failed calls ({run.command})")
                runs[name].append(run.requests_per_s)
    finally:
        server.stop()
    unfiltered, filtered = float(np.median(runs["unfiltered"])), float(np.median(runs["filtered"]))
    return {"ran": True, "tag": tag, "artists_with_tag": carriers, "share": carriers / artists, "inflight": GRPC_INFLIGHT, "pairs": settings.runs,
            "unfiltered_per_s": unfiltered, "filtered_per_s": filtered, "per_run": runs,
            "ratio": filtered / unfiltered if unfiltered else None}


def run(settings: BenchSettings, workdir: Path) -> dict:
    out: dict = {"shares": list(SHARES), "k": K, "notes": []}
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    try:
        lastfm = lastfm_version(workdir, settings)
    except FileNotFoundError as exc:
        out["notes"].append(f"Last.fm 2K skipped: {exc}")
        lastfm = None
    if lastfm is not None:
        probe = ServingModel(load_version(lastfm))
        users = np.sort(rng.choice(probe.num_users, size=min(settings.tags_users, probe.num_users), replace=False))
        has_tags = probe.tags is not None
        probe.close()
        if has_tags:
            rows += _figures(lastfm, f"{LASTFM} ({probe.num_artists:,} artists)", users)
            out["grpc"] = grpc_throughput(lastfm, settings, workdir)
        else:
            out["notes"].append("the Last.fm 2K version carries no tags")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        started = time.perf_counter()
        version = synthetic_version(Path(tmp) / "models", settings.tags_users, settings.tags_artists)
        out["synthetic_build_s"] = time.perf_counter() - started
        users = np.arange(settings.tags_users)
        rows += _figures(version, f"synthetic ({settings.tags_artists:,} artists)", users)
        # As full scale serves: Annoy and IVF lists, filters read from the lists where they hold them.
        ivf = synthetic_version(Path(tmp) / "models-ivf", settings.tags_users, settings.tags_artists,
                                build=ivf_settings())
        rows += _figures(ivf, f"synthetic ({settings.tags_artists:,} artists, IVF lists)", users, AS_PUBLISHED)
    out["filtered"] = rows
    out["diversity"] = diversity_figures(settings)
    return out
