"""``python -m trainer_service COMMAND`` (and the ``musicrec-trainer`` script): see ``cli``."""

import sys

from musicrec.process_lifetime import exit_without_teardown
from trainer_service import cli


def main() -> int:
    """Run the command, then end the process without the interpreter's teardown.

    When ``cli.main`` returns, the command's work is finished and durable (a publish is fsynced
    before it returns; a local cluster's tasks and the job's children are stopped by then), and
    what is left is tearing down a process that has imported TensorFlow: a good part of a second
    of a small ``train`` command's wall time, spent after the version is published. So the
    output is flushed and the process exits at once, as the trainer's worker process and
    training tasks do (``trainer_service.worker``). A command that fails with an exception exits
    the usual way, with its traceback."""
    exit_without_teardown(cli.main())


if __name__ == "__main__":
    sys.exit(main())
