"""The benchmark's time-to-quality clock: evaluates every N epochs and at the last, and records
the training time of the first evaluation at or above the threshold."""

from __future__ import annotations

from types import SimpleNamespace

from bench.quality import QualityClock


def test_clock_evaluates_every_n_epochs_and_the_last_and_records_the_first_crossing():
    hit_rates = iter([0.10, 0.19, 0.15])
    evaluated = []

    def evaluate():
        evaluated.append(True)
        return SimpleNamespace(hit_rate_at_10=next(hit_rates))

    clock = QualityClock(epochs=5, threshold=0.19, every=2)
    clock.start()
    for epoch in range(1, 6):
        clock.checkpoint(epoch, evaluate)
    assert [epoch for epoch, _, _ in clock.curve] == [2, 4, 5]
    assert [hr for _, _, hr in clock.curve] == [0.10, 0.19, 0.15]
    assert clock.seconds_to_threshold == clock.curve[1][1]  # the first evaluation at >= 0.19
    assert len(evaluated) == 3


def test_clock_that_never_reaches_the_threshold_says_none():
    clock = QualityClock(epochs=3, threshold=0.5)
    assert clock.every == 1
    clock.start()
    for epoch in range(1, 4):
        clock.checkpoint(epoch, lambda: SimpleNamespace(hit_rate_at_10=0.2))
    assert clock.seconds_to_threshold is None and len(clock.curve) == 3
    assert clock.as_dict()["seconds_to_threshold"] is None
