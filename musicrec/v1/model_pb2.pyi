import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hyperparameters(_message.Message):
    __slots__ = ("factors", "epochs", "learning_rate", "regularization", "bias_regularization", "batch_size", "seed")
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    REGULARIZATION_FIELD_NUMBER: _ClassVar[int]
    BIAS_REGULARIZATION_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    factors: int
    epochs: int
    learning_rate: float
    regularization: float
    bias_regularization: float
    batch_size: int
    seed: int
    def __init__(self, factors: _Optional[int] = ..., epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., regularization: _Optional[float] = ..., bias_regularization: _Optional[float] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class EvaluationMetrics(_message.Message):
    __slots__ = ("hit_rate_at_10", "ndcg_at_10", "auc", "evaluated_users", "popularity_hit_rate_at_10", "popularity_ndcg_at_10", "popularity_auc")
    HIT_RATE_AT_10_FIELD_NUMBER: _ClassVar[int]
    NDCG_AT_10_FIELD_NUMBER: _ClassVar[int]
    AUC_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_USERS_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_HIT_RATE_AT_10_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_NDCG_AT_10_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_AUC_FIELD_NUMBER: _ClassVar[int]
    hit_rate_at_10: float
    ndcg_at_10: float
    auc: float
    evaluated_users: int
    popularity_hit_rate_at_10: float
    popularity_ndcg_at_10: float
    popularity_auc: float
    def __init__(self, hit_rate_at_10: _Optional[float] = ..., ndcg_at_10: _Optional[float] = ..., auc: _Optional[float] = ..., evaluated_users: _Optional[int] = ..., popularity_hit_rate_at_10: _Optional[float] = ..., popularity_ndcg_at_10: _Optional[float] = ..., popularity_auc: _Optional[float] = ...) -> None: ...

class SearchSettings(_message.Message):
    __slots__ = ("method", "n_trees", "search_k", "candidates_per_result", "recall_at_10", "recall_sample_size", "median_latency_ms")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    N_TREES_FIELD_NUMBER: _ClassVar[int]
    SEARCH_K_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_PER_RESULT_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_10_FIELD_NUMBER: _ClassVar[int]
    RECALL_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    method: str
    n_trees: int
    search_k: int
    candidates_per_result: int
    recall_at_10: float
    recall_sample_size: int
    median_latency_ms: float
    def __init__(self, method: _Optional[str] = ..., n_trees: _Optional[int] = ..., search_k: _Optional[int] = ..., candidates_per_result: _Optional[int] = ..., recall_at_10: _Optional[float] = ..., recall_sample_size: _Optional[int] = ..., median_latency_ms: _Optional[float] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "created_at", "num_users", "num_artists", "num_interactions", "data_fingerprint", "data_source", "hyperparameters", "metrics", "recommend_search", "similar_search", "format_version", "size_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NUM_USERS_FIELD_NUMBER: _ClassVar[int]
    NUM_ARTISTS_FIELD_NUMBER: _ClassVar[int]
    NUM_INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RECOMMEND_SEARCH_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_SEARCH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    created_at: _timestamp_pb2.Timestamp
    num_users: int
    num_artists: int
    num_interactions: int
    data_fingerprint: str
    data_source: str
    hyperparameters: Hyperparameters
    metrics: EvaluationMetrics
    recommend_search: SearchSettings
    similar_search: SearchSettings
    format_version: int
    size_bytes: int
    def __init__(self, version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., num_users: _Optional[int] = ..., num_artists: _Optional[int] = ..., num_interactions: _Optional[int] = ..., data_fingerprint: _Optional[str] = ..., data_source: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., metrics: _Optional[_Union[EvaluationMetrics, _Mapping]] = ..., recommend_search: _Optional[_Union[SearchSettings, _Mapping]] = ..., similar_search: _Optional[_Union[SearchSettings, _Mapping]] = ..., format_version: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...
