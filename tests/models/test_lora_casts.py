"""rl_dlm/models/lora_casts.py: the adapted layers are found once per model and set of adapters, a new adapter is
seen, every flag comes back, and DoRA or an active dropout leaves peft's casts on. (That skipping them changes no
output or gradient is tests/test_exact_speedups.py's part 4.)"""
from __future__ import annotations

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

from rl_dlm.models.llada import LLaDAModelLM, tiny_llada_config
from rl_dlm.models.lora_casts import _inventory, lora_input_casts_skipped_if_redundant
from rl_dlm.models.policy import LoraSettings, add_lora


def adapted(dropout: float = 0.0, dora: bool = False):
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_llada_config(d_model=32, n_layers=2, n_heads=2, mlp_hidden_size=64)).eval()
    if dora:
        from peft import get_peft_model

        return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True))
    return add_lora(model, LoraSettings(r=4, alpha=8, dropout=dropout))


def flags(model) -> list[bool]:
    return [m.cast_input_dtype_enabled for m in model.modules() if isinstance(m, BaseTunerLayer)]


def test_the_module_tree_is_walked_once_per_set_of_adapters():
    model = adapted()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(3):
            with lora_input_casts_skipped_if_redundant(model, "cpu"):
                assert flags(model) and not any(flags(model))
            assert all(flags(model))  # restored
        first = _inventory(model)
        assert _inventory(model) is first  # taken once
        model.add_adapter("second", LoraConfig(r=2, target_modules=["q_proj"]))
        with lora_input_casts_skipped_if_redundant(model, "cpu"):
            assert not any(flags(model))  # the new adapter's layers too
        assert _inventory(model) is not first and all(flags(model))


def test_casts_stay_where_they_are_not_redundant():
    dropout, dora, plain = adapted(dropout=0.1).train(), adapted(dora=True), adapted()
    for model, autocast in ((dropout, True), (dora, True), (plain, False)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with lora_input_casts_skipped_if_redundant(model, "cpu"):
                assert flags(model) and all(flags(model))
