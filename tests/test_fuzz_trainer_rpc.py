"""Property-based bad input against a running trainer process (hypothesis).

Every TrainerService RPC gets random field values: unknown enum values, huge, negative, NaN and
infinite hyperparameters, empty, very long and odd-Unicode paths, column names and job ids,
1 ms deadlines, raw bytes that are not a message, an oversized request. Only documented status
codes come back (never UNKNOWN or INTERNAL), and afterwards the trainer still answers correctly.

A valid StartTraining would start real training, so a long job is started first and its
training process stopped (SIGSTOP: it holds the trainer's one job slot without using the CPU);
every valid request then gets ALREADY_EXISTS naming it, every invalid one INVALID_ARGUMENT. The
watcher bound (``--max-watchers``) and the request size bound are checked on the same process.
Inputs per RPC are bounded (``EXAMPLES``), deterministic (``derandomize=True``), and recorded
in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicrec.v1 import model_pb2, trainer_pb2
from test_faults_harness import (
    SERVING,
    TRAINER_SERVICE,
    TrainerClient,
    synthetic_request,
    trainer_process,
    training_child,
    wait_until,
)

pytestmark = pytest.mark.slow

EXAMPLES = 200
MAX_WATCHERS = 3
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
TRIED: Counter[str] = Counter()
CODES: Counter[str] = Counter()  # StartTraining outcomes, to show both kinds of input were tried
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
odd_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
long_text = st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "/", ".", "🎵", "\x00"]), st.integers(300, 100_000))
paths = st.one_of(st.sampled_from(["", ".", "good", "good/plays.csv", "../x", "/etc/passwd", "escape", "a/../..",
                                   "missing", "good/\x00", "~", "C:\\x", "\\\\server\\share"]),
                  odd_text, long_text)
columns = st.one_of(st.just(""), st.sampled_from(["user_id", "artist_id", "plays", "name"]), odd_text)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e300]))

sources = st.one_of(
    st.none(),
    st.builds(lambda size, seed: trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=size, seed=seed)),
              st.one_of(st.integers(0, 5), INT32), INT64),
    st.builds(lambda path, fmt, user, artist, weight, artists, name: trainer_pb2.DataSource(
        files=trainer_pb2.FileSource(path=path, format=fmt, user_column=user, artist_column=artist,
                                     weight_column=weight, artists_path=artists, name_column=name)),
        paths, st.one_of(st.integers(0, 6), INT32), columns, columns, columns, st.one_of(st.just(""), paths), columns),
)


@st.composite
def hyperparameters(draw) -> model_pb2.Hyperparameters:
    message = model_pb2.Hyperparameters()
    for name in ("factors", "epochs", "batch_size"):
        if draw(st.booleans()):
            setattr(message, name, draw(st.one_of(st.integers(-3, 2000), INT32)))
    if draw(st.booleans()):
        message.seed = draw(INT64)
    for name in ("learning_rate", "regularization", "bias_regularization"):
        if draw(st.booleans()):
            setattr(message, name, draw(floats))
    return message


def is_valid_hyperparameters(h: model_pb2.Hyperparameters) -> bool:
    """The documented ranges (trainer_service/hyperparameters.py; factors 0: chosen from the data)."""
    ints = {"factors": (0, 1024), "epochs": (1, 10_000), "batch_size": (1, 1 << 20)}
    for name, (low, high) in ints.items():
        if h.HasField(name) and not low <= getattr(h, name) <= high:
            return False
    if h.HasField("learning_rate") and not (math.isfinite(h.learning_rate) and 0 < h.learning_rate <= 100):
        return False
    for name in ("regularization", "bias_regularization"):
        if h.HasField(name) and not (math.isfinite(getattr(h, name)) and 0 <= getattr(h, name) <= 100):
            return False
    return True


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A trainer whose one job slot is held by a stopped training process."""
    tmp = tmp_path_factory.mktemp("fuzz-trainer")
    data = tmp / "data"
    (data / "good").mkdir(parents=True)
    (data / "good" / "plays.csv").write_text("user_id,artist_id,plays\nu1,a1,3\nu2,a1,1\n")
    os.symlink("/etc", data / "escape")
    process = trainer_process(tmp, tmp / "models", "--max-watchers", str(MAX_WATCHERS), "--cancel-grace", "5",
                              data_dir=data).start()
    client = TrainerClient(process.address)
    blocker = client.start(synthetic_request(epochs=10_000, factors=8))
    child = training_child(process)
    os.kill(child, signal.SIGSTOP)
    yield process, client, blocker.job_id
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGCONT)
    client.close()
    process.kill()


def outcome(call, *args, **kwargs):
    """(status code, response or error)."""
    try:
        return grpc.StatusCode.OK, call(*args, **kwargs)
    except grpc.RpcError as error:
        return error.code(), error


def test_start_training_with_random_fields(trainer):
    process, client, blocker = trainer

    @FUZZ
    @given(source=sources, hp=hyperparameters(), deadline_s=st.sampled_from([30.0, 30.0, 30.0, 0.001]))
    def check(source, hp, deadline_s):
        TRIED["StartTraining"] += 1
        request = trainer_pb2.StartTrainingRequest(hyperparameters=hp)
        if source is not None:
            request.source.CopyFrom(source)
        code, result = outcome(client.stub.StartTraining, request, timeout=deadline_s)
        CODES[code.name] += 1
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert deadline_s < 1
            return
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS), (code, result)
        if code == grpc.StatusCode.ALREADY_EXISTS:
            assert blocker in result.details()
            assert is_valid_hyperparameters(hp), hp
        kind = request.source.WhichOneof("source")
        if kind == "synthetic" and not 0 <= request.source.synthetic.size <= 4:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "synthetic size" in result.details()
        if kind == "files" and not 0 <= request.source.files.format <= 4:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "data format" in result.details()
        if not is_valid_hyperparameters(hp):
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (hp, result)

    check()
    assert CODES["INVALID_ARGUMENT"] > 0 and CODES["ALREADY_EXISTS"] > 0, CODES


@pytest.mark.parametrize("method", ["GetTrainingJob", "CancelTraining", "WatchTrainingJob"])
def test_job_rpcs_with_random_ids(trainer, method):
    process, client, blocker = trainer
    request_type = {"GetTrainingJob": trainer_pb2.GetTrainingJobRequest,
                    "CancelTraining": trainer_pb2.CancelTrainingRequest,
                    "WatchTrainingJob": trainer_pb2.WatchTrainingJobRequest}[method]

    @FUZZ
    @given(job_id=st.one_of(odd_text, long_text, st.just(blocker[:-1]), st.just(blocker.upper())),
           deadline_s=st.sampled_from([30.0, 30.0, 0.001]))
    def check(job_id, deadline_s):
        TRIED[method] += 1
        request = request_type(job_id=job_id)
        if method == "WatchTrainingJob":
            code, result = outcome(lambda r, timeout: list(client.stub.WatchTrainingJob(r, timeout=timeout)),
                                   request, timeout=deadline_s)
        else:
            code, result = outcome(getattr(client.stub, method), request, timeout=deadline_s)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert deadline_s < 1
            return
        expected = grpc.StatusCode.INVALID_ARGUMENT if job_id == "" else grpc.StatusCode.NOT_FOUND
        assert code == expected, (job_id[:80], code, result)
        assert len(result.details()) <= 512  # a long id is not echoed back whole

    check()


def test_list_model_versions_with_any_deadline(trainer):
    process, client, blocker = trainer
    for deadline_s in (30.0, 0.001, 30.0):
        TRIED["ListModelVersions"] += 1
        code, result = outcome(client.stub.ListModelVersions, trainer_pb2.ListModelVersionsRequest(),
                               timeout=deadline_s)
        assert code == grpc.StatusCode.OK or (code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline_s < 1)


@pytest.mark.parametrize("method", ["StartTraining", "GetTrainingJob", "WatchTrainingJob", "CancelTraining",
                                    "ListModelVersions"])
def test_raw_bytes_never_unknown(trainer, method):
    process, client, blocker = trainer
    if method == "WatchTrainingJob":
        call = client.channel.unary_stream(f"/{TRAINER_SERVICE}/{method}")
        invoke = lambda payload: list(call(payload, timeout=30))  # noqa: E731
    else:
        call = client.channel.unary_unary(f"/{TRAINER_SERVICE}/{method}")
        invoke = lambda payload: call(payload, timeout=30)  # noqa: E731

    @settings(FUZZ, max_examples=EXAMPLES // 2)
    @given(payload=st.one_of(st.binary(max_size=200), st.just(b"\xff\xff\xff"), st.just(b"\x0a\x02\xff\xfe")))
    def check(payload):
        TRIED[f"{method} (raw bytes)"] += 1
        code, result = outcome(invoke, payload)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                        grpc.StatusCode.ALREADY_EXISTS), (payload, code, result)

    check()
    code, result = outcome(invoke, b"\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed request" in result.details()


def test_oversized_request_is_resource_exhausted(trainer):
    process, client, blocker = trainer
    request = trainer_pb2.StartTrainingRequest(
        source=trainer_pb2.DataSource(files=trainer_pb2.FileSource(path="p" * (5 << 20))))
    code, _ = outcome(client.stub.StartTraining, request, timeout=60)
    TRIED["oversized"] += 1
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_watch_streams_are_bounded(trainer):
    """``--max-watchers 3``: three open streams on the running job, the fourth is
    RESOURCE_EXHAUSTED; once one closes, a new one is accepted."""
    process, client, blocker = trainer
    request = trainer_pb2.WatchTrainingJobRequest(job_id=blocker)
    streams = [client.stub.WatchTrainingJob(request, timeout=120) for _ in range(MAX_WATCHERS)]
    try:
        for stream in streams:
            assert next(stream).job_id == blocker  # each is open and got the current state
        code, result = outcome(lambda: next(client.stub.WatchTrainingJob(request, timeout=30)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, result
        assert f"at most {MAX_WATCHERS}" in result.details()
        streams.pop().cancel()

        def accepted() -> bool:
            code, _ = outcome(lambda: next(client.stub.WatchTrainingJob(request, timeout=30)))
            return code == grpc.StatusCode.OK

        wait_until(accepted, "a watch accepted once one closed")
    finally:
        for stream in streams:
            stream.cancel()


def test_the_trainer_still_answers_correctly_afterwards(trainer):
    """Runs last: the held job is still the one running, cancels cleanly, and nothing was
    published by all the input above."""
    process, client, blocker = trainer
    print(f"\ntrainer fuzz inputs tried: {dict(TRIED)} total {sum(TRIED.values())}; "
          f"StartTraining outcomes {dict(CODES)}")
    assert process.process.poll() is None
    assert client.health() == SERVING
    job = client.get(blocker)
    assert job.state == trainer_pb2.JOB_STATE_RUNNING
    os.kill(training_child(process), signal.SIGCONT)
    client.stub.CancelTraining(trainer_pb2.CancelTrainingRequest(job_id=blocker), timeout=30)
    assert client.wait_ended(blocker).state == trainer_pb2.JOB_STATE_CANCELLED
    assert client.stub.ListModelVersions(trainer_pb2.ListModelVersionsRequest(), timeout=30).versions == []
    assert "failed (ref" not in process.log()  # no handler raised an unexpected exception (INTERNAL)
