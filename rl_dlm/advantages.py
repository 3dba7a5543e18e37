"""Group advantages: pure functions of rewards [N] and group ids [N] → advantages [N].

- `mean`: A = r − mean_group(r)                      (d1, GDPO, CJ-GRPO, IGPO; DiffuCoder's paper)
- `zscore`: A = (r − mean_group(r)) / (std_group(r) + 1e-4)   (DeepSeekMath GRPO; std unbiased as in TRL)
- `leave_one_out`: A = r − mean of the *other* G − 1 rewards  (DiffuCoder's released code; RLOO)

Groups need not be contiguous and may have different sizes; rows with a NaN reward (every reward function
returned None) get advantage 0 and are left out of their group's statistics.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, ...]:
    valid = ~torch.isnan(rewards)
    r = torch.where(valid, rewards, torch.zeros_like(rewards))
    _, inverse = torch.unique(group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(groups, dtype=r.dtype, device=r.device).index_add_(0, inverse, valid.to(r.dtype))
    total = torch.zeros_like(count).index_add_(0, inverse, r)
    sq = torch.zeros_like(count).index_add_(0, inverse, r * r)
    return inverse, count, total, sq, valid


def mean_centred(rewards: Tensor, group_ids: Tensor) -> Tensor:
    inverse, count, total, _, valid = _group_stats(rewards, group_ids)
    mean = total / count.clamp_min(1)
    return torch.where(valid, rewards - mean[inverse], torch.zeros_like(rewards))


def zscore(rewards: Tensor, group_ids: Tensor, eps: float = 1e-4) -> Tensor:
    inverse, count, total, sq, valid = _group_stats(rewards, group_ids)
    mean = total / count.clamp_min(1)
    var = (sq - count * mean * mean) / (count - 1).clamp_min(1)
    std = var.clamp_min(0).sqrt()
    adv = (rewards - mean[inverse]) / (std[inverse] + eps)
    return torch.where(valid, adv, torch.zeros_like(rewards))


def leave_one_out(rewards: Tensor, group_ids: Tensor) -> Tensor:
    inverse, count, total, _, valid = _group_stats(rewards, group_ids)
    c = count[inverse]
    others = (total[inverse] - torch.where(valid, rewards, torch.zeros_like(rewards))) / (c - 1).clamp_min(1)
    return torch.where(valid & (c > 1), rewards - others, torch.zeros_like(rewards))


ADVANTAGES = {"mean": mean_centred, "zscore": zscore, "leave_one_out": leave_one_out}


def get_advantage(name: str):
    if name not in ADVANTAGES:
        raise ValueError(f"advantage must be one of {sorted(ADVANTAGES)}; got {name!r}")
    return ADVANTAGES[name]


def zero_std_fraction(rewards: Tensor, group_ids: Tensor) -> float:
    """Fraction of groups whose rewards are all equal (no learning signal)."""
    fractions = []
    for g in torch.unique(group_ids):
        r = rewards[group_ids == g]
        r = r[~torch.isnan(r)]
        fractions.append(float(r.numel() < 2 or bool((r == r[0]).all())))
    return sum(fractions) / max(len(fractions), 1)


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {f"advantage/{name}": func for name, func in ADVANTAGES.items()}
