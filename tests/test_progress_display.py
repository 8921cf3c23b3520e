"""What a person watching sees: one line per phase (and one training summary) when the stream
is not a terminal, a tqdm bar with loss, rate and validation HR@10 when it is."""

from __future__ import annotations

import io

from trainer_service.training_request import Progress
from trainer_service.progress_display import ProgressDisplay


def run_events(epochs: int = 200) -> list[Progress]:
    events = [Progress("loading", total_epochs=epochs), Progress("training", total_epochs=epochs)]
    for epoch in range(1, epochs + 1):
        metrics = {"hit_rate_at_10": 0.1 + epoch / 10_000} if epoch % 10 == 0 else {}
        events.append(Progress("training", epoch=epoch, total_epochs=epochs, loss=1.0 / epoch,
                               samples_per_second=1.5e6, metrics=metrics, best_epoch=epoch // 10 * 10))
    final = {"hit_rate_at_10": 0.2, "popularity_hit_rate_at_10": 0.08}
    events += [Progress("evaluating", epoch=epochs, total_epochs=epochs),
               Progress("publishing", epoch=epochs, total_epochs=epochs, metrics=final),
               Progress("done", epoch=epochs, total_epochs=epochs, metrics=final)]
    return events


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_one_line_per_phase_not_per_epoch():
    out = io.StringIO()
    with ProgressDisplay(out, indent="  ") as display:
        for event in run_events():
            display(event)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5, lines
    assert lines[0] == "  loading the data..." and lines[1] == "  training (200 epochs at most)..."
    assert lines[2].startswith("  training: 200/200 epochs in ")
    assert "loss 0.0050" in lines[2] and "1.50M samples/s" in lines[2]
    assert "last validation HR@10 0.1200" in lines[2] and "best epoch 200" in lines[2]
    assert lines[3].startswith("  evaluating") and lines[4].startswith("  building the indexes")


def test_a_terminal_gets_a_bar_with_loss_rate_and_validation():
    out = Terminal()
    display = ProgressDisplay(out)
    for event in run_events(30):
        display(event)
    display.close()
    text = out.getvalue()
    assert "\r" in text and "30/30" in text and "epoch" in text
    assert "loss=0.0333" in text and "val HR@10=0.1030" in text and "best=30" in text
    assert "evaluating (leave-one-out" in text


def test_quiet_shows_nothing():
    out = Terminal()
    with ProgressDisplay(out, quiet=True) as display:
        for event in run_events(5):
            display(event)
    assert out.getvalue() == ""
