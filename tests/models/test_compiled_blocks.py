"""Compiled block passes (rl_dlm/models/compiled_blocks.py): the eager logits and LoRA gradients through
gradient checkpointing, one compiled graph for all blocks of a kind of pass, nothing compiled for cached steps
or per prompt length, and the knob's plumbing. Each test compiles a tiny block (Inductor's C++ backend)."""
from __future__ import annotations

import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from rl_dlm.models.compiled_blocks import call_block, compile_blocks, compiled_call
from rl_dlm.models.elementwise import EAGER, compiled, compiled_modules
from rl_dlm.trainers.base import bf16_autocast
from tests.models.test_elementwise import BF16, native


def compiled_variants() -> int:
    """How many graphs dynamo holds for a block's pass (its cache is per code object, across models)."""
    return len(_debug_get_cache_entry_list(call_block.__code__))


def test_every_native_model_switches_with_its_element_wise_kernels_and_back():
    llada, dream = native("llada"), native("dream")
    assert compile_blocks(llada) == 1 and compile_blocks(dream) == 1
    for model in (llada, dream):
        base = model.get_base_model()
        assert base.compiled_block_call is compiled_call()
        assert all(m.elementwise is compiled() for m in compiled_modules(model))  # the eager RoPE splits graphs
    assert compile_blocks(llada, enabled=False) == 1 and llada.get_base_model().compiled_block_call is None
    assert compile_blocks(torch.nn.Linear(2, 2)) == 0  # another library's model runs as it is
    assert all(m.elementwise is EAGER for m in compiled_modules(native("llada")))  # a new model starts eager


def test_checkpointed_update_matches_eager_with_one_graph_for_every_block():
    """fp32 on the CPU: logits and LoRA gradients equal eager to float rounding, through the checkpoint's
    recompute (inside the compiled graph's backward). Three blocks and a sliced LM head: the first two blocks
    share one graph; the last runs only the kept queries eagerly, so a second prompt length compiles nothing."""
    results, variants = {}, []
    for mode in ("eager", "compiled"):
        model = native("llada", n_layers=3, dtype=torch.float32)
        compile_blocks(model, enabled=mode == "compiled")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        outs = []
        for start in (4, 6):
            before = compiled_variants()
            ids = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(start))
            out = model(input_ids=ids, logits_to_keep=slice(start, None)).logits
            out.square().mean().backward()
            outs.append(out.detach())
            variants.append(compiled_variants() - before)
        results[mode] = outs, [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert variants == [0, 0, 1, 0]
    (eager, eager_grads), (comp, comp_grads) = results["eager"], results["compiled"]
    for a, b in zip(comp, eager):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(comp_grads) == len(eager_grads) > 0
    for a, b in zip(comp_grads, eager_grads):
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-4)


def test_bf16_dream_under_autograd_and_a_cached_rollout_as_eager(tokenizer):
    """Under the trainer's autocast: a Dream pass under autograd gives the eager logits to bf16 rounding, a
    no-grad pass compiles no block graph, and a dual-cache rollout (every block reads its own layer's cache, so
    it stays eager) draws the eager tokens without compiling a block pass."""
    from rl_dlm.sampling.cached import CachedSemiARSampler
    from tests.conftest import make_tiny_policy

    logits = []
    for mode in ("eager", "compiled"):
        model = native("dream")
        compile_blocks(model, enabled=mode == "compiled")
        ids = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(1))
        with bf16_autocast("cpu", True):
            logits.append(model(input_ids=ids).logits.detach().float())
            before = compiled_variants()
            with torch.no_grad():
                model(input_ids=ids)
            assert compiled_variants() == before
    torch.testing.assert_close(logits[1], logits[0], **BF16)

    runs = []
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        policy = make_tiny_policy(tokenizer)
        compile_blocks(policy.model, enabled=mode == "compiled")
        sampler = CachedSemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9, cache="dual")
        before = compiled_variants()
        runs.append(sampler.sample(policy, torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]]),
                                   torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]]), torch.tensor([3, 4])).completion_ids)
        assert compiled_variants() == before
    assert torch.equal(*runs)


@pytest.mark.parametrize("enabled", [True, False])
def test_load_policy_compiles_blocks_when_told(enabled):
    from rl_dlm.models.policy import load_policy
    from tests.conftest import EMBEDDED

    policy = load_policy(EMBEDDED, compiled_blocks=enabled)
    native_model = policy.model  # no LoRA: the native model itself
    assert (native_model.compiled_block_call is not None) is enabled
    assert {m.elementwise.name for m in compiled_modules(policy.model)} == {"compiled" if enabled else "eager"}


def test_the_trainer_knob_is_checked_and_free_on_resume():
    from rl_dlm.checkpoint import FREE_KEYS
    from rl_dlm.trainers.base import RLConfig

    assert RLConfig().compiled_blocks is False and "compiled_blocks" in FREE_KEYS
    with pytest.raises((TypeError, ValueError), match="compiled_blocks"):
        RLConfig(compiled_blocks="yes")


def test_a_machine_that_cannot_compile_is_told_before_the_model_loads(monkeypatch):
    import shutil

    from rl_dlm.models.policy import load_policy

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="compiled_blocks=true needs a C"):
        load_policy("/nonexistent/checkpoint", device="cpu", compiled_blocks=True)
