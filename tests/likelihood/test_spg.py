"""SPG (rl_dlm/likelihood/spg.py): the sandwich ELBO ≤ log q ≤ EUBO_β on an exact consistent toy, EUBO_β
non-decreasing in β, per-token Jensen; the estimator converges to both exact bounds; its masks; the objective
against hand-computed numbers; and DESIGN §9's estimator invariants.

Run: .venv/bin/python -m pytest tests/likelihood/test_spg.py -q      (≈ 10 s on 2 CPU cores)
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rl_dlm.likelihood.base import MaskPlan, score
from rl_dlm.likelihood.spg import SandwichObjective, SPGEstimator
from tests.likelihood.test_elbo import _rollout_with_lengths
from tests.likelihood.toy import ToyModel, toy_rollout


def exact_token_bounds(model: ToyModel, o, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-token ELBO_i and EUBO_i under uniform-t masks: m ~ U{1..L}, M a uniform m-subset containing i.

    ELBO_i = E[log q(o_i | o_¬M)],  EUBO_i = (1/β) log E[q(o_i | o_¬M)^β]."""
    lp, L = model.masked_logp(o), model.length
    elbo, eubo = np.zeros(L), np.zeros(L)
    for i in range(L):
        e, u = 0.0, 0.0
        for m in range(1, L + 1):
            rows = [b for b in range(1, 1 << L) if bin(b).count("1") == m and b >> i & 1]
            vals = np.array([lp[b, i] for b in rows])
            e += vals.mean() / L
            u += np.exp(beta * vals).mean() / L
        elbo[i], eubo[i] = e, math.log(u) / beta
    return elbo, eubo


CONSISTENT = [ToyModel.from_joint(vocab=3, length=4, seed=s, coupling=c) for s, c in
              [(0, 0.8), (1, -0.6), (2, 1.5), (3, 0.3)]]


@pytest.mark.parametrize("model", CONSISTENT, ids=lambda m: f"seed{m.seed}")
def test_sandwich_holds_on_a_consistent_toy_for_every_completion(model):
    """ELBO ≤ log q(o) ≤ EUBO_β for β ≥ 1, EUBO_β non-decreasing in β, EUBO_i ≥ ELBO_i per token (β > 0).

    Measured (4 Potts joints, V = 3, L = 4, all 81 completions each): the ELBO equals log q (a
    consistent denoiser) to 4e-15; the smallest EUBO_1 − log q is 0.0055 nats; the smallest per-token
    Jensen gap at β = 0.25 is 6e-5."""
    for j, o in enumerate(itertools.product(range(3), repeat=4)):
        logq = model.joint_logp[j]
        assert abs(model.exact_loglik(o) - logq) < 1e-9
        previous = -math.inf
        for beta in (0.25, 0.5, 1.0, 1.5, 2.0, 4.0):
            elbo_i, eubo_i = exact_token_bounds(model, o, beta)
            assert elbo_i.sum() <= logq + 1e-9
            assert (eubo_i >= elbo_i - 1e-12).all(), (o, beta)
            if beta >= 1:
                assert eubo_i.sum() >= logq - 1e-12, (o, beta)
            assert eubo_i.sum() >= previous - 1e-12
            previous = eubo_i.sum()


def test_the_upper_bound_needs_a_consistent_denoiser():
    """For an arbitrary denoiser (the conditionals of no joint) EUBO_1 falls below the random-order likelihood
    for some completions — why the sandwich test uses a consistent toy. Measured (random table, V = 3, L = 4,
    seed 0): 40 of 81 completions at β = 1, 2 at β = 1.5, none at β = 2 or 4."""
    table = ToyModel.random_table(vocab=3, length=4, seed=0)
    below = {beta: sum(exact_token_bounds(table, o, beta)[1].sum() < table.exact_loglik(o)
                       for o in itertools.product(range(3), repeat=4)) for beta in (1.0, 4.0)}
    assert below[1.0] > 0 and below[4.0] < below[1.0], below


def test_estimator_converges_to_the_exact_bounds_with_uniform_masks():
    """One row, K = 4000 uniform-t views: |o|·ℓ̄ is an unbiased mean of K i.i.d. terms (checked to 5 standard
    errors) and |o|·ū, a log of a Monte Carlo mean, lands within 0.02 nats of Σ_i EUBO_i.
    Measured (Potts seed 2, o = (0, 1, 1, 2), β = 1.5): ELBO −8.184 exact, −8.199 estimated (s.e. 0.066);
    EUBO −6.477 exact, −6.463 estimated."""
    model, o, beta, k = CONSISTENT[2], (0, 1, 1, 2), 1.5, 4000
    est = SPGEstimator(views=k, eubo_beta=beta, masking="uniform", mask_id=model.mask_id)
    rollout = toy_rollout(model, [o], [7])
    plan = est.plan(rollout, 0)
    view_logp = score(model, rollout, plan)
    bounds = est.reduce(view_logp, plan).double()
    elbo_i, eubo_i = exact_token_bounds(model, o, beta)
    per_view = k * (plan.weights * view_logp).sum(2)[0].double()  # K i.i.d. unbiased ELBO draws
    se = float(per_view.std()) / math.sqrt(k)
    assert abs(float(bounds[0, :, 0].sum()) - elbo_i.sum()) < 5 * se
    assert abs(float(bounds[0, :, 1].sum()) - eubo_i.sum()) < 0.02
    assert bounds[0, :, 1].sum() > bounds[0, :, 0].sum()


def test_reduce_against_hand_computed_numbers():
    """K = 2, L = 3, |o| = 3. View 0 masks {0, 1} (t = 2/3), view 1 masks {1} (t = 1/3); position 2 is in no
    view, so S = {0, 1} and the EUBO's mean over S is scaled by |o| = 3."""
    est = SPGEstimator(views=2, eubo_beta=2.0, masking="uniform")
    w = torch.tensor([[[1 / (2 * 2 / 3), 1 / (2 * 2 / 3), 0.0], [0.0, 1 / (2 * 1 / 3), 0.0]]])
    lp = torch.tensor([[[-0.5, -1.0, -9.0], [-7.0, -2.0, -9.0]]])
    out = est.reduce(lp, MaskPlan(input_ids=torch.zeros(1, 2, 4, dtype=torch.long), weights=w))
    lower = 0.5 * (-0.5 - 1.0) / 2 + 0.5 * (-2.0)  # ℓ̄ = (1/K) Σ_k mean_{i∈M_k} lp
    assert torch.allclose(out[0, :, 0].sum(), torch.tensor(3 * lower))
    u0 = 0.5 * math.log(0.5 * math.exp(2 * -0.5) / (2 / 3))
    u1 = 0.5 * math.log(0.5 * (math.exp(2 * -1.0) / (2 / 3) + math.exp(2 * -2.0) / (1 / 3)))
    assert torch.allclose(out[0, :, 1], torch.tensor([1.5 * u0, 1.5 * u1, 0.0]))


def test_block_masks_clean_before_fully_masked_after_tail_never_scored():
    lengths, block = [1, 5, 7, 12], 4
    rollout = _rollout_with_lengths(lengths * 10)
    est = SPGEstimator(views=3, masking="block", block_length=block, mask_id=99)
    plan = est.plan(rollout, 0)
    assert torch.equal(plan.input_ids[:, :, :3], rollout.prompt_ids[:, None].expand(-1, 3, -1))
    hidden = plan.input_ids[:, :, 3:] == 99
    for r, length in enumerate(lengths * 10):
        blocks = -(-length // block)
        picked = []
        for k in range(3):
            h, w = hidden[r, k], plan.weights[r, k]
            assert h[length:].all() and (w[length:] == 0).all(), "the tail is masked and never scored"
            b = next(c for c in range(blocks) if h[c * block:min((c + 1) * block, length)].any())
            picked.append(b)
            assert not h[:b * block].any(), "earlier blocks stay clean"
            assert h[(b + 1) * block:].all(), "later blocks are fully masked"
            scored = h[:length]
            t = float(scored.sum()) / length
            assert torch.allclose(w[:length], scored.float() / (3 * t))
        first = picked[:min(3, blocks)]
        assert len(set(first)) == len(first), "blocks are drawn without replacement"
    assert torch.allclose(plan.weights.sum((1, 2)), rollout.completion_mask.sum(1).float())


def test_design_invariants_same_plan_same_logp_and_rechunking():
    model = ToyModel.random_table(vocab=3, length=4, seed=0)
    completions = list(itertools.product(range(3), repeat=4))[:12]
    rollout = toy_rollout(model, completions, range(100, 112))
    for masking in ("block", "uniform"):
        est = SPGEstimator(views=2, masking=masking, block_length=2, mask_id=model.mask_id)
        plan = est.plan(rollout, 3)
        first = est.reduce(score(model, rollout, plan), plan)
        assert torch.equal(first, est.reduce(score(model, rollout, plan, rows_per_forward=5), plan))
        for idx in (slice(0, 5), slice(5, 12), torch.tensor([11, 2, 7])):
            sub = est.plan(rollout.rows(idx), 3)
            assert torch.equal(sub.input_ids, plan.rows(idx).input_ids)
            assert torch.equal(sub.weights, plan.rows(idx).weights)
        assert not torch.equal(est.plan(rollout, 4).input_ids, plan.input_ids), "each iteration draws anew"


def test_objective_against_hand_computed_numbers():
    """Two rows, |o| = 2 and 1. Row 0: A = +1, takes the ELBO; row 1: A = −2, takes ω·EUBO + (1 − ω)·ELBO."""
    bounds = torch.tensor([[[-1.0, -0.5], [-2.0, -1.0]], [[-3.0, -2.0], [9.0, 9.0]]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([1.0, -2.0])
    for omega in (0.0, 0.5, 1.0):
        loss, stats = SandwichObjective(eubo_weight=omega)(bounds, bounds.detach(), None, adv, mask)
        s1 = omega * -2.0 + (1 - omega) * -3.0
        assert math.isclose(loss.item(), -(1.0 * -3.0 + -2.0 * s1) / 3, rel_tol=1e-6)
        assert math.isclose(stats["negative_fraction"], 0.5)
    loss, _ = SandwichObjective(eubo_weight=1.0)(bounds, bounds.detach(), None, adv, mask)
    loss.backward()
    expected = torch.tensor([[[-1 / 3, 0.0], [-1 / 3, 0.0]], [[0.0, 2 / 3], [0.0, 0.0]]])
    assert torch.allclose(bounds.grad, expected), "negative rows push only on the upper bound at ω = 1"
    with pytest.raises(ValueError, match="eubo_weight"):
        SandwichObjective(eubo_weight=1.5)
    with pytest.raises(ValueError, match="masking"):
        SPGEstimator(masking="random")


def test_eubo_gradient_is_finite_where_some_positions_are_in_no_view():
    model = ToyModel.random_table(vocab=3, length=4, seed=1)
    rollout = toy_rollout(model, [(0, 1, 2, 0)] * 3, [1, 2, 3])
    est = SPGEstimator(views=1, masking="uniform", mask_id=model.mask_id)
    plan = est.plan(rollout, 0)
    view_logp = score(model, rollout, plan).requires_grad_(True)
    loss, _ = SandwichObjective(eubo_weight=1.0)(est.reduce(view_logp, plan), None, None,
                                                 torch.tensor([-1.0, -1.0, -1.0]), rollout.completion_mask)
    loss.backward()
    assert torch.isfinite(view_logp.grad).all() and torch.isfinite(loss)
