"""A warm-started publish's "warm" lists (``ranking.precompute``): the base version's lists,
mapped to this version's artists, plus the artists new to it, re-scored exactly.

Known answers: seeds that hold every query's exact top n (padded with other artists, some of
them excluded) give exactly the exact lists; queries without seeds, or left short, get exact
lists; seeds unrelated to the factors miss the recall target and the side falls back to exact
lists; a side too small for the check to pay is made exact. ``base_lists`` maps a base's lists
by id. A warm retrain through the pipeline publishes format-5 "warm" lists and serves them.
"""

from __future__ import annotations

import numpy as np
import pytest

from model_store import FORMAT_VERSION, load_version, read_manifest
from ranking import precompute
from ranking.precompute import ListSeeds, make_lists, recommend_side, similar_side
from test_index_precomputed import clustered_artifacts
from trainer_service.warm_start import BaseFactors, base_lists

N = 10


@pytest.fixture(autouse=True)
def any_size(monkeypatch):
    """The warm path on these small sides (its size rule is tested on its own)."""
    monkeypatch.setattr(precompute, "WARM_MIN_QUERIES", 0)


def padded_seeds(side, exact_top: np.ndarray, fresh: np.ndarray, width: int, seed: int) -> np.ndarray:
    """Each row's exact list without the fresh artists, padded to ``width`` with other non-fresh
    artists (excluded ones among them: every query's exclusions first), shuffled."""
    rng = np.random.default_rng(seed)
    num_items = side.items.shape[0]
    is_fresh = np.zeros(num_items, dtype=bool)
    is_fresh[fresh] = True
    out = np.full((exact_top.shape[0], width), -1, dtype=np.int32)
    for row in range(exact_top.shape[0]):
        keep = [int(a) for a in exact_top[row] if a >= 0 and not is_fresh[a]]
        excluded = side.exclude_indices[side.exclude_indptr[row]:side.exclude_indptr[row + 1]]
        extra = [int(a) for a in excluded if not is_fresh[a] and a not in keep]
        while len(keep) + len(extra) < width:
            a = int(rng.integers(num_items))
            if not is_fresh[a] and a not in keep and a not in extra:
                extra.append(a)
        row_seeds = np.array((keep + extra)[:width])
        rng.shuffle(row_seeds)
        out[row] = row_seeds
    return out


@pytest.mark.parametrize("which", ["recommend", "similar"])
def test_seeds_holding_the_exact_lists_give_exactly_the_exact_lists(which):
    artifacts = clustered_artifacts(num_users=300, num_artists=1200)
    side = recommend_side(artifacts) if which == "recommend" else similar_side(artifacts)
    exact = make_lists(side, N)
    assert exact.method == "exact"
    fresh = np.sort(np.random.default_rng(1).choice(side.items.shape[0], size=40, replace=False))
    seeds = ListSeeds(padded_seeds(side, exact.top, fresh, N + 30, seed=2), fresh)
    warm = make_lists(side, N, seeds=seeds)
    assert warm.method == "warm" and warm.sample_recall_at_10 == 1.0
    np.testing.assert_array_equal(warm.top, exact.top)
    np.testing.assert_allclose(warm.scores, exact.scores, rtol=1e-6, atol=1e-6)


def test_queries_without_seeds_or_left_short_get_exact_lists():
    artifacts = clustered_artifacts(num_users=300, num_artists=1200)
    side = recommend_side(artifacts)
    exact = make_lists(side, N)
    fresh = np.arange(0, 1200, 400)
    candidates = padded_seeds(side, exact.top, fresh, N + 30, seed=3)
    candidates[:20] = -1  # new users
    candidates[20:40, 3:] = -1  # 3 seeds and 3 fresh artists: short of N
    warm = make_lists(side, N, seeds=ListSeeds(candidates, fresh))
    assert warm.method == "warm"
    np.testing.assert_array_equal(warm.top, exact.top)


def test_seeds_unrelated_to_the_factors_miss_the_target_and_the_lists_are_made_exact():
    artifacts = clustered_artifacts(num_users=300, num_artists=1200)
    side = similar_side(artifacts)
    exact = make_lists(side, N)
    rng = np.random.default_rng(4)
    unrelated = np.stack([rng.choice(1200, size=N + 5, replace=False) for _ in range(1200)]).astype(np.int32)
    made = make_lists(side, N, seeds=ListSeeds(unrelated, np.zeros(0, dtype=np.int64)))
    assert made.method == "exact"
    np.testing.assert_array_equal(made.top, exact.top)


def test_small_sides_many_fresh_artists_and_ivf_sides_are_not_seeded(monkeypatch):
    artifacts = clustered_artifacts(num_users=300, num_artists=1200)
    side = similar_side(artifacts)
    exact = make_lists(side, N)
    seeds = ListSeeds(padded_seeds(side, exact.top, np.zeros(0, np.int64), N + 5, seed=5), np.zeros(0, np.int64))
    assert make_lists(side, N, seeds=seeds).method == "warm"
    monkeypatch.setattr(precompute, "WARM_MIN_QUERIES", 1201)
    assert make_lists(side, N, seeds=seeds).method == "exact"
    monkeypatch.setattr(precompute, "WARM_MIN_QUERIES", 0)
    many = ListSeeds(seeds.candidates, np.arange(0, 1200, 3))  # a third of the catalog
    assert make_lists(side, N, seeds=many).method == "exact"
    # Only in place of exact lists: a side made by IVF is not seeded.
    assert make_lists(side, N, seeds=seeds, exact_up_to=0).method == "ivf"


def test_base_lists_are_matched_by_id_and_new_artists_are_fresh():
    base = BaseFactors(
        version=3, user_ids=np.array(["u0", "u1"]), user_factors=np.zeros((2, 2), np.float32),
        artist_ids=np.array(["a", "b", "c", "d"]), artist_factors=np.zeros((4, 2), np.float32),
        artist_bias=np.zeros(4, np.float32),
        recommend_top=np.array([[2, 3, -1], [0, 1, 2]], dtype=np.int32),
        similar_top=np.array([[1, 2, 3], [0, 2, 3], [3, 0, 1], [2, 0, 1]], dtype=np.int32))
    # This run: "b" forgotten, "e" new; user "u1" gone, "u2" new.
    recommend, similar = base_lists(base, np.array(["u2", "u0"]), np.array(["d", "a", "e", "c"]))
    np.testing.assert_array_equal(recommend.fresh, [2])
    np.testing.assert_array_equal(recommend.candidates, [[-1, -1, -1], [3, 0, -1]])
    # d = base 3: [c, a, b]; a = base 0: [b, c, d]; e: new; c = base 2: [d, a, b]
    np.testing.assert_array_equal(similar.candidates, [[3, 1, -1], [-1, 3, 0], [-1, -1, -1], [0, 1, -1]])
    without = BaseFactors(**{**base.__dict__, "recommend_top": None, "similar_top": None})
    assert base_lists(without, np.array(["u0"]), np.array(["a"])) == (None, None)


def test_a_warm_retrain_publishes_warm_lists_and_serves_them(tmp_path, models_dir):
    from index_service.serving_model import RecommendQuery, ServingModel
    from play_log import Play, open_play_log
    from ranking import BuildSettings
    from trainer_service.data import generate
    from trainer_service.hyperparameters import Hyperparameters
    from trainer_service.pipeline import run_training
    from trainer_service.training_request import TrainingOptions

    data = generate("small", seed=0).interactions
    hp = Hyperparameters(factors=8, epochs=4, seed=0)
    build = BuildSettings(exact_only_up_to=0, sample_size=100, n_jobs=1, tuning_budget_s=2.0)
    first = run_training(data, hp, models_dir, build_settings=build, options=TrainingOptions(gate="off"))
    assert read_manifest(models_dir / str(first.version)).precomputed.similar_method == "exact"
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with open_play_log(url) as log:
        log.record("r", [Play(str(data.user_ids[0]), "artist-new", 3, 1_700_000_000)])
    second = run_training(data, hp, models_dir, build_settings=build, events_url=url,
                          options=TrainingOptions(gate="off", warm_start="newest"))
    manifest = read_manifest(models_dir / str(second.version))
    assert manifest.format_version == FORMAT_VERSION == 5
    assert manifest.training.warm_start_from_version == first.version
    made = manifest.precomputed
    # (SimilarArtists' lists here move more than the check allows, and are made exact)
    assert made.recommend_method == "warm" and made.recommend_recall_at_10 >= 0.98
    assert made.similar_method in ("warm", "exact")
    loaded = load_version(models_dir / str(second.version))
    model = ServingModel(loaded)
    try:
        assert model.recommend_n == made.recommend_n  # served from the lists
        user = str(loaded.artifacts.user_ids[5])
        answer = model.recommend(RecommendQuery(user_id=user, k=5))
        np.testing.assert_array_equal(answer.indices, loaded.top.recommend_top[5, :5])
    finally:
        model.close()


@pytest.mark.parametrize("rows, items", [(7, 5), (300, 17_632), (4096, 1 << 20), (1 << 20, 1 << 20)])
def test_the_packed_sort_orders_as_lexsort(rows, items):
    """Row, then score descending (negatives, zeros of both signs, ties), then item; the last
    case does not fit 64 bits and takes lexsort itself."""
    rng = np.random.default_rng(rows)
    count = 5000
    at_row = rng.integers(0, rows, count)
    values = rng.choice(np.array([-2.5, -1.0, -0.0, 0.0, 0.5, 3.0, 1e-30, -1e-30], dtype=np.float32), count)
    at_item = rng.permutation(items)[:count] if items >= count else rng.integers(0, items, count)
    order = precompute._row_score_item_order(at_row, values, at_item, rows, items)
    expected = np.lexsort((at_item, -values, at_row))
    got = np.stack([at_row[order], values[order], at_item[order]])
    want = np.stack([at_row[expected], values[expected], at_item[expected]])
    np.testing.assert_array_equal(got, want)
