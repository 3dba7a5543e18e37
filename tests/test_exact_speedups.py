"""The exact speed-ups give what the implementations they replaced gave (bench/previous_paths.py keeps those).

- RoPE written half by half and RMSNorm rounded as it is stored: bit-identical (torch.equal), fp32 and bf16.
- In-place float64 Gumbel noise: bit-identical draws, and the caller's logits are left untouched.
- `Policy.logits(keep=...)` (the LM head on the kept positions only): equal to slicing the full logits, up to
  the matrix product's rounding on a different number of rows (atol 1e-5 on fp32 logits of unit scale; on
  these tiny models it is exact).
- The samplers (semi-AR, cached, Dream) on a tiny LLaDA and a tiny Dream, left padding included: the same
  tokens and commit steps as the previous loop on full-canvas logits with the textbook kernels.
- peft's fp32 cast of each adapted layer's input, skipped under bf16 autocast where LoRA dropout is the identity
  (eval mode, or p = 0 in the update): bit-identical logits and adapter gradients, and the cast stays where it
  matters (no autocast, or dropout active).
- `score` (the completion's logits only): the same log-probs (atol 1e-5) and LoRA gradients (atol 1e-6).

Run: .venv/bin/python -m pytest tests/test_exact_speedups.py -q
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from bench.previous_paths import (FullLogitsPolicy, previous_gumbel_argmax, previous_paths, previous_semi_ar_sample,
                                  textbook_dream_norm_forward, textbook_llada_norm_forward)
from rl_dlm.components import Rollout
from rl_dlm.data.prompts import encode_prompts
from rl_dlm.likelihood.base import score
from rl_dlm.likelihood.one_step import OneStepEstimator
from rl_dlm.models.dream import DreamRMSNorm
from rl_dlm.models.elementwise import textbook_rope
from rl_dlm.models.families import Family
from rl_dlm.models.llada import LLaDARMSNorm, tiny_llada_config
from rl_dlm.models.rope import apply_rope, rope_cos_sin
from rl_dlm.models.policy import LoraSettings, Policy, add_lora
from rl_dlm.sampling.cached import CachedSemiARSampler
from rl_dlm.sampling.dream import DreamSampler
from rl_dlm.sampling.rollout import row_generator
from rl_dlm.sampling.full_diffusion import FullDiffusionSampler
from rl_dlm.sampling.maskgit import MaskGITSampler
from rl_dlm.sampling.semi_ar import SemiARSampler, at_positions, gumbel_argmax, masked_positions
from tests.conftest import make_tiny_policy
from tests.models.golden import tiny_dream

PROMPTS = [[{"role": "user", "content": "Compute 3+4*2."}],
           [{"role": "user", "content": "Using the numbers [3, 5, 7], create an equation that equals 22."}]]
DREAM_MASK, DREAM_STOP, DREAM_PAD = 260, 258, 256


def dream_policy(dtype=torch.float32) -> Policy:
    return Policy(tiny_dream().to(dtype), None, Family("dream", DREAM_MASK, DREAM_STOP, DREAM_PAD,
                                                       shift_logits=True))


def llada_policy(tokenizer, dtype=torch.float32) -> Policy:
    policy = make_tiny_policy(tokenizer)
    policy.model.to(dtype)
    return policy


def dream_prompts():
    ids = torch.full((2, 8), DREAM_PAD)
    ids[0] = torch.arange(60, 68)
    ids[1, 3:] = torch.arange(70, 75)  # left padded
    return ids, ids != DREAM_PAD


def prompts_for(policy):
    """Two prompts, one of them left padded."""
    if policy.family.shift_logits:
        return dream_prompts()
    return encode_prompts(policy.tokenizer, PROMPTS, None)


def unpadded(mask) -> slice:
    """The rows [i, i + 1) of the one unpadded prompt."""
    i = int(mask.all(1).nonzero()[0])
    return slice(i, i + 1)


@pytest.fixture(params=["llada", "dream"])
def family(request):
    return request.param


def make_policy(name, tokenizer, dtype=torch.float32):
    return llada_policy(tokenizer, dtype) if name == "llada" else dream_policy(dtype)


# 1. kernels: bit-identical ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("full_precision", [True, False])
@pytest.mark.parametrize("per_row_positions", [False, True])
def test_rope_fast_path_is_bit_identical(dtype, full_precision, per_row_positions):
    g = torch.Generator().manual_seed(0)
    B, L, H, hd = 3, 7, 4, 16
    # q as the attention builds it: a [B, H, L, hd] transposed view of the projection's [B, L, H, hd]
    t = (torch.randn(B, L, H, hd, generator=g) * 3).to(dtype).transpose(1, 2)
    positions = torch.randint(0, 50, (B, L), generator=g) if per_row_positions else torch.arange(L)
    cos, sin = rope_cos_sin(positions, hd, 10000.0)
    fast = apply_rope(t, cos, sin, full_precision)
    old = textbook_rope(t, cos, sin, full_precision)
    assert fast.dtype == old.dtype == dtype and fast.stride() == old.stride()
    assert torch.equal(fast, old)
    grad_out = torch.randn(old.shape, generator=g).to(dtype)
    grads = []
    for rope in (apply_rope, textbook_rope):  # under autograd: the hand-written backward vs autograd's
        leaf = (torch.randn(B, L, H, hd, generator=torch.Generator().manual_seed(5)) * 3).to(dtype)
        leaf.requires_grad_()
        with_grad = rope(leaf.transpose(1, 2), cos, sin, full_precision)
        assert torch.equal(with_grad, rope(leaf.detach().transpose(1, 2), cos, sin, full_precision))
        with_grad.backward(grad_out)
        grads.append(leaf.grad)
    assert torch.equal(*grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("which", ["llada", "llada_bias", "dream"])
def test_rmsnorm_fast_path_is_bit_identical(dtype, which):
    g = torch.Generator().manual_seed(1)
    if which == "dream":
        norm, old_forward = DreamRMSNorm(64, 1e-6), textbook_dream_norm_forward
    else:
        norm = LLaDARMSNorm(tiny_llada_config(d_model=64, include_bias=which == "llada_bias"))
        old_forward = textbook_llada_norm_forward
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    norm.to(dtype)
    x = (torch.randn(5, 9, 64, generator=g) * 4).to(dtype)
    with torch.no_grad():
        assert torch.equal(norm(x), old_forward(norm, x))
    assert torch.equal(norm(x), old_forward(norm, x))  # grad mode (weights require grad, x does not)
    grad_out = torch.randn(x.shape, generator=g).to(dtype)
    grads = []
    for forward in (norm, lambda x: old_forward(norm, x)):  # the hand-written backward vs autograd's
        norm.zero_grad()
        leaf = x.clone().requires_grad_()
        y = forward(leaf)
        y.backward(grad_out)
        grads.append([y.detach(), leaf.grad, *(p.grad for p in norm.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


@pytest.mark.parametrize("d,magnitude", [(4096, 1.0), (512, 1e-2), (512, 1e2)])
def test_rmsnorm_backward_is_bit_identical_next_to_a_residual(d, magnitude):
    """As in a block: x feeds the norm and the residual, so its gradient is the sum of both (bf16, LLaDA's d)."""
    g = torch.Generator().manual_seed(d)
    norm = LLaDARMSNorm(tiny_llada_config(d_model=d, n_heads=4)).to(torch.bfloat16).requires_grad_(False)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d, generator=g))
    x = (torch.randn(7, d, generator=g) * magnitude).to(torch.bfloat16)
    grad_out = (torch.randn(7, d, generator=g) * magnitude).to(torch.bfloat16)
    grads = []
    for forward in (norm, lambda x: textbook_llada_norm_forward(norm, x)):
        leaf = x.clone().requires_grad_()
        (forward(leaf) + 2 * leaf).backward(grad_out)
        grads.append(leaf.grad)
    assert torch.equal(*grads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_in_place_gumbel_noise_draws_the_same_tokens(dtype):
    logits = torch.randn(3, 5, 97, generator=torch.Generator().manual_seed(2)).to(dtype)
    before = logits.clone()
    gens = lambda: [row_generator(s, "rollout") for s in range(3)]  # noqa: E731
    assert torch.equal(gumbel_argmax(logits, 0.9, gens()), previous_gumbel_argmax(logits, 0.9, gens()))
    assert torch.equal(logits, before), "the caller's logits were modified in place"


def test_rows_at_positions_are_copied_whole():
    """`at_positions` (one index_select over the N·W rows) gives what a gather along the window gives, also for a
    window sliced out of a wider canvas (not contiguous)."""
    canvas = torch.randn(4, 9, 33, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    for logits in (canvas, canvas[:, 2:8]):
        still = torch.rand(logits.shape[:2], generator=torch.Generator().manual_seed(4)) < 0.5
        still[0], still[0, -1] = True, False  # the row with the most masked positions sets M = W - 1
        positions = masked_positions(still)
        expected = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))
        assert torch.equal(at_positions(logits, positions), expected)


# 2. logits of the kept positions only ------------------------------------------------------------------------

@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("native", [True, False])
def test_policy_logits_keep_equals_the_sliced_full_logits(tokenizer, family, padded, native):
    policy = make_policy(family, tokenizer)
    if not native:  # a model without the sliced LM head: Policy.logits slices its full output
        policy.model.supports_logits_slice = False
    ids, mask = prompts_for(policy)
    ids = torch.cat([ids, torch.full((2, 6), policy.mask_id)], 1)
    mask = torch.cat([mask, torch.ones(2, 6, dtype=torch.bool)], 1)
    if not padded:
        ids, mask = ids[unpadded(mask)], mask[unpadded(mask)]
    assert bool(mask.all()) != padded
    total = ids.shape[1]
    with torch.no_grad():
        full = policy.logits(ids, mask)
        for keep in [slice(0, 4), slice(1, 5), slice(3, 4), slice(total - 6, None), slice(2, total)]:
            torch.testing.assert_close(policy.logits(ids, mask, keep=keep), full[:, keep], atol=1e-5, rtol=0)


# 3. samplers: the same tokens as before -----------------------------------------------------------------------

SAMPLER_SETTINGS = [dict(temperature=0.9), dict(temperature=0.0), dict(temperature=0.9, remasking="random"),
                    dict(temperature=0.9, cfg_scale=1.0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("settings", SAMPLER_SETTINGS, ids=["gumbel", "greedy", "random", "cfg"])
def test_semi_ar_sampler_draws_the_same_tokens_as_before(tokenizer, family, dtype, settings):
    policy = make_policy(family, tokenizer, dtype)
    ids, mask = prompts_for(policy)
    seeds = torch.tensor([3, 4])
    sampler = SemiARSampler(gen_length=16, block_length=8, steps=8, **settings)
    new = sampler.sample(policy, ids, mask, seeds)
    with previous_paths():
        old = previous_semi_ar_sample(sampler, FullLogitsPolicy(policy), ids, mask, seeds)
    assert torch.equal(new.completion_ids, old.completion_ids)
    assert torch.equal(new.unmask_step, old.unmask_step)
    row = unpadded(mask)  # alone, the key mask is all ones and dropped: the same row
    alone = sampler.sample(policy, ids[row], mask[row], seeds[row])
    assert torch.equal(alone.completion_ids, new.completion_ids[row])


@pytest.mark.parametrize("cache", ["none", "dual", "prefix"])
def test_cached_sampler_draws_the_same_tokens_as_before(tokenizer, family, cache):
    policy = make_policy(family, tokenizer)
    ids, mask = prompts_for(policy)
    seeds = torch.tensor([5, 6])
    sampler = CachedSemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9, cache=cache,
                                  early_stop=False)
    new = sampler.sample(policy, ids, mask, seeds)
    with previous_paths():
        old = sampler.sample(FullLogitsPolicy(policy), ids, mask, seeds)
        if cache == "none":  # the exact cached mode is the previous semi-AR loop
            exact = previous_semi_ar_sample(SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9),
                                            FullLogitsPolicy(policy), ids, mask, seeds)
            assert torch.equal(new.completion_ids, exact.completion_ids)
    assert torch.equal(new.completion_ids, old.completion_ids)
    assert torch.equal(new.unmask_step, old.unmask_step)


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus", "origin"])
def test_dream_sampler_draws_the_same_tokens_as_before(alg):
    policy = dream_policy()
    ids, mask = dream_prompts()
    seeds = torch.tensor([7, 8])
    sampler = DreamSampler(gen_length=12, steps=6, temperature=0.8, top_p=0.95, alg=alg)
    new = sampler.sample(policy, ids, mask, seeds)
    with previous_paths():
        old = sampler.sample(FullLogitsPolicy(policy), ids, mask, seeds)
    assert torch.equal(new.completion_ids, old.completion_ids)
    assert torch.equal(new.unmask_step, old.unmask_step)


def test_masked_positions_lists_each_rows_masked_positions_first():
    still = torch.tensor([[False, True, False, True, False],
                          [True, False, False, False, False],
                          [False, False, False, False, False]])
    assert masked_positions(still).tolist() == [[1, 3], [0, 1], [0, 1]]  # 2 = the most any row has masked
    assert masked_positions(torch.ones(2, 3, dtype=torch.bool)) is None  # every position: the whole window
    assert masked_positions(torch.zeros(2, 3, dtype=torch.bool)).shape == (2, 1)  # nothing left: one column


@pytest.mark.parametrize("temperature", [0.9, 0.0])
def test_gumbel_argmax_at_positions_gives_the_full_draws_tokens_there(temperature):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 50, generator=g)
    positions = torch.tensor([[0, 2, 5], [1, 2, 3], [4, 5, 0]])
    gens = lambda: [row_generator(s, "test") for s in range(3)]  # noqa: E731
    full = gumbel_argmax(logits, temperature, gens())
    drawn = gumbel_argmax(logits, temperature, gens(), positions)
    assert torch.equal(drawn.gather(1, positions), full.gather(1, positions))


def full_logits_and_every_position(policy):
    """The previous sampler paths: full-canvas logits sliced afterwards, and draws at every window position."""
    stack = contextlib.ExitStack()
    stack.enter_context(previous_paths())
    return FullLogitsPolicy(policy), stack


SAMPLERS = {
    "semi_ar_hints": lambda: SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9),
    "semi_ar_greedy": lambda: SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.0),
    "dual_threshold": lambda: CachedSemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9,
                                                  cache="dual", threshold=0.05),
    "eoser_linear": lambda: FullDiffusionSampler(gen_length=16, steps=8, step_schedule="linear", temperature=0.9),
    "eoser_ass": lambda: FullDiffusionSampler(gen_length=16, step_schedule="ascending", temperature=0.9),
    "eoser_random": lambda: FullDiffusionSampler(gen_length=16, steps=16, step_schedule="linear", temperature=0.9,
                                                 remasking="random", eos_gamma_min=0.0),
    "maskgit": lambda: MaskGITSampler(gen_length=16, steps=6, temperature=0.9),
    "maskgit_rcr": lambda: MaskGITSampler(gen_length=16, steps=6, temperature=0.9, rcr=True),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_masked_only_draws_give_the_same_rollouts_as_every_position(tokenizer, name):
    """Tokens, commit steps and MaskGIT's records equal to the draw over every window position on full-canvas
    logits, on the tiny LLaDA, which draws the mask token now and then (a position that stays masked)."""
    policy = llada_policy(tokenizer)
    ids, mask = prompts_for(policy)
    seeds = torch.tensor([11, 12])
    kwargs = {}
    if name == "semi_ar_hints":  # row 0 has hints: fewer masked positions than row 1
        hints = torch.full((2, 16), -1)
        hints[0, [1, 2, 9]] = torch.tensor([40, 41, 42])
        kwargs["hint_ids"] = hints
    sampler = SAMPLERS[name]()
    new = sampler.sample(policy, ids, mask, seeds, **kwargs)
    old_policy, stack = full_logits_and_every_position(policy)
    with stack:
        old = sampler.sample(old_policy, ids, mask, seeds, **kwargs)
    for field in ("completion_ids", "unmask_step", "step_predictions", "confidence", "step_masked"):
        a, b = getattr(new, field), getattr(old, field)
        assert (a is None and b is None) or torch.equal(a, b), field


def test_a_drawn_mask_token_keeps_its_position_in_the_next_draw():
    """A step that commits a drawn mask token leaves its position masked, one more than the schedule expects:
    the next step's draw still covers every masked position (it is sized from the canvas, not the schedule)."""
    from tests.sampling.scripted_policy import ScriptedPolicy

    vocab, p, mask_id = 12, 2, ScriptedPolicy.mask_id

    def probs(call, x):  # step 0: position 0 surely draws the mask token; later the last position is surest
        out = torch.ones(x.shape[0], x.shape[1], vocab)  # elsewhere uniform: confidence 1 / 12
        if call == 0:
            out[:, p, mask_id] = 1000.0
        else:
            out[:, p + 3, 7] = 1000.0
        return out

    sampler = SemiARSampler(gen_length=4, block_length=4, steps=4, temperature=0.5)
    args = torch.full((1, p), 3), torch.ones(1, p, dtype=torch.bool), torch.tensor([0])
    policy = ScriptedPolicy(probs, vocab)
    rollout = sampler.sample(policy, *args)
    assert (policy.inputs[1][0, p:] == mask_id).all()  # step 1 sees 4 masked positions, not 3
    assert rollout.unmask_step[0, 3] == 1 and rollout.completion_ids[0, 3] == 7  # the 4th, drawn and committed
    with previous_paths():
        old = sampler.sample(ScriptedPolicy(probs, vocab), *args)
    assert torch.equal(rollout.completion_ids, old.completion_ids)
    assert torch.equal(rollout.unmask_step, old.unmask_step)


# 4. peft's input casts: skipped only where autocast undoes them ------------------------------------------------

def bf16_policy_with_adapters(tokenizer, dropout: float, seed: int, checkpointing: bool = False):
    """A bf16 tiny LLaDA with fp32 LoRA adapters made non-zero, and the list of dtypes `lora_A` receives."""
    policy = make_tiny_policy(tokenizer)
    policy.model.to(torch.bfloat16)
    policy.model = add_lora(policy.model, LoraSettings(r=4, alpha=8, dropout=dropout))  # fp32 adapter weights
    if checkpointing:
        with pytest.warns(FutureWarning):
            policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.1)
    seen = []
    for n, m in policy.model.named_modules():
        if n.endswith("lora_A.default"):
            m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    return policy, seen


def test_lora_input_casts_are_skipped_only_where_autocast_undoes_them(tokenizer):
    policy, seen = bf16_policy_with_adapters(tokenizer, dropout=0.05, seed=5)
    ids, mask = prompts_for(policy)

    def run(mode: str, autocast: bool, previous: bool = False, grad: bool = False):
        seen.clear()
        policy.model.train(mode == "train")
        torch.manual_seed(0)  # the same dropout masks in train mode
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.set_grad_enabled(grad):
            with previous_paths() if previous else contextlib.nullcontext():
                out = policy.logits(ids, mask, keep=slice(4, None))
        return out, set(seen)

    new, dtypes = run("eval", autocast=True)
    old, old_dtypes = run("eval", autocast=True, previous=True)
    assert dtypes == {torch.bfloat16} and old_dtypes == {torch.float32}  # the cast was skipped, and only here
    assert torch.equal(new, old)
    assert run("eval", autocast=False)[1] == {torch.float32}  # fp32 adapter matmuls need the cast
    assert run("train", autocast=True)[1] == {torch.float32}  # dropout on the fp32 copy rounds differently
    assert all(getattr(m, "cast_input_dtype_enabled", True) for m in policy.model.modules())  # restored


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_input_casts_skipped_in_the_update_give_the_same_loss_and_gradients(tokenizer, checkpointing):
    """The update (grad on, train mode, LoRA dropout 0 as `disable_dropout` leaves it, bf16 autocast): without
    peft's fp32 input casts, the same logits and the same adapter gradients, bit for bit (the casts' backward
    was exact), with and without gradient checkpointing (whose recompute runs outside the skip and casts)."""
    policy, seen = bf16_policy_with_adapters(tokenizer, dropout=0.0, seed=6, checkpointing=checkpointing)
    policy.model.train()
    ids, mask = prompts_for(policy)
    target = torch.randint(10, 100, (ids.shape[0], ids.shape[1] - 4), generator=torch.Generator().manual_seed(7))

    def logits_and_grads(previous: bool):
        seen.clear()
        policy.model.zero_grad(set_to_none=True)
        with previous_paths() if previous else contextlib.nullcontext():  # the backward's recompute too
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = policy.logits(ids, mask, keep=slice(4, None))
            logp = torch.log_softmax(logits.float(), -1).gather(-1, target[..., None])
            logp.sum().backward()
        grads = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.requires_grad}
        return logits.detach(), grads, set(seen[: len(seen) // (2 if checkpointing else 1)])

    new, new_grads, new_dtypes = logits_and_grads(previous=False)
    old, old_grads, old_dtypes = logits_and_grads(previous=True)
    assert new_dtypes == {torch.bfloat16} and old_dtypes == {torch.float32}
    assert torch.equal(new, old)
    assert new_grads.keys() == old_grads.keys() and new_grads
    for n in new_grads:
        assert torch.equal(new_grads[n], old_grads[n]), n


# 5. the scorer: the same log-probs and gradients ----------------------------------------------------------------

@pytest.mark.parametrize("checkpointing", [False, True])
def test_score_gives_the_same_logp_and_lora_gradients_as_before(tokenizer, family, checkpointing):
    policy = make_policy(family, tokenizer)
    policy.model = add_lora(policy.model, LoraSettings(r=4, alpha=8, dropout=0.0))
    if checkpointing:  # as the trainers enable it; it runs in train mode (every dropout of these models is 0)
        with pytest.warns(FutureWarning):
            policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.model.train()
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.1)
    ids, mask = prompts_for(policy)
    completion = torch.randint(10, 100, (2, 10), generator=torch.Generator().manual_seed(4))
    rollout = Rollout.from_canvas(ids, mask, completion, torch.tensor([1, 2]), policy.stop_id)
    estimator = OneStepEstimator(p_mask_prompt=0.15, mask_id=policy.mask_id)
    plan = estimator.plan(rollout, 0)

    def logp_and_grads(pol):
        policy.model.zero_grad(set_to_none=True)
        logp = estimator.reduce(score(pol, rollout, plan), plan)
        (logp * rollout.completion_mask).sum().backward()
        return logp.detach(), {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.requires_grad}

    new_logp, new_grads = logp_and_grads(policy)
    with previous_paths():
        old_logp, old_grads = logp_and_grads(FullLogitsPolicy(policy))
    torch.testing.assert_close(new_logp, old_logp, atol=1e-5, rtol=0)
    assert new_grads.keys() == old_grads.keys() and new_grads
    for n in new_grads:
        torch.testing.assert_close(new_grads[n], old_grads[n], atol=1e-6, rtol=1e-5, msg=n)
    with torch.no_grad():  # and without grad, where the fast RoPE / RMSNorm run
        new_ng = score(policy, rollout, plan)
        with previous_paths():
            old_ng = score(FullLogitsPolicy(policy), rollout, plan)
    torch.testing.assert_close(new_ng, old_ng, atol=1e-5, rtol=0)
