"""The LLaDA-8B projections' GEMMs alone, at the row counts a run uses: how close cuBLAS comes to the matmul rate,
and whether Inductor's autotuned GEMMs come closer.

Why
    At batch size 1 an exact denoising step forwards 456 tokens: the captured step takes 17.1 ms on an H100
    against an 8.05 ms compute floor (`graphs_base` in
    bench/results/h100_compiled_blocks_2026-12-05/profile/profile_8b.json), with every kernel replayed from a
    CUDA graph. At M = 456 rows a GEMM is a few tiles tall: attn_out (4096 → 4096)
    and ff_out (12288 → 4096) fill 64 output tiles of 128 × 256 on 132 SMs, under half a wave. Whether the
    batch-size-1 target (2× the issue's 68 tokens/s) is reachable depends on how fast these shapes can run,
    which this measures before any model code changes.

What it times
    `F.linear(x, W)` as the model calls it (W [N, K] bf16, x [M, K] bf16), for the four projections of a block
    (q/k/v packed, attn_out, ff_proj/up_proj packed, ff_out) at M = 456 (batch size 1), 2 048 (a 64-row
    dual-cache window), 5 472 (12 rows) and 29 184 (64 rows): cuBLAS (eager), and the same call under
    `torch.compile(mode="max-autotune-no-cudagraphs")`, which times Inductor's Triton GEMM templates against
    cuBLAS for each shape and keeps the fastest. Each entry: ms, the fraction of the 8192³ bf16 matmul rate this
    script measures, and the largest difference of the autotuned output from cuBLAS's relative to the output's
    largest entry (a different kernel sums in another order: bf16 rounding). `block` sums one block's four GEMMs.
    Calls run back to back, cycling through weight copies larger than the L2 cache (`weight_copies`): a call
    timed between two synchronisations adds the host's latency, a large part of a 456-row GEMM's tens of
    microseconds.

    python bench/gemm_shapes.py --out $OUT            # on a GPU: $OUT/gemm_shapes.json (a few minutes of tuning)
    python bench/gemm_shapes.py --tiny --out /tmp/g   # CPU check of the script (default compile mode)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.profile_8b import loop_seconds, weight_copies  # noqa: E402
from bench.record import write_record  # noqa: E402
from bench.stage_meter import matmul_tflops  # noqa: E402

# (name, K, N) of LLaDA-8B's block projections as the packed weights run them (rl_dlm/models/fused_projections.py)
PROJECTIONS_8B = (("qkv", 4096, 3 * 4096), ("attn_out", 4096, 4096), ("ff_up", 4096, 2 * 12288),
                  ("ff_out", 12288, 4096))
ROWS_8B = (456, 2048, 5472, 29184)
TINY = ((("qkv", 64, 192), ("attn_out", 64, 64), ("ff_up", 64, 192), ("ff_out", 96, 64)), (7, 33))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true", help="small shapes on the CPU: checks the script, not the speed")
    args = ap.parse_args()
    device = "cpu" if args.tiny else "cuda"
    projections, row_counts = TINY if args.tiny else (PROJECTIONS_8B, ROWS_8B)
    import torch._dynamo

    limit = 4 * len(projections) * len(row_counts)  # one compile per shape
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    tuned = torch.compile(F.linear, dynamic=False, mode=None if args.tiny else "max-autotune-no-cudagraphs")
    ref = matmul_tflops(torch.device(device), size=256 if args.tiny else 8192)["tflops"]

    metrics: dict = {"matmul_tflops": round(ref, 1)}
    for m in row_counts:
        entries, totals = {}, {"flops": 0.0, "cublas_ms": 0.0, "autotuned_ms": 0.0}
        for name, k, n in projections:
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            ws = weight_copies(k, n, device, torch.bfloat16)  # read from memory, as a forward reads its weights
            w = ws[0]
            flops = 2.0 * m * k * n
            cublas_s = loop_seconds(lambda: [F.linear(x, w) for w in ws], device) / len(ws)
            tuned(x, w)  # compiles and tunes
            tuned_s = loop_seconds(lambda: [tuned(x, w) for w in ws], device) / len(ws)
            expected = F.linear(x, w).float()
            diff = (tuned(x, w).float() - expected).abs().max().item() / expected.abs().max().item()
            entries[name] = {"cublas_ms": round(cublas_s * 1e3, 4), "autotuned_ms": round(tuned_s * 1e3, 4),
                             "cublas_fraction": round(flops / cublas_s / 1e12 / ref, 3),
                             "autotuned_fraction": round(flops / tuned_s / 1e12 / ref, 3),
                             "autotuned_speedup": round(cublas_s / tuned_s, 3),
                             "max_rel_difference": diff}
            totals["flops"] += flops
            totals["cublas_ms"] += cublas_s * 1e3
            totals["autotuned_ms"] += tuned_s * 1e3
            print(f"M={m} {name}: {entries[name]}", flush=True)
        entries["block"] = {"cublas_ms": round(totals["cublas_ms"], 4),
                            "autotuned_ms": round(totals["autotuned_ms"], 4),
                            "cublas_fraction": round(totals["flops"] / totals["cublas_ms"] / 1e9 / ref, 3),
                            "autotuned_fraction": round(totals["flops"] / totals["autotuned_ms"] / 1e9 / ref, 3)}
        metrics[f"rows_{m}"] = entries
    write_record(Path(args.out) / "gemm_shapes.json", "gemm_shapes", metrics,
                 units={"matmul_tflops": "TFLOP/s (8192³ bf16)",
                        "*_ms": "ms per call (mean of back-to-back calls, weights cycled from memory)",
                        "*_fraction": "FLOP rate / matmul_tflops", "max_rel_difference": "max |Δ| / max |cuBLAS out|"},
                 shapes={name: [k, n] for name, k, n in projections})


if __name__ == "__main__":
    main()
