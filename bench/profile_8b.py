"""Where an 8B forward and a LoRA update spend their GPU time, and what the candidate speed-ups would buy.

On random weights of the LLaDA-8B-Instruct shape (bf16, bench/rollout.py's builder), in one process:
- `matmul`: the 8192³ bf16 matmul rate (the reference every fraction here is taken against) and the GEMM rates
  of the canvas shapes (rows × 4096 → 4096 / 12288 / 24576, 12288 → 4096), i.e. the ceiling of the projections
  at a given batch and of fusing q/k/v or gate/up into one GEMM, timed back to back with the weights read from
  memory (`loop_seconds`, `weight_copies`);
- `forward`: one denoising-step forward (rows × (200 + 256), logits of one 32-token block), eager, base weights
  and LoRA r 128 under bf16 autocast (the trainer's rollout path), with the profiler's split of GPU time into
  GEMM, attention and everything else, and the top kernels;
- `forward_base_bs1`: the same split at batch size 1, where the projections are GEMMs of 456 rows;
- `dual_step_base`: one dual-cache step at the last `--rows` (the block's 32-token window against the cached K/V
  of the canvas, bench/rollout.py's dual modes), with its split;
- `graphs`: the forward at batch size 1 and at the first `--rows`, eager and replayed from the policy's CUDA
  graphs (`Policy.cuda_graphs`, rl_dlm/models/cuda_graphs.py), with a bit-for-bit comparison (whole rollouts
  both ways: `bench/rollout.py --modes none,none+graphs`);
- `update`: one LoRA r 128 update (6 rows, logits of the completion, fp32 log-softmax) with and without gradient
  checkpointing, its GPU-time split and peak memory;
- `update_compiled_blocks`: the checkpointed 6-row update with `compiled_blocks` (rl_dlm/models/compiled_blocks.py:
  each block's pass under autograd compiled whole), and `compiled_graph_breaks`, where dynamo split it (0
  expected);
- `sampling`: what a denoising step does after its forward, on random logits: the semi-AR draw (float64
  Gumbel argmax and confidence softmax over a 32-token block, half of it masked, T = 0.9) at the masked
  positions only (`draw_masked`) and at every position (as before), and one Dream sampler step's per-row
  draws (10 rows × 128 masked positions of the Dream-7B vocabulary, top-p 0.95, entropy confidence: the
  coupled-GRPO recipe's), against the forward they follow;
- `*_compiled_elementwise`: the forwards, the batch-size-1 graphs and the checkpointed update with RMSNorm,
  RoPE and SiLU·mul as the fused compiled kernels of `compiled_elementwise` (rl_dlm/models/elementwise.py),
  with `compile_s`, the seconds its first call took;
- `*_unfused`: the forwards (base and LoRA), their batch-size-1 graphs and the checkpointed update with each
  projection called as its own module, as before rl_dlm/models/fused_projections.py (everything else runs
  fused, as `rl-dlm train` does).

FLOPs are counted as bench/stage_meter.py does (2·N per token forwarded, LM head on the kept positions only,
attention not counted); an update with checkpointing counts 6·N per token (forward, recompute, input gradients),
without it 4·N.

    python bench/profile_8b.py --out $OUT          # on a GPU (≈ 5 min); writes $OUT/profile_8b.json
    python bench/profile_8b.py --tiny --out /tmp/p # CPU check of the script itself
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

from bench.previous_paths import unfused_projections  # noqa: E402
from bench.record import write_record  # noqa: E402
from bench.rollout import LLADA_8B, TINY, body_and_head_params, build_policy, graphs, sync  # noqa: E402
from bench.stage_meter import matmul_tflops  # noqa: E402
from rl_dlm.models.compiled_blocks import compile_blocks  # noqa: E402
from rl_dlm.models.elementwise import compile_elementwise  # noqa: E402
from rl_dlm.models.kv_cache import BlockKVCache, block_logits  # noqa: E402
from rl_dlm.models.policy import LoraSettings, add_lora  # noqa: E402
from rl_dlm.sampling.dream import DreamSampler, sample_tokens  # noqa: E402
from rl_dlm.sampling.rollout import row_generator  # noqa: E402
from rl_dlm.sampling.semi_ar import draw_masked, masked_positions  # noqa: E402

GEMM_MARKERS = ("gemm", "nvjet", "cutlass", "xmma", "cublas", "splitk", "matmul")
ATTN_MARKERS = ("flash", "fmha", "attention", "sdpa")


def category(kernel: str) -> str:
    k = kernel.lower()
    if any(m in k for m in ATTN_MARKERS):
        return "attention"
    return "gemm" if any(m in k for m in GEMM_MARKERS) else "other"


def timeit(fn, device: str, warmup: int = 2, reps: int = 5) -> float:
    """Median seconds of fn() over reps calls after warmup calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def profile_split(fn, device: str) -> dict:
    """GPU time of one fn() call split by kernel category, with the ten longest kernels."""
    if device != "cuda":
        fn()
        return {}
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    kernels = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if us > 0 and str(e.device_type).endswith("CUDA"):
            kernels.append((e.key, us / 1e3, e.count))
    total = sum(ms for _, ms, _ in kernels)
    split = {}
    for name, ms, _ in kernels:
        split[category(name)] = split.get(category(name), 0.0) + ms
    kernels.sort(key=lambda k: -k[1])
    return {"gpu_ms": round(total, 2), "split_ms": {k: round(v, 2) for k, v in split.items()},
            "top": [{"kernel": n[:100], "ms": round(ms, 2), "calls": c} for n, ms, c in kernels[:10]]}


def loop_seconds(fn, device: str, calls: int = 24, warmup: int = 3) -> float:
    """Mean seconds of fn() over `calls` back-to-back calls between two synchronisations: a kernel of tens of
    microseconds is timed without the host's launch and synchronisation latency, which `timeit` includes."""
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - t) / calls


def weight_copies(k: int, n: int, device: str, dtype: torch.dtype, cache_bytes: int = 200 * 2**20) -> list:
    """Enough [n, k] weights that cycling through them reads each from memory, not from the 50 MB L2 cache, as
    a forward does (each layer's weights are read once per step)."""
    count = min(16, max(2, -(-cache_bytes // (k * n * torch.finfo(dtype).bits // 8))))  # 16: the tiny shapes
    return [torch.randn(n, k, device=device, dtype=dtype) / k**0.5 for _ in range(count)]


def gemm_tflops(m: int, k: int, n: int, device: str) -> float:
    """The rate of [m, k] × [k, n] products as F.linear runs them, weights read from memory (`weight_copies`)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(m, k, device=device, dtype=dtype)
    ws = weight_copies(k, n, device, dtype)
    s = loop_seconds(lambda: [torch.nn.functional.linear(a, w) for w in ws], device) / len(ws)
    return 2 * m * k * n / s / 1e12


DREAM_VOCAB = 152064


def sampling_entry(rows: int, vocab: int, device: str, block: int = 32) -> dict:
    """Milliseconds of one semi-AR step's draw over a block with half its positions masked: at the masked
    positions only (the samplers' default) and at every position (before `masked_positions`)."""
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(rows, block, vocab, device=device, generator=g).to(torch.bfloat16)
    still = torch.rand(rows, block, device=device, generator=g).argsort(1) < block // 2
    gens = [row_generator(i, "bench", device) for i in range(rows)]
    entry = {"rows": rows, "block": block, "masked": block // 2}
    for key, positions in (("masked_only_ms", masked_positions(still)), ("every_position_ms", None)):
        draw = lambda: draw_masked(logits, still, positions, 0.9, "low_confidence", gens)  # noqa: E731
        entry[key] = round(timeit(draw, device) * 1e3, 2)
    entry["speedup"] = round(entry["every_position_ms"] / entry["masked_only_ms"], 2)
    return entry


def dream_sampling_entry(rows: int, masked: int, vocab: int, device: str) -> dict:
    """Milliseconds of one Dream sampler step's per-row draws (coupled-GRPO's recipe: T 1.2, top-p 0.95,
    entropy confidence), without the forward."""
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(rows, masked, vocab, device=device, generator=g).to(torch.bfloat16)
    sampler = DreamSampler(temperature=1.2, top_p=0.95, alg="entropy")
    gens = [row_generator(i, "bench", device) for i in range(rows)]
    t, s = torch.tensor(0.5, device=device), torch.tensor(0.49, device=device)

    def step():
        for row, gen in enumerate(gens):
            _, conf = sample_tokens(logits[row], sampler.temperature, sampler.top_p, sampler.top_k, sampler.alg, gen)
            sampler.reveal(conf, 100, t, s, gen)

    return {"rows": rows, "masked": masked, "vocab": vocab, "ms": round(timeit(step, device) * 1e3, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory for profile_8b.json")
    ap.add_argument("--rows", default="12,64", help="forward batch sizes (rows) to time")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the compiled_blocks update entry")
    ap.add_argument("--skip-unfused", action="store_true", help="leave out the *_unfused entries")
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script, not the speed")
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--gen", type=int, default=256)
    args = ap.parse_args()
    device = "cpu" if args.tiny else "cuda"
    shape = TINY if args.tiny else LLADA_8B
    d, ffn, layers, vocab = shape["d_model"], shape["mlp_hidden_size"], shape["n_layers"], shape["vocab_size"]
    n_body, n_head = body_and_head_params(shape)
    T, P, block = args.prompt + args.gen, args.prompt, 32
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"shape": {"d_model": d, "mlp": ffn, "layers": layers, "vocab": vocab, "tokens": T}}

    units = {"ms": "milliseconds", "s": "seconds", "fraction": "achieved FLOP rate / matmul_8192_tflops",
             "gemm_fraction_of_matmul": "MxKxN GEMM rate / matmul_8192_tflops", "peak_gib": "GiB allocated"}

    def save():
        write_record(out / "profile_8b.json", "profile_8b", res, units)

    ref = matmul_tflops(torch.device(device), size=64 if args.tiny else 8192)["tflops"]
    res["matmul_8192_tflops"] = round(ref, 1)
    rows = [int(r) for r in args.rows.split(",")]
    gemms = {}
    for r in rows + [1]:
        m = r * T
        for k, n in ((d, d), (d, 3 * d), (d, ffn), (d, 2 * ffn), (ffn, d)):
            gemms[f"{m}x{k}x{n}"] = round(gemm_tflops(m, k, n, device) / ref, 3)
    res["gemm_fraction_of_matmul"] = gemms
    save()
    res["sampling"] = {"semi_ar": [sampling_entry(r, vocab, device) for r in rows],
                       "dream": dream_sampling_entry(10, 8 if args.tiny else 128, vocab if args.tiny else DREAM_VOCAB,
                                                     device)}
    save()

    policy = build_policy(shape, device)
    model = policy.model
    head_flops = 2 * n_head

    def forward_flops(r: int, kept: int) -> float:
        return 2 * n_body * r * T + head_flops * r * kept

    def step_forward(ids):
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            return policy.logits(ids, keep=slice(P, P + block))

    def forward_entry(r: int) -> dict:
        ids = torch.randint(0, vocab - 100, (r, T), device=device)
        s = timeit(lambda: step_forward(ids), device)
        entry = {"rows": r, "ms": round(s * 1e3, 2), "fraction": round(forward_flops(r, block) / s / 1e12 / ref, 3)}
        entry.update(profile_split(lambda: step_forward(ids), device))
        return entry

    def graph_entry(r: int) -> dict:
        """One step's forward at r rows, eager and replayed from the policy's CUDA graphs (`cuda_graphs`)."""
        ids = torch.randint(0, vocab - 100, (r, T), device=device)
        eager = step_forward(ids)
        entry = {"rows": r, "eager_ms": round(timeit(lambda: step_forward(ids), device, reps=10) * 1e3, 2)}
        with graphs(policy, True):  # the first call runs eagerly, the second captures (timeit's warm-ups)
            entry["graph_ms"] = round(timeit(lambda: step_forward(ids), device, reps=10) * 1e3, 2)
            entry["graph_equal"] = bool(torch.equal(step_forward(ids), eager))
        entry["compute_floor_ms"] = round(forward_flops(r, block) / (ref * 1e12) * 1e3, 2)
        return entry

    def dual_step_entry(r: int) -> dict:
        """One dual-cache step at r rows (`cache="dual"`, bench/rollout.py's dual modes): the first block's
        32-token window forwarded against the K/V that a refresh of the canvas stored."""
        ids = torch.randint(0, vocab - 100, (r, T), device=device)
        positions, cache = torch.arange(T, device=device).expand(r, T), BlockKVCache()

        def step(refresh: bool = False):
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                return block_logits(policy, ids, None, positions, cache, P, P + block, P + block, refresh)

        step(refresh=True)
        s = timeit(step, device)
        flops = 2 * n_body * r * block + head_flops * r * block
        return {"rows": r, "ms": round(s * 1e3, 2), "fraction": round(flops / s / 1e12 / ref, 3),
                **profile_split(step, device)}

    @contextlib.contextmanager
    def compiled_kernels(first_call):
        """The compiled element-wise kernels, compiled by `first_call` (timed as `compile_s`)."""
        compile_elementwise(policy.model)
        t = time.perf_counter()
        first_call()
        sync(device)
        try:
            yield round(time.perf_counter() - t, 1)
        finally:
            compile_elementwise(policy.model, enabled=False)

    model.eval()
    res["forward_base"] = [forward_entry(r) for r in rows]
    res["forward_base_bs1"], res["dual_step_base"] = forward_entry(1), dual_step_entry(rows[-1])
    save()
    res["graphs_base"] = [graph_entry(1), graph_entry(rows[0])]
    save()
    ids0 = torch.randint(0, vocab - 100, (rows[0], T), device=device)
    with compiled_kernels(lambda: step_forward(ids0)) as compile_s:
        res["forward_base_compiled_elementwise"] = [{"compile_s": compile_s, **forward_entry(rows[0])}] + [
            forward_entry(r) for r in rows[1:]]
        res["graphs_base_compiled_elementwise"] = [graph_entry(1)]
        res["forward_base_bs1_compiled_elementwise"] = forward_entry(1)
        res["dual_step_base_compiled_elementwise"] = dual_step_entry(rows[-1])
    save()
    if not args.skip_unfused:
        with unfused_projections(policy):  # each projection its own module, as before fused_projections.py
            res["forward_base_unfused"] = [forward_entry(r) for r in rows]
            res["graphs_base_unfused"] = [graph_entry(1)]
        save()

    model = policy.model = add_lora(model, LoraSettings(r=128, alpha=64, dropout=0.0))
    if device == "cuda":
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.data = p.data.float()
                if "lora_B" in name:
                    p.data.normal_(0, 0.02)  # a trained adapter: its matmuls do real work
    model.eval()
    res["forward_lora"] = [forward_entry(r) for r in rows]
    save()
    res["graphs_lora"] = [graph_entry(1), graph_entry(rows[0])]
    save()
    with compiled_kernels(lambda: step_forward(ids0)) as compile_s:
        res["forward_lora_compiled_elementwise"] = [{"compile_s": compile_s, **forward_entry(rows[0])}]
    save()
    if not args.skip_unfused:
        with unfused_projections(policy):
            res["forward_lora_unfused"] = [forward_entry(rows[0])]
            res["graphs_lora_unfused"] = [graph_entry(1)]
        save()

    def update(r: int, checkpointing: bool):
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        else:
            model.gradient_checkpointing_disable()
        ids = torch.randint(0, vocab - 100, (r, T), device=device)
        targets = torch.randint(0, vocab - 100, (r, args.gen), device=device)

        def step():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = policy.logits(ids, keep=slice(P, None))
            logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])
            logp.mean().backward()
            model.zero_grad(set_to_none=True)

        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        s = timeit(step, device, warmup=1, reps=3)
        mult = 6 if checkpointing else 4
        flops = mult * n_body * r * T + 2 * head_flops * r * args.gen
        entry = {"rows": r, "checkpointing": checkpointing, "s": round(s, 3),
                 "fraction": round(flops / s / 1e12 / ref, 3),
                 "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device == "cuda" else None}
        entry.update(profile_split(step, device))
        model.eval()
        return entry

    res["update"] = [update(6, True), update(6, False), update(12, True)]
    with compiled_kernels(lambda: None):  # timeit's warm-up compiles the autograd graphs
        res["update_compiled_elementwise"] = [update(6, True)]
    if not args.skip_unfused:
        with unfused_projections(policy):
            res["update_unfused"] = [update(6, True)]
    model.gradient_checkpointing_disable()
    save()

    if not args.skip_compile:
        from torch._dynamo.utils import counters

        compile_blocks(policy.model)  # the knob compiled_blocks: passes under autograd; timeit's warm-up compiles
        res["update_compiled_blocks"] = [update(6, True)]
        res["compiled_graph_breaks"] = sum(counters["graph_break"].values())
        save()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
