"""``python -m trainer_service train`` end to end in a subprocess: it publishes and prints a
version, and bad data, a failed publish or a bad flag end in a one-line error, no traceback; the
quality gate refuses a bad model (exit 3, both figures, nothing published) unless ``--gate off``;
``--final-fit all`` is recorded; progress is one line per phase when stderr is not a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_store import list_versions, load_version, read_manifest
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.warm_start import WarmSchedule

REPO = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"hit_rate_at_10", "ndcg_at_10", "auc", "evaluated_users", "popularity_hit_rate_at_10",
               "popularity_ndcg_at_10", "popularity_auc"}
# Three epochs do not reliably beat popularity: tests of other things turn the gate off.
FAST_FLAGS = ["--epochs", "3", "--factors", "8", "--batch-size", "128", "--validate-every", "0", "--gate", "off"]
# A model that has barely moved from its random start ranks at random: far below popularity.
UNTRAINED = ["--epochs", "1", "--factors", "8", "--learning-rate", "0.000001", "--validate-every", "0"]


def _train(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer_service", "train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def plays_csv(tmp_path: Path) -> Path:
    """Two taste groups of 30 users over 40 artists: group g plays artists 20g..20g+19, each user
    8 of them, with play counts."""
    rng = np.random.default_rng(0)
    lines = ["user_id,artist_id,plays"]
    for user in range(60):
        group = user // 30
        for artist in rng.choice(20, size=8, replace=False) + 20 * group:
            lines.append(f"u{user},a{artist},{int(rng.integers(1, 500))}")
    path = tmp_path / "plays.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _one_line_error(result: subprocess.CompletedProcess, prefix: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(prefix), result.stderr
    return errors[0]


@pytest.mark.slow
def test_train_publishes_and_prints_the_version(plays_csv, tmp_path):
    models = tmp_path / "models"
    source = f"table:{plays_csv}:weight=plays"
    table = _train("--data", source, "--models-dir", str(models), *FAST_FLAGS)
    assert table.returncode == 0, table.stderr
    assert "published version 1" in table.stdout
    assert "HR@10" in table.stdout and "popularity" in table.stdout and "AUC" in table.stdout
    # Not a terminal: one line per phase, and one summary line for the epochs (not one per epoch).
    assert "training (3 epochs at most)..." in table.stderr and "training: 3/3 epochs in" in table.stderr
    assert "epoch    1" not in table.stderr and "\r" not in table.stderr
    assert "quality gate     off, " in table.stdout and "final fit        none" in table.stdout

    as_json = _train("--data", source, "--models-dir", str(models), "--json", "--quiet", "--keep", "1",
                     "--eval-users", "all", *FAST_FLAGS)
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["version"] == 2 and list_versions(models) == [2]
    assert METRIC_KEYS <= set(result["metrics"]) and result["metrics"]["evaluated_users"] == 60
    # The same source again: by default a warm start from version 1, on the warm schedule.
    assert result["hyperparameters"]["factors"] == 8 and result["hyperparameters"]["epochs"] == 3
    assert len(result["epochs"]) == result["training"]["epochs"]["planned"] == WarmSchedule().hyperparameters(
        Hyperparameters(epochs=3)).epochs
    assert result["training"]["warm_start"]["from_version"] == 1
    assert "epoch" not in as_json.stderr
    assert result["training"]["gate"]["mode"] == "off" and result["training"]["final_fit"]["mode"] == "none"
    loaded = load_version(models / "2")
    try:
        assert loaded.manifest.metrics == result["metrics"]
        assert loaded.artifacts.num_users == 60 and loaded.artifacts.num_artists == 40
    finally:
        loaded.close()


def test_bad_data_exits_1_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,artist_id\nu1,a1\nu2\n")
    result = _train("--data", f"table:{bad}", "--models-dir", str(tmp_path / "models"))
    assert result.returncode == 1
    _one_line_error(result, "error: bad data:")
    missing = _train("--data", f"hetrec:{tmp_path / 'nowhere'}", "--models-dir", str(tmp_path / "models"))
    assert missing.returncode == 1
    assert "nowhere" in _one_line_error(missing, "error: bad data:")
    assert not (tmp_path / "models").exists() or list_versions(tmp_path / "models") == []


@pytest.mark.slow
def test_publish_failure_exits_1_with_one_line(plays_csv, tmp_path):
    not_a_directory = tmp_path / "models"
    not_a_directory.write_text("a file where the models directory should be\n")
    result = _train("--data", f"table:{plays_csv}", "--models-dir", str(not_a_directory), *FAST_FLAGS)
    assert result.returncode == 1
    _one_line_error(result, "error: publish failed:")


def test_bad_flags_exit_2(tmp_path):
    result = _train("--data", "synthetic:tiny", "--models-dir", str(tmp_path), "--learning-rate", "-1")
    assert result.returncode == 2
    assert "learning_rate must be in" in _one_line_error(result, "error:")
    assert _train("--models-dir", str(tmp_path)).returncode == 2  # --data is required
    assert "Traceback" not in _train("--data", "synthetic:tiny", "--models-dir", str(tmp_path),
                                     "--optimizer", "rmsprop").stderr
    for spec in ("ps=2", "ps=0,workers=1", "ps=2,workers=x"):
        bad = _train("--data", "synthetic:tiny", "--models-dir", str(tmp_path), "--distributed", spec)
        assert bad.returncode == 2, bad.stderr
        line = _one_line_error(bad, "error:")
        assert "cluster spec" in line or "must be in" in line, line
    both = _train("--data", "synthetic:tiny", "--models-dir", str(tmp_path), "--distributed", "ps=1,workers=1",
                  "--cluster", "env")
    assert both.returncode == 2 and "not both" in _one_line_error(both, "error:")


def test_help_documents_every_option_and_data_format():
    result = _train("--help")
    assert result.returncode == 0
    for option in ("--data", "--models-dir", "--data-dir", "--preset", "--factors", "--epochs", "--learning-rate",
                   "--regularization", "--bias-regularization", "--batch-size", "--seed", "--negative-sampling",
                   "--positive-sampling", "--optimizer", "--init-std", "--keep", "--eval-users",
                   "--validate-every", "--validation-users", "--json", "--quiet", "--gate", "--final-fit",
                   "--patience", "--negative-candidates", "--learning-rate-schedule", "--distributed", "--cluster"):
        assert option in result.stdout, option
    for source in ("synthetic[:SIZE]", "notebook", "hetrec", "movielens", "table", "user_artists.dat",
                   "ratings.csv", "lastfm_play.csv"):
        assert source in result.stdout, source
    top = subprocess.run([sys.executable, "-m", "trainer_service", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert top.returncode == 0 and "train" in top.stdout


def test_the_gate_refuses_a_bad_model_with_exit_3_and_both_figures(tmp_path):
    models = tmp_path / "models"
    refused = _train("--data", "synthetic:tiny", "--models-dir", str(models), *UNTRAINED)
    assert refused.returncode == 3, refused.stderr
    line = _one_line_error(refused, "error: quality gate refused the model: HR@10 ")
    assert "is not above the popularity baseline's" in line and "nothing was published" in line
    figures = [float(word.rstrip(",;'s")) for word in line.split() if word[:2] == "0."]
    assert len(figures) == 2 and figures[0] < figures[1]
    assert not models.exists() or list_versions(models) == []

    published = _train("--data", "synthetic:tiny", "--models-dir", str(models), *UNTRAINED, "--gate", "off",
                       "--json", "--quiet")
    assert published.returncode == 0, published.stderr
    result = json.loads(published.stdout)
    gate = read_manifest(models / str(result["version"])).training
    assert gate.gate_mode == "off" and not gate.gate_passed
    assert gate.gate_figures["hit_rate_at_10"] == pytest.approx(figures[0], abs=1e-4)
    assert gate.gate_figures["popularity_hit_rate_at_10"] == pytest.approx(figures[1], abs=1e-4)


@pytest.mark.slow
def test_final_fit_all_is_recorded(plays_csv, tmp_path):
    models = tmp_path / "models"
    result = _train("--data", f"table:{plays_csv}:weight=plays", "--models-dir", str(models), *FAST_FLAGS,
                    "--final-fit", "all", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    training = json.loads(result.stdout)["training"]
    assert training["final_fit"] == {"mode": "all", "epochs": 3}
    assert read_manifest(models / "1").training.final_fit == "all"


@pytest.mark.slow
def test_distributed_trains_on_a_local_cluster_and_records_it(plays_csv, tmp_path):
    models = tmp_path / "models"
    result = _train("--data", f"table:{plays_csv}:weight=plays", "--models-dir", str(models), *FAST_FLAGS,
                    "--distributed", "ps=2,workers=1", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["training"]["distributed"] == "ps=2,workers=1"
    assert read_manifest(models / "1").training.cluster == "ps=2,workers=1"
    assert "Failed to remove function" not in result.stderr  # the cluster outlives the compiled step


@pytest.mark.slow
def test_train_with_events_learns_the_logged_plays_and_records_the_mark(plays_csv, tmp_path):
    from play_log import Play, open_play_log

    url = f"sqlite:///{tmp_path / 'plays.db'}"
    with open_play_log(url) as log:
        log.record("", [Play("listener-new", "a3", 5, 1_700_000_000), Play("u0", "artist-new", 2, 1_700_000_000)])
    models = tmp_path / "models"
    result = _train("--data", f"table:{plays_csv}:weight=plays", "--models-dir", str(models), "--events", url,
                    "--gate", "off", *FAST_FLAGS)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(models / "1")
    assert manifest.play_log_position == 2 and "play log through position 2" in manifest.data_source
    assert manifest.num_users == 61 and manifest.num_artists == 41
    bad = _train("--data", f"table:{plays_csv}:weight=plays", "--models-dir", str(models), "--events", "nope://x",
                 *FAST_FLAGS)
    assert bad.returncode == 1
    assert "play log: unknown play log URL" in _one_line_error(bad, "error:")
