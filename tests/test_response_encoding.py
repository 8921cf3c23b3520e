"""The index service's hand-encoded responses parse as the messages protobuf would build."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from index_service.response_encoding import ResponseEncoder, varint
from index_service.serving_model import Ranking
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
