"""Leave-one-out evaluation: hand-made cases with known HR@10, NDCG@10 and AUC, ties, the
popularity baseline against brute force, and the split itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer_service.evaluation import (
    LeaveOneOutSplit,
    TrainingDiverged,
    evaluate,
    evaluate_model,
    evaluate_popularity,
    leave_one_out_split,
    metrics_from_ranks,
    sample_heldout,
)


def _split(num_artists: int, train: dict[int, list[int]], heldout: dict[int, int]) -> LeaveOneOutSplit:
    num_users = max(max(train), max(heldout)) + 1
    users = [u for u in range(num_users) for _ in sorted(train.get(u, []))]
    artists = [a for u in range(num_users) for a in sorted(train.get(u, []))]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum([len(train.get(u, [])) for u in range(num_users)], out=indptr[1:])
    held_users = sorted(heldout)
    return LeaveOneOutSplit(
        num_users=num_users, num_artists=num_artists,
        train_users=np.array(users, np.int32), train_artists=np.array(artists, np.int32),
        train_weights=np.ones(len(users), np.float32), train_indptr=indptr,
        heldout_users=np.array(held_users, np.int32),
        heldout_artists=np.array([heldout[u] for u in held_users], np.int32),
    )


# 13 artists; the bias ranks artist 0 first, 12 last (score 13 - a). Per user:
# user 0 heard 0, held out 12: 11 unseen artists outrank it -> position 11: miss, NDCG 0, AUC 0/11.
# user 1 heard 1, 2, held out 4: artists 0 and 3 outrank it -> position 2: hit, NDCG 1/log2(4),
#   AUC (10 - 2) / 10.
# user 2 heard 5, held out 0: first -> hit, NDCG 1, AUC 1.
CASE = _split(13, {0: [0], 1: [1, 2], 2: [5]}, {0: 12, 1: 4, 2: 0})


def test_known_metrics_of_a_bias_only_model():
    bias = (13 - np.arange(13)).astype(np.float32)
    metrics = evaluate_model(np.zeros((3, 2), np.float32), np.zeros((13, 2), np.float32), bias, CASE)
    assert metrics.evaluated_users == 3
    assert metrics.hit_rate_at_10 == pytest.approx(2 / 3)
    assert metrics.ndcg_at_10 == pytest.approx((0 + 0.5 + 1) / 3)
    assert metrics.auc == pytest.approx((0 + 0.8 + 1) / 3)


def test_known_metrics_where_the_user_factors_decide():
    # One factor: artist a has factor a; user 0 likes high a (factor +1), users 1 and 2 low a (-1).
    # user 0, held 12: first -> hit, NDCG 1, AUC 1. user 1 (heard 1, 2), held 4: 0 and 3 outrank
    # it -> NDCG 1/log2(4), AUC 0.8. user 2 (heard 5), held 0: first -> NDCG 1, AUC 1.
    items = np.arange(13, dtype=np.float32)[:, None]
    users = np.array([[1.0], [-1.0], [-1.0]], np.float32)
    metrics = evaluate_model(users, items, np.zeros(13, np.float32), CASE)
    assert metrics.hit_rate_at_10 == pytest.approx(1.0)
    assert metrics.ndcg_at_10 == pytest.approx((1 + 0.5 + 1) / 3)
    assert metrics.auc == pytest.approx((1 + 0.8 + 1) / 3)


def test_selection_evaluates_only_the_chosen_users():
    bias = (13 - np.arange(13)).astype(np.float32)
    metrics = evaluate_model(np.zeros((3, 1), np.float32), np.zeros((13, 1), np.float32), bias, CASE,
                             selection=np.array([1]))
    assert (metrics.evaluated_users, metrics.hit_rate_at_10, metrics.auc) == (1, 1.0, pytest.approx(0.8))


def test_ties_count_as_broken_at_random():
    # 8 candidates above, 3 tied: the held-out artist sits at position 8, 9, 10 or 11 with equal
    # chance: HR 2/4, NDCG (1/log2(10) + 1/log2(11)) / 4, AUC (20 - 8 - 3/2) / 20.
    metrics = metrics_from_ranks(np.array([8]), np.array([3]), np.array([20]))
    assert metrics.hit_rate_at_10 == pytest.approx(0.5)
    assert metrics.ndcg_at_10 == pytest.approx((1 / math.log2(10) + 1 / math.log2(11)) / 4)
    assert metrics.auc == pytest.approx(0.525)
    # A constant model: everything tied, AUC exactly 0.5.
    flat = evaluate_model(np.zeros((3, 1), np.float32), np.zeros((13, 1), np.float32), np.zeros(13, np.float32),
                          CASE)
    assert flat.auc == pytest.approx(0.5)


def _random_data(seed: int, users: int = 120, artists: int = 90):
    rng = np.random.default_rng(seed)
    popularity = 1.0 / (1 + np.arange(artists))
    popularity /= popularity.sum()
    pairs = sorted({(u, int(a)) for u in range(users)
                    for a in rng.choice(artists, size=rng.integers(2, 30), replace=False, p=popularity)})
    u = np.array([p[0] for p in pairs], np.int32)
    a = np.array([p[1] for p in pairs], np.int32)
    return u, a, rng.integers(1, 100, size=u.size).astype(np.float32)


def test_popularity_baseline_matches_brute_force_scores():
    users, artists, weights = _random_data(0)
    split = leave_one_out_split(users, artists, weights, 120, 90, seed=3)
    listeners = split.train_listeners().astype(np.float32)
    brute = evaluate_model(np.zeros((120, 1), np.float32), np.zeros((90, 1), np.float32), listeners, split)
    fast = evaluate_popularity(split)
    assert fast.evaluated_users == brute.evaluated_users > 0
    assert fast.hit_rate_at_10 == pytest.approx(brute.hit_rate_at_10)
    assert fast.ndcg_at_10 == pytest.approx(brute.ndcg_at_10)
    assert fast.auc == pytest.approx(brute.auc)


def test_report_uses_the_manifest_key_names():
    bias = (13 - np.arange(13)).astype(np.float32)
    report = evaluate(np.zeros((3, 1), np.float32), np.zeros((13, 1), np.float32), bias, CASE).as_dict()
    assert set(report) == {"hit_rate_at_10", "ndcg_at_10", "auc", "evaluated_users", "popularity_hit_rate_at_10",
                           "popularity_ndcg_at_10", "popularity_auc"}
    assert report["evaluated_users"] == 3


def test_diverged_factors_are_refused():
    items = np.zeros((13, 1), np.float32)
    items[4] = np.nan
    with pytest.raises(TrainingDiverged, match="NaN"):
        evaluate_model(np.ones((3, 1), np.float32), items, np.zeros(13, np.float32), CASE)


def test_split_holds_out_one_interaction_of_each_eligible_user():
    # user 0: 5 interactions (eligible); user 1: 4 (not); user 2: all 6 artists (nothing to rank).
    pairs = [(0, a) for a in range(5)] + [(1, a) for a in range(4)] + [(2, a) for a in range(6)]
    users = np.array([p[0] for p in pairs], np.int32)
    artists = np.array([p[1] for p in pairs], np.int32)
    split = leave_one_out_split(users, artists, np.ones(len(pairs), np.float32), 3, 6, seed=0)
    assert split.heldout_users.tolist() == [0]
    assert split.heldout_artists[0] in range(5)
    train = set(zip(split.train_users.tolist(), split.train_artists.tolist()))
    assert train | {(0, int(split.heldout_artists[0]))} == set(pairs)
    assert len(train) == len(pairs) - 1
    assert split.train_indptr.tolist() == [0, 4, 8, 14]


def test_split_is_deterministic_and_keeps_the_rows_sorted():
    users, artists, weights = _random_data(1)
    a = leave_one_out_split(users, artists, weights, 120, 90, seed=5)
    b = leave_one_out_split(users, artists, weights, 120, 90, seed=5)
    c = leave_one_out_split(users, artists, weights, 120, 90, seed=6)
    assert np.array_equal(a.heldout_artists, b.heldout_artists) and np.array_equal(a.train_artists, b.train_artists)
    assert not np.array_equal(a.heldout_artists, c.heldout_artists)
    keys = a.train_users.astype(np.int64) * 90 + a.train_artists
    assert np.all(np.diff(keys) > 0)
    assert np.array_equal(np.bincount(a.train_users, minlength=120), np.diff(a.train_indptr))
    counts = np.bincount(users, minlength=120)
    assert a.heldout_users.tolist() == np.flatnonzero(counts >= 5).tolist()


def test_sample_heldout_caps_with_a_seeded_sorted_sample():
    users, artists, weights = _random_data(2)
    split = leave_one_out_split(users, artists, weights, 120, 90, seed=0)
    assert np.array_equal(sample_heldout(split, None, 0), np.arange(split.num_heldout))
    assert np.array_equal(sample_heldout(split, 10_000, 0), np.arange(split.num_heldout))
    picked = sample_heldout(split, 25, seed=4)
    assert picked.size == 25 and np.all(np.diff(picked) > 0) and picked.max() < split.num_heldout
    assert np.array_equal(picked, sample_heldout(split, 25, seed=4))


@pytest.mark.parametrize("block_users", [1, 7, 1000])
def test_blocks_of_users_give_the_brute_force_ranks(monkeypatch, block_users):
    # Scores and comparisons reuse one buffer across blocks (the last one ragged): every block
    # must rank exactly as a per-user brute force over a fresh score vector.
    import trainer_service.evaluation as evaluation

    monkeypatch.setattr(evaluation, "_BLOCK_SCORES", block_users * 90)
    users, artists, weights = _random_data(1)
    split = leave_one_out_split(users, artists, weights, 120, 90, seed=4)
    rng = np.random.default_rng(5)
    # Small integers: every score is exact in any summation order, and ties are common.
    P = rng.integers(-3, 4, size=(120, 4)).astype(np.float32)
    Q = rng.integers(-3, 4, size=(90, 4)).astype(np.float32)
    b = rng.integers(-5, 6, size=90).astype(np.float32)
    greater, ties, candidates = [], [], []
    for u, held in zip(split.heldout_users, split.heldout_artists):
        scores = P[u] @ Q.T + b
        seen = split.train_artists[split.train_indptr[u]:split.train_indptr[u + 1]]
        others = np.setdiff1d(np.arange(90), np.append(seen, held))
        greater.append(int((scores[others] > scores[held]).sum()))
        ties.append(int((scores[others] == scores[held]).sum()))
        candidates.append(others.size)
    expected = metrics_from_ranks(np.array(greater), np.array(ties), np.array(candidates))
    assert evaluate_model(P, Q, b, split) == expected
