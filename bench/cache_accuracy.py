"""What the block KV cache costs in accuracy on a trained model: held-out greedy accuracy of one model with the
exact sampler and with each cache mode, on each synthetic task, with the papers' protocol (steps = length / 2,
block 16, 32 for sudoku). Speed is `bench/rollout.py`'s job (random 8B-shape weights); this is the other half.

    python bench/cache_accuracy.py --model DIR --out $OUT                 # e.g. the learning benchmark's model
    python bench/cache_accuracy.py --model checkpoints/tiny-llada --n 200 --out /tmp/cache   # CPU, slow

Modes: none (exact), prefix, dual, and <prefix|dual>_r<k> (cache refreshed every k steps within a block).
Writes `<out>/cache_accuracy.json` with per-mode accuracy, the gap to exact, and greedy-token agreement with exact.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.learning import block_of  # noqa: E402
from bench.record import write_record  # noqa: E402
from bench.rollout import make_sampler  # noqa: E402
from rl_dlm.data.tasks import GEN_LENGTH, TASKS, correct_reward, make_split  # noqa: E402
from rl_dlm.eval import evaluate  # noqa: E402
from rl_dlm.models.policy import load_policy  # noqa: E402
from rl_dlm.reward_runner import RewardFunction, RewardRunner  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=500, help="held-out problems per task")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--modes", default="none,prefix,dual,dual_r4,dual_r2")
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_policy(a.model, device=device, check_alignment=False)
    policy.model.eval()
    results = {}
    for task in a.tasks.split(","):
        length = GEN_LENGTH[task]
        rows = make_split(task, "test", a.n, seed=0)
        runner = RewardRunner([RewardFunction(correct_reward(task), name="correct")], correct="correct")
        common = dict(gen_length=length, block_length=block_of(length), steps=length // 2, temperature=0.0)
        results[task], exact = {}, None
        for mode in a.modes.split(","):
            start = time.time()
            out = Path(a.out) / f"{task}-{mode}.jsonl"
            r = evaluate(policy, make_sampler(mode, **common), rows, runner, batch_size=256, desc=f"{task} {mode}",
                         completions_path=out)
            texts = [json.loads(line)["completion"] for line in out.read_text().splitlines()]
            out.unlink()
            if mode == "none":
                exact = texts
            same = sum(x == y for x, y in zip(texts, exact)) / len(texts) if exact else None
            results[task][mode] = {"accuracy": r["accuracy"], "n": r["n"], "seconds": round(time.time() - start, 1),
                                   "same_completion_as_exact": same}
            print(task, mode, results[task][mode], flush=True)
        for mode, r in results[task].items():
            if "none" in results[task]:
                r["gap_points"] = round(100 * (r["accuracy"] - results[task]["none"]["accuracy"]), 1)
    write_record(Path(a.out) / "cache_accuracy.json", "cache_accuracy", results,
                 units={"accuracy": "held-out fraction correct (greedy)", "gap_points": "percentage points vs exact",
                        "same_completion_as_exact": "fraction of rows whose completion equals the exact sampler's"},
                 model=a.model, parameters=sum(p.numel() for p in policy.model.parameters()))


if __name__ == "__main__":
    main()
