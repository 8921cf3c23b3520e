"""Distributed BPR training on TensorFlow's ParameterServerStrategy (see docs/scaling.md).

- ``cluster_config``: ``LocalClusterSpec`` (``ps=2,workers=2``) and ``TFConfig`` (TF_CONFIG).
- ``local_cluster``: ``LocalCluster``, the ps and worker tasks as processes on 127.0.0.1.
- ``task``: one ps or worker task from TF_CONFIG (``python -m trainer_service.distributed.task``).
- ``trainer``: ``DistributedBPRTrainer``, ``BPRTrainer``'s interface over sharded tables.
- ``connect``: ``open_trainer(..., cluster)``, the pipeline's one call, and
  ``cluster_from_options`` for ``train --distributed/--cluster``.

Importing this package does not import TensorFlow.
"""

from trainer_service.distributed.cluster_config import LocalClusterSpec, TFConfig
from trainer_service.distributed.connect import ClusterChoice, cluster_from_options, open_trainer

__all__ = ["ClusterChoice", "LocalClusterSpec", "TFConfig", "cluster_from_options", "open_trainer"]
