"""Writes the golden model-store fixture: a tiny committed version of the current format.

Run once per format version (``python scripts/make_golden_fixture.py``); the result is committed
under ``tests/fixtures/model_store/format-<N>/`` and ``tests/test_model_store_golden.py`` loads it on
every run, so a change that breaks reading published versions fails the tests.

From format 4 on the fixture is a warm publish (``GOLDEN_BASE``) whose base served Recommend exact
on this catalog, so it holds no ``recommend.ann`` (the path a format-4 reader must take for a side
without an Annoy index is tested on every run), while SimilarArtists, whose base was measured on a
catalog of another size, is measured afresh and keeps ``similar.ann`` (from format 5 on, when
every artist is listed, only because the build asks for it: ``listed_similar_index``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_store import FORMAT_VERSION, ModelArtifacts, publish_version  # noqa: E402
from model_store.artifacts import ArtistTags  # noqa: E402
from model_store.format import SearchConfig  # noqa: E402
from ranking import BaseSearch, BuildSettings, build_indexes  # noqa: E402


# (artist row, tag, weight): a0-a2 rock/indie, a3-a4 jazz, a4 also a unicode tag, a5 none.
GOLDEN_TAGS = [(0, "Rock", 3), (0, "indie", 1), (1, "rock ", 2), (2, "Indie", 2), (2, "rock", 1),
               (3, "jazz", 5), (4, "jazz", 2), (4, "\u00c9lectro", 1)]


def golden_artifacts() -> ModelArtifacts:
    """Two taste blocks: users u0,u1 like artists a0-a2; users u2,u3 like a3-a5 (3 factors).
    Tagged by ``GOLDEN_TAGS`` (formats 3 on store them)."""
    rows, names, weights = zip(*GOLDEN_TAGS)
    user_factors = np.array([[1, 0, 0.1], [0.9, 0.1, 0], [0, 1, 0.1], [0.1, 0.9, 0]], dtype=np.float32)
    artist_factors = np.array(
        [[1, 0, 0], [0.8, 0, 0.1], [0.6, 0.1, 0], [0, 1, 0], [0, 0.8, 0.1], [0.1, 0.6, 0]], dtype=np.float32)
    return ModelArtifacts(
        user_ids=np.array(["u0", "u1", "u2", "u3"]),
        user_factors=user_factors,
        artist_ids=np.array(["a0", "a1", "a2", "a3", "a4", "a5"]),
        artist_names=np.array(["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta \u00e9"]),
        artist_factors=artist_factors,
        artist_bias=np.array([0.0, 0.1, 0.0, 0.0, 0.1, 0.0], dtype=np.float32),
        artist_listeners=np.array([2, 1, 1, 2, 1, 1], dtype=np.int32),
        seen_indptr=np.array([0, 1, 2, 3, 5], dtype=np.int64),
        seen_indices=np.array([0, 1, 3, 3, 4], dtype=np.int32),
        tags=ArtistTags.from_triples(6, rows, names, weights),
    )


def _exact_base(dims: int, measured_artists: int) -> SearchConfig:
    return SearchConfig(method="exact", metric="angular", dims=dims, n_trees=2, search_k=-1, candidates_per_result=1,
                        recall_at_10=1.0, recall_sample_size=4, median_latency_ms=0.01,
                        measured_artists=measured_artists)


# The golden model's base (3 factors, 6 artists): Recommend measured exact on 6 artists (reused:
# no index), SimilarArtists on 100 (more than 10% away: measured again, index built).
GOLDEN_BASE = BaseSearch(recommend=_exact_base(5, 6), similar=_exact_base(3, 100))


def main() -> None:
    out = ROOT / "tests" / "fixtures" / "model_store" / f"format-{FORMAT_VERSION}"
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = golden_artifacts()
        indexes = build_indexes(artifacts, BuildSettings(n_trees=2, sample_size=4, listed_similar_index=True),
                                base=GOLDEN_BASE if FORMAT_VERSION >= 4 else None)
        publish_version(tmp, artifacts, indexes=indexes,
                        data_source="golden fixture", data_fingerprint="ab" * 32,
                        num_interactions=5, hyperparameters={"factors": 3, "epochs": 1},
                        metrics={"hit_rate_at_10": 1.0})
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(tmp) / "1", out / "1")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
