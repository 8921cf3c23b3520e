"""``make run``: both services on localhost as child processes, a model trained if needed, live
answers printed (``python -m launcher``).

The top layer of the tree: it starts the services as processes (``launcher.processes``, the one
child-process harness, which the tests and the benchmark use too) and talks to them only over
gRPC (``launcher.demo``). Nothing below imports it.
"""


class LaunchError(Exception):
    """Startup failed; the message says why (printed without a traceback)."""


def say(text: str = "") -> None:
    """One line of the launcher's output, flushed at once (a pipe sees it while it waits)."""
    print(text, flush=True)
