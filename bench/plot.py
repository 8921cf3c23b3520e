"""The recall-against-latency plot of the ANN part (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

MARKERS = {"exact": "s", "notebook annoy": "X", "our annoy": "o", "hnswlib": "^"}
COLORS = {"exact": "black", "notebook annoy": "tab:red", "our annoy": "tab:blue", "hnswlib": "tab:green"}


def recall_latency_png(ann: dict, path: Path) -> str | None:
    """Write the plot of ``ann`` (the ANN part's result) to ``path``; a note when it cannot
    (matplotlib missing), else None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install -e '.[bench]')"
    models = ann.get("models", [])
    if not models:
        return "no ANN results to plot"
    fig, axes = plt.subplots(1, len(models), figsize=(6.2 * len(models), 4.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in model["rows"] if r["search"] == "recommend"]
        for method in MARKERS:
            points = sorted(((r["p50_ms"], r["recall_at_10"]) for r in rows if r["method"] == method))
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=MARKERS[method], color=COLORS[method], linestyle="-" if len(xs) > 1 else "none",
                    label=method, markersize=7)
        ax.set_xscale("log")
        ax.set_xlabel("median latency per query (ms, one thread, log scale)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Recommend search: {model['label']}\n{model['artists']:,} artists, {model['factors']} factors")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
