"""The model-store contract: atomic publish, validation, retention, search recall."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model_store import (
    InvalidVersionError,
    ModelArtifacts,
    PublishError,
    list_versions,
    load_version,
    publish_version,
    read_manifest,
    validate_version,
)
from model_store.checksums import file_digest
from model_store.format import FORMAT_VERSION
from ranking import BuildSettings, build_indexes
from ranking.inner_product import augment_items, item_vectors_with_bias, user_query
from ranking.search import CosineSearch, InnerProductSearch, SearchParams, top_k_indices

ROOT = Path(__file__).resolve().parents[1]
FAST = BuildSettings(exact_only_up_to=0, n_trees=5, sample_size=20, listed_similar_index=True)


def block_artifacts(num_users=40, num_artists=30, factors=8, seed=0) -> ModelArtifacts:
    """Users and artists in blocks (clusters) so rankings are well separated; deterministic."""
    rng = np.random.default_rng(seed)
    blocks = 3
    user_block = np.arange(num_users) % blocks
    artist_block = np.arange(num_artists) % blocks
    centers = np.eye(blocks, factors, dtype=np.float32)
    uf = centers[user_block] + 0.05 * rng.standard_normal((num_users, factors)).astype(np.float32)
    af = centers[artist_block] + 0.05 * rng.standard_normal((num_artists, factors)).astype(np.float32)
    seen = [np.sort(rng.choice(num_artists, size=3, replace=False)) for _ in range(num_users)]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(s) for s in seen])
    return ModelArtifacts(
        user_ids=np.array([f"user-{i}" for i in range(num_users)]),
        user_factors=uf.astype(np.float32),
        artist_ids=np.array([f"artist-{i}" for i in range(num_artists)]),
        artist_names=np.array([f"Artist {i}" for i in range(num_artists)]),
        artist_factors=af.astype(np.float32),
        artist_bias=(0.01 * rng.standard_normal(num_artists)).astype(np.float32),
        artist_listeners=rng.integers(1, 50, num_artists).astype(np.int32),
        seen_indptr=indptr,
        seen_indices=np.concatenate(seen).astype(np.int32),
    )


def publish(models_dir, artifacts=None, **kwargs):
    artifacts = artifacts or block_artifacts()
    return publish_version(models_dir, artifacts, indexes=build_indexes(artifacts, FAST), data_source="test",
                           data_fingerprint="0" * 64, num_interactions=120, hyperparameters={"factors": 8},
                           metrics={"hit_rate_at_10": 0.5}, **kwargs)


def test_publish_and_load_round_trip(tmp_path):
    art = block_artifacts()
    manifest = publish(tmp_path, art)
    assert manifest.model_version == 1
    assert list_versions(tmp_path) == [1]
    loaded = load_version(tmp_path / "1")
    try:
        for name in ("user_ids", "user_factors", "artist_ids", "artist_names", "artist_factors", "artist_bias",
                     "artist_listeners", "seen_indptr", "seen_indices"):
            assert np.array_equal(getattr(loaded.artifacts, name), getattr(art, name)), name
        assert loaded.manifest.metrics == {"hit_rate_at_10": 0.5}
        assert loaded.manifest.recommend_search.dims == 10
        assert 0.0 <= loaded.manifest.recommend_search.recall_at_10 <= 1.0
    finally:
        loaded.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_versions_only_grow_and_respect_min_version(tmp_path):
    assert [publish(tmp_path).model_version for _ in range(2)] == [1, 2]
    assert publish(tmp_path, min_version=10).model_version == 10
    assert publish(tmp_path).model_version == 11


def test_retention_keeps_newest(tmp_path):
    for _ in range(4):
        publish(tmp_path, keep=2)
    assert list_versions(tmp_path) == [3, 4]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".trash-")]


def test_list_versions_ignores_hidden_and_junk(tmp_path):
    for name in (".tmp-3-abc", "0", "07", "abc", "12x"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version")
    assert list_versions(tmp_path) == []
    assert list_versions(tmp_path / "missing") == []


CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from test_model_store import publish
    def hook(step):
        if step == {step!r}:
            os._exit(17)  # like SIGKILL: no cleanup, no finally blocks
    publish({models!r}, hook=hook)
""")


@pytest.mark.parametrize("step", ["files-written", "manifest-written"])
def test_crash_before_rename_leaves_no_visible_version(tmp_path, step):
    models = tmp_path / "models"
    script = CRASH_SCRIPT.format(tests=str(ROOT / "tests"), step=step, models=str(models))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    assert list_versions(models) == []
    leftovers = [p.name for p in models.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1
    # The next publish cleans up and publishes version 1, complete.
    assert publish(models).model_version == 1
    assert [p.name for p in models.iterdir() if not p.name.startswith(".publish")] == ["1"]
    validate_version(models / "1")


def test_publish_to_unwritable_place_raises_publish_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PublishError):
        publish(blocker / "models")


@pytest.fixture()
def published(tmp_path):
    publish(tmp_path)
    return tmp_path / "1"


def test_checksum_mismatch_is_refused(published):
    path = published / "artist_factors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidVersionError, match="artist_factors.npy checksum mismatch"):
        load_version(published)


def test_truncated_annoy_file_is_refused(published):
    path = published / "recommend.ann"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InvalidVersionError, match="recommend.ann is 100 bytes"):
        validate_version(published)


def test_missing_file_and_missing_manifest_are_refused(published):
    (published / "seen_indices.npy").unlink()
    with pytest.raises(InvalidVersionError, match="seen_indices.npy"):
        validate_version(published)
    (published / "manifest.json").unlink()
    with pytest.raises(InvalidVersionError, match="manifest.json"):
        read_manifest(published)


def edit_manifest(version_dir: Path, change) -> None:
    path = version_dir / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format_version=FORMAT_VERSION + 1), f"format_version {FORMAT_VERSION + 1} is not supported"),
    (lambda m: m.update(format_version=1), "files must list exactly the format-1 files"),
    (lambda m: m.pop("precomputed"), "precomputed must be an object"),
    (lambda m: m.update(model_version=7), "model_version 7"),
    (lambda m: m["files"].update({"../../etc/passwd": {"size": 1, "blake3": "0" * 64}}), "unexpected"),
    (lambda m: m["files"].pop("user_ids.npy"), "missing"),
    (lambda m: m["data"].update(num_users="many"), "data.num_users must be an integer"),
    (lambda m: m["search"]["recommend"].update(method="magic"), "search.recommend.method"),
    (lambda m: m["precomputed"].update(similar_method="magic"), "precomputed.similar_method must be one of annoy, exact, ivf, warm in format 5"),
    (lambda m: m.update(format_version=4) or m["precomputed"].update(recommend_method="warm"),
     "precomputed.recommend_method must be one of annoy, exact, ivf in format 4, got 'warm'"),
])
def test_invalid_manifest_is_refused_before_files_are_read(published, change, message):
    edit_manifest(published, change)
    with pytest.raises(InvalidVersionError, match=message):
        validate_version(published)


@pytest.mark.parametrize("method", ["annoy", "exact", "ivf"])
def test_every_way_of_making_the_lists_is_valid(published, method):
    """Lists made by IVF (batched), exact (batched or the exact search) or Annoy (the search, in
    versions made before batching) are all valid manifests."""
    edit_manifest(published, lambda m: m["precomputed"].update(recommend_method=method, similar_method=method))
    assert validate_version(published).precomputed.recommend_method == method


def test_manifest_garbage_and_nan_are_refused(published):
    (published / "manifest.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(InvalidVersionError, match="not valid JSON"):
        read_manifest(published)
    (published / "manifest.json").write_text('{"format_version": NaN}')
    with pytest.raises(InvalidVersionError, match="not valid JSON"):
        read_manifest(published)


def test_symlinked_file_is_refused(published, tmp_path):
    outside = tmp_path / "outside.npy"
    target = published / "artist_bias.npy"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(InvalidVersionError, match="artist_bias.npy"):
        validate_version(published)


def test_array_with_pickle_is_refused(published):
    # An object array needs pickle to load; with allow_pickle=False it must be refused, not executed.
    path = published / "artist_names.npy"
    np.save(path, np.array([object()] * 30, dtype=object), allow_pickle=True)
    edit_manifest(published, lambda m: m["files"]["artist_names.npy"].update(
        size=path.stat().st_size, blake3=file_digest(path, "blake3")[1]))
    with pytest.raises(InvalidVersionError, match="artist_names.npy is not a valid .npy array"):
        load_version(published)


def test_inconsistent_shapes_are_refused(published):
    path = published / "artist_bias.npy"
    np.save(path, np.zeros(29, dtype=np.float32))
    edit_manifest(published, lambda m: m["files"]["artist_bias.npy"].update(
        size=path.stat().st_size, blake3=file_digest(path, "blake3")[1]))
    with pytest.raises(InvalidVersionError, match="artist_bias has shape"):
        load_version(published)


def test_artifacts_check_rejects_bad_arrays():
    art = block_artifacts()
    bad = ModelArtifacts(**{**art.__dict__, "artist_factors": np.full_like(art.artist_factors, np.nan)})
    with pytest.raises(ValueError, match="NaN"):
        bad.check()
    dup = ModelArtifacts(**{**art.__dict__, "user_ids": np.array(["same"] * art.num_users)})
    with pytest.raises(ValueError, match="not unique"):
        dup.check()


def test_inner_product_transform_preserves_order():
    rng = np.random.default_rng(3)
    items = rng.standard_normal((200, 9)).astype(np.float32)
    query = rng.standard_normal(9).astype(np.float32)
    aug = augment_items(items)
    norms = np.linalg.norm(aug, axis=1)
    assert np.allclose(norms, norms.max(), rtol=1e-5)
    # The query gets a 0 in the extra coordinate, as InnerProductSearch sends it to Annoy.
    cos = aug @ np.append(query, np.float32(0.0)) / (norms * np.linalg.norm(query))
    assert np.array_equal(np.argsort(-cos)[:20], np.argsort(-(items @ query))[:20])


def test_top_k_indices_orders_and_skips_excluded():
    scores = np.array([0.5, 2.0, -np.inf, 2.0, 1.0], dtype=np.float32)
    assert top_k_indices(scores, 3).tolist() == [1, 3, 4]
    assert top_k_indices(scores, 10).tolist() == [1, 3, 4, 0]
    assert top_k_indices(scores, 0).tolist() == []


def test_annoy_path_matches_exact_on_clustered_factors(tmp_path):
    art = block_artifacts(num_users=300, num_artists=2000, factors=16, seed=1)
    publish(tmp_path, art)
    loaded = load_version(tmp_path / "1")
    try:
        params = SearchParams("annoy", -1, 16)
        rec = InnerProductSearch(item_vectors_with_bias(art.artist_factors, art.artist_bias),
                                 loaded.recommend_index, params)
        sim = CosineSearch(art.artist_factors, loaded.similar_index, params)
        hits = total = 0
        for u in range(0, 300, 3):
            q = user_query(art.user_factors[u])
            seen = art.seen_indices[art.seen_indptr[u]:art.seen_indptr[u + 1]]
            got, _ = rec.search(q, 10, exclude=seen)
            want, _ = rec.exact(q, 10, exclude=seen)
            assert not set(got.tolist()) & set(seen.tolist())
            hits += len(set(got.tolist()) & set(want.tolist()))
            total += 10
        assert hits / total >= 0.95
        hits = total = 0
        for a in range(0, 2000, 20):
            got, _ = sim.search(a, 10)
            want, _ = sim.exact(a, 10)
            assert a not in got.tolist()
            hits += len(set(got.tolist()) & set(want.tolist()))
            total += 10
        assert hits / total >= 0.95
    finally:
        loaded.close()
