"""Loaders of files on disk: tiny hand-written files with known answers, every kind of bad input
(the message must name the file, the line or column, and what was expected), and the real HetRec
and MovieLens copies when present."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer_service.data import DataError, check_interactions, detect_format, load_files
from trainer_service.data.loaders import load_hetrec, load_movielens, load_notebook, load_table
from trainer_service.data.tables import MAX_ID_CHARS, MAX_LINE_BYTES, MAX_NAME_CHARS

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def as_dict(data) -> dict[tuple[str, str], float]:
    """{(user id, artist id): weight}, the easiest known answer to compare."""
    return {(data.user_ids[u], data.artist_ids[a]): float(w)
            for u, a, w in zip(data.users, data.artists, data.weights)}


def names_by_id(data) -> dict[str, str]:
    return dict(zip(data.artist_ids.tolist(), data.artist_names.tolist()))


# --- formats, known answers -------------------------------------------------------------------


def notebook_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "nb"
    write(directory / "lastfm_play.csv", "user_id,artist_id,plays\n0,10,5\n0,11,2\n1,10,1\n0,10,3\n2,12,0\n1,13,4\n")
    write(directory / "lastfm_artist.csv", "artist_id,artist_name\n10,Radiohead\n11,\"Crosby, Stills & Nash\"\n"
                                           "12,Nobody Plays Me\n99,Unheard\n")
    write(directory / "lastfm_user.csv", "user_id,gender\n0,f\n1,m\n")
    return directory


def test_notebook_format_sums_duplicates_drops_zero_weights_and_names_artists(tmp_path):
    data = load_notebook(notebook_dir(tmp_path))
    check_interactions(data)
    # user 2's only row weighs 0: user 2 and artist 12 disappear; artist 99 has no plays either.
    assert data.user_ids.tolist() == ["0", "1"]
    assert data.artist_ids.tolist() == ["10", "11", "13"]
    assert as_dict(data) == {("0", "10"): 8.0, ("0", "11"): 2.0, ("1", "10"): 1.0, ("1", "13"): 4.0}
    assert data.artist_names.tolist() == ["Radiohead", "Crosby, Stills & Nash", ""]
    assert data.users.dtype == np.int32 and data.artists.dtype == np.int32 and data.weights.dtype == np.float32
    assert "nb" in data.source


def test_notebook_user_file_must_be_readable_text(tmp_path):
    directory = notebook_dir(tmp_path)
    write(directory / "lastfm_user.csv", b"\x00\x01\x02binary")
    with pytest.raises(DataError, match=r"nb/lastfm_user\.csv.*NUL|nb/lastfm_user\.csv.*binary"):
        load_notebook(directory)


def test_notebook_missing_catalog_names_the_file(tmp_path):
    directory = notebook_dir(tmp_path)
    (directory / "lastfm_artist.csv").unlink()
    with pytest.raises(DataError, match=r"lastfm_artist\.csv: file not found "
                                        r".*needs lastfm_play\.csv and lastfm_artist\.csv"):
        load_notebook(directory)


HETREC_LISTENS = "2\t51\t13883\n2\t52\t11690\n3\t51\t5\n10\t1686\t7\n"
HETREC_ARTISTS = ("51\tDuran Duran\thttp://a\thttp://b\n52\tMorcheeba\thttp://c\thttp://d\n"
                  "1686\t\"Weird Al\" Yankovic\thttp://e\thttp://f\n77\tNobody\thttp://g\thttp://h\n")


@pytest.mark.parametrize("listens_header,artists_header", [
    ("userID\tartistID\tweight\n", "id\tname\turl\tpictureURL\n"),  # the original release
    ("//userID\tartistID\tweight\n", ""),  # the copy in shared/data
    ("", ""),
])
def test_hetrec_with_or_without_header_lines(tmp_path, listens_header, artists_header):
    write(tmp_path / "h" / "user_artists.dat", listens_header + HETREC_LISTENS)
    write(tmp_path / "h" / "artists.dat", artists_header + HETREC_ARTISTS)
    data = load_hetrec(tmp_path / "h")
    check_interactions(data)
    assert data.user_ids.tolist() == ["2", "3", "10"]  # numeric ids in numeric order
    assert data.artist_ids.tolist() == ["51", "52", "1686"]
    assert as_dict(data) == {("2", "51"): 13883.0, ("2", "52"): 11690.0, ("3", "51"): 5.0, ("10", "1686"): 7.0}
    # Tab-separated files have no quoting: the quotes are part of the name.
    assert data.artist_names.tolist() == ["Duran Duran", "Morcheeba", '"Weird Al" Yankovic']


def test_hetrec_latin1_catalog_falls_back_without_losing_ids(tmp_path):
    write(tmp_path / "h" / "user_artists.dat", "userID\tartistID\tweight\n1\t5\t3\n")
    write(tmp_path / "h" / "artists.dat", "id\tname\turl\tpictureURL\n5\tBj\xf6rk\tu\tp\n".encode("latin-1"))
    data = load_hetrec(tmp_path / "h")
    assert data.artist_names.tolist() == ["Björk"]


def test_movielens_ratings_are_weights_and_titles_are_names(tmp_path):
    write(tmp_path / "ml" / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,1\n"
                                           "2,1,0.5,2\n")
    write(tmp_path / "ml" / "movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Animation\n'
                                          '3,"American President, The (1995)",Comedy|Drama\n')
    data = load_movielens(tmp_path / "ml")
    check_interactions(data)
    assert as_dict(data) == {("1", "1"): 4.0, ("1", "3"): 4.5, ("2", "1"): 0.5}
    assert names_by_id(data) == {"1": "Toy Story (1995)", "3": "American President, The (1995)"}


def test_table_without_weight_column_counts_rows(tmp_path):
    path = write(tmp_path / "listens.csv", "user,artist,when\nann,x,1\nann,x,2\nbob,y,3\nann,y,4\n")
    data = load_table(path, user_column="user", artist_column="artist")
    assert as_dict(data) == {("ann", "x"): 2.0, ("ann", "y"): 1.0, ("bob", "y"): 1.0}
    assert data.artist_names.tolist() == ["", ""]


@pytest.mark.parametrize("name,text", [
    ("t.tsv", "u\ta\tw\n1\tx\t2\n2\ty\t3\n"),
    ("t.tab", "u\ta\tw\n1\tx\t2\n2\ty\t3\n"),
    ("t.txt", "u;a;w\n1;x;2\n2;y;3\n"),  # sniffed
    ("t.data", "u|a|w\n1|x|2\n2|y|3\n"),  # unknown extension: sniffed
    ("t.csv", "\ufeffu,a,w\r\n1,x,2\r\n2,y,3\r\n"),  # UTF-8 BOM and CRLF
])
def test_table_delimiters_from_extension_or_sniffed(tmp_path, name, text):
    data = load_table(write(tmp_path / name, text), user_column="u", artist_column="a", weight_column="w")
    assert as_dict(data) == {("1", "x"): 2.0, ("2", "y"): 3.0}


def test_table_gzipped_by_extension_or_content(tmp_path):
    content = gzip.compress(b"u,a,w\n1,x,2\n1,x,3\n")
    for name in ("t.csv.gz", "t.csv"):  # a gzip stream named .csv is still read
        data = load_table(write(tmp_path / name, content), user_column="u", artist_column="a", weight_column="w")
        assert as_dict(data) == {("1", "x"): 5.0}


def test_table_parquet_with_catalog(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"uid": [1, 1, 2], "aid": ["x", "y", "x"], "plays": [3, 4, 5]}), tmp_path / "p.parquet")
    pq.write_table(pa.table({"aid": ["x", "y"], "label": ["Ex", "Why"]}), tmp_path / "names.pq")
    data = load_table(tmp_path / "p.parquet", user_column="uid", artist_column="aid", weight_column="plays",
                      artists_path=tmp_path / "names.pq", name_column="label")
    assert as_dict(data) == {("1", "x"): 3.0, ("1", "y"): 4.0, ("2", "x"): 5.0}
    assert data.artist_names.tolist() == ["Ex", "Why"]


def test_parquet_refuses_float_ids_and_nulls(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"user_id": [1.0, 2.0], "artist_id": ["x", "y"]}), tmp_path / "f.parquet")
    with pytest.raises(DataError, match=r"f\.parquet: column 'user_id' holds floating-point numbers"):
        load_table(tmp_path / "f.parquet")
    pq.write_table(pa.table({"user_id": ["a", "b", "c"], "artist_id": ["x", None, "y"]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n\.parquet: row 2, column 'artist_id': missing value"):
        load_table(tmp_path / "n.parquet")
    write(tmp_path / "c.parquet", b"PAR1 not really PAR1")
    with pytest.raises(DataError, match=r"c\.parquet: cannot read Parquet"):
        load_table(tmp_path / "c.parquet")
    pq.write_table(pa.table({"user_id": ["a"], "artist_id": ["x"]}), tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"m\.parquet: missing column 'plays'.*found 'user_id', 'artist_id'"):
        load_table(tmp_path / "m.parquet", weight_column="plays")


def test_ids_stay_strings(tmp_path):
    path = write(tmp_path / "ids.csv", 'user_id,artist_id,plays\n007,1,1\n7,1.0,2\n"a,b","say ""hi""",3\n7,1,4\n')
    data = load_table(path, weight_column="plays")
    assert as_dict(data) == {("007", "1"): 1.0, ("7", "1.0"): 2.0, ("7", "1"): 4.0, ("a,b", 'say "hi"'): 3.0}


def test_numeric_ids_sort_numerically_and_coding_ignores_row_order(tmp_path):
    rows = [f"{u},{a},{u + a + 1}" for u in (10, 2, 33) for a in (5, 100, 7)]
    first = load_table(write(tmp_path / "a.csv", "user_id,artist_id,w\n" + "\n".join(rows) + "\n"), weight_column="w")
    random.Random(3).shuffle(rows)
    second = load_table(write(tmp_path / "b.csv", "user_id,artist_id,w\n" + "\n".join(rows) + "\n"), weight_column="w")
    assert first.user_ids.tolist() == ["2", "10", "33"]
    assert first.artist_ids.tolist() == ["5", "7", "100"]
    assert np.array_equal(first.users, second.users) and np.array_equal(first.weights, second.weights)


def test_auto_detection(tmp_path):
    nb = notebook_dir(tmp_path)
    write(tmp_path / "h" / "user_artists.dat", HETREC_LISTENS)
    write(tmp_path / "h" / "artists.dat", HETREC_ARTISTS)
    table = write(tmp_path / "t.csv", "user_id,artist_id\n1,2\n")
    assert detect_format(nb) == "notebook"
    assert detect_format(tmp_path / "h") == "hetrec"
    assert detect_format(table) == "table"
    assert load_files(tmp_path / "h").num_interactions == 4
    assert load_files(table).num_interactions == 1
    write(tmp_path / "h" / "ratings.csv", "userId,movieId,rating\n1,1,1\n")
    with pytest.raises(DataError, match=r"h: found the files of several formats"):
        detect_format(tmp_path / "h")
    write(tmp_path / "odd" / "readme.txt", "hello")
    with pytest.raises(DataError, match=r"odd: cannot detect the data format: "
                                        r"expected lastfm_play\.csv .*found readme\.txt"):
        load_files(tmp_path / "odd")
    with pytest.raises(DataError, match=r"nowhere: directory not found"):
        load_files(tmp_path / "nowhere", "hetrec")


# --- bad input: the message names the file, the line or column, and what was expected ------------

HEADER = "user_id,artist_id,plays\n"


@pytest.mark.parametrize("text,message", [
    (HEADER + "1,a,3\n2,b,x\n", r"bad\.csv: line 3, column 'plays': expected a number, found 'x'"),
    (HEADER + "1,a,3\n\n2,b,NaN\n", r"bad\.csv: line 4, column 'plays': found 'NaN'; expected a number"),
    (HEADER + "1,a,3\n   \n\t\n2,b,x\n", r"bad\.csv: line 5, column 'plays': expected a number, found 'x'"),
    (HEADER + "1,a,\n", r"bad\.csv: line 2, column 'plays': empty weight; expected a number"),
    (HEADER + "1,a,inf\n", r"bad\.csv: line 2, column 'plays': found 'inf'; weights must be finite"),
    (HEADER + "1,a,3\n2,b,-4\n", r"bad\.csv: line 3, column 'plays': negative weight '-4'"),
    (HEADER + "1,a,0\n2,b,0\n", r"bad\.csv: no interactions: all 2 rows have weight 0"),
    (HEADER, r"bad\.csv: no interactions: no data rows"),
    (HEADER + "\n\n", r"bad\.csv: no interactions: no data rows"),
    ("", r"bad\.csv: file is empty \(0 bytes\); expected a header line with columns 'user_id', 'artist_id', 'plays'"),
    (HEADER + "1,a,3\nuser_id,artist_id,plays\n2,b,4\n", r"bad\.csv: line 3 repeats the header line"),
    ("user_id\tartist_id\tplays\n1\ta\t3\n",
     r"bad\.csv: line 1: expected columns 'user_id', 'artist_id', 'plays', found one column "
     r"'user_id\\tartist_id\\tplays': wrong delimiter\? \(read as comma-separated; the line contains tabs\)"),
    ("user,artist_id,plays\n1,a,3\n",
     r"bad\.csv: line 1: missing column 'user_id'; .*found 'user', 'artist_id', 'plays'"),
    ("User_ID,artist_id,plays\n1,a,3\n", r"missing column 'user_id' \(found 'User_ID': names are case-sensitive\)"),
    ("user_id,artist_id,plays,plays\n1,a,3,4\n", r"bad\.csv: line 1: column 'plays' appears 2 times"),
    (HEADER + "1,,3\n", r"bad\.csv: line 2, column 'artist_id': empty artist id"),
    (HEADER + " ,a,3\n", r"bad\.csv: line 2, column 'user_id': empty user id"),
    (HEADER + "1,a,3\n2,b,4,5\n", r"bad\.csv: line 3: 4 comma-separated fields, expected 3 as on line 1"),
    (HEADER + "1,a,3,9\n2,b,4\n", r"bad\.csv: line 2: 4 comma-separated fields, expected 3"),
    (HEADER + "1,a,3\n\n2,b\n",
     r"bad\.csv: line 4: 2 comma-separated fields, expected 3 as on line 1 \(a missing field\?\)"),
    (HEADER + '1,"a\n', r"bad\.csv: line 2: a quoted field is never closed"),
    (HEADER + '1,"a\nb",3\n', r"bad\.csv: line 2, column 'artist_id': artist id 'a\\nb' holds a line break"),
    (HEADER + '1,"a,3\n2,b,4\n', r"bad\.csv: line 2: a quoted field is never closed"),
    (HEADER + "1," + "x" * (MAX_ID_CHARS + 1) + ",3\n",
     rf"bad\.csv: line 2, column 'artist_id': artist id is {MAX_ID_CHARS + 1} characters long "
     rf"\(at most {MAX_ID_CHARS}\)"),
    (HEADER + "1,a,3\n1," + "y" * (MAX_LINE_BYTES + 10) + ",3\n",
     rf"bad\.csv: line 3 is longer than {MAX_LINE_BYTES:,} bytes"),
    (HEADER + "1,a,3\n2,b\x00,4\n", r"bad\.csv: line 3: NUL byte: a binary file, not text"),
    ("\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11\x12" * 20, r"bad\.csv: not a text file: \d+ control bytes"),
])
def test_bad_input_is_refused_with_a_precise_message(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message):
        load_table(path, weight_column="plays")


def test_random_binary_garbage_is_refused(tmp_path):
    garbage = np.random.default_rng(7).integers(0, 256, size=5000, dtype=np.uint8).tobytes()
    with pytest.raises(DataError, match=r"junk\.csv: (not a text file|line \d+: NUL byte)"):
        load_table(write(tmp_path / "junk.csv", garbage))


@pytest.mark.parametrize("content,message", [
    (b"PK\x03\x04rest", r"looks like a ZIP archive"),
    ("user_id,artist_id\n1,2\n".encode("utf-16"), r"looks like UTF-16 text"),
    (b"\x1f\x8b\x08\x00garbage", r"corrupt gzip data"),
])
def test_archives_and_encodings_we_do_not_read(tmp_path, content, message):
    with pytest.raises(DataError, match=rf"x\.csv: .*{message}"):
        load_table(write(tmp_path / "x.csv", content))


def test_comma_file_read_as_tsv_says_wrong_delimiter(tmp_path):
    path = write(tmp_path / "a.tsv", "a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match=r"a\.tsv: line 1: expected columns 'a', 'b', found one column 'a,b,c': "
                                        r"wrong delimiter\? \(read as tab-separated; the line contains commas\)"):
        load_table(path, user_column="a", artist_column="b")


def test_hetrec_comma_file_says_wrong_delimiter(tmp_path):
    write(tmp_path / "h" / "artists.dat", HETREC_ARTISTS)
    write(tmp_path / "h" / "user_artists.dat", "2,51,13883\n")
    with pytest.raises(DataError, match=r"h/user_artists\.dat: line 1: expected 3 tab-separated fields "
                                        r"\(userID, artistID, weight\), found one field '2,51,13883': "
                                        r"wrong delimiter\?"):
        load_hetrec(tmp_path / "h")


def test_hetrec_non_numeric_weight_names_line_without_header(tmp_path):
    write(tmp_path / "h" / "artists.dat", HETREC_ARTISTS)
    write(tmp_path / "h" / "user_artists.dat", "2\t51\t3\n2\t52\tlots\n")
    with pytest.raises(DataError, match=r"h/user_artists\.dat: line 2, column 'weight': "
                                        r"expected a number, found 'lots'"):
        load_hetrec(tmp_path / "h")


def test_line_numbers_count_quoted_newlines(tmp_path):
    write(tmp_path / "names.csv", 'artist_id,name\n1,"Two\nLines"\n2,x\n1,Other\n')
    path = write(tmp_path / "t.csv", "user_id,artist_id\nu,1\n")
    with pytest.raises(DataError, match=r"names\.csv: artist id '1' is listed with different names "
                                        r"\(line 2 and line 5\)"):
        load_table(path, artists_path=tmp_path / "names.csv")


def test_catalog_repeating_the_same_pair_is_fine(tmp_path):
    write(tmp_path / "names.csv", "artist_id,name\n1,One\n1,One\n")
    data = load_table(write(tmp_path / "t.csv", "user_id,artist_id\nu,1\n"), artists_path=tmp_path / "names.csv")
    assert data.artist_names.tolist() == ["One"]


def test_long_names_are_refused(tmp_path):
    write(tmp_path / "names.csv", f"artist_id,name\n1,{'n' * (MAX_NAME_CHARS + 1)}\n")
    with pytest.raises(DataError, match=rf"names\.csv: line 2, column 'name': name is {MAX_NAME_CHARS + 1} characters"):
        load_table(write(tmp_path / "t.csv", "user_id,artist_id\nu,1\n"), artists_path=tmp_path / "names.csv")


def test_missing_file_and_directory_given_as_table(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_files(tmp_path / "nope.csv", "table")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"d: is a directory, expected a file"):
        load_table(tmp_path / "d")


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# --- the real data sets (skipped when shared/data is not beside the repository) ----------------


def real(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (CI clones the repository with shared/ beside it)")
    return path


def test_real_hetrec_lastfm_2k():
    data = load_files(real("lastfm-2k"))
    check_interactions(data)
    assert (data.num_users, data.num_artists, data.num_interactions) == (1892, 17632, 92834)
    weights = as_dict(data)
    assert weights[("2", "51")] == 13883.0
    names = names_by_id(data)
    assert names["51"] == "Duran Duran"
    assert names["1686"] == '"Weird Al" Yankovic'
    assert (data.artist_names != "").all()


def test_real_movielens_small():
    data = load_files(real("movielens-small"))
    check_interactions(data)
    assert (data.num_users, data.num_artists, data.num_interactions) == (610, 9724, 100836)
    assert as_dict(data)[("1", "1")] == 4.0
    assert names_by_id(data)["1"] == "Toy Story (1995)"
    assert set(np.unique(data.weights).tolist()) <= {x / 2 for x in range(1, 11)}


def test_real_files_through_a_read_only_copy_keep_their_counts(tmp_path):
    # The same loader on a copy whose rows are shuffled: coding does not depend on row order.
    source = real("lastfm-2k")
    lines = (source / "user_artists.dat").read_text(encoding="utf-8").splitlines(keepends=True)
    body = lines[1:]
    random.Random(0).shuffle(body)
    write(tmp_path / "h" / "user_artists.dat", "".join(lines[:1] + body))
    os.symlink(source / "artists.dat", tmp_path / "h" / "artists.dat")
    assert load_hetrec(tmp_path / "h").fingerprint() == load_hetrec(source).fingerprint()


# --- robustness: whatever the bytes, a DataError or valid Interactions, never another exception ----

_PIECES = st.sampled_from(["user_id", "artist_id", "plays", ",", "\t", ";", '"', '""', "\n", "\r\n", " ", "",
                           "1", "007", "1.0", "-2", "0", "nan", "inf", "x", "é", "\x00", "\x01", "#", "//"])


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(_PIECES, max_size=60), header=st.booleans(), suffix=st.sampled_from([".csv", ".tsv", ".txt"]))
def test_arbitrary_text_gives_data_error_or_valid_data(tmp_path, body, header, suffix):
    text = ("user_id,artist_id,plays\n" if header else "") + "".join(body)
    path = write(tmp_path / f"fuzz{suffix}", text.encode("utf-8"))
    try:
        data = load_table(path, weight_column="plays")
    except DataError:
        return
    check_interactions(data)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300))
def test_arbitrary_bytes_give_data_error_or_valid_data(tmp_path, content):
    directory = tmp_path / "h"
    write(directory / "user_artists.dat", content)
    write(directory / "artists.dat", content)
    try:
        data = load_hetrec(directory)
    except DataError:
        return
    check_interactions(data)
