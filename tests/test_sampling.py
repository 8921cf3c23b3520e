"""BPR triple sampling: negatives are never positives, dense users are handled exactly, the
weighted and popularity samplers follow their distributions, the stream is ordered and
deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from trainer_service import sampling
from trainer_service.sampling import PairSet, TripletSampler, TripletStream


def _interactions(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = sorted(set(pairs))
    return (np.array([u for u, _ in pairs], dtype=np.int32), np.array([a for _, a in pairs], dtype=np.int32))


def _random_interactions(rng: np.random.Generator, users: int, artists: int, per_user: int):
    pairs = []
    for u in range(users):
        for a in rng.choice(artists, size=rng.integers(1, per_user + 1), replace=False):
            pairs.append((u, int(a)))
    return _interactions(pairs)


@pytest.mark.parametrize("piece", [None, 7, 4096])
def test_pair_set_membership_matches_a_python_set(monkeypatch, piece):
    if piece is not None:  # large queries are answered, and keys inserted, in pieces: ragged last piece included
        monkeypatch.setattr(sampling, "_QUERY_PIECE", piece)
        monkeypatch.setattr(sampling, "_INSERT_PIECE", piece)
        monkeypatch.setattr(sampling, "_FILTER_PIECE_BITS", 1 << 12)  # the filter set a range at a time
    rng = np.random.default_rng(1)
    users, artists = _random_interactions(rng, 300, 500, 40)
    pairs = PairSet(users, artists, 500)
    truth = set(zip(users.tolist(), artists.tolist()))
    qu = rng.integers(0, 300, 20_000)
    qa = rng.integers(0, 500, 20_000)
    qu = np.concatenate([qu, users])
    qa = np.concatenate([qa, artists])
    expected = np.array([(u, a) in truth for u, a in zip(qu.tolist(), qa.tolist())])
    assert np.array_equal(pairs.contains(qu, qa), expected)
    assert expected.sum() >= users.size  # every stored pair was queried, and found


@pytest.mark.parametrize("piece_bits", [1 << 6, 1 << 9, 1 << 25])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_bit_words_sets_the_bits_bitwise_or_at_sets(monkeypatch, piece_bits, dtype):
    monkeypatch.setattr(sampling, "_FILTER_PIECE_BITS", piece_bits)
    rng = np.random.default_rng(7)
    positions = np.concatenate([rng.integers(0, 1 << 12, 900), [0, 63, 64, (1 << 12) - 1, 5, 5]]).astype(dtype)
    expected = np.zeros((1 << 12) >> 6, dtype=np.uint64)
    np.bitwise_or.at(expected, positions.astype(np.int64) >> 6, np.uint64(1) << (positions & dtype(63)).astype(np.uint64))
    assert np.array_equal(sampling._bit_words(positions, 12), expected)
    assert sampling._bit_words(np.array([0, 6, 63], dtype=dtype), 6).tolist() == [1 | 1 << 6 | 1 << 63]


def test_pair_set_answers_every_pair_of_a_dense_grid():
    # Half of all pairs stored: the bit filter in front of the table has most of its bits set, so
    # both of its answers (clear: absent without a probe; set: the table decides) are exercised.
    rng = np.random.default_rng(4)
    grid_u, grid_a = np.divmod(np.arange(60 * 70), 70)
    stored = rng.random(grid_u.size) < 0.5
    pairs = PairSet(grid_u[stored], grid_a[stored], 70)
    assert np.array_equal(pairs.contains(grid_u, grid_a), stored)
    sparse = PairSet(grid_u[:3], grid_a[:3], 70)  # a nearly empty filter: most queries stop there
    assert np.array_equal(sparse.contains(grid_u, grid_a), np.arange(grid_u.size) < 3)


def test_pair_set_accepts_unsorted_and_duplicate_pairs():
    pairs = PairSet(np.array([2, 0, 2, 1]), np.array([1, 3, 1, 0]), 4)
    assert pairs.contains(np.array([0, 1, 2, 2, 3]), np.array([3, 0, 1, 0, 3])).tolist() == [True, True, True, False,
                                                                                            False]


def test_uniform_negatives_are_never_positives():
    rng = np.random.default_rng(2)
    users, artists = _random_interactions(rng, 200, 300, 120)
    sampler = TripletSampler(users, artists, None, 200, 300)
    triples = sampler.sample(200_000, np.random.default_rng(3))
    truth = set(zip(users.tolist(), artists.tolist()))
    assert all((u, j) not in truth for u, j in zip(triples.users.tolist(), triples.negatives.tolist()))
    assert all((u, i) in truth for u, i in zip(triples.users.tolist(), triples.positives.tolist()))
    assert triples.negatives.min() >= 0 and triples.negatives.max() < 300


def test_user_who_heard_almost_everything_gets_the_few_artists_left():
    # User 0 heard 998 of 1000 artists (rejection alone would need ~500 draws per negative);
    # user 1 heard all 1000 and has no negative: their interactions are never drawn.
    num_artists = 1000
    pairs = [(0, a) for a in range(num_artists) if a not in (17, 640)]
    pairs += [(1, a) for a in range(num_artists)]
    pairs += [(2, 5), (2, 6)]
    users, artists = _interactions(pairs)
    sampler = TripletSampler(users, artists, None, 3, num_artists)
    triples = sampler.sample(50_000, np.random.default_rng(4))
    assert 1 not in set(triples.users.tolist())
    dense = triples.negatives[triples.users == 0]
    assert set(dense.tolist()) == {17, 640}
    # Uniform over the two: each about half (binomial sd ~0.003 at this size).
    assert abs(np.mean(dense == 17) - 0.5) < 0.02
    sparse = triples.negatives[triples.users == 2]
    assert not np.isin(sparse, [5, 6]).any()


def test_complement_draw_is_exact_and_uniform():
    pairs = [(0, a) for a in (0, 1, 2, 5, 7, 8)] + [(1, 3)]
    users, artists = _interactions(pairs)
    sampler = TripletSampler(users, artists, None, 2, 10)
    draws = sampler.complement_draw(np.zeros(40_000, dtype=np.int64), np.random.default_rng(5))
    values, counts = np.unique(draws, return_counts=True)
    assert values.tolist() == [3, 4, 6, 9]
    assert np.all(np.abs(counts / draws.size - 0.25) < 0.015)
    other = sampler.complement_draw(np.ones(1000, dtype=np.int64), np.random.default_rng(6))
    assert set(other.tolist()) == set(range(10)) - {3}


def test_everyone_heard_everything_is_an_error():
    users, artists = _interactions([(0, 0), (0, 1), (1, 0), (1, 1)])
    with pytest.raises(ValueError, match="every user listened to every artist"):
        TripletSampler(users, artists, None, 2, 2)


def test_positives_are_a_uniform_bootstrap_by_default():
    users, artists = _interactions([(0, 0), (0, 1), (1, 2), (2, 3)])
    sampler = TripletSampler(users, artists, np.array([1, 1000, 1, 1], np.float32), 3, 10)
    triples = sampler.sample(40_000, np.random.default_rng(7))
    _, counts = np.unique(triples.positives, return_counts=True)
    assert np.all(np.abs(counts / 40_000 - 0.25) < 0.015)


def test_log_plays_weights_positives_by_log_play_counts():
    plays = np.array([1.0, 999.0, 3.0], dtype=np.float32)  # log1p: 0.693, 6.908, 1.386
    users, artists = _interactions([(0, 0), (0, 1), (1, 2)])
    sampler = TripletSampler(users, artists, plays, 2, 10, positive_sampling="log_plays")
    triples = sampler.sample(100_000, np.random.default_rng(8))
    shares = np.bincount(triples.positives, minlength=3)[:3] / 100_000
    expected = np.log1p(plays) / np.log1p(plays).sum()
    assert np.all(np.abs(shares - expected) < 0.01)


def test_popularity_negatives_follow_listener_counts():
    # Artist 0 has 3 listeners, artist 1 one; the notebook's sampler may return a user's own artist.
    users, artists = _interactions([(0, 0), (1, 0), (2, 0), (2, 1)])
    sampler = TripletSampler(users, artists, None, 3, 2, negative_sampling="popularity")
    triples = sampler.sample(40_000, np.random.default_rng(9))
    assert abs(np.mean(triples.negatives == 0) - 0.75) < 0.015


def _drain(stream: TripletStream, chunks: int) -> list:
    return [stream.next() for _ in range(chunks)]


def test_stream_gives_each_epoch_its_samples_in_padded_chunks():
    rng = np.random.default_rng(10)
    users, artists = _random_interactions(rng, 50, 80, 20)
    sampler = TripletSampler(users, artists, None, 50, 80)
    with TripletStream(sampler, np.random.default_rng(11), samples_per_epoch=1000, epochs=2, batch_size=64,
                       batches_per_chunk=4) as stream:
        chunks = _drain(stream, 8)  # 1000 = 256 + 256 + 256 + 232, twice
    assert [c.count for c in chunks] == [256, 256, 256, 232] * 2
    assert [c.epoch for c in chunks] == [1] * 4 + [2] * 4
    assert [c.last for c in chunks] == [False, False, False, True] * 2
    assert chunks[0].users.shape == (4, 64) and chunks[0].users.dtype == np.int32
    tail = chunks[3]
    assert not tail.users.reshape(-1)[232:].any() and not tail.negatives.reshape(-1)[232:].any()


def test_stream_is_deterministic_for_a_seed():
    rng = np.random.default_rng(12)
    users, artists = _random_interactions(rng, 40, 60, 10)
    sampler = TripletSampler(users, artists, None, 40, 60)

    def run(seed: int) -> list:
        with TripletStream(sampler, np.random.default_rng(seed), samples_per_epoch=300, epochs=3, batch_size=32,
                           batches_per_chunk=2) as stream:
            return [(c.users.copy(), c.positives.copy(), c.negatives.copy()) for c in _drain(stream, 15)]

    first, second, other = run(1), run(1), run(2)
    assert all(np.array_equal(a, b) for x, y in zip(first, second) for a, b in zip(x, y))
    assert not all(np.array_equal(a, b) for x, y in zip(first, other) for a, b in zip(x, y))


def test_stream_closes_while_the_producer_is_blocked():
    users, artists = _interactions([(0, 0), (1, 1)])
    sampler = TripletSampler(users, artists, None, 2, 3)
    stream = TripletStream(sampler, np.random.default_rng(0), samples_per_epoch=10, epochs=1000, batch_size=2,
                           batches_per_chunk=1, depth=1)
    stream.next()
    stream.close()  # returns: the producer notices the stop flag while waiting on the full queue
    assert not stream._thread.is_alive()


def test_stream_with_several_negative_candidates_gives_each_triple_that_many_true_negatives():
    rng = np.random.default_rng(13)
    users, artists = _random_interactions(rng, 50, 80, 30)
    truth = set(zip(users.tolist(), artists.tolist()))
    sampler = TripletSampler(users, artists, None, 50, 80)
    with TripletStream(sampler, np.random.default_rng(14), samples_per_epoch=500, epochs=1, batch_size=64,
                       batches_per_chunk=4, negative_candidates=3) as stream:
        chunks = _drain(stream, 2)  # 500 = 256 + 244
    assert chunks[0].negatives.shape == (4, 3, 64) and chunks[0].negatives.dtype == np.int32
    for chunk in chunks:
        flat_users = chunk.users.reshape(-1)[:chunk.count]
        # (batches, candidates, batch) -> (candidates, batches * batch): candidate c of triple k.
        candidates = chunk.negatives.transpose(1, 0, 2).reshape(3, -1)
        assert not candidates[:, chunk.count:].any()  # padding
        for c in range(3):
            assert all((u, j) not in truth for u, j in zip(flat_users.tolist(), candidates[c, :chunk.count].tolist()))
        assert (candidates[0, :chunk.count] != candidates[1, :chunk.count]).any()  # independent draws
