"""The implementations that the exact speed-ups replaced, so one run can time and compare new against old.

`bench/rollout.py --compare-old` and `bench/train_step.py --compare-old` time both; tests/test_exact_speedups.py
checks that both give the same tokens and log-probs. A backward must run inside the context too: gradient
checkpointing recomputes the forward there. Each replaced piece, as it was:

- full-canvas logits, sliced afterwards (`FullLogitsPolicy`): now `Policy.logits(keep=...)` projects only the
  positions a sampler or the scorer reads;
- RoPE through `rotate_half` with an fp32 copy of q and k (`rl_dlm.models.elementwise.textbook_rope`), and
  autograd's backward of it: now written half by half into the output, with a backward of the same kind
  (rl_dlm/models/rope.py);
- RMSNorm's fp32 product cast back in a separate pass (`textbook_*_norm_forward`), and autograd's backward of
  it: now rounded as it is stored, with a hand-written backward (rl_dlm/models/rms_norm.py);
- the semi-AR step loop with a key-mask check per forward, boolean-index writes of the commit step and four
  float64 noise buffers per row (`previous_semi_ar_sample`);
- peft's cast of every adapted layer's input to fp32 under bf16 autocast in eval mode (`previous_paths` keeps
  it): now skipped where autocast undoes it;
- one GEMM per projection and peft's own LoRA forward (`unfused_projections`, and `previous_paths(policy)`):
  now q/k/v and gate/up run as one GEMM each and LoRA takes fewer passes (rl_dlm/models/fused_projections.py);
- residual sums as their own add kernels (`separate_residual_adds`): now, in rollouts, accumulated into the
  block's input by the output projection's GEMM (`rl_dlm.models.fused_projections.add_projection`);
- float64 Gumbel draws and confidences at every position of the window (`every_position`): now at the still
  masked positions only (`rl_dlm.sampling.semi_ar.masked_positions`), and MaskGIT's and the full-diffusion
  sampler's logits of the completion only (full-canvas logits: `FullLogitsPolicy`).

    with previous_paths(policy):
        rollout = previous_semi_ar_sample(sampler, FullLogitsPolicy(policy), prompt_ids, prompt_mask, seeds)
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

import rl_dlm.models.dream as dream_module
import rl_dlm.models.fused_projections as fused_projections_module
import rl_dlm.models.llada as llada_module
import rl_dlm.models.policy as policy_module
import rl_dlm.sampling.cached as cached_module
import rl_dlm.sampling.full_diffusion as full_diffusion_module
import rl_dlm.sampling.maskgit as maskgit_module
import rl_dlm.sampling.semi_ar as semi_ar_module
from rl_dlm.models.elementwise import EAGER, Elementwise, textbook_norm, textbook_rope
from rl_dlm.models.fused_projections import fuse_projections, unfuse_projections
from rl_dlm.components import Rollout
from rl_dlm.sampling.rollout import start_canvas
from rl_dlm.sampling.semi_ar import commit_top_k, transfer_counts


class FullLogitsPolicy:
    """A policy whose `logits(..., keep=...)` computes the whole canvas's logits and slices them."""

    def __init__(self, policy):
        self._policy = policy

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None, keep: slice | None = None) -> Tensor:
        out = self._policy.logits(input_ids, attention_mask)
        return out if keep is None else out[:, keep]


def textbook_llada_norm_forward(self, x: Tensor) -> Tensor:
    h = textbook_norm(x, self.weight, self.eps)
    return h + self.bias if self.bias is not None else h


def textbook_dream_norm_forward(self, x: Tensor) -> Tensor:
    return textbook_norm(x, self.weight, self.eps)


@contextlib.contextmanager
def lora_input_casts_kept(model, device_type: str):
    yield


@contextlib.contextmanager
def unfused_projections(policy):
    """Each projection on weights of its own and called as a module (`unfuse_projections`, the path before
    rl_dlm/models/fused_projections.py); fused again on exit. The policy's CUDA graphs are dropped both ways:
    they read the weights where they were."""
    policy.graphs.reset()
    unfuse_projections(policy.model)
    try:
        yield
    finally:
        policy.graphs.reset()
        fuse_projections(policy.model)


@contextlib.contextmanager
def separate_residual_adds():
    """The native blocks add each residual branch with an add kernel, as before `add_projection` accumulated it
    into the block's input (restored on exit). The policy's CUDA graphs must be dropped around it (they replay
    whichever path they captured)."""
    real = fused_projections_module.add_projection

    def separate(x, h, module, overwrite=False):
        return real(x, h, module, overwrite=False)

    for m in (llada_module, dream_module):
        m.add_projection = separate
    try:
        yield
    finally:
        for m in (llada_module, dream_module):
            m.add_projection = real


@contextlib.contextmanager
def every_position():
    """The samplers draw tokens and confidences at every position of the window, as before
    `masked_positions` (restored on exit)."""
    modules = (semi_ar_module, cached_module, full_diffusion_module, maskgit_module)
    saved = [m.masked_positions for m in modules]
    for m in modules:
        m.masked_positions = lambda still_masked: None
    try:
        yield
    finally:
        for m, f in zip(modules, saved):
            m.masked_positions = f


@contextlib.contextmanager
def previous_paths(policy=None):
    """Run the native models with the textbook RoPE and RMSNorm, peft's input casts always on, the samplers'
    draws at every window position and, given the policy, its projections unfused (all restored on exit)."""
    with unfused_projections(policy) if policy is not None else contextlib.nullcontext(), _textbook_kernels(), \
            every_position():
        yield


# The element-wise steps as the official code writes them (the native modules' default before
# rl_dlm/models/rope.py and rms_norm.py took fewer passes).
TEXTBOOK = Elementwise("textbook", textbook_norm, textbook_rope, EAGER.silu_mul)
ELEMENTWISE_CLASSES = (llada_module.LLaDARMSNorm, llada_module.LLaDABlock, dream_module.DreamRMSNorm,
                       dream_module.DreamAttention, dream_module.DreamMLP)


@contextlib.contextmanager
def _textbook_kernels():
    """The classes' default element-wise steps (those of modules `compile_elementwise` has not switched) and
    peft's input casts as they were."""
    saved = [cls.elementwise for cls in ELEMENTWISE_CLASSES], policy_module.lora_input_casts_skipped_if_redundant
    for cls in ELEMENTWISE_CLASSES:
        cls.elementwise = TEXTBOOK
    policy_module.lora_input_casts_skipped_if_redundant = lora_input_casts_kept
    try:
        yield
    finally:
        for cls, kernels in zip(ELEMENTWISE_CLASSES, saved[0]):
            cls.elementwise = kernels
        policy_module.lora_input_casts_skipped_if_redundant = saved[1]


def previous_gumbel_argmax(logits: Tensor, temperature: float, generators: list[torch.Generator]) -> Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    scores = logits.double() / temperature
    for n, gen in enumerate(generators):
        u = torch.rand(scores.shape[1:], generator=gen, device=scores.device, dtype=torch.float64)
        scores[n] -= torch.log(-torch.log(u.clamp_min(1e-300)))
    return scores.argmax(-1)


def _previous_logits(sampler, policy, x: Tensor, attention_mask: Tensor, prompt_len: int) -> Tensor:
    if sampler.cfg_scale <= 0:
        return policy.logits(x, attention_mask)
    uncond = x.clone()
    uncond[:, :prompt_len] = policy.mask_id
    both = policy.logits(torch.cat([x, uncond]), torch.cat([attention_mask, attention_mask]))
    cond, unc = both.chunk(2)
    return unc + (sampler.cfg_scale + 1) * (cond - unc)


@torch.no_grad()
def previous_semi_ar_sample(sampler, policy, prompt_ids: Tensor, prompt_mask: Tensor, row_seeds: Tensor,
                            hint_ids: Tensor | None = None) -> Rollout:
    """`SemiARSampler.sample` as it was: full-canvas logits sliced to the block, per-step mask checks."""
    n, p = prompt_ids.shape
    device = prompt_ids.device
    canvas = start_canvas(prompt_ids, prompt_mask, row_seeds, sampler.gen_length, policy.mask_id, hint_ids)
    x, attention_mask, hint_mask = canvas.x, canvas.key_mask, canvas.hint_mask
    unmask_step, gens = canvas.unmask_step, canvas.gens
    num_blocks = sampler.gen_length // sampler.block_length
    steps_per_block = sampler.steps // num_blocks
    step = 0
    for b in range(num_blocks):
        lo, hi = p + b * sampler.block_length, p + (b + 1) * sampler.block_length
        counts = transfer_counts((x[:, lo:hi] == policy.mask_id).sum(1), steps_per_block)
        for s in range(steps_per_block):
            block_logits = _previous_logits(sampler, policy, x, attention_mask, p)[:, lo:hi]
            x0 = previous_gumbel_argmax(block_logits, sampler.temperature, gens)
            if sampler.remasking == "low_confidence":
                probs = torch.softmax(block_logits.float(), -1)
                conf = torch.gather(probs, -1, x0[..., None]).squeeze(-1).double()
            else:
                conf = torch.stack([torch.rand(hi - lo, generator=g, device=device, dtype=torch.float64)
                                    for g in gens])
            still_masked = x[:, lo:hi] == policy.mask_id
            conf = torch.where(still_masked, conf, torch.full_like(conf, -torch.inf))
            commit = commit_top_k(conf, counts[:, s])
            x[:, lo:hi] = torch.where(commit, x0, x[:, lo:hi])
            unmask_step[:, lo - p:hi - p][commit] = step
            step += 1
    return Rollout.from_canvas(prompt_ids, prompt_mask, x[:, p:], row_seeds, policy.stop_id,
                               unmask_step=unmask_step, hint_mask=hint_mask)
