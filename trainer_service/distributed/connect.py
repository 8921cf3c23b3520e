"""From a cluster choice to a running trainer: the one call the pipeline makes.

``open_trainer(..., cluster=None)`` returns the single-process ``BPRTrainer``;
``cluster=LocalClusterSpec(ps, workers)`` starts a ``LocalCluster`` on this machine and returns a
``DistributedBPRTrainer`` that stops the cluster when it is closed; ``cluster=TFConfig`` (the
chief's, from ``--cluster FILE`` or the environment) connects to a deployed cluster whose tasks
run ``python -m trainer_service cluster-task``. Either way the caller uses the trainer as a
context manager and nothing else changes.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from musicrec.rpc.errors import InvalidArgument
from trainer_service.distributed.cluster_config import CHIEF, LocalClusterSpec, TFConfig
from trainer_service.factors import Factors, initial_factors
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.sampling import TripletSampler

log = logging.getLogger(__name__)

ClusterChoice = LocalClusterSpec | TFConfig | None
# The module of the single-process trainer (it imports TensorFlow).
_IN_PROCESS_TRAINER = "trainer_service.bpr"


def cluster_from_options(distributed: str | None = None, cluster: str | None = None) -> ClusterChoice:
    """The cluster the ``train`` options ask for: ``--distributed ps=P,workers=W`` (a local
    cluster) or ``--cluster FILE`` (the chief's TF_CONFIG file; ``env`` reads the TF_CONFIG
    environment variable); neither: None (one process). ValueError for both, or a bad value."""
    if distributed and cluster:
        raise ValueError("give --distributed (a local cluster) or --cluster (a deployed one), not both")
    if distributed:
        return LocalClusterSpec.parse(distributed)
    if cluster:
        return TFConfig.from_env() if cluster == "env" else TFConfig.from_file(cluster)
    return None


def _in_process_trainer(users: np.ndarray, artists: np.ndarray, weights: np.ndarray | None, num_users: int,
                        num_artists: int, hp: Hyperparameters):
    """``BPRTrainer``. In a process that has not imported TensorFlow yet, its import (about 3 s,
    holding the GIL for most of it) runs here while a thread builds the triple sampler's hash set
    and draws the initial factors (numpy, which releases the GIL: seconds at full scale), instead
    of one after the other."""
    if _IN_PROCESS_TRAINER in sys.modules or np.asarray(users).size == 0:
        from trainer_service.bpr import BPRTrainer

        return BPRTrainer(users, artists, weights, num_users, num_artists, hp)

    def start() -> tuple[TripletSampler, Factors]:
        sampler = TripletSampler.for_training(users, artists, weights, num_users, num_artists, hp)
        return sampler, initial_factors(num_users, num_artists, hp)

    with ThreadPoolExecutor(1, thread_name_prefix="trainer-start") as pool:
        starting = pool.submit(start)
        try:
            from trainer_service.bpr import BPRTrainer
        finally:
            sampler, factors = starting.result()  # its error (bad data) first, as when the trainer built it
    return BPRTrainer(users, artists, weights, num_users, num_artists, hp, initial=factors, sampler=sampler)


def open_trainer(users: np.ndarray, artists: np.ndarray, weights: np.ndarray | None, num_users: int,
                 num_artists: int, hp: Hyperparameters, cluster: ClusterChoice = None):
    """A trainer for ``cluster`` (see the module); arguments as ``BPRTrainer``'s. Raises
    InvalidArgument for hyperparameters the distributed trainer does not support (before any
    process starts) or a TF_CONFIG that is not the chief's, ``ClusterError`` if local tasks fail
    to start."""
    if cluster is None:
        return _in_process_trainer(users, artists, weights, num_users, num_artists, hp)
    from trainer_service.distributed.trainer import DistributedBPRTrainer, supported

    supported(hp)
    if isinstance(cluster, TFConfig):
        if cluster.task_type != CHIEF:
            raise InvalidArgument(f"this process is the chief, but its TF_CONFIG says task {cluster.task_type}:"
                             f"{cluster.task_index}; run that task with `python -m trainer_service cluster-task`")
        return DistributedBPRTrainer(users, artists, weights, num_users, num_artists, hp,
                                     cluster_resolver=cluster.cluster_resolver())
    if not isinstance(cluster, LocalClusterSpec):
        raise TypeError(f"cluster must be a LocalClusterSpec, a TFConfig or None, got {type(cluster).__name__}")
    from trainer_service.distributed.local_cluster import LocalCluster

    local = LocalCluster(cluster)
    config = local.start()
    log.info("local cluster %s up: %s", cluster, config.jobs())
    try:
        return DistributedBPRTrainer(users, artists, weights, num_users, num_artists, hp,
                                     cluster_resolver=config.cluster_resolver(),
                                     health_check=local.check, on_close=local.stop)
    except BaseException:
        local.stop()
        raise
