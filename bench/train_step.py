"""Time and memory of one diffu-GRPO inner update on the LLaDA-8B-Instruct shape.

A randomly initialised LLaDA-8B-shaped model in bf16 with LoRA r 128 (alpha 64, dropout 0.05) on every
projection (q, k, v, attn_out, ff_proj, up_proj, block ff_out; not the LM head), gradient checkpointing, one
group of G = 6 rollouts of prompt 200 + completion 256. One inner update is what the loop's stage 5 + 6 do
for one micro-batch: the one-step estimator's masked view (completion fully masked, prompt tokens masked with
p = 0.15), the current policy's log-probs (fp32 chunked log-softmax), the clipped token objective with k3 KL
(ε 0.5, β 0.04), backward, grad-norm clip and an AdamW step. Stage 4 (old and reference log-probs, no grad) is
timed separately. Reported: seconds per update (median of the timed updates after one warm-up) and peak GPU
memory.

    python bench/train_step.py --out $OUT                # on a GPU; writes $OUT/train_step.json
    python bench/train_step.py --tiny --out /tmp/bench   # CPU smoke test of the script itself
    python bench/train_step.py --compare-old --out $OUT  # also the code before the exact speed-ups

Dropout is disabled as `rl-dlm train` does by default (`disable_dropout: true`). `fraction_of_matmul` is the
update's FLOP rate (6·N_body per token with checkpointing, 4·N_body without, + the LM head on the completion)
over the 8192³ bf16 matmul rate measured at start-up; `--no-checkpointing` times the update without it.

`--autocast` runs stage 4 and the update under bf16 autocast, as `rl-dlm train` with `bf16: true` does (without
it, peft's fp32 adapter weights make the LoRA matrix products fp32, as in the recorded results).

`--compare-old` times stage 4 and the update a second time on the implementation before the exact speed-ups
(bench/previous_paths.py: full-length logits sliced to the completion, textbook RoPE / RMSNorm) right after the
current one, and records both medians and the largest difference between their stage-4 log-probs.
`--compiled-elementwise` does the same with RMSNorm, RoPE and SiLU·mul as the fused compiled kernels of
`compiled_elementwise` (rl_dlm/models/elementwise.py; the warm-up update compiles them). `--compiled-blocks` does
it with the knob `compiled_blocks` (rl_dlm/models/compiled_blocks.py): each block's pass under autograd is one
`torch.compile` graph, with projections, LoRA adapters, attention, the compiled element-wise code and the
checkpoint's recompute traced into it, so at 6 rows, where the update is host-bound, a block's forward, recompute
and backward cost one compiled call each instead of some hundred eager ones. Stage 4, without autograd, then
runs the compiled element-wise kernels only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.previous_paths import FullLogitsPolicy, previous_paths  # noqa: E402
from bench.record import write_record  # noqa: E402
from bench.rollout import LLADA_8B, TINY, body_and_head_params, build_policy, sync  # noqa: E402
from bench.stage_meter import matmul_tflops  # noqa: E402
from rl_dlm.components import Rollout  # noqa: E402
from rl_dlm.likelihood.base import score  # noqa: E402
from rl_dlm.likelihood.one_step import OneStepEstimator  # noqa: E402
from rl_dlm.models.compiled_blocks import compile_blocks  # noqa: E402
from rl_dlm.models.elementwise import compile_elementwise  # noqa: E402
from rl_dlm.models.policy import LoraSettings, add_lora, disable_dropout  # noqa: E402
from rl_dlm.objectives import ClippedTokenObjective  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--group", type=int, default=6)
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--completion", type=int, default=256)
    ap.add_argument("--lora-r", type=int, default=128)
    ap.add_argument("--updates", type=int, default=3, help="timed updates after one warm-up update")
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast, as the trainer runs with bf16: true")
    ap.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True,
                    help="gradient checkpointing (non-reentrant), as the 8B recipes run")
    ap.add_argument("--compare-old", action="store_true",
                    help="also time each update on the code before the exact speed-ups (bench/previous_paths.py)")
    ap.add_argument("--compiled-elementwise", action="store_true",
                    help="also time each update with the compiled element-wise kernels (rl_dlm/models/elementwise.py)")
    ap.add_argument("--compiled-blocks", action="store_true",
                    help="also time each update with compiled_blocks (rl_dlm/models/compiled_blocks.py)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    shape = TINY if args.tiny else LLADA_8B
    policy = build_policy(shape, device)
    base_params = sum(p.numel() for p in policy.model.parameters())
    policy.model = add_lora(policy.model, LoraSettings(r=args.lora_r, alpha=64, dropout=0.05))
    disable_dropout(policy.model)  # as `rl-dlm train` does (disable_dropout: true, TRL's default for GRPO)
    if args.checkpointing:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.model.train()
    matmul = matmul_tflops(torch.device(device), size=64 if args.tiny else 8192)["tflops"]
    n_body, n_head = body_and_head_params(shape)
    tokens = args.group * (args.prompt + args.completion)
    # bench/stage_meter.py's count: forward, input-gradient backward and (with checkpointing) the recomputed
    # forward of the body, 2·N each per token; the LM head's forward and input gradient on the completion
    update_flops = ((6 if args.checkpointing else 4) * n_body * tokens
                    + 4 * n_head * args.group * args.completion)
    params = policy.trainable_parameters()
    lora_params = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=3e-6, betas=(0.9, 0.99), weight_decay=0.1)

    g = torch.Generator().manual_seed(0)
    n, vocab = args.group, 126000 if not args.tiny else 400
    rollout = Rollout(
        prompt_ids=torch.randint(0, vocab, (1, args.prompt), generator=g).repeat(n, 1).to(device),
        prompt_mask=torch.ones(n, args.prompt, dtype=torch.bool, device=device),
        completion_ids=torch.randint(0, vocab, (n, args.completion), generator=g).to(device),
        completion_mask=torch.ones(n, args.completion, dtype=torch.bool, device=device),
        group_ids=torch.zeros(n, dtype=torch.long, device=device),
        row_seeds=torch.arange(n),
    )
    estimator = OneStepEstimator(p_mask_prompt=0.15, mask_id=policy.mask_id)
    objective = ClippedTokenObjective(epsilon=0.5, beta=0.04)
    adv = torch.randn(n, generator=g).to(device)

    def stage4(it: int, scorer=policy):
        plan = estimator.plan(rollout, it)
        policy.model.eval()
        with torch.no_grad():
            old = estimator.reduce(score(scorer, rollout, plan), plan)
            with policy.reference():
                ref = estimator.reduce(score(scorer, rollout, plan), plan)
        policy.model.train()
        return plan, old, ref

    def update(plan, old, ref, scorer=policy):
        logp = estimator.reduce(score(scorer, rollout, plan), plan)
        loss, stats = objective(logp, old, ref, adv, rollout.completion_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.2)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    @contextlib.contextmanager
    def code(variant: str):
        """"current", "compiled" (its element-wise kernels compiled), "blocks" (every block compiled) or
        "previous" (the code before)."""
        if variant == "previous":
            with previous_paths(policy):
                yield FullLogitsPolicy(policy)
            return
        compile_elementwise(policy.model, enabled=variant == "compiled")
        compile_blocks(policy.model, enabled=variant == "blocks")
        try:
            yield policy
        finally:
            compile_elementwise(policy.model, enabled=False)
            compile_blocks(policy.model, enabled=False)

    def timed_update(it: int, variant: str) -> tuple[float, float, float]:
        """(stage-4 seconds, update seconds, peak GiB of the update) on one variant of the code."""
        with code(variant) as scorer:
            sync(device)
            t0 = time.perf_counter()
            plan, old, ref = stage4(it, scorer)
            sync(device)
            t1 = time.perf_counter()
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            loss = update(plan, old, ref, scorer)
            sync(device)
            t2 = time.perf_counter()
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        print(f"update {it} ({variant}): stage4 {t1 - t0:.2f}s update {t2 - t1:.2f}s loss {loss:.4f}", flush=True)
        return t1 - t0, t2 - t1, peak

    # the whole run, as the trainer (rl_dlm.trainers.base.bf16_autocast: no weight-cast cache, so each update's
    # forward sees the adapters the previous AdamW step wrote)
    torch.autocast(device, dtype=torch.bfloat16, enabled=args.autocast, cache_enabled=False).__enter__()
    variants = (["current"] + ["compiled"] * args.compiled_elementwise + ["blocks"] * args.compiled_blocks
                + ["previous"] * args.compare_old)
    runs = {v: [] for v in variants}  # variant → [(stage4 s, update s, peak GiB)] of the timed updates
    for it in range(args.updates + 1):
        for variant in variants:
            result = timed_update(it, variant)
            if it > 0:  # the first is a warm-up
                runs[variant].append(result)

    def summary(rows):
        seconds = statistics.median(r[1] for r in rows)
        return {"seconds_per_update": round(seconds, 3),
                "fraction_of_matmul": round(update_flops / seconds / 1e12 / matmul, 3),
                "updates_s": [round(r[1], 3) for r in rows],
                "stage4_old_and_ref_logp_s": round(statistics.median(r[0] for r in rows), 3),
                "peak_memory_gib": round(max(r[2] for r in rows), 2)}

    metrics = summary(runs["current"])
    now = stage4(0)[1] if len(runs) > 1 else None  # the same weights for every variant
    # (variant, its entry, the metrics' suffix, whether it is the slower code being compared against)
    for variant, entry, key, before in (("previous", "previous", "vs_previous", True),
                                        ("compiled", "compiled_elementwise", "of_compiled", False),
                                        ("blocks", "compiled_blocks", "of_compiled_blocks", False)):
        if variant not in runs:
            continue
        other = metrics[entry] = summary(runs[variant])
        slow, fast = (other, metrics) if before else (metrics, other)
        metrics[f"update_speedup_{key}"] = round(slow["seconds_per_update"] / fast["seconds_per_update"], 3)
        metrics[f"stage4_speedup_{key}"] = round(slow["stage4_old_and_ref_logp_s"]
                                                 / fast["stage4_old_and_ref_logp_s"], 3)
        with code(variant) as scorer:
            logp = stage4(0, scorer)[1]
        metrics[f"max_abs_logp_difference_{key}"] = (now - logp).abs().max().item()
    if "blocks" in runs:  # where dynamo split a block's code (each split is a compiled call more), none expected
        from torch._dynamo.utils import counters

        metrics["compiled_blocks"]["graph_breaks"] = sum(counters["graph_break"].values())
    record = write_record(
        Path(args.out) / "train_step.json", "train_step", metrics,
        units={"seconds_per_update": "s (median)", "stage4_old_and_ref_logp_s": "s (median)",
               "max_abs_logp_difference_vs_previous": "nats (stage-4 log-probs, current vs previous code)",
               "max_abs_logp_difference_of_compiled": "nats (stage-4 log-probs, compiled vs eager element-wise)",
               "max_abs_logp_difference_of_compiled_blocks": "nats (stage-4 log-probs, compiled vs eager blocks)",
               "peak_memory_gib": "GiB (torch.cuda.max_memory_allocated during updates)",
               "fraction_of_matmul": "update FLOPs (6·N_body·tokens with checkpointing, else 4·N_body·tokens, + "
                                     "4·N_head·completion tokens) per second / the 8192³ bf16 matmul rate"},
        matmul_tflops=round(matmul, 1),
        model={"shape": "LLaDA-8B-Instruct" if not args.tiny else "tiny", "base_params": base_params,
               "lora_params": lora_params, "dtype": "bfloat16" if device == "cuda" else "float32",
               "weights": "random", "gradient_checkpointing": args.checkpointing},
        workload={"bf16_autocast": args.autocast,
                  "group_size": n, "prompt_length": args.prompt, "completion_length": args.completion,
                  "lora_r": args.lora_r, "lora_alpha": 64, "estimator": "one_step(p_mask_prompt=0.15)",
                  "objective": "clipped token ratio, eps 0.5, beta 0.04 (k3)", "optimizer": "AdamW lr 3e-6"})
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
