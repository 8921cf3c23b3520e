"""ListTags: the tag catalog's known answers without gRPC (index_service.tag_catalog), then the RPC
over real gRPC on port 0: pages, prefixes, a version without tags, tokens across a swap, errors."""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest
from conftest import tiny_model

from index_service.tag_catalog import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    TagCatalog,
    TagsQuery,
    encode_token,
    prefix_key,
)
from model_store.artifacts import ArtistTags
from musicrec.rpc.errors import FailedPrecondition, InvalidArgument
from musicrec.v1 import index_pb2
from test_index_service import eventually, expect_code, serve

# (tag, artists carrying it): the vocabulary's rank order is count desc, then name.
VOCABULARY = [("rock", 5), ("jazz", 4), ("hip hop", 3), ("indie", 3), ("hiphop", 2), ("\u00e9lectro", 2),
              ("hip-hop", 1), ("jazz fusion", 1), ("z", 1)]


def vocabulary_tags(num_artists: int = 12) -> ArtistTags:
    """Tag t carried by the first ``count`` artists (rows 0..count-1), weights 1."""
    rows, names = [], []
    for name, count in VOCABULARY:
        rows += range(count)
        names += [name] * count
    return ArtistTags.from_triples(num_artists, rows, names, np.ones(len(rows)))


def catalog(version: int = 1) -> TagCatalog:
    return TagCatalog(vocabulary_tags(), version)


def names(page) -> list[str]:
    return [t.name for t in page.tags]


def test_vocabulary_is_in_rank_order():
    assert vocabulary_tags().names.tolist() == [name for name, _ in VOCABULARY]


def test_first_page_holds_the_most_used_tags_with_counts():
    page = catalog().page(TagsQuery(page_size=3))
    assert [(t.name, t.artists) for t in page.tags] == [("rock", 5), ("jazz", 4), ("hip hop", 3)]
    assert page.total_size == len(VOCABULARY) and page.version_has_tags and page.model_version == 1
    assert page.next_page_token


def test_pages_cover_every_tag_once_in_order():
    seen, token = [], ""
    for _ in range(10):
        page = catalog().page(TagsQuery(page_size=2, page_token=token))
        seen += names(page)
        token = page.next_page_token
        if not token:
            break
    assert seen == [name for name, _ in VOCABULARY]


def test_default_page_size_and_exact_last_page():
    page = catalog().page(TagsQuery())
    assert len(page.tags) == len(VOCABULARY) <= DEFAULT_PAGE_SIZE and page.next_page_token == ""
    page = catalog().page(TagsQuery(page_size=len(VOCABULARY)))
    assert page.next_page_token == ""


@pytest.mark.parametrize("prefix, expected", [
    ("hip", ["hip hop", "hiphop", "hip-hop"]),
    ("  HIP ", ["hip hop"]),  # leading spaces dropped, trailing kept, casefolded
    ("jazz", ["jazz", "jazz fusion"]),
    ("\u00c9", ["\u00e9lectro"]),
    ("z", ["z"]),
    ("rocks", []),
    ("x" * 50, []),
    ("a\x00", []),
    ("\U0010ffff", []),
    ("", [name for name, _ in VOCABULARY]),
])
def test_prefix_search_in_rank_order(prefix, expected):
    page = catalog().page(TagsQuery(prefix=prefix))
    assert names(page) == expected
    assert page.total_size == len(expected)


def test_prefix_pages_keep_the_prefix():
    first = catalog().page(TagsQuery(page_size=2, prefix="hip"))
    assert names(first) == ["hip hop", "hiphop"] and first.total_size == 3
    second = catalog().page(TagsQuery(page_size=2, prefix="Hip", page_token=first.next_page_token))
    assert names(second) == ["hip-hop"] and second.next_page_token == ""
    with pytest.raises(InvalidArgument, match="another prefix"):
        catalog().page(TagsQuery(page_size=2, prefix="jazz", page_token=first.next_page_token))


def test_prefix_matches_agree_with_a_scan():
    tags = vocabulary_tags()
    every = tags.names.tolist()
    for prefix in ["", "h", "hi", "hip", "hip ", "hip-", "i", "j", "jazz ", "r", "\u00e9", "zz", "hiphop"]:
        expected = [i for i, name in enumerate(every) if name.startswith(prefix_key(prefix))]
        assert catalog().matches(prefix_key(prefix)).tolist() == expected, prefix


def test_version_without_tags_answers_empty_with_the_flag():
    page = TagCatalog(None, 4).page(TagsQuery(prefix="rock"))
    assert page.tags == () and page.total_size == 0 and not page.version_has_tags and page.model_version == 4


@pytest.mark.parametrize("query, message", [
    (TagsQuery(page_size=-1), "page_size must be in"),
    (TagsQuery(page_size=MAX_PAGE_SIZE + 1), "page_size must be in"),
    (TagsQuery(prefix="x" * 257), "prefix is 257 characters"),
    (TagsQuery(page_token="garbage"), "not one ListTags returned"),
    (TagsQuery(page_token="=="), "not one ListTags returned"),
    (TagsQuery(page_token="\u00e9t\u00e9"), "not one ListTags returned"),
    (TagsQuery(page_token="x" * 1000), "not one ListTags returned"),
    (TagsQuery(page_token=encode_token(1, 2, "")[:-2]), "not one ListTags returned"),
])
def test_bad_queries_are_invalid_arguments(query, message):
    with pytest.raises(InvalidArgument, match=message):
        catalog().page(query)


def test_a_token_from_another_version_is_a_failed_precondition():
    token = catalog(version=1).page(TagsQuery(page_size=2)).next_page_token
    with pytest.raises(FailedPrecondition, match="model version 1 was served, now 2"):
        catalog(version=2).page(TagsQuery(page_size=2, page_token=token))


def test_a_token_past_the_end_gives_an_empty_last_page():
    page = catalog().page(TagsQuery(page_token=encode_token(1, 99, "")))
    assert page.tags == () and page.next_page_token == "" and page.total_size == len(VOCABULARY)


# --- over gRPC ---------------------------------------------------------------------------------


def tagged_tiny_model(version_tags: ArtistTags | None = None):
    return dataclasses.replace(tiny_model(), tags=version_tags or vocabulary_tags())


async def list_tags(client, **fields) -> index_pb2.ListTagsResponse:
    return await client.index.ListTags(index_pb2.ListTagsRequest(**fields))


def test_list_tags_over_grpc_pages_and_searches(models_dir, publish):
    publish(tagged_tiny_model())

    async def check(app, client):
        first = await list_tags(client, page_size=4)
        assert [(t.name, t.artists) for t in first.tags] == VOCABULARY[:4]
        assert (first.total_size, first.model_version, first.version_has_tags) == (len(VOCABULARY), 1, True)
        rest = await list_tags(client, page_size=MAX_PAGE_SIZE, page_token=first.next_page_token)
        assert [t.name for t in rest.tags] == [name for name, _ in VOCABULARY[4:]] and rest.next_page_token == ""
        found = await list_tags(client, prefix="Hip")
        assert [t.name for t in found.tags] == ["hip hop", "hiphop", "hip-hop"] and found.total_size == 3
        assert [t.name for t in (await list_tags(client, prefix="jazz f")).tags] == ["jazz fusion"]

    serve(models_dir, check)


def test_list_tags_errors_over_grpc(models_dir, publish):
    publish(tagged_tiny_model())

    async def check(app, client):
        code = grpc.StatusCode
        details = await expect_code(code.INVALID_ARGUMENT, list_tags(client, page_size=MAX_PAGE_SIZE + 1))
        assert "page_size must be in [0, 1000]" in details
        await expect_code(code.INVALID_ARGUMENT, list_tags(client, page_size=-5))
        await expect_code(code.INVALID_ARGUMENT, list_tags(client, page_token="not-a-token"))
        await expect_code(code.INVALID_ARGUMENT, list_tags(client, prefix="p" * 300))
        token = (await list_tags(client, page_size=1, prefix="j")).next_page_token
        await expect_code(code.INVALID_ARGUMENT, list_tags(client, page_size=1, prefix="r", page_token=token))

    serve(models_dir, check)


def test_list_tags_on_a_version_without_tags_is_empty_with_the_flag(models_dir, publish):
    publish(tiny_model())

    async def check(app, client):
        response = await list_tags(client)
        assert list(response.tags) == [] and response.total_size == 0 and response.next_page_token == ""
        assert not response.version_has_tags and response.model_version == 1

    serve(models_dir, check)


def test_a_page_token_across_a_swap_is_a_failed_precondition(models_dir, publish):
    publish(tagged_tiny_model())

    async def check(app, client):
        token = (await list_tags(client, page_size=2)).next_page_token
        publish(tagged_tiny_model(ArtistTags.from_triples(12, [0, 1], ["new", "new"], [1, 1])))

        async def swapped():
            return (await list_tags(client)).model_version == 2
        await eventually(swapped, "version 2 served")
        details = await expect_code(grpc.StatusCode.FAILED_PRECONDITION, list_tags(client, page_size=2,
                                                                                   page_token=token))
        assert "list again from the first page" in details
        response = await list_tags(client)
        assert [(t.name, t.artists) for t in response.tags] == [("new", 2)]

    serve(models_dir, check)
