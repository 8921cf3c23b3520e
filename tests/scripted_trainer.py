"""A trainer with BPRTrainer's interface whose factors follow a script (no TensorFlow): known
answers for early stopping, the quality gate and the final fit.

``scripted(script)`` is a ``trainer_factory`` for ``run_training``/``tune``: in epoch ``e`` the
trainer's model is ``script[e - 1]``, one of

- ``"popular"``: score = log(1 + training listeners) (about the popularity baseline),
- ``"anti"``: score = -training listeners (the least popular first: far below popularity),
- ``"genre"``: score = 1 for the user's planted genre, plus a small popularity term (the tiny
  synthetic preset's right answer: far above popularity),
- ``"half"``: ``"genre"`` for even users, ``"popular"`` for odd ones (in between).

The model is one dimension wider than the genres; the last column of ``user_factors`` holds the
epoch number (its artist column is 0, so it never changes a ranking): the published
``user_factors[:, -1]`` tells which epoch's factors were kept. Every constructed trainer is
recorded in ``ScriptedTrainer.made`` (its training-set size and epochs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer_service.data import generate

_TINY = generate("tiny", seed=0)
GENRES = int(max(_TINY.artist_genres.max(), _TINY.user_genres.max())) + 1


@dataclass(frozen=True)
class Stats:
    epoch: int
    loss: float
    samples_per_second: float


@dataclass(frozen=True)
class Factors:
    user_factors: np.ndarray
    artist_factors: np.ndarray
    artist_bias: np.ndarray


class ScriptedTrainer:
    made: list[dict] = []

    def __init__(self, users, artists, weights, num_users, num_artists, hp, script, user_genres, artist_genres):
        self.epoch = 0
        self.hp = hp
        self._script = script
        self._listeners = np.bincount(np.asarray(artists), minlength=num_artists).astype(np.float32)
        self._users, self._artists = num_users, num_artists
        self._user_genres, self._artist_genres = user_genres, artist_genres
        ScriptedTrainer.made.append({"interactions": int(np.asarray(users).size), "epochs": hp.epochs})

    def train_epoch(self, should_stop=None):
        if should_stop is not None and should_stop():
            return None
        self.epoch += 1
        return Stats(self.epoch, 1.0 / self.epoch, 1000.0)

    def factors(self) -> Factors:
        kind = self._script[self.epoch - 1]
        users = np.zeros((self._users, GENRES + 1), np.float32)
        items = np.zeros((self._artists, GENRES + 1), np.float32)
        users[:, -1] = self.epoch
        popularity = np.log1p(self._listeners)
        if kind == "anti":
            return Factors(users, items, -self._listeners)
        if kind == "popular":
            return Factors(users, items, popularity)
        items[np.arange(self._artists), self._artist_genres] = 10.0
        chosen = np.ones(self._users, bool) if kind == "genre" else (np.arange(self._users) % 2 == 0)
        users[np.flatnonzero(chosen), self._user_genres[chosen]] = 1.0
        return Factors(users, items, 0.1 * popularity.astype(np.float32))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def scripted(script: list[str], data=_TINY):
    """A trainer factory following ``script`` on ``data`` (a ``SyntheticData``; default tiny seed 0)."""

    def factory(users, artists, weights, num_users, num_artists, hp):
        return ScriptedTrainer(users, artists, weights, num_users, num_artists, hp, script, data.user_genres,
                               data.artist_genres)

    return factory


TINY = _TINY
