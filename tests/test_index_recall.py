"""Recall@10 of the served searches against brute force on a lastfm-2k-sized model, with the
Annoy path forced (the builder may choose exact for a catalog this small): every user (with and
without seen exclusion) and every artist.

The model: BPR factors (64) trained for a few epochs in numpy on the HetRec Last.fm 2K play
counts (1,892 users, 17,632 artists), published with the real builder, which tunes Annoy's
settings. Recall is tie-aware: a returned artist whose exact score equals the 10th best counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from index_service.serving_model import RecommendQuery, ServingModel, SimilarQuery
from model_store import ModelArtifacts, load_version, publish_version
from ranking import BuildSettings, build_indexes
from ranking.inner_product import user_query

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lastfm-2k"
MIN_RECALL = 0.95
K = 10


def numpy_bpr(users: np.ndarray, artists: np.ndarray, num_users: int, num_artists: int, *, factors: int = 64,
              epochs: int = 20, batch: int = 2048, learning_rate: float = 0.1, regularization: float = 0.01,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mini-batch SGD on the BPR objective (uniform negatives): (user factors, artist factors,
    artist bias). A stand-in with the geometry of a trained BPR model, for this test only."""
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal((num_users, factors)) * 0.01).astype(np.float32)
    q = (rng.standard_normal((num_artists, factors)) * 0.01).astype(np.float32)
    b = np.zeros(num_artists, dtype=np.float32)
    lr, reg = np.float32(learning_rate), np.float32(regularization)
    for _ in range(epochs):
        order = rng.permutation(users.shape[0])
        for start in range(0, order.shape[0], batch):
            idx = order[start:start + batch]
            u, i = users[idx], artists[idx]
            j = rng.integers(0, num_artists, idx.shape[0])
            pu, qi, qj = p[u], q[i], q[j]
            diff = qi - qj
            x = np.einsum("ij,ij->i", pu, diff) + b[i] - b[j]
            g = (lr / (1.0 + np.exp(np.clip(x, -30, 30)))).astype(np.float32)
            np.add.at(p, u, g[:, None] * diff - lr * reg * pu)
            np.add.at(q, i, g[:, None] * pu - lr * reg * qi)
            np.add.at(q, j, -g[:, None] * pu - lr * reg * qj)
            np.add.at(b, i, g - lr * reg * b[i])
            np.add.at(b, j, -g - lr * reg * b[j])
    return p, q, b


@pytest.fixture(scope="module")
def lastfm_version(tmp_path_factory):
    plays = DATA / "user_artists.dat"
    if not plays.exists():
        pytest.skip(f"HetRec Last.fm 2K data not found at {DATA}")
    raw = np.loadtxt(plays, skiprows=1, dtype=np.int64)
    user_ids, users = np.unique(raw[:, 0], return_inverse=True)
    artist_ids, artists = np.unique(raw[:, 1], return_inverse=True)
    order = np.lexsort((artists, users))
    users, artists = users[order].astype(np.int32), artists[order].astype(np.int32)
    num_users, num_artists = len(user_ids), len(artist_ids)
    user_factors, artist_factors, bias = numpy_bpr(users, artists, num_users, num_artists)
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=num_users), out=indptr[1:])
    artifacts = ModelArtifacts(
        user_ids=user_ids.astype(str), user_factors=user_factors,
        artist_ids=artist_ids.astype(str), artist_names=np.array([f"artist {a}" for a in artist_ids]),
        artist_factors=artist_factors, artist_bias=bias,
        artist_listeners=np.bincount(artists, minlength=num_artists).astype(np.int32),
        seen_indptr=indptr, seen_indices=artists,
    )
    models_dir = tmp_path_factory.mktemp("lastfm-models")
    manifest = publish_version(models_dir, artifacts, indexes=build_indexes(artifacts, BuildSettings(exact_only_up_to=0, listed_similar_index=True)),
                               data_source=f"{plays} (numpy BPR for tests)",
                               data_fingerprint="0" * 64, num_interactions=int(users.shape[0]),
                               hyperparameters={"factors": 64}, metrics={})
    loaded = load_version(models_dir / str(manifest.model_version))
    annoy = ServingModel(loaded, recommend_method="annoy", similar_method="annoy")
    exact = ServingModel(loaded, recommend_method="exact", similar_method="exact")
    with threadpool_limits(limits=1, user_api="blas"):  # as the service runs (see IndexServiceApp.start)
        yield annoy, exact
    annoy.close()


def _tie_aware_hits(found_scores: np.ndarray, truth_kth: float, wanted: int) -> int:
    return min(wanted, int(np.count_nonzero(found_scores >= truth_kth - 1e-5 * max(1.0, abs(truth_kth)))))


@pytest.mark.parametrize("include_seen", [False, True])
def test_recommend_recall_over_all_users(lastfm_version, include_seen):
    annoy, exact = lastfm_version
    assert annoy.recommend_params.method == "annoy"
    max_seen = max(np.diff(annoy.seen_indptr))
    # The Annoy path must really run, not its brute-force fallback for huge over-fetches.
    assert (K * annoy.recommend_params.candidates_per_result + max_seen) * 2 < annoy.num_artists
    items = annoy.recommend_search.items
    hits = total = 0
    for user_id in annoy.user_ids.tolist():
        truth = exact.recommend(RecommendQuery(user_id, k=K, include_seen=include_seen))
        found = annoy.recommend(RecommendQuery(user_id, k=K, include_seen=include_seen))
        query = user_query(annoy.user_factors[annoy.user_index(user_id)])
        hits += _tie_aware_hits(items[found.indices] @ query, float(truth.scores[-1]), len(truth.indices))
        total += len(truth.indices)
    recall = hits / total
    print(f"Recommend recall@10 over {len(annoy.user_ids)} users (include_seen={include_seen}): {recall:.4f}")
    assert recall >= MIN_RECALL


def test_similar_artists_recall_over_all_artists(lastfm_version):
    annoy, exact = lastfm_version
    assert annoy.similar_params.method == "annoy"
    assert (K * annoy.similar_params.candidates_per_result + 1) * 2 < annoy.num_artists
    normalized = annoy.similar_search.normalized
    normalized_t = annoy.similar_search.normalized_t
    hits = total = 0
    for start in range(0, annoy.num_artists, 2048):
        rows = np.arange(start, min(start + 2048, annoy.num_artists))
        sims = normalized[rows] @ normalized_t  # brute force for a block of artists
        sims[np.arange(rows.shape[0]), rows] = -np.inf
        kth = -np.partition(-sims, K - 1, axis=1)[:, K - 1]
        for row, artist in enumerate(rows.tolist()):
            found = annoy.similar(SimilarQuery(artist_id=annoy.artist_ids[artist], k=K)).ranking.indices
            assert artist not in found.tolist()
            hits += _tie_aware_hits(normalized[found] @ normalized[artist], float(kth[row]), K)
            total += K
    recall = hits / total
    print(f"SimilarArtists recall@10 over {annoy.num_artists} artists: {recall:.4f}")
    assert recall >= MIN_RECALL
