"""The index service's hand-encoded responses parse as the messages protobuf would build."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from index_service.response_encoding import ResponseEncoder, varint
from index_service.serving_model import TAGS_SHOWN, Ranking
from model_store.artifacts import ArtistTags
from musicrec.v1 import index_pb2

IDS = np.array(["a0", "ünïcødé-1", "x" * 300, "3"])
NAMES = np.array(["Alpha", "", "Björk \U0001F3B5", "n" * 200])


def expected_recommend(indices, scores, version):
    return index_pb2.RecommendResponse(
        artists=[index_pb2.ScoredArtist(artist_id=IDS[i], name=NAMES[i], score=s) for i, s in zip(indices, scores)],
        model_version=version)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(indices=st.lists(st.integers(0, 3), max_size=12),
       scores=st.lists(st.floats(width=32, allow_nan=False), min_size=12, max_size=12),
       version=st.integers(1, 2**62))
def test_recommend_and_similar_parse_as_protobuf_builds_them(indices, scores, version):
    scores = np.array(scores[:len(indices)], dtype=np.float32)
    ranking = Ranking(np.array(indices, dtype=np.int64), scores)
    encoder = ResponseEncoder(IDS, NAMES, version)
    want = expected_recommend(indices, scores.tolist(), version)
    got = index_pb2.RecommendResponse.FromString(encoder.recommend(ranking))
    assert got == want
    if np.all(scores != 0):  # protobuf leaves out a zero score; with none, the bytes are identical
        assert encoder.recommend(ranking) == want.SerializeToString()
    similar = index_pb2.SimilarArtistsResponse.FromString(encoder.similar(2, ranking))
    assert similar == index_pb2.SimilarArtistsResponse(
        artist=index_pb2.ScoredArtist(artist_id=IDS[2], name=NAMES[2], score=1.0),
        artists=want.artists, model_version=version)


def test_varint_matches_protobuf():
    for value in (1, 127, 128, 300, 2**31, 2**63 - 1):  # versions start at 1
        assert index_pb2.RecommendResponse(model_version=value).SerializeToString() == b"\x10" + varint(value)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(indices=st.lists(st.integers(0, 3), max_size=6),
       unknown=st.lists(st.text(max_size=20), max_size=4), fallback=st.booleans(),
       version=st.integers(1, 2**62))
def test_history_fields_parse_as_protobuf_builds_them(indices, unknown, fallback, version):
    scores = np.arange(1, len(indices) + 1, dtype=np.float32)
    ranking = Ranking(np.array(indices, dtype=np.int64), scores)
    encoder = ResponseEncoder(IDS, NAMES, version)
    want = expected_recommend(indices, scores.tolist(), version)
    want.unknown_artist_ids.extend(unknown)
    want.popularity_fallback = fallback
    encoded = encoder.recommend(ranking, unknown, fallback)
    assert index_pb2.RecommendResponse.FromString(encoded) == want
    assert encoded == want.SerializeToString()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(results=st.lists(st.one_of(
    st.lists(st.integers(0, 3), max_size=5),
    st.tuples(st.integers(0, 16), st.text(max_size=40))), max_size=6),
    version=st.integers(1, 2**40))
def test_batch_parses_as_protobuf_builds_it(results, version):
    encoder = ResponseEncoder(IDS, NAMES, version)
    domain, want = [], index_pb2.BatchRecommendResponse()
    for result in results:
        if isinstance(result, tuple):
            domain.append(result)
            want.results.add().error.CopyFrom(index_pb2.Status(code=result[0], message=result[1]))
        else:
            scores = np.arange(1, len(result) + 1, dtype=np.float32)
            domain.append(Ranking(np.array(result, dtype=np.int64), scores))
            want.results.add().response.CopyFrom(expected_recommend(result, scores.tolist(), version))
    encoded = encoder.batch_recommend(domain)
    parsed = index_pb2.BatchRecommendResponse.FromString(encoded)
    assert parsed == want
    assert [r.WhichOneof("result") for r in parsed.results] == [
        "error" if isinstance(r, tuple) else "response" for r in results]
    assert encoded == want.SerializeToString()


TAGS = ArtistTags.from_triples(4, [0, 0, 0, 0, 1, 3], ["rock", "indie", "Ünï tag", "jazz", "rock", "x" * 200],
                               [5, 4, 3, 1, 2, 1])


def _scored(i, score, include_tags):
    tags = TAGS.artist_tag_names(i)[:TAGS_SHOWN] if include_tags else []
    return index_pb2.ScoredArtist(artist_id=IDS[i], name=NAMES[i], score=score, tags=tags)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(indices=st.lists(st.integers(0, 3), max_size=6), unknown_tags=st.lists(st.text(max_size=20), max_size=3),
       include_tags=st.booleans(), version=st.integers(1, 2**40))
def test_tag_fields_parse_as_protobuf_builds_them(indices, unknown_tags, include_tags, version):
    scores = np.arange(1, len(indices) + 1, dtype=np.float32)
    ranking = Ranking(np.array(indices, dtype=np.int64), scores)
    encoder = ResponseEncoder(IDS, NAMES, version, TAGS)
    artists = [_scored(i, s, include_tags) for i, s in zip(indices, scores.tolist())]
    want = index_pb2.RecommendResponse(artists=artists, model_version=version, unknown_tags=unknown_tags)
    got = index_pb2.RecommendResponse.FromString(
        encoder.recommend(ranking, unknown_tags=unknown_tags, include_tags=include_tags))
    assert got == want
    similar = index_pb2.SimilarArtistsResponse.FromString(
        encoder.similar(0, ranking, unknown_tags=unknown_tags, include_tags=include_tags))
    assert similar == index_pb2.SimilarArtistsResponse(artist=_scored(0, 1.0, include_tags), artists=artists,
                                                       model_version=version, unknown_tags=unknown_tags)
    batch = index_pb2.BatchRecommendResponse.FromString(
        encoder.batch_recommend([ranking, (5, "no"), ranking], [unknown_tags, (), ()], [include_tags, False, False]))
    assert batch.results[0].response == want
    assert batch.results[2].response == index_pb2.RecommendResponse(
        artists=[_scored(i, s, False) for i, s in zip(indices, scores.tolist())], model_version=version)
    if include_tags and 0 in indices:
        assert got.artists[indices.index(0)].tags == ["rock", "indie", "ünï tag"]  # the top 3 of 4, heaviest first
