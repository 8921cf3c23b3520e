"""``--log-format json``: every line either service writes is one JSON object with time, level,
logger and message, plus the fields the call carried (version, job_id, ...)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

import grpc
import pytest

from musicrec.log_format import JsonFormatter
from musicrec.v1 import model_pb2, trainer_pb2, trainer_pb2_grpc
from service_processes import PYTHON, ServiceProcess, trainer

_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_lines(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        entry = json.loads(line)  # fails the test for any line that is not one JSON object
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert _TIME.match(entry["time"]), entry["time"]
        entries.append(entry)
    return entries


def test_formatter_carries_extra_fields_and_the_traceback():
    formatter = JsonFormatter({"worker": 2})
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("index_service.watcher", logging.WARNING, __file__, 1, "refusing %d: %s",
                                   (7, "checksum"), sys.exc_info())
    record.version = 7
    record.reason = "invalid"
    entry = json.loads(formatter.format(record))
    assert entry["message"] == "refusing 7: checksum" and entry["level"] == "WARNING"
    assert entry["logger"] == "index_service.watcher"
    assert (entry["version"], entry["reason"], entry["worker"]) == (7, "invalid", 2)
    assert "ValueError: bad" in entry["exception"]
    assert "\n" not in formatter.format(record)


@pytest.mark.slow
def test_both_services_write_json_lines(models_dir, publish, tiny_artifacts, tmp_path):
    publish(tiny_artifacts)
    index = ServiceProcess("index", [PYTHON, "-m", "index_service", "--models-dir", str(models_dir), "--port", "0",
                                     "--poll-interval", "0.2", "--log-format", "json"], tmp_path / "index.log")
    index.start()
    train = trainer(tmp_path, models_dir, None, "--log-format", "json").start()
    try:
        for _ in range(600):
            if "serving model version" in index.log():
                break
            time.sleep(0.05)
        # A training job: its spawned training process follows the trainer's log format too.
        with grpc.insecure_channel(train.address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            job = stub.StartTraining(trainer_pb2.StartTrainingRequest(
                source=trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(
                    size=trainer_pb2.SYNTHETIC_SIZE_TINY, seed=3)),
                hyperparameters=model_pb2.Hyperparameters(epochs=2),
                options=trainer_pb2.TrainingOptions(gate=trainer_pb2.QUALITY_GATE_OFF)), timeout=30)
            final = list(stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id), timeout=180))[-1]
        assert final.state == trainer_pb2.JOB_STATE_SUCCEEDED, final
    finally:
        assert index.stop() == 0, index.tail()
        assert train.stop() == 0, train.tail()
    entries = json_lines(index.log())
    serving = [e for e in entries if e["message"].startswith("serving model version")]
    assert serving and serving[0]["version"] == 1 and serving[0]["logger"] == "index_service.watcher"
    assert any(e["message"] == "index service stopped" for e in entries)
    trainer_entries = json_lines(train.log())
    assert any(e["message"].startswith("trainer listening on") for e in trainer_entries)
    assert any("training_pid" in e for e in trainer_entries), "no line from the training process"
