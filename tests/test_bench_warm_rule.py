"""The rule the default warm schedule is chosen by (``bench.warm.chosen_schedules``), on known rows."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``bench`` ships with the repository, not the wheel
    sys.path.insert(0, str(REPO))

from bench.warm import chosen_schedules  # noqa: E402


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
