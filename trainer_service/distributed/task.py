"""One worker or parameter-server task of a training cluster: ``python -m trainer_service.distributed.task``
(what ``python -m trainer_service cluster-task`` runs).

The task reads its cluster and its role from ``TF_CONFIG`` (``TFConfig.from_env``), starts
TensorFlow's gRPC server for that role (``tf.distribute.Server``) and serves until it is killed:
parameter servers hold their shards of the tables, workers run the steps the chief's
``ClusterCoordinator`` schedules on them. Neither knows anything about BPR; the chief sends the
functions. SIGTERM ends the task at once (exit 0): there is nothing of its own to save, the
chief holds the run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from trainer_service.distributed.cluster_config import CHIEF, TFConfig

from trainer_service import tensorflow_env

tensorflow_env.prepare()  # before TF loads

# The local launcher sets this so a task dies with the process that started it (no orphans).
PARENT_PID_ENV = "MUSICREC_CLUSTER_PARENT_PID"


def run_task(config: TFConfig) -> None:
    """Serve ``config``'s task (a worker or a ps) until the process is killed. Never returns."""
    if config.task_type == CHIEF:
        raise ValueError("TF_CONFIG: the chief is not a cluster task; run the chief with "
                         "`python -m trainer_service train ... --cluster TF_CONFIG_FILE`")
    import tensorflow as tf

    server = tf.distribute.Server(tf.train.ClusterSpec(config.jobs()), job_name=config.task_type,
                                  task_index=config.task_index, protocol="grpc", start=True)
    print(f"cluster task {config.task_type}:{config.task_index} serving at {server.target}", flush=True)
    server.join()


def _exit_on_sigterm(signum, frame) -> None:
    os._exit(0)  # TF's server threads would keep a normal exit waiting


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """The task's command-line options (none besides TF_CONFIG; shared with ``cluster-task``)."""
    parser.add_argument("--tf-config-file", default=None, metavar="FILE",
                        help="read TF_CONFIG from FILE instead of the TF_CONFIG environment variable")


def run_task_command(args: argparse.Namespace) -> int:
    """Handler of ``cluster-task``: 2 for a bad TF_CONFIG, else serves until killed."""
    parent = os.environ.get(PARENT_PID_ENV)
    if parent:
        from musicrec.process_lifetime import die_with_parent

        die_with_parent(signal.SIGKILL, parent_pid=int(parent))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        config = TFConfig.from_file(args.tf_config_file) if args.tf_config_file else TFConfig.from_env()
        if config.task_type == CHIEF:
            run_task(config)  # raises the explanation
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_task(config)
    return 0


def add_cluster_task_command(subparsers) -> None:
    """``cluster-task``: for ``trainer_service.cli.COMMANDS``."""
    parser = subparsers.add_parser("cluster-task", help="run one worker or ps task of a training cluster (TF_CONFIG)",
                                   description="Run one worker or ps task of a distributed training cluster, "
                                               "as the TF_CONFIG environment variable (or --tf-config-file) "
                                               "says; serves until killed. See docs/scaling.md.")
    add_task_arguments(parser)
    parser.set_defaults(handler=run_task_command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer_service.distributed.task",
                                     description="Run one worker or ps task of a training cluster from TF_CONFIG.")
    add_task_arguments(parser)
    return run_task_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
