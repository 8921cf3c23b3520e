import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from musicrec.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_FORMAT_UNSPECIFIED: _ClassVar[DataFormat]
    DATA_FORMAT_NOTEBOOK: _ClassVar[DataFormat]
    DATA_FORMAT_HETREC: _ClassVar[DataFormat]
    DATA_FORMAT_MOVIELENS: _ClassVar[DataFormat]
    DATA_FORMAT_TABLE: _ClassVar[DataFormat]

class SyntheticSize(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNTHETIC_SIZE_UNSPECIFIED: _ClassVar[SyntheticSize]
    SYNTHETIC_SIZE_TINY: _ClassVar[SyntheticSize]
    SYNTHETIC_SIZE_SMALL: _ClassVar[SyntheticSize]
    SYNTHETIC_SIZE_MEDIUM: _ClassVar[SyntheticSize]
    SYNTHETIC_SIZE_FULL: _ClassVar[SyntheticSize]

class QualityGate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUALITY_GATE_UNSPECIFIED: _ClassVar[QualityGate]
    QUALITY_GATE_ON: _ClassVar[QualityGate]
    QUALITY_GATE_OFF: _ClassVar[QualityGate]

class FinalFit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINAL_FIT_UNSPECIFIED: _ClassVar[FinalFit]
    FINAL_FIT_NONE: _ClassVar[FinalFit]
    FINAL_FIT_ALL: _ClassVar[FinalFit]

class WarmStart(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WARM_START_UNSPECIFIED: _ClassVar[WarmStart]
    WARM_START_NEWEST: _ClassVar[WarmStart]
    WARM_START_NONE: _ClassVar[WarmStart]

class PlayLogUse(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAY_LOG_USE_UNSPECIFIED: _ClassVar[PlayLogUse]
    PLAY_LOG_USE_INCLUDE: _ClassVar[PlayLogUse]
    PLAY_LOG_USE_EXCLUDE: _ClassVar[PlayLogUse]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
DATA_FORMAT_UNSPECIFIED: DataFormat
DATA_FORMAT_NOTEBOOK: DataFormat
DATA_FORMAT_HETREC: DataFormat
DATA_FORMAT_MOVIELENS: DataFormat
DATA_FORMAT_TABLE: DataFormat
SYNTHETIC_SIZE_UNSPECIFIED: SyntheticSize
SYNTHETIC_SIZE_TINY: SyntheticSize
SYNTHETIC_SIZE_SMALL: SyntheticSize
SYNTHETIC_SIZE_MEDIUM: SyntheticSize
SYNTHETIC_SIZE_FULL: SyntheticSize
QUALITY_GATE_UNSPECIFIED: QualityGate
QUALITY_GATE_ON: QualityGate
QUALITY_GATE_OFF: QualityGate
FINAL_FIT_UNSPECIFIED: FinalFit
FINAL_FIT_NONE: FinalFit
FINAL_FIT_ALL: FinalFit
WARM_START_UNSPECIFIED: WarmStart
WARM_START_NEWEST: WarmStart
WARM_START_NONE: WarmStart
PLAY_LOG_USE_UNSPECIFIED: PlayLogUse
PLAY_LOG_USE_INCLUDE: PlayLogUse
PLAY_LOG_USE_EXCLUDE: PlayLogUse
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class FileSource(_message.Message):
    __slots__ = ("path", "format", "user_column", "artist_column", "weight_column", "artists_path", "name_column")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    USER_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ARTIST_COLUMN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ARTISTS_PATH_FIELD_NUMBER: _ClassVar[int]
    NAME_COLUMN_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: DataFormat
    user_column: str
    artist_column: str
    weight_column: str
    artists_path: str
    name_column: str
    def __init__(self, path: _Optional[str] = ..., format: _Optional[_Union[DataFormat, str]] = ..., user_column: _Optional[str] = ..., artist_column: _Optional[str] = ..., weight_column: _Optional[str] = ..., artists_path: _Optional[str] = ..., name_column: _Optional[str] = ...) -> None: ...

class SyntheticSource(_message.Message):
    __slots__ = ("size", "seed")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    size: SyntheticSize
    seed: int
    def __init__(self, size: _Optional[_Union[SyntheticSize, str]] = ..., seed: _Optional[int] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("files", "synthetic")
    FILES_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    files: FileSource
    synthetic: SyntheticSource
    def __init__(self, files: _Optional[_Union[FileSource, _Mapping]] = ..., synthetic: _Optional[_Union[SyntheticSource, _Mapping]] = ...) -> None: ...

class TrainingOptions(_message.Message):
    __slots__ = ("gate", "final_fit", "patience", "distributed", "warm_start")
    GATE_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIT_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    WARM_START_FIELD_NUMBER: _ClassVar[int]
    gate: QualityGate
    final_fit: FinalFit
    patience: int
    distributed: str
    warm_start: WarmStart
    def __init__(self, gate: _Optional[_Union[QualityGate, str]] = ..., final_fit: _Optional[_Union[FinalFit, str]] = ..., patience: _Optional[int] = ..., distributed: _Optional[str] = ..., warm_start: _Optional[_Union[WarmStart, str]] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("source", "hyperparameters", "options", "play_log")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PLAY_LOG_FIELD_NUMBER: _ClassVar[int]
    source: DataSource
    hyperparameters: _model_pb2.Hyperparameters
    options: TrainingOptions
    play_log: PlayLogUse
    def __init__(self, source: _Optional[_Union[DataSource, _Mapping]] = ..., hyperparameters: _Optional[_Union[_model_pb2.Hyperparameters, _Mapping]] = ..., options: _Optional[_Union[TrainingOptions, _Mapping]] = ..., play_log: _Optional[_Union[PlayLogUse, str]] = ...) -> None: ...

class GetTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelTrainingRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_model_pb2.ModelVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[_model_pb2.ModelVersion, _Mapping]]] = ...) -> None: ...

class TrainingProgress(_message.Message):
    __slots__ = ("phase", "epoch", "total_epochs", "loss", "samples_per_second", "best_epoch")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    phase: str
    epoch: int
    total_epochs: int
    loss: float
    samples_per_second: float
    best_epoch: int
    def __init__(self, phase: _Optional[str] = ..., epoch: _Optional[int] = ..., total_epochs: _Optional[int] = ..., loss: _Optional[float] = ..., samples_per_second: _Optional[float] = ..., best_epoch: _Optional[int] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("job_id", "state", "source", "hyperparameters", "progress", "metrics", "published_version", "error", "created_at", "started_at", "finished_at", "options", "play_log")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PLAY_LOG_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    source: DataSource
    hyperparameters: _model_pb2.Hyperparameters
    progress: TrainingProgress
    metrics: _model_pb2.EvaluationMetrics
    published_version: int
    error: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    options: TrainingOptions
    play_log: bool
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., source: _Optional[_Union[DataSource, _Mapping]] = ..., hyperparameters: _Optional[_Union[_model_pb2.Hyperparameters, _Mapping]] = ..., progress: _Optional[_Union[TrainingProgress, _Mapping]] = ..., metrics: _Optional[_Union[_model_pb2.EvaluationMetrics, _Mapping]] = ..., published_version: _Optional[int] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., options: _Optional[_Union[TrainingOptions, _Mapping]] = ..., play_log: _Optional[bool] = ...) -> None: ...
