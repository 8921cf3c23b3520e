"""Conversions between the trainer's protobuf messages and its domain objects.

Pure functions, no I/O. Domain side: a data source is ``DataSourceSpec`` (or its plain-dict form,
``source_to_dict``, which jobs store); hyperparameter overrides are a dict of the fields a request set; a job
is ``trainer_service.jobs.Job``; a version is ``model_store.Manifest``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from musicrec.version_proto import fill_numbers, model_version
from model_store import Manifest
from musicrec.rpc.errors import InvalidArgument
from musicrec.v1 import model_pb2, trainer_pb2
from trainer_service.data import FORMATS, SIZE_NAMES, DataError, DataSourceSpec
from trainer_service.jobs import Job, JobState

HYPERPARAMETER_FIELDS = tuple(field.name for field in model_pb2.Hyperparameters.DESCRIPTOR.fields)

_STATE_TO_PROTO = {
    JobState.QUEUED: trainer_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: trainer_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: trainer_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: trainer_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: trainer_pb2.JOB_STATE_CANCELLED,
}


# -- requests -> domain ---------------------------------------------------------------------------

def source_from_proto(source: trainer_pb2.DataSource) -> DataSourceSpec | None:
    """The requested data source, or None when unset (the trainer's default source).

    Raises InvalidArgument for an unknown enum value or an invalid combination of fields.
    """
    kind = source.WhichOneof("source")
    if kind is None:
        return None
    try:
        if kind == "synthetic":
            if not 0 <= source.synthetic.size < len(SIZE_NAMES):
                raise DataError(f"unknown synthetic size {source.synthetic.size}")
            return DataSourceSpec.synthetic(SIZE_NAMES[source.synthetic.size], seed=source.synthetic.seed)
        files = source.files
        if not 0 <= files.format < len(FORMATS):
            raise DataError(f"unknown data format {files.format}")
        return DataSourceSpec.files(
            files.path, FORMATS[files.format], user_column=files.user_column, artist_column=files.artist_column,
            weight_column=files.weight_column, artists_path=files.artists_path, name_column=files.name_column)
    except DataError as exc:
        raise InvalidArgument(f"invalid data source: {exc}") from None


def source_to_dict(spec: DataSourceSpec) -> dict[str, Any]:
    """A source as plain data (what a job stores and the training process receives)."""
    return dataclasses.asdict(spec)


def source_from_dict(data: dict[str, Any]) -> DataSourceSpec:
    """The inverse of ``source_to_dict``; DataError for an invalid source."""
    return DataSourceSpec(**data)


def overrides_from_proto(hyperparameters: model_pb2.Hyperparameters) -> dict[str, Any]:
    """The hyperparameter fields the request set (unset fields keep the trainer's defaults)."""
    return {name: getattr(hyperparameters, name) for name in HYPERPARAMETER_FIELDS
            if hyperparameters.HasField(name)}


# -- domain -> responses ----------------------------------------------------------------------------

def timestamp(seconds: float | None) -> Timestamp | None:
    """A protobuf Timestamp from Unix seconds (None stays None)."""
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(round(seconds * 1e9)))
    return stamp


def source_to_proto(source: DataSourceSpec | dict[str, Any]) -> trainer_pb2.DataSource:
    """A stored data source as the proto message."""
    spec = source if isinstance(source, DataSourceSpec) else source_from_dict(source)
    message = trainer_pb2.DataSource()
    if spec.kind == "synthetic":
        message.synthetic.size = SIZE_NAMES.index(spec.size)
        message.synthetic.seed = spec.seed
        return message
    defaults = DataSourceSpec()
    message.files.path = spec.path
    message.files.format = FORMATS.index(spec.format)
    for field in ("user_column", "artist_column", "weight_column", "artists_path", "name_column"):
        value = getattr(spec, field)
        if value != getattr(defaults, field):  # defaults stay empty, as in a request
            setattr(message.files, field, value)
    return message


def hyperparameters_to_proto(values: dict[str, Any]) -> model_pb2.Hyperparameters:
    """Known hyperparameters from a dict (a job's); unknown keys are left out."""
    return fill_numbers(model_pb2.Hyperparameters(), values)


def metrics_to_proto(values: dict[str, float]) -> model_pb2.EvaluationMetrics:
    """Known metrics from a dict (a job's); unknown keys are left out."""
    return fill_numbers(model_pb2.EvaluationMetrics(), values)


def job_to_proto(job: Job) -> trainer_pb2.TrainingJob:
    """A job as the TrainingJob message."""
    message = trainer_pb2.TrainingJob(
        job_id=job.job_id,
        state=_STATE_TO_PROTO[job.state],
        source=source_to_proto(job.source),
        hyperparameters=hyperparameters_to_proto(job.hyperparameters),
        progress=trainer_pb2.TrainingProgress(
            phase=job.progress.phase,
            epoch=job.progress.epoch,
            total_epochs=job.progress.total_epochs,
            loss=job.progress.loss,
            samples_per_second=job.progress.samples_per_second,
        ),
        metrics=metrics_to_proto(job.metrics),
        published_version=job.published_version,
        error=job.error,
    )
    for name in ("created_at", "started_at", "finished_at"):
        stamp = timestamp(getattr(job, name))
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    return message


def version_to_proto(manifest: Manifest) -> model_pb2.ModelVersion:
    """A published version's manifest as the ModelVersion message (the index service's
    conversion, so both services describe a version identically)."""
    return model_version(manifest)
