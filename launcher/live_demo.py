"""The launcher's live part: plays recorded through ``RecordPlays`` and the recommendations that
follow them at once (the index service runs with a play log, ``--events``).

Two listeners: a new one, whom the model has never seen (Recommend answers NOT_FOUND), plays three
artists the model places together (an artist and its two nearest neighbours, so one genre on the
synthetic data) and gets a personal ranking from those plays alone; a known user plays another
such group, and their ranking is printed before and after. Then the ``grpcurl`` commands that do
the same by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc

from launcher import say
from launcher.demo import HOST, INDEX_SERVICE, artist_label, grpcurl_path, print_recommendations
from musicrec.rpc.auth import TRAINER_TOKEN_ENV, bearer_metadata
from musicrec.v1 import index_pb2, index_pb2_grpc

#: The new listener of the printout (forgotten and recorded again on every run, so a rerun shows
#: the same story) and the one the grpcurl examples use by hand.
DEMO_LISTENER = "new-listener-demo"
BY_HAND_LISTENER = "my-listener"
#: Artists in a group: the seed and its nearest neighbours.
GROUP_SIZE = 3
_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ArtistGroup:
    """Artists the model places together: ``ids`` (seed first) and their printable ``labels``."""

    ids: tuple[str, ...]
    labels: tuple[str, ...]


async def artist_group(index: index_pb2_grpc.IndexServiceStub, seed: str, avoid: frozenset[str] = frozenset(),
                       size: int = GROUP_SIZE) -> ArtistGroup:
    """``seed`` and its nearest neighbours by SimilarArtists, ``size`` in all, none in ``avoid``
    (the seed included: the two most listened artists are often each other's neighbours)."""
    reply = await index.SimilarArtists(index_pb2.SimilarArtistsRequest(artist_id=seed, k=size + len(avoid)),
                                       timeout=_TIMEOUT_S)
    members = [a for a in (reply.artist, *reply.artists) if a.artist_id not in avoid][:size]
    return ArtistGroup(tuple(a.artist_id for a in members), tuple(artist_label(a) for a in members))


async def record_group(index: index_pb2_grpc.IndexServiceStub, user: str, group: ArtistGroup,
                       token: str | None) -> None:
    """Record 5 plays of each artist of ``group`` for ``user`` (one request, a fresh request id)
    and print what the service acknowledged."""
    request = index_pb2.RecordPlaysRequest(request_id=f"launcher-{uuid.uuid4()}", plays=[
        index_pb2.PlayEvent(user_id=user, artist_id=artist, plays=5) for artist in group.ids])
    reply = await index.RecordPlays(request, timeout=_TIMEOUT_S, metadata=bearer_metadata(token) if token else None)
    say(f"\nRecordPlays: {user} played {', '.join(group.labels)} (5 plays each): {reply.recorded} recorded, "
        f"durable at log positions {reply.first_position}..{reply.last_position}")


async def recommend(index: index_pb2_grpc.IndexServiceStub, user: str, title: str, k: int) -> None:
    """Print ``user``'s Recommend answer, or that the model does not know them."""
    try:
        reply = await index.Recommend(index_pb2.RecommendRequest(user_id=user, k=k), timeout=_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        say(f"\n{title}: NOT_FOUND ({exc.details()})")
        return
    print_recommendations(title, reply)


async def show_live_updates(index: index_pb2_grpc.IndexServiceStub, known_user: str, artists: list[str],
                            token: str | None, k: int = 5) -> ArtistGroup:
    """The live part of the printout (see the module docstring). ``artists``: at least two seeds,
    most listened first; ``token``: the bearer token RecordPlays and ForgetUser require, if any.
    Returns the new listener's group, for the grpcurl examples."""
    metadata = bearer_metadata(token) if token else None
    # A rerun on the same log starts the demo listener afresh (they are nobody's real listener).
    forgotten = await index.ForgetUser(index_pb2.ForgetUserRequest(user_id=DEMO_LISTENER), timeout=_TIMEOUT_S,
                                       metadata=metadata)
    say("\nLive updates: plays recorded through RecordPlays change the next Recommend at once"
        + (f" (ForgetUser cleared {forgotten.plays_deleted} plays of {DEMO_LISTENER} from an earlier run)"
           if forgotten.plays_deleted else ""))

    new_group = await artist_group(index, artists[0])
    await recommend(index, DEMO_LISTENER, f"Recommend for new listener {DEMO_LISTENER} before any play", k)
    await record_group(index, DEMO_LISTENER, new_group, token)
    await recommend(index, DEMO_LISTENER, f"Recommend for new listener {DEMO_LISTENER} after", k)

    known_group = await artist_group(index, artists[1], avoid=frozenset(new_group.ids))
    await recommend(index, known_user, f"Recommend for user {known_user} before", k)
    await record_group(index, known_user, known_group, token)
    await recommend(index, known_user, f"Recommend for user {known_user} after", k)
    return new_group


def live_grpcurl_commands(index_port: int, group: ArtistGroup, token: bool = False) -> list[str]:
    """The live part by hand, for a listener the model does not know: Recommend (NOT_FOUND),
    RecordPlays, Recommend again (a ranking now), GetUserPlays, ForgetUser. ``token``: the index
    requires the bearer token from $MUSICREC_TRAINER_TOKEN on RecordPlays and ForgetUser."""
    g, i = grpcurl_path(), f"{HOST}:{index_port}"
    auth = f' -H "authorization: Bearer ${TRAINER_TOKEN_ENV}"' if token else ""
    plays = ", ".join(f'{{"user_id": "{BY_HAND_LISTENER}", "artist_id": "{artist}", "plays": 5}}'
                      for artist in group.ids)
    user = f'{{"user_id": "{BY_HAND_LISTENER}"}}'
    recommend_request = f'{{"user_id": "{BY_HAND_LISTENER}", "k": 5}}'
    return [
        f"{g} -plaintext -d '{recommend_request}' {i} {INDEX_SERVICE}/Recommend",
        f"{g} -plaintext{auth} -d '{{\"request_id\": \"try-1\", \"plays\": [{plays}]}}' {i} {INDEX_SERVICE}/RecordPlays",
        f"{g} -plaintext -d '{recommend_request}' {i} {INDEX_SERVICE}/Recommend",
        f"{g} -plaintext -d '{user}' {i} {INDEX_SERVICE}/GetUserPlays",
        f"{g} -plaintext{auth} -d '{user}' {i} {INDEX_SERVICE}/ForgetUser",
    ]
