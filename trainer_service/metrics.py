"""The trainer's own Prometheus metrics: jobs by final state and duration, the running job's
progress, the last published version (its RPCs: ``musicrec.metrics.RpcMetrics``). Every name is
listed, with its labels, in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from musicrec.metrics import RpcMetrics

# Training job duration buckets, seconds: 10 s .. 4 h.
JOB_DURATION_BUCKETS_S = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)


class TrainerMetrics:
    """The trainer's metrics: its RPCs, jobs by final state and duration, the running job's
    progress, the last published version."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.rpc = RpcMetrics(registry)
        self.jobs = Counter("musicrec_trainer_jobs", "Training jobs ended, by final state", ("state",),
                            registry=registry)
        for state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            self.jobs.labels(state)
        self.duration = Histogram("musicrec_trainer_job_duration_seconds",
                                  "Time from a job's start to its end (any final state)",
                                  buckets=JOB_DURATION_BUCKETS_S, registry=registry)
        self.running = Gauge("musicrec_trainer_job_running", "1 while a training job runs", registry=registry)
        self.samples_per_second = Gauge("musicrec_trainer_job_samples_per_second",
                                        "Training throughput of the running job's last epoch (triples per "
                                        "second; 0 when no job runs)", registry=registry)
        self.loss = Gauge("musicrec_trainer_job_loss", "Mean BPR loss of the running job's last epoch "
                          "(NaN when no job runs)", registry=registry)
        self.loss.set(float("nan"))
        self.published_version = Gauge("musicrec_trainer_last_published_version",
                                       "Last version this trainer published (0: none)", registry=registry)
        self.published_hit_rate = Gauge("musicrec_trainer_last_published_hit_rate_at_10",
                                        "HR@10 of the last published version", registry=registry)
        self.published_hit_rate.set(float("nan"))

    def job_started(self) -> None:
        self.running.set(1)
        self.samples_per_second.set(0)
        self.loss.set(float("nan"))

    def job_progress(self, samples_per_second: float, loss: float) -> None:
        """An epoch ended (only epochs that trained carry samples/s)."""
        if samples_per_second > 0:
            self.samples_per_second.set(samples_per_second)
            self.loss.set(loss)

    def job_ended(self, state: str, duration_s: float | None) -> None:
        self.jobs.labels(state).inc()
        if duration_s is not None:
            self.duration.observe(max(0.0, duration_s))
        self.running.set(0)
        self.samples_per_second.set(0)
        self.loss.set(float("nan"))

    def published(self, version: int, metrics: Mapping[str, float]) -> None:
        self.published_version.set(version)
        self.published_hit_rate.set(float(metrics.get("hit_rate_at_10", float("nan"))))
