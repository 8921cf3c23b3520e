"""``python -m launcher --once`` end to end in a temporary directory: it starts both
services, trains (tiny synthetic data, 3 epochs), waits for the index to serve the model, prints
recommendations, similar artists, the live part (plays recorded through RecordPlays in the default
SQLite play log and the recommendations that follow them) and grpcurl commands, and stops both
cleanly. A second run on the same models dir finds the model and does not retrain, and starts the
demo listener afresh on the same log. A taken port fails with a clear message. An invalid version
is named and skipped, never taken for "no model" in silence."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT_S = 600  # hang protection only
DEMO_LISTENER = "new-listener-demo"


def launch(cwd, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DATA", None)
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def ranking(out: str, title: str) -> list[str]:
    """The artist ids of the ranking printed under the line that starts with ``title``."""
    lines = out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(title))
    ids = []
    for line in lines[start + 1:]:
        match = re.match(r"  \d+\. .* \[(\S+)\] +score +-?\d", line)
        if not match:
            break
        ids.append(match.group(1))
    return ids


def recorded_artists(out: str, user: str) -> list[str]:
    """The artist ids of the RecordPlays line for ``user``, which must say all 3 were recorded."""
    match = re.search(rf"^RecordPlays: {user} played (.*) \(5 plays each\): 3 recorded, "
                      rf"durable at log positions (\d+)\.\.(\d+)$", out, re.MULTILINE)
    assert match, out
    assert int(match.group(3)) - int(match.group(2)) == 2
    return re.findall(r"\[(\S+)\]", match.group(1))


def check_live_part(out: str, play_log: Path) -> None:
    """The printout's live part: a new listener unknown before, ranked after their plays (without
    the artists they played), a known user's ranking before and after, and the grpcurl commands
    for it with every flag before the address."""
    assert f"play log sqlite:///{play_log}" in out
    assert f"Recommend for new listener {DEMO_LISTENER} before any play: NOT_FOUND" in out
    played = recorded_artists(out, DEMO_LISTENER)
    assert len(set(played)) == 3
    after = ranking(out, f"Recommend for new listener {DEMO_LISTENER} after (model version ")
    assert len(after) == 5 and not set(after) & set(played)

    known = re.search(r"^Recommend for user (\S+) before \(model version ", out, re.MULTILINE).group(1)
    known_played = recorded_artists(out, known)
    assert len(set(known_played)) == 3 and not set(known_played) & set(played)
    before = ranking(out, f"Recommend for user {known} before (model version ")
    after = ranking(out, f"Recommend for user {known} after (model version ")
    assert len(before) == 5 and len(after) == 5 and not set(after) & set(known_played)
    assert before != after

    address = r"127\.0\.0\.1:\d+"
    for method in ("RecordPlays", "GetUserPlays", "ForgetUser"):
        assert re.search(rf"grpcurl -plaintext -d '\{{.*\}}' {address} musicrec\.v1\.IndexService/{method}$", out,
                         re.MULTILINE), method
    assert re.search(r'"plays": \[\{"user_id": "my-listener", "artist_id": "' + played[0], out)


@pytest.mark.slow
def test_launch_once_trains_serves_prints_and_stops(tmp_path):
    models = tmp_path / "var" / "models"
    common = ("--once", "--models-dir", str(models), "--trainer-port", "0", "--index-port", "0")
    # Three epochs do not reliably beat popularity on tiny data: the quality gate is turned off.
    first = launch(tmp_path, *common, "--data", "synthetic:tiny:seed=2", "--epochs", "3", "--gate", "off")
    out = first.stdout
    assert first.returncode == 0, out + first.stderr
    assert "training job" in out and "training: 3/3 epochs" in out and "epoch   1/3" not in out
    assert "published version 1" in out and "the index service serves version 1" in out
    assert out.count("Recommend for user") == 3 + 2 and out.count("SimilarArtists to") == 2
    assert "score" in out and "cosine" in out
    assert "grpcurl -plaintext" in out and "musicrec.v1.IndexService/Recommend" in out
    play_log = tmp_path / "var" / "plays.db"
    check_live_part(out, play_log)
    assert play_log.exists()
    assert out.rstrip().endswith("stopped.")
    assert (tmp_path / "var" / "logs" / "trainer.log").exists()

    second = launch(tmp_path, *common)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "found model version 1" in second.stdout and "training job" not in second.stdout
    assert second.stdout.count("Recommend for user") == 3 + 2  # the examples, the known user before and after
    assert f"ForgetUser cleared 3 plays of {DEMO_LISTENER} from an earlier run" in second.stdout
    check_live_part(second.stdout, play_log)


def test_play_log_url_default_choice_and_off(tmp_path):
    from launcher.__main__ import parse_args, play_log_url

    def url(*args: str) -> str | None:
        parsed = parse_args(["--models-dir", str(tmp_path / "var" / "models"), *args])
        return play_log_url(parsed)

    assert url() == f"sqlite:///{tmp_path}/var/plays.db"
    assert url("--events", "postgresql://musicrec@db:5432/plays") == "postgresql://musicrec@db:5432/plays"
    assert url("--no-events") is None
    with pytest.raises(SystemExit):
        parse_args(["--events", "sqlite:///x.db", "--no-events"])


def test_launch_refuses_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = launch(tmp_path, "--once", "--models-dir", str(tmp_path / "models"), "--trainer-port", str(port),
                      "--index-port", "0")
    assert done.returncode == 2
    assert f"port {port}" in done.stdout and "already in use" in done.stdout and "--trainer-port" in done.stdout


def test_newest_valid_version_names_and_skips_invalid_versions(models_dir, publish, tiny_artifacts, capsys):
    from launcher.demo import newest_valid_version

    for _ in range(3):
        publish(tiny_artifacts)
    (models_dir / "2" / "manifest.json").unlink()
    factors = models_dir / "3" / "artist_factors.npy"
    data = bytearray(factors.read_bytes())
    data[-1] ^= 0xFF
    factors.write_bytes(bytes(data))

    assert newest_valid_version(models_dir) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2, out
    assert out[0].startswith("model version 3 in ") and "artist_factors.npy checksum mismatch" in out[0]
    assert out[1].startswith("model version 2 in ") and "cannot open manifest.json" in out[1]
    assert all(line.endswith("; skipping it") for line in out)

    (models_dir / "1" / "manifest.json").unlink()
    assert newest_valid_version(models_dir) == 0  # none valid: the launcher trains


def test_newest_valid_version_lets_an_unexpected_error_through(models_dir, publish, tiny_artifacts, monkeypatch):
    import launcher.demo

    publish(tiny_artifacts)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a bad version")

    monkeypatch.setattr(launcher.demo, "validate_version", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        launcher.demo.newest_valid_version(models_dir)
