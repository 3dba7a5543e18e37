#!/usr/bin/env bash
# Wheels that bench/rl_step.py (and rl-dlm train) needs on the GPU image, which has torch, transformers, peft,
# accelerate, safetensors, tokenizers and tqdm but not hydra-core, omegaconf, antlr4 or deepspeed. All of them are
# pure Python. They go into .whl/ at the repository root (ignored by git, .gitignore); the device call carries
# .whl and installs them into /tmp/site.
#
#   bash bench/gpu_wheels.sh            # here, once: downloads / builds the wheels into .whl/ (a few MB)
#
# Not needed by the benchmark and left out: trl, datasets, math-verify (the benchmark's task is synthetic and its
# reward is bench/random_reward.py). deepspeed (with its needs hjson, pydantic, pydantic-core, annotated-types,
# typing-inspection, typing-extensions) is only for --nproc > 1 runs; pydantic-core is the one compiled wheel
# (CPython 3.12, manylinux x86-64, as the image's Python). hydra-core's and omegaconf's versions are read from
# requirements.txt; antlr4-python3-runtime and deepspeed have no wheels on PyPI and are built here from source
# (deepspeed with DS_BUILD_OPS=0: no compiled ops; it needs torch, so BUILD_PYTHON is the project's .venv).
#
# Device commands (nvidia-h200; name `.whl` in `carry`; each must end inside the 10-minute limit; the first writes
# the 16 GB LLaDA checkpoint to /tmp/rl_step_ckpt, which later calls reuse while the machine stays warm and rebuild
# in about a minute on a fresh one). Every command starts with the install line:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; export PYTHONUNBUFFERED=1;
#
# then one of these (estimated from the earlier rollout and update measurements: ≈ 1 min to write an 8B
# checkpoint, ≈ 40 s to load one per algorithm, then two rollout batches; --time-budget-s stops a run that
# overruns and keeps the finished rollout batches):
#
#   python3 bench/rl_step.py --algos diffu_grpo,gdpo --out $OUT --time-budget-s 560 2>&1 | tee $OUT/log.txt  # ≈ 7 min
#   python3 bench/rl_step.py --algos cj_grpo --out $OUT --time-budget-s 560 2>&1 | tee $OUT/log.txt          # ≈ 5 min
#   python3 bench/rl_step.py --algos igpo,mdpo --out $OUT --time-budget-s 560 2>&1 | tee $OUT/log.txt        # ≈ 7 min
#   python3 bench/rl_step.py --algos coupled_grpo --out $OUT --time-budget-s 560 2>&1 | tee $OUT/log.txt     # ≈ 4 min
#
# (bench/device_plan.sh runs the speed measurements that bench/RESULTS.md still owes in three such parts.)
#
# and, back here, `python bench/rl_step.py --merge <each run's rl_step.json> --out bench/results` for the record and
# the table of bench/RESULTS.md. Several GPUs (nvidia-h200-x2/x4/x8; NCCL's NVLink multicast stays off there):
#
#   python3 bench/rl_step.py --algos diffu_grpo --nproc 8 --deepspeed zero2 --out $OUT --time-budget-s 560
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PYTHON=${PYTHON:-python3}
BUILD_PYTHON=${BUILD_PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo /work/main/.venv/bin/python )}
pin() { grep -i -E "^$1==" requirements.txt | head -1; }
BINARY=(
  "$(pin hydra-core)" "$(pin omegaconf)"
  hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
)
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3)
DEEPSPEED=deepspeed==0.19.8

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${BINARY[@]}"
"$PYTHON" -m pip wheel -q --no-deps -w "$DEST" "${SOURCE_ONLY[@]}"
DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=0 "$BUILD_PYTHON" -m pip wheel -q --no-cache-dir --no-deps --no-build-isolation -w "$DEST" "$DEEPSPEED"

# One version of each package, every one a py3 or cp312 wheel (two versions stop the install on the device).
ls "$DEST"/*.whl | xargs -n1 basename | sed 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d | grep . \
  && { echo "duplicate packages in $DEST" >&2; exit 1; }
for w in "$DEST"/*.whl; do
  case "$(basename "$w")" in *-py3-none-any.whl|*-py2.py3-none-any.whl|*-cp312-*manylinux*x86_64.whl) ;;
    *) echo "not installable on the image (Python 3.12, x86-64): $w" >&2; exit 1 ;;
  esac
done
du -ch "$DEST"/*.whl | tail -1
ls "$DEST"
