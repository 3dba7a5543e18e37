"""Host time of skipping peft's input casts per forward, at the LLaDA-8B module tree with LoRA r 128 on every
projection (2 602 modules, built on the meta device: no weights, no GPU), against peft's own helper that the
code replaced (`peft.helpers.disable_input_dtype_casting` plus the dropout check by module name), in one run.

    python bench/lora_casts_host.py --out $OUT    # CPU, seconds; writes $OUT/lora_casts_host.json
    python bench/lora_casts_host.py --tiny --out /tmp/l
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import write_record  # noqa: E402
from bench.rollout import LLADA_8B, TINY  # noqa: E402
from rl_dlm.models.llada import LLaDAConfig, LLaDAModelLM  # noqa: E402
from rl_dlm.models.lora_casts import lora_input_casts_skipped_if_redundant  # noqa: E402
from rl_dlm.models.policy import LoraSettings, add_lora  # noqa: E402


@contextlib.contextmanager
def with_peft_helper(model: nn.Module, device_type: str):
    """The code before: the dropout check walks the module tree, peft's helper walks it twice more."""
    from peft.helpers import disable_input_dtype_casting

    redundant = (hasattr(model, "peft_config") and torch.is_autocast_enabled(device_type)
                 and not any(getattr(c, "use_dora", False) for c in model.peft_config.values())
                 and all(not m.training or m.p == 0 for n, m in model.named_modules()
                         if ".lora_dropout." in n and isinstance(m, nn.Dropout)))
    with disable_input_dtype_casting(model, active=redundant):
        yield


def per_call_ms(context, model, reps: int) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(3):
            with context(model, "cpu"):
                pass
        t = time.perf_counter()
        for _ in range(reps):
            with context(model, "cpu"):
                pass
    return (time.perf_counter() - t) / reps * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    with torch.device("meta"):
        model = LLaDAModelLM(LLaDAConfig(**(TINY if args.tiny else LLADA_8B)))
    model = add_lora(model, LoraSettings(r=128, alpha=64, dropout=0.0)).eval()
    res = {"modules": sum(1 for _ in model.modules()),
           "now_ms": round(per_call_ms(lora_input_casts_skipped_if_redundant, model, 50), 3),
           "before_ms": round(per_call_ms(with_peft_helper, model, 50), 3)}
    res["speedup"] = round(res["before_ms"] / res["now_ms"], 1)
    write_record(Path(args.out) / "lora_casts_host.json", "lora_casts_host", res,
                 {"now_ms": "host ms per entered context (mean of 50)", "before_ms": "likewise"})
    print(res)


if __name__ == "__main__":
    main()
