"""The gRPC edge of the index service: proto <-> domain, nothing else.

Each RPC leases the served version once (``ModelHolder.acquire``), asks the ``ServingModel``, and
encodes the response with that same version's ``ResponseEncoder``: Recommend, SimilarArtists,
RecommendForHistory and BatchRecommend return wire bytes, which ``index_binding`` registers
to go out unchanged. A batch entry's error becomes its own ``Status`` (code and bounded message,
as the single call's status would carry them); the whole batch fails only for its own limits. Domain errors
(``musicrec.rpc.errors``) become status codes in the error mapping ``musicrec.rpc.error_contract``
wraps around each handler.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from index_service.holder import ModelHolder
from index_service.live import LiveState
from index_service.live_log import LiveLog, service_error as live_error
from index_service.serving_model import NO_TAG_OPTIONS, HistoryQuery, RecommendQuery, SimilarQuery, TagOptions
from index_service.tag_catalog import CatalogCache, TagsQuery
from index_service.watcher import Rejection
from musicrec.rpc.errors import FailedPrecondition, ServiceError
from musicrec.rpc.error_contract import bounded_message, status_code_of
from musicrec.rpc.server import ServiceBinding
from musicrec.v1 import index_pb2, index_pb2_grpc
from musicrec.version_proto import model_version
from play_log import MAX_PLAYS_PER_REQUEST, InvalidPlay, Play

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


def tag_options(request) -> TagOptions:
    """The tag fields every ranking request carries; ``NO_TAG_OPTIONS`` (shared, nothing built)
    when the request sets none of them, as most do."""
    if not (request.tags or request.exclude_tags or request.include_tags or request.HasField("diversity")):
        return NO_TAG_OPTIONS
    return TagOptions(_ids(request.tags), _ids(request.exclude_tags), request.diversity.max_per_tag,
                      request.include_tags)


def recommend_query(request: index_pb2.RecommendRequest) -> RecommendQuery:
    """The domain's view of a RecommendRequest (its repeated fields as tuples)."""
    return RecommendQuery(request.user_id, k=request.k, include_seen=request.include_seen,
                          exclude_artist_ids=_ids(request.exclude_artist_ids),
                          only_artist_ids=_ids(request.only_artist_ids), offset=request.offset,
                          tag_options=tag_options(request))


def history_query(request: index_pb2.RecommendForHistoryRequest) -> HistoryQuery:
    """The domain's view of a RecommendForHistoryRequest (its history as (artist id, plays) pairs)."""
    return HistoryQuery(tuple((entry.artist_id, entry.plays) for entry in request.history), k=request.k,
                        include_seen=request.include_seen, exclude_artist_ids=_ids(request.exclude_artist_ids),
                        only_artist_ids=_ids(request.only_artist_ids), offset=request.offset,
                        tag_options=tag_options(request))


def similar_query(request: index_pb2.SimilarArtistsRequest) -> SimilarQuery:
    """The domain's view of a SimilarArtistsRequest: of its ``artist`` oneof, the field not set
    reads as empty."""
    return SimilarQuery(request.artist_id, request.artist_name, request.k, tag_options=tag_options(request))


def _unknown_tags(model, query, ranking) -> tuple[str, ...]:
    """The query's tag names the version does not know. A tag it does not know empties the
    answer, so a non-empty answer has none and its tags are not resolved a second time."""
    options = query.tag_options
    if not (options.tags or options.exclude_tags) or len(ranking.indices):
        return ()
    return model.unknown_tags(query)


def plays_of(request: index_pb2.RecordPlaysRequest, now_s: float) -> tuple[Play, ...]:
    """The domain's view of a RecordPlaysRequest's plays: unset ``plays`` is 1, unset ``time``
    is ``now_s`` (Unix seconds). Checked in full by the play log."""
    if len(request.plays) > MAX_PLAYS_PER_REQUEST:  # before converting a huge request
        raise InvalidPlay(None, f"{len(request.plays):,} plays in one request (at most {MAX_PLAYS_PER_REQUEST:,})")
    return tuple(
        Play(event.user_id, event.artist_id, event.plays if event.HasField("plays") else 1.0,
             event.time.seconds + event.time.nanos / 1e9 if event.HasField("time") else now_s)
        for event in request.plays)


def _timestamp(time_s: float) -> Timestamp:
    stamp = Timestamp()
    seconds = int(time_s // 1)
    stamp.seconds, stamp.nanos = seconds, int(round((time_s - seconds) * 1e9)) % 1_000_000_000
    return stamp


def _status_of(error: ServiceError) -> tuple[int, str]:
    """(status code number, message) of a batch entry's error, as the single call would say it."""
    return status_code_of(error).value[0], bounded_message(error.message)


class IndexServicer(index_pb2_grpc.IndexServiceServicer):
    """Answers IndexService RPCs from ``holder``'s current version.

    ``rejected`` returns the versions refused so far (newest first); ``pinned`` says whether
    ``--version`` pinned one. ``live``: the play log (None: the service runs without
    ``--events``; the play RPCs then answer FAILED_PRECONDITION).
    """

    def __init__(self, holder: ModelHolder, *, pinned: bool = False,
                 rejected: Callable[[], list[Rejection]] = list, live: LiveLog | None = None):
        self._holder = holder
        self._pinned = pinned
        self._rejected = rejected
        self._live_log = live
        self._live: LiveState | None = None if live is None else live.state
        self._tag_catalogs = CatalogCache()

    def _log(self, rpc: str) -> LiveLog:
        if self._live_log is None:
            raise FailedPrecondition(f"{rpc} needs a play log: start the index service with "
                                     "--events URL (sqlite:///PATH or postgresql://...)")
        return self._live_log

    async def Recommend(self, request: index_pb2.RecommendRequest, context) -> bytes:
        """A serialized RecommendResponse."""
        query = recommend_query(request)
        served = self._holder.acquire()
        with served as model:
            live = None if self._live is None else self._live.listener(model, query.user_id)
            ranking = model.recommend(query, live)
            unknown_tags = _unknown_tags(model, query, ranking)
            # A live listener none of whose artists the version knows is answered by popularity.
            return served.encoder.recommend(ranking, (), live is not None and live.query is None,
                                            unknown_tags=unknown_tags, include_tags=query.tag_options.include_tags)

    async def RecommendForHistory(self, request: index_pb2.RecommendForHistoryRequest, context) -> bytes:
        """A serialized RecommendResponse for a listener given by their history."""
        query = history_query(request)
        served = self._holder.acquire()
        with served as model:
            answer = model.recommend_for_history(query)
            unknown_tags = _unknown_tags(model, query, answer.ranking)
            return served.encoder.recommend(answer.ranking, answer.unknown_artist_ids, answer.popularity_fallback,
                                            unknown_tags=unknown_tags, include_tags=query.tag_options.include_tags)

    async def BatchRecommend(self, request: index_pb2.BatchRecommendRequest, context) -> bytes:
        """A serialized BatchRecommendResponse: every request answered from one leased version."""
        queries = [recommend_query(r) for r in request.requests]
        served = self._holder.acquire()
        with served as model:
            live = {} if self._live is None else self._live.listeners_of(model, (q.user_id for q in queries))
            results = model.batch_recommend(queries, live)
            unknown_tags = [() if isinstance(r, ServiceError) else _unknown_tags(model, q, r)
                            for q, r in zip(queries, results)]
            return served.encoder.batch_recommend([_status_of(r) if isinstance(r, ServiceError) else r
                                                    for r in results], unknown_tags,
                                                   [q.tag_options.include_tags for q in queries])

    async def SimilarArtists(self, request: index_pb2.SimilarArtistsRequest, context) -> bytes:
        """A serialized SimilarArtistsResponse."""
        query = similar_query(request)
        served = self._holder.acquire()
        with served as model:
            result = model.similar(query)
            unknown_tags = _unknown_tags(model, query, result.ranking)
            return served.encoder.similar(result.query, result.ranking, unknown_tags=unknown_tags,
                                          include_tags=query.tag_options.include_tags)

    async def GetIndexInfo(self, request: index_pb2.GetIndexInfoRequest, context) -> index_pb2.GetIndexInfoResponse:
        response = index_pb2.GetIndexInfoResponse(
            pinned=self._pinned,
            rejected_versions=[index_pb2.RejectedVersion(version=r.version, reason=r.reason)
                               for r in self._rejected()],
        )
        served = self._holder.current
        if served is not None:
            response.model.CopyFrom(model_version(served.model.manifest))
            # The method each search actually serves (a --*-method override, or exact where the
            # version has no Annoy index for it), not only the manifest's choice.
            response.model.recommend_search.method = served.model.recommend_params.method
            response.model.similar_search.method = served.model.similar_params.method
            loaded_at = Timestamp()
            loaded_at.FromDatetime(served.loaded_at)
            response.loaded_at.CopyFrom(loaded_at)
            response.load_duration_ms = served.load_duration_ms
        return response

    async def RecordPlays(self, request: index_pb2.RecordPlaysRequest, context) -> index_pb2.RecordPlaysResponse:
        live = self._log("RecordPlays")
        try:
            plays = plays_of(request, time.time())
        except InvalidPlay as error:
            raise live_error(error) from None
        recorded = await live.record(request.request_id, plays)
        return index_pb2.RecordPlaysResponse(
            recorded=recorded.count, unknown_artist_ids=recorded.unknown_artist_ids, duplicate=recorded.duplicate,
            first_position=recorded.first_position, last_position=recorded.last_position)

    async def GetUserPlays(self, request: index_pb2.GetUserPlaysRequest, context) -> index_pb2.GetUserPlaysResponse:
        found = await self._log("GetUserPlays").user_plays(request.user_id)
        return index_pb2.GetUserPlaysResponse(
            plays=[index_pb2.RecordedPlay(position=p.position, artist_id=p.play.artist_id, plays=p.play.plays,
                                          time=_timestamp(p.play.time_s)) for p in found.plays],
            model_version=found.model_version, trained_through_position=found.trained_through)

    async def ForgetUser(self, request: index_pb2.ForgetUserRequest, context) -> index_pb2.ForgetUserResponse:
        forgotten, deleted = await self._log("ForgetUser").forget(request.user_id)
        return index_pb2.ForgetUserResponse(plays_deleted=deleted, position=forgotten.position)

    async def ListTags(self, request: index_pb2.ListTagsRequest, context) -> index_pb2.ListTagsResponse:
        query = TagsQuery(request.page_size, request.page_token, request.prefix)
        with self._holder.acquire() as model:
            page = self._tag_catalogs.of(model).page(query)
        return index_pb2.ListTagsResponse(
            tags=[index_pb2.TagCount(name=t.name, artists=t.artists) for t in page.tags],
            next_page_token=page.next_page_token, total_size=page.total_size, model_version=page.model_version,
            version_has_tags=page.version_has_tags)
