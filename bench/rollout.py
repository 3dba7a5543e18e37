"""Rollout throughput of the LLaDA semi-AR sampler: exact (no cache) vs the block KV caches, in one run.

A randomly initialised model of the real LLaDA-8B-Instruct shape (32 layers, d 4096, 32 heads, MLP 12288,
vocab 126464) in bf16 decodes 64 sequences (prompt 200, gen 256, 128 steps, block 32, Gumbel sampling at
T = 0.9, low-confidence commits, as in d1's rollouts). Reported per mode: generated tokens/s, wall seconds,
model forwards and peak GPU memory; and the fraction of tokens equal to the exact rollout (random weights are
never confident, so this is a lower bound on what a trained model sees, and threshold decoding cannot show).

    python bench/rollout.py --out $OUT                 # on a GPU; writes $OUT/rollout.json
    python bench/rollout.py --tiny --out /tmp/bench    # CPU smoke test of the script itself
    python bench/rollout.py --modes none,dual --exact-steps 32 --compare-old --out $OUT

`--lora-r 128 --autocast` measures the trainer's rollout path: LoRA adapters (alpha 64, dropout 0.05, eval
mode) on every projection and bf16 autocast, as `rl-dlm train` with `bf16: true` runs its rollouts.

A mode with `+graphs` (`dual+graphs`, `none+graphs`) runs the same sampler with its forwards replayed from CUDA
graphs, as `rl-dlm train` does with `cuda_graphs: true` (rl_dlm/models/cuda_graphs.py): after two untimed
rollouts that capture every window, and with the fraction of tokens equal to the eager mode's (1.0 expected).
A mode with `+unfused` (`none+unfused`, `none+graphs+unfused`) calls each projection as its own module (one GEMM
each, peft's own LoRA forward), as before rl_dlm/models/fused_projections.py (the default here, as in
`rl-dlm train`, fuses them); the fused mode then records its speed-up over it and the fraction of tokens both
draw alike (1.0 expected, up to rounding ties). A mode with `+compiled` runs RMSNorm, RoPE and SiLU·mul as the
fused compiled kernels of `compiled_elementwise` (rl_dlm/models/elementwise.py; its warm-up compiles them) and
records `speedup_of_compiled` and `token_agreement_without_compiled` against the same mode without it. A mode
with `+wide` draws its float64 Gumbel noise and
confidences at every block position, as before `rl_dlm.sampling.semi_ar.masked_positions` (the default draws
at the still masked positions only): `speedup_vs_wide` and `token_agreement_with_wide` (1.0 expected) likewise.
A mode with `+adds` adds each residual branch with its own kernel, as before rollouts accumulated it in the
output projection's GEMM (`rl_dlm.models.fused_projections.add_projection`): `speedup_vs_adds`
and `token_agreement_with_adds` (bf16 rounds the sum once instead of twice, so near-ties may flip).
Every mode reports `fraction_of_matmul`: its FLOPs (`rollout_flops`) per second over the 8192³ bf16 matmul
rate measured at start-up, a 14 ms burst at the card's highest clock; and `fraction_of_sustained_matmul`, over
the same product's rate after 3 s of it, when the card draws its power limit and lowers its clock as a
minutes-long 64-row rollout makes it do. A mode with `+graphs` also counts `graph_captures` in its timed
rollout: 0 when the graphs' memory budget (`--graph-gib`) holds every key of a rollout.

`--compare-old` also times every mode on the implementation before the exact speed-ups (bench/previous_paths.py:
full-canvas logits, textbook RoPE / RMSNorm, the previous semi-AR step loop) and records, per mode, its tokens/s,
the speed-up of the current code over it and the fraction of tokens both draw alike (1.0 expected; bf16
matrix products on a different number of rows may round differently, which can flip a near-tie).

Imports only torch/transformers/peft and rl_dlm's model and sampler modules (the GPU image has no hydra/trl).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.previous_paths import (FullLogitsPolicy, every_position, previous_paths,  # noqa: E402
                                  previous_semi_ar_sample, separate_residual_adds, unfused_projections)
from bench.stage_meter import matmul_tflops, sustained_matmul_tflops  # noqa: E402
from bench.record import write_record  # noqa: E402
from rl_dlm.models.elementwise import compile_elementwise  # noqa: E402
from rl_dlm.models.families import Family  # noqa: E402
from rl_dlm.models.llada import LLaDAConfig, LLaDAModelLM  # noqa: E402
from rl_dlm.models.fused_projections import fuse_projections  # noqa: E402
from rl_dlm.models.policy import LoraSettings, Policy, add_lora  # noqa: E402
from rl_dlm.sampling.cached import CachedSemiARSampler  # noqa: E402
from rl_dlm.sampling.semi_ar import SemiARSampler  # noqa: E402

LLADA_8B = dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288, vocab_size=126464,
                embedding_size=126464, rope_theta=500000.0, mask_token_id=126336, eos_token_id=126081,
                pad_token_id=126081)
TINY = dict(LLADA_8B, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, vocab_size=512,
            embedding_size=512, mask_token_id=500, eos_token_id=501, pad_token_id=501)


def build_policy(shape: dict, device: str) -> Policy:
    """Random bf16 weights straight on the device (no fp32 copy of 8B parameters)."""
    torch.set_default_dtype(torch.bfloat16 if device == "cuda" else torch.float32)
    with torch.device(device):
        model = LLaDAModelLM(LLaDAConfig(**shape)).eval()
    torch.set_default_dtype(torch.float32)
    fuse_projections(model)  # as load_policy does (fused_projections); "+unfused" modes undo it
    family = Family("llada", shape["mask_token_id"], 126348 if shape is LLADA_8B else 502, shape["pad_token_id"],
                    shift_logits=False)
    return Policy(model, tokenizer=None, family=family)


def body_and_head_params(shape: dict) -> tuple[int, int]:
    """(non-embedding parameters without the LM head, LM head parameters) of a LLaDA shape (bench/stage_meter.py
    counts FLOPs with these)."""
    d, ffn = shape["d_model"], shape["mlp_hidden_size"]
    return shape["n_layers"] * (4 * d * d + 3 * d * ffn), d * shape["embedding_size"]


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def sample_fn(sampler, previous: bool):
    """sampler.sample, or the implementation before the exact speed-ups (bench/previous_paths.py)."""
    if not previous:
        return sampler.sample
    if isinstance(sampler, SemiARSampler):
        return lambda policy, *args: previous_semi_ar_sample(sampler, FullLogitsPolicy(policy), *args)
    return lambda policy, *args: sampler.sample(FullLogitsPolicy(policy), *args)


@contextlib.contextmanager
def graphs(policy, on: bool):
    """Inside `Policy.inference()`, as the trainer's rollouts run, with `cuda_graphs` on or off."""
    policy.cuda_graphs = on
    try:
        with policy.inference():
            yield
    finally:
        policy.cuda_graphs = False


def timed(sampler, policy, prompts, mask, seeds, device, previous: bool = False, graphed: bool = False):
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with previous_paths(policy) if previous else contextlib.nullcontext(), graphs(policy, graphed):
        rollout = sample_fn(sampler, previous)(policy, prompts, mask, seeds)
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return rollout, seconds, peak


class _Budget(Exception):
    pass


class CountingPolicy:
    """Stops a rollout after `limit` forwards (to time the exact sampler's constant per-step cost cheaply)."""

    def __init__(self, policy, limit: int):
        self.policy, self.limit, self.calls = policy, limit, 0

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def logits(self, *args, **kwargs):
        if self.calls == self.limit:
            raise _Budget
        self.calls += 1
        return self.policy.logits(*args, **kwargs)


def timed_partial(sampler, policy, prompts, mask, seeds, device, limit: int, previous: bool = False,
                  graphed: bool = False):
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        with previous_paths(policy) if previous else contextlib.nullcontext(), graphs(policy, graphed):
            sample_fn(sampler, previous)(CountingPolicy(policy, limit), prompts, mask, seeds)
    except _Budget:
        pass
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return seconds, peak


BASELINES = ("unfused", "wide", "adds")  # suffixes that run the code an exact speed-up replaced, to compare in one run
OPTIONS = ("compiled",)  # suffixes that turn on an opt-in speed-up (compiled_elementwise), to compare in one run


def mode_parts(mode: str) -> tuple[str, set[str]]:
    """"dual+graphs+unfused" → ("dual", {"graphs", "unfused"})."""
    sampler, *flags = mode.split("+")
    unknown = set(flags) - {"graphs", *BASELINES, *OPTIONS}
    if unknown:
        raise ValueError(f"mode {mode!r}: unknown suffix {sorted(unknown)}; expected +graphs, +unfused, +wide, "
                         "+adds and/or +compiled")
    return sampler, set(flags)


@contextlib.contextmanager
def mode_code(policy, flags: set[str]):
    """The code before fused projections (+unfused), before masked-only draws (+wide) and before residual sums
    in the GEMM (+adds), and the compiled element-wise kernels (+compiled, rl_dlm/models/elementwise.py), as the
    flags ask."""
    with contextlib.ExitStack() as stack:
        if "unfused" in flags:
            stack.enter_context(unfused_projections(policy))
        if "adds" in flags:
            stack.enter_context(separate_residual_adds())
        if "wide" in flags:
            stack.enter_context(every_position())
        if "compiled" in flags:
            compile_elementwise(policy.model)
            stack.callback(compile_elementwise, policy.model, False)
        yield


def rollout_flops(mode: str, n: int, prompt: int, gen: int, steps: int, block: int, n_body: int, n_head: int) -> float:
    """FLOPs of one rollout, counted as bench/stage_meter.py does (2·N per token forwarded, the LM head on the
    block only): an exact step forwards the whole canvas, a cached refresh too, a cached window step its window."""
    mode = mode_parts(mode)[0]
    cache, _, every = mode.partition("_r")
    total, num_blocks = prompt + gen, gen // block
    per_block = steps // num_blocks
    flops = 0.0
    for b in range(num_blocks):
        lo = prompt + b * block
        for s in range(per_block):
            refresh = cache == "none" or s % (int(every) if every else per_block) == 0
            tokens = total if refresh else (total - lo if cache == "prefix" else block)
            flops += 2 * n_body * n * tokens + 2 * n_head * n * block
    return flops


def make_sampler(mode: str, **common):
    """"none" (exact), "prefix" or "dual"; "<cache>_r<k>" refreshes the cache every k steps within a block;
    "<mode>+graphs" is the same sampler with its forwards replayed from CUDA graphs (`Policy.cuda_graphs`),
    "<mode>+unfused" with each projection called as its own module, "<mode>+wide" drawing every block position."""
    mode = mode_parts(mode)[0]
    if mode == "none":
        return SemiARSampler(**common)
    cache, _, every = mode.partition("_r")
    if cache not in ("prefix", "dual"):
        raise ValueError(f"mode {mode!r}: expected none, prefix, dual, or <prefix|dual>_r<k>")
    return CachedSemiARSampler(**common, cache=cache, refresh_every=int(every) if every else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script, not the speed")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--modes", default="dual,prefix,none",
                    help="comma-separated: none, prefix, dual, dual_r2, ..., each with +graphs, +unfused, +wide "
                         "and/or +compiled")
    ap.add_argument("--exact-steps", type=int, default=0,
                    help="time the exact sampler over its first N steps only and scale (0 = the whole rollout); "
                         "valid because every exact step forwards the same full canvas")
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA adapters of this rank on every projection (0: none)")
    ap.add_argument("--autocast", action="store_true", help="run under bf16 autocast, as the trainer does")
    ap.add_argument("--graph-gib", type=float, default=None,
                    help="the graphs' output budget (GraphedForward.max_output_gib; default: the library's)")
    ap.add_argument("--compare-old", action="store_true",
                    help="also time each mode on the code before the exact speed-ups (bench/previous_paths.py)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    shape = TINY if args.tiny else LLADA_8B
    policy = build_policy(shape, device)
    if args.graph_gib is not None:
        policy.graphs.max_output_gib = args.graph_gib
    n_params = sum(p.numel() for p in policy.model.parameters())
    if args.lora_r:
        policy.model = add_lora(policy.model, LoraSettings(r=args.lora_r, alpha=64, dropout=0.05)).eval()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.autocast)
    autocast.__enter__()  # for the whole run: warm-up, timed rollouts, agreement checks
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 126000 if not args.tiny else 400, (args.n, args.prompt), generator=g).to(device)
    mask = torch.ones_like(prompts, dtype=torch.bool)
    seeds = torch.arange(args.n)
    common = dict(gen_length=args.gen, block_length=args.block, steps=args.steps, temperature=args.temperature)
    modes = args.modes.split(",")
    samplers = {m: make_sampler(m, **common) for m in modes}

    matmul = matmul_tflops(torch.device(device), size=64 if args.tiny else 8192)["tflops"]
    sustained = sustained_matmul_tflops(torch.device(device), **({"seconds": 0.2, "size": 64} if args.tiny else {}))

    def rates(flops: float, seconds: float) -> dict:
        return {"fraction_of_matmul": round(flops / seconds / 1e12 / matmul, 3),
                "fraction_of_sustained_matmul": round(flops / seconds / 1e12 / sustained, 3)}
    n_body, n_head = body_and_head_params(shape)
    # Warm-up: one short rollout per mode (kernel selection, allocator, +compiled's compilation), not timed.
    for m in modes:
        with mode_code(policy, mode_parts(m)[1]):
            timed(make_sampler(m, **{**common, "gen_length": args.block, "steps": 2}), policy, prompts, mask, seeds,
                  device)

    def run(m: str, previous: bool = False, warmups: int = 0) -> tuple[dict, torch.Tensor | None]:
        """One timed rollout of mode m after `warmups` untimed ones → (metrics, completion ids; None when only
        the first steps were timed)."""
        sampler_name, flags = mode_parts(m)
        policy.graphs.reset()  # each mode captures its own graphs; the last mode's free their memory
        with mode_code(policy, flags):
            for _ in range(warmups):
                run_as_is(m, sampler_name, "graphs" in flags, previous)
            before = policy.graphs.captures
            metrics, completion = run_as_is(m, sampler_name, "graphs" in flags, previous)
        if "graphs" in flags:  # captured during the timed rollout: > 0 means graphs were dropped and re-captured
            metrics["graph_captures"] = policy.graphs.captures - before
        return metrics, completion

    def run_as_is(m: str, sampler_name: str, graphed: bool, previous: bool):
        flops = rollout_flops(m, args.n, args.prompt, args.gen, args.steps, args.block, n_body, n_head)
        if sampler_name == "none" and 0 < args.exact_steps < args.steps:
            seconds, peak = timed_partial(samplers[m], policy, prompts, mask, seeds, device, args.exact_steps,
                                          previous, graphed)
            seconds *= args.steps / args.exact_steps
            return {"seconds": round(seconds, 2), "generated_tokens_per_s": round(args.n * args.gen / seconds, 1),
                    **rates(flops, seconds), "peak_memory_gib": round(peak, 2), "forwards": args.steps,
                    "timed_steps": args.exact_steps}, None
        rollout, seconds, peak = timed(samplers[m], policy, prompts, mask, seeds, device, previous, graphed)
        return {"seconds": round(seconds, 2), "generated_tokens_per_s": round(args.n * args.gen / seconds, 1),
                **rates(flops, seconds), "peak_memory_gib": round(peak, 2),
                "forwards": rollout.extras.get("forwards", args.steps)}, rollout.completion_ids

    results, ids = {}, {}
    for m in modes:
        flags = mode_parts(m)[1]
        # graphs: two untimed rollouts capture every window's graph (a key is captured at its second call; a
        # dual-cache refresh is called once per block and rollout; the short warm-up above has other shapes)
        results[m], ids[m] = run(m, warmups=2 if "graphs" in flags else 0)
        print(m, results[m], flush=True)
        if args.compare_old and not flags:
            old, old_ids = run(m, previous=True)
            results[m]["previous"] = old
            results[m]["speedup_vs_previous"] = round(results[m]["generated_tokens_per_s"]
                                                      / old["generated_tokens_per_s"], 3)
            if old_ids is None:  # the exact mode was timed partially: compare a whole first block instead
                one_block = make_sampler(m, **{**common, "gen_length": args.block,
                                               "steps": args.steps * args.block // args.gen})
                ids_new = timed(one_block, policy, prompts, mask, seeds, device)[0].completion_ids
                ids_old = timed(one_block, policy, prompts, mask, seeds, device, previous=True)[0].completion_ids
                results[m]["token_agreement_with_previous"] = round((ids_new == ids_old).float().mean().item(), 4)
                results[m]["token_agreement_with_previous_scope"] = "first block"
            else:
                results[m]["token_agreement_with_previous"] = round((ids[m] == old_ids).float().mean().item(), 4)
            print(m, "previous", old, "agreement", results[m]["token_agreement_with_previous"], flush=True)
    exact = ids.get("none")
    for m, r in results.items():
        if exact is not None and ids[m] is not None:
            r["token_agreement_with_exact"] = round((ids[m] == exact).float().mean().item(), 4)
        for flag in BASELINES:  # the speed-up over the code it replaced, measured in this run
            new = m.replace(f"+{flag}", "")
            if new != m and new in results:
                results[new][f"speedup_vs_{flag}"] = round(results[new]["generated_tokens_per_s"]
                                                           / r["generated_tokens_per_s"], 3)
                if ids[m] is not None and ids[new] is not None:
                    results[new][f"token_agreement_with_{flag}"] = round(
                        (ids[m] == ids[new]).float().mean().item(), 4)
        for flag in OPTIONS:  # the opt-in speed-up over the same mode without it, measured in this run
            old = m.replace(f"+{flag}", "")
            if old != m and old in results:
                r[f"speedup_of_{flag}"] = round(r["generated_tokens_per_s"] / results[old]["generated_tokens_per_s"], 3)
                if ids[m] is not None and ids[old] is not None:
                    r[f"token_agreement_without_{flag}"] = round((ids[m] == ids[old]).float().mean().item(), 4)
    base = results.get("none", {}).get("generated_tokens_per_s")
    if base:
        for r in results.values():
            r["speedup_vs_exact"] = round(r["generated_tokens_per_s"] / base, 2)
    record = write_record(
        Path(args.out) / "rollout.json", "rollout", results,
        units={"seconds": "s", "generated_tokens_per_s": "generated tokens / s",
               "speedup_vs_previous": "current tokens/s over the pre-speed-up code's (--compare-old)",
               "token_agreement_with_previous": "fraction of completion tokens equal to the pre-speed-up code's",
               "peak_memory_gib": "GiB (torch.cuda.max_memory_allocated)", "forwards": "model calls",
               "graph_captures": "CUDA graphs captured during the timed rollout (0: every key was kept)",
               "fraction_of_matmul": "achieved FLOP rate (rollout_flops) / the 8192³ bf16 matmul rate",
               "fraction_of_sustained_matmul": "the same / that matmul's rate after 3 s of it "
                                               "(bench/stage_meter.py sustained_matmul_tflops)"},
        matmul_tflops=round(matmul, 1), matmul_sustained_tflops=round(sustained, 1),
        model={"shape": "LLaDA-8B-Instruct" if not args.tiny else "tiny", "params": n_params,
               "dtype": str(next(policy.model.parameters()).dtype), "weights": "random"},
        workload={"lora_r": args.lora_r, "bf16_autocast": args.autocast, "graph_gib": policy.graphs.max_output_gib,
                  "sequences": args.n, "prompt_length": args.prompt, "gen_length": args.gen,
                  "steps": args.steps, "block_length": args.block, "temperature": args.temperature})
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
