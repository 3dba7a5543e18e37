"""The learning benchmark's table (markdown) and plot (PNG), from its record (`bench/learning.py`).

    python bench/learning_report.py bench/results/learning_gpu.json docs/results/gpu   # redraw from a record
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

NAMES = {"diffu_grpo": "diffu-GRPO", "coupled_grpo": "coupled-GRPO", "gdpo": "GDPO", "cj_grpo": "CJ-GRPO",
         "mdpo": "MDPO", "igpo": "IGPO", "spg": "SPG", "espo": "ESPO", "gdsd": "GDSD"}


def _runs(record: dict) -> dict[tuple[str, str], list[dict]]:
    """Runs by (algorithm, task), in seed order (parallel runs finish in any order)."""
    by = defaultdict(list)
    for run in sorted(record["metrics"]["runs"], key=lambda r: r["seed"]):
        by[run["algo"], run["task"]].append(run)
    return by


def _algos(record: dict) -> list[str]:
    present = {r["algo"] for r in record["metrics"]["runs"]}
    return [a for a in NAMES if a in present] + sorted(present - set(NAMES))


def split_spec(spec: str) -> tuple[str, str, list[str]]:
    """A run spec of `bench/learning.py --algos`, `NAME[@RATE][+FIELD=VALUE...]` → (NAME, RATE or "", fields)."""
    head, *fields = spec.split("+")
    name, _, rate = head.partition("@")
    return name, rate, fields


def label(algo: str, rate: float | None = None, shared: float | None = None) -> str:
    """`gdpo@1e-4+beta=0.04` → "GDPO (lr 1e-4, beta=0.04)"; a run's own `rate`, where it differs from the
    `shared` one, is shown too."""
    name, given, fields = split_spec(algo)
    if not given and rate is not None and shared is not None and rate != shared:
        mantissa, exponent = f"{rate:e}".split("e")
        given = f"{float(mantissa):g}e{int(exponent)}"  # 1e-4, as the --algos spec would write it
    notes = ([f"lr {given}"] if given else []) + fields
    return NAMES.get(name, name) + (f" ({', '.join(notes)})" if notes else "")


def table(record: dict) -> str:
    size, metrics = record["size"], record["metrics"]
    tasks, by = size["tasks"], _runs(record)
    algos = _algos(record)
    seeds = ", ".join(map(str, size["seeds"]))
    lines = [
        f"Held-out accuracy (%, greedy, {size['n_eval']} problems per task), before → after "
        f"{size['rollouts']} rollout batches of {size['prompts']} prompts × {size['group']} completions; "
        f"mean over seed(s) {seeds}, gain in points with each seed's gain in brackets. "
        f"Device: {record['device']}. Start model: {record['start_model'].get('parameters', 0) / 1e6:.1f} M "
        f"parameters ({record['start_model']['source']}).",
        "",
        "| algorithm | " + " | ".join(tasks) + " | wall s / run |",
        "|---|" + "---|" * len(tasks) + "---|",
    ]
    for algo in algos:
        cells, secs = [], []
        for task in tasks:
            runs = [r for r in by[algo, task] if "error" not in r]
            if not runs:
                cells.append("failed")
                continue
            before = 100 * metrics["before"][task]
            after = 100 * mean(r["after"] for r in runs)
            gains = ", ".join(f"{r['gain_points']:+.1f}" for r in runs)
            cells.append(f"{before:.1f} → {after:.1f} (**{after - before:+.1f}**; {gains})")
            secs += [r["seconds"] for r in runs]
        rates = [r["learning_rate"] for task in tasks for r in by[algo, task] if "learning_rate" in r]
        name = label(algo, rates[0] if rates else None, size["learning_rate"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean(secs) if secs else 0:.0f} |")
    lines += ["", f"Command: `{record['command']}` (git {record['git_revision'][:12]}, {record['date']}).", ""]
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size, by = record["size"], _runs(record)
    tasks = size["tasks"]
    algos = _algos(record)
    per_batch = size["prompts"] * size["group"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for algo in algos:
            runs = [r for r in by[algo, task] if "error" not in r]
            if not runs:
                continue
            xs = [p[0] * per_batch for p in runs[0]["points"]]
            curves = [[100 * p[1] for p in r["points"]] for r in runs]
            ys = [mean(c[i] for c in curves) for i in range(len(xs))]
            line, = ax.plot(xs, ys, marker="o", label=label(algo))
            if len(curves) > 1:
                ax.fill_between(xs, [min(c[i] for c in curves) for i in range(len(xs))],
                                [max(c[i] for c in curves) for i in range(len(xs))], color=line.get_color(), alpha=0.15)
        ax.set_title(task)
        ax.set_xlabel("rollouts (completions sampled)")
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    seeds = ", ".join(map(str, size["seeds"]))
    fig.suptitle(f"{record['device']}: mean over seed(s) {seeds} (band: min–max)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    import json

    rec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{rec['name']}.md").write_text(table(rec))
    plot(rec, out / f"{rec['name']}.png")
