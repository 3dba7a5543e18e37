"""Skip peft's cast of each adapted layer's input to fp32 where bf16 autocast undoes it at once.

What it does
    peft casts each adapted layer's input to the adapter weights' dtype (fp32) before `lora_A`. Under autocast
    `lora_A` casts it straight back to the autocast dtype, so x → fp32 → bf16 gives x itself (a bf16 or fp32 input
    survives the round trip exactly): the cast only costs two passes over every adapted layer's input (~13 GB per
    layer per step of a 64 × 456-token LLaDA-8B rollout), and under autograd two more in the backward and an extra
    saved copy of the input. `lora_input_casts_skipped_if_redundant` turns it off (peft's `cast_input_dtype_enabled`
    flag, which peft's own `disable_input_dtype_casting` sets) when autocast is on, every LoRA dropout is the
    identity (eval mode or p = 0, as `disable_dropout` leaves them; dropout on the fp32 copy would round
    differently) and every adapter is plain LoRA (no DoRA-style variant that reads the cast input). The forward
    is bit-identical; with gradients, the cast nodes' backward passes were exact too (bf16 → fp32 → bf16), so the
    gradients are the same values, summed into the input's gradient in the same order
    (tests/test_exact_speedups.py).

Why not peft's `disable_input_dtype_casting` itself
    It walks the whole module tree twice per call, and the dropout check a third time: 7.5 ms of host time per
    forward at LLaDA-8B with LoRA (2 602 modules). A sampler syncs with the GPU once per denoising step, so that
    host time left the GPU idle at every step of every rollout. The adapted layers and their dropouts are found
    once per model and set of adapters (`_inventory`) and the flag is set on them directly, as peft's helper
    does: 0.65 ms per forward, 11.6× less (`python bench/lora_casts_host.py --out $OUT`, on the CPU: the host
    cost does not depend on the device; bench/results/cpu_lora_casts_host/).

    with lora_input_casts_skipped_if_redundant(model, "cuda"):
        logits = model(input_ids=ids).logits
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["lora_input_casts_skipped_if_redundant"]


@dataclass(frozen=True)
class _Inventory:
    adapters: tuple  # the adapter names it was taken for: another adapter added or removed means a new inventory
    tuner_layers: tuple[nn.Module, ...]  # peft's adapted layers (those with `cast_input_dtype_enabled`)
    dropouts: tuple[nn.Dropout, ...]  # the LoRA dropouts
    dora: bool  # an adapter with a variant that reads the cast input


_INVENTORIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inventory(model: nn.Module) -> _Inventory:
    adapters = tuple(model.peft_config)
    known = _INVENTORIES.get(model)
    if known is not None and known.adapters == adapters:
        return known
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuners, dropouts = [], []
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            tuners.append(module)
        elif ".lora_dropout." in name and isinstance(module, nn.Dropout):
            dropouts.append(module)
    dora = any(getattr(c, "use_dora", False) for c in model.peft_config.values())
    _INVENTORIES[model] = known = _Inventory(adapters, tuple(tuners), tuple(dropouts), dora)
    return known


@contextlib.contextmanager
def lora_input_casts_skipped_if_redundant(model: nn.Module, device_type: str):
    """Within the context, peft's adapted layers of `model` take their input as it is where autocast would undo
    the cast (see the module docstring); elsewhere, and for a model without adapters, nothing changes."""
    if not (hasattr(model, "peft_config") and torch.is_autocast_enabled(device_type)):
        yield
        return
    inventory = _inventory(model)
    if inventory.dora or any(m.training and m.p != 0 for m in inventory.dropouts):
        yield
        return
    saved = [layer.cast_input_dtype_enabled for layer in inventory.tuner_layers]
    for layer in inventory.tuner_layers:
        layer.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for layer, value in zip(inventory.tuner_layers, saved):
            layer.cast_input_dtype_enabled = value
