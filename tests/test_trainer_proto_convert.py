"""Conversions between the trainer's protos and its domain objects."""

from __future__ import annotations

import pytest

from musicrec.rpc.errors import InvalidArgument
from musicrec.v1 import model_pb2, trainer_pb2
from trainer_service import proto_convert
from trainer_service.data import FORMATS, PRESETS, DataSourceSpec
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.jobs import Job, JobState
from trainer_service.training_request import Progress, TrainingOptions, TrainingRequest


@pytest.mark.parametrize("message, spec", [
    (trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=trainer_pb2.SYNTHETIC_SIZE_TINY, seed=7)),
     DataSourceSpec.synthetic("tiny", 7)),
    (trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource()), DataSourceSpec.synthetic("small", 0)),
    (trainer_pb2.DataSource(files=trainer_pb2.FileSource(path="lastfm-2k", format=trainer_pb2.DATA_FORMAT_HETREC)),
     DataSourceSpec.files("lastfm-2k", "hetrec")),
    (trainer_pb2.DataSource(files=trainer_pb2.FileSource(
        path="plays.csv", format=trainer_pb2.DATA_FORMAT_TABLE, user_column="u", artist_column="a",
        weight_column="plays", artists_path="artists.csv", name_column="title")),
     DataSourceSpec.files("plays.csv", "table", user_column="u", artist_column="a", weight_column="plays",
                          artists_path="artists.csv", name_column="title")),
])
def test_sources_round_trip(message, spec):
    assert proto_convert.source_from_proto(message) == spec
    assert proto_convert.source_from_proto(proto_convert.source_to_proto(spec)) == spec


def test_every_proto_enum_value_has_a_domain_name_and_back():
    # A value added to the proto without a mapping fails here, not in a client's request.
    assert set(proto_convert.SIZE_FROM_PROTO) == set(trainer_pb2.SyntheticSize.values())
    assert set(proto_convert.FORMAT_FROM_PROTO) == set(trainer_pb2.DataFormat.values())
    assert set(proto_convert.STATE_TO_PROTO.values()) == set(trainer_pb2.JobState.values()) - {
        trainer_pb2.JOB_STATE_UNSPECIFIED}
    # ... and every domain name has its value: each preset, each format, each state.
    assert set(proto_convert.SIZE_TO_PROTO) == set(PRESETS)
    assert set(proto_convert.FORMAT_TO_PROTO) == set(FORMATS)
    assert set(proto_convert.STATE_TO_PROTO) == set(JobState)
    assert proto_convert.SIZE_FROM_PROTO[trainer_pb2.SYNTHETIC_SIZE_FULL] == "full"
    assert proto_convert.FORMAT_FROM_PROTO[trainer_pb2.DATA_FORMAT_MOVIELENS] == "movielens"
    for value, name in proto_convert.SIZE_FROM_PROTO.items():
        spec = proto_convert.source_from_proto(trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=value)))
        assert spec.size == (name or "small")


def test_an_unset_source_means_the_default_and_bad_ones_are_invalid_argument():
    assert proto_convert.source_from_proto(trainer_pb2.DataSource()) is None
    with pytest.raises(InvalidArgument, match="size"):
        proto_convert.source_from_proto(trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=99)))
    with pytest.raises(InvalidArgument, match="column options"):
        proto_convert.source_from_proto(trainer_pb2.DataSource(files=trainer_pb2.FileSource(
            path="x", format=trainer_pb2.DATA_FORMAT_HETREC, user_column="u")))
    with pytest.raises(InvalidArgument, match="path"):
        proto_convert.source_from_proto(trainer_pb2.DataSource(files=trainer_pb2.FileSource()))


def test_only_the_set_hyperparameters_are_overrides():
    assert proto_convert.overrides_from_proto(model_pb2.Hyperparameters()) == {}
    assert proto_convert.overrides_from_proto(model_pb2.Hyperparameters(epochs=0, learning_rate=0.5)) == {
        "epochs": 0, "learning_rate": 0.5}


def test_job_to_proto():
    job = Job.new(TrainingRequest(DataSourceSpec.synthetic("tiny", 1),
                                  Hyperparameters(factors=8, epochs=2, learning_rate=0.05, optimizer="sgd")))
    job.transition(JobState.RUNNING)
    job.progress = Progress("training", epoch=1, total_epochs=2, loss=0.5)
    job.metrics = {"auc": 0.9, "evaluated_users": 12, "something_new": 1.0}
    message = proto_convert.job_to_proto(job)
    assert message.state == trainer_pb2.JOB_STATE_RUNNING and message.job_id == job.job_id
    assert message.source.synthetic.size == trainer_pb2.SYNTHETIC_SIZE_TINY and message.source.synthetic.seed == 1
    assert message.hyperparameters.factors == 8 and message.hyperparameters.learning_rate == 0.05
    assert message.progress.epoch == 1 and message.progress.loss == 0.5
    assert message.metrics.auc == 0.9 and message.metrics.evaluated_users == 12
    assert message.HasField("started_at") and not message.HasField("finished_at")
    assert message.started_at.ToNanoseconds() == pytest.approx(job.started_at * 1e9, abs=1e3)
    job.published_version = 3
    job.transition(JobState.SUCCEEDED)
    done = proto_convert.job_to_proto(job)
    assert done.state == trainer_pb2.JOB_STATE_SUCCEEDED and done.published_version == 3
    assert done.HasField("finished_at")
    assert done.hyperparameters.epochs == 2 and done.hyperparameters.seed == 0


def test_training_options_from_and_to_proto():
    defaults = TrainingOptions()
    assert proto_convert.options_from_proto(trainer_pb2.TrainingOptions()) == defaults  # unset: the defaults
    assert set(proto_convert.GATE_FROM_PROTO) == set(trainer_pb2.QualityGate.values())
    assert set(proto_convert.FINAL_FIT_FROM_PROTO) == set(trainer_pb2.FinalFit.values())
    options = TrainingOptions(gate="off", final_fit="all", patience=4)
    message = proto_convert.options_to_proto(options)
    assert (message.gate, message.final_fit, message.patience) == (
        trainer_pb2.QUALITY_GATE_OFF, trainer_pb2.FINAL_FIT_ALL, 4)
    assert proto_convert.options_from_proto(message) == options
    assert proto_convert.options_from_proto(trainer_pb2.TrainingOptions(patience=0)).patience == 0
    for bad in (trainer_pb2.TrainingOptions(patience=-1), trainer_pb2.TrainingOptions(patience=5000),
                trainer_pb2.TrainingOptions(gate=99), trainer_pb2.TrainingOptions(final_fit=99)):
        with pytest.raises(InvalidArgument, match="invalid options"):
            proto_convert.options_from_proto(bad)
    job = Job.new(TrainingRequest(DataSourceSpec.synthetic("tiny", 1), Hyperparameters(epochs=2), options))
    job.progress = Progress("training", epoch=2, total_epochs=2, best_epoch=1)
    sent = proto_convert.job_to_proto(job)
    assert sent.options == message and sent.progress.best_epoch == 1


def test_a_start_request_becomes_one_resolved_training_request():
    default = DataSourceSpec.synthetic("small")
    request = proto_convert.training_request_from_proto(trainer_pb2.StartTrainingRequest(), default)
    assert request == TrainingRequest(default, Hyperparameters(), TrainingOptions())
    asked = trainer_pb2.StartTrainingRequest(
        source=trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=trainer_pb2.SYNTHETIC_SIZE_TINY,
                                                                            seed=3)),
        hyperparameters=model_pb2.Hyperparameters(epochs=7, learning_rate=0.5),
        options=trainer_pb2.TrainingOptions(gate=trainer_pb2.QUALITY_GATE_OFF, patience=2))
    request = proto_convert.training_request_from_proto(asked, default)
    assert request.source == DataSourceSpec.synthetic("tiny", seed=3)
    assert request.hyperparameters == Hyperparameters(epochs=7, learning_rate=0.5)
    assert request.options == TrainingOptions(gate="off", patience=2)
    with pytest.raises(InvalidArgument, match=r"invalid hyperparameters: epochs must be in \[1, 10000\], got 0"):
        proto_convert.training_request_from_proto(
            trainer_pb2.StartTrainingRequest(hyperparameters=model_pb2.Hyperparameters(epochs=0)), default)


def test_warm_start_and_the_play_log_from_proto():
    assert set(proto_convert.WARM_START_FROM_PROTO) == set(trainer_pb2.WarmStart.values())
    assert set(proto_convert.PLAY_LOG_FROM_PROTO) == set(trainer_pb2.PlayLogUse.values())
    default = DataSourceSpec.synthetic("small")
    unset = trainer_pb2.StartTrainingRequest()
    # Unset: the trainer's default (its --warm-start), and the play log when the trainer has one.
    request = proto_convert.training_request_from_proto(unset, default, "newest")
    assert request.options.warm_start == "newest" and request.play_log == "default"
    assert proto_convert.training_request_from_proto(unset, default, "none").options.warm_start == "none"
    asked = trainer_pb2.StartTrainingRequest(options=trainer_pb2.TrainingOptions(warm_start=trainer_pb2.WARM_START_NONE),
                                             play_log=trainer_pb2.PLAY_LOG_USE_EXCLUDE)
    request = proto_convert.training_request_from_proto(asked, default, "newest")
    assert request.options.warm_start == "none" and request.play_log == "exclude"
    include = trainer_pb2.StartTrainingRequest(play_log=trainer_pb2.PLAY_LOG_USE_INCLUDE)
    assert proto_convert.training_request_from_proto(include, default).play_log == "include"
    message = proto_convert.options_to_proto(TrainingOptions(warm_start="newest"))
    assert message.warm_start == trainer_pb2.WARM_START_NEWEST
    assert proto_convert.options_from_proto(message).warm_start == "newest"
    with pytest.raises(InvalidArgument, match="unknown warm start 9"):
        proto_convert.options_from_proto(trainer_pb2.TrainingOptions(warm_start=9))
    with pytest.raises(InvalidArgument, match="unknown play_log 7"):
        proto_convert.training_request_from_proto(trainer_pb2.StartTrainingRequest(play_log=7), default)
    job = Job.new(TrainingRequest(default, play_log="exclude"))
    assert proto_convert.job_to_proto(job, play_log=True).play_log
    assert not proto_convert.job_to_proto(job).play_log
