"""The two shapes a training job has from the request to the reply: ``TrainingRequest`` (what to
train) and ``Progress`` (where a run is), with ``TrainingOptions`` (how to train and publish).

All are frozen and pickle: the servicer makes a job's ``TrainingRequest`` once from the proto
(``trainer_service.proto_convert``), and the job runner, the job history, the worker pipe and
the pipeline carry that very object; the pipeline's ``Progress`` objects come back the same way
and become a proto only when a reply is sent. No gRPC and no TensorFlow here, so the job
machinery (``jobs``, ``job_runner``, ``worker``) depends on these shapes, not on the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer_service.data import DataSourceSpec
from trainer_service.distributed import ClusterChoice, LocalClusterSpec, TFConfig
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.quality_gate import GATE_MODES
from trainer_service.warm_start import WARM_STARTS

PHASES = ("loading", "training", "evaluating", "refitting", "publishing", "done")
FINAL_FITS = ("none", "all")
PLAY_LOG_USES = ("default", "include", "exclude")
# Defaults of TrainingOptions: see docs/training.md for the measurements behind them.
DEFAULT_FINAL_FIT = "none"
DEFAULT_PATIENCE = 0


@dataclass(frozen=True)
class TrainingOptions:
    """How a job trains and publishes, besides the hyperparameters (``TrainingOptions`` in
    trainer.proto).

    ``gate``: "on" (refuse to publish a model that fails the quality gate) or "off" (publish
    anyway; the decision is still recorded). ``final_fit``: "none" (publish the evaluated model)
    or "all" (after evaluation, retrain on every interaction for the kept epoch count and publish
    that). ``patience``: early stopping: validations (every ``validate_every`` epochs) in a row
    without a better validation HR@10 before training stops and the best validated epoch's
    factors are kept; 0: train every epoch and keep the last. ``cluster``: where the BPR steps run
    (``trainer_service.distributed``): None, this process; a ``LocalClusterSpec``, a local cluster of
    ps and worker processes started for the job; a ``TFConfig``, the chief of a deployed cluster.
    ``warm_start``: "newest" (start known users and artists from the newest version's factors
    when it was trained on the same source; ``trainer_service.warm_start``) or "none" (cold).
    Cold here, so a program calling ``run_training`` gets the run its hyperparameters describe;
    ``train``, ``serve`` and StartTraining default to ``DEFAULT_WARM_START`` ("newest").
    ValueError for a value out of range."""

    gate: str = "on"
    final_fit: str = DEFAULT_FINAL_FIT
    patience: int = DEFAULT_PATIENCE
    cluster: ClusterChoice = None
    warm_start: str = "none"

    def __post_init__(self) -> None:
        if self.cluster is not None and not isinstance(self.cluster, (LocalClusterSpec, TFConfig)):
            raise ValueError(f"cluster must be a LocalClusterSpec, a TFConfig or None, got {self.cluster!r}")
        if self.gate not in GATE_MODES:
            raise ValueError(f"gate must be one of {', '.join(GATE_MODES)}; got {self.gate!r}")
        if self.final_fit not in FINAL_FITS:
            raise ValueError(f"final_fit must be one of {', '.join(FINAL_FITS)}; got {self.final_fit!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or not 0 <= self.patience <= 1000:
            raise ValueError(f"patience must be an integer in [0, 1000], got {self.patience!r}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start must be one of {', '.join(WARM_STARTS)}; got {self.warm_start!r}")

    def to_json(self) -> dict:
        """As the job history stores it (a local cluster as its ``ps=P,workers=W`` text)."""
        data = {"gate": self.gate, "final_fit": self.final_fit, "patience": self.patience,
                "warm_start": self.warm_start}
        if isinstance(self.cluster, LocalClusterSpec):
            data["distributed"] = str(self.cluster)
        elif isinstance(self.cluster, TFConfig):
            data["tf_config"] = self.cluster.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TrainingOptions":
        """The inverse of ``to_json``."""
        data = dict(data)
        cluster: ClusterChoice = None
        if data.get("distributed"):
            cluster = LocalClusterSpec.parse(data.pop("distributed"))
        elif data.get("tf_config"):
            cluster = TFConfig.from_json(data.pop("tf_config"))
        data.pop("distributed", None)
        data.pop("tf_config", None)
        return cls(**data, cluster=cluster)

    def cluster_description(self) -> str:
        """Where training ran, for the manifest: "" (one process), "ps=P,workers=W" (a local
        cluster) or "tf_config ps=P,workers=W" (a deployed one)."""
        if isinstance(self.cluster, TFConfig):
            return f"tf_config ps={self.cluster.num_ps},workers={self.cluster.num_workers}"
        return "" if self.cluster is None else str(self.cluster)


@dataclass(frozen=True)
class TrainingRequest:
    """What a training job trains: the data source, the hyperparameters and the options, every
    field resolved (mirrors ``StartTrainingRequest`` once the trainer's defaults are filled in)."""

    source: DataSourceSpec
    hyperparameters: Hyperparameters = Hyperparameters()
    options: TrainingOptions = TrainingOptions()
    # Whether the job also trains on the trainer's play log (its --events): "default" (when the
    # trainer has one), "include" (it must have one) or "exclude".
    play_log: str = "default"

    def __post_init__(self) -> None:
        if self.play_log not in PLAY_LOG_USES:
            raise ValueError(f"play_log must be one of {', '.join(PLAY_LOG_USES)}; got {self.play_log!r}")


@dataclass(frozen=True)
class Progress:
    """Where a run is (``TrainingProgress`` in trainer.proto, plus metrics). ``phase`` is one of
    ``PHASES`` ("" before the run starts); ``loss`` the mean BPR loss of the last completed
    epoch; ``samples_per_second`` that epoch's training throughput (triples per second);
    ``metrics``: per-epoch metrics (manifest key names; see ``EvaluationSettings.validate_every``)
    on the epochs that computed them, the final metrics in the "publishing"/"done" events, else empty;
    ``best_epoch``: the epoch whose factors are kept: while training, early stopping's best
    validated epoch so far (0: none yet, or no early stopping: the last epoch is kept); from
    "evaluating" on, the kept epoch; ``factors``: the factor count the run trains with, once
    chosen (0 while loading: ``Hyperparameters.factors`` may be chosen from the data)."""

    phase: str = ""
    epoch: int = 0
    total_epochs: int = 0
    loss: float = 0.0
    samples_per_second: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    factors: int = 0
