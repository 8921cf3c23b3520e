"""The benchmark's EASE peer (``bench/ease.py``): the closed form of Steck 2019 against a float64
inverse taken from the definition, and a ranking known by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy", reason="bench extras not installed (scipy): pip install -e '.[bench]'")

from bench import ease  # noqa: E402 - after the skip: bench.ease needs scipy
from trainer_service.data import generate  # noqa: E402
from trainer_service.evaluation import leave_one_out_split  # noqa: E402


def _everything_trains(users, artists, num_users, num_artists):
    """A split of these interactions that holds nothing out (all of them train)."""
    order = np.lexsort((artists, users))
    users, artists = np.asarray(users)[order], np.asarray(artists)[order]
    return leave_one_out_split(users, artists, np.ones(users.size, np.float32), num_users, num_artists, seed=0,
                               min_interactions=10**6)


def test_the_weights_are_the_closed_form_of_the_definition():
    data = generate("tiny", seed=1).interactions
    split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists, seed=3)
    lam = 10.0
    kept, b, x = ease.fit(split, lam)
    listeners = split.train_listeners()
    assert np.array_equal(kept, np.flatnonzero(listeners >= ease.MIN_LISTENERS))
    dense = x.toarray().astype(np.float64)
    assert set(np.unique(dense)) <= {0.0, 1.0}  # binary plays
    p = np.linalg.inv(dense.T @ dense + lam * np.eye(kept.size))
    expected = np.eye(kept.size) - p / np.diag(p)[None, :]
    assert np.abs(b - expected).max() < 1e-4
    assert np.all(np.diag(b) == 0.0)


def test_a_ranking_known_by_hand():
    """Artists 0 and 1 are always heard together, as are 2 and 3; artist 4 has one listener. For
    a history of artist 0 alone the best artist is 1, and 4 gets no row (below every real score)."""
    pairs = [(0, 1), (2, 3)] * 4
    users = [u for u, pair in enumerate(pairs) for _ in pair] + [0]
    artists = [a for pair in pairs for a in pair] + [4]
    split = _everything_trains(users, artists, len(pairs), 5)
    kept, b, _ = ease.fit(split, lam=0.5)
    assert kept.tolist() == [0, 1, 2, 3]
    scores = np.array([1.0, 0.0, 0.0, 0.0], np.float32) @ b  # the history {artist 0}
    assert scores.argmax() == 1 and scores[1] > 0 and scores[2] <= 0 and scores[3] <= 0
