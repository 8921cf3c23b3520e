"""Many swaps in a row under continuous load: 50 versions published as fast as the model store
can, while clients hammer a real index-service process.

Checks: zero failed requests, every answer is the right one for the version that gave it, and
afterwards the process holds the Annoy files of one version only (count of mapped ``.ann``
files, deleted ones included) and its resident memory (RSS) is back to its level before the
swaps, within a margin far below what even a few leaked versions would cost (each version holds
several MiB: arrays, id lists and dicts, query matrix). The figures are printed (run with ``-s``) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import re

import pytest

from test_faults_harness import (
    Hammer,
    IndexClient,
    index_process,
    mapped_files,
    marked_model,
    publish_model,
    rss_kib,
    wait_until,
)

pytestmark = pytest.mark.slow

SWAPS = 50
USERS, ARTISTS, FACTORS = 3000, 1500, 16
# RSS may end a little above where it started (allocator arenas, gRPC buffers). One version of
# this size costs the process about 5 MiB (measured: RSS with no version vs. with one), so this
# margin is under 5 leaked versions out of 50.
RSS_MARGIN_KIB = 24 * 1024
CLIENT_THREADS = 3


def model(version: int):
    return marked_model(version, num_users=USERS, num_artists=ARTISTS, factors=FACTORS)


def test_fifty_swaps_under_load_fail_nothing_and_leak_nothing(tmp_path):
    models = tmp_path / "models"
    publish_model(models, model(1), keep=3)
    index = index_process(tmp_path, models, poll_interval_s=0.05).start()
    pid = index.process.pid
    try:
        with IndexClient(index.address) as client, Hammer(index.address, CLIENT_THREADS, num_users=USERS, num_artists=ARTISTS) as hammer:
            client.wait_serving(1)
            # Steady state before the swaps: the first version loaded and answering under load.
            wait_until(lambda: hammer.total > 2000, "load running on version 1")
            rss_before = rss_kib(pid)
            ann_before = mapped_files(pid)
            assert len(ann_before) == 2, ann_before

            for version in range(2, SWAPS + 2):
                publish_model(models, model(version), keep=3)  # retention deletes older directories
            last = SWAPS + 1
            client.wait_serving(last)
            hammer.wait_for_more(1000, "load running on the last version")
        # Old versions are unmapped once their last request ends: only the last one's files remain.
        wait_until(lambda: len(mapped_files(pid)) == 2, "one version's Annoy files mapped")
        ann_after = mapped_files(pid)
        rss_after = rss_kib(pid)

        log = index.log()
        swaps = len(re.findall(r"serving model version \d+", log)) - 1
        unloaded = len(re.findall(r"unloading model version \d+", log))
        print(f"\nswaps: {SWAPS} versions published ({USERS} users, {ARTISTS} artists, {FACTORS} factors), "
              f"{swaps} swapped in, {unloaded} unloaded; {hammer.total} requests, {len(hammer.errors)} failed; "
              f"RSS {rss_before} KiB before, {rss_after} KiB after ({rss_after - rss_before:+d} KiB); "
              f"mapped .ann files {len(ann_before)} before, {len(ann_after)} after")
        assert hammer.errors == [], hammer.errors[:5]
        assert hammer.total > 0 and last in hammer.versions
        assert swaps >= 2 and unloaded == swaps  # every version swapped out was unloaded
        assert all(f"/{last}/" in path for path in ann_after), ann_after
        assert rss_after <= rss_before + RSS_MARGIN_KIB, (rss_before, rss_after)
    finally:
        assert index.stop() == 0, index.tail()
