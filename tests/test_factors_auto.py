"""Factors chosen from the data (``Hyperparameters.factors`` = ``AUTO_FACTORS``): the density
rule's known answers on either side of its line, explicit factors winning, the resolution in a
real training on the tiny synthetic preset (6,000 interactions of 300 listeners, 20 each: sparse;
the line moved to 20 to reach the dense side without dense data), a warm start that keeps its
base's count, and a job reporting the count its run chose."""

from __future__ import annotations

import logging

import pytest
from conftest import FAST_BUILD
from scripted_trainer import TINY

from model_store import read_manifest
from musicrec.v1 import model_pb2, trainer_pb2
from trainer_service import hyperparameters as hyperparameters_module
from trainer_service import proto_convert
from trainer_service.factors import initial_factors
from trainer_service.cli import build_parser, hyperparameters_from_args
from trainer_service.data import DataSourceSpec
from trainer_service.hyperparameters import (
    AUTO_FACTORS,
    DENSE_DATA_FACTORS,
    DENSE_MIN_PLAYS_PER_LISTENER,
    NOTEBOOK,
    SPARSE_DATA_FACTORS,
    Hyperparameters,
    auto_factors,
)
from trainer_service.jobs import Job
from trainer_service.pipeline import run_training
from trainer_service.training_request import Progress, TrainingOptions, TrainingRequest
from trainer_service.tune import candidates

# Auto factors, few epochs: a tiny run at 96 factors is as quick as the tests' usual 8.
QUICK = Hyperparameters(epochs=2, batch_size=256)
COLD = TrainingOptions(gate="off", warm_start="none")
WARM = TrainingOptions(gate="off", warm_start="newest")


def test_the_density_rule_gives_96_from_100_plays_per_listener_and_64_below():
    assert (DENSE_DATA_FACTORS, SPARSE_DATA_FACTORS, DENSE_MIN_PLAYS_PER_LISTENER) == (96, 64, 100)
    assert Hyperparameters().factors == AUTO_FACTORS == 0 and not Hyperparameters().is_resolved
    # (interactions, listeners): MovieLens small, Last.fm 2K, synthetic tiny, 1/100, 1/10 and full
    # scale, then either side of the line.
    sizes = {(100_836, 610): 96, (92_834, 1_892): 64, (6_000, 300): 64, (175_000, 3_600): 64,
             (1_750_000, 36_000): 64, (17_500_000, 360_000): 64, (10_000, 100): 96, (9_999, 100): 64,
             (25_000_000, 162_000): 96, (5, 0): 64}
    for (interactions, users), factors in sizes.items():
        assert auto_factors(interactions, users) == factors, (interactions, users)
        assert Hyperparameters().resolved(interactions, users).factors == factors
    assert auto_factors(6_000, 300, dense_min_plays_per_listener=20) == 96
    assert auto_factors(6_000, 300, dense_min_plays_per_listener=20.01) == 64


def test_explicit_factors_win_and_a_base_count_decides_auto():
    explicit = Hyperparameters(factors=32)
    assert explicit.is_resolved and explicit.resolved(1_000, 5).factors == 32
    assert explicit.resolved(1_000, 5, base_factors=64) is explicit  # a given count is never replaced
    assert Hyperparameters().resolved(1_000, 5, base_factors=64).factors == 64  # dense data, base's count
    assert Hyperparameters().resolved(1_000, 500, base_factors=96).factors == 96  # sparse data, base's count
    assert NOTEBOOK.resolved(1_000, 5).factors == 32
    resolved = Hyperparameters(epochs=7).resolved(1_000, 5)
    assert resolved == Hyperparameters(epochs=7, factors=96)


def test_unresolved_factors_never_reach_a_trainer_or_a_manifest():
    with pytest.raises(ValueError, match="resolve the hyperparameters first"):
        initial_factors(3, 4, Hyperparameters())
    with pytest.raises(ValueError, match="resolve the hyperparameters first"):
        Hyperparameters().manifest_dict()
    assert Hyperparameters(factors=8).manifest_dict()["factors"] == 8
    with pytest.raises(ValueError, match=r"factors must be in \[0, 1024\], got -1"):
        Hyperparameters(factors=-1)


def test_the_cli_and_a_request_leave_factors_to_the_data_unless_given():
    parser = build_parser()
    base = ["train", "--data", "synthetic:tiny", "--models-dir", "m"]
    assert hyperparameters_from_args(parser.parse_args(base)).factors == AUTO_FACTORS
    assert hyperparameters_from_args(parser.parse_args(base + ["--factors", "0"])).factors == AUTO_FACTORS
    assert hyperparameters_from_args(parser.parse_args(base + ["--factors", "48"])).factors == 48
    assert hyperparameters_from_args(parser.parse_args(base + ["--preset", "notebook"])).factors == 32
    default = DataSourceSpec.synthetic("tiny")
    unset = proto_convert.training_request_from_proto(trainer_pb2.StartTrainingRequest(), default)
    assert unset.hyperparameters.factors == AUTO_FACTORS
    given = proto_convert.training_request_from_proto(
        trainer_pb2.StartTrainingRequest(hyperparameters=model_pb2.Hyperparameters(factors=96)), default)
    assert given.hyperparameters.factors == 96


def test_a_job_reports_the_factors_its_run_chose():
    job = Job.new(TrainingRequest(DataSourceSpec.synthetic("tiny"), Hyperparameters(epochs=2)))
    job.progress = Progress("loading", total_epochs=2)
    assert proto_convert.job_to_proto(job).hyperparameters.factors == 0  # not chosen yet
    job.progress = Progress("training", epoch=1, total_epochs=2, factors=96)
    sent = proto_convert.job_to_proto(job)
    assert sent.hyperparameters.factors == 96 and sent.hyperparameters.epochs == 2
    explicit = Job.new(TrainingRequest(DataSourceSpec.synthetic("tiny"), Hyperparameters(factors=8)))
    explicit.progress = Progress("training", factors=8)
    assert proto_convert.job_to_proto(explicit).hyperparameters.factors == 8


def test_tune_starts_from_the_factors_a_training_would_choose():
    data = TINY.interactions
    drawn = candidates(Hyperparameters().resolved(data.num_interactions, data.num_users), 3)
    assert drawn[0].factors == 64 and all(hp.is_resolved for hp in drawn)


def test_a_training_resolves_auto_factors_on_the_data_it_loaded(models_dir, monkeypatch, caplog):
    data = TINY.interactions
    assert (data.num_interactions, data.num_users) == (6_000, 300)
    caplog.set_level(logging.INFO, logger="trainer_service.pipeline")
    events: list[Progress] = []
    sparse = run_training(data, QUICK, models_dir, build_settings=FAST_BUILD, options=COLD, on_progress=events.append)
    assert sparse.hyperparameters.factors == 64 and sparse.manifest.hyperparameters["factors"] == 64
    assert read_manifest(models_dir / str(sparse.version)).num_factors == 64
    assert "factors: 64, chosen from the data (20 interactions per listener: sparse data)" in caplog.text
    # Every event once the data is loaded carries the count (the first, "loading", comes before).
    assert events[0].phase == "loading" and events[0].factors == 0
    assert {event.factors for event in events[1:]} == {64} and events[-1].phase == "done"

    monkeypatch.setattr(hyperparameters_module, "DENSE_MIN_PLAYS_PER_LISTENER", 20)
    dense = run_training(data, QUICK, models_dir, build_settings=FAST_BUILD, options=COLD)
    assert dense.hyperparameters.factors == 96 and dense.manifest.hyperparameters["factors"] == 96
    assert "factors: 96, chosen from the data (20 interactions per listener: dense data)" in caplog.text
    given = run_training(data, QUICK.with_overrides(factors=8), models_dir, build_settings=FAST_BUILD, options=COLD)
    assert given.hyperparameters.factors == 8 and given.manifest.hyperparameters["factors"] == 8


def test_a_warm_start_keeps_its_base_count_unless_factors_are_given(models_dir, monkeypatch, caplog):
    data = TINY.interactions
    with monkeypatch.context() as patch:  # the data "was dense" when the base was trained: 96 factors
        patch.setattr(hyperparameters_module, "DENSE_MIN_PLAYS_PER_LISTENER", 20)
        base = run_training(data, QUICK, models_dir, build_settings=FAST_BUILD, options=COLD)
    assert base.hyperparameters.factors == 96
    # Auto factors on data the rule calls sparse (64): the run keeps the base's 96 and is warm.
    caplog.set_level(logging.INFO, logger="trainer_service.pipeline")
    warm = run_training(data, QUICK, models_dir, build_settings=FAST_BUILD, options=WARM)
    assert warm.hyperparameters.factors == 96 and warm.manifest.hyperparameters["factors"] == 96
    assert warm.manifest.training.warm_start_from_version == base.version
    assert f"factors: 96, chosen from the data (kept from the warm start's base, version {base.version})" \
        in caplog.text
    # 64 asked for explicitly against a 96-factor base: cold, and the log says why.
    caplog.clear()
    caplog.set_level(logging.INFO, logger="trainer_service.warm_start")
    cold = run_training(data, QUICK.with_overrides(factors=64), models_dir, build_settings=FAST_BUILD, options=WARM)
    assert cold.hyperparameters.factors == 64 and cold.manifest.training.warm_start_from_version == 0
    assert f"cold start: version {warm.version} has 96 factors, this training asks for 64" in caplog.text


def test_the_standby_compiles_ahead_for_the_newest_versions_factors(models_dir):
    """A standby training process compiles the step for the default job's factors: the newest
    version's (a default job warm-starts from it and keeps them), not the unresolved 0, which no
    trainer can build."""
    from trainer_service.bpr import BPRTrainer, _chunk_trainer, reserve_shapes
    from trainer_service.worker import compile_for_newest

    data = TINY.interactions
    run_training(data, QUICK.with_overrides(factors=8), models_dir, build_settings=FAST_BUILD, options=COLD)
    try:
        assert compile_for_newest(str(models_dir)).startswith("the training step compiled for up to 375 users")
        hp = Hyperparameters().resolved(data.num_interactions, data.num_users, base_factors=8)
        step = _chunk_trainer(hp.batch_size, hp.optimizer)
        traced = step.experimental_get_tracing_count()
        with BPRTrainer(data.users, data.artists, data.weights, data.num_users, data.num_artists, hp) as trainer:
            trainer.train_epoch()
            assert trainer.factors().user_factors.shape == (data.num_users, 8)
        assert step.experimental_get_tracing_count() == traced  # the step compiled ahead ran it
    finally:
        reserve_shapes(None)
