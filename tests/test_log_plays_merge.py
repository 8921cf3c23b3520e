"""The vectorized merge of a source and the play log (trainer_service.data.log_plays) equals, bit
for bit, the straightforward one it replaced: every remaining source row and every log play coded
together by ``build_interactions``. Random data with forgotten listeners, new listeners and
artists, repeated plays of a pair, numeric and non-numeric ids (the columnar read of each store:
tests/test_play_log.py)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from play_log import Play, PlayColumns, PlayRecorded
from trainer_service.data import DataError, Interactions
from trainer_service.data.coding import build_interactions, check_interactions
from trainer_service.data.columns import Catalog
from trainer_service.data.log_plays import with_log_plays
from trainer_service.data.tags import carry_tags

NOW = time.time()


def reference_merge(data: Interactions, plays: list[PlayRecorded], forgotten: set[str], through: int) -> Interactions:
    """The merge before it was vectorized (kept verbatim as the definition)."""
    import dataclasses

    keep = np.ones(data.num_interactions, dtype=bool)
    if forgotten:
        gone = np.isin(data.user_ids, np.array(sorted(forgotten), dtype=str))
        keep = ~gone[data.users]
    users = np.concatenate((data.user_ids[data.users[keep]], np.array([p.play.user_id for p in plays], dtype=str)))
    artists = np.concatenate((data.artist_ids[data.artists[keep]],
                              np.array([p.play.artist_id for p in plays], dtype=str)))
    weights = np.concatenate((data.weights[keep].astype(np.float64),
                              np.array([p.play.plays for p in plays], dtype=np.float64)))
    source = f"{data.source} + play log through position {through}"
    if users.size == 0:
        raise DataError(f"{source}: no interactions left")
    coded = build_interactions(pa.chunked_array([pa.array(users, pa.string())]),
                               pa.chunked_array([pa.array(artists, pa.string())]), weights,
                               source=source, shown=source,
                               catalog=Catalog(ids=pa.array(data.artist_ids, pa.string()),
                                               names=pa.array(data.artist_names, pa.string())))
    return dataclasses.replace(coded, tags=carry_tags(data.tags, data.artist_ids, coded.artist_ids))


def random_case(seed: int, numeric: bool, odd_log_id: bool):
    """A source of random (user, artist, weight) rows with names, and a log of plays over known
    and new ids (pairs repeated, some of the source's), with listeners forgotten."""
    rng = np.random.default_rng(seed)
    num_users, num_artists, rows = int(rng.integers(5, 60)), int(rng.integers(5, 80)), int(rng.integers(10, 400))
    user_name = (lambda i: str(i * 7 + 3)) if numeric else (lambda i: f"user-{i}")
    artist_name = (lambda i: str(i * 11 + 2)) if numeric else (lambda i: f"a{i:x}")
    users = np.array([user_name(i) for i in rng.integers(0, num_users, rows)])
    artists = np.array([artist_name(i) for i in rng.integers(0, num_artists, rows)])
    # Fractional weights: sums in another order would differ in the last bit.
    weights = rng.choice([1.0, 2.0, 0.1, 0.7, 3.3, 1e-3, 123.456], size=rows)
    catalog = Catalog(ids=pa.array(sorted(set(artists.tolist()))[::2], pa.string()),
                      names=pa.array([f"name {a}" for a in sorted(set(artists.tolist()))[::2]], pa.string()))
    data = build_interactions(pa.chunked_array([pa.array(users)]), pa.chunked_array([pa.array(artists)]), weights,
                              source="random", shown="random", catalog=catalog)
    plays = []
    for position in range(1, int(rng.integers(0, 300)) + 1):
        new_user, new_artist = rng.random() < 0.2, rng.random() < 0.15
        user = user_name(num_users + int(rng.integers(0, 10))) if new_user else str(rng.choice(data.user_ids))
        artist = artist_name(num_artists + int(rng.integers(0, 10))) if new_artist else str(rng.choice(data.artist_ids))
        plays.append(PlayRecorded(position, Play(user, artist, float(rng.choice([1, 2, 5, 1.5, 0.3 + 1])), NOW)))
    if odd_log_id and plays:
        plays.append(PlayRecorded(len(plays) + 1, Play("x-listener", "x-artist", 2.0, NOW)))
    known = data.user_ids.tolist()
    forgotten = set(rng.choice(known, size=int(rng.integers(0, max(1, len(known) // 3))), replace=False).tolist())
    return data, plays, forgotten


def assert_same(got: Interactions, want: Interactions) -> None:
    check_interactions(got)
    for name in ("user_ids", "artist_ids", "artist_names", "users", "artists", "weights"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name
    assert got.source == want.source
    assert got.fingerprint() == want.fingerprint()


@pytest.mark.parametrize("seed", range(40))
def test_the_merge_equals_coding_source_and_log_together(seed):
    data, plays, forgotten = random_case(seed, numeric=seed % 2 == 0, odd_log_id=seed % 4 == 0)
    assert_same(with_log_plays(data, plays, forgotten, len(plays)), reference_merge(data, plays, forgotten, len(plays)))
    assert_same(with_log_plays(data, PlayColumns.of(plays), forgotten, 9), reference_merge(data, plays, forgotten, 9))


def test_every_listener_forgotten_leaves_only_the_log():
    data, plays, _ = random_case(3, numeric=False, odd_log_id=False)
    everyone = set(data.user_ids.tolist())
    assert_same(with_log_plays(data, plays, everyone, 1), reference_merge(data, plays, everyone, 1))
    with pytest.raises(DataError, match="no interactions left"):
        with_log_plays(data, [], everyone, 1)


def test_an_empty_log_gives_the_source_back():
    data, _, _ = random_case(5, numeric=True, odd_log_id=False)
    assert_same(with_log_plays(data, [], set(), 0), reference_merge(data, [], set(), 0))


def test_a_pair_played_in_the_source_and_the_log_sums_in_log_order():
    """Source u1-a1 0.1; log +0.2, +0.3 (not associative in float64: (0.1+0.2)+0.3 != 0.1+(0.2+0.3))."""
    data = build_interactions(pa.chunked_array([pa.array(["u1", "u2"])]), pa.chunked_array([pa.array(["a1", "a1"])]),
                              np.array([0.1, 1.0]), source="s", shown="s")
    plays = [PlayRecorded(1, Play("u1", "a1", 0.2, NOW)), PlayRecorded(2, Play("u1", "a1", 0.3, NOW))]
    merged = with_log_plays(data, plays, set(), 2)
    assert_same(merged, reference_merge(data, plays, set(), 2))
    assert merged.weights[0] == np.float32((np.float64(np.float32(0.1)) + 0.2) + 0.3)


def test_a_sum_beyond_float32_is_refused_as_before():
    data = build_interactions(pa.chunked_array([pa.array(["u1", "u2"])]), pa.chunked_array([pa.array(["a", "b"])]),
                              np.array([3e38, 1.0]), source="s", shown="s")
    plays = [PlayRecorded(1, Play("u1", "a", 3e38, NOW))]
    with pytest.raises(DataError) as want:
        reference_merge(data, plays, set(), 1)
    with pytest.raises(DataError) as got:
        with_log_plays(data, plays, set(), 1)
    assert str(got.value) == str(want.value) and "does not fit in float32" in str(got.value)
