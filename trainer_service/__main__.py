"""``python -m trainer_service COMMAND`` (and the ``musicrec-trainer`` script): see ``cli``."""

import sys

from trainer_service.cli import main

if __name__ == "__main__":
    sys.exit(main())
