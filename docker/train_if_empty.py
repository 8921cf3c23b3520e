"""First training for a new deployment: train and publish one version only when none exists yet.

    python train_if_empty.py [--models-dir /models] [--data synthetic:small] [--data-dir /data]

Used by the compose file's one-shot ``init`` service, so that ``docker compose up`` alone ends
with a serving pair while a restart (or a volume that already holds models) trains nothing.
When the models directory holds no published version, this process becomes
``python -m trainer_service train --data DATA --models-dir DIR [--data-dir D]`` (exec: its exit status and
signals are the trainer's own). Defaults come from ``$MUSICREC_MODELS_DIR`` and
``$MUSICREC_INIT_DATA``.
"""

from __future__ import annotations

import argparse
import os
import sys

from model_store import list_versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train one model version unless one is published")
    parser.add_argument("--models-dir", default=os.environ.get("MUSICREC_MODELS_DIR", "/models"))
    parser.add_argument("--data", default=os.environ.get("MUSICREC_INIT_DATA", "synthetic:small"),
                        help="data source for the first training (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="directory that file data sources are relative to (passed to the trainer)")
    args = parser.parse_args(argv)

    versions = list_versions(args.models_dir)
    if versions:
        print(f"{args.models_dir} already holds version(s) {versions}: no first training needed", flush=True)
        return 0
    print(f"{args.models_dir} holds no model version: training one on {args.data}", flush=True)
    command = [sys.executable, "-m", "trainer_service", "train", "--data", args.data, "--models-dir", args.models_dir]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    os.execv(sys.executable, command)
    return 1  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
