"""``make run``: both services on localhost, a model trained if needed, live answers printed.

``python -m launcher [--models-dir var/models] [--data DIR|SPEC] [--trainer-port 50051]
[--index-port 50052] [--events URL | --no-events] [--once]``

1. Starts the trainer (``python -m trainer_service serve``) and the index service
   (``python -m index_service``) as child processes sharing one models directory; their logs go to
   ``LOG_DIR/trainer.log`` and ``LOG_DIR/index.log`` (default: ``logs/`` beside the models dir).
   The index service records plays in a play log (``--events``; default: the SQLite file
   ``plays.db`` beside the models dir, i.e. ``var/plays.db``; ``--no-events``: none).
2. If no valid model version exists (or ``--data`` names data to train on), trains one over gRPC:
   ``StartTraining`` then ``WatchTrainingJob``, showing its progress (a bar on a terminal, one
   line per phase otherwise). A version that fails its checks is named with the reason and
   skipped, as the index service skips it.
3. Waits until the index service serves the newest version, prints recommendations for three
   users and similar artists for two artists (names and scores); with a play log, records plays
   through ``RecordPlays`` for a new listener and a known user and prints their recommendations
   before and after (``launcher.live_demo``); then the ``grpcurl`` commands to try by hand.
4. Keeps both running until Ctrl-C (or SIGTERM), then sends them SIGTERM, waits, and exits 0.
   ``--once`` shuts down right after printing (for tests and CI).

``--data`` (or the environment variable ``DATA``): a directory of training files (the notebook's
``lastfm_play.csv``/``lastfm_artist.csv``, HetRec's ``user_artists.dat``/``artists.dat``, or
MovieLens' ``ratings.csv``/``movies.csv``, detected from the files present) becomes the trainer's
``--data-dir`` with source path "."; a table file (CSV/TSV/Parquet) makes its directory the data
dir; anything else is passed to the trainer as a ``--default-source`` spec (``synthetic:tiny``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from launcher import LaunchError, say
from launcher.demo import (HOST, INDEX_SERVICE, TRAINER_SERVICE, grpcurl_commands, log_tail, newest_valid_version,
                           show_examples, train, wait_healthy, wait_served)
from launcher.live_demo import live_grpcurl_commands, show_live_updates
from launcher.processes import ServiceProcess, ServiceStartError
from musicrec.rpc.auth import TRAINER_TOKEN_ENV, load_token
from musicrec.rpc.channel_config import channel_options
from musicrec.v1 import index_pb2_grpc, trainer_pb2_grpc
from play_log.store import redact

DEFAULT_MODELS_DIR = "var/models"
DEFAULT_TRAINER_PORT = 50051
DEFAULT_INDEX_PORT = 50052
# The play log's default file, beside the models dir (var/plays.db for var/models).
DEFAULT_PLAY_LOG = "plays.db"
# How long a service may take to start listening, and the index to load a version, in seconds.
STARTUP_TIMEOUT_S = 120.0
SERVE_TIMEOUT_S = 300.0
# How long a child may take to stop after SIGTERM before it is killed, in seconds (the trainer
# may be cancelling a job: its own cancel grace is 30 s).
STOP_TIMEOUT_S = 60.0
EXIT_FAILED = 1
EXIT_CANNOT_START = 2


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


# -- the children ----------------------------------------------------------------------------------

def play_log_url(args: argparse.Namespace) -> str | None:
    """The index service's ``--events`` URL: ``--events``, else the SQLite file ``plays.db`` beside
    the (resolved) models dir; None with ``--no-events``."""
    if args.no_events:
        return None
    return args.events or f"sqlite:///{args.models_dir.parent / DEFAULT_PLAY_LOG}"


def service_processes(args: argparse.Namespace, plan: DataPlan, log_dir: Path) -> tuple[ServiceProcess, ServiceProcess]:
    """The index service and the trainer (not started), sharing ``args.models_dir``; the index
    records plays in ``play_log_url(args)``."""
    python, models_dir = sys.executable, str(args.models_dir)
    index_argv = [python, "-m", "index_service", "--models-dir", models_dir, "--host", HOST,
                  "--port", str(args.index_port), "--poll-interval", "0.5"]
    events = play_log_url(args)
    if events:
        index_argv += ["--events", events]
    index = ServiceProcess("index service", index_argv, log_dir / "index.log")
    trainer_argv = [python, "-m", "trainer_service", "serve", "--models-dir", models_dir, "--host", HOST,
                    "--port", str(args.trainer_port), "--default-source", plan.default_source]
    if plan.data_dir is not None:
        trainer_argv += ["--data-dir", str(plan.data_dir)]
    return index, ServiceProcess("trainer", trainer_argv, log_dir / "trainer.log")


async def wait_listening(child: ServiceProcess) -> int:
    """The port ``child`` listens on, once it does; LaunchError if it exits or times out first."""
    try:
        return await asyncio.to_thread(child.wait_listening, STARTUP_TIMEOUT_S)
    except ServiceStartError:
        code = child.exit_code()
        what = (f"exited with status {code} while starting" if code is not None
                else f"did not start listening within {STARTUP_TIMEOUT_S:g} s")
        raise LaunchError(f"the {child.name} {what}; last lines of {child.log_path}:\n{log_tail(child)}") from None


def stop_children(children: list[ServiceProcess]) -> bool:
    """SIGTERM every child, wait for each; True if all exited 0."""
    for child in children:
        child.terminate()
    clean = True
    for child in children:
        code = child.wait(STOP_TIMEOUT_S)
        if child.killed:
            say(f"{child.name} did not stop within {STOP_TIMEOUT_S:g} s; killed it")
        if code != 0:
            clean = False
            say(f"{child.name} exited with status {code} (log: {child.log_path})")
    return clean


# -- the whole run ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__.split("\n\n")[0])
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
    events = parser.add_mutually_exclusive_group()
    events.add_argument("--events", default=None, metavar="URL",
                        help=f"the index service's play log: sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                             f"(default: sqlite:///MODELS_DIR/../{DEFAULT_PLAY_LOG})")
    events.add_argument("--no-events", action="store_true",
                        help="run the index service without a play log (RecordPlays answers FAILED_PRECONDITION)")
    parser.add_argument("--once", action="store_true", help="bring up, print, shut down (tests, CI)")
    return parser.parse_args(argv)


async def bring_up(args: argparse.Namespace, plan: DataPlan, children: list[ServiceProcess],
                   stop: asyncio.Event) -> None:
    """Everything between starting the children and waiting for Ctrl-C."""
    models_dir: Path = args.models_dir
    try:
        token = load_token(env_var=TRAINER_TOKEN_ENV)
    except ValueError as exc:
        raise LaunchError(f"${TRAINER_TOKEN_ENV}: {exc}") from None
    log_dir: Path = args.log_dir or models_dir.parent / "logs"
    index, trainer = service_processes(args, plan, log_dir)
    # Spawned from this (the main) thread: the kernel ties each child's life to the thread that forked it.
    for child in (index, trainer):
        children.append(child.spawn())
    args.index_port = await wait_listening(index)
    args.trainer_port = await wait_listening(trainer)
    events = play_log_url(args)
    say(f"trainer on {HOST}:{args.trainer_port}, index service on {HOST}:{args.index_port}; "
        f"models in {models_dir}, logs in {log_dir}; "
        + (f"play log {redact(events)}" if events else "no play log (--no-events)"))

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
        users, artists = await show_examples(index_stub, models_dir / str(served))
        live_group = await show_live_updates(index_stub, users[-1], artists, token) if events else None

        say("\nTry it by hand:")
        for command in grpcurl_commands(args.trainer_port, args.index_port, users[0], artists[0], token=bool(token)):
            say(f"  {command}")
        if live_group is not None:
            say("\nLive updates by hand (Recommend: NOT_FOUND; RecordPlays; Recommend: a ranking from those plays; "
                "GetUserPlays; ForgetUser):")
            for command in live_grpcurl_commands(args.index_port, live_group, token=bool(token)):
                say(f"  {command}")
    if not args.once:
        say("\nBoth services are running. Press Ctrl-C to stop them.")
        watchers = [asyncio.create_task(asyncio.to_thread(child.process.wait)) for child in children]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *watchers], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if stopper not in done:
            died = next(child for child in children if child.exit_code() is not None)
            raise LaunchError(f"the {died.name} exited unexpectedly with status {died.exit_code()}; "
                              f"last lines of {died.log_path}:\n{log_tail(died)}")


async def run(args: argparse.Namespace) -> int:
    plan = plan_data(args.data)
    if args.trainer_port and args.trainer_port == args.index_port:
        raise LaunchError("--trainer-port and --index-port must differ")
    # Port 0: the service picks a free port and its listening line says which.
    if args.trainer_port:
        check_port_free(HOST, args.trainer_port, "trainer", "--trainer-port")
    if args.index_port:
        check_port_free(HOST, args.index_port, "index service", "--index-port")
    args.models_dir = args.models_dir.expanduser().resolve()
    args.models_dir.mkdir(parents=True, exist_ok=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    children: list[ServiceProcess] = []
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
