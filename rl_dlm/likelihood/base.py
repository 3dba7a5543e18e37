"""The one shared scoring function of the likelihood estimators (their contract, `LikelihoodEstimator`, and
`MaskPlan` are in rl_dlm/components.py and re-exported here).

An estimator turns a rollout into masked *views* of (prompt, completion) — a `MaskPlan` — and reduces the
per-view token log-probs to the `[N, L]` log-probs the objective uses:

    plan = estimator.plan(rollout, iteration)           # once per inner iteration, from per-row seeds
    logp = estimator.reduce(score(policy, rollout, plan, rows), plan.rows(rows))

The plan is drawn once per inner iteration and reused for the old, reference and current log-probs, so their
ratio compares policies, not masks. Every random draw comes from `row_generator(row_seed, f"mask/{iteration}")`,
so re-chunking a batch into micro-batches (or spreading it over processes) never changes a row's masks.

`score` asks the model for the completion's logits only (`Policy.logits(keep=slice(P, None))`): the prompt's
positions never reach the 126k-wide LM head, forward or backward, and no [rows, P + L, V] tensor is written.
"""
from __future__ import annotations

import torch
from torch import Tensor

from rl_dlm.components import LikelihoodEstimator, MaskPlan, Rollout

__all__ = ["FP32_LOGIT_BUDGET", "LikelihoodEstimator", "MaskPlan", "score", "token_logp", "weighted_sum"]

# Largest number of fp32 logits materialised at once by `token_logp` (≈ 256 MB).
FP32_LOGIT_BUDGET = 64 * 1024 * 1024


def token_logp(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[targets] in fp32, never holding more than FP32_LOGIT_BUDGET fp32 logits.

    logits: [R, L, V] in any dtype; targets: [R, L] → [R, L] fp32.
    """
    r, length, v = logits.shape
    flat, flat_t = logits.reshape(r * length, v), targets.reshape(r * length)
    chunk = max(1, FP32_LOGIT_BUDGET // v)
    out = []
    for i in range(0, flat.shape[0], chunk):
        part = flat[i:i + chunk].float()
        picked = part.gather(-1, flat_t[i:i + chunk, None]).squeeze(-1)
        out.append(picked - torch.logsumexp(part, -1))
    return torch.cat(out).reshape(r, length)


def score(policy, rollout: Rollout, plan: MaskPlan, rows_per_forward: int | None = None) -> Tensor:
    """Forward every view of `plan` (rows of `rollout` already selected) → [N, K, L] fp32 token log-probs."""
    n, k, total = plan.input_ids.shape
    p = rollout.prompt_ids.shape[1]
    length = total - p
    ids = plan.input_ids.reshape(n * k, total)
    attn = torch.cat([rollout.prompt_mask, torch.ones(n, length, dtype=torch.bool, device=ids.device)], 1)
    attn = attn.repeat_interleave(k, 0)
    targets = plan.targets if plan.targets is not None else rollout.completion_ids[:, None].expand(n, k, length)
    targets = targets.reshape(n * k, length)
    step = rows_per_forward or n * k
    out = []
    for i in range(0, n * k, step):
        logits = policy.logits(ids[i:i + step], attn[i:i + step], keep=slice(p, None))
        if plan.temperature != 1.0:
            logits = logits / plan.temperature
        out.append(token_logp(logits, targets[i:i + step]))
    return torch.cat(out).reshape(n, k, length)


def weighted_sum(view_logp: Tensor, plan: MaskPlan) -> Tensor:
    """The common reduction: Σ_K weights · log-probs → [N, L]."""
    return (plan.weights * view_logp).sum(1)
