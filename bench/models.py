"""The trained models the ANN and serving parts measure, built once per benchmark run.

The Last.fm 2K model is trained and published exactly as the trainer does it
(``trainer_service.pipeline.run_training`` with the default hyperparameters, HetRec files, all
interactions), into ``WORKDIR/lastfm-models``; later parts reuse it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bench.settings import BenchSettings
from model_store import list_versions

log = logging.getLogger(__name__)

LASTFM = "lastfm-2k"


def data_path(settings: BenchSettings, name: str) -> Path:
    """``data_dir/name``; raises FileNotFoundError with a clear message when it is missing."""
    path = settings.data_dir / name
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found (the shared data sets live in ../shared/data beside the repo)")
    return path


def present_datasets(settings: BenchSettings, names) -> tuple[list[str], list[str]]:
    """The ``names`` found under ``data_dir``, and a note for each one skipped."""
    found, notes = [], []
    for name in names:
        try:
            data_path(settings, name)
        except FileNotFoundError as exc:
            notes.append(f"{name} skipped: {exc}")
        else:
            found.append(name)
    return found, notes


def publish_trained(models_dir: Path, source_text: str, settings: BenchSettings, *, epochs: int | None = None,
                    build_settings=None, **overrides) -> Path:
    """Train with the trainer's pipeline on ``source_text`` (the trainer's data-source syntax,
    relative to ``settings.data_dir``) and publish into ``models_dir``; the version's directory.
    ``build_settings``: the publish's ``ranking.BuildSettings`` (None: the trainer's)."""
    from trainer_service.data import parse_source
    from trainer_service.hyperparameters import Hyperparameters
    from trainer_service.pipeline import TrainingOptions, run_training

    hp = Hyperparameters()
    if epochs is not None:
        overrides["epochs"] = epochs
    if overrides:
        hp = hp.with_overrides(**overrides)
    # The gate off: quick runs train a few epochs (below popularity on purpose, to stay quick), and
    # the serving benchmarks need a model whatever its quality.
    result = run_training(parse_source(source_text), hp, os.fspath(models_dir), data_dir=os.fspath(settings.data_dir),
                          options=TrainingOptions(gate="off"), build_settings=build_settings)
    return models_dir / str(result.manifest.model_version)


def lastfm_version(workdir: Path, settings: BenchSettings) -> Path:
    """The published Last.fm 2K model (default hyperparameters; fewer epochs in quick mode),
    trained on first use and reused by later parts of the same run."""
    models_dir = workdir / "lastfm-models"
    versions = list_versions(models_dir)
    if versions:
        return models_dir / str(versions[-1])
    data_path(settings, LASTFM)
    log.info("training the Last.fm 2K model for the ANN and serving parts")
    from ranking import BuildSettings

    # With its Annoy indexes, measured as on any catalog: the trainer builds none for a catalog
    # this small (ranking.ann_build.EXACT_ONLY_UP_TO; both searches exact), but the ANN and tags
    # parts measure Annoy here (the measurement picks exact to serve at this size: docs/benchmarks.md,
    # part 3).
    return publish_trained(models_dir, f"hetrec:{LASTFM}", settings, epochs=settings.quality_epochs,
                           build_settings=BuildSettings(exact_only_up_to=0))
