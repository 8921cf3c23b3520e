"""Shared fixtures: a models directory, a fast ``publish`` into it, and a tiny known-answer model.

The tiny model (``tiny_artifacts``) has 4 genres of 3 artists and 2 users per genre; its right
answers are obvious by construction (see the fixture's docstring), like benfred/implicit's
checkerboard tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model_store import Manifest, ModelArtifacts, publish_version
from ranking import BuildSettings, build_indexes

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Small samples and one build thread: publishing a tiny model takes milliseconds. Annoy indexes
# built and measured at any size (exact_only_up_to 0): the tests' catalogs are small, and what
# they check of indexes would otherwise never be built (tests/test_warm_publish.py tests the rule).
FAST_BUILD = BuildSettings(exact_only_up_to=0, sample_size=50, n_jobs=1, tuning_budget_s=2.0)
# The same with both Annoy files, for the tests of the files themselves (by default a
# SimilarArtists side whose every artist is listed gets no index).
ANNOY_BUILD = BuildSettings(exact_only_up_to=0, sample_size=50, n_jobs=1, tuning_budget_s=2.0,
                            listed_similar_index=True)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """An empty (not yet created) models directory for this test."""
    return tmp_path / "models"


@pytest.fixture
def publish(models_dir: Path) -> Callable[..., Manifest]:
    """``publish(artifacts, into=None, build_settings=FAST_BUILD, **overrides) -> Manifest``: build
    the indexes and publish a version into ``models_dir`` (or ``into``) with placeholder metadata
    (override any ``publish_version`` keyword)."""

    def _publish(artifacts: ModelArtifacts, into: Path | None = None, build_settings: BuildSettings = FAST_BUILD,
                 **overrides) -> Manifest:
        kwargs = dict(
            data_source="tests: hand-made factors",
            data_fingerprint="0" * 64,
            num_interactions=max(1, int(artifacts.seen_indptr[-1])),
            hyperparameters={"factors": artifacts.num_factors, "epochs": 1, "seed": 0},
            metrics={"hit_rate_at_10": 0.5, "auc": 0.9, "evaluated_users": artifacts.num_users},
            keep=1000,
        )
        kwargs.update(overrides)
        return publish_version(into or models_dir, artifacts, indexes=build_indexes(artifacts, build_settings),
                               **kwargs)

    return _publish


GENRES = 4
ARTISTS_PER_GENRE = 3
USERS_PER_GENRE = 2


def tiny_model() -> ModelArtifacts:
    """The known-answer model; see ``tiny_artifacts``."""
    num_artists = GENRES * ARTISTS_PER_GENRE
    num_users = GENRES * USERS_PER_GENRE
    artist_factors = np.zeros((num_artists, GENRES), dtype=np.float32)
    for a in range(num_artists):
        genre, rank = divmod(a, ARTISTS_PER_GENRE)
        artist_factors[a, genre] = ARTISTS_PER_GENRE - rank  # 3, 2, 1 within a genre
        artist_factors[a, (genre + 1) % GENRES] = 0.1 * rank  # a little off-genre: distinct cosines
    user_factors = np.zeros((num_users, GENRES), dtype=np.float32)
    for u in range(num_users):
        user_factors[u, u // USERS_PER_GENRE] = 1.0
    # Tiny decreasing bias: breaks ties between off-genre artists by catalog order.
    artist_bias = (-0.001 * np.arange(num_artists)).astype(np.float32)
    # Every user has seen the top artist of their genre.
    seen_indices = np.array([(u // USERS_PER_GENRE) * ARTISTS_PER_GENRE for u in range(num_users)], dtype=np.int32)
    seen_indptr = np.arange(num_users + 1, dtype=np.int64)
    names = [f"Artist {a}" for a in range(num_artists)]
    names[4] = "The Twins"    # same name, fewer listeners
    names[7] = "the twins"    # same name (other case), more listeners: wins
    listeners = np.full(num_artists, 2, dtype=np.int32)
    listeners[4], listeners[7] = 3, 9
    return ModelArtifacts(
        user_ids=np.array([f"u{u}" for u in range(num_users)]),
        user_factors=user_factors,
        artist_ids=np.array([f"a{a}" for a in range(num_artists)]),
        artist_names=np.array(names),
        artist_factors=artist_factors,
        artist_bias=artist_bias,
        artist_listeners=listeners,
        seen_indptr=seen_indptr,
        seen_indices=seen_indices,
    )


@pytest.fixture
def tiny_artifacts() -> ModelArtifacts:
    """4 genres x 3 artists (ids a0..a11: genre g holds a{3g}, a{3g+1}, a{3g+2}, strongest first),
    2 users per genre (u{2g}, u{2g+1}), 4 factors (one per genre).

    Right answers: user u0 (genre 0) scores a0 = 3, a1 = 2, a2 = 1, then a11 = 0.2 and a10 = 0.1
    (genre 3's off-genre part), then the rest about 0 in catalog order (bias -0.001 * index).
    u0 has seen a0, so Recommend(u0, k=3) = [a1, a2, a11]; with include_seen [a0, a1, a2].
    SimilarArtists(a3) = [a4, a5, a2, a1] (cosines 0.999, 0.981, 0.196, 0.050). Names: "Artist N",
    except a4 "The Twins" (3 listeners) and a7 "the twins" (9 listeners): "THE TWINS" means a7.
    """
    return tiny_model()
