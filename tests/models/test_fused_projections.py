"""Fused projections (rl_dlm/models/fused_projections.py): one GEMM for q/k/v and for gate/up and LoRA in fewer
passes, with the same outputs, gradients and rollouts as the modules called one by one (bit for bit where the
docstring says so, to rounding elsewhere), and the module-by-module path wherever fusion does not hold
(trainable base weights, weights moved apart, hooks, DoRA, `fused_projections: false`)."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from rl_dlm.models.dream import DreamModel, tiny_dream_config
from rl_dlm.models.llada import LLaDAModelLM, tiny_llada_config
from rl_dlm.models.fused_projections import fuse_projections, project
from rl_dlm.models.policy import LoraSettings, add_lora
from rl_dlm.sampling.semi_ar import SemiARSampler

D = 64
FF = 80  # MLP width: 2·FF differs from 3·D, so the counts below tell the groups apart
# A GEMM of another width may order its fp32 sums differently: outputs agree to fp32 rounding, not bit for bit.
FP32 = dict(atol=1e-5, rtol=1e-5)


def llada(seed=0):
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_llada_config(vocab_size=130, d_model=D, n_layers=2, n_heads=4, mlp_hidden_size=FF)).eval()


def with_random_adapters(model, dropout=0.0):
    """LoRA with non-zero B (peft starts B at 0, which would hide the adapter terms)."""
    model = add_lora(model, LoraSettings(r=4, alpha=8, dropout=dropout))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


class OneProjection(torch.nn.Module):
    """A module declaring one projection without siblings, like attn_out or down_proj."""

    projection_groups = (("proj",),)

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(D, 48)


def adapted_single_projection(alpha: int, lora_bias: bool = False):
    """A fused `proj` with a LoRA r 4 adapter of non-zero B."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    holder = OneProjection()
    fuse_projections(holder)
    net = get_peft_model(holder, LoraConfig(r=4, lora_alpha=alpha, target_modules=["proj"], lora_bias=lora_bias))
    layer = net.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    return layer


@pytest.fixture
def linear_calls(monkeypatch):
    """The output widths of every F.linear call."""
    widths, real = [], F.linear

    def counted(x, weight, bias=None):
        widths.append(weight.shape[0])
        return real(x, weight, bias)

    monkeypatch.setattr(F, "linear", counted)
    return widths


def test_packing_keeps_names_values_and_makes_views():
    model, ref = llada(), llada()
    assert fuse_projections(model) == 4  # 2 blocks × (q/k/v, gate/up)
    assert model.state_dict().keys() == ref.state_dict().keys()
    for (n, p), q in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(p, q), n
    block = model.model.transformer.blocks[0]
    assert block.k_proj.weight.data_ptr() == block.q_proj.weight.data_ptr() + D * D * 4
    assert block.up_proj.weight.data_ptr() == block.ff_proj.weight.data_ptr() + FF * D * 4


def test_one_gemm_per_group_and_the_same_logits(linear_calls):
    model, ref = llada(), llada()
    fuse_projections(model)
    ids = torch.randint(0, 120, (3, 20))
    with torch.no_grad():
        want = ref(ids).logits
        linear_calls.clear()
        got = model(ids).logits
    torch.testing.assert_close(got, want, **FP32)
    assert linear_calls.count(3 * D) == 2 and linear_calls.count(2 * FF) == 2  # q/k/v, gate/up per block
    assert D not in linear_calls[:1]  # the first GEMM of block 0 is the packed q/k/v one


def test_logits_to_keep_packs_only_k_and_v_in_the_last_block(linear_calls):
    model, ref = llada(), llada()
    fuse_projections(model)
    ids = torch.randint(0, 120, (2, 20))
    with torch.no_grad():
        want = ref(ids, logits_to_keep=slice(8, 12)).logits
        linear_calls.clear()
        got = model(ids, logits_to_keep=slice(8, 12)).logits
    torch.testing.assert_close(got, want, **FP32)
    assert linear_calls.count(3 * D) == 1 and linear_calls.count(2 * D) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_outputs_and_gradients_match_peft(dtype):
    """The adapters are added as peft adds them; the base GEMM is packed, the LoRA weights get the same grads."""
    model, ref = with_random_adapters(llada().to(dtype)), with_random_adapters(llada().to(dtype))
    fuse_projections(model)
    ids = torch.randint(0, 120, (2, 16))
    outs, grads = [], []
    for m in (model, ref):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits = m(input_ids=ids).logits
        logits.float().logsumexp(-1).sum().backward()
        outs.append(logits.detach().float())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad})
    tol = dict(**FP32) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(outs[0], outs[1], **tol)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 2 * 7 * 2
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5 if dtype == torch.float32 else 2e-2,
                                   rtol=1e-4 if dtype == torch.float32 else 2e-2, msg=n)


def test_lora_dropout_draws_the_same_masks():
    model = with_random_adapters(llada(), dropout=0.3).train()
    ref = with_random_adapters(llada(), dropout=0.3).train()
    fuse_projections(model)
    ids = torch.randint(0, 120, (2, 16))
    torch.manual_seed(7)
    got = model(input_ids=ids).logits
    torch.manual_seed(7)
    want = ref(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_disabled_and_merged_adapters(linear_calls):
    model, ref = with_random_adapters(llada()), with_random_adapters(llada())
    fuse_projections(model)
    ids = torch.randint(0, 120, (2, 16))
    with torch.no_grad():
        with model.disable_adapter(), ref.disable_adapter():
            linear_calls.clear()
            torch.testing.assert_close(model(input_ids=ids).logits, ref(input_ids=ids).logits, **FP32)
            assert 3 * D in linear_calls
        model.merge_adapter()
        ref.merge_adapter()
        linear_calls.clear()
        torch.testing.assert_close(model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-6, rtol=1e-6)
        assert 3 * D in linear_calls  # merged in place: the weights are still packed


def test_trainable_base_weights_take_the_module_path(linear_calls):
    """Full fine-tuning: each projection's weight is its own leaf and gets its own gradient."""
    model, ref = llada(), llada()
    fuse_projections(model)
    ids = torch.randint(0, 120, (2, 16))
    linear_calls.clear()
    model(ids).logits.sum().backward()
    ref(ids).logits.sum().backward()
    assert 3 * D not in linear_calls
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    with torch.no_grad():  # the same weights with autograd off: packed again
        linear_calls.clear()
        model(ids)
    assert 3 * D in linear_calls


def test_weights_moved_apart_take_the_module_path(linear_calls):
    model = llada()
    fuse_projections(model)
    block = model.model.transformer.blocks[0]
    block.k_proj.weight.data = block.k_proj.weight.data.clone()  # what a device move or ZeRO-3 does
    h = torch.randn(2, 5, D)
    linear_calls.clear()
    with torch.no_grad():
        q, k, v = project(h, block.q_proj, block.k_proj, block.v_proj)
        gate, up = project(h, block.ff_proj, block.up_proj)
    assert linear_calls == [D, D, D, 2 * FF]
    torch.testing.assert_close(k, block.k_proj(h), **FP32)


def test_dora_takes_the_module_path(linear_calls):
    from peft import LoraConfig, get_peft_model

    model = llada()
    fuse_projections(model)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj"], use_dora=True))
    linear_calls.clear()
    with torch.no_grad():
        model(input_ids=torch.randint(0, 120, (1, 8)))
    assert 3 * D not in linear_calls and 2 * FF in linear_calls


def test_dream_gqa_with_biases():
    torch.manual_seed(0)
    model = DreamModel(tiny_dream_config()).eval()
    ref = copy.deepcopy(model)
    for p in ref.parameters():  # deepcopy keeps shared storages: give the reference its own
        p.data = p.data.clone()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_()
                dict(ref.named_parameters())[n].copy_(p)
    assert fuse_projections(model) == 4
    ids = torch.randint(0, 120, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, **FP32)


def test_rollout_tokens_match(tokenizer):
    def policy(pack):
        torch.manual_seed(0)
        from tests.conftest import make_tiny_policy

        p = make_tiny_policy(tokenizer, lora=True)
        if pack:
            fuse_projections(p.model)
        return p

    sampler = SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9)
    prompt = torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    seeds = torch.tensor([3, 4])
    runs = [sampler.sample(policy(pack), prompt, mask, seeds) for pack in (True, False)]
    assert torch.equal(runs[0].completion_ids, runs[1].completion_ids)


def test_saved_and_reloaded(tmp_path):
    model, ref = llada(), llada()
    fuse_projections(model)
    model.save_pretrained(tmp_path)
    back = LLaDAModelLM.from_pretrained(tmp_path).eval()
    for (n, p), q in zip(back.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(p, q), n



@pytest.mark.parametrize("fused", [True, False])
def test_load_policy_packs_unless_told_not_to(fused):
    from rl_dlm.models.fused_projections import FUSED, _stacked
    from rl_dlm.models.policy import load_policy
    from tests.conftest import EMBEDDED

    policy = load_policy(EMBEDDED, lora=LoraSettings(r=4, alpha=8, dropout=0.0), fused_projections=fused)
    block = policy.model.get_base_model().model.transformer.blocks[0]
    weights = [getattr(block, n).base_layer.weight for n in ("q_proj", "k_proj", "v_proj")]
    assert (_stacked(weights) is not None) == fused
    assert all(getattr(w, FUSED, False) == fused for w in (block.attn_out.base_layer, block.ff_out.base_layer))


def test_the_trainer_knob_is_checked_and_free_on_resume():
    from rl_dlm.checkpoint import FREE_KEYS
    from rl_dlm.trainers.base import RLConfig

    assert RLConfig().fused_projections is True and "fused_projections" in FREE_KEYS
    with pytest.raises((TypeError, ValueError), match="fused_projections"):
        RLConfig(fused_projections="yes")


@pytest.mark.parametrize("alpha,lora_bias", [(8, False), (6, False), (8, True)])
@pytest.mark.parametrize("autocast", [False, True])
def test_a_single_adapted_projection_is_bit_identical_to_peft(alpha, lora_bias, autocast):
    """attn_out / ff_out / o_proj / down_proj: the base layer called as a module, the adapters added as peft adds
    them; a power-of-two scaling (α 8 / r 4 = 2) applied to the rank-r activations gives the same bits."""
    from rl_dlm.models.fused_projections import project_one

    layer = adapted_single_projection(alpha, lora_bias)
    x = torch.randn(3, 7, D, requires_grad=True)
    results = []
    for call in (layer, lambda h: project_one(h, layer)):
        x.grad = None
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = call(x)
        (y.float() * torch.linspace(-1, 1, 48)).sum().backward()
        results.append([y, x.grad] + [p.grad for p in layer.parameters() if p.requires_grad])
    for got, want in zip(*results):
        assert torch.equal(got, want)


def test_hooked_projections_are_called_as_modules(linear_calls):
    """ZeRO-3 and accelerate's offloading gather a module's weights in its hooks: they must run."""
    model = llada()
    fuse_projections(model)
    block = model.model.transformer.blocks[0]
    seen = []
    block.k_proj.register_forward_pre_hook(lambda module, args: seen.append("k"))
    block.attn_out.register_forward_pre_hook(lambda module, args: seen.append("out"))
    with torch.no_grad():
        project(torch.randn(1, 3, D), block.q_proj, block.k_proj, block.v_proj)
    assert seen == ["k"] and linear_calls == [D, D, D]
    with torch.no_grad():
        model(torch.randint(0, 120, (1, 5)))
    assert seen.count("out") == 1


@pytest.mark.parametrize("autocast", [False, True])
def test_outside_autograd_lora_b_accumulates_into_the_base_output(linear_calls, autocast):
    """No-grad forwards (rollouts, old/reference log-probs) add lora_B's product in its GEMM's epilogue: equal
    to peft's to one rounding of the output dtype."""
    from rl_dlm.models.fused_projections import project_one

    layer = adapted_single_projection(6)
    x = torch.randn(3, 7, D)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        want = layer(x)
        linear_calls.clear()
        got = project_one(x, layer)
    assert linear_calls == [48, 4]  # the base layer and lora_A; lora_B runs inside addmm_
    assert got.dtype == want.dtype
    tol = dict(atol=2e-2, rtol=1e-2) if autocast else FP32
    torch.testing.assert_close(got, want, **tol)


def test_unfusing_gives_back_the_module_path_bit_for_bit(linear_calls):
    model, ref = with_random_adapters(llada()), with_random_adapters(llada())
    fuse_projections(model.get_base_model())
    from rl_dlm.models.fused_projections import unfuse_projections

    unfuse_projections(model.get_base_model())
    ids = torch.randint(0, 120, (2, 16))
    with torch.no_grad():
        linear_calls.clear()
        got = model(input_ids=ids).logits
        calls = list(linear_calls)
        linear_calls.clear()
        want = ref(input_ids=ids).logits
    assert torch.equal(got, want) and calls == linear_calls


def test_bf16_rollout_under_autocast_as_the_trainer_runs_it(tokenizer):
    """bf16 base weights, fp32 LoRA adapters, bf16 autocast (`bf16: true`): the fused path (packed GEMMs, lora_B
    accumulated in place, peft's input casts skipped) draws the tokens the modules called one by one draw."""
    from rl_dlm.models.fused_projections import unfuse_projections
    from rl_dlm.trainers.base import bf16_autocast
    from tests.conftest import make_tiny_policy

    torch.manual_seed(0)
    policy = make_tiny_policy(tokenizer)
    policy.model.to(torch.bfloat16)
    fuse_projections(policy.model)
    policy.model = with_random_adapters(policy.model)
    sampler = SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9)
    prompt = torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    runs, logits = [], []
    for fused in (True, False):
        if not fused:
            unfuse_projections(policy.model)
        with bf16_autocast("cpu", True):
            runs.append(sampler.sample(policy, prompt, mask, torch.tensor([3, 4])).completion_ids)
            canvas, canvas_mask = torch.cat([prompt, runs[0]], 1), torch.cat([mask, torch.ones_like(runs[0])], 1)
            with torch.no_grad():
                logits.append(policy.logits(canvas, canvas_mask))
    assert torch.equal(*runs)
    torch.testing.assert_close(logits[0].float(), logits[1].float(), atol=5e-2, rtol=2e-2)


def test_residual_sum_accumulates_into_its_input_only_where_allowed(linear_calls):
    """add_projection: x + module(h), written into x by the GEMM (β = 1), LoRA's lora_B after it, only with
    `overwrite`, in a rollout's forward (`residual_sums_in_place`) and outside autograd, of a projection without
    bias (attn_out, ff_out, o_proj, down_proj); elsewhere x is left as it was."""
    from rl_dlm.models.fused_projections import add_projection, residual_sums_in_place

    layer = adapted_single_projection(8)
    x0, h = torch.randn(3, 7, 48), torch.randn(3, 7, D)
    with torch.no_grad(), residual_sums_in_place():
        x = x0.clone()
        biased = add_projection(x, h, layer, overwrite=True)
        assert torch.equal(x, x0)
        torch.testing.assert_close(biased, x0 + layer(h), **FP32)
        layer.base_layer.bias = None
        want = x0 + layer(h)
        linear_calls.clear()
        got = add_projection(x, h, layer, overwrite=True)
    assert got.data_ptr() == x.data_ptr() and linear_calls == [4]  # lora_A only: base and lora_B are addmm_
    torch.testing.assert_close(got, want, **FP32)
    for overwrite, grad, rollout in ((False, False, True), (True, True, True), (True, False, False)):
        x = x0.clone()
        with torch.set_grad_enabled(grad), residual_sums_in_place() if rollout else contextlib.nullcontext():
            got = add_projection(x, h, layer, overwrite=overwrite)
        assert torch.equal(x, x0) and got.data_ptr() != x.data_ptr() and got.requires_grad == grad
        torch.testing.assert_close(got.detach(), want, **FP32)


@pytest.fixture
def inplace_sums(monkeypatch):
    """How many times a residual sum was accumulated in place (Tensor.addmm_ with β = 1 and α = 1)."""
    count, real = [0], torch.Tensor.addmm_

    def counted(self, a, b, *, beta=1, alpha=1):
        count[0] += alpha == 1
        return real(self, a, b, beta=beta, alpha=alpha)

    monkeypatch.setattr(torch.Tensor, "addmm_", counted)
    return count


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_blocks_accumulate_residuals_in_place_and_keep_the_callers_embeddings(inplace_sums, family):
    """In a rollout's forward every residual sum but the first block's attention one (its input is the caller's)
    goes into the block's input; bf16 logits equal the unfused path's (separate adds) to bf16 rounding; the
    caller's `inputs_embeds` and kept hidden states are not written; scoring passes (no `residual_sums_in_place`)
    and autograd keep the adds."""
    from rl_dlm.models.fused_projections import residual_sums_in_place, unfuse_projections

    torch.manual_seed(0)
    model = (llada() if family == "llada" else DreamModel(tiny_dream_config()).eval()).to(torch.bfloat16)
    ref = copy.deepcopy(model)
    fuse_projections(model)
    unfuse_projections(ref)
    ids = torch.randint(0, 120, (2, 12))
    embeds = model.get_input_embeddings()(ids).detach()
    kept = embeds.clone()
    n_blocks = 2
    with torch.no_grad():
        scored = model(inputs_embeds=embeds).logits
        assert inplace_sums[0] == 0
    with torch.no_grad(), residual_sums_in_place():
        got = model(inputs_embeds=embeds).logits
        assert inplace_sums[0] == 2 * n_blocks - 1 and torch.equal(embeds, kept)
        torch.testing.assert_close(got.float(), scored.float(), atol=5e-2, rtol=2e-2)
        want = ref(inputs_embeds=embeds).logits
        assert inplace_sums[0] == 2 * n_blocks - 1  # the unfused path adds as before
        torch.testing.assert_close(got.float(), want.float(), atol=5e-2, rtol=2e-2)
        states = model(ids, output_hidden_states=True).hidden_states
        assert inplace_sums[0] == 3 * n_blocks - 1  # only the MLP sums, into each block's own intermediate
        torch.testing.assert_close(states[1].float(), ref(ids, output_hidden_states=True).hidden_states[1].float(),
                                   atol=5e-2, rtol=2e-2)
    model(ids).logits.float().sum().backward()
    assert inplace_sums[0] == 3 * n_blocks - 1  # none under autograd


def test_rollouts_and_only_rollouts_sum_residuals_in_place(tokenizer):
    """`Policy.inference()` (rollouts, evaluation) enters `residual_sums_in_place`; nothing else does."""
    from rl_dlm.models.fused_projections import residuals_in_place
    from tests.conftest import make_tiny_policy

    policy = make_tiny_policy(tokenizer)
    assert not residuals_in_place()
    with policy.inference():
        assert residuals_in_place()
        with policy.reference():
            assert residuals_in_place()
    assert not residuals_in_place()
