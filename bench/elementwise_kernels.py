"""Each element-wise step of an 8B block forward (RoPE, RMSNorm, SiLU·mul), timed alone on the GPU in the
layouts the model hands it: eager (rl_dlm/models/rope.py, rms_norm.py) and compiled (rl_dlm/models/elementwise.py)
with dynamic and with static shapes, and RoPE on a contiguous copy of q, against the bytes each must move; and
the host cost of one RoPE forward and backward on a tensor too small for the GPU to matter.

    python bench/elementwise_kernels.py --out $OUT        # on a GPU (≈ 1 min); writes $OUT/elementwise_kernels.json
    python bench/elementwise_kernels.py --tiny --out /tmp/e  # CPU check of the script itself
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import write_record  # noqa: E402
from rl_dlm.models import elementwise as ew  # noqa: E402
from rl_dlm.models.rope import rope_cos_sin  # noqa: E402


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
    static = ew.Elementwise("static", *(torch.compile(f, dynamic=False, fullgraph=True,
                                                      options={"emulate_precision_casts": True})
                                        for f in (ew._textbook_norm, ew._textbook_rope, ew._silu_mul)))
    variants = {"eager": ew.EAGER, "compiled": ew.compiled(), "compiled_static": static}
    res = {"shape": {"rows": rows, "tokens": T, "heads": H, "head_dim": hd, "mlp": F_}}
    # bytes each must move at least: RoPE and norm read and write bf16 activations, SiLU·mul reads two, writes one
    n_qk, n_x, n_f = q.numel(), x.numel(), gate.numel()
    floor_bytes = {"rope": 4 * n_qk, "norm": 4 * n_x, "silu_mul": 6 * n_f}
    for name, k in variants.items():
        entry = {}
        entry["rope_ms"] = timeit(lambda: k.rope(q, cos, sin, True), device) * 1e3
        qc = q.contiguous()
        entry["rope_contiguous_ms"] = timeit(lambda: k.rope(qc, cos, sin, True), device) * 1e3
        entry["norm_ms"] = timeit(lambda: k.norm(x, w, 1e-5), device) * 1e3
        entry["silu_mul_ms"] = timeit(lambda: k.silu_mul(gate, up), device) * 1e3
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
    eq = torch.equal(ew.compiled().rope(q, cos, sin, True), ew.EAGER.rope(q, cos, sin, True))
    res["rope_compiled_equal_eager"] = bool(eq)
    write_record(Path(args.out) / "elementwise_kernels.json", "elementwise_kernels", res,
                 {"ms": "milliseconds per call (mean of 10 after 2 warm-ups)", "copy_gb_per_s": "GB/s read + write"})
    print(res)


if __name__ == "__main__":
    main()
