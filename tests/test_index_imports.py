"""The index service stays light: numpy and Annoy, never TensorFlow or pandas."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import index_service.__main__, index_service.app, index_service.servicer, index_service.watcher
heavy = sorted(m for m in ("tensorflow", "pandas", "keras", "pyarrow") if m in sys.modules)
print(",".join(heavy))
"""


def test_index_service_never_imports_tensorflow_or_pandas():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "", f"index_service imported {result.stdout.strip()}"


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "index_service", "--help"], capture_output=True, text=True,
                            check=True, timeout=120)
    for flag in ("--models-dir", "--port", "--host", "--poll-interval", "--version", "--tls-cert", "--tls-key",
                 "--grace", "--log-level"):
        assert flag in result.stdout


def test_cli_rejects_bad_arguments(tmp_path):
    for args in (["--poll-interval", "0"], ["--version", "0"], ["--tls-cert", "c.pem"]):
        result = subprocess.run([sys.executable, "-m", "index_service", "--models-dir", str(tmp_path), *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, args
