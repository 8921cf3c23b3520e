import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from musicrec.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoredArtist(_message.Message):
    __slots__ = ("artist_id", "name", "score", "tags")
    ARTIST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    artist_id: str
    name: str
    score: float
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, artist_id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class Diversity(_message.Message):
    __slots__ = ("max_per_tag",)
    MAX_PER_TAG_FIELD_NUMBER: _ClassVar[int]
    max_per_tag: int
    def __init__(self, max_per_tag: _Optional[int] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "k", "include_seen", "exclude_artist_ids", "only_artist_ids", "offset", "tags", "exclude_tags", "diversity", "include_tags")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ARTIST_IDS_FIELD_NUMBER: _ClassVar[int]
    ONLY_ARTIST_IDS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TAGS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TAGS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    include_seen: bool
    exclude_artist_ids: _containers.RepeatedScalarFieldContainer[str]
    only_artist_ids: _containers.RepeatedScalarFieldContainer[str]
    offset: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    exclude_tags: _containers.RepeatedScalarFieldContainer[str]
    diversity: Diversity
    include_tags: bool
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., include_seen: _Optional[bool] = ..., exclude_artist_ids: _Optional[_Iterable[str]] = ..., only_artist_ids: _Optional[_Iterable[str]] = ..., offset: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., exclude_tags: _Optional[_Iterable[str]] = ..., diversity: _Optional[_Union[Diversity, _Mapping]] = ..., include_tags: _Optional[bool] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("artists", "model_version", "unknown_artist_ids", "popularity_fallback", "unknown_tags")
    ARTISTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ARTIST_IDS_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_TAGS_FIELD_NUMBER: _ClassVar[int]
    artists: _containers.RepeatedCompositeFieldContainer[ScoredArtist]
    model_version: int
    unknown_artist_ids: _containers.RepeatedScalarFieldContainer[str]
    popularity_fallback: bool
    unknown_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, artists: _Optional[_Iterable[_Union[ScoredArtist, _Mapping]]] = ..., model_version: _Optional[int] = ..., unknown_artist_ids: _Optional[_Iterable[str]] = ..., popularity_fallback: _Optional[bool] = ..., unknown_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendForHistoryRequest(_message.Message):
    __slots__ = ("history", "k", "include_seen", "exclude_artist_ids", "only_artist_ids", "offset", "tags", "exclude_tags", "diversity", "include_tags")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ARTIST_IDS_FIELD_NUMBER: _ClassVar[int]
    ONLY_ARTIST_IDS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TAGS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TAGS_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedCompositeFieldContainer[ArtistPlays]
    k: int
    include_seen: bool
    exclude_artist_ids: _containers.RepeatedScalarFieldContainer[str]
    only_artist_ids: _containers.RepeatedScalarFieldContainer[str]
    offset: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    exclude_tags: _containers.RepeatedScalarFieldContainer[str]
    diversity: Diversity
    include_tags: bool
    def __init__(self, history: _Optional[_Iterable[_Union[ArtistPlays, _Mapping]]] = ..., k: _Optional[int] = ..., include_seen: _Optional[bool] = ..., exclude_artist_ids: _Optional[_Iterable[str]] = ..., only_artist_ids: _Optional[_Iterable[str]] = ..., offset: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., exclude_tags: _Optional[_Iterable[str]] = ..., diversity: _Optional[_Union[Diversity, _Mapping]] = ..., include_tags: _Optional[bool] = ...) -> None: ...

class ArtistPlays(_message.Message):
    __slots__ = ("artist_id", "plays")
    ARTIST_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    artist_id: str
    plays: float
    def __init__(self, artist_id: _Optional[str] = ..., plays: _Optional[float] = ...) -> None: ...

class BatchRecommendRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RecommendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RecommendRequest, _Mapping]]] = ...) -> None: ...

class BatchRecommendResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecommendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecommendResult, _Mapping]]] = ...) -> None: ...

class RecommendResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: RecommendResponse
    error: Status
    def __init__(self, response: _Optional[_Union[RecommendResponse, _Mapping]] = ..., error: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SimilarArtistsRequest(_message.Message):
    __slots__ = ("artist_id", "artist_name", "k", "tags", "exclude_tags", "diversity", "include_tags")
    ARTIST_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIST_NAME_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TAGS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TAGS_FIELD_NUMBER: _ClassVar[int]
    artist_id: str
    artist_name: str
    k: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    exclude_tags: _containers.RepeatedScalarFieldContainer[str]
    diversity: Diversity
    include_tags: bool
    def __init__(self, artist_id: _Optional[str] = ..., artist_name: _Optional[str] = ..., k: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., exclude_tags: _Optional[_Iterable[str]] = ..., diversity: _Optional[_Union[Diversity, _Mapping]] = ..., include_tags: _Optional[bool] = ...) -> None: ...

class SimilarArtistsResponse(_message.Message):
    __slots__ = ("artist", "artists", "model_version", "unknown_tags")
    ARTIST_FIELD_NUMBER: _ClassVar[int]
    ARTISTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_TAGS_FIELD_NUMBER: _ClassVar[int]
    artist: ScoredArtist
    artists: _containers.RepeatedCompositeFieldContainer[ScoredArtist]
    model_version: int
    unknown_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, artist: _Optional[_Union[ScoredArtist, _Mapping]] = ..., artists: _Optional[_Iterable[_Union[ScoredArtist, _Mapping]]] = ..., model_version: _Optional[int] = ..., unknown_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class GetIndexInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIndexInfoResponse(_message.Message):
    __slots__ = ("model", "loaded_at", "load_duration_ms", "pinned", "rejected_versions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LOAD_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelVersion
    loaded_at: _timestamp_pb2.Timestamp
    load_duration_ms: float
    pinned: bool
    rejected_versions: _containers.RepeatedCompositeFieldContainer[RejectedVersion]
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelVersion, _Mapping]] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., load_duration_ms: _Optional[float] = ..., pinned: _Optional[bool] = ..., rejected_versions: _Optional[_Iterable[_Union[RejectedVersion, _Mapping]]] = ...) -> None: ...

class RejectedVersion(_message.Message):
    __slots__ = ("version", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    reason: str
    def __init__(self, version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class PlayEvent(_message.Message):
    __slots__ = ("user_id", "artist_id", "plays", "time")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIST_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    artist_id: str
    plays: float
    time: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., artist_id: _Optional[str] = ..., plays: _Optional[float] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordPlaysRequest(_message.Message):
    __slots__ = ("request_id", "plays")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    plays: _containers.RepeatedCompositeFieldContainer[PlayEvent]
    def __init__(self, request_id: _Optional[str] = ..., plays: _Optional[_Iterable[_Union[PlayEvent, _Mapping]]] = ...) -> None: ...

class RecordPlaysResponse(_message.Message):
    __slots__ = ("recorded", "unknown_artist_ids", "duplicate", "first_position", "last_position")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ARTIST_IDS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    FIRST_POSITION_FIELD_NUMBER: _ClassVar[int]
    LAST_POSITION_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    unknown_artist_ids: _containers.RepeatedScalarFieldContainer[str]
    duplicate: bool
    first_position: int
    last_position: int
    def __init__(self, recorded: _Optional[int] = ..., unknown_artist_ids: _Optional[_Iterable[str]] = ..., duplicate: _Optional[bool] = ..., first_position: _Optional[int] = ..., last_position: _Optional[int] = ...) -> None: ...

class GetUserPlaysRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class RecordedPlay(_message.Message):
    __slots__ = ("position", "artist_id", "plays", "time")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ARTIST_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    position: int
    artist_id: str
    plays: float
    time: _timestamp_pb2.Timestamp
    def __init__(self, position: _Optional[int] = ..., artist_id: _Optional[str] = ..., plays: _Optional[float] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUserPlaysResponse(_message.Message):
    __slots__ = ("plays", "model_version", "trained_through_position")
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINED_THROUGH_POSITION_FIELD_NUMBER: _ClassVar[int]
    plays: _containers.RepeatedCompositeFieldContainer[RecordedPlay]
    model_version: int
    trained_through_position: int
    def __init__(self, plays: _Optional[_Iterable[_Union[RecordedPlay, _Mapping]]] = ..., model_version: _Optional[int] = ..., trained_through_position: _Optional[int] = ...) -> None: ...

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("plays_deleted", "position")
    PLAYS_DELETED_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    plays_deleted: int
    position: int
    def __init__(self, plays_deleted: _Optional[int] = ..., position: _Optional[int] = ...) -> None: ...

class ListTagsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "prefix")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    prefix: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class TagCount(_message.Message):
    __slots__ = ("name", "artists")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTISTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    artists: int
    def __init__(self, name: _Optional[str] = ..., artists: _Optional[int] = ...) -> None: ...

class ListTagsResponse(_message.Message):
    __slots__ = ("tags", "next_page_token", "total_size", "model_version", "version_has_tags")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_HAS_TAGS_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[TagCount]
    next_page_token: str
    total_size: int
    model_version: int
    version_has_tags: bool
    def __init__(self, tags: _Optional[_Iterable[_Union[TagCount, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., model_version: _Optional[int] = ..., version_has_tags: _Optional[bool] = ...) -> None: ...
