"""The factors of a BPR model (numpy only, so that a process can draw a training's start before
TensorFlow is imported: ``trainer_service.distributed.connect``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer_service.hyperparameters import Hyperparameters
from trainer_service.sampling import seed_sequence

# The seed's stream of the initial factors (bpr's triples draw from stream 2, the evaluation's split from 3).
_INIT_STREAM = 1


@dataclass(frozen=True)
class Factors:
    """A trained model: ``user_factors`` (U, F), ``artist_factors`` (A, F), ``artist_bias`` (A,),
    all float32."""

    user_factors: np.ndarray
    artist_factors: np.ndarray
    artist_bias: np.ndarray


def initial_factors(num_users: int, num_artists: int, hp: Hyperparameters) -> Factors:
    """The factors training starts from: user (U, F) and artist (A, F) factors drawn from
    N(0, ``hp.init_std``) with the seed's init stream, a zero artist bias (A,); float32. Every
    trainer starts here, so the same seed starts every trainer from the same factors. ValueError
    for factors still to be chosen from the data (``Hyperparameters.resolved`` first)."""
    if not hp.is_resolved:
        raise ValueError("factors are chosen from the data: resolve the hyperparameters first "
                         "(Hyperparameters.resolved)")
    init = np.random.default_rng(seed_sequence(hp.seed, _INIT_STREAM))
    f = hp.factors
    return Factors(user_factors=init.normal(0.0, hp.init_std, (num_users, f)).astype(np.float32),
                   artist_factors=init.normal(0.0, hp.init_std, (num_artists, f)).astype(np.float32),
                   artist_bias=np.zeros(num_artists, np.float32))
