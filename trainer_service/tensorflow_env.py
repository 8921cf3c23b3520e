"""Process settings that must be in place before TensorFlow is imported (``prepare()``).

- ``TF_CPP_MIN_LOG_LEVEL=2``: TF's C++ start-up INFO lines would drown the trainer's log.
- ``TF_ENABLE_ONEDNN_OPTS=0``: the option only concerns TF's own CPU kernels (matmul, conv),
  which the XLA-compiled model does not use; oneDNN's start-up line ignores the log level.
- ``TF_USE_LEGACY_KERAS=1``: ``import tensorflow`` otherwise imports Keras 3 eagerly (its
  optimizers, and through them matplotlib where it is installed): about a third of the import
  time, paid by every training job's process, for a library the trainer never uses (bpr.py says
  why). With the variable set TensorFlow tries ``tf_keras`` instead and, when that package is
  absent (it is not a dependency), skips the import. ``tf.keras`` is then unavailable in the
  process, which nothing here uses.

Each is a default: a value set in the environment wins.
"""

from __future__ import annotations

import os

_DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "TF_USE_LEGACY_KERAS": "1",
}


def prepare() -> None:
    """Set the defaults above in ``os.environ`` (call before the first ``import tensorflow``)."""
    for name, value in _DEFAULTS.items():
        os.environ.setdefault(name, value)
