#!/usr/bin/env bash
# The GPU measurements the 8B issue still owes, each part inside the device's 10-minute limit, the acceptance
# numbers first, each opt-in speed-up against the code without it in the same run: the compiled element-wise
# kernels (`compiled_elementwise`, rl_dlm/models/elementwise.py) and compiled blocks (`compiled_blocks`,
# rl_dlm/models/compiled_blocks.py). The issue states its targets on an H200, so ask for one (nvidia-h200).
# On the device (carry `.whl`, built here by bench/gpu_wheels.sh; nvidia-h200 or nvidia-h100-x1):
#
#   bash bench/device_plan.sh 1   # the acceptance micro-benchmarks: one LoRA r 128 update with checkpointing
#                                 # (eager, the compiled kernels, compiled_blocks), the exact 64-row rollout and
#                                 # the dual-cache one (each eager and +compiled, and with the graphs' memory
#                                 # budget raised), and batch size 1 (graphs, +compiled, and the code of the
#                                 # issue's measurement: --compare-old)
#   bash bench/device_plan.sh 2   # GDPO and diffu-GRPO end to end at their 8B recipes with compiled_blocks
#   bash bench/device_plan.sh 3   # CJ-GRPO and IGPO with compiled_blocks
#   bash bench/device_plan.sh 4   # MDPO and coupled-GRPO (Dream-7B shape) with compiled_blocks
#   bash bench/device_plan.sh 5   # the block's four GEMMs alone at 456 to 29 184 rows, cuBLAS against Inductor's
#                                 # autotuned ones (bench/gemm_shapes.py: what batch size 1 can reach), then the
#                                 # kernel split (bench/profile_8b.py), the update with compiled_blocks last
#   bash bench/device_plan.sh 6   # the three rollouts against residual sums as separate add kernels (+adds), in
#                                 # one run: exact 64 rows, dual cache 64 rows, batch size 1, all +compiled
#   LIMIT=1500 bash bench/device_plan.sh 7   # the six papers' algorithms in one bench/rl_step.py run with
#                                 # compiled_blocks; longer than one device command, so start it in its own
#                                 # process session and wait for it over two commands:
#       setsid nohup bash -c 'LIMIT=1500 OUT=/tmp/plan7 bash bench/device_plan.sh 7 >/tmp/plan7.log 2>&1;
#           touch /tmp/plan7.done' >/dev/null 2>&1 &
#       while [ ! -e /tmp/plan7.done ] && [ $SECONDS -lt 570 ]; do sleep 5; done   # in each command
#       cp -r /tmp/plan7 /tmp/plan7.log $OUT/   # once /tmp/plan7.done exists
#   DRY_RUN=1 bash bench/device_plan.sh 1   # print the commands only
#
# Each command gets the part's remaining time (LIMIT, 570 s, minus what ran before) and writes under
# $OUT/<name>/ (its JSON record and log.txt), and $OUT/gpu_clocks_part<N>.csv samples the clocks; a command that
# would start with under a minute left is skipped and says so. Back here: copy $OUT, note the commit the device's
# tree was (the records' git_revision can name an older commit than the files; `python bench/record.py
# --find-commit <source_digest>` names the right one), and enter the numbers in bench/RESULTS.md and
# docs/performance.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:?usage: bash bench/device_plan.sh 1|2|3|4|5|6|7}
OUT=${OUT:-/tmp/device_plan}
LIMIT=${LIMIT:-570}
if [ -z "${DRY_RUN:-}" ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
    fi
    export PYTHONUNBUFFERED=1
    # The SM clock and power every half second: a kernel that runs slower in one configuration than in another
    # may be clocked down, not worse (the GPU lowers its clock when it draws its power limit).
    if command -v nvidia-smi >/dev/null; then
        mkdir -p "$OUT"
        nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv -lms 500 \
            >"$OUT/gpu_clocks_part$PART.csv" 2>/dev/null &
        trap 'kill %1 2>/dev/null' EXIT
    fi
fi

START=$SECONDS
run() {  # run NAME COMMAND...: COMMAND --out $OUT/NAME within the part's remaining time
    local name=$1
    shift
    local left=$((LIMIT - (SECONDS - START)))
    if [ -n "${DRY_RUN:-}" ]; then
        echo "$* --out $OUT/$name"
        return
    fi
    if [ "$left" -lt 60 ]; then
        echo "$name: skipped, $left s left of the part's $LIMIT"
        return
    fi
    mkdir -p "$OUT/$name"
    timeout "$left" "$@" --out "$OUT/$name" >"$OUT/$name/log.txt" 2>&1
    echo "$name: exit $? after $((SECONDS - START)) s of the part; tail of its log:"
    tail -n 3 "$OUT/$name/log.txt"
}

case $PART in
1)
    run ts python3 bench/train_step.py --autocast --updates 2 --compiled-elementwise --compiled-blocks
    run exact64 python3 bench/rollout.py --n 64 --modes none,none+compiled --exact-steps 16
    run dual python3 bench/rollout.py --n 64 --modes dual+graphs,dual+graphs+compiled
    # the same with room for all 16 graphs of a 64-row rollout (8 windows, 8 refreshes, 0.5 GiB of logits each)
    run dual_gib python3 bench/rollout.py --n 64 --modes dual+graphs+compiled --graph-gib 12
    run bs1 python3 bench/rollout.py --n 1 --modes none,none+graphs,none+graphs+compiled --compare-old
    ;;
2)
    run rl python3 bench/rl_step.py --algos gdpo,diffu_grpo --set compiled_blocks=true --time-budget-s 500
    ;;
3)
    run rl3 python3 bench/rl_step.py --algos cj_grpo,igpo --set compiled_blocks=true --time-budget-s 500
    ;;
4)
    run rl4 python3 bench/rl_step.py --algos mdpo,coupled_grpo --set compiled_blocks=true --time-budget-s 500
    ;;
5)
    run gemm python3 bench/gemm_shapes.py
    run profile python3 bench/profile_8b.py --skip-unfused
    ;;
6)
    run exact64 python3 bench/rollout.py --n 64 --modes none,none+compiled,none+compiled+adds --exact-steps 16
    run dual python3 bench/rollout.py --n 64 --modes dual+graphs+compiled,dual+graphs+compiled+adds
    run bs1 python3 bench/rollout.py --n 1 --modes none+graphs+compiled,none+graphs+compiled+adds
    ;;
7)
    run rl6 python3 bench/rl_step.py --algos diffu_grpo,gdpo,coupled_grpo,cj_grpo,mdpo,igpo \
        --set compiled_blocks=true --time-budget-s $((LIMIT - 60))
    ;;
*)
    echo "unknown part $PART: expected 1 to 7" >&2
    exit 2
    ;;
esac
