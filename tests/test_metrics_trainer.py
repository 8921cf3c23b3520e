"""The trainer's /metrics, scraped from a real trainer process (gRPC and metrics on port 0) and
parsed with prometheus_client's parser: RPC counts by method and code, a job counted by its final
state with its duration, the last published version and its HR@10."""

from __future__ import annotations

import asyncio
import math
import re

import grpc
import pytest

from musicrec.v1 import model_pb2, trainer_pb2, trainer_pb2_grpc
from service_processes import trainer
from test_metrics_index import scrape, scrape_until, value

pytestmark = pytest.mark.slow

TRAINER = "musicrec.v1.TrainerService"
TINY = trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=trainer_pb2.SYNTHETIC_SIZE_TINY, seed=3))
QUICK = model_pb2.Hyperparameters(epochs=3, factors=8)


def handled(samples: dict, method: str, code: str) -> float:
    return value(samples, "musicrec_rpc_handled_total", service=TRAINER, method=method, code=code) or 0.0


def test_jobs_and_rpcs_are_counted(tmp_path):
    process = trainer(tmp_path, tmp_path / "models", None, "--metrics-port", "0").start()
    try:
        url = re.search(r"metrics on (http://\S+/metrics)", process.log()).group(1)
        before = scrape(url)
        assert value(before, "musicrec_trainer_jobs_total", state="SUCCEEDED") == 0
        assert value(before, "musicrec_trainer_last_published_version") == 0
        assert value(before, "process_cpu_seconds_total") is not None

        async def main() -> trainer_pb2.TrainingJob:
            async with grpc.aio.insecure_channel(process.address) as channel:
                stub = trainer_pb2_grpc.TrainerServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id="nope"))
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                request = trainer_pb2.StartTrainingRequest(source=TINY, hyperparameters=QUICK)
                if "options" in request.DESCRIPTOR.fields_by_name:  # publish even if 3 epochs lose to popularity
                    request.options.gate = trainer_pb2.QUALITY_GATE_OFF
                job = await stub.StartTraining(request)
                call = stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id))
                updates = [await call.read()]
                if updates[0].state == trainer_pb2.JOB_STATE_RUNNING:  # the stream is open: one in flight
                    await asyncio.to_thread(scrape_until, url, lambda s: value(
                        s, "musicrec_rpc_in_flight", service=TRAINER, method="WatchTrainingJob") == 1, "in flight")
                while updates[-1].state not in (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED,
                                                trainer_pb2.JOB_STATE_CANCELLED):
                    updates.append(await call.read())
                assert await call.read() is grpc.aio.EOF
                return updates[-1]

        final = asyncio.run(asyncio.wait_for(main(), 300))
        assert final.state == trainer_pb2.JOB_STATE_SUCCEEDED, final
        samples = scrape_until(url, lambda s: handled(s, "WatchTrainingJob", "OK") == 1, "the calls counted")
        assert handled(samples, "GetTrainingJob", "NOT_FOUND") == 1
        assert handled(samples, "StartTraining", "OK") == 1
        assert handled(samples, "WatchTrainingJob", "OK") == 1
        assert value(samples, "musicrec_rpc_in_flight", service=TRAINER, method="WatchTrainingJob") == 0
        assert value(samples, "musicrec_trainer_jobs_total", state="SUCCEEDED") == 1
        assert value(samples, "musicrec_trainer_jobs_total", state="FAILED") == 0
        assert value(samples, "musicrec_trainer_job_duration_seconds_count") == 1
        assert value(samples, "musicrec_trainer_job_duration_seconds_sum") > 0
        assert value(samples, "musicrec_trainer_job_running") == 0
        assert value(samples, "musicrec_trainer_job_samples_per_second") == 0
        assert value(samples, "musicrec_trainer_last_published_version") == final.published_version
        hit_rate = value(samples, "musicrec_trainer_last_published_hit_rate_at_10")
        assert not math.isnan(hit_rate)
        assert hit_rate == pytest.approx(final.metrics.hit_rate_at_10)
    finally:
        assert process.stop() == 0, process.tail()
