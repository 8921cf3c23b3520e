"""The synthetic generator: deterministic, the preset sizes, planted taste clusters that are visible
and learnable, long tails, readable names with a few duplicated on purpose."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import numpy as np
import pytest

from trainer_service.data import DataError, check_interactions, generate
from trainer_service.data import artist_names
from trainer_service.data.synthetic import PRESETS, SyntheticSize, default_genres


@pytest.fixture(scope="module")
def small():
    return generate("small", seed=0)


@pytest.fixture(scope="module")
def tiny():
    return generate("tiny", seed=0)


def test_same_seed_same_bytes_other_seed_other_data(tiny):
    again = generate("tiny", seed=0).interactions
    data = tiny.interactions
    for name in ("user_ids", "artist_ids", "artist_names", "users", "artists", "weights"):
        assert getattr(data, name).tobytes() == getattr(again, name).tobytes(), name
    assert data.fingerprint() != generate("tiny", seed=1).interactions.fingerprint()


def test_same_seed_same_bytes_in_another_process(tiny):
    code = "from trainer_service.data import generate; print(generate('tiny', seed=0).interactions.fingerprint())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == tiny.interactions.fingerprint()


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_presets_sizes(name, tiny, small):
    preset = PRESETS[name]
    data = {"tiny": tiny, "small": small}[name].interactions
    check_interactions(data)
    assert (data.num_users, data.num_artists) == (preset.users, preset.artists)
    assert abs(data.num_interactions - preset.interactions) <= 0.03 * preset.interactions


def test_medium_preset_size():
    data = generate("medium", seed=5).interactions  # about a second
    check_interactions(data)
    assert (data.num_users, data.num_artists) == (36_000, 16_000)
    assert abs(data.num_interactions - 1_750_000) <= 0.03 * 1_750_000


def test_presets_match_the_proto():
    assert [(p.users, p.artists, p.interactions) for p in PRESETS.values()] == [
        (300, 200, 6_000), (3_600, 1_600, 175_000), (36_000, 16_000, 1_750_000), (360_000, 160_000, 17_500_000)]


def test_explicit_sizes():
    data = generate(users=50, artists=60, interactions=300, genres=4, seed=2)
    check_interactions(data.interactions)
    assert (data.interactions.num_users, data.interactions.num_artists) == (50, 60)
    assert abs(data.interactions.num_interactions - 300) <= 15
    assert data.genre_names.tolist() == ["indie rock", "hip hop", "metal", "jazz"]
    custom = generate(SyntheticSize("mine", 20, 30, 100), seed=1)
    assert custom.interactions.num_users == 20


@pytest.mark.parametrize("kwargs,message", [
    (dict(users=0), r">= 1 user"),
    (dict(users=10, artists=10, interactions=5), r"between one per user"),
    (dict(users=10, artists=10, interactions=60), r"a quarter of all user-artist pairs"),
    (dict(artists=6, genres=4), r"too few for 4 genres"),
])
def test_impossible_sizes_are_refused(kwargs, message):
    with pytest.raises(DataError, match=message):
        generate("tiny", **kwargs)
    with pytest.raises(DataError, match=r"unknown synthetic size 'huge'"):
        generate("huge")


def test_ids_are_readable_and_in_index_order(tiny, small):
    assert tiny.interactions.user_ids[:3].tolist() == ["u0000", "u0001", "u0002"]
    assert tiny.interactions.artist_ids[-1] == "a0199"
    assert small.interactions.user_ids[-1] == "u3599"
    assert (np.sort(small.interactions.user_ids) == small.interactions.user_ids).all()


def test_planted_genres_are_visible(small):
    data = small.interactions
    inside = small.in_genre()
    # 80-90% of a user's artists are in their genres, and more of their plays.
    assert 0.80 <= inside.mean() <= 0.92
    assert inside[data.weights > 0].mean() >= 0.75
    assert 0.85 <= data.weights[inside].sum() / data.weights.sum() <= 0.97
    assert small.genre_names.size == default_genres(1_600) == 13
    assert set(np.unique(small.artist_genres).tolist()) == set(range(13))
    # Per user, not just on average: most users listen mostly inside their genres.
    per_user = np.bincount(data.users, weights=inside) / np.bincount(data.users)
    assert np.median(per_user) >= 0.8


def test_the_planted_signal_beats_popularity(small):
    """Leave one artist out per user: ranking unseen artists by popularity inside the user's genres
    (what a model that learns the genres can do) finds far more of them than global popularity."""
    data = small.interactions
    indptr, artists = data.csr()
    rng = np.random.default_rng(0)
    held = indptr[:-1] + (rng.random(data.num_users) * np.diff(indptr)).astype(np.int64)
    train = np.ones(data.num_interactions, dtype=bool)
    train[held] = False
    popularity = np.bincount(artists[train], minlength=data.num_artists).astype(float)
    hits_popular = hits_genre = 0
    for user in range(data.num_users):
        seen = artists[indptr[user]:indptr[user + 1]][train[indptr[user]:indptr[user + 1]]]
        target = artists[held[user]]
        scores = popularity.copy()
        scores[seen] = -np.inf
        hits_popular += target in np.argpartition(-scores, 10)[:10]
        genre = small.artist_genres
        mine = (genre == small.user_genres[user]) | (genre == small.user_second_genres[user])
        scores[mine] += 1e9
        hits_genre += target in np.argpartition(-scores, 10)[:10]
    assert hits_genre >= 3 * hits_popular
    assert hits_genre / data.num_users >= 0.2


def test_long_tails(small):
    data = small.interactions
    listeners = np.sort(data.listeners_per_artist())[::-1]
    # The top 10% of artists have a large share of the listeners; every artist has someone.
    assert listeners[: len(listeners) // 10].sum() >= 0.3 * listeners.sum()
    assert listeners[0] >= 10 * np.median(listeners)
    assert listeners.min() >= 1
    activity = np.bincount(data.users)
    assert activity.max() >= 4 * np.median(activity)
    assert activity.min() >= 1
    assert data.weights.max() >= 50 * np.median(data.weights)
    assert data.weights.min() >= 1 and (data.weights == np.round(data.weights)).all()


def test_names_are_readable_and_unique_but_for_the_planted_duplicates(small):
    names = small.interactions.artist_names
    pairs = small.duplicate_name_artists
    assert pairs.shape == (small.duplicate_names.size, 2) and pairs.shape[0] >= 2
    assert (names[pairs[:, 0]] == small.duplicate_names).all()
    assert (names[pairs[:, 1]] == small.duplicate_names).all()
    assert (small.artist_genres[pairs[:, 0]] != small.artist_genres[pairs[:, 1]]).all()
    values, counts = np.unique(names, return_counts=True)
    assert sorted(values[counts > 1].tolist()) == sorted(small.duplicate_names.tolist())
    assert (counts <= 2).all()
    assert all(re.fullmatch(r"[A-Z][A-Za-z]*( (&|the|[A-Z][A-Za-z]*))+", name) for name in names.tolist())


def test_word_lists_are_disjoint_single_words():
    lists = {name: getattr(artist_names, name).tolist()
             for name in ("ADJECTIVES", "NOUNS", "PLURALS", "FIRST_NAMES", "LAST_NAMES", "SUFFIXES")}
    for words in lists.values():
        assert len(set(words)) == len(words)
        assert all(re.fullmatch(r"[A-Z][a-z]+", word) for word in words)
    for (a, first), (b, second) in itertools.combinations(lists.items(), 2):
        assert not set(first) & set(second), (a, b)
    assert len(lists["NOUNS"]) == len(lists["PLURALS"])


def test_full_scale_names_are_unique():
    names = artist_names.unique_artist_names(160_000, np.random.default_rng(0))
    assert np.unique(names).size == 160_000


def _generation_hash(data) -> str:
    """SHA-256 over everything a generation returns: the interactions' fingerprint, the tags and
    the planted structure."""
    import hashlib

    digest = hashlib.sha256(data.interactions.fingerprint().encode())
    tags = data.interactions.tags
    for array in (tags.indptr, tags.indices, tags.weights, data.artist_genres, data.user_genres,
                  data.user_second_genres, data.duplicate_name_artists):
        digest.update(np.ascontiguousarray(array).tobytes())
    for names in (tags.names, data.duplicate_names):
        digest.update("\x1f".join(names.tolist()).encode("utf-8"))
    return digest.hexdigest()


# Pinned with the generator as it was before its sampling was sped up: published fingerprints
# (and every figure measured on synthetic data) depend on these bytes staying the same.
@pytest.mark.parametrize("size, seed, fingerprint, everything", [
    ("small", 0, "a5f15b60a544457db95286b835afa48dd7eaa3258530ed129d9736c5d1a52ebe",
     "9ed19a4ced1ca0fd563053e349de0e430865125b1030a6d74abda5c0b0c3031c"),
    ("medium", 7, "2b6ea772096975af1e1cf35d49f76c46425cf3f73c973e1b60b0671f36210959",
     "a1433752592b8ac1f08febf72af1cdd324b1a9d6fbc797e79a13045e1818a698"),
])
def test_generation_bytes_are_pinned(size, seed, fingerprint, everything):
    data = generate(size, seed=seed)
    assert data.interactions.fingerprint() == fingerprint
    assert _generation_hash(data) == everything


def test_sorted_lookup_answers_as_searchsorted():
    from trainer_service.data.synthetic import _SortedLookup, _World

    rng = np.random.default_rng(3)
    world = _World.plant(rng, 5_000, 12)
    for values, high, top in ((world.genre_cdf, 12.0, 12), (world.global_cdf, 1.0, 1)):
        queries = np.concatenate((rng.integers(0, top, 200_000) + rng.random(200_000), values,
                                  np.nextafter(values, 0), np.nextafter(values, np.inf), [0.0, float(high)]))
        for bins_per_value in (1, 4):
            found = _SortedLookup(values, high, bins_per_value).right(queries)
            np.testing.assert_array_equal(found, np.searchsorted(values, queries, side="right"))
    ties = np.array([0.0, 0.25, 0.25, 0.25, 0.5, 1.0, 1.0])
    queries = np.array([0.0, 0.1, 0.25, 0.3, 0.5, 0.99, 1.0])
    np.testing.assert_array_equal(_SortedLookup(ties, 1.0).right(queries), [1, 1, 4, 4, 5, 5, 7])


def test_first_occurrences_answer_as_unique():
    from trainer_service.data.synthetic import _first_occurrences

    rng = np.random.default_rng(4)
    for keys in (rng.integers(0, 50, 1000), rng.integers(0, 2**40, 5000), np.array([7]), np.zeros(0, dtype=np.int64),
                 np.array([2**62, 5, 2**62, 5])):  # the last overflows the packing: np.unique answers
        keys = keys.astype(np.int64)
        np.testing.assert_array_equal(_first_occurrences(keys), np.unique(keys, return_index=True)[1])
