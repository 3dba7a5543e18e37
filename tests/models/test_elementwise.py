"""Compiled element-wise kernels (rl_dlm/models/elementwise.py): every native block and norm switches, and the
fused RMSNorm, RoPE and SiLU·mul give the eager code's logits, LoRA gradients and rollout tokens to bf16
rounding, as the bf16 trainer runs them (bf16 base weights, fp32 LoRA, autocast, packed projections).

Each test compiles the three functions once per process and dtype (Inductor's C++ backend, seconds)."""
from __future__ import annotations

import pytest
import torch

from rl_dlm.models.dream import DreamModel, tiny_dream_config
from rl_dlm.models.elementwise import EAGER, compile_elementwise, compiled, compiled_modules
from rl_dlm.models.fused_projections import fuse_projections
from rl_dlm.models.llada import LLaDAModelLM, tiny_llada_config
from rl_dlm.models.policy import LoraSettings, add_lora
from rl_dlm.trainers.base import bf16_autocast

# bf16 logits of unit scale: the fused projections' tolerance (tests/models/test_fused_projections.py)
BF16 = dict(atol=5e-2, rtol=2e-2)


def native(family: str, seed: int = 0, n_layers: int = 2, dtype: torch.dtype = torch.bfloat16):
    """A tiny native model with `dtype` (bf16) base weights, packed projections and fp32 LoRA of non-zero B."""
    torch.manual_seed(seed)
    if family == "llada":
        model = LLaDAModelLM(tiny_llada_config(vocab_size=130, d_model=64, n_layers=n_layers, n_heads=4,
                                               mlp_hidden_size=80))
    else:
        model = DreamModel(tiny_dream_config(vocab_size=130))
    model = model.eval().to(dtype)
    fuse_projections(model)
    model = add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def test_every_native_block_and_norm_switches_and_back():
    llada, dream = native("llada"), native("dream")
    # LLaDA: 2 blocks (RoPE, SiLU·mul) + 2 × 2 block norms + ln_f; Dream: 2 attentions + 2 MLPs + 2 × 2 + norm
    assert compile_elementwise(llada) == 7 and compile_elementwise(dream) == 9
    assert all(m.elementwise is compiled() for m in compiled_modules(llada) + compiled_modules(dream))
    assert compile_elementwise(llada, enabled=False) == 7
    assert all(m.elementwise is EAGER for m in compiled_modules(llada))
    assert compile_elementwise(torch.nn.Linear(2, 2)) == 0  # another library's model runs as it is


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_logits_and_lora_gradients_match_eager(family):
    """With gradient checkpointing (the update's recompute runs the compiled forward again) and two canvas
    shapes (the kernels are shape-generic); the sliced LM head exercises the queries' RoPE tables."""
    grads, logits = {}, {}
    for mode in ("eager", "compiled"):
        model = native(family)
        compile_elementwise(model, enabled=mode == "compiled")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        outs = []
        for rows, length in ((3, 24), (2, 17)):
            ids = torch.randint(0, 128, (rows, length), generator=torch.Generator().manual_seed(length))
            with bf16_autocast("cpu", True):
                out = model(input_ids=ids, logits_to_keep=slice(4, None)).logits
            out.float().square().mean().backward()
            outs.append(out.detach().float())
        logits[mode] = outs
        grads[mode] = [p.grad.float() for n, p in model.named_parameters() if p.grad is not None]
    for a, b in zip(logits["compiled"], logits["eager"]):
        torch.testing.assert_close(a, b, **BF16)
    assert len(grads["compiled"]) == len(grads["eager"]) > 0
    for a, b in zip(grads["compiled"], grads["eager"]):
        # the RMSNorm scale's backward keeps fp32 where eager rounds to bf16: gradients agree to bf16 rounding
        torch.testing.assert_close(a, b, atol=1e-3 * b.abs().max().item(), rtol=3e-2)


def test_bf16_rollout_draws_the_same_tokens(tokenizer):
    """The block sampler's steps (kept windows of several lengths, batch rows, no gradient) under the trainer's
    autocast: the same tokens as the eager kernels."""
    from rl_dlm.sampling.semi_ar import SemiARSampler
    from tests.conftest import make_tiny_policy

    runs = []
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        policy = make_tiny_policy(tokenizer)
        policy.model.to(torch.bfloat16)
        fuse_projections(policy.model)
        compile_elementwise(policy.model, enabled=mode == "compiled")
        sampler = SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9)
        prompt = torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]])
        mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
        with bf16_autocast("cpu", True):
            runs.append(sampler.sample(policy, prompt, mask, torch.tensor([3, 4])).completion_ids)
    assert torch.equal(*runs)


@pytest.mark.parametrize("enabled", [True, False])
def test_load_policy_compiles_when_told(enabled):
    from rl_dlm.models.policy import load_policy
    from tests.conftest import EMBEDDED

    policy = load_policy(EMBEDDED, compiled_elementwise=enabled)
    kernels = {m.elementwise.name for m in compiled_modules(policy.model)}
    assert kernels == {"compiled" if enabled else "eager"}


def test_the_trainer_knob_is_checked_and_free_on_resume():
    from rl_dlm.checkpoint import FREE_KEYS
    from rl_dlm.trainers.base import RLConfig

    assert RLConfig().compiled_elementwise is False and "compiled_elementwise" in FREE_KEYS
    with pytest.raises((TypeError, ValueError), match="compiled_elementwise"):
        RLConfig(compiled_elementwise="yes")


@pytest.mark.parametrize("device,missing", [("cpu", "compiler"), ("cuda", "triton")])
def test_a_machine_that_cannot_compile_is_told_before_the_model_loads(monkeypatch, device, missing):
    import importlib.util
    import shutil

    from rl_dlm.models.policy import load_policy

    if missing == "compiler":
        monkeypatch.setattr(shutil, "which", lambda name: None)
    else:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(ValueError, match="compiled_elementwise=true needs"):  # not the missing checkpoint's error
        load_policy("/nonexistent/checkpoint", device=device, compiled_elementwise=True)


def test_new_sizes_compile_once_more_then_reuse_the_kernels():
    """The knob's shapes are automatic-dynamic: sizes of the first call, then one more compile with the changed
    dimensions symbolic, which every later size reuses (a recompile per batch size would stall a run)."""
    import torch._dynamo
    import torch.nn.functional as F
    from torch._dynamo.utils import counters

    from rl_dlm.models.elementwise import kernel

    def silu_mul(gate, up):  # a code object of its own: dynamo's cache is per function
        return F.silu(gate) * up

    fn = kernel(silu_mul)
    graphs = []
    for rows, tokens in ((2, 5), (3, 7), (4, 9), (5, 11)):
        before = counters["stats"]["unique_graphs"]
        g = torch.randn(rows, tokens, 8)
        torch.testing.assert_close(fn(g, g), F.silu(g) * g)
        graphs.append(counters["stats"]["unique_graphs"] - before)
    assert graphs == [1, 1, 0, 0]


def test_a_whole_block_compiles_in_one_graph_with_the_eager_outputs():
    """torch.compile traces a LoRA block with packed projections without a graph break (fullgraph=True raises on
    one): the fused projections call each module while dynamo traces (it cannot read storage addresses), and
    the compiled element-wise code replaces the eager RoPE's out= writes. Outputs and LoRA gradients are the
    eager block's to rounding."""
    import torch.nn.functional as F

    from rl_dlm.models.rope import rope_cos_sin

    model = native("llada")
    block = model.get_base_model().model.transformer.blocks[0]
    rope = rope_cos_sin(torch.arange(7), 16, 500000.0)
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    results = []
    for fn in (block, torch.compile(block, fullgraph=True)):
        compile_elementwise(model, enabled=fn is not block)
        block.zero_grad(set_to_none=True)
        with bf16_autocast("cpu", True):
            out = fn(x, rope=rope)
        out.float().square().mean().backward()
        results.append((out.detach().float(), [p.grad.float() for p in block.parameters() if p.grad is not None]))
    (eager, eager_grads), (compiled, compiled_grads) = results
    torch.testing.assert_close(compiled, eager, **BF16)
    assert len(compiled_grads) == len(eager_grads) > 0
    for a, b in zip(compiled_grads, eager_grads):  # within a few bf16 steps (2⁻⁸) of each tensor's largest entry
        torch.testing.assert_close(a, b, atol=2**-6 * b.abs().max().item(), rtol=3e-2)
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999
