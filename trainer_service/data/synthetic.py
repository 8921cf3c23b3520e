"""The built-in synthetic generator: play counts with planted taste clusters.

The world it plants (all of it returned in ``SyntheticData`` for tests that want known answers):

- C genres of uneven size (genre g gets a share of the artists ∝ (g + 1)^-0.6, genre 0 largest).
  Each artist belongs to one genre; its popularity within the genre follows Zipf's law (weight ∝
  1 / (rank + 1) over a random ranking), so popularity is long-tailed within and across genres.
- Each user has a main genre (drawn ∝ genre size) and, with probability 0.6, a secondary one. A
  user's number of distinct artists is long-tailed (lognormal, at least 3, capped so that at most
  half of the user's genre pool is ever needed), scaled so the total matches the requested number
  of interactions. About 86% of a user's artists (a per-user Beta(9, 1.5) fraction) are drawn from
  their genres (70% main, 30% secondary), the rest by global popularity; artists are drawn without
  replacement, by popularity.
- Play counts are long-tailed: a per-user volume (lognormal) times per-pair lognormal noise, three
  1.5 times higher inside the user's genres, at least 1.

A BPR model that finds the genres beats popularity clearly; popularity alone is a fair baseline.

Determinism: everything comes from ``numpy.random.SeedSequence(seed)`` through independent child
streams and order-stable numpy operations, so equal seeds give byte-identical arrays in any
process (for a given numpy version). Memory scales with the interactions: users are sampled in
blocks, never as a users x artists matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer_service.data.artist_names import unique_artist_names
from trainer_service.data.errors import DataError
from trainer_service.data.interactions import Interactions
from trainer_service.data.tags import genre_tags


@dataclass(frozen=True)
class SyntheticSize:
    """A size preset (the proto's ``SyntheticSize``): exact users and artists, about
    ``interactions`` distinct (user, artist) pairs (within a few percent)."""

    name: str
    users: int
    artists: int
    interactions: int


#: The presets, by name. "small" (1/100 of Last.fm 360K) is the default.
PRESETS = {
    "tiny": SyntheticSize("tiny", 300, 200, 6_000),
    "small": SyntheticSize("small", 3_600, 1_600, 175_000),
    "medium": SyntheticSize("medium", 36_000, 16_000, 1_750_000),
    "full": SyntheticSize("full", 360_000, 160_000, 17_500_000),
}
DEFAULT_SIZE = "small"

GENRE_NAMES = (
    "indie rock", "hip hop", "metal", "jazz", "electronic", "folk", "soul", "punk", "classical", "reggae",
    "country", "ambient", "house", "k-pop", "blues", "synth-pop", "bossa nova", "grunge", "trip hop",
    "drum and bass", "r&b", "shoegaze", "afrobeat", "dubstep", "gospel", "emo", "ska", "disco", "flamenco",
    "post-rock", "lo-fi", "bluegrass",
)

_GENRE_SIZE_EXPONENT = 0.6
_ZIPF_EXPONENT = 1.0
_ZIPF_OFFSET = 1.0
_SECOND_GENRE_PROBABILITY = 0.6
_MAIN_GENRE_SHARE = 0.7  # of in-genre draws, for users with a secondary genre
_IN_GENRE_BETA = (9.0, 1.5)  # mean 0.857
_ACTIVITY_SIGMA = 0.9
_MIN_ARTISTS_PER_USER = 3
_MAX_ARTISTS_PER_USER = 2_000
_POOL_FRACTION = 0.5  # at most this fraction of a pool is drawn without replacement
_IN_GENRE_PLAYS_FACTOR = 1.5
_PLAYS_MEDIAN = 20.0
_MAX_PLAYS = 1_000_000
_BLOCK_PAIRS = 2_000_000  # target pairs per sampling block (bounds the block's memory)
_OVERSAMPLE = (1.3, 1.6, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0)


@dataclass(frozen=True)
class SyntheticData:
    """Generated interactions and the structure planted in them.

    - ``artist_genres``: (A,) int32 genre of each artist; ``user_genres``: (U,) int32 main genre;
      ``user_second_genres``: (U,) int32 secondary genre or -1; ``genre_names``: (C,) unicode.
    - ``duplicate_names``: (D,) unicode names given to two artists each on purpose;
      ``duplicate_name_artists``: (D, 2) int32 the two artist indices of each (different genres
      when C > 1), for tests of name lookup.
    """

    interactions: Interactions
    artist_genres: np.ndarray
    user_genres: np.ndarray
    user_second_genres: np.ndarray
    genre_names: np.ndarray
    duplicate_names: np.ndarray
    duplicate_name_artists: np.ndarray

    def in_genre(self) -> np.ndarray:
        """(N,) bool: whether each interaction's artist is in one of its user's genres."""
        data = self.interactions
        genre = self.artist_genres[data.artists]
        return (genre == self.user_genres[data.users]) | (genre == self.user_second_genres[data.users])


def default_genres(artists: int) -> int:
    """Genres for ``artists`` artists: sqrt(artists) / 3, between 4 and 32 (5 for tiny, 13 small, 32 larger)."""
    return int(np.clip(round(np.sqrt(artists) / 3), 4, len(GENRE_NAMES)))


def resolve_size(size: str | SyntheticSize) -> SyntheticSize:
    """A preset by name ("" means the default), or ``size`` itself."""
    if isinstance(size, SyntheticSize):
        return size
    name = size or DEFAULT_SIZE
    if name not in PRESETS:
        raise DataError(f"unknown synthetic size {size!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def generate(
    size: str | SyntheticSize = DEFAULT_SIZE,
    *,
    seed: int = 0,
    users: int | None = None,
    artists: int | None = None,
    interactions: int | None = None,
    genres: int | None = None,
) -> SyntheticData:
    """Generates a data set: ``size`` a preset name (see ``PRESETS``) or a ``SyntheticSize``;
    ``users``, ``artists``, ``interactions`` override the preset's numbers; ``genres`` defaults
    to ``default_genres(artists)``. ``seed`` is any integer (negative ones are taken mod 2^64).

    Exactly ``users`` users and ``artists`` artists; the number of interactions is close to the
    request (a few percent under when the request is near what the pools allow). Raises
    ``DataError`` for impossible sizes. Full size takes well under a minute and ~1 GiB.
    """
    preset = resolve_size(size)
    num_users = preset.users if users is None else int(users)
    num_artists = preset.artists if artists is None else int(artists)
    target = preset.interactions if interactions is None else int(interactions)
    num_genres = default_genres(num_artists) if genres is None else int(genres)
    if num_users < 1 or num_artists < 2 or num_genres < 1:
        raise DataError(f"synthetic data needs >= 1 user, >= 2 artists and >= 1 genre; got {num_users} users, "
                        f"{num_artists} artists, {num_genres} genres")
    if num_artists < 2 * num_genres:
        raise DataError(f"{num_artists} artists are too few for {num_genres} genres (>= 2 per genre)")
    if not num_users <= target <= 0.25 * num_users * num_artists:
        raise DataError(f"{target:,} interactions: expected between one per user ({num_users:,}) and a quarter "
                        f"of all user-artist pairs ({num_users * num_artists // 4:,})")
    if num_users * num_artists >= 2**62:
        raise DataError("too many users x artists for 64-bit pair keys")
    streams = np.random.SeedSequence(int(seed) % 2**64).spawn(5)
    world_rng, users_rng, sample_rng, plays_rng, names_rng = (np.random.Generator(np.random.PCG64(s)) for s in streams)

    world = _World.plant(world_rng, num_artists, num_genres)
    people = _Users.plant(users_rng, world, num_users, target)
    keys = _sample_pairs(sample_rng, world, people)
    keys = _fill_gaps(world, people, keys)
    user_codes = (keys // num_artists).astype(np.int32)
    artist_codes = (keys % num_artists).astype(np.int32)
    del keys
    weights = _plays(plays_rng, world, people, user_codes, artist_codes)
    names, duplicates, duplicate_artists = _names(names_rng, world)
    label = preset.name if (users, artists, interactions) == (None, None, None) else \
        f"{num_users} users x {num_artists} artists"
    genre_names = np.array([GENRE_NAMES[g] if g < len(GENRE_NAMES) else f"genre {g + 1}" for g in range(num_genres)])
    data = Interactions(
        user_ids=_ids("u", num_users),
        artist_ids=_ids("a", num_artists),
        artist_names=names,
        users=user_codes,
        artists=artist_codes,
        weights=weights,
        source=f"synthetic {label} (seed {int(seed)})",
        tags=genre_tags(world.genre, genre_names),  # so a served synthetic model shows tags
    )
    return SyntheticData(
        interactions=data,
        artist_genres=world.genre,
        user_genres=people.main,
        user_second_genres=people.second,
        genre_names=genre_names,
        duplicate_names=duplicates,
        duplicate_name_artists=duplicate_artists,
    )


def _ids(prefix: str, count: int) -> np.ndarray:
    """"u0000", "u0001", ...: zero-padded so that string order is index order."""
    width = max(4, len(str(count - 1)))
    return np.strings.add(prefix, np.strings.zfill(np.arange(count).astype(str), width))


class _SortedLookup:
    """``np.searchsorted(values, x, side="right")`` for a sorted float64 ``values`` in [0, high],
    with the same answers, several times faster on large query arrays: a table of where each of
    ``bins`` equal-width bins starts narrows every search to the few values in the query's bin,
    which a vectorized scan then counts. Exact because the bin key (truncated ``x * scale``) is
    monotone in x: values in lower bins are <= x, values in higher bins are > x."""

    def __init__(self, values: np.ndarray, high: float, bins_per_value: int = 4) -> None:
        self.values = values
        self.bins = bins_per_value * max(int(values.size), 1)
        self.scale = self.bins / high
        # first[b]: how many values have a key below b (the bin's start); first[b + 1] its end.
        self.first = np.searchsorted(self._key(values), np.arange(self.bins + 2), side="left")

    def _key(self, x: np.ndarray) -> np.ndarray:
        return np.minimum((x * self.scale).astype(np.int64), self.bins)

    def right(self, x: np.ndarray) -> np.ndarray:
        """(K,) int64: for each x, how many values are <= x."""
        key = self._key(x)
        position = self.first[key]
        end = self.first[key + 1]
        active = np.flatnonzero(position < end)
        while active.size:  # at most the largest bin's count of rounds, each over fewer queries
            active = active[self.values[position[active]] <= x[active]]
            position[active] += 1
            active = active[position[active] < end[active]]
        return position


def _sorted_search(values: np.ndarray, high: float):
    """A function x -> ``np.searchsorted(values, x, side="right")``: a ``_SortedLookup`` when
    ``values`` is sorted (always, by construction; the check keeps results identical if not)."""
    if values.size and np.all(values[1:] >= values[:-1]) and values[0] >= 0:
        return _SortedLookup(values, high).right
    return lambda x: np.searchsorted(values, x, side="right")


@dataclass(frozen=True)
class _World:
    """Artists, their genres and popularity, arranged for inverse-CDF sampling.

    ``order``: (A,) artists sorted by (genre, popularity rank); genre g occupies
    ``order[start[g]:start[g + 1]]``. ``genre_cdf``: (A,) g + cumulative share within genre g
    (last of each genre exactly g + 1); ``global_cdf``: (A,) cumulative share over all artists.
    """

    genre: np.ndarray
    share: np.ndarray
    start: np.ndarray
    order: np.ndarray
    genre_cdf: np.ndarray
    global_cdf: np.ndarray
    popularity: np.ndarray  # (A,) global share of each artist

    def __post_init__(self) -> None:
        # Both CDFs are searched millions of times (every draw); searching them via lookup
        # tables gives the same positions as np.searchsorted at a fraction of its cost.
        object.__setattr__(self, "_search_genre", _sorted_search(self.genre_cdf, float(self.num_genres)))
        object.__setattr__(self, "_search_global", _sorted_search(self.global_cdf, 1.0))

    @property
    def num_artists(self) -> int:
        return int(self.genre.size)

    @property
    def num_genres(self) -> int:
        return int(self.share.size)

    @classmethod
    def plant(cls, rng: np.random.Generator, num_artists: int, num_genres: int) -> "_World":
        share = (np.arange(num_genres) + 1.0) ** -_GENRE_SIZE_EXPONENT
        share /= share.sum()
        # Largest-remainder allocation, at least 2 artists per genre.
        counts = np.maximum(np.floor(share * num_artists).astype(np.int64), 2)
        while counts.sum() > num_artists:
            counts[np.argmax(counts)] -= 1
        remainder = share * num_artists - counts
        for g in np.argsort(-remainder, kind="stable")[: num_artists - counts.sum()]:
            counts[g] += 1
        genre = rng.permutation(np.repeat(np.arange(num_genres, dtype=np.int32), counts))
        order = np.lexsort((rng.random(num_artists), genre)).astype(np.int64)
        start = np.zeros(num_genres + 1, dtype=np.int64)
        np.cumsum(counts, out=start[1:])
        rank = np.arange(num_artists) - np.repeat(start[:-1], counts)
        within = (rank + _ZIPF_OFFSET) ** -_ZIPF_EXPONENT
        totals = np.add.reduceat(within, start[:-1])
        genre_cdf = np.repeat(np.arange(num_genres, dtype=np.float64), counts)
        cumulative = np.cumsum(within) - np.repeat(np.concatenate(([0.0], np.cumsum(totals)[:-1])), counts)
        genre_cdf += cumulative / np.repeat(totals, counts)
        genre_cdf[start[1:] - 1] = np.arange(1, num_genres + 1)
        global_share = within / np.repeat(totals, counts) * np.repeat(share, counts)
        global_cdf = np.cumsum(global_share)
        global_cdf /= global_cdf[-1]
        popularity = np.empty(num_artists)
        popularity[order] = global_share
        return cls(genre=genre, share=share, start=start, order=order, genre_cdf=genre_cdf,
                   global_cdf=global_cdf, popularity=popularity)

    def draw_in_genres(self, rng: np.random.Generator, genres: np.ndarray) -> np.ndarray:
        """(K,) artists, one per entry of ``genres``, by popularity within that genre."""
        position = self._search_genre(genres + rng.random(genres.size))
        return self.order[np.minimum(position, self.start[genres + 1] - 1)]

    def draw_any(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """(count,) artists by global popularity."""
        position = self._search_global(rng.random(count))
        return self.order[np.minimum(position, self.num_artists - 1)]


@dataclass(frozen=True)
class _Users:
    """Users' genres and how many distinct artists each gets from their genres and from anywhere."""

    main: np.ndarray
    second: np.ndarray
    want_in: np.ndarray
    want_out: np.ndarray
    volume: np.ndarray

    @property
    def num_users(self) -> int:
        return int(self.main.size)

    @classmethod
    def plant(cls, rng: np.random.Generator, world: _World, num_users: int, target: int) -> "_Users":
        C = world.num_genres
        main = rng.choice(C, size=num_users, p=world.share).astype(np.int32)
        has_second = (rng.random(num_users) < _SECOND_GENRE_PROBABILITY) & (C > 1)
        offset = rng.integers(1, max(C, 2), size=num_users)
        second = np.where(has_second, (main + offset) % C, -1).astype(np.int32)
        in_fraction = rng.beta(*_IN_GENRE_BETA, size=num_users)
        raw = rng.lognormal(0.0, _ACTIVITY_SIGMA, size=num_users)
        volume = rng.lognormal(np.log(_PLAYS_MEDIAN), 1.0, size=num_users)

        sizes = np.diff(world.start)
        pool = sizes[main] + np.where(second >= 0, sizes[np.maximum(second, 0)], 0)
        in_cap = np.maximum(np.floor(_POOL_FRACTION * pool), 1)
        out_cap = np.floor(_POOL_FRACTION * world.num_artists)
        cap = np.minimum(np.floor(np.minimum(in_cap / in_fraction, out_cap / np.maximum(1 - in_fraction, 1e-9))),
                         _MAX_ARTISTS_PER_USER)
        floor = np.minimum(_MIN_ARTISTS_PER_USER, cap)

        def total(scale: float) -> np.ndarray:
            return np.clip(np.rint(raw * scale), floor, cap)

        # The total is monotone in the scale: bisect for the requested number of interactions.
        low, high = 0.0, 1.0
        while total(high).sum() < target and high < 1e9:
            high *= 2
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if total(middle).sum() < target else (low, middle)
        wanted = total(high).astype(np.int64)
        want_in = np.clip(np.rint(wanted * in_fraction), 1, in_cap).astype(np.int64)
        want_out = np.clip(wanted - want_in, 0, out_cap).astype(np.int64)
        return cls(main=main, second=second, want_in=want_in, want_out=want_out, volume=volume)


def _sample_pairs(rng: np.random.Generator, world: _World, people: _Users) -> np.ndarray:
    """(N,) int64 sorted keys user * A + artist: each user's artists, drawn without replacement."""
    cumulative = np.cumsum(people.want_in + people.want_out)
    cuts = np.searchsorted(cumulative, np.arange(_BLOCK_PAIRS, int(cumulative[-1]), _BLOCK_PAIRS), side="right")
    edges = np.unique(np.concatenate(([0], cuts, [people.num_users])))
    blocks = [_sample_block(rng, world, people, int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


def _sample_block(rng: np.random.Generator, world: _World, people: _Users, first: int, end: int) -> np.ndarray:
    """Sorted keys of users ``first``..``end - 1``. Draws with replacement in rounds, keeps the first
    new artists of each (user, pool) up to what it still needs, and draws more for the rest."""
    A = world.num_artists
    count = end - first
    need = np.stack([people.want_in[first:end], people.want_out[first:end]], axis=1).reshape(-1)  # slot = 2u + pool
    main, second = people.main[first:end], people.second[first:end]
    kept = np.zeros(0, dtype=np.int64)
    for factor in _OVERSAMPLE:
        draws = np.where(need > 0, np.ceil(need * factor).astype(np.int64) + 2, 0)
        if not draws.any():
            break
        slot = np.repeat(np.arange(2 * count, dtype=np.int64), draws)
        user = slot // 2
        in_pool = slot % 2 == 0
        user_in = user[in_pool]
        use_second = (second[user_in] >= 0) & (rng.random(user_in.size) >= _MAIN_GENRE_SHARE)
        artist = np.empty(slot.size, dtype=np.int64)
        artist[in_pool] = world.draw_in_genres(rng, np.where(use_second, second[user_in], main[user_in]))
        artist[~in_pool] = world.draw_any(rng, int((~in_pool).sum()))
        keys = (user + first) * A + artist
        if kept.size:
            position = np.minimum(np.searchsorted(kept, keys), kept.size - 1)
            fresh = np.flatnonzero(kept[position] != keys)
        else:
            fresh = np.arange(keys.size)
        is_first = np.zeros(fresh.size, dtype=bool)
        is_first[_first_occurrences(keys[fresh])] = True
        chosen = fresh[is_first]  # first draw of each new pair, in draw order (fresh is ascending)
        chosen_slot = slot[chosen]
        # Slots are contiguous in draw order: rank each pair within its slot, keep what the slot needs.
        starts = np.flatnonzero(np.concatenate(([True], chosen_slot[1:] != chosen_slot[:-1])))
        rank = np.arange(chosen.size) - np.repeat(starts, np.diff(np.append(starts, chosen.size)))
        taken = chosen[rank < need[chosen_slot]]
        need -= np.bincount(slot[taken], minlength=need.size)
        # Two sorted runs: the stable sort (timsort for int64) merges them in linear time.
        kept = np.sort(np.concatenate((kept, np.sort(keys[taken]))), kind="stable")
    return kept


def _first_occurrences(keys: np.ndarray) -> np.ndarray:
    """(D,) int64: the position of the first occurrence of each distinct key of ``keys`` (N,) int64,
    in key order, as ``np.unique(keys, return_index=True)[1]``. Sorts each key packed with its
    position into one int64 (a plain sort, much cheaper than the stable argsort np.unique needs);
    np.unique itself when the packing would overflow."""
    bits = max(int(keys.size - 1).bit_length(), 1)
    if keys.size == 0 or int(keys.min()) < 0 or int(keys.max()) >= 2 ** (63 - bits):
        return np.unique(keys, return_index=True)[1]
    packed = np.sort((keys << bits) | np.arange(keys.size, dtype=np.int64))
    key = packed >> bits
    head = np.empty(packed.size, dtype=bool)
    head[0] = True
    np.not_equal(key[1:], key[:-1], out=head[1:])
    return packed[head] & ((1 << bits) - 1)


def _fill_gaps(world: _World, people: _Users, keys: np.ndarray) -> np.ndarray:
    """Adds a pair for any user or artist left without one (rare: an unlucky tail artist), so
    every user and artist has an interaction. Users get their main genre's most popular artist;
    artists get a user of their genre (deterministically spread)."""
    A, U = world.num_artists, people.num_users
    extra = []
    lonely_users = np.flatnonzero(np.bincount(keys // A, minlength=U) == 0)
    if lonely_users.size:
        extra.append(lonely_users * A + world.order[world.start[people.main[lonely_users]]])
    lonely_artists = np.flatnonzero(np.bincount(keys % A, minlength=A) == 0)
    if lonely_artists.size:
        by_genre = np.argsort(people.main, kind="stable")
        genre_start = np.searchsorted(people.main[by_genre], np.arange(world.num_genres + 1))
        genre = world.genre[lonely_artists]
        size = genre_start[genre + 1] - genre_start[genre]
        spread = lonely_artists * 7919  # deterministic, varied pick among the genre's users
        listener = np.where(size > 0, by_genre[np.minimum(genre_start[genre] + spread % np.maximum(size, 1), U - 1)],
                            spread % U)
        extra.append(listener * A + lonely_artists)
    if not extra:
        return keys
    added = np.setdiff1d(np.unique(np.concatenate(extra)), keys, assume_unique=True)
    return np.insert(keys, np.searchsorted(keys, added), added)


def _plays(rng: np.random.Generator, world: _World, people: _Users, users: np.ndarray,
           artists: np.ndarray) -> np.ndarray:
    """(N,) float32 play counts >= 1: user volume x lognormal noise, more inside the user's genres."""
    genre = world.genre[artists]
    inside = (genre == people.main[users]) | (genre == people.second[users])
    plays = people.volume[users] * rng.lognormal(0.0, 1.0, size=users.size)
    plays *= np.where(inside, _IN_GENRE_PLAYS_FACTOR, 1.0)
    return np.clip(np.ceil(plays), 1, _MAX_PLAYS).astype(np.float32)


def _names(rng: np.random.Generator, world: _World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names (A,), duplicated names (D,), their artist pairs (D, 2)): unique names except D on
    purpose, each shared by two artists of different genres (when there are several genres)."""
    A = world.num_artists
    names = unique_artist_names(A, rng)
    count = max(2, A // 1000) if A >= 4 else 0
    originals = rng.choice(A, size=count, replace=False) if count else np.zeros(0, dtype=np.int64)
    copies = np.empty(count, dtype=np.int64)
    taken = set(originals.tolist())  # bounded by A // 1000 entries: no per-row loop
    for i, original in enumerate(originals):
        candidates = rng.integers(0, A, size=64)
        pick = next((int(c) for c in candidates if int(c) not in taken and
                     (world.num_genres == 1 or world.genre[c] != world.genre[original])), None)
        if pick is None:
            pick = next(int(c) for c in rng.permutation(A) if int(c) not in taken)
        copies[i] = pick
        taken.add(pick)
    names[copies] = names[originals]
    pairs = np.stack([originals, copies], axis=1).astype(np.int32).reshape(-1, 2)
    return names, names[originals].copy(), pairs
