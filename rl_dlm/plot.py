"""Reward and accuracy against step, drawn from a run's metrics: `metrics.png` beside `metrics.jsonl`.

A run draws it when training ends (`Tracker.finish`); any run directory, finished or not, on request:

    rl-dlm plot outputs/countdown-quickstart-diffu_grpo          # → outputs/.../metrics.png

Plotted: `reward` (the weighted reward, mean over rollout rows) and `accuracy` (the share of rows whose
`correct_reward` is full marks) where the run logs it. matplotlib (Agg backend, no display needed) is an optional
dependency (`pip install matplotlib`); without it the run still finishes and says how to get the plot.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

SERIES = ("reward", "accuracy")


def read_metrics(path: str | Path) -> list[dict]:
    """The entries of a metrics.jsonl; a line cut short by a kill (the last one) is left out."""
    entries = []
    for line in Path(path).read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def write_plot(history: list[dict], path: str | Path, title: str = "", say: Callable[[str], None] = print
               ) -> Path | None:
    """Draws every series of SERIES that the history has against `step`; None (and a message) without
    matplotlib or without any such series."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say(f"no plot: matplotlib is not installed (pip install matplotlib); the metrics are in "
            f"{Path(path).with_name('metrics.jsonl')}")
        return None
    series = [name for name in SERIES if any(name in h for h in history)]
    if not series:
        say(f"no plot: the metrics have none of {list(SERIES)}")
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2.4 * len(series)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], series):
        points = [(h["step"], h[name]) for h in history if name in h and h[name] is not None]
        ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 50 else None)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_main(argv: list[str]) -> None:
    """`rl-dlm plot RUN_DIR [--output PNG]`."""
    parser = argparse.ArgumentParser(prog="rl-dlm plot",
                                     description="Draw reward and accuracy against step from RUN_DIR/metrics.jsonl")
    parser.add_argument("run_dir")
    parser.add_argument("--output", default=None, help="the image (default: RUN_DIR/metrics.png)")
    args = parser.parse_args(argv)
    metrics = Path(args.run_dir) / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"rl-dlm plot: {metrics} does not exist (a run writes it unless report_to=[none])")
    out = write_plot(read_metrics(metrics), args.output or Path(args.run_dir) / "metrics.png",
                     title=Path(args.run_dir).resolve().name)
    if out is None:
        raise SystemExit(1)
    print(f"wrote {out}")
