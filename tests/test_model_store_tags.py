"""The artists' tags in the model store (format 3): building, validation, round trip, refusal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from model_store import InvalidVersionError, load_version
from model_store.artifacts import MAX_TAGS_PER_ARTIST, ArtistTags
from model_store.checksums import file_digest
from model_store.format import TAG_FILES
from test_model_store import block_artifacts, publish


def small_tags() -> ArtistTags:
    """4 artists: a0 rock 3 + pop 1, a1 pop 2, a2 none, a3 rock 1 + pop 1 (tie: the commoner first)."""
    return ArtistTags.from_triples(4, [0, 0, 1, 3, 3], ["Rock", "pop", " POP", "pop", "rock"], [3, 1, 2, 1, 1])


def test_from_triples_known_answer():
    tags = small_tags()
    # pop and rock are both carried by 3 and 2 artists: pop (a0, a1, a3) first.
    assert tags.names.tolist() == ["pop", "rock"]
    assert tags.counts.tolist() == [3, 2]
    assert [tags.artist_tag_names(a) for a in range(4)] == [["rock", "pop"], ["pop"], [], ["pop", "rock"]]
    assert tags.indptr.tolist() == [0, 2, 3, 3, 5]
    assert tags.weights.tolist() == [3, 1, 2, 1, 1]
    assert [tags.tag_artist_rows(t).tolist() for t in range(2)] == [[0, 1, 3], [0, 3]]
    assert (tags.indptr.dtype, tags.indices.dtype, tags.weights.dtype) == (np.int64, np.int32, np.float32)
    assert (tags.counts.dtype, tags.tag_indptr.dtype, tags.tag_artists.dtype) == (np.int64, np.int64, np.int32)
    tags.check(4)


def test_from_triples_sums_repeats_and_keeps_the_heaviest():
    names = [f"t{i:02d}" for i in range(MAX_TAGS_PER_ARTIST + 5)]
    weights = list(range(1, len(names) + 1))
    tags = ArtistTags.from_triples(2, [1] * len(names) + [1, 0], names + ["t00", "t00"], weights + [100, 1])
    kept = tags.artist_tag_names(1)
    assert len(kept) == MAX_TAGS_PER_ARTIST
    assert kept[0] == "t00"  # 1 + 100
    assert kept[1:] == [f"t{i:02d}" for i in range(len(names) - 1, 5, -1)]  # the 19 heaviest of the rest
    assert tags.artist_tag_names(0) == ["t00"]
    assert tags.counts[tags.names.tolist().index("t00")] == 2


def test_from_triples_with_equal_weights_orders_by_name():
    tags = ArtistTags.from_triples(1, [0] * 3, ["b", "c", "a"], [1, 1, 1], max_per_artist=2)
    assert tags.artist_tag_names(0) == ["a", "b"]


@pytest.mark.parametrize("rows, names, weights, message", [
    ([5], ["x"], [1], "out of range"),
    ([-1], ["x"], [1], "out of range"),
    ([0], ["  "], [1], "empty tag name"),
    ([0], ["x"], [0], "> 0"),
    ([0], ["x"], [float("nan")], "> 0"),
    ([0, 1], ["x"], [1], "not aligned"),
])
def test_from_triples_refuses_bad_input(rows, names, weights, message):
    with pytest.raises(ValueError, match=message):
        ArtistTags.from_triples(2, rows, names, weights)


def test_empty_tags_are_valid():
    tags = ArtistTags.empty(3)
    tags.check(3)
    assert tags.num_tags == 0 and tags.indptr.tolist() == [0, 0, 0, 0]


def _with(tags: ArtistTags, **arrays) -> ArtistTags:
    return dataclasses.replace(tags, **arrays)


@pytest.mark.parametrize("change, message", [
    (lambda t: _with(t, names=np.array(["pop", "Rock"])), "case folded"),
    (lambda t: _with(t, names=np.array(["pop", "pop"])), "distinct"),
    (lambda t: _with(t, counts=np.array([3, 3])), "counts do not match"),
    (lambda t: _with(t, indptr=t.indptr[:-1]), "indptr has shape"),
    (lambda t: _with(t, indices=t.indices.astype(np.float32)), "dtype"),
    (lambda t: _with(t, indices=np.array([1, 0, 0, 0, 2], dtype=np.int32)), "out of range"),
    (lambda t: _with(t, weights=np.array([3, 1, 2, 1, -1], dtype=np.float32)), "> 0"),
    (lambda t: _with(t, weights=np.array([1, 3, 2, 1, 1], dtype=np.float32)), "heaviest first"),
    (lambda t: _with(t, indices=np.array([1, 0, 0, 1, 1], dtype=np.int32)), "transpose"),
    (lambda t: _with(t, tag_artists=np.array([0, 1, 3, 3, 0], dtype=np.int32)), "transpose"),
    (lambda t: _with(t, tag_indptr=np.array([0, 3, 4])), "end at 5"),
])
def test_check_refuses_inconsistent_tags(change, message):
    with pytest.raises(ValueError, match=message):
        change(small_tags()).check(4)


def test_check_refuses_names_out_of_order():
    tags = ArtistTags.from_triples(2, [0, 1], ["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="ordered by"):
        _with(tags, names=np.array(["b", "a"])).check(2)


def test_check_refuses_a_tag_carried_twice_by_one_artist():
    tags = ArtistTags(names=np.array(["x"]), counts=np.array([2]), indptr=np.array([0, 2]),
                      indices=np.array([0, 0], dtype=np.int32), weights=np.array([1, 1], dtype=np.float32),
                      tag_indptr=np.array([0, 2]), tag_artists=np.array([0, 0], dtype=np.int32))
    with pytest.raises(ValueError, match="twice"):
        tags.check(1)


def test_check_refuses_too_many_tags_per_artist():
    n = MAX_TAGS_PER_ARTIST + 1
    tags = ArtistTags.from_triples(1, [0] * n, [f"t{i}" for i in range(n)], [1] * n, max_per_artist=n)
    with pytest.raises(ValueError, match=f"more than {MAX_TAGS_PER_ARTIST} tags"):
        tags.check(1)


def tagged_artifacts():
    art = block_artifacts()
    rows = np.arange(art.num_artists)
    tags = ArtistTags.from_triples(art.num_artists, rows, [f"block {r % 3}" for r in rows], np.ones(len(rows)))
    return dataclasses.replace(art, tags=tags)


def test_tags_round_trip(tmp_path):
    art = tagged_artifacts()
    manifest = publish(tmp_path, art)
    assert manifest.format_version >= 3  # tags since format 3
    assert set(TAG_FILES.values()) <= set(manifest.files)
    loaded = load_version(tmp_path / "1")
    try:
        assert loaded.tags is loaded.artifacts.tags
        for name in TAG_FILES:
            assert np.array_equal(getattr(loaded.tags, name), getattr(art.tags, name)), name
        assert loaded.tags.names.tolist() == ["block 0", "block 1", "block 2"]
        assert loaded.tags.tag_artist_rows(1).tolist() == list(range(1, 30, 3))
    finally:
        loaded.close()


def test_version_without_tags_loads_with_none(tmp_path):
    publish(tmp_path, block_artifacts())
    loaded = load_version(tmp_path / "1")
    try:
        assert loaded.tags is None and loaded.artifacts.tags is None
        assert loaded.manifest.format_version >= 3
    finally:
        loaded.close()


def test_publish_refuses_inconsistent_tags(tmp_path):
    art = tagged_artifacts()
    bad = dataclasses.replace(art, tags=_with(art.tags, weights=-art.tags.weights))
    with pytest.raises(ValueError, match="> 0"):
        publish(tmp_path, bad)


def forge(version_dir: Path, filename: str, array: np.ndarray) -> None:
    """Replace a file and update the manifest to match (a buggy writer: checksums pass)."""
    path = version_dir / filename
    path.unlink()
    np.save(path, array)
    manifest = version_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data["files"][filename].update(size=path.stat().st_size, blake3=file_digest(path, "blake3")[1])
    manifest.write_text(json.dumps(data))


@pytest.mark.parametrize("filename, make, message", [
    ("artist_tag_weights.npy", lambda t: np.zeros_like(t.weights), "tag weights must be finite and > 0"),
    ("tag_artist_indices.npy", lambda t: t.tag_artists[::-1].copy(), "transpose"),
    ("tag_names.npy", lambda t: np.array(["Block 0", "block 1", "block 2"]), "case folded"),
    ("artist_tag_indptr.npy", lambda t: t.indptr[:-1].copy(), "indptr has shape"),
    ("tag_counts.npy", lambda t: t.counts + 1, "counts do not match"),
])
def test_inconsistent_tag_file_is_refused(tmp_path, filename, make, message):
    art = tagged_artifacts()
    publish(tmp_path, art)
    forge(tmp_path / "1", filename, make(art.tags))
    with pytest.raises(InvalidVersionError, match=f"inconsistent arrays: .*{message}"):
        load_version(tmp_path / "1")


def test_corrupt_tag_file_is_refused(tmp_path):
    publish(tmp_path, tagged_artifacts())
    path = tmp_path / "1" / "tag_names.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidVersionError, match="tag_names.npy checksum mismatch"):
        load_version(tmp_path / "1")
