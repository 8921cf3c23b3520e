"""The gRPC edge of the index service: proto <-> domain, nothing else.

Each RPC leases the served version once (``ModelHolder.acquire``), asks the ``ServingModel``, and
builds the response from that same version. Domain errors (``musicrec.rpc.errors``) become status
codes in ``musicrec.rpc.interceptor.ErrorInterceptor``.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from index_service.holder import ModelHolder
from index_service.serving_model import Ranking, ServingModel
from musicrec.version_proto import model_version
from index_service.watcher import Rejection
from musicrec.v1 import index_pb2, index_pb2_grpc

_ScoredArtist = index_pb2.ScoredArtist


def add_scored_artists(field, model: ServingModel, ranking: Ranking) -> None:
    """Append the ranked artists, best first, to a repeated ``ScoredArtist`` field.

    ``field.add(...)`` is about twice as fast as building messages and passing a list."""
    ids = model.artist_ids
    names = model.artist_names
    add = field.add
    for i, score in zip(ranking.indices.tolist(), ranking.scores.tolist()):
        add(artist_id=ids[i], name=names[i], score=score)


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

    async def Recommend(self, request: index_pb2.RecommendRequest, context) -> index_pb2.RecommendResponse:
        with self._holder.acquire() as model:
            ranking = model.recommend(request.user_id, request.k, request.include_seen,
                                      request.exclude_artist_ids)
            response = index_pb2.RecommendResponse(model_version=model.version)
            add_scored_artists(response.artists, model, ranking)
            return response

    async def SimilarArtists(self, request: index_pb2.SimilarArtistsRequest,
                             context) -> index_pb2.SimilarArtistsResponse:
        with self._holder.acquire() as model:
            which = request.WhichOneof("artist")
            result = model.similar(artist_id=request.artist_id if which == "artist_id" else None,
                                   artist_name=request.artist_name if which == "artist_name" else None,
                                   k=request.k)
            query = result.query
            response = index_pb2.SimilarArtistsResponse(
                artist=_ScoredArtist(artist_id=model.artist_ids[query], name=model.artist_names[query], score=1.0),
                model_version=model.version,
            )
            add_scored_artists(response.artists, model, result.ranking)
            return response

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
