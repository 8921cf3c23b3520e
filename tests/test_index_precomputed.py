"""The precomputed lists hold the exact top n where they are exact, the IVF lists reach their
recorded recall, the index service answers from them, and every request the lists cannot answer
falls back to the search.

Identity: on a catalog small enough for exact lists (``ranking.precompute``: every score, ties to
the lower artist index), a list answer equals the exact search answer: same artists, same order,
same float32 scores on a model built to be full of exact ties (small integer factors: every sum
exact, whatever its order), over random requests (hypothesis), and on the tiny known-answer
model; SimilarArtists' cosines (normalized vectors, not exact sums) agree up to float32 rounding. IVF lists probing every cluster are exact by construction; with fewer probes their
recall@10 against exact is measured.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index_service.serving_model import MAX_K, RecommendQuery, ServingModel, SimilarQuery
from model_store import ModelArtifacts, load_version
from ranking import BuildSettings, build_indexes

LIST_N = 8


def tied_artifacts(num_users: int = 30, num_artists: int = 40, factors: int = 3, seed: int = 3) -> ModelArtifacts:
    """Small integer factors and zero bias: many artists tie on score for every user."""
    rng = np.random.default_rng(seed)
    user_factors = rng.integers(-1, 2, size=(num_users, factors)).astype(np.float32)
    artist_factors = rng.integers(-1, 2, size=(num_artists, factors)).astype(np.float32)
    artist_factors[artist_factors.sum(axis=1) == 0, 0] = 1.0  # no zero vectors (cosine undefined)
    seen = [np.sort(rng.choice(num_artists, size=rng.integers(0, 6), replace=False)) for _ in range(num_users)]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seen], out=indptr[1:])
    return ModelArtifacts(
        user_ids=np.array([f"user-{u}" for u in range(num_users)]),
        user_factors=user_factors,
        artist_ids=np.array([f"artist-{a}" for a in range(num_artists)]),
        artist_names=np.array([f"Name {a}" for a in range(num_artists)]),
        artist_factors=artist_factors,
        artist_bias=np.zeros(num_artists, dtype=np.float32),
        artist_listeners=np.ones(num_artists, dtype=np.int32),
        seen_indptr=indptr,
        seen_indices=np.concatenate(seen).astype(np.int32),
    )


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory):
    """(model answering from lists of LIST_N, the same version answering by search only)."""
    from model_store import publish_version

    models_dir = tmp_path_factory.mktemp("tied-models")
    artifacts = tied_artifacts()
    settings = BuildSettings(exact_only_up_to=0, n_trees=2, sample_size=10, n_jobs=1, tuning_budget_s=1.0, recommend_n=LIST_N,
                             similar_n=LIST_N, method="exact")
    manifest = publish_version(models_dir, artifacts, indexes=build_indexes(artifacts, settings),
                               data_source="tests: tied", data_fingerprint="0" * 64,
                               num_interactions=1, hyperparameters={}, metrics={})
    loaded = load_version(models_dir / str(manifest.model_version))
    assert manifest.precomputed.recommend_method == manifest.precomputed.similar_method == "exact"
    lists, search = ServingModel(loaded), ServingModel(loaded, precomputed=False)
    assert lists.recommend_n == lists.similar_n == LIST_N and search.recommend_top is None
    yield lists, search
    lists.close()


def same(a, b) -> bool:
    return a.indices.tolist() == b.indices.tolist() and a.scores.astype(np.float32).tobytes() == b.scores.astype(np.float32).tobytes()


def exact_similar_answer(ranking, artist: int, factors: np.ndarray, k: int, tol: float = 1e-6) -> bool:
    """Whether ``ranking`` is a right SimilarArtists answer of ``k`` for ``artist`` up to float32
    rounding: its scores are its artists' cosines (float64 truth, within ``tol``), best first, and
    no other artist's cosine is above its last one by more than ``tol``. Cosines of normalized
    vectors are not exact sums, so their rounding depends on the order of the additions: the
    lists' blocked matrix product and the search's matrix-vector product may round a tie (or a
    zero) differently and so order tied artists differently (OpenBLAS's Haswell kernels on an AMD
    EPYC did, where its SkylakeX kernels agreed); both answers must be right answers."""
    unit = factors.astype(np.float64) / np.linalg.norm(factors.astype(np.float64), axis=1, keepdims=True)
    truth = unit @ unit[artist]
    got = np.asarray(ranking.indices, dtype=np.int64)
    if got.size != min(k, len(truth) - 1) or artist in got.tolist() or len(set(got.tolist())) != got.size:
        return False
    if not np.allclose(ranking.scores, truth[got], rtol=0.0, atol=tol) or np.any(np.diff(truth[got]) > tol):
        return False
    others = np.delete(truth, np.append(got, artist))
    return not (others.size and got.size and others.max() > truth[got].min() + tol)


def test_every_user_and_artist_same_answer_from_lists(both_paths):
    lists, search = both_paths
    for user in lists.user_ids.tolist():
        for k in (1, 3, LIST_N):
            query = RecommendQuery(user, k=k)
            assert same(lists.recommend(query), search.recommend(query)), (user, k)
    factors = tied_artifacts().artist_factors  # the fixture's model (seeded)
    for artist in lists.artist_ids.tolist():
        for k in (1, 5, LIST_N):
            query = SimilarQuery(artist_id=artist, k=k)
            index = int(artist.rsplit("-", 1)[1])
            for path in (lists, search):
                assert exact_similar_answer(path.similar(query).ranking, index, factors, k), (artist, k)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.integers(0, 29), k=st.integers(0, 45), include_seen=st.booleans(),
       exclude=st.lists(st.integers(0, 45), max_size=12))
def test_random_requests_same_answer_either_path(both_paths, user, k, include_seen, exclude):
    lists, search = both_paths
    user_id = f"user-{user}"
    excluded = tuple(f"artist-{a}" for a in exclude)  # artist-40 and up are unknown: ignored
    query = RecommendQuery(user_id, k=k, include_seen=include_seen, exclude_artist_ids=excluded)
    assert same(lists.recommend(query), search.recommend(query))


class Counting:
    """Counts calls of a model's search methods (the fallback) while delegating."""

    def __init__(self, model: ServingModel):
        self.calls = 0
        for name in ("search_recommend", "search_similar"):
            original = getattr(model, name)

            def counted(*args, _original=original, **kwargs):
                self.calls += 1
                return _original(*args, **kwargs)

            setattr(model, name, counted)


def test_lists_answer_without_search_and_fall_back_when_they_cannot(both_paths):
    lists, search = both_paths
    counter = Counting(lists)
    user = "user-0"
    lists.recommend(RecommendQuery(user, k=LIST_N))
    lists.recommend(RecommendQuery(user, k=3, exclude_artist_ids=("artist-0", "nope")))
    lists.similar(SimilarQuery(artist_id="artist-1", k=LIST_N))
    lists.similar(SimilarQuery(artist_name="name 2", k=2))
    assert counter.calls == 0
    fallbacks = [
        lambda: lists.recommend(RecommendQuery(user, k=LIST_N + 1)),  # k > N
        lambda: lists.recommend(RecommendQuery(user, k=3, include_seen=True)),  # the lists exclude seen artists
        lambda: lists.similar(SimilarQuery(artist_id="artist-1", k=LIST_N + 1)),  # k > N
    ]
    # Exclusions that remove list entries, leaving fewer than k: the search finds the rest.
    full_list = [str(lists.artist_ids[i]) for i in lists.recommend(RecommendQuery(user, k=LIST_N)).indices.tolist()]
    fallbacks.append(lambda: lists.recommend(RecommendQuery(user, k=LIST_N, exclude_artist_ids=full_list[:2])))
    for n, request in enumerate(fallbacks, start=1):
        request()
        assert counter.calls == n
    answer = lists.recommend(RecommendQuery(user, k=LIST_N, exclude_artist_ids=full_list[:2]))
    assert len(answer.indices) == LIST_N and not set(answer.indices.tolist()) & {int(a.split("-")[1]) for a in full_list[:2]}
    assert same(answer, search.recommend(RecommendQuery(user, k=LIST_N, exclude_artist_ids=full_list[:2])))


def test_short_list_is_a_complete_answer(publish, models_dir, tiny_artifacts):
    """A list shorter than N (the catalog ran out) answers any k: nothing more exists."""
    manifest = publish(tiny_artifacts)
    model = ServingModel(load_version(models_dir / str(manifest.model_version)))
    try:
        assert model.recommend_n == 12  # min(50, artists)
        counter = Counting(model)
        everything = model.recommend(RecommendQuery("u0", k=12))
        assert len(everything.indices) == 11 and counter.calls == 0  # 12 artists, 1 seen: list of 11
        excluding_a5 = RecommendQuery("u0", k=12, exclude_artist_ids=("a5",))
        assert len(model.recommend(excluding_a5).indices) == 10 and counter.calls == 0
        assert len(model.recommend(RecommendQuery("u0", k=MAX_K)).indices) == 11 and counter.calls == 1  # k > N: search
    finally:
        model.close()


def test_lists_over_budget_are_left_out_and_searched(publish, models_dir, tiny_artifacts):
    """A side whose estimated precompute time exceeds the budget gets no lists (length 0)."""
    manifest = publish(tiny_artifacts, build_settings=BuildSettings(exact_only_up_to=0, n_trees=2, sample_size=8, n_jobs=1,
                                                                   tuning_budget_s=1.0, precompute_budget_s=0.0))
    assert (manifest.precomputed.recommend_n, manifest.precomputed.similar_n) == (0, 0)
    model = ServingModel(load_version(models_dir / str(manifest.model_version)))
    try:
        assert model.recommend_top is None and model.similar_top is None
        top3 = model.recommend(RecommendQuery("u0", k=3)).indices
        assert [str(model.artist_ids[i]) for i in top3] == ["a1", "a2", "a11"]
    finally:
        model.close()


def test_threaded_lists_match_lists_made_here():
    """Lists made by worker threads, chunk by chunk, equal lists made in one thread."""
    from ranking.precompute import precompute_top

    art = tied_artifacts(num_users=9000, num_artists=60)  # several chunks of rows
    here, *_ = precompute_top(art, 5, 5, workers=1)
    threaded, *_ = precompute_top(art, 5, 5, workers=2)
    for name in ("recommend_top", "recommend_top_scores", "similar_top", "similar_top_scores"):
        assert np.array_equal(getattr(here, name), getattr(threaded, name)), name


@pytest.mark.parametrize("block_scores, workers", [(4 << 20, 1), (4 << 20, 3), (1000, 1), (1000, 2), (7 * 701, 3)])
def test_exact_lists_are_every_querys_top_whatever_the_blocks(monkeypatch, block_scores, workers):
    """Exact lists, whatever the rows per block (one block, many, a side split per worker) and
    the workers, are each query's top n by brute force: integer factors make every score exact
    and many tied, ties to the lower artist, excluded artists never listed."""
    from ranking import precompute

    monkeypatch.setattr(precompute, "_EXACT_BLOCK_SCORES", block_scores)
    art = tied_artifacts(num_users=101, num_artists=701, factors=4, seed=9)
    for side in (precompute.recommend_side(art), precompute.similar_side(art)):
        made = precompute.make_lists(side, 60, workers=workers)
        assert made.method == "exact"
        for q in range(side.queries.shape[0]):
            scores = side.items @ side.queries[q]
            scores[side.exclude_indices[side.exclude_indptr[q]:side.exclude_indptr[q + 1]]] = -np.inf
            order = np.lexsort((np.arange(scores.shape[0]), -scores))
            expected = order[np.isfinite(scores[order])][:60]
            assert made.top[q].tolist() == expected.tolist(), q
            assert made.scores[q].tobytes() == scores[expected].tobytes()


@pytest.mark.parametrize("rows, width, n", [(7, 40, 8), (5, 5000, 10), (3, 5000, 5000), (4, 30, 50)])
def test_rows_top_is_top_k_indices_row_by_row(rows, width, n):
    """The batched selection gives each row what the serving search's top_k_indices gives: ties
    (many: scores rounded to tenths) to the lower index, excluded (-inf) scores never listed, -1
    padding when a row runs out."""
    from ranking.precompute import _rows_top
    from ranking.search import top_k_indices

    rng = np.random.default_rng(rows * width)
    scores = np.round(rng.standard_normal((rows, width)), 1).astype(np.float32)
    scores[rng.random((rows, width)) < 0.3] = -np.inf
    scores[0, 1:] = -np.inf  # a row with one finite score
    top, top_scores = _rows_top(scores.copy(), n)
    assert top.shape == (rows, n)
    for row in range(rows):
        expected = top_k_indices(scores[row].copy(), n)
        assert top[row, :expected.shape[0]].tolist() == expected.tolist()
        assert (top[row, expected.shape[0]:] == -1).all()
        assert top_scores[row, :expected.shape[0]].tobytes() == scores[row, expected].tobytes()


def clustered_artifacts(num_users: int = 400, num_artists: int = 3000, factors: int = 8, seed: int = 5) -> ModelArtifacts:
    """Random float factors and biases, users with 0..20 seen artists: a catalog for IVF."""
    rng = np.random.default_rng(seed)
    seen = [np.sort(rng.choice(num_artists, size=rng.integers(0, 21), replace=False)) for _ in range(num_users)]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seen], out=indptr[1:])
    return ModelArtifacts(
        user_ids=np.array([f"user-{u}" for u in range(num_users)]),
        user_factors=rng.standard_normal((num_users, factors)).astype(np.float32),
        artist_ids=np.array([f"artist-{a}" for a in range(num_artists)]),
        artist_names=np.array([f"Name {a}" for a in range(num_artists)]),
        artist_factors=rng.standard_normal((num_artists, factors)).astype(np.float32),
        artist_bias=(0.3 * rng.standard_normal(num_artists)).astype(np.float32),
        artist_listeners=np.ones(num_artists, dtype=np.int32),
        seen_indptr=indptr,
        seen_indices=np.concatenate(seen).astype(np.int32),
    )


def test_ivf_probing_every_cluster_is_exact(monkeypatch):
    """IVF with as many probes as clusters scores every artist: the lists are the exact ones
    (same artists, same order; scores equal up to float32 rounding of another product shape)."""
    import ranking.precompute as precompute

    art = clustered_artifacts()
    exact, exact_rec, exact_sim, _ = precompute.precompute_top(art, 20, 20, workers=1)
    assert exact_rec.method == exact_sim.method == "exact"
    monkeypatch.setattr(precompute, "PROBE_STEPS", (1000,))
    ivf, ivf_rec, ivf_sim, _ = precompute.precompute_top(art, 20, 20, workers=2, exact_up_to=0)
    assert ivf_rec.method == ivf_sim.method == "ivf"
    assert ivf_rec.probes == ivf_rec.clusters > 1 and ivf_rec.sample_recall_at_10 == 1.0
    for side in ("recommend", "similar"):
        assert np.array_equal(getattr(ivf, f"{side}_top"), getattr(exact, f"{side}_top")), side
        np.testing.assert_allclose(getattr(ivf, f"{side}_top_scores"), getattr(exact, f"{side}_top_scores"), rtol=1e-5, atol=1e-5)
    seen = set(art.seen_indices[art.seen_indptr[3]:art.seen_indptr[4]].tolist())
    assert not seen & set(ivf.recommend_top[3].tolist())  # seen artists never listed
    assert all(ivf.similar_top[a, 0] != a for a in range(art.num_artists))  # nor the artist itself


def test_ivf_lists_reach_the_recall_target_and_are_served(tmp_path):
    """A version whose lists are IVF (forced on a small catalog) records method "ivf" and a
    recall@10 >= the target on the sample; the index service answers from the lists, and a list
    answer's artists are exact-search artists except where the recall says otherwise."""
    from model_store import publish_version

    art = clustered_artifacts()
    settings = BuildSettings(exact_only_up_to=0, n_trees=2, sample_size=200, n_jobs=1, tuning_budget_s=1.0, recommend_n=20,
                             similar_n=20, method="exact", exact_up_to=0)
    manifest = publish_version(tmp_path, art, indexes=build_indexes(art, settings), data_source="tests: ivf",
                               data_fingerprint="0" * 64, num_interactions=1, hyperparameters={}, metrics={})
    made = manifest.precomputed
    assert made.recommend_method == made.similar_method == "ivf"
    assert made.recommend_recall_at_10 >= 0.98 and made.similar_recall_at_10 >= 0.98
    loaded = load_version(tmp_path / str(manifest.model_version))
    lists, search = ServingModel(loaded), ServingModel(loaded, precomputed=False)
    overridden = ServingModel(loaded, recommend_method="exact", similar_method="exact")
    try:
        assert lists.recommend_n == lists.similar_n == 20
        assert overridden.recommend_top is None and overridden.similar_top is None  # lists not made by "exact"
        counter = Counting(lists)
        hits = total = 0
        for user in range(0, art.num_users, 3):
            query = RecommendQuery(f"user-{user}", k=10)
            got, exact = lists.recommend(query), search.recommend(query)
            hits += len(set(got.indices.tolist()) & set(exact.indices.tolist()))
            total += len(exact.indices)
            model_scores = lists.recommend_search.items[got.indices] @ np.append(art.user_factors[user], 1.0)
            np.testing.assert_allclose(got.scores, model_scores, rtol=1e-5, atol=1e-5)  # the model's scores
        assert counter.calls == 0 and hits / total >= 0.95
    finally:
        lists.close()


def test_list_recall_and_its_standard_error_have_known_values():
    """Two rows of 10 exact answers, 10 and 8 found: recall 0.9; the ratio estimator's error
    sqrt(n / (n - 1) * sum((hits - 0.9 * 10)^2)) / 20 = sqrt(2 * 2) / 20 = 0.1."""
    from ranking.precompute import list_recall_and_error, list_recall_at_10

    truth_idx = np.arange(10)
    truth = [(truth_idx, np.linspace(1.0, 0.1, 10)), (truth_idx, np.linspace(1.0, 0.1, 10))]
    lists = np.array([np.arange(10), np.r_[np.arange(8), 50, 51]])
    score_of = lambda row, found: np.where(found < 10, 1.0, -1.0)  # noqa: E731 (an exact answer scores 1)
    recall, error = list_recall_and_error(lists, truth, [0, 1], score_of)
    assert recall == pytest.approx(0.9) and error == pytest.approx(0.1)
    assert list_recall_at_10(lists, truth, [0, 1], score_of) == 0.9
    assert list_recall_and_error(lists, truth, [0], score_of) == (1.0, 0.0)
