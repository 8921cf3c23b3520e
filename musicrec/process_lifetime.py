"""Tying a child process's life to its parent's: the one place that asks Linux for PR_SET_PDEATHSIG;
and ending a service's process once its work is done (``exit_without_teardown``).

Used by every process that starts children which must not outlive it: the process harness
(``launcher.processes``: the launcher's, the tests' and the benchmark's services), the index
supervisor's workers (``index_service.supervisor``), the trainer's training process
(``trainer_service.worker``) and the distributed trainer's tasks. An orphan would keep a port bound, or
publish a model behind a restarted trainer's back.

No imports beyond the standard library: the index supervisor stays free of numpy and gRPC.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import NoReturn

# From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL, *, parent_pid: int | None = None) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies. Linux only;
    elsewhere a no-op. Returns whether the request was made.

    Call it in the child (a ``preexec_fn``, or first thing in a process's main). The signal
    follows the death of the parent *thread* that forked, so fork from a long-lived thread.
    ``parent_pid``: the parent as the child knows it; if the child has already been re-parented
    (the parent died before the call), ``signum`` is sent to this process at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)
    return True


def exit_without_teardown(status: int) -> NoReturn:
    """End this process with ``status``: logging shut down and the standard streams flushed, then
    ``os._exit``, without the interpreter's teardown.

    For a service's main once it has returned: its work is finished and durable by then (a
    publish fsynced, a play committed before it was acknowledged, children stopped). The teardown
    would only cost time (TensorFlow's, in the trainer) and run into gRPC's own threads: a process
    that had built a gRPC server could end by SIGABRT ("epoll_wait error: Bad file descriptor"
    from gRPC's poller) instead of its status, as an index refusing to start on an unreadable TLS
    key once did under the test suite."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to write to
            pass
    os._exit(status)
