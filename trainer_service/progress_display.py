"""What a person watching a training run sees: a live progress bar on a terminal, one line per
phase otherwise (logs, CI, pipes).

``ProgressDisplay`` is an ``on_progress`` callback for ``trainer_service.training_request.Progress``
events, or anything with their fields (the launcher passes the trainer service's
``TrainingProgress``; the pipeline itself stays free of display code). On a terminal the training and
refitting phases draw a ``tqdm`` bar (epoch, ETA, loss, samples/s, the last validation HR@10 and
the best epoch so far); the other phases print a line each. Elsewhere each phase prints one line
when it starts, and training one summary line when it ends, so a run of many epochs writes a handful
of lines, not one per epoch.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the display reads a Progress's fields; importing it would load the pipeline
    from trainer_service.training_request import Progress

_PHASE_TEXT = {
    "loading": "loading the data",
    "training": "training",
    "evaluating": "evaluating (leave-one-out, then the quality gate)",
    "refitting": "refitting on every interaction (final fit)",
    "publishing": "building the indexes and publishing",
}
_EPOCH_PHASES = ("training", "refitting")


def _rate(samples_per_second: float) -> str:
    return f"{samples_per_second / 1e6:.2f}M samples/s"


class ProgressDisplay:
    """Shows ``Progress`` events on ``stream`` (default stderr): call it with each event, then
    ``close()`` (or use ``with``). ``bar``: draw a progress bar (default: when ``stream`` is a
    terminal); ``quiet``: show nothing; ``indent``: prefix of every line."""

    def __init__(self, stream: TextIO | None = None, *, bar: bool | None = None, quiet: bool = False,
                 indent: str = ""):
        self._stream = stream if stream is not None else sys.stderr
        self._bar_mode = (self._stream.isatty() if hasattr(self._stream, "isatty") else False) if bar is None else bar
        self._quiet = quiet
        self._indent = indent
        self._bar = None
        self._phase = ""
        self._phase_started = 0.0
        self._last: "Progress | None" = None
        self._last_validation: float | None = None

    def __call__(self, event: "Progress") -> None:
        if self._quiet:
            return
        if event.phase != self._phase:
            self._end_phase()
            self._start_phase(event)
        if event.phase in _EPOCH_PHASES and event.epoch:
            if event.metrics:
                self._last_validation = float(event.metrics["hit_rate_at_10"])
            self._last = event
            if self._bar is not None:
                self._bar.total = event.total_epochs
                self._bar.update(event.epoch - self._bar.n)
                postfix = {"loss": f"{event.loss:.4f}", "rate": _rate(event.samples_per_second)}
                if self._last_validation is not None:
                    postfix["val HR@10"] = f"{self._last_validation:.4f}"
                if event.best_epoch:
                    postfix["best"] = event.best_epoch
                self._bar.set_postfix(postfix, refresh=False)

    def _write(self, text: str) -> None:
        line = self._indent + text
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def _start_phase(self, event: "Progress") -> None:
        self._phase = event.phase
        self._phase_started = time.monotonic()
        self._last, self._last_validation = None, None
        if event.phase not in _PHASE_TEXT:
            return
        if event.phase in _EPOCH_PHASES and self._bar_mode:
            from tqdm import tqdm

            self._bar = tqdm(total=event.total_epochs, desc=self._indent + event.phase, unit="epoch",
                             file=self._stream, dynamic_ncols=True, leave=True)
            return
        suffix = f" ({event.total_epochs} epochs at most)" if event.phase in _EPOCH_PHASES else ""
        self._write(f"{_PHASE_TEXT[event.phase]}{suffix}...")

    def _end_phase(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        last = self._last
        if self._phase in _EPOCH_PHASES and last is not None:
            line = (f"{self._phase}: {last.epoch}/{last.total_epochs} epochs in "
                    f"{time.monotonic() - self._phase_started:.1f} s, loss {last.loss:.4f}, "
                    f"{_rate(last.samples_per_second)}")
            if self._last_validation is not None:
                line += f", last validation HR@10 {self._last_validation:.4f}"
            if last.best_epoch:
                line += f", best epoch {last.best_epoch}"
            self._write(line)

    def close(self) -> None:
        """End the current phase (closing a bar)."""
        self._end_phase()
        self._phase = ""

    def __enter__(self) -> "ProgressDisplay":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
