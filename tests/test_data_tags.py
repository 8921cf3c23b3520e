"""The artists' tags each source carries (trainer_service.data.tags): HetRec's tag files, a tags
file beside a table, the synthetic generator's genres, carried through the play log, published
with the version. Known answers on tiny hand-written files; bad rows give one-line DataErrors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_BUILD, SHARED_DATA

from model_store import load_version
from play_log import Play, PlayRecorded
from trainer_service.data import DataError, check_interactions, generate, load_files, load_source, parse_source
from trainer_service.data.log_plays import with_log_plays
from trainer_service.data.loaders import load_hetrec, load_notebook, load_table
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.pipeline import run_training
from trainer_service.training_request import TrainingOptions
from test_data_loaders import write


def tags_by_id(data) -> dict[str, list[tuple[str, float]]]:
    """{artist id: [(tag, weight), ...] heaviest first} for the tagged artists."""
    tags = data.tags
    return {str(data.artist_ids[a]): [(str(tags.names[t]), float(w)) for t, w in
                                     zip(tags.artist_tag_indices(a), tags.weights[tags.indptr[a]:tags.indptr[a + 1]])]
            for a in range(data.num_artists) if tags.indptr[a + 1] > tags.indptr[a]}


# Listeners 2, 3, 10 of artists 51, 52, 1686 (77 is in no listening row).
HETREC_LISTENS = "userID\tartistID\tweight\n2\t51\t10\n2\t52\t5\n3\t51\t5\n10\t1686\t7\n"
HETREC_ARTISTS = "id\tname\turl\tpictureURL\n51\tDuran Duran\tu\tp\n52\tMorcheeba\tu\tp\n1686\tWeird Al\tu\tp\n"
HETREC_TAG_NAMES = "tagID\ttagValue\n1\tNew Wave\n2\t80s\n3\ttrip-hop\n4\tnew wave \n5\tcomedy\n"
# Artist 51: new wave by users 2, 3 and 7 (7 applied both spellings: one vote), 80s by 2 (twice, on
# two dates: one vote); 52: trip-hop by 2; 77 (no listener row): comedy; 1686: no tags.
HETREC_APPLIED = ("userID\tartistID\ttagID\tday\tmonth\tyear\n"
                  "2\t51\t1\t1\t4\t2009\n3\t51\t4\t1\t4\t2009\n7\t51\t1\t1\t4\t2009\n7\t51\t4\t2\t4\t2009\n"
                  "2\t51\t2\t1\t4\t2009\n2\t51\t2\t1\t5\t2009\n2\t52\t3\t1\t4\t2009\n9\t77\t5\t1\t4\t2009\n")


def hetrec_dir(tmp_path: Path, names: str | None = HETREC_TAG_NAMES, applied: str | None = HETREC_APPLIED) -> Path:
    directory = tmp_path / "h"
    write(directory / "user_artists.dat", HETREC_LISTENS)
    write(directory / "artists.dat", HETREC_ARTISTS)
    if names is not None:
        write(directory / "tags.dat", names)
    if applied is not None:
        write(directory / "user_taggedartists.dat", applied)
    return directory


def test_hetrec_tags_weigh_distinct_listeners(tmp_path):
    data = load_hetrec(hetrec_dir(tmp_path))
    check_interactions(data)
    assert tags_by_id(data) == {"51": [("new wave", 3.0), ("80s", 1.0)], "52": [("trip-hop", 1.0)]}
    # Vocabulary: the tags listened artists carry, by artists carrying (all 1), then name.
    assert data.tags.names.tolist() == ["80s", "new wave", "trip-hop"]
    assert data.tags.counts.tolist() == [1, 1, 1]


def test_hetrec_without_tag_files_has_no_tags(tmp_path):
    assert load_hetrec(hetrec_dir(tmp_path, names=None, applied=None)).tags is None


def test_hetrec_tags_of_unlistened_artists_only_are_no_tags(tmp_path):
    applied = "userID\tartistID\ttagID\tday\tmonth\tyear\n9\t77\t5\t1\t4\t2009\n"
    assert load_hetrec(hetrec_dir(tmp_path, applied=applied)).tags is None


@pytest.mark.parametrize("names, applied, message", [
    (None, HETREC_APPLIED, "h/tags.dat: file not found (HetRec tags need both"),
    (HETREC_TAG_NAMES, None, "h/user_taggedartists.dat: file not found"),
    (HETREC_TAG_NAMES + "6\t  \n", HETREC_APPLIED, "h/tags.dat: line 7, column 'tagValue': empty tag"),
    (HETREC_TAG_NAMES + "1\tother\n", HETREC_APPLIED, "h/tags.dat: tag id '1' is listed with different names"),
    (HETREC_TAG_NAMES, HETREC_APPLIED + "2\t52\t99\t1\t4\t2009\n",
     "h/user_taggedartists.dat: line 10, column 'tagID': tag id '99' is not in tags.dat"),
    (HETREC_TAG_NAMES, HETREC_APPLIED + "2\t52\n", "h/user_taggedartists.dat: line 10"),
    (HETREC_TAG_NAMES, HETREC_APPLIED + "\t52\t3\t1\t4\t2009\n",
     "h/user_taggedartists.dat: line 10, column 'userID': empty user id"),
])
def test_hetrec_bad_tag_files_are_refused_in_one_line(tmp_path, names, applied, message):
    with pytest.raises(DataError) as error:
        load_hetrec(hetrec_dir(tmp_path, names=names, applied=applied))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_table_tags_file_beside_the_table(tmp_path):
    write(tmp_path / "plays.csv", "user_id,artist_id,plays\nu1,a1,3\nu1,a2,1\nu2,a3,2\n")
    # a1: Jazz twice (weights add up), Soul; a2: jazz; a3: a weight-0 row only; zz: nobody listened.
    write(tmp_path / "tags.csv", "artist_id,tag,weight\na1,Jazz,2\na1, jazz ,1.5\na1,soul,1\na2,jazz,1\n"
                                 "a3,rock,0\nzz,jazz,9\n")
    data = load_files(tmp_path / "plays.csv", weight_column="plays")
    check_interactions(data)
    assert tags_by_id(data) == {"a1": [("jazz", 3.5), ("soul", 1.0)], "a2": [("jazz", 1.0)]}
    assert data.tags.names.tolist() == ["jazz", "soul"] and data.tags.counts.tolist() == [2, 1]


def test_table_tags_without_weights_use_the_artist_column(tmp_path):
    write(tmp_path / "r.csv", "userId,movieId\n1,10\n1,20\n2,20\n")
    write(tmp_path / "tags.tsv", "movieId\ttag\n20\tfunny\n20\tfunny\n10\tdark\n20\tdark\n")
    data = load_source(parse_source(f"table:{tmp_path / 'r.csv'}:user=userId,artist=movieId"))
    assert tags_by_id(data) == {"10": [("dark", 1.0)], "20": [("funny", 2.0), ("dark", 1.0)]}
    assert data.tags.names.tolist() == ["dark", "funny"]  # dark is carried by two movies


def test_table_without_tags_file_has_no_tags(tmp_path):
    write(tmp_path / "plays.csv", "user_id,artist_id\nu1,a1\n")
    assert load_table(tmp_path / "plays.csv").tags is None


@pytest.mark.parametrize("text, message", [
    ("artist_id,weight\na1,1\n", "tags.csv: line 1: missing column 'tag'"),
    ("artist_id,tag\na1,\n", "tags.csv: line 2, column 'tag': empty tag"),
    ("artist_id,tag,weight\na1,x,-1\n", "tags.csv: line 2, column 'weight': negative weight"),
    ("artist_id,tag,weight\na1,x,many\n", "tags.csv: line 2, column 'weight': expected a number"),
    ("artist_id,tag\n,x\n", "tags.csv: line 2, column 'artist_id': empty artist id"),
    ("artist_id,tag\na1,x,extra\n", "tags.csv: line 2"),
    ("artist_id,tag\na1," + "x" * 300 + "\n", "characters long"),
])
def test_bad_table_tags_are_refused_in_one_line(tmp_path, text, message):
    write(tmp_path / "plays.csv", "user_id,artist_id\nu1,a1\n")
    write(tmp_path / "tags.csv", text)
    with pytest.raises(DataError) as error:
        load_table(tmp_path / "plays.csv")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_two_tags_files_are_ambiguous(tmp_path):
    write(tmp_path / "plays.csv", "user_id,artist_id\nu1,a1\n")
    write(tmp_path / "tags.csv", "artist_id,tag\na1,x\n")
    write(tmp_path / "tags.tsv", "artist_id\ttag\na1\tx\n")
    with pytest.raises(DataError, match="several tags files"):
        load_table(tmp_path / "plays.csv")


def test_a_table_named_tags_is_not_its_own_tags_file(tmp_path):
    write(tmp_path / "tags.csv", "user_id,artist_id,tag\nu1,a1,x\n")
    assert load_table(tmp_path / "tags.csv").tags is None


def test_tags_file_symlinked_out_of_the_data_dir_is_refused(tmp_path):
    root = tmp_path / "data"
    write(root / "plays.csv", "user_id,artist_id\nu1,a1\n")
    outside = write(tmp_path / "outside.csv", "artist_id,tag\na1,x\n")
    (root / "tags.csv").symlink_to(outside)
    with pytest.raises(DataError, match="outside the data directory"):
        load_source(parse_source("plays.csv"), data_dir=root)


def test_notebook_files_carry_no_tags(tmp_path):
    directory = tmp_path / "nb"
    write(directory / "lastfm_play.csv", "user_id,artist_id,plays\n0,10,5\n")
    write(directory / "lastfm_artist.csv", "artist_id,artist_name\n10,Radiohead\n")
    write(directory / "tags.csv", "artist_id,tag\n10,rock\n")  # not a notebook file: ignored
    assert load_notebook(directory).tags is None


def test_synthetic_artists_carry_their_planted_genre():
    synthetic = generate("tiny", seed=3)
    data = synthetic.interactions
    check_interactions(data)
    tags = data.tags
    assert np.array_equal(np.diff(tags.indptr), np.ones(data.num_artists))  # one tag each
    assert [tags.artist_tag_names(a) for a in range(data.num_artists)] == \
        [[str(synthetic.genre_names[g]).casefold()] for g in synthetic.artist_genres]
    assert np.all(tags.weights == 1)
    sizes = np.bincount(synthetic.artist_genres)
    assert sorted(tags.counts.tolist(), reverse=True) == sorted(sizes.tolist(), reverse=True)


def test_tags_follow_their_artists_through_the_play_log(tmp_path):
    write(tmp_path / "plays.csv", "user_id,artist_id\nu1,b\nu2,c\n")
    write(tmp_path / "tags.csv", "artist_id,tag,weight\nb,blues,2\nb,rock,1\nc,country,1\n")
    data = load_table(tmp_path / "plays.csv")
    now = time.time()
    plays = [PlayRecorded(position=1, play=Play("u3", "a-new", 1, now))]
    merged = with_log_plays(data, plays, {"u2"}, 1)  # c loses its only listener; a-new comes first
    check_interactions(merged)
    assert merged.artist_ids.tolist() == ["a-new", "b"]
    assert tags_by_id(merged) == {"b": [("blues", 2.0), ("rock", 1.0)]}


def test_published_version_carries_the_sources_tags(models_dir):
    data = generate("tiny", seed=0).interactions
    result = run_training(data, Hyperparameters(epochs=1, factors=8, batch_size=256), models_dir,
                          build_settings=FAST_BUILD, options=TrainingOptions(gate="off"))
    loaded = load_version(models_dir / str(result.version))
    try:
        assert loaded.tags is not None
        for name in ("names", "counts", "indptr", "indices", "weights", "tag_indptr", "tag_artists"):
            assert np.array_equal(getattr(loaded.tags, name), getattr(data.tags, name)), name
    finally:
        loaded.close()


def test_real_hetrec_lastfm_2k_tags():
    path = SHARED_DATA / "lastfm-2k"
    if not path.is_dir():
        pytest.skip(f"{path} is absent (CI clones the repository with shared/ beside it)")
    data = load_files(path)
    check_interactions(data)
    tags = data.tags
    assert tags.names[:3].tolist() == ["rock", "alternative", "electronic"]
    assert int(np.diff(tags.indptr).max()) == 20
    radiohead = data.artist_names.tolist().index("Radiohead")
    assert tags.artist_tag_names(radiohead)[:3] == ["alternative", "rock", "alternative rock"]


def _reference_hetrec_tags(data, names_text: str, applied_text: str):
    """HetRec tags computed the plain way (as the loader did before it counted votes with int64
    codes): one (artist, tag key, listener) row per distinct triple, each weighing 1."""
    from model_store.artifacts import ArtistTags, tag_key

    tag_of = dict(line.split("\t")[:2] for line in names_text.splitlines()[1:])
    row_of = {str(artist): row for row, artist in enumerate(data.artist_ids.tolist())}
    triples = sorted({(row_of[artist], tag_key(tag_of[tag]), user)
                      for user, artist, tag, *_ in (line.split("\t") for line in applied_text.splitlines()[1:])
                      if artist in row_of})
    return ArtistTags.from_triples(data.num_artists, [t[0] for t in triples], [t[1] for t in triples],
                                   np.ones(len(triples)))


def test_hetrec_tags_equal_the_plain_count_on_a_larger_random_set(tmp_path):
    rng = np.random.default_rng(5)
    users, artists, tag_ids = np.arange(1, 301), np.arange(1, 401), np.arange(1, 151)
    listens = "userID\tartistID\tweight\n" + "".join(
        f"{u}\t{a}\t{int(w)}\n" for u, a, w in zip(rng.choice(users, 5000), rng.choice(artists[:380], 5000),
                                                   rng.integers(1, 50, 5000)))
    catalog = "id\tname\turl\tpictureURL\n" + "".join(f"{a}\tartist {a}\tu\tp\n" for a in artists)
    # Spellings that share a key (case, spaces), so that one listener's two spellings are one vote.
    names = "tagID\ttagValue\n" + "".join(f"{t}\t{[f'tag {t % 40}', f' Tag {t % 40}', f'TAG {t % 40} '][t % 3]}\n"
                                          for t in tag_ids)
    applied = "userID\tartistID\ttagID\tday\tmonth\tyear\n" + "".join(
        f"{u}\t{a}\t{t}\t1\t1\t2009\n" for u, a, t in zip(rng.choice(users, 20000), rng.choice(artists, 20000),
                                                         rng.choice(tag_ids, 20000)))
    directory = tmp_path / "h"
    for name, text in (("user_artists.dat", listens), ("artists.dat", catalog), ("tags.dat", names),
                       ("user_taggedartists.dat", applied)):
        write(directory / name, text)
    data = load_hetrec(directory)
    expected = _reference_hetrec_tags(data, names, applied)
    assert float(data.tags.weights.max()) > 1  # some pairs had several listeners
    for name in ("names", "counts", "indptr", "indices", "weights", "tag_indptr", "tag_artists"):
        found, wanted = getattr(data.tags, name), getattr(expected, name)
        assert found.dtype == wanted.dtype and np.array_equal(found, wanted), name
