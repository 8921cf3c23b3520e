"""bench/fold_in_floor.py's rendering: runs of several commands merged by (data set, seed, factors),
and the pool study's table (known rows, nothing trained)."""

import json

import pytest

from bench.fold_in_floor import merged, pool_settings, render


def _row(seed, hits, fit_ms, in_model=(1.0, 0.0)):
    return {"dataset": "d", "seed": seed, "factors": 64, "setting": "pool", "folds_per_setting": 2,
            "in_model": list(in_model), "fold_in": hits, "fit_ms": fit_ms}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_merged_adds_the_later_files_settings_and_keeps_the_first_measurement(tmp_path):
    a = _write(tmp_path / "a.jsonl", [_row(1, {"512/192": [0.0, 1.0], "1024/256": [1.0, 1.0]},
                                           {"512/192": 1.0, "1024/256": 1.5})])
    b = _write(tmp_path / "b.jsonl", [_row(1, {"512/192": [0.0, 1.0], "1536/384": [1.0, 0.5]},
                                           {"512/192": 9.0, "1536/384": 2.0})])
    (row,) = merged([a, b])
    assert list(row["fold_in"]) == ["512/192", "1024/256", "1536/384"]
    assert row["fit_ms"] == {"512/192": 1.0, "1024/256": 1.5, "1536/384": 2.0}
    text = render([row])
    assert "| pool | fold-in HR@10 | vs in-model | vs pool 512/192 (paired, ± SE) | pool seeds | fit ms per user |" in text
    # 1024/256: hits 1.0 against 0.5 for the first pool, in-model 0.5: 2.000x, +0.5000 paired.
    assert "| 1024/256 | 1.0000 | 2.000x | +0.5000 ± 0.5000 | 2 | 1.50 |" in text
    assert "| 1536/384 | 0.7500 | 1.500x | +0.2500 ± 0.7500 | 2 | 2.00 |" in text


def test_merged_refuses_rows_of_another_split(tmp_path):
    a = _write(tmp_path / "a.jsonl", [_row(1, {"512/192": [0.0, 1.0]}, {"512/192": 1.0})])
    b = _write(tmp_path / "b.jsonl", [_row(1, {"1024/256": [0.0, 1.0]}, {"1024/256": 1.0}, in_model=(0.0, 0.0))])
    with pytest.raises(ValueError, match="does not match"):
        merged([a, b])


def test_pool_settings_draw_one_pool_per_seed_the_services_first():
    from index_service.fold_in import _SEED

    settings = pool_settings(["1024/256"], 3)
    assert settings == {"1024/256": [{"negatives": 1024, "hard_negatives": 256, "seed": _SEED + k} for k in range(3)]}
