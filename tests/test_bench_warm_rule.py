"""The rules the default warm schedule and the chain limit are chosen by
(``bench.warm.chosen_schedules``, ``bench.warm.chosen_max_growth``), on known rows."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``bench`` ships with the repository, not the wheel
    sys.path.insert(0, str(REPO))

from bench.warm import chosen_max_growth, chosen_schedules  # noqa: E402


def row(epochs: int, mean: float, se: float, worst: float = 0.9) -> dict:
    return {"epochs": epochs, "hr_ratio_mean": mean, "hr_ratio_se": se,
            "hr_ratio_min": worst}


def test_the_fewest_epochs_whose_mean_less_its_error_reaches_the_target_whatever_the_worst_seed():
    rows = [row(1, 0.988, 0.0098), row(2, 0.9958, 0.0098, worst=0.95), row(3, 0.9961, 0.01), row(5, 0.998, 0.0094)]
    assert chosen_schedules(rows) == {1}


def test_rows_of_as_many_epochs_that_qualify_are_all_picks_and_one_that_does_not_is_not():
    rows = [row(2, 0.9957, 0.0095), row(2, 0.9958, 0.0098), row(2, 0.985, 0.01), row(5, 0.999, 0.001)]
    assert chosen_schedules(rows) == {0, 1}


def test_no_row_qualifies_no_pick():
    assert chosen_schedules([row(1, 0.97, 0.001), row(5, 0.985, 0.01)]) == set()
    assert chosen_schedules([]) == set()


def generation(growth: float, mean: float) -> dict:
    return {"growth": growth, "hr_ratio_mean": mean}


def test_the_chain_limit_is_the_last_growth_before_the_first_warm_start_under_the_target():
    rows = [generation(0.026, 0.988), generation(0.052, 1.002), generation(0.079, 0.983), generation(0.107, 0.979),
            generation(0.135, 0.99)]  # a later generation back over the target does not extend it
    assert chosen_max_growth(rows) == 0.079
    assert chosen_max_growth([generation(0.026, 0.97), generation(0.052, 0.99)]) == 0.0
    assert chosen_max_growth([generation(0.026, 0.98), generation(0.052, 0.98)]) == 0.052  # the target itself holds
