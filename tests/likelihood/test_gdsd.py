"""GDSD and TLC (rl_dlm/likelihood/gdsd.py): per-draw scores kept separate against hand-computed numbers; the
regression's minimiser is the advantage-tilted teacher (gradient 0 exactly at (S − S_old)/L = ψA, and
gradient descent lands there); REINFORCE gradient at θ_old; the clamp window; the k2 KL; TLC's 1/t weights
(its score is ESPO's coupled ELBO per draw, exact in expectation on a toy model); DESIGN §9's invariants.

Run: .venv/bin/python -m pytest tests/likelihood/test_gdsd.py -q      (≈ 5 s on 2 CPU cores)
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from rl_dlm.likelihood.base import MaskPlan, score, token_logp
from rl_dlm.likelihood.espo import ESPOEstimator
from rl_dlm.likelihood.gdsd import GDSDEstimator, GDSDObjective
from tests.likelihood.toy import ToyModel, toy_rollout

TOY = ToyModel.random_table(vocab=3, length=4, seed=0)


def _toy_batch(n=6, seed0=0):
    return toy_rollout(TOY, list(itertools.product(range(3), repeat=4))[:n], range(seed0, seed0 + n))


def test_reduce_keeps_each_draw_apart_against_hand_computed_numbers():
    """K = 2 pairs, L = 3. Pair 0 masks {0} then {1, 2}; pair 1 masks {0, 1, 2} then nothing (m = L)."""
    w_gdsd = torch.tensor([[[0.5, 0, 0], [0, 0.5, 0.5], [0.5, 0.5, 0.5], [0, 0, 0]]])
    lp = torch.tensor([[[-1.0, -9, -9], [-9, -2.0, -3.0], [-4.0, -5.0, -6.0], [-9, -9, -9]]])
    est = GDSDEstimator(draws=2)
    out = est.reduce(lp, MaskPlan(input_ids=torch.zeros(1, 4, 5, dtype=torch.long), weights=w_gdsd))
    assert out.shape == (1, 2, 3)
    assert torch.allclose(out.sum(-1), torch.tensor([[0.5 * (-1 - 2 - 3), 0.5 * (-4 - 5 - 6)]]))


@pytest.mark.parametrize("tlc", [False, True])
def test_plan_weights_gdsd_half_everywhere_once_tlc_half_over_t(tlc):
    rollout = _toy_batch(12)
    est = GDSDEstimator(draws=2, tlc=tlc, mask_id=TOY.mask_id)
    espo = ESPOEstimator(draws=2, mask_id=TOY.mask_id)
    plan, reference = est.plan(rollout, 0), espo.plan(rollout, 0)
    assert torch.equal(plan.input_ids, reference.input_ids), "GDSD scores ESPO's views"
    pairs = plan.weights.reshape(12, 2, 2, 4)
    if tlc:  # ½/t on M, ½/t′ on M^c: K times ESPO's per-view weights
        assert torch.allclose(plan.weights, 2 * reference.weights)
    else:  # every position once per pair, weight ½, no 1/t
        assert torch.equal(pairs.sum(2), torch.full((12, 2, 4), 0.5))
        assert ((pairs > 0).sum(2) == 1).all()
    view_logp = score(TOY, rollout, plan)
    scores = est.reduce(view_logp, plan)
    if tlc:  # the mean over draws of S_TLC is ESPO's ELBO on the same views
        assert torch.allclose(scores.sum(-1).mean(1), espo.reduce(view_logp, reference).sum(1), atol=1e-5)


def test_tlc_score_is_the_exact_elbo_in_expectation():
    """Each draw's S_TLC is one unbiased coupled-ELBO draw. Measured (4000 rows × 2 draws, o = (2, 0, 1, 1)):
    mean −6.400 ± 0.055 (s.e. over the 8000 draws) against the exact ELBO −6.347."""
    o = (2, 0, 1, 1)
    rollout = toy_rollout(TOY, [o] * 4000, range(4000))
    est = GDSDEstimator(draws=2, tlc=True, mask_id=TOY.mask_id)
    plan = est.plan(rollout, 0)
    draws = est.reduce(score(TOY, rollout, plan), plan).sum(-1).double().flatten()
    se = float(draws.std()) / math.sqrt(len(draws))
    assert abs(float(draws.mean()) - TOY.exact_elbo(o)) < 5 * se


def test_minimiser_is_the_advantage_tilted_teacher():
    """Unclamped, β = 0: the loss is (1/b) Σ ((S − S_teacher)/L)², S_teacher = S_old + L·ψ·A; its gradient is 0
    exactly there, and gradient descent on free per-draw offsets from S_old converges to it."""
    rollout = _toy_batch(6)
    est = GDSDEstimator(draws=2, mask_id=TOY.mask_id)
    plan = est.plan(rollout, 0)
    old = est.reduce(score(TOY, rollout, plan), plan)  # [6, 2, 4]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.2, 0.0])
    psi, length = 2.0, 4
    objective = GDSDObjective(psi=psi, clamp="none", beta=0.0)
    teacher = old.sum(-1) + length * psi * adv[:, None]
    offset = torch.zeros(6, 2, requires_grad=True)  # S_θ = S_old + offset, spread over the first token
    bump = torch.nn.functional.one_hot(torch.tensor(0), 4).float()
    optimiser = torch.optim.SGD([offset], lr=2.0)
    for _ in range(300):
        optimiser.zero_grad()
        loss, _ = objective(old + offset[..., None] * bump, old, None, adv, rollout.completion_mask)
        loss.backward()
        optimiser.step()
    assert torch.allclose(old.sum(-1) + offset.detach(), teacher, atol=1e-4)
    at_teacher = (old + (length * psi * adv)[:, None, None] / length).requires_grad_(True)
    loss, stats = objective(at_teacher, old, None, adv, rollout.completion_mask)
    loss.backward()
    assert loss.item() < 1e-10 and at_teacher.grad.abs().max() < 1e-6
    assert math.isclose(stats["log_ratio_per_token"], psi * adv.mean().item(), rel_tol=1e-5)


def test_gradient_at_the_old_policy_is_reinforce_on_s():
    """Δ = 0: d loss / d S(n, k) = −2ψA_n/(bL), on every token term; the k2 KL adds β(S − S_ref)/(bKL)."""
    rollout = _toy_batch(6)
    est = GDSDEstimator(draws=2, mask_id=TOY.mask_id)
    plan = est.plan(rollout, 0)
    old = est.reduce(score(TOY, rollout, plan), plan)
    terms = old.clone().requires_grad_(True)
    ref = old - 0.1  # S − S_ref = 0.4 per draw (4 tokens)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0])
    loss, stats = GDSDObjective(psi=10.0, beta=0.5)(terms, old, ref, adv, rollout.completion_mask)
    loss.backward()
    expected = -2 * 10.0 * adv / (6 * 4) + 0.5 * 0.4 / (6 * 2 * 4)
    assert torch.allclose(terms.grad, expected[:, None, None].expand(6, 2, 4), atol=1e-6)
    assert math.isclose(loss.item(), (100 * adv ** 2).sum().item() * 2 / 6 + 0.5 * 0.5 * 0.16 / 4, rel_tol=1e-5)
    assert math.isclose(stats["kl"], 0.5 * 0.16 / 4, rel_tol=1e-5) and stats["in_window_fraction"] == 1.0


@pytest.mark.parametrize("clamp", ["token_mean", "sum"])
def test_outside_the_window_the_gradient_is_zero_on_both_sides(clamp):
    """Two rows, L = 2, ε = 0.1 (window [−0.105, 0.095]). Row 0 (Δ = ±0.04, Δ/L = ±0.02) is inside on either
    scale; row 1 (Δ = ±1, Δ/L = ±0.5) is outside on either: no gradient, whatever the sign of the error."""
    old = torch.zeros(2, 1, 2)
    terms = torch.tensor([[[0.02, 0.02]], [[0.5, 0.5]]], requires_grad=True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    for sign in (1.0, -1.0):
        terms.grad = None
        loss, stats = GDSDObjective(psi=1.0, epsilon=0.1, clamp=clamp, beta=0.0)(
            terms * sign, old, None, torch.tensor([1.0, 1.0]), mask)
        loss.backward()
        assert (terms.grad[1] == 0).all() and (terms.grad[0] != 0).all()
        assert stats["in_window_fraction"] == 0.5
    lo = math.log(0.9)
    objective = GDSDObjective(psi=1.0, epsilon=0.1, clamp=clamp, beta=0.0)
    loss, _ = objective(-terms, old, None, torch.tensor([1.0, 1.0]), mask)
    clamped = lo if clamp == "token_mean" else lo / 2  # Δ/L clamped, or Δ clamped then divided by L
    assert math.isclose(loss.item(), ((-0.02 - 1) ** 2 + (clamped - 1) ** 2) / 2, rel_tol=1e-5)


def test_tlc_centring_is_inert():
    """TLC subtracts the detached vocabulary-mean logit before the log-softmax; the log-probs do not change."""
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0)) * 4
    targets = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(1))
    centred = logits - logits.mean(-1, keepdim=True).detach()
    assert torch.allclose(token_logp(logits, targets), token_logp(centred, targets), atol=1e-5)


def test_design_invariants_same_plan_same_scores_and_rechunking():
    rollout = _toy_batch(12, seed0=100)
    for tlc in (False, True):
        est = GDSDEstimator(draws=2, tlc=tlc, mask_id=TOY.mask_id)
        plan = est.plan(rollout, 3)
        first = est.reduce(score(TOY, rollout, plan), plan)
        assert torch.equal(first, est.reduce(score(TOY, rollout, plan, rows_per_forward=5), plan))
        _, stats = GDSDObjective()(first, first.detach(), first.detach(), torch.ones(12), rollout.completion_mask)
        assert stats["log_ratio_per_token"] == 0.0 and stats["kl"] == 0.0
        for idx in (slice(0, 5), slice(5, 12), torch.tensor([11, 2, 7])):
            sub = est.plan(rollout.rows(idx), 3)
            assert torch.equal(sub.input_ids, plan.rows(idx).input_ids)
            assert torch.equal(sub.weights, plan.rows(idx).weights)


def test_bad_knobs_fail():
    with pytest.raises(ValueError, match="clamp"):
        GDSDObjective(clamp="both")
    with pytest.raises(ValueError, match="epsilon"):
        GDSDObjective(epsilon=1.5)
    with pytest.raises(ValueError, match="draws"):
        GDSDEstimator(draws=0)
