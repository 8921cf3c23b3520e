"""The lever harness (``bench/levers.py``): how a variant is parsed, what it trains and how its runs
are recorded and tabulated (no training: the trainer call is replaced by a recorder)."""

from __future__ import annotations

import json

import numpy as np

from bench import levers
from trainer_service.evaluation import leave_one_out_split
from trainer_service.hyperparameters import Hyperparameters


def test_a_variant_is_a_name_and_typed_overrides():
    assert levers.parse_variant("default") == ("default", {})
    assert levers.parse_variant("x:factors=96,learning_rate=0.2,negative_sampling=popularity") == (
        "x", {"factors": 96, "learning_rate": 0.2, "negative_sampling": "popularity"})


def test_neutral_harness_levers_are_the_defaults_and_others_are_recorded():
    defaults = levers.settings_of("default", {})
    assert levers.settings_of("same", {"weights": 1, "average_last": 0}) == defaults
    assert levers.describe(defaults) == "(defaults)"
    squared = levers.settings_of("w2", {"weights": 2, "learning_rate": 0.2})
    assert squared["weights"] == 2 and squared["learning_rate"] == 0.2
    assert levers.describe(squared) == "learning_rate=0.2, weights=2"
    assert levers.describe(levers.settings_of("ease", {"lambda": 100})) == "ease lambda=100"


def test_weights_lever_trains_on_the_powered_weights(monkeypatch):
    users = np.repeat(np.arange(2, dtype=np.int32), 6)
    artists = np.tile(np.arange(6, dtype=np.int32), 2)
    weights = np.tile(np.arange(1, 7, dtype=np.float32), 2)
    split = leave_one_out_split(users, artists, weights, 2, 8, seed=1)
    seen = {}

    def recorder(split_seen, hp, selection, track):
        seen["weights"], seen["hp"] = split_seen.train_weights, hp
        return {"hit_rate_at_10": 0.0}

    monkeypatch.setattr(levers, "_ours", recorder)
    levers.run_variant("w2", {"weights": 2, "factors": 8}, split, None, seed=7)
    assert np.array_equal(seen["weights"], split.train_weights ** 2)
    assert seen["hp"] == Hyperparameters(factors=8, seed=7)
    levers.run_variant("plain", {}, split, None, seed=7)
    assert np.array_equal(seen["weights"], split.train_weights)


def _record(variant, overrides, seed, hit_rate, dataset="d"):
    return {"dataset": dataset, "variant": variant, "overrides": overrides, "command": f"cmd {variant}",
            "settings": levers.settings_of(variant, overrides), "split_seed": seed, "hit_rate_at_10": hit_rate,
            "ndcg_at_10": hit_rate / 2, "train_seconds": 1.0}


def test_table_ranks_variants_by_mean_and_a_rerun_split_replaces_the_earlier_one():
    records = [_record("a", {}, 1, 0.10), _record("a", {}, 2, 0.30), _record("b", {"factors": 8}, 1, 0.25),
               _record("b", {"factors": 8}, 2, 0.05), _record("b", {"factors": 8}, 2, 0.25)]
    rows = [line for line in levers.markdown(records).splitlines() if line.startswith("| a ") or
            line.startswith("| b ")]
    assert [row.split(" | ")[0] for row in rows] == ["| b", "| a"]
    assert rows[0].split(" | ")[2:4] == ["0.2500", "0.2500 / 0.2500"]
    assert rows[1].split(" | ")[2:4] == ["0.2000", "0.1000 / 0.3000"]
    assert "- `cmd a`" in levers.markdown(records)


def test_recorded_runs_render_back(tmp_path):
    runs = tmp_path / "runs.jsonl"
    runs.write_text(json.dumps(_record("a", {"weights": 2}, 1, 0.1)) + "\n", encoding="utf-8")
    out = tmp_path / "levers.md"
    assert levers.main(["--render", str(runs), "--markdown", str(out)]) == 0
    assert "| a | weights=2 | 0.1000 |" in out.read_text(encoding="utf-8")


def test_user_balance_gives_every_user_the_same_share_of_the_positives(monkeypatch):
    # User 0 has 2 training interactions, user 1 has 5: with B = 1 each user's log-plays weights
    # are divided by that count, so both users' sampling weights sum to the same.
    users = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=np.int32)
    artists = np.array([0, 1, 2, 0, 1, 2, 3, 4, 5], dtype=np.int32)
    split = leave_one_out_split(users, artists, np.full(9, 3.0, np.float32), 2, 8, seed=1, min_interactions=3)
    seen = {}
    monkeypatch.setattr(levers, "_ours", lambda s, hp, selection, track: seen.setdefault("split", s))
    levers.run_variant("ub1", {"user_balance": 1}, split, None, seed=0)
    sampled = np.log1p(seen["split"].train_weights.astype(np.float64))
    assert np.allclose(np.bincount(split.train_users, weights=sampled), [np.log1p(3.0)] * 2, rtol=1e-5)
    assert levers.describe(levers.settings_of("ub1", {"user_balance": 1})) == "user_balance=1"


def test_item_balance_scales_the_positives_by_listeners(monkeypatch):
    # Artist 0 has 3 training listeners, artists 1 and 2 one each: with G = 1 and log1p(w) = 1 the
    # sampling weight of every interaction becomes its artist's listener count.
    users = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int32)
    artists = np.array([0, 1, 3, 0, 2, 4, 0, 5, 6], dtype=np.int32)
    split = leave_one_out_split(users, artists, np.full(9, np.e - 1, np.float32), 3, 8, seed=1,
                                min_interactions=10)
    seen = {}
    monkeypatch.setattr(levers, "_ours", lambda s, hp, selection, track: seen.setdefault("split", s))
    levers.run_variant("ib1", {"item_balance": 1}, split, None, seed=0)
    sampled = np.log1p(seen["split"].train_weights.astype(np.float64))
    assert np.allclose(sampled, [3, 1, 1, 3, 1, 1, 3, 1, 1], rtol=1e-5)


def test_negative_power_draws_unlistened_artists_by_listeners_and_restores_the_sampler():
    # Training listeners: artist 0 three, 6 and 7 two, 1 and 2 one (user 3's own), 3..5 none. With
    # power 1 user 3's negatives come in proportion to 1 + listeners: 4:1:1:1:3:3 over 0, 3, 4, 5, 6, 7.
    from trainer_service.sampling import TripletSampler

    users = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3], dtype=np.int32)
    artists = np.array([0, 1, 6, 0, 2, 7, 0, 6, 7, 1, 2], dtype=np.int32)
    split = leave_one_out_split(users, artists, np.ones(11, np.float32), 4, 8, seed=1, min_interactions=99)
    original = TripletSampler.negatives
    with levers._popularity_negatives(split, 1.0):
        sampler = TripletSampler(split.train_users, split.train_artists, None, 4, 8)
        drawn = sampler.negatives(np.full(70_000, 3, np.int32), np.random.default_rng(0))
    assert TripletSampler.negatives is original
    counts = np.bincount(drawn, minlength=8)
    assert counts[[1, 2]].sum() == 0  # never an artist the user listened to
    expected = (1.0 + np.bincount(split.train_artists, minlength=8)) * np.isin(np.arange(8), [1, 2], invert=True)
    np.testing.assert_allclose(counts / counts.sum(), expected / expected.sum(), atol=0.01)
    assert levers.describe(levers.settings_of("np1", {"negative_power": 1})) == "negative_power=1"
