"""The gRPC edge of the index service: proto <-> domain, nothing else.

Each RPC leases the served version once (``ModelHolder.acquire``), asks the ``ServingModel``, and
encodes the response with that same version's ``ResponseEncoder``: Recommend, SimilarArtists,
RecommendForHistory and BatchRecommend return wire bytes, which ``index_binding`` registers
to go out unchanged. A batch entry's error becomes its own ``Status`` (code and bounded message,
as the single call's status would carry them); the whole batch fails only for its own limits. Domain errors
(``musicrec.rpc.errors``) become status codes in the error mapping ``musicrec.rpc.interceptor``
wraps around each handler.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from index_service.holder import ModelHolder
from index_service.serving_model import HistoryQuery, RecommendQuery, SimilarQuery
from index_service.watcher import Rejection
from musicrec.rpc.errors import ServiceError
from musicrec.rpc.interceptor import bounded_message, status_code_of
from musicrec.rpc.server import ServiceBinding
from musicrec.v1 import index_pb2, index_pb2_grpc
from musicrec.version_proto import model_version

SERVICE_NAME = index_pb2.DESCRIPTOR.services_by_name["IndexService"].full_name


def _serializer(message_class):
    """Sends bytes as they are (already encoded) and messages serialized."""
    serialize = message_class.SerializeToString

    def serializer(response) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serializer


def index_binding(servicer: "IndexServicer") -> ServiceBinding:
    """The IndexService served by ``servicer``, its responses allowed to be pre-encoded bytes (see
    ``index_service.response_encoding``). One handler per RPC of the service's descriptor, so a
    new RPC needs only its servicer method."""
    return ServiceBinding.of(index_pb2, "IndexService", servicer, serializer_for=_serializer)


def _ids(repeated) -> tuple[str, ...]:
    """A repeated string field as a tuple. Most requests leave these empty, and testing for that
    costs less than copying nothing out of the message."""
    return tuple(repeated) if repeated else ()


def recommend_query(request: index_pb2.RecommendRequest) -> RecommendQuery:
    """The domain's view of a RecommendRequest (its repeated fields as tuples)."""
    return RecommendQuery(request.user_id, k=request.k, include_seen=request.include_seen,
                          exclude_artist_ids=_ids(request.exclude_artist_ids),
                          only_artist_ids=_ids(request.only_artist_ids), offset=request.offset)


def history_query(request: index_pb2.RecommendForHistoryRequest) -> HistoryQuery:
    """The domain's view of a RecommendForHistoryRequest (its history as (artist id, plays) pairs)."""
    return HistoryQuery(tuple((entry.artist_id, entry.plays) for entry in request.history), k=request.k,
                        include_seen=request.include_seen, exclude_artist_ids=_ids(request.exclude_artist_ids),
                        only_artist_ids=_ids(request.only_artist_ids), offset=request.offset)


def similar_query(request: index_pb2.SimilarArtistsRequest) -> SimilarQuery:
    """The domain's view of a SimilarArtistsRequest: of its ``artist`` oneof, the field not set
    reads as empty."""
    return SimilarQuery(request.artist_id, request.artist_name, request.k)


def _status_of(error: ServiceError) -> tuple[int, str]:
    """(status code number, message) of a batch entry's error, as the single call would say it."""
    return status_code_of(error).value[0], bounded_message(error.message)


class IndexServicer(index_pb2_grpc.IndexServiceServicer):
    """Answers IndexService RPCs from ``holder``'s current version.

    ``rejected`` returns the versions refused so far (newest first); ``pinned`` says whether
    ``--version`` pinned one.
    """

    def __init__(self, holder: ModelHolder, *, pinned: bool = False,
                 rejected: Callable[[], list[Rejection]] = list):
        self._holder = holder
        self._pinned = pinned
        self._rejected = rejected

    async def Recommend(self, request: index_pb2.RecommendRequest, context) -> bytes:
        """A serialized RecommendResponse."""
        query = recommend_query(request)
        served = self._holder.acquire()
        with served as model:
            ranking = model.recommend(query)
            return served.encoder.recommend(ranking)

    async def RecommendForHistory(self, request: index_pb2.RecommendForHistoryRequest, context) -> bytes:
        """A serialized RecommendResponse for a listener given by their history."""
        query = history_query(request)
        served = self._holder.acquire()
        with served as model:
            answer = model.recommend_for_history(query)
            return served.encoder.recommend(answer.ranking, answer.unknown_artist_ids, answer.popularity_fallback)

    async def BatchRecommend(self, request: index_pb2.BatchRecommendRequest, context) -> bytes:
        """A serialized BatchRecommendResponse: every request answered from one leased version."""
        queries = [recommend_query(r) for r in request.requests]
        served = self._holder.acquire()
        with served as model:
            results = model.batch_recommend(queries)
            return served.encoder.batch_recommend([_status_of(r) if isinstance(r, ServiceError) else r
                                                    for r in results])

    async def SimilarArtists(self, request: index_pb2.SimilarArtistsRequest, context) -> bytes:
        """A serialized SimilarArtistsResponse."""
        query = similar_query(request)
        served = self._holder.acquire()
        with served as model:
            result = model.similar(query)
            return served.encoder.similar(result.query, result.ranking)

    async def GetIndexInfo(self, request: index_pb2.GetIndexInfoRequest, context) -> index_pb2.GetIndexInfoResponse:
        response = index_pb2.GetIndexInfoResponse(
            pinned=self._pinned,
            rejected_versions=[index_pb2.RejectedVersion(version=r.version, reason=r.reason)
                               for r in self._rejected()],
        )
        served = self._holder.current
        if served is not None:
            response.model.CopyFrom(model_version(served.model.manifest))
            loaded_at = Timestamp()
            loaded_at.FromDatetime(served.loaded_at)
            response.loaded_at.CopyFrom(loaded_at)
            response.load_duration_ms = served.load_duration_ms
        return response
