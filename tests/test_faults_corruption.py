"""Versions corrupted after publishing, against a real index-service process.

Every artifact file truncated, with flipped bytes, or deleted; the manifest edited (fields that
contradict the files, a file entry naming a path outside the version), not JSON, empty, missing,
or from a newer format: each version is refused with its reason in the log and in GetIndexInfo,
the old version keeps serving with the right answers, and health stays SERVING. A corrupt
version is then repaired in place (replaced whole, as a publisher would) and taken; finally a
restarted index comes back on the newest *valid* version when the newest on disk was corrupted
in place while served.

Files damaged *and* the manifest updated to match (a buggy or hostile writer: checksums pass):
Annoy trusts its files, and a few flipped bytes in an index made the index service segfault on
its first query. ``model_store/annoy_file.py`` now checks an index's structure before Annoy maps
it; such versions are refused like the others (and many random forgeries never crash a reader).

The model store's own unit tests cover the same validation function by function
(tests/test_model_store.py: checksum, truncated Annoy file, missing files, manifest fields,
garbage/NaN manifest, symlinks, pickled arrays, inconsistent shapes); this file checks the
service-level guarantee end to end.
"""

from __future__ import annotations

import blake3
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from annoy import AnnoyIndex

from model_store.annoy_file import check_annoy_structure
from model_store.format import DATA_FILES, FORMAT_VERSION, MANIFEST_NAME
from test_faults_harness import (
    SERVING,
    TINY_U0_TOP3,
    IndexClient,
    index_process,
    marked_model,
    publish_model,
    tiny_model_index,
    wait_until,
)

pytestmark = pytest.mark.slow


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in (len(data) // 3, len(data) - 1):  # one in the data, the last byte
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


def edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return apply


# (name, file damaged, damage, words the refusal reason must contain)
CASES: list[tuple[str, str, Callable[[Path], None], str]] = []
for _file in DATA_FILES:
    CASES += [
        (f"truncated {_file}", _file, truncate, f"{_file} is "),
        (f"flipped bytes in {_file}", _file, flip_bytes, f"{_file} checksum mismatch"),
        (f"deleted {_file}", _file, delete, f"cannot open {_file}"),
    ]
CASES += [
    ("manifest from a future format", MANIFEST_NAME, edit_manifest(lambda m: m.update(format_version=FORMAT_VERSION + 1)),
     f"format_version {FORMAT_VERSION + 1} is not supported"),
    ("manifest of format 1 over format-4 files", MANIFEST_NAME, edit_manifest(lambda m: m.update(format_version=1)),
     "files must list exactly the format-1 files"),
    ("manifest num_artists edited", MANIFEST_NAME,
     edit_manifest(lambda m: m["data"].update(num_artists=m["data"]["num_artists"] + 1)), "manifest says"),
    ("manifest checksum edited", MANIFEST_NAME,
     edit_manifest(lambda m: m["files"]["artist_bias.npy"].update(blake3="0" * 64)), "checksum mismatch"),
    ("manifest names a file outside the version", MANIFEST_NAME,
     edit_manifest(lambda m: m["files"].update({"../../../etc/passwd": {"size": 1, "blake3": "0" * 64}})),
     "unexpected ['../../../etc/passwd']"),
    ("manifest model_version edited", MANIFEST_NAME, edit_manifest(lambda m: m.update(model_version=1)),
     "manifest says model_version 1"),
    ("manifest not JSON", MANIFEST_NAME, lambda p: p.write_bytes(b"\x00\xff{not json"), "not valid JSON"),
    ("manifest empty", MANIFEST_NAME, lambda p: p.write_bytes(b""), "not valid JSON"),
    ("manifest a JSON list", MANIFEST_NAME, lambda p: p.write_text("[1, 2]"), "manifest must be an object"),
    ("manifest deleted", MANIFEST_NAME, delete, "cannot open manifest.json"),
    ("manifest over 1 MiB", MANIFEST_NAME, lambda p: p.write_text(" " * (1 << 20) + "{}"), "more than"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Version 1 (good) served by an index process; its log and client."""
    tmp = tmp_path_factory.mktemp("corruption")
    with tiny_model_index(tmp) as (models, process, client):
        yield tmp, models, process, client


def assert_serving_version_1(client: IndexClient) -> None:
    assert client.health() == SERVING
    assert [a.artist_id for a in client.recommend("u0", 3).artists] == TINY_U0_TOP3
    assert client.recommend("u0", 3).model_version == 1


def test_every_kind_of_corruption_is_refused_while_the_old_version_serves(served):
    tmp, models, process, client = served
    staging = tmp / "staging"
    versions = {}
    for number, (name, filename, damage, _reason) in enumerate(CASES, start=2):
        publish_model(staging, min_version=number)
        damage(staging / str(number) / filename)
        versions[number] = name
    # Corrupt versions appear in the models dir whole (rename), newest last, while v1 serves.
    for number in versions:
        os.rename(staging / str(number), models / str(number))
    wait_until(lambda: set(client.rejected()) >= set(versions), "every corrupt version refused")

    assert_serving_version_1(client)
    reasons = client.rejected()
    log = process.log()
    for number, (name, _file, _damage, reason) in enumerate(CASES, start=2):
        assert reason in reasons[number], f"{name}: {reasons[number]}"
        assert f"refusing model version {number}: " in log, name
    assert process.process.poll() is None

    # A refused version is remembered, not validated again on every poll.
    before = log.count("refusing model version")
    publish_model(models)  # a good version after all of them is still taken
    newest = len(CASES) + 2
    client.wait_serving(newest)
    assert process.log().count("refusing model version") == before
    assert [a.artist_id for a in client.recommend("u0", 3).artists] == TINY_U0_TOP3


def test_a_refused_version_replaced_whole_is_taken(served):
    tmp, models, process, client = served
    newest = max(int(p.name) for p in models.iterdir() if p.name.isdigit())
    client.wait_serving(newest)
    target = newest + 1
    staging = tmp / "staging-2"
    publish_model(staging, min_version=target)
    flip_bytes(staging / str(target) / "user_factors.npy")
    os.rename(staging / str(target), models / str(target))
    wait_until(lambda: target in client.rejected(), f"version {target} refused")
    assert client.served_version() == newest
    # Repaired by replacing the directory whole (rename cannot replace a non-empty directory:
    # remove, then rename the good one in).
    publish_model(tmp / "staging-3", min_version=target)
    shutil.rmtree(models / str(target))
    os.rename(tmp / "staging-3" / str(target), models / str(target))
    client.wait_serving(target)
    assert target not in client.rejected()


# -- damaged files with a manifest that matches them ------------------------------------------------


def forge(version_dir: Path, filename: str, seed: int, flips: int = 8) -> None:
    """Flip bytes of ``filename`` in the node headers (counts and child pointers) and rewrite the
    manifest's size and checksum to match, so only structural checks can catch it."""
    path = version_dir / filename
    data = bytearray(path.read_bytes())
    manifest = json.loads((version_dir / MANIFEST_NAME).read_text())
    dims = manifest["search"]["recommend" if filename == "recommend.ann" else "similar"]["dims"]
    node_bytes = 12 + 4 * dims
    rng = np.random.default_rng(seed)
    for _ in range(flips):
        node = int(rng.integers(0, len(data) // node_bytes))
        data[node * node_bytes + int(rng.integers(0, 12))] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))
    manifest["files"][filename] = {"size": len(data), "blake3": blake3.blake3(data).hexdigest()}
    for search in ("recommend", "similar"):
        manifest["search"][search]["method"] = "annoy"  # make the service query the index
    (version_dir / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_forged_annoy_files_are_refused_and_never_crash_the_service(served):
    tmp, models, process, client = served
    first = max(int(p.name) for p in models.iterdir() if p.name.isdigit()) + 1
    staging = tmp / "forged"
    forged = []
    for i, filename in enumerate(["recommend.ann", "similar.ann"] * 4):
        version = first + i
        publish_model(staging, marked_model(version, num_users=40, num_artists=300, factors=8), min_version=version)
        forge(staging / str(version), filename, seed=i)
        forged.append(version)
    for version in forged:
        os.rename(staging / str(version), models / str(version))
    wait_until(lambda: set(client.rejected()) >= set(forged), "every forged version refused")
    for version in forged:
        assert "is not a valid Annoy index" in client.rejected()[version]
    assert process.process.poll() is None
    assert client.health() == SERVING
    assert client.recommend("u0", 3).model_version < first


def test_structure_check_accepts_every_real_index(tmp_path):
    """No false refusals: indexes Annoy builds (tiny to mid-sized, several widths and tree
    counts, one or all threads) pass."""
    rng = np.random.default_rng(0)
    for items, dims, trees, jobs in [(1, 3, 5, 1), (3, 6, 10, -1), (12, 6, 20, 1), (300, 10, 20, -1),
                                     (2000, 34, 20, -1), (5000, 66, 10, -1)]:
        index = AnnoyIndex(dims, "angular")
        index.set_seed(1)
        for i, row in enumerate(rng.normal(size=(items, dims)).tolist()):
            index.add_item(i, row)
        index.build(trees, n_jobs=jobs)
        path = str(tmp_path / f"{items}-{dims}.ann")
        index.save(path)
        index.unload()
        check_annoy_structure(path, dims, items)


QUERY_FORGERIES = textwrap.dedent("""
    import sys
    import numpy as np
    from annoy import AnnoyIndex
    from model_store.annoy_file import check_annoy_structure
    base, dims, items, tries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    clean = np.fromfile(base, dtype=np.uint8)
    rng = np.random.default_rng(5)
    passed = 0
    for attempt in range(tries):
        data = clean.copy()
        for offset in rng.integers(0, data.size, int(rng.integers(1, 20))):
            data[offset] ^= rng.integers(1, 256)
        path = base + ".forged"
        data.tofile(path)
        try:
            check_annoy_structure(path, dims, items)
        except ValueError:
            continue
        passed += 1  # structurally sound: Annoy must answer without crashing
        index = AnnoyIndex(dims, "angular")
        index.load(path)
        for item in range(items):
            index.get_nns_by_item(item, 10, search_k=-1)
        for row in rng.normal(size=(20, dims)).tolist():
            index.get_nns_by_vector(row, 10)
        index.unload()
    print(passed)
""")


def test_forgeries_that_pass_the_check_do_not_crash_annoy(tmp_path):
    """Random byte flips anywhere in an index: the check refuses those that break the structure;
    Annoy answers queries on the rest (flipped vector values give other answers, not a crash).
    Runs in a child process, so a crash fails the test instead of killing pytest."""
    dims, items = 10, 300
    rng = np.random.default_rng(1)
    index = AnnoyIndex(dims, "angular")
    for i, row in enumerate(rng.normal(size=(items, dims)).tolist()):
        index.add_item(i, row)
    index.build(20, n_jobs=1)
    index.save(str(tmp_path / "base.ann"))
    index.unload()
    proc = subprocess.run([sys.executable, "-c", QUERY_FORGERIES, str(tmp_path / "base.ann"), str(dims), str(items),
                           "150"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert int(proc.stdout) > 0  # some forgeries were sound and were queried


def test_restart_comes_back_on_the_newest_valid_version(served):
    """The newest version is corrupted in place while served (the running index keeps it in
    memory); a restarted index refuses it and serves the one before."""
    tmp, models, process, client = served
    previous_good = publish_model(models).model_version
    newest = publish_model(models).model_version
    client.wait_serving(newest)
    flip_bytes(models / str(newest) / "artist_factors.npy")
    assert client.recommend("u0", 3).model_version == newest  # still served from memory

    client.close()
    assert process.stop() == 0, process.tail()
    restarted = index_process(tmp, models, name="index-restarted").start()
    try:
        with IndexClient(restarted.address) as again:
            again.wait_serving(previous_good)
            assert "checksum mismatch" in again.rejected()[newest]
            assert [a.artist_id for a in again.recommend("u0", 3).artists] == TINY_U0_TOP3
    finally:
        assert restarted.stop() == 0, restarted.tail()
