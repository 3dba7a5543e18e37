"""Each element-wise step of an 8B block forward (RoPE, RMSNorm, SiLU·mul), timed alone on the GPU in the
layouts the model hands it, against the bytes each must move at the copy rate the same run measures:
- eager (rl_dlm/models/rope.py, rms_norm.py);
- `compiled`, as the knob compiles them (rl_dlm/models/elementwise.py: automatic-dynamic shapes, so rows and
  tokens are symbolic after a first call at other sizes), `compiled_static`, and `compiled_dynamic` (every
  dimension symbolic: the knob before), and `compiled_flip` (a candidate RoPE without `cat`);
- RoPE also on a contiguous copy of q, before the heads are transposed and on [rows · tokens, heads, head_dim];
  SiLU·mul also on 2-D views; and the host cost of one RoPE forward and backward on a tensor too small for the
  GPU to matter.

    python bench/elementwise_kernels.py --out $OUT        # on a GPU (≈ 1 min); writes $OUT/elementwise_kernels.json
                                                          # and the compiled RoPE's kernels, rope_compiled_code.txt
    python bench/elementwise_kernels.py --tiny --out /tmp/e  # CPU check of the script itself
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch._inductor.utils import run_and_get_code

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import write_record  # noqa: E402
from rl_dlm.models import elementwise as ew  # noqa: E402
from rl_dlm.models.rope import rope_cos_sin  # noqa: E402


def flip_rope(t, cos, sin, full_precision):
    """A candidate form of the knob's RoPE: rotate_half as a flip of the two halves times (−1, 1) instead of a
    `cat` of slices, so the compiled kernel indexes without masked loads (the same values: negation is exact)."""
    dtype = torch.float32 if full_precision else t.dtype
    t_, cos, sin = t.to(dtype), cos.to(dtype), sin.to(dtype)
    sign = torch.tensor([[-1.0], [1.0]], dtype=dtype, device=t.device)
    rotated = (t_.unflatten(-1, (2, -1)).flip(-2) * sign).flatten(-2)
    return (t_ * cos + rotated * sin).to(t.dtype)


def timeit(fn, device, reps=10) -> float:
    for _ in range(2):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--rows", type=int, default=64)
    args = ap.parse_args()
    device = "cpu" if args.tiny else "cuda"
    rows, T, H, hd, F_ = (2, 40, 4, 16, 96) if args.tiny else (args.rows, 456, 32, 128, 12288)
    d = H * hd
    dt = torch.bfloat16
    qkv = torch.randn(rows, T, 3 * d, device=device, dtype=dt)
    q = qkv[..., :d].view(rows, T, H, hd).transpose(1, 2)  # the model's layout: a view of the packed output
    cos, sin = rope_cos_sin(torch.arange(T, device=device), hd, 500000.0)
    x = torch.randn(rows, T, d, device=device, dtype=dt)
    w = torch.randn(d, device=device, dtype=dt)
    gu = torch.randn(rows, T, 2 * F_, device=device, dtype=dt)
    gate, up = gu[..., :F_], gu[..., F_:]
    half_rows, half_t = max(rows // 2, 1), T // 2

    def build(name: str) -> ew.Elementwise:
        """One variant, compiled afresh (dynamo's cache is per function, so the variants must not share it)."""
        torch._dynamo.reset()
        ew.compiled.cache_clear()
        if name == "eager":
            return ew.EAGER
        if name == "compiled":  # the knob's kernels (automatic-dynamic shapes: rl_dlm/models/elementwise.py)
            kernels = ew.compiled()
        else:  # every dimension symbolic (the knob's kernels before), static, or RoPE without `cat`
            rope = flip_rope if name == "compiled_flip" else ew.textbook_rope
            dynamic = {"compiled_static": False, "compiled_dynamic": True}.get(name)
            kernels = ew.Elementwise(name, *(
                torch.compile(f, dynamic=dynamic, options={"emulate_precision_casts": True})
                for f in (ew.textbook_norm, rope, ew._silu_mul)))
        if name in ("compiled", "compiled_flip"):  # automatic-dynamic: as in a run, where rows and tokens change,
            # a first call at other sizes, so that the timed calls run the kernels with those two symbolic
            kernels.rope(q[:half_rows, :, :half_t], cos[:, :, :half_t], sin[:, :, :half_t], True)
            kernels.norm(x[:half_rows, :half_t], w, 1e-5)
            kernels.silu_mul(gate[:half_rows, :half_t], up[:half_rows, :half_t])
        return kernels

    res = {"shape": {"rows": rows, "tokens": T, "heads": H, "head_dim": hd, "mlp": F_}}
    # bytes each must move at least: RoPE and norm read and write bf16 activations, SiLU·mul reads two, writes one
    n_qk, n_x, n_f = q.numel(), x.numel(), gate.numel()
    floor_bytes = {"rope": 4 * n_qk, "norm": 4 * n_x, "silu_mul": 6 * n_f}
    for name in ("eager", "compiled", "compiled_static", "compiled_dynamic", "compiled_flip"):
        k = build(name)
        entry = {}
        entry["rope_ms"] = timeit(lambda: k.rope(q, cos, sin, True), device) * 1e3
        qc = q.contiguous()
        entry["rope_contiguous_ms"] = timeit(lambda: k.rope(qc, cos, sin, True), device) * 1e3
        # RoPE before the heads are transposed ([rows, tokens, heads, head_dim], tables [1, tokens, 1, head_dim]):
        # the inner two dimensions stay fixed, so fewer run-time index divisions
        q_bl, cos_bl, sin_bl = q.transpose(1, 2), cos.transpose(1, 2), sin.transpose(1, 2)
        entry["rope_before_transpose_ms"] = timeit(lambda: k.rope(q_bl, cos_bl, sin_bl, True), device) * 1e3
        # ... and with rows and tokens merged into one dimension ([rows · tokens, heads, head_dim], the tables
        # copied out to one row per token): one dynamic dimension, the fixed ones innermost
        q_rows = q_bl.flatten(0, 1)
        cos_rows, sin_rows = (c.expand(rows, T, 1, hd).flatten(0, 1).contiguous() for c in (cos_bl, sin_bl))
        entry["rope_rows_ms"] = timeit(lambda: k.rope(q_rows, cos_rows, sin_rows, True), device) * 1e3
        entry["norm_ms"] = timeit(lambda: k.norm(x, w, 1e-5), device) * 1e3
        entry["silu_mul_ms"] = timeit(lambda: k.silu_mul(gate, up), device) * 1e3
        # the same halves as [rows · tokens, mlp] views: one dynamic dimension instead of two
        entry["silu_mul_2d_ms"] = timeit(lambda: k.silu_mul(gate.flatten(0, 1), up.flatten(0, 1)), device) * 1e3
        small = torch.randn(1, 2, 8, hd, device=device, dtype=dt, requires_grad=True)

        def small_step():  # host cost per call: a forward and backward too small for the GPU to matter
            k.rope(small, cos[:, :, :8], sin[:, :, :8], True).sum().backward()

        entry["rope_autograd_small_ms"] = timeit(small_step, device) * 1e3
        res[name] = {a: round(b, 4) for a, b in entry.items()}
        print(name, res[name], flush=True)
    if device == "cuda":  # the copy rate the same run measures, as the bandwidth reference
        big = torch.empty(2**28, device=device, dtype=dt)
        s = timeit(lambda: big.clone(), device)
        gbps = 2 * big.numel() * 2 / s / 1e9
        res["copy_gb_per_s"] = round(gbps, 1)
        res["floor_ms_at_copy_rate"] = {k: round(v / gbps / 1e6, 4) for k, v in floor_bytes.items()}
    torch._dynamo.reset()
    ew.compiled.cache_clear()
    # the generated kernels of the knob's RoPE as a run uses them (compiled again at the second sizes), kept next
    # to the record for reading offline
    ew.compiled().rope(q[:half_rows, :, :half_t], cos[:, :, :half_t], sin[:, :, :half_t], True)
    rotated, code = run_and_get_code(ew.compiled().rope, q, cos, sin, True)
    (Path(args.out) / "rope_compiled_code.txt").write_text("\n\n".join(code))
    eq = torch.equal(rotated, ew.EAGER.rope(q, cos, sin, True))
    res["rope_flip_equal_eager"] = bool(torch.equal(flip_rope(q, cos, sin, True), ew.EAGER.rope(q, cos, sin, True)))
    res["rope_compiled_equal_eager"] = bool(eq)
    write_record(Path(args.out) / "elementwise_kernels.json", "elementwise_kernels", res,
                 {"ms": "milliseconds per call (mean of 10 after 2 warm-ups)", "copy_gb_per_s": "GB/s read + write"})
    print(res)


if __name__ == "__main__":
    main()
