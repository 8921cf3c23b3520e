"""Data source specs: the command-line syntax, descriptions, loading, and confinement of paths to
the data directory (absolute paths, '..', and symlinks that lead out are refused)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainer_service.data import DataError, DataPathError, DataSourceSpec, generate, load_source, parse_source

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.parametrize("text,expected", [
    ("synthetic", DataSourceSpec(kind="synthetic", size="small", seed=0)),
    ("synthetic:tiny", DataSourceSpec.synthetic("tiny")),
    ("synthetic:full:seed=7", DataSourceSpec.synthetic("full", 7)),
    ("synthetic:seed=-3", DataSourceSpec.synthetic("small", -3)),
    ("hetrec:../shared/data/lastfm-2k", DataSourceSpec.files("../shared/data/lastfm-2k", "hetrec")),
    ("some/dir", DataSourceSpec.files("some/dir", "auto")),
    ("table:ratings.csv:user=userId,artist=movieId,weight=rating",
     DataSourceSpec.files("ratings.csv", "table", user_column="userId", artist_column="movieId",
                          weight_column="rating")),
    ("table:plays.tsv:artists=names.csv,name=title",
     DataSourceSpec.files("plays.tsv", "table", artists_path="names.csv", name_column="title")),
    ("auto:odd:name", DataSourceSpec.files("odd:name", "auto")),
    ("movielens:ml", DataSourceSpec.files("ml", "movielens")),
])
def test_parse_source(text, expected):
    spec = parse_source(text)
    assert spec == expected
    assert parse_source(spec.to_text()) == spec


@pytest.mark.parametrize("text,message", [
    ("", r"empty data source"),
    ("synthetic:huge", r"unexpected 'huge'; expected a size \(tiny, small, medium, full\) or seed=N"),
    ("synthetic:seed=x", r"seed must be an integer, got 'x'"),
    ("hetrc:foo", r"unknown kind 'hetrc'.*write auto:PATH"),
    ("table:", r"table needs a path"),
    ("hetrec:dir:user=a", r"column options apply to the table format only"),
    ("table:x.csv:colour=1", r"unknown option 'colour'; expected user, artist, weight, artists, name"),
    ("table:x.csv:user=a,user=b", r"option 'user' given twice"),
])
def test_parse_source_errors(text, message):
    with pytest.raises(DataError, match=message):
        parse_source(text)


def test_spec_validation_and_proto_defaults():
    # Empty column names mean the defaults, as in the proto.
    spec = DataSourceSpec.files("t.csv", "table", user_column="", artist_column="", name_column="")
    assert (spec.user_column, spec.artist_column, spec.name_column) == ("user_id", "artist_id", "name")
    assert DataSourceSpec.synthetic("") == DataSourceSpec.synthetic("small")
    with pytest.raises(DataError, match=r"unknown data source kind 'web'"):
        DataSourceSpec(kind="web")
    with pytest.raises(DataError, match=r"needs a path"):
        DataSourceSpec.files("")
    with pytest.raises(DataError, match=r"unknown data format 'xml'"):
        DataSourceSpec.files("x", "xml")


def test_describe():
    assert parse_source("synthetic:full:seed=7").describe() == (
        "synthetic data, full preset (360,000 users, 160,000 artists, ~17,500,000 interactions), seed 7")
    assert parse_source("hetrec:lastfm-2k").describe() == "HetRec 2011 Last.fm files in lastfm-2k"
    assert parse_source("lastfm-2k").describe() == "data in lastfm-2k (format detected)"
    assert parse_source("table:r.csv:user=userId,artist=movieId,weight=rating,artists=m.csv,name=title").describe() == (
        "table r.csv (user userId, artist movieId, weight rating; names from m.csv (title))")
    assert parse_source("table:r.csv").describe() == "table r.csv (user user_id, artist artist_id, every row weighs 1)"


def test_load_synthetic_source():
    data = load_source(parse_source("synthetic:tiny:seed=4"))
    assert data.fingerprint() == generate("tiny", seed=4).interactions.fingerprint()
    assert data.source == "synthetic tiny (seed 4)"


@pytest.fixture
def data_dir(tmp_path):
    """data/ (the data directory) holding a HetRec directory and a table; secret/ beside it."""
    root = tmp_path / "data"
    (root / "h").mkdir(parents=True)
    (root / "h" / "user_artists.dat").write_text("userID\tartistID\tweight\n1\t10\t3\n2\t11\t4\n")
    (root / "h" / "artists.dat").write_text("10\tTen\tu\tp\n11\tEleven\tu\tp\n")
    (root / "plays.csv").write_text("who,what,n\na,x,1\nb,y,2\n")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "user_artists.dat").write_text("userID\tartistID\tweight\n9\t9\t9\n")
    (tmp_path / "secret" / "artists.dat").write_text("9\tSecret\tu\tp\n")
    (tmp_path / "secret" / "names.csv").write_text("what,name\nx,Secret\n")
    return root


def test_paths_are_relative_to_the_data_directory(data_dir, monkeypatch):
    monkeypatch.chdir(data_dir.parent)  # the working directory must not matter
    data = load_source(parse_source("hetrec:h"), data_dir=data_dir)
    assert data.artist_names.tolist() == ["Ten", "Eleven"]
    assert data.source == "HetRec 2011 Last.fm files in h"
    table = load_source(parse_source("table:plays.csv:user=who,artist=what,weight=n"), data_dir=data_dir)
    assert table.num_interactions == 2
    assert load_source(parse_source("h"), data_dir=data_dir).num_interactions == 2
    assert load_source(parse_source("./h/"), data_dir=data_dir).num_interactions == 2


@pytest.mark.parametrize("text", [
    "hetrec:/etc",
    "hetrec:../secret",
    "hetrec:h/../../secret",
    "table:plays.csv:user=who,artist=what,artists=../secret/names.csv",
])
def test_paths_leaving_the_data_directory_are_refused(data_dir, text):
    with pytest.raises(DataPathError, match=r"absolute|contains '\.\.'"):
        load_source(parse_source(text), data_dir=data_dir)


def test_absolute_path_inside_the_data_directory_is_still_refused(data_dir):
    with pytest.raises(DataPathError, match=r"is absolute"):
        load_source(DataSourceSpec.files(str(data_dir / "h"), "hetrec"), data_dir=data_dir)


def test_symlinked_directory_leading_out_is_refused(data_dir):
    os.symlink(data_dir.parent / "secret", data_dir / "escape")
    with pytest.raises(DataPathError, match=r"'escape' resolves outside the data directory"):
        load_source(parse_source("hetrec:escape"), data_dir=data_dir)
    with pytest.raises(DataPathError, match=r"resolves outside"):
        load_source(parse_source("escape"), data_dir=data_dir)


def test_symlinked_file_leading_out_is_refused(data_dir):
    (data_dir / "h" / "artists.dat").unlink()
    os.symlink(data_dir.parent / "secret" / "artists.dat", data_dir / "h" / "artists.dat")
    with pytest.raises(DataPathError, match=r"'h/artists\.dat' resolves outside the data directory"):
        load_source(parse_source("hetrec:h"), data_dir=data_dir)
    os.symlink(data_dir.parent / "secret" / "names.csv", data_dir / "names.csv")
    with pytest.raises(DataPathError, match=r"'names\.csv' resolves outside"):
        load_source(parse_source("table:plays.csv:user=who,artist=what,artists=names.csv"), data_dir=data_dir)


def test_symlink_inside_the_data_directory_is_fine(data_dir):
    os.symlink(data_dir / "h", data_dir / "alias")
    assert load_source(parse_source("hetrec:alias"), data_dir=data_dir).num_interactions == 2


def test_data_path_error_is_a_data_error(data_dir):
    assert issubclass(DataPathError, DataError)
    with pytest.raises(DataPathError, match=r"contains a NUL character"):
        load_source(DataSourceSpec.files("h\x00", "hetrec"), data_dir=data_dir)


def test_missing_data_directory_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"data directory .* does not exist"):
        load_source(parse_source("hetrec:h"), data_dir=tmp_path / "nope")


def test_real_hetrec_through_the_data_directory():
    if not (SHARED_DATA / "lastfm-2k").is_dir():
        pytest.skip(f"{SHARED_DATA / 'lastfm-2k'} is absent (CI clones the repository with shared/ beside it)")
    data = load_source(parse_source("lastfm-2k"), data_dir=SHARED_DATA)
    assert (data.num_users, data.num_artists, data.num_interactions) == (1892, 17632, 92834)
