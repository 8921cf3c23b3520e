"""musicrec.process_lifetime: a process ended without the interpreter's teardown still delivers
its exit status, its buffered output and its log lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import atexit, logging, sys
    from musicrec.process_lifetime import exit_without_teardown
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(message)s")
    atexit.register(lambda: print("teardown ran", flush=True))
    print("buffered line")  # a pipe: block-buffered until flushed
    logging.getLogger("x").error("a log line")
    exit_without_teardown(3)
""")


def test_exit_without_teardown_keeps_the_status_the_output_and_the_log():
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "buffered line\n"  # flushed; the atexit handler (teardown) never ran
    assert done.stderr == "ERROR a log line\n"
