"""Structural fingerprint: the logged metrics of a seeded 3-rollout-batch CPU run of each of the six algorithms.

A change that only moves code (a refactor of modules, configs or the loop's shape) must leave every logged number
unchanged, bit for bit. This script runs each algorithm through the same path as `rl-dlm train algo=<name>`
(`rl_dlm.hydra_app.compose_config` + `build` + `trainer.train()`) on the embedded tiny LLaDA, at the smallest
settings that still exercise the algorithm's path (μ = 2 where the algorithm allows it, so the old log-probs are
scored; MDPO keeps its μ = 1; two micro-batches per inner iteration), and records the tracker history minus the `time/` and `tokens_per_s/` keys.

    python bench/structural_fingerprint.py              # compare against bench/results/structural_fingerprint.json
    python bench/structural_fingerprint.py --write      # record a new fingerprint (names the current commit)
    python bench/structural_fingerprint.py --algos gdpo # one algorithm
    python bench/structural_fingerprint.py --unfused    # fused_projections=false against ..._unfused.json

tests/test_structural_fingerprint.py runs the comparison. Floats are compared through their JSON form
(`repr`, which round-trips exactly), so "equal" means bit-identical.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = ROOT / "bench" / "results" / "structural_fingerprint.json"
# The same runs with `fused_projections=false`: each projection called as its own module, the code path before
# rl_dlm/models/fused_projections.py (and the one ZeRO-3 and full fine-tuning take): the fingerprint that was
# current before fusion existed (its "commit"), which the unfused path must keep reproducing.
UNFUSED = ["fused_projections=false"]
FINGERPRINT_UNFUSED = ROOT / "bench" / "results" / "structural_fingerprint_unfused.json"
ROLLOUT_BATCHES = 3
ALGOS = {  # algorithm → its overrides: μ and the knobs that keep its path short
    "diffu_grpo": ["num_iterations=2"],
    "coupled_grpo": ["num_iterations=2"],
    "gdpo": ["num_iterations=2", "likelihood.nodes=2"],
    "cj_grpo": ["num_iterations=2"],
    "mdpo": ["num_iterations=1", "likelihood.top_k_steps=4"],
    "igpo": ["num_iterations=2"],
}
SMALL = ["num_generations=2", "per_device_train_batch_size=4", "task.train_size=8", "task.eval_size=4",
         "eval.before=false", "eval.after=false", "lora_r=4", "lora_alpha=8", "lora_dropout=0.0", "logging_steps=1",
         "learning_rate=1e-2", "report_to=[none]", "max_completion_length=16", "diffusion_steps=8",
         "block_length=16", "seed=3", "save_steps=0", "gradient_accumulation_steps=2",
         "+task.rewards.text=" "{_target_: bench.structural_fingerprint.text_reward}"]
DROPPED = ("time/", "tokens_per_s/")


def text_reward(completions, **kw):
    """Varies with the completion text, so groups of two have non-zero advantages at this tiny size."""
    text = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(sum(map(ord, t)) % 7) for t in text]


def run(algo: str, output_dir: str, overrides=()) -> list[dict]:
    import torch

    from rl_dlm.hydra_app import build, compose_config

    extra = ALGOS[algo]
    mu = int(next(o for o in extra if o.startswith("num_iterations=")).split("=")[1])
    cfg = compose_config([f"algo={algo}", f"output_dir={output_dir}", f"max_steps={ROLLOUT_BATCHES * mu}",
                          *SMALL, *extra, *overrides])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order on any machine with this torch build
    try:
        history = build(cfg).train()
    finally:
        torch.set_num_threads(threads)
    return [{k: v for k, v in sorted(h.items()) if not k.startswith(DROPPED)} for h in history]


def _jsonable(history: list[dict]) -> list[dict]:
    return [{k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in h.items()}
            for h in history]


def fingerprint(algos, overrides=()) -> dict[str, list[dict]]:
    out = {}
    for algo in algos:
        with tempfile.TemporaryDirectory() as tmp:
            out[algo] = _jsonable(run(algo, str(Path(tmp) / "run"), overrides))
    return out


def _commit() -> str:
    """The commit the fingerprint is made at: `FINGERPRINT_COMMIT` for an exported tree (`git archive`), else HEAD."""
    if os.environ.get("FINGERPRINT_COMMIT"):
        return os.environ["FINGERPRINT_COMMIT"]
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def differences(expected: dict[str, list[dict]], got: dict[str, list[dict]]) -> list[str]:
    """Human-readable differences, [] when bit-identical (through JSON: what the file stores)."""
    lines = []
    for algo, history in got.items():
        want = json.loads(json.dumps(expected.get(algo)))
        have = json.loads(json.dumps(history))
        if want == have:
            continue
        if want is None or len(want) != len(have):
            lines.append(f"{algo}: {0 if want is None else len(want)} logged steps expected, got {len(have)}")
            continue
        for step, (a, b) in enumerate(zip(want, have), 1):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    lines.append(f"{algo} step {step} {key}: expected {a.get(key)!r}, got {b.get(key)!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="record a new fingerprint instead of comparing")
    parser.add_argument("--algos", nargs="*", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--unfused", action="store_true", help="the fused_projections=false fingerprint")
    args = parser.parse_args(argv)
    path, extra = (FINGERPRINT_UNFUSED, UNFUSED) if args.unfused else (FINGERPRINT, [])
    got = fingerprint(args.algos, extra)
    if args.write:
        path.write_text(json.dumps({"commit": _commit(), "rollout_batches": ROLLOUT_BATCHES,
                                    "overrides": {"all": SMALL + extra, **ALGOS}, "history": got}, indent=1) + "\n")
        print(f"wrote {path}")
        return 0
    expected = json.loads(path.read_text())
    diff = differences(expected["history"], got)
    print("\n".join(diff) if diff else f"bit-identical to the fingerprint of {expected['commit']}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
