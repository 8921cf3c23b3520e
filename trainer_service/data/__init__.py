"""Data sources: loaders for files on disk and the built-in synthetic generator.

``parse_source`` / ``DataSourceSpec`` say what to train on, ``load_source`` loads it as
``Interactions``; bad data raises ``DataError`` (a path leaving the data directory
``DataPathError``), whose message names the file, line and column.
"""

from trainer_service.data.coding import check_interactions
from trainer_service.data.errors import DataError, DataPathError
from trainer_service.data.interactions import Interactions
from trainer_service.data.loaders import FORMATS, detect_format, load_files
from trainer_service.data.sources import DataSourceSpec, check_source_paths, load_source, parse_source
from trainer_service.data.synthetic import PRESETS, SyntheticData, generate

__all__ = [
    "FORMATS",
    "PRESETS",
    "DataError",
    "DataPathError",
    "DataSourceSpec",
    "Interactions",
    "SyntheticData",
    "check_interactions",
    "check_source_paths",
    "detect_format",
    "generate",
    "load_files",
    "load_source",
    "parse_source",
]
