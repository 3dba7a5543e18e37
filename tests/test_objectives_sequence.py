"""The clipped sequence-ratio objective (GDPO), against hand-computed numbers.

Run: .venv/bin/python -m pytest tests/test_objectives_sequence.py -q
"""
from __future__ import annotations

import math

import pytest
import torch

from rl_dlm.objectives import ClippedSequenceObjective

# Row 0: completion of L = 2 (then 2 padding slots); each of its tokens gains ln 1.5 over the old policy, so
# ELBO − ELBO_old = 2 ln 1.5 and ρ = exp(2 ln 1.5 / 2) = 1.5. Row 1: L = 4, each token gains ln 0.9: ρ = 0.9.
MASK = torch.tensor([[True, True, False, False], [True, True, True, True]])
OLD = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-1.0, -1.0, -2.0, -2.0]])
DELTA = torch.tensor([[math.log(1.5), math.log(1.5), 0.0, 0.0], [math.log(0.9)] * 4])
ADV = torch.tensor([1.0, -2.0])


def test_clipped_sequence_ratio_hand_computed():
    # ε = 0.2: row 0 min(1.5·1, clip(1.5)·1 = 1.2) = 1.2 → −1.2 (clipped: ρ > 1.2 with A > 0);
    # row 1 min(0.9·−2, clip(0.9)·−2) = −1.8 → +1.8 (not clipped). Mean over sequences: (−1.2 + 1.8)/2 = 0.3.
    loss, stats = ClippedSequenceObjective(epsilon=0.2)(OLD + DELTA, OLD, None, ADV, MASK)
    assert math.isclose(loss.item(), 0.3, abs_tol=1e-6)
    assert stats["clip_fraction"] == 0.5 and math.isclose(stats["ratio_mean"], 1.2, abs_tol=1e-6)
    assert "kl" not in stats


def test_full_canvas_normalises_by_every_slot():
    # Row 0 now has L = 4 (its padding slots count, with zero change): ρ = exp(2 ln 1.5 / 4) = √1.5 ≈ 1.2247,
    # still clipped to 1.2; row 1 is unchanged. The loss is the same 0.3, the mean ratio (√1.5 + 0.9)/2.
    loss, stats = ClippedSequenceObjective(epsilon=0.2, full_canvas=True)(OLD + DELTA, OLD, None, ADV, MASK)
    assert math.isclose(loss.item(), 0.3, abs_tol=1e-6)
    assert math.isclose(stats["ratio_mean"], (math.sqrt(1.5) + 0.9) / 2, abs_tol=1e-6)


def test_sequence_kl_penalty():
    # Row 0's reference is 0.5 below the policy on each counted token: d = (ELBO_ref − ELBO)/L = −0.5,
    # k3 = e^−0.5 + 0.5 − 1 = 0.106531; row 1's reference equals the policy: 0. β = 0.1 adds 0.1 · 0.053265.
    logp = OLD + DELTA
    ref = logp - 0.5 * torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    objective = ClippedSequenceObjective(epsilon=0.2, beta=0.1)
    assert objective.needs_reference
    loss, stats = objective(logp, OLD, ref, ADV, MASK)
    k3 = math.exp(-0.5) + 0.5 - 1
    assert math.isclose(stats["kl"], k3 / 2, abs_tol=1e-6)
    assert math.isclose(loss.item(), 0.3 + 0.1 * k3 / 2, abs_tol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        objective(logp, OLD, None, ADV, MASK)


def test_gradient_flows_only_through_unclipped_sequences():
    logp = (OLD + DELTA).clone().requires_grad_(True)
    loss, _ = ClippedSequenceObjective(epsilon=0.2)(logp, OLD, None, ADV, MASK)
    loss.backward()
    # Row 0 is clipped (no gradient). Row 1: d/dlogp_k of −(1/2)·ρ·A with ρ = exp(Σ Δ / 4): −(1/2)·A·ρ/4 = 0.225
    # on each of its 4 tokens.
    assert torch.equal(logp.grad[0], torch.zeros(4))
    assert torch.allclose(logp.grad[1], torch.full((4,), 0.225))
