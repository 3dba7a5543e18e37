"""ESPO (rl_dlm/likelihood/espo.py): the stratified coupled ELBO is exact in expectation on a toy model, its
masks and weights, the per-token normalised sequence ratio and the k2-on-ELBO KL against hand-computed
numbers, ρ ≡ 1 at θ_old with gradient A·∇ELBO/(bL), and DESIGN §9's estimator invariants.

Run: .venv/bin/python -m pytest tests/likelihood/test_espo.py -q      (≈ 5 s on 2 CPU cores)
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from rl_dlm.likelihood.base import score
from rl_dlm.likelihood.espo import ESPOEstimator, ESPOObjective
from rl_dlm.objectives.sequence import ClippedSequenceObjective
from tests.likelihood.test_elbo import _rollout_with_lengths
from tests.likelihood.toy import ToyModel, toy_rollout


def test_each_half_averaged_over_m_and_masks_is_the_exact_elbo():
    """E over m ~ U{0..L} of (1/t)·h(m), t = m/(L + 1), is Σ_{m≥1} h(m)/m = the ELBO: the (L + 1) cancel. The
    complement half has m′ = L − m, also uniform. Exact, for every completion of a random table (V = 3, L = 4)."""
    model = ToyModel.random_table(vocab=3, length=4, seed=0)
    big_l = model.length
    for o in itertools.product(range(3), repeat=4):
        first = sum((big_l + 1) / m * model.mean_masked_sum(o, m) for m in range(1, big_l + 1)) / (big_l + 1)
        second = sum((big_l + 1) / (big_l - m) * model.mean_masked_sum(o, big_l - m)
                     for m in range(0, big_l)) / (big_l + 1)
        assert abs(first - model.exact_elbo(o)) < 1e-10 and abs(second - model.exact_elbo(o)) < 1e-10


def test_estimator_is_unbiased_on_the_toy():
    """4000 rows (K = 2 draws each, 16000 forwards) through plan → score → reduce. Measured (random table,
    o = (2, 0, 1, 1)): mean −6.400 ± 0.042 (s.e.) against the exact ELBO −6.347."""
    model, o = ToyModel.random_table(vocab=3, length=4, seed=0), (2, 0, 1, 1)
    est = ESPOEstimator(draws=2, mask_id=model.mask_id)
    rollout = toy_rollout(model, [o] * 4000, range(4000))
    plan = est.plan(rollout, 0)
    draws = est.reduce(score(model, rollout, plan), plan).sum(1).double()
    se = float(draws.std()) / math.sqrt(len(draws))
    assert abs(float(draws.mean()) - model.exact_elbo(o)) < 5 * se, (float(draws.mean()), model.exact_elbo(o), se)


@pytest.mark.parametrize("full_canvas", [False, True])
def test_views_pair_up_weights_are_half_over_k_t_and_m_is_stratified(full_canvas):
    lengths = [1, 4, 7, 12] * 50
    rollout = _rollout_with_lengths(lengths)
    k = 3
    est = ESPOEstimator(draws=k, full_canvas=full_canvas, mask_id=99)
    plan = est.plan(rollout, 0)
    assert plan.input_ids.shape == (len(lengths), 2 * k, 15)
    assert torch.equal(plan.input_ids[:, :, :3], rollout.prompt_ids[:, None].expand(-1, 2 * k, -1))
    hidden = plan.input_ids[:, :, 3:] == 99
    seen = {}
    for r, length in enumerate(lengths):
        big_l = 12 if full_canvas else length
        counts = []
        for d in range(k):
            first, second = hidden[r, 2 * d, :big_l], hidden[r, 2 * d + 1, :big_l]
            assert not (first & second).any() and (first | second).all(), "the pair partitions the positions"
            assert not hidden[r, 2 * d:2 * d + 2, big_l:].any() and (plan.weights[r, :, big_l:] == 0).all()
            m = int(first.sum())
            counts.append(m)
            expected = torch.where(first, 1 / (2 * k * m / (big_l + 1)) if m else 0.0,
                                   1 / (2 * k * (big_l - m) / (big_l + 1)) if m < big_l else 0.0)
            assert torch.allclose(plan.weights[r, 2 * d, :big_l] + plan.weights[r, 2 * d + 1, :big_l],
                                  expected.float())
        for d in range(1, k):  # stratified: the draws are m_0 shifted by ⌊d(L + 1)/K⌋ modulo L + 1
            assert counts[d] == (counts[0] + d * (big_l + 1) // k) % (big_l + 1)
        seen.setdefault(big_l, set()).add(counts[0])
    assert seen[12] == set(range(13)), "m_0 takes every value in {0..L}"


def test_ratio_and_k2_kl_against_hand_computed_numbers():
    """Row 0: L = 3, ΔELBO = 0.1, ρ = e^{0.1/3}, A = 1; row 1: L = 2 (third slot after end-of-turn),
    ΔELBO = 0.5, ρ = e^{0.25} = 1.284 > 1 + ε, A = 2 (clipped). ELBO − ELBO_ref = −1 and +1."""
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 5.0]], requires_grad=True)
    old = torch.tensor([[-1.1, -2.0, -3.0], [-1.0, -1.5, 0.0]])
    ref = torch.tensor([[-1.0, -2.0, -2.0], [-1.0, -2.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.tensor([1.0, 2.0])
    loss, stats = ESPOObjective(epsilon=0.2, beta=0.1)(logp, old, ref, adv, mask)
    rho0, rho1 = math.exp(0.1 / 3), math.exp(0.25)
    kl = [0.5 * 1 / 3, 0.5 * 1 / 2]  # ½ Δ² / L per row
    assert math.isclose(loss.item(), -(rho0 * 1 + 1.2 * 2) / 2 + 0.1 * sum(kl) / 2, rel_tol=1e-6)
    assert math.isclose(stats["kl"], sum(kl) / 2, rel_tol=1e-6)
    assert math.isclose(stats["ratio_mean"], (rho0 + rho1) / 2, rel_tol=1e-6) and stats["clip_fraction"] == 0.5
    # ESPO's k2 is the sequence objective's k2, ½(Δ/L)², times L
    _, ours = ClippedSequenceObjective(epsilon=0.2, beta=0.1, kl="k2")(logp, old, ref, adv, mask)
    assert math.isclose(ours["kl"], (0.5 / 9 + 0.5 / 4) / 2, rel_tol=1e-6)
    loss.backward()
    grad_row0 = -rho0 / 3 / 2 + 0.1 * (-1.0) / 3 / 2  # surrogate A ρ / L / b, plus β Δ / L / b
    assert torch.allclose(logp.grad[0], torch.full((3,), grad_row0))
    assert torch.allclose(logp.grad[1], torch.tensor([0.1 * 1 / 2 / 2] * 2 + [0.0])), "clipped row: KL only"


def test_ratio_is_one_at_the_old_policy_with_shared_masks_not_with_independent_ones():
    """On the toy: the same plan for old and current gives ρ ≡ 1, no clipping, and the gradient
    −A_n/(b·L_n) on each token term (i.e. A·∇ELBO/L). Masks drawn anew for the current pass (GDPO's reference
    bug) give ρ ≠ 1 although the policy has not moved."""
    model = ToyModel.random_table(vocab=3, length=4, seed=0)
    rollout = toy_rollout(model, list(itertools.product(range(3), repeat=4))[:6], range(6))
    est = ESPOEstimator(draws=2, mask_id=model.mask_id)
    plan = est.plan(rollout, 0)
    old = est.reduce(score(model, rollout, plan), plan)
    logp = est.reduce(score(model, rollout, plan), plan).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0])
    loss, stats = ESPOObjective(epsilon=0.2, beta=1e-3)(logp, old, logp.detach(), adv, rollout.completion_mask)
    assert stats["ratio_mean"] == 1.0 and stats["clip_fraction"] == 0.0 and stats["kl"] == 0.0
    loss.backward()
    assert torch.allclose(logp.grad, (-adv / (6 * 4))[:, None].expand(-1, 4))
    other = est.plan(rollout, 1)
    fresh = est.reduce(score(model, rollout, other), other)
    _, stats = ESPOObjective(beta=0.0)(fresh, old, None, adv, rollout.completion_mask)
    assert abs(stats["ratio_mean"] - 1.0) > 1e-3


def test_design_invariants_same_plan_same_logp_and_rechunking():
    model = ToyModel.random_table(vocab=3, length=4, seed=0)
    rollout = toy_rollout(model, list(itertools.product(range(3), repeat=4))[:12], range(100, 112))
    est = ESPOEstimator(draws=2, mask_id=model.mask_id)
    plan = est.plan(rollout, 3)
    first = est.reduce(score(model, rollout, plan), plan)
    assert torch.equal(first, est.reduce(score(model, rollout, plan, rows_per_forward=5), plan))
    for idx in (slice(0, 5), slice(5, 12), torch.tensor([11, 2, 7])):
        sub = est.plan(rollout.rows(idx), 3)
        assert torch.equal(sub.input_ids, plan.rows(idx).input_ids) and torch.equal(sub.weights, plan.rows(idx).weights)
    assert not torch.equal(est.plan(rollout, 4).input_ids, plan.input_ids), "each iteration draws anew"


def test_mask_tail_hides_the_tail_and_bad_knobs_fail():
    rollout = _rollout_with_lengths([3, 12])
    plan = ESPOEstimator(mask_tail=True, mask_id=99).plan(rollout, 0)
    assert (plan.input_ids[0, :, 6:] == 99).all() and (plan.weights[0, :, 3:] == 0).all()
    with pytest.raises(ValueError, match="draws"):
        ESPOEstimator(draws=0)
    with pytest.raises(ValueError, match="mask_tail"):
        ESPOEstimator(mask_tail=True, full_canvas=True)
