"""Data files with every kind of damage, in every on-disk format.

Each damaged data set lives in its own directory under a data dir: binary garbage, a wrong
delimiter, a line over the loaders' line limit, negative, NaN and infinite weights, unquoted ids
with commas, a quote that never closes, a 0-byte file, a missing catalog, a symlink leading out.

- Directly against the loaders (``load_source`` with the data dir, as the training process
  calls it): ``DataError`` (never another exception) whose message names the damaged file.
- Through the trainer service (a real process): StartTraining on one set per kind of damage is
  accepted, its job ends FAILED with the loader's message, nothing is published, and the
  trainer still trains a good data set afterwards. A path escaping the data dir (``..``, absolute, a symlink out) is refused
  at StartTraining with INVALID_ARGUMENT, before any job exists.

Ids with commas or quotes *properly quoted* are valid data, and load with the ids intact.
The loaders' own tests (tests/test_data_loaders.py) check each message word for word and fuzz
arbitrary text and bytes with hypothesis.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trainer_service.data import DataError, DataPathError, DataSourceSpec, load_source
from trainer_service.data.tables import MAX_LINE_BYTES

GOOD_PLAYS = "user_id,artist_id,plays\nu1,a1,3\nu1,a2,1\nu2,a1,2\nu2,a3,5\nu3,a2,1\n"
GOOD_CATALOG = "artist_id,artist_name\na1,One\na2,Two\na3,Three\n"
HETREC_CATALOG = "id\tname\turl\tpictureURL\n1\tOne\tu\tp\n2\tTwo\tu\tp\n"
GARBAGE = np.random.default_rng(3).integers(0, 256, size=4096, dtype=np.uint8).tobytes()

# name -> (format, {file: content}, words the DataError must contain)
DAMAGED: dict[str, tuple[str, dict[str, str | bytes], str]] = {
    "binary-garbage": ("notebook", {"lastfm_play.csv": GARBAGE, "lastfm_artist.csv": GOOD_CATALOG},
                       "lastfm_play.csv"),
    "binary-catalog": ("notebook", {"lastfm_play.csv": GOOD_PLAYS, "lastfm_artist.csv": GARBAGE},
                       "lastfm_artist.csv"),
    "zero-bytes": ("notebook", {"lastfm_play.csv": b"", "lastfm_artist.csv": GOOD_CATALOG}, "0 bytes"),
    "wrong-delimiter": ("notebook", {"lastfm_play.csv": GOOD_PLAYS.replace(",", "\t"),
                                     "lastfm_artist.csv": GOOD_CATALOG}, "wrong delimiter"),
    "hetrec-commas": ("hetrec", {"user_artists.dat": "userID\tartistID\tweight\n1,1,3\n",
                                 "artists.dat": HETREC_CATALOG}, "1 tab-separated field, expected 3"),
    "huge-line": ("notebook", {"lastfm_play.csv": GOOD_PLAYS + "u9,a1," + "9" * (MAX_LINE_BYTES + 10) + "\n",
                               "lastfm_artist.csv": GOOD_CATALOG}, "longer than"),
    "negative-weight": ("notebook", {"lastfm_play.csv": GOOD_PLAYS + "u4,a1,-3\n",
                                     "lastfm_artist.csv": GOOD_CATALOG}, "negative weight"),
    "nan-weight": ("notebook", {"lastfm_play.csv": GOOD_PLAYS + "u4,a1,NaN\n", "lastfm_artist.csv": GOOD_CATALOG},
                   "NaN"),
    "infinite-weight": ("movielens", {"ratings.csv": "userId,movieId,rating\n1,10,4\n2,10,inf\n",
                                      "movies.csv": "movieId,title\n10,Film\n"}, "finite"),
    "unquoted-comma-in-id": ("notebook", {"lastfm_play.csv": GOOD_PLAYS + "u4,Crosby, Stills,2\n",
                                          "lastfm_artist.csv": GOOD_CATALOG}, "fields, expected 3"),
    "unclosed-quote": ("notebook", {"lastfm_play.csv": GOOD_PLAYS + 'u4,"a1,2\nu5,a2,1\n',
                                    "lastfm_artist.csv": GOOD_CATALOG}, "never closed"),
    "all-zero-weights": ("table", {"plays.csv": "user_id,artist_id,plays\nu1,a1,0\n"}, "no interactions"),
    "missing-catalog": ("notebook", {"lastfm_play.csv": GOOD_PLAYS}, "lastfm_artist.csv: file not found"),
    "nul-bytes": ("hetrec", {"user_artists.dat": "userID\tartistID\tweight\n1\t1\t3\n1\t2\x00\t4\n",
                             "artists.dat": HETREC_CATALOG}, "NUL byte"),
    "utf16": ("table", {"plays.csv": GOOD_PLAYS.encode("utf-16")}, "UTF-16"),
}
# Ids with commas and quotes, quoted as CSV says: valid.
QUOTED_IDS = ('user_id,artist_id,plays\n"u,1","Crosby, Stills & Nash",3\n"u""2","say ""hi""",2\n'
              '"u,1","say ""hi""",1\n')


def table_path(name: str, files: dict) -> str:
    """The source path of a damaged set: its directory, or its table file for the table format."""
    return f"{name}/{next(iter(files))}" if DAMAGED.get(name, ("",))[0] == "table" else name


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name, (_fmt, files, _words) in DAMAGED.items():
        for filename, content in files.items():
            path = root / name / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    (root / "good").mkdir()
    (root / "good" / "lastfm_play.csv").write_text(GOOD_PLAYS)
    (root / "good" / "lastfm_artist.csv").write_text(GOOD_CATALOG)
    (root / "quoted.csv").write_text(QUOTED_IDS)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "lastfm_play.csv").write_text(GOOD_PLAYS)
    (outside / "lastfm_artist.csv").write_text(GOOD_CATALOG)
    os.symlink(outside, root / "escape")
    os.symlink(outside / "lastfm_play.csv", root / "escape.csv")
    return root


def spec_of(name: str) -> DataSourceSpec:
    fmt, files, _ = DAMAGED[name]
    weight = {"weight_column": "plays"} if fmt == "table" else {}
    return DataSourceSpec.files(table_path(name, files), fmt, **weight)


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_loaders_refuse_each_damage_naming_the_file(data_dir, name):
    _fmt, files, words = DAMAGED[name]
    with pytest.raises(DataError) as info:
        load_source(spec_of(name), data_dir)
    message = str(info.value)
    assert words in message, message
    assert name in message  # names the file by its path under the data dir
    assert str(data_dir) not in message  # ... and does not reveal the server's layout


def test_properly_quoted_ids_with_commas_and_quotes_are_valid(data_dir):
    data = load_source(DataSourceSpec.files("quoted.csv", "table", weight_column="plays"), data_dir)
    pairs = {(data.user_ids[u], data.artist_ids[a]): float(w) for u, a, w in zip(data.users, data.artists,
                                                                                  data.weights)}
    assert pairs == {("u,1", "Crosby, Stills & Nash"): 3.0, ('u"2', 'say "hi"'): 2.0, ("u,1", 'say "hi"'): 1.0}


@pytest.mark.parametrize("path", ["escape", "escape.csv", "../outside", "/etc/passwd", "good/../../x"])
def test_paths_leaving_the_data_dir_are_refused(data_dir, path):
    with pytest.raises(DataPathError):
        load_source(DataSourceSpec.files(path, "table" if path.endswith((".csv", "passwd")) else "auto"), data_dir)


# -- through the trainer service -------------------------------------------------------------------

FORMAT_ENUM = {"auto": 0, "notebook": 1, "hetrec": 2, "movielens": 3, "table": 4}
# One damaged set per kind of damage goes through the service (each is a job: a process start);
# the loaders see all of them above.
THROUGH_THE_SERVICE = ["binary-garbage", "zero-bytes", "wrong-delimiter", "huge-line", "negative-weight",
                       "nan-weight", "unquoted-comma-in-id", "unclosed-quote", "utf16"]


@pytest.fixture(scope="module")
def trainer(data_dir, tmp_path_factory):
    from test_faults_harness import TrainerClient, trainer_process

    tmp = tmp_path_factory.mktemp("data-trainer")
    process = trainer_process(tmp, tmp / "models", data_dir=data_dir).start()
    client = TrainerClient(process.address)
    yield process, client, tmp / "models"
    client.close()
    assert process.stop() == 0, process.tail()


@pytest.mark.slow
def test_each_damaged_data_set_fails_its_job_with_the_loaders_message(trainer):
    from model_store import list_versions
    from musicrec.v1 import trainer_pb2
    from test_faults_harness import SERVING, files_request

    process, client, models = trainer
    for name in THROUGH_THE_SERVICE:
        fmt, files, words = DAMAGED[name]
        weight = {"weight_column": "plays"} if fmt == "table" else {}
        job = client.start(files_request(table_path(name, files), FORMAT_ENUM[fmt], **weight))
        ended = client.wait_ended(job.job_id)
        assert ended.state == trainer_pb2.JOB_STATE_FAILED, (name, ended)
        assert words in ended.error and name in ended.error, (name, ended.error)
        assert ended.published_version == 0
    assert list_versions(models) == []
    assert client.health() == SERVING
    assert process.process.poll() is None


@pytest.mark.slow
@pytest.mark.parametrize("path", ["escape", "escape.csv", "../outside", "/etc/passwd", "good/../../x"])
def test_paths_leaving_the_data_dir_are_refused_before_a_job_exists(trainer, path):
    import grpc

    from test_faults_harness import files_request

    process, client, models = trainer
    with pytest.raises(grpc.RpcError) as info:
        client.start(files_request(path, FORMAT_ENUM["table" if path.endswith((".csv", "passwd")) else "auto"]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "data directory" in info.value.details()


@pytest.mark.slow
def test_the_trainer_still_trains_good_data_afterwards(trainer):
    from model_store import list_versions
    from musicrec.v1 import trainer_pb2
    from test_faults_harness import files_request

    process, client, models = trainer
    ended = client.wait_ended(client.start(files_request("good", FORMAT_ENUM["notebook"])).job_id)
    assert ended.state == trainer_pb2.JOB_STATE_SUCCEEDED and ended.published_version == 1, ended
    assert list_versions(models) == [1]
