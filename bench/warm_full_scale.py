"""A warm retrain against a cold one at full scale, once (not part of ``make bench``: about
seven minutes and 3.5 GiB)::

    python -m bench.warm_full_scale --out warm-full.json --workdir /tmp/warm-full

``bench.warm``'s protocol (+5% new plays: new listeners, new artists, every held-out row) on
``synthetic:full`` with the scale part's 3 epochs and one seed, without the schedule sweep: a base
version trained cold on the data less the new plays, the new plays recorded in a SQLite play log,
then a cold and a warm retrain (the trainer's default warm schedule) of the table plus the log,
each through the whole pipeline. Writes their HR@10, wall and phase seconds, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from bench.settings import full_settings
from bench.warm import TABLE, _load, _record, _train, _write_table, new_plays

SOURCE = "synthetic:full"
EPOCHS = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warm_full_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON result goes")
    parser.add_argument("--workdir", type=Path, required=True, help="scratch space (emptied first)")
    args = parser.parse_args(argv)
    from trainer_service.hyperparameters import Hyperparameters

    settings = full_settings()
    data = _load(SOURCE, settings, 0)
    hp = Hyperparameters(seed=0, epochs=EPOCHS)
    _, new, counts = new_plays(data, 0, settings)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _write_table(work / "base.csv", data, ~new)
    source, url = TABLE.format(path="base.csv"), f"sqlite:///{work / 'plays.db'}"
    base = _train(source, hp, work / "models", work, "none")
    started = time.perf_counter()
    _record(url, data, new)
    record_s = time.perf_counter() - started
    cold = _train(source, hp, work / "cold-models", work, "none", url)
    shutil.rmtree(work / "cold-models")
    shutil.copytree(work / "models", work / "warm-models")
    warm = _train(source, hp, work / "warm-models", work, "newest", url)
    result = {"source": SOURCE, "epochs": EPOCHS, "new": counts, "record_s": record_s, "base": base, "cold": cold,
              "warm": warm, "hr_ratio": warm["hr10"] / cold["hr10"], "time_ratio": warm["wall_s"] / cold["wall_s"],
              "training_ratio": warm["seconds"]["training"] / cold["seconds"]["training"],
              "load_average": os.getloadavg()}
    args.out.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("hr_ratio", "time_ratio", "training_ratio")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
