"""The quality gate's rules with known answers (pure: no training), and the manifest's optional
``training`` section that records its decision."""

from __future__ import annotations

import dataclasses

import pytest

from model_store import read_manifest
from model_store.format import Manifest, ManifestError, TrainingRecord
from musicrec.rpc.errors import FailedPrecondition
from trainer_service.quality_gate import GateDecision, QualityGateRefused, decide, source_kind

SYNTHETIC = "synthetic small (seed 3)"
LASTFM = "HetRec 2011 Last.fm files in lastfm-2k"


def metrics(model: float, popularity: float = 0.08, users: int = 1000) -> dict[str, float | int]:
    return {"hit_rate_at_10": model, "popularity_hit_rate_at_10": popularity, "evaluated_users": users}


@pytest.fixture
def newest(tiny_artifacts, publish) -> Manifest:
    """A published version 1 on Last.fm 2K with HR@10 0.20."""
    return publish(tiny_artifacts, data_source=LASTFM, metrics={"hit_rate_at_10": 0.20, "evaluated_users": 4})


def test_source_kind_drops_only_the_synthetic_seed():
    assert source_kind("synthetic small (seed 3)") == source_kind("synthetic small (seed -12)") == "synthetic small"
    assert source_kind("synthetic small (seed 3)") != source_kind("synthetic tiny (seed 3)")
    assert source_kind(LASTFM) == LASTFM
    assert source_kind(LASTFM) != source_kind("MovieLens files in movielens-small")


def test_a_model_not_above_popularity_is_refused_with_both_figures():
    decision = decide(metrics(0.062, 0.078, 1234), SYNTHETIC, None)
    assert not decision.passed and not decision.publishes
    assert "0.0620" in decision.reason and "0.0780" in decision.reason and "1,234" in decision.reason
    assert not decide(metrics(0.078, 0.078), SYNTHETIC, None).passed  # equal is not above
    assert decide(metrics(0.079, 0.078), SYNTHETIC, None).passed


def test_no_previous_version_only_popularity_counts():
    decision = decide(metrics(0.10), LASTFM, None)
    assert decision.passed and decision.previous_version == 0
    assert "previous_version" not in decision.figures()


def test_more_than_ten_percent_below_the_newest_version_of_the_same_kind_is_refused(newest):
    assert newest.model_version == 1
    refused = decide(metrics(0.179), LASTFM, newest)  # 0.9 * 0.20 = 0.18
    assert not refused.passed
    assert "0.1790" in refused.reason and "0.2000" in refused.reason and "version 1" in refused.reason
    assert refused.figures()["previous_hit_rate_at_10"] == 0.20 and refused.figures()["previous_version"] == 1
    passed = decide(metrics(0.181), LASTFM, newest)
    assert passed.passed and passed.previous_version == 1 and "0.2000" in passed.reason
    assert decide(metrics(0.25), LASTFM, newest).passed  # better is fine
    # A custom bound.
    assert decide(metrics(0.15), LASTFM, newest, max_relative_drop=0.3).passed


def test_another_kind_of_source_is_not_compared(newest):
    decision = decide(metrics(0.10), "MovieLens files in movielens-small", newest)
    assert decision.passed and decision.previous_version == 0


def test_gate_off_publishes_but_keeps_the_verdict():
    decision = decide(metrics(0.05), SYNTHETIC, None, mode="off")
    assert not decision.passed and decision.publishes and decision.mode == "off"
    with pytest.raises(ValueError):
        decide(metrics(0.05), SYNTHETIC, None, mode="maybe")


def test_the_refusal_is_a_failed_precondition_whose_message_has_both_figures():
    decision = decide(metrics(0.062, 0.078), SYNTHETIC, None)
    error = QualityGateRefused(decision)
    assert isinstance(error, FailedPrecondition) and error.code_name == "FAILED_PRECONDITION"
    assert error.decision is decision
    assert "0.0620" in str(error) and "0.0780" in str(error) and "nothing was published" in str(error)


def test_the_training_section_round_trips_and_is_optional(tiny_artifacts, publish, models_dir):
    decision: GateDecision = decide(metrics(0.05), SYNTHETIC, None, mode="off")
    record = TrainingRecord(gate_mode="off", gate_passed=decision.passed, gate_reason=decision.reason,
                            gate_figures=decision.figures(), epochs_planned=200, epochs_trained=120, best_epoch=90,
                            early_stopping_patience=3, best_validation_hit_rate_at_10=0.21, final_fit="all",
                            final_fit_epochs=90)
    published = publish(tiny_artifacts, training=record)
    assert published.training == record
    assert read_manifest(models_dir / str(published.model_version)).training == record
    plain = publish(tiny_artifacts)
    assert plain.training is None and "training" not in plain.to_json()
    assert read_manifest(models_dir / str(plain.model_version)).training is None
    data = published.to_json()
    data["training"]["gate"]["mode"] = "sometimes"
    with pytest.raises(ManifestError, match="training.gate.mode"):
        Manifest.from_json(data)
    data = published.to_json()
    del data["training"]["epochs"]["best"]
    with pytest.raises(ManifestError, match="training.epochs.best"):
        Manifest.from_json(data)
    assert Manifest.from_json(dataclasses.replace(published, training=None).to_json()).training is None


def test_the_warm_start_section_round_trips_and_reads_manifests_without_folded_counts(tiny_artifacts, publish):
    decision: GateDecision = decide(metrics(0.05), SYNTHETIC, None, mode="off")
    record = TrainingRecord(gate_mode="off", gate_passed=decision.passed, gate_reason=decision.reason,
                            gate_figures=decision.figures(), epochs_planned=5, epochs_trained=5, best_epoch=5,
                            warm_start_from_version=3, warm_start_known_users=10, warm_start_known_artists=20,
                            warm_start_folded_users=2, warm_start_folded_artists=1, warm_start_learning_rate=0.03)
    published = publish(tiny_artifacts, training=record)
    data = published.to_json()
    assert data["training"]["warm_start"] == {"from_version": 3, "known_users": 10, "known_artists": 20,
                                              "folded_users": 2, "folded_artists": 1, "learning_rate": 0.03}
    assert Manifest.from_json(data).training == record
    # Written before the fold-in was recorded: no folded counts, read as 0.
    del data["training"]["warm_start"]["folded_users"], data["training"]["warm_start"]["folded_artists"]
    assert Manifest.from_json(data).training == dataclasses.replace(record, warm_start_folded_users=0,
                                                                    warm_start_folded_artists=0)
    data["training"]["warm_start"]["folded_users"] = -1
    with pytest.raises(ManifestError, match="training.warm_start.folded_users"):
        Manifest.from_json(data)


def test_the_warm_start_section_records_the_chain_root_when_known(tiny_artifacts, publish):
    decision: GateDecision = decide(metrics(0.05), SYNTHETIC, None, mode="off")
    record = TrainingRecord(gate_mode="off", gate_passed=decision.passed, gate_reason=decision.reason,
                            gate_figures=decision.figures(), epochs_planned=2, epochs_trained=2, best_epoch=2,
                            warm_start_from_version=7, warm_start_known_users=10, warm_start_known_artists=20,
                            warm_start_learning_rate=0.03, warm_start_cold_version=5,
                            warm_start_cold_interactions=1234, warm_start_chain_length=2)
    data = publish(tiny_artifacts, training=record).to_json()
    section = data["training"]["warm_start"]
    assert (section["cold_version"], section["cold_interactions"], section["chain_length"]) == (5, 1234, 2)
    assert Manifest.from_json(data).training == record
    # Written before chains were recorded: read as 0 (unknown).
    del section["cold_version"], section["cold_interactions"], section["chain_length"]
    assert Manifest.from_json(data).training == dataclasses.replace(record, warm_start_cold_version=0,
                                                                    warm_start_cold_interactions=0,
                                                                    warm_start_chain_length=0)
    data["training"]["warm_start"]["cold_interactions"] = "many"
    with pytest.raises(ManifestError, match="training.warm_start.cold_interactions"):
        Manifest.from_json(data)
