"""Tying a child process's life to its parent's: the one place that asks Linux for PR_SET_PDEATHSIG
(``die_with_parent`` in the child's own main, or ``tied_argv`` for a command that cannot call it);
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
from collections.abc import Sequence
from typing import NoReturn

# From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL, *, parent_pid: int | None = None) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies. Linux only;
    elsewhere a no-op. Returns whether the request was made.

    Call it first thing in the child's main (or start the child with ``tied_argv``); never from a
    ``preexec_fn`` in a process that uses gRPC (see ``tied_argv``). The signal follows the death
    of the parent *thread* that started the child, so start it from a long-lived thread.
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


# The child's first step (``python -S -E -c``: no site, no environment, only the standard library,
# about half a plain interpreter's start): tie, check the parent, exec. argv: PARENT SIGNAL COMMAND...
_TIE_AND_EXEC = """\
import os, sys
parent, signum, command = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(%d, signum, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)
try:
    os.execvp(command[0], command)
except OSError as exc:
    sys.stderr.write(f"cannot run {command[0]}: {exc.strerror}\\n")
    os._exit(127)
""" % _PR_SET_PDEATHSIG


def tied_argv(argv: Sequence[str], signum: int = signal.SIGTERM, *, parent_pid: int | None = None) -> list[str]:
    """``argv`` run so that it gets ``signum`` when this process's starting thread dies: a short
    Python step in the child asks for PR_SET_PDEATHSIG, checks it was not orphaned already, then
    ``exec``s ``argv`` in place (same pid, same descriptors, PR_SET_PDEATHSIG kept across exec);
    a command that cannot be run exits 127 with a one-line reason. ``parent_pid``: the parent the
    child must still have (default: this process).

    The tie is made in the child's first milliseconds, after ``Popen`` has returned: the starting
    thread must outlive that (a long-lived thread does); the parent process dying meanwhile is
    caught by the parent check.

    Why not a ``preexec_fn``: it makes ``subprocess`` fork instead of vfork, and since grpcio 1.80
    a forked child of a process with gRPC threads restarts gRPC's poller, whose epoll descriptor
    ``close_fds`` then closes: the child aborts (SIGABRT, "Epoll1Poller ... epoll_wait error: Bad
    file descriptor") before it ever execs (grpc/grpc#43055; ``scripts/fork_abort_repro.py``).
    Without a ``preexec_fn`` (``start_new_session`` is fine) ``subprocess`` uses vfork, which runs
    no fork handlers."""
    parent = os.getpid() if parent_pid is None else int(parent_pid)
    return [sys.executable, "-S", "-E", "-c", _TIE_AND_EXEC, str(parent), str(int(signum)), *argv]


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
