"""``python -m bench [--quick] [--parts quality,scale,ann,serving,history,live]``: run the benchmarks and write
``docs/benchmarks.md``, ``docs/benchmarks.json`` and ``docs/ann_recall_latency.png``.

A run of some parts only updates those parts in an existing benchmarks.json of the same mode and
rewrites the Markdown from the merged results. ``--quick`` writes to ``bench/results/tmp/quick``
unless ``--out-dir`` says otherwise, never over the real figures in docs/.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench import machine, report
from bench.measures import Stopwatch
from bench.settings import PARTS, REPO_ROOT, full_settings, quick_settings

log = logging.getLogger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small version of each part (a few minutes)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where benchmarks.md/.json and the plot go "
                             "(default docs/; quick: bench/results/tmp/quick)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch space for models and logs (default bench/results/tmp/work[-quick])")
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data sets (default ../shared/data)")
    parser.add_argument("--runs", type=int, default=None, help="repetitions per figure (default 3; quick 1)")
    parser.add_argument("--keep-workdir", action="store_true", help="reuse models already in the workdir")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"unknown part(s) {', '.join(unknown) or '(none)'}; expected some of {', '.join(PARTS)}")
    args.parts = [p for p in PARTS if p in parts]
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def _merge_previous(json_path: Path, quick: bool, results: dict) -> dict:
    """Parts not run now are taken from an earlier benchmarks.json of the same mode."""
    try:
        previous = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return results
    if previous.get("quick") != quick:
        return results
    merged_parts = dict(previous.get("parts", {}))
    merged_parts.update(results["parts"])
    for failed in results["errors"]:
        merged_parts.pop(failed, None)  # never show stale figures for a part that failed now
    load = dict(previous.get("load_average", {}))
    load.update(results["load_average"])
    seconds = dict(previous.get("part_seconds", {}))
    seconds.update(results["part_seconds"])
    finished = dict(previous.get("part_finished_at", {}))
    finished.update(results["part_finished_at"])
    # The machine each part ran on (a file written before this was recorded: the file's machine).
    machines = {part: machine.identity(previous.get("machine", {})) for part in previous.get("parts", {})}
    machines.update(previous.get("part_machine", {}))
    machines.update(results["part_machine"])
    errors = {k: v for k, v in previous.get("errors", {}).items() if k not in results["parts"]}
    errors.update(results["errors"])
    machine_now = dict(results["machine"])
    if previous.get("machine", {}).get("load_average_at_start"):
        # The load at the start of the first run; each part's own load is in ``load_average``.
        machine_now["load_average_at_start"] = previous["machine"]["load_average_at_start"]
    return dict(results, parts=merged_parts, load_average=load, errors=errors, part_seconds=seconds,
                part_finished_at=finished, machine=machine_now,
                part_machine={part: machines[part] for part in merged_parts if part in machines})


def run(args: argparse.Namespace) -> dict:
    overrides = {}
    if args.runs is not None:
        overrides["runs"] = args.runs
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir.resolve()
    settings = quick_settings(**overrides) if args.quick else full_settings(**overrides)
    scratch = REPO_ROOT / "bench" / "results" / "tmp"
    workdir = (args.workdir or scratch / ("work-quick" if args.quick else "work")).resolve()
    if workdir.exists() and not args.keep_workdir:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"quick": settings.quick, "runs": settings.runs, "machine": machine.describe(),
                     "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()},
                     "parts": {}, "errors": {}, "load_average": {}, "part_seconds": {}, "part_finished_at": {},
                     "part_machine": {}}
    started = time.perf_counter()
    for part in args.parts:
        log.info("=== part %s ===", part)
        results["load_average"][part] = machine.load_average()
        with Stopwatch() as sw:
            try:
                results["parts"][part] = _run_part(part, settings, workdir, results)
            except Exception:  # noqa: BLE001 - one failed part must not lose the others' figures
                log.exception("part %s failed", part)
                results["errors"][part] = traceback.format_exc()
        results["part_seconds"][part] = sw.seconds
        results["part_finished_at"][part] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        results["part_machine"][part] = machine.identity(results["machine"])
        log.info("part %s took %.0f s", part, sw.seconds)
    results["wall_seconds"] = time.perf_counter() - started
    results["finished_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return results


def _run_part(part: str, settings, workdir: Path, results: dict) -> dict:
    if part == "quality":
        from bench import quality
        return quality.run(settings, workdir)
    if part == "scale":
        from bench import scale
        return scale.run(settings, workdir)
    if part == "ann":
        from bench import ann
        return ann.run(settings, workdir, _largest_scale_version(workdir, results))
    if part == "serving":
        from bench import serving
        return serving.run(settings, workdir, _largest_scale_version(workdir, results))
    if part == "history":
        from bench import history
        return history.run(settings, workdir)
    if part == "live":
        from bench import live
        return live.run(settings, workdir)
    if part == "tags":
        from bench import tags
        return tags.run(settings, workdir)
    if part == "warm":
        from bench import warm
        return warm.run(settings, workdir)
    if part == "chain":
        from bench import warm
        return warm.chains(settings)
    raise ValueError(part)


def _largest_scale_version(workdir: Path, results: dict) -> Path | None:
    scale = results["parts"].get("scale") or {}
    if scale.get("largest_version_dir"):
        return Path(scale["largest_version_dir"])
    from model_store import list_versions

    for preset in ("full", "medium", "small", "tiny"):  # left by an earlier run with --keep-workdir
        models = workdir / f"scale-{preset}" / "models"
        versions = list_versions(models)
        if versions:
            return models / str(versions[-1])
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = run(args)
    out_dir = (args.out_dir or (REPO_ROOT / "bench" / "results" / "tmp" / "quick" if args.quick
                                else REPO_ROOT / "docs")).resolve()
    if set(args.parts) != set(PARTS):
        results = _merge_previous(out_dir / "benchmarks.json", results["quick"], results)
    json_path, md_path, plot_note = report.write(results, out_dir)
    print(report.summary(results))
    print(f"\nwrote {md_path} and {json_path}" + (f" ({plot_note})" if plot_note else ""))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
