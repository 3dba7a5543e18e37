#!/usr/bin/env bash
# Is the GPU learning benchmark bit-reproducible with `--deterministic`? Builds the GPU-size start model twice
# (countdown, 3000 SFT steps) and compares the weights' sha256; then trains each of two algorithms twice from it
# under two spellings of the same configuration (3 rollout batches, 200 held-out problems) and compares.
# Writes bench/results/learning_determinism.json (or $OUT/learning_determinism.json when OUT is set).
#     bash bench/learning_determinism.sh          # one GPU, ≈ 8 min
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
work="$(mktemp -d)"
for m in a b; do
  python bench/learning.py --deterministic --size gpu --build-only --model "$work/$m" --out "$work/o$m" \
    --override '{"tasks":["countdown"],"n_eval":100}'
done
python bench/learning.py --deterministic --size gpu --model "$work/a" --out "$work/rl" --name det \
  --algos diffu_grpo,diffu_grpo+epsilon=0.5,gdpo,gdpo+beta=0.0 \
  --override '{"tasks":["countdown"],"rollouts":3,"eval_every":3,"n_eval":200,"seeds":[0],"workers":4}'
WORK="$work" OUT_DIR="$out" python - <<'PY'
import hashlib, json, os
from pathlib import Path
from bench.record import write_record

work = Path(os.environ["WORK"])
sha = {m: hashlib.sha256((work / m / "model.safetensors").read_bytes()).hexdigest() for m in "ab"}
runs = {r["algo"]: r for r in json.loads((work / "rl" / "det.json").read_text())["metrics"]["runs"]}
pairs = {name: [runs[a]["points"], runs[b]["points"], runs[a]["reward_last"], runs[b]["reward_last"]]
         for name, (a, b) in {"diffu_grpo": ("diffu_grpo", "diffu_grpo+epsilon=0.5"),
                               "gdpo": ("gdpo", "gdpo+beta=0.0")}.items()}
write_record(Path(os.environ["OUT_DIR"]) / "learning_determinism.json", "learning_determinism",
             {"start_model_sha256": sha, "start_model_identical": sha["a"] == sha["b"], "rl_pairs": pairs,
              "rl_identical": {k: v[0] == v[1] and v[2] == v[3] for k, v in pairs.items()}},
             units={"rl_pairs": "[points run 1, points run 2, last reward run 1, last reward run 2]"},
             command="bash bench/learning_determinism.sh")
PY
