"""Conversions between the trainer's protobuf messages and its domain objects: the proto edge.

Pure functions, no I/O. A StartTrainingRequest becomes the job's frozen ``TrainingRequest`` once,
here (``training_request_from_proto``: the data source, the hyperparameters with the request's
fields over the defaults, the options), which every later step carries unchanged; a job
(``trainer_service.jobs.Job``, holding its ``TrainingRequest`` and ``Progress``) becomes a
``TrainingJob`` only when it is sent. Proto enums map to domain names through the dictionaries
below, keyed by the generated enum values (a test checks that every value has an entry).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from musicrec.rpc.errors import InvalidArgument
from musicrec.v1 import model_pb2, trainer_pb2
from musicrec.version_proto import copy_fields, fill_numbers
from trainer_service.data import DataError, DataSourceSpec
from trainer_service.distributed import LocalClusterSpec
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.jobs import Job, JobState
from trainer_service.training_request import TrainingOptions, TrainingRequest

HYPERPARAMETER_FIELDS = tuple(field.name for field in model_pb2.Hyperparameters.DESCRIPTOR.fields)

#: ``SyntheticSize`` -> synthetic preset name ("" is the default preset).
SIZE_FROM_PROTO: dict[int, str] = {
    trainer_pb2.SYNTHETIC_SIZE_UNSPECIFIED: "",
    trainer_pb2.SYNTHETIC_SIZE_TINY: "tiny",
    trainer_pb2.SYNTHETIC_SIZE_SMALL: "small",
    trainer_pb2.SYNTHETIC_SIZE_MEDIUM: "medium",
    trainer_pb2.SYNTHETIC_SIZE_FULL: "full",
}
SIZE_TO_PROTO: dict[str, int] = {name: value for value, name in SIZE_FROM_PROTO.items() if name}

#: ``DataFormat`` -> data format name (unspecified: detect it).
FORMAT_FROM_PROTO: dict[int, str] = {
    trainer_pb2.DATA_FORMAT_UNSPECIFIED: "auto",
    trainer_pb2.DATA_FORMAT_NOTEBOOK: "notebook",
    trainer_pb2.DATA_FORMAT_HETREC: "hetrec",
    trainer_pb2.DATA_FORMAT_MOVIELENS: "movielens",
    trainer_pb2.DATA_FORMAT_TABLE: "table",
}
FORMAT_TO_PROTO: dict[str, int] = {name: value for value, name in FORMAT_FROM_PROTO.items()}

#: ``QualityGate`` -> gate mode (unspecified: on).
GATE_FROM_PROTO: dict[int, str] = {
    trainer_pb2.QUALITY_GATE_UNSPECIFIED: "on",
    trainer_pb2.QUALITY_GATE_ON: "on",
    trainer_pb2.QUALITY_GATE_OFF: "off",
}
GATE_TO_PROTO: dict[str, int] = {"on": trainer_pb2.QUALITY_GATE_ON, "off": trainer_pb2.QUALITY_GATE_OFF}

#: ``FinalFit`` -> final fit mode (unspecified: the trainer's default, None here).
FINAL_FIT_FROM_PROTO: dict[int, str | None] = {
    trainer_pb2.FINAL_FIT_UNSPECIFIED: None,
    trainer_pb2.FINAL_FIT_NONE: "none",
    trainer_pb2.FINAL_FIT_ALL: "all",
}
FINAL_FIT_TO_PROTO: dict[str, int] = {"none": trainer_pb2.FINAL_FIT_NONE, "all": trainer_pb2.FINAL_FIT_ALL}

#: ``WarmStart`` -> warm start mode (unspecified: the trainer's default, None here).
WARM_START_FROM_PROTO: dict[int, str | None] = {
    trainer_pb2.WARM_START_UNSPECIFIED: None,
    trainer_pb2.WARM_START_NEWEST: "newest",
    trainer_pb2.WARM_START_NONE: "none",
}
WARM_START_TO_PROTO: dict[str, int] = {"newest": trainer_pb2.WARM_START_NEWEST, "none": trainer_pb2.WARM_START_NONE}

#: ``PlayLogUse`` -> ``TrainingRequest.play_log``.
PLAY_LOG_FROM_PROTO: dict[int, str] = {
    trainer_pb2.PLAY_LOG_USE_UNSPECIFIED: "default",
    trainer_pb2.PLAY_LOG_USE_INCLUDE: "include",
    trainer_pb2.PLAY_LOG_USE_EXCLUDE: "exclude",
}

STATE_TO_PROTO: dict[JobState, int] = {
    JobState.QUEUED: trainer_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: trainer_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: trainer_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: trainer_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: trainer_pb2.JOB_STATE_CANCELLED,
}

# The trainer passes its --warm-start; without one, the domain's default.
_COLD = TrainingOptions().warm_start
_FILE_OPTIONS = ("user_column", "artist_column", "weight_column", "artists_path", "name_column")


# -- requests -> domain ---------------------------------------------------------------------------

def training_request_from_proto(request: trainer_pb2.StartTrainingRequest, default_source: DataSourceSpec,
                                default_warm_start: str = _COLD) -> TrainingRequest:
    """The job a StartTrainingRequest asks for, every field resolved: its source (unset:
    ``default_source``), the hyperparameters it sets over the defaults, its options (an unset
    warm start: ``default_warm_start``), its use of the play log. InvalidArgument for an invalid
    source, hyperparameters out of range, invalid options or an unknown play log use."""
    source = source_from_proto(request.source) if request.HasField("source") else None
    play_log = PLAY_LOG_FROM_PROTO.get(request.play_log)
    if play_log is None:
        raise InvalidArgument(f"unknown play_log {request.play_log}")
    return TrainingRequest(source=default_source if source is None else source,
                           hyperparameters=hyperparameters_from_proto(request.hyperparameters),
                           options=options_from_proto(request.options, default_warm_start), play_log=play_log)


def source_from_proto(source: trainer_pb2.DataSource) -> DataSourceSpec | None:
    """The requested data source, or None when unset (the trainer's default source).

    Raises InvalidArgument for an unknown enum value or an invalid combination of fields.
    """
    kind = source.WhichOneof("source")
    if kind is None:
        return None
    try:
        if kind == "synthetic":
            size = SIZE_FROM_PROTO.get(source.synthetic.size)
            if size is None:
                raise DataError(f"unknown synthetic size {source.synthetic.size}")
            return DataSourceSpec.synthetic(size, seed=source.synthetic.seed)
        files = source.files
        format = FORMAT_FROM_PROTO.get(files.format)
        if format is None:
            raise DataError(f"unknown data format {files.format}")
        return DataSourceSpec.files(files.path, format, **{name: getattr(files, name) for name in _FILE_OPTIONS})
    except DataError as exc:
        raise InvalidArgument(f"invalid data source: {exc}") from None


def overrides_from_proto(hyperparameters: model_pb2.Hyperparameters) -> dict[str, Any]:
    """The hyperparameter fields the request set (unset fields keep the trainer's defaults)."""
    return {name: getattr(hyperparameters, name) for name in HYPERPARAMETER_FIELDS
            if hyperparameters.HasField(name)}


def hyperparameters_from_proto(hyperparameters: model_pb2.Hyperparameters) -> Hyperparameters:
    """The defaults with the fields the request set. InvalidArgument for a value out of range."""
    try:
        return Hyperparameters().with_overrides(**overrides_from_proto(hyperparameters))
    except ValueError as exc:
        raise InvalidArgument(f"invalid hyperparameters: {exc}") from None


def options_from_proto(options: trainer_pb2.TrainingOptions, default_warm_start: str = _COLD) -> TrainingOptions:
    """The job's options: the request's, unset ones at the trainer's defaults (the warm start's:
    ``default_warm_start``). InvalidArgument for an unknown enum value, a patience out of range
    or a bad ``distributed`` spec."""
    defaults = TrainingOptions()
    if options.warm_start not in WARM_START_FROM_PROTO:
        raise InvalidArgument(f"invalid options: unknown warm start {options.warm_start}")
    warm_start = WARM_START_FROM_PROTO[options.warm_start] or default_warm_start
    gate = GATE_FROM_PROTO.get(options.gate)
    if gate is None:
        raise InvalidArgument(f"invalid options: unknown quality gate {options.gate}")
    if options.final_fit not in FINAL_FIT_FROM_PROTO:
        raise InvalidArgument(f"invalid options: unknown final fit {options.final_fit}")
    final_fit = FINAL_FIT_FROM_PROTO[options.final_fit] or defaults.final_fit
    patience = options.patience if options.HasField("patience") else defaults.patience
    try:
        cluster = LocalClusterSpec.parse(options.distributed) if options.distributed.strip() else None
        return TrainingOptions(gate=gate, final_fit=final_fit, patience=patience, cluster=cluster,
                               warm_start=warm_start)
    except ValueError as exc:
        raise InvalidArgument(f"invalid options: {exc}") from None


def options_to_proto(options: TrainingOptions) -> trainer_pb2.TrainingOptions:
    """Resolved options as the proto message (every field set)."""
    return trainer_pb2.TrainingOptions(gate=GATE_TO_PROTO[options.gate], final_fit=FINAL_FIT_TO_PROTO[options.final_fit],
                                       patience=options.patience, distributed=options.cluster_description(),
                                       warm_start=WARM_START_TO_PROTO[options.warm_start])


# -- domain -> responses ----------------------------------------------------------------------------

def timestamp_from_epoch_s(seconds: float | None) -> Timestamp | None:
    """A protobuf Timestamp from Unix seconds (None stays None)."""
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(round(seconds * 1e9)))
    return stamp


def source_to_proto(spec: DataSourceSpec) -> trainer_pb2.DataSource:
    """A data source as the proto message."""
    message = trainer_pb2.DataSource()
    if spec.kind == "synthetic":
        message.synthetic.size = SIZE_TO_PROTO[spec.size]
        message.synthetic.seed = spec.seed
        return message
    defaults = DataSourceSpec()
    message.files.path = spec.path
    message.files.format = FORMAT_TO_PROTO[spec.format]
    for field in _FILE_OPTIONS:
        value = getattr(spec, field)
        if value != getattr(defaults, field):  # defaults stay empty, as in a request
            setattr(message.files, field, value)
    return message


def job_hyperparameters(job: Job) -> Hyperparameters:
    """The hyperparameters a job reports: its request's, with the factor count its run chose
    once it has chosen one (``Progress.factors``; until then ``AUTO_FACTORS``, 0)."""
    hp = job.request.hyperparameters
    if not hp.is_resolved and job.progress.factors:
        return hp.with_overrides(factors=job.progress.factors)
    return hp


def job_to_proto(job: Job, play_log: bool = False) -> trainer_pb2.TrainingJob:
    """A job as the TrainingJob message; ``play_log``: whether it trains on the trainer's play
    log (``JobRunner.trains_on_log``)."""
    message = trainer_pb2.TrainingJob(
        job_id=job.job_id,
        state=STATE_TO_PROTO[job.state],
        source=source_to_proto(job.request.source),
        hyperparameters=fill_numbers(model_pb2.Hyperparameters(), job_hyperparameters(job).to_dict()),
        progress=copy_fields(trainer_pb2.TrainingProgress(), job.progress),
        options=options_to_proto(job.request.options),
        metrics=fill_numbers(model_pb2.EvaluationMetrics(), job.metrics),
        published_version=job.published_version,
        error=job.error,
        play_log=play_log,
    )
    for name in ("created_at", "started_at", "finished_at"):
        stamp = timestamp_from_epoch_s(getattr(job, name))
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    return message
