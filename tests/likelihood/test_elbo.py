"""The sequence ELBO estimator (GDPO): nodes, mask sizes, exact statistical properties on a toy model, and the
shared invariants on a tiny LLaDA.

Run: .venv/bin/python -m pytest tests/likelihood/test_elbo.py -q      (≈ 5 s on 2 CPU cores)
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rl_dlm.components import Rollout
from rl_dlm.likelihood.base import score
from rl_dlm.likelihood.elbo import SequenceELBOEstimator, gauss_legendre, masked_count
from rl_dlm.objectives import ClippedSequenceObjective
from tests.likelihood.toy import ToyModel, toy_rollout


def elbo_draws(model, est, o, n, seed0=0) -> torch.Tensor:
    """n independent draws of the estimator's ELBO for completion o, through plan → score → reduce."""
    rollout = toy_rollout(model, [o] * n, range(seed0, seed0 + n))
    plan = est.plan(rollout, 0)
    return est.reduce(score(model, rollout, plan), plan).sum(1).double()


# -- nodes, weights and mask sizes ---------------------------------------------------------------------------
def test_gauss_legendre_nodes_weights_and_exactness():
    t, w = gauss_legendre(3)
    assert np.allclose(t, [0.5 - math.sqrt(15) / 10, 0.5, 0.5 + math.sqrt(15) / 10])
    assert np.allclose(t, [0.1127, 0.5, 0.8873], atol=1e-4) and np.allclose(w, [5 / 18, 8 / 18, 5 / 18])
    for n in range(1, 9):
        t, w = gauss_legendre(n)
        assert math.isclose(sum(w), 1.0, abs_tol=1e-12), "node weights must sum to 1"
        for degree in range(2 * n):  # exact for polynomials of degree ≤ 2n − 1: ∫₀¹ t^d dt = 1/(d + 1)
            assert math.isclose(sum(wi * ti ** degree for ti, wi in zip(t, w)), 1 / (degree + 1), rel_tol=1e-10)
    with pytest.raises(ValueError, match="nodes"):
        gauss_legendre(0)


def _rollout_with_lengths(lengths, width=12, stop=9):
    n = len(lengths)
    comp = torch.randint(3, 9, (n, width), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(n, width, dtype=torch.bool)
    for i, length in enumerate(lengths):
        comp[i, length - 1:] = stop  # end-of-turn, then padding
        mask[i, :length] = True
    return Rollout(prompt_ids=torch.tensor([[0, 1, 2]] * n), prompt_mask=torch.tensor([[False, True, True]] * n),
                   completion_ids=comp, completion_mask=mask, group_ids=torch.zeros(n, dtype=torch.long),
                   row_seeds=torch.arange(40, 40 + n))


@pytest.mark.parametrize("nodes", [1, 3, 5])
@pytest.mark.parametrize("full_canvas", [False, True])
def test_each_mask_has_exactly_floor_tL_positions_at_least_one(nodes, full_canvas):
    lengths = [1, 2, 5, 8, 12]
    rollout = _rollout_with_lengths(lengths)
    est = SequenceELBOEstimator(nodes=nodes, full_canvas=full_canvas, mask_id=99)
    t, w = gauss_legendre(nodes)
    for it in range(3):
        plan = est.plan(rollout, it)
        assert torch.equal(plan.input_ids[:, :, :3], rollout.prompt_ids[:, None].expand(-1, nodes, -1))
        masked = plan.input_ids[:, :, 3:] == 99
        for i, length in enumerate(lengths):
            big_l = 12 if full_canvas else length
            for k in range(nodes):
                assert int(masked[i, k].sum()) == max(1, math.floor(t[k] * big_l)) == masked_count(t[k], big_l)
                assert full_canvas or not masked[i, k, length:].any(), "padding after end-of-turn is never masked"
                expected = torch.where(masked[i, k], torch.tensor(w[k] / t[k]), torch.tensor(0.0))
                assert torch.allclose(plan.weights[i, k], expected)
        kept = plan.input_ids[:, :, 3:][~masked]
        assert torch.equal(kept, rollout.completion_ids[:, None].expand(-1, nodes, -1)[~masked])


def test_mask_tail_hides_the_slots_after_end_of_turn_in_every_view_and_scores_the_same_tokens():
    lengths = [1, 5, 12]
    rollout = _rollout_with_lengths(lengths)
    visible = SequenceELBOEstimator(mask_id=99).plan(rollout, 0)
    tail = SequenceELBOEstimator(mask_tail=True, mask_id=99).plan(rollout, 0)
    for i, length in enumerate(lengths):
        assert (tail.input_ids[i, :, 3 + length:] == 99).all()
        assert torch.equal(tail.input_ids[i, :, :3 + length], visible.input_ids[i, :, :3 + length])
    assert torch.equal(tail.weights, visible.weights)  # the same masks inside the completion, nothing else scored
    with pytest.raises(ValueError, match="mask_tail"):
        SequenceELBOEstimator(mask_tail=True, full_canvas=True)


def test_bernoulli_masks_hit_rate_t_and_monte_carlo_weights():
    rollout = _rollout_with_lengths([12] * 50)
    est = SequenceELBOEstimator(nodes=4, quadrature="monte_carlo", mask_id=99)
    assert est.mask_count == "bernoulli"
    plan = est.plan(rollout, 0)
    masked = plan.input_ids[:, :, 3:] == 99
    # each view's weight is 1/(n t): recover t and check the masking rate against it
    t = 1 / (4 * plan.weights.amax(2)[masked.any(2)])
    assert ((t > 0) & (t <= 1)).all()
    rate = masked.float().mean(2)[masked.any(2)]
    assert abs(float((rate - t).mean())) < 0.03
    with pytest.raises(ValueError, match="bernoulli"):
        SequenceELBOEstimator(quadrature="monte_carlo", mask_count="floor")


# -- exact properties on the toy model -----------------------------------------------------------------------
def test_exact_elbo_is_below_the_exact_log_likelihood():
    """ELBO = E_σ log Π_i q(o_σi | o_σ<i) ≤ log E_σ Π_i q(...) = log p(o) (Jensen), for every o ∈ V^L.

    Measured (L = 4): inconsistent random table, V = 3: gap log p − ELBO in [0.62, 3.78] nats over all 81
    completions, mean 1.81, and Σ_o p(o) = 1; consistent Potts joint, V = 2: |log p − ELBO| < 1e-15 (every
    order gives the same product) and log p equals the joint. The closed form agrees with 64-node
    Gauss–Legendre quadrature of the t-integral to 5e-15.
    """
    table = ToyModel.random_table(vocab=3, length=4, seed=0)
    gaps, total = [], 0.0
    for o in itertools.product(range(3), repeat=4):
        elbo, loglik = table.exact_elbo(o), table.exact_loglik(o)
        assert abs(elbo - table.elbo_by_quadrature(o)) < 1e-10
        gaps.append(loglik - elbo)
        total += math.exp(loglik)
    assert min(gaps) > 0 and math.isclose(total, 1.0, rel_tol=1e-9)
    joint = ToyModel.from_joint(vocab=2, length=4, seed=0)
    for j, o in enumerate(itertools.product(range(2), repeat=4)):
        elbo, loglik = joint.exact_elbo(o), joint.exact_loglik(o)
        assert abs(loglik - joint.joint_logp[j]) < 1e-9 and abs(elbo - loglik) < 1e-9


def test_double_monte_carlo_is_unbiased():
    """t ~ U(0, 1) per node, Bernoulli(t) masks, weight 1/(n t): E = ELBO exactly.

    Measured (random table, V = 3, L = 4, 3 nodes, 20000 draws = 60000 forwards): mean −6.318 ± 0.047 (s.e.)
    against the exact ELBO −6.347. (The 1/t weight makes its variance infinite — a log divergence at t → 0 —
    so the sample variance keeps growing with the draws, 44 here; the tolerance is 5 standard errors.)
    """
    model, o = ToyModel.random_table(vocab=3, length=4, seed=0), (2, 0, 1, 1)
    est = SequenceELBOEstimator(nodes=3, quadrature="monte_carlo", mask_id=model.mask_id)
    draws = elbo_draws(model, est, o, 20000)
    exact = model.exact_elbo(o)
    se = float(draws.std()) / math.sqrt(len(draws))
    assert abs(float(draws.mean()) - exact) < 5 * se, (float(draws.mean()), exact, se)


def _expected_gauss_legendre(model, o, nodes, mask_count):
    t, w = gauss_legendre(nodes)
    if mask_count == "bernoulli":  # E[node | t] is the integrand itself
        return sum(wi * model.elbo_integrand(o, ti) for ti, wi in zip(t, w))
    return sum(wi * model.mean_masked_sum(o, masked_count(ti, model.length)) / ti for ti, wi in zip(t, w))


def test_gauss_legendre_bias_falls_as_nodes_are_added():
    """Exact expectation of the n-node estimator minus the exact ELBO (Potts joint, V = 2, L = 10, o fixed).

    Exact ELBO −20.908. Measured, with Bernoulli(t_n) masks (the ELBO's own forward process; the integrand is
    a degree-9 polynomial, so 5 nodes are exact):  n = 1: −2.966, 2: −0.854, 3: −0.217, 4: −0.026, 5: 0.000.
    With the paper's exactly-⌊t_n·L⌋ masks the bias does NOT fall:  n = 1: −2.990, 2: +0.433, 3: +1.223,
    4: −0.060, 5: −2.612, 8: −0.986, 16: −2.167 (it diverges as n grows; see rl_dlm/likelihood/elbo.py).
    Both expectations are checked against the implementation by sampling 3 nodes × 4000 draws: Bernoulli
    −21.21 ± 0.17 vs exact −21.12; ⌊t·L⌋ −19.57 ± 0.11 vs exact −19.68.
    """
    model = ToyModel.from_joint(vocab=2, length=10, seed=1)
    o = tuple(np.random.default_rng(1).integers(0, 2, 10).tolist())
    exact = model.exact_elbo(o)
    bias = {n: abs(_expected_gauss_legendre(model, o, n, "bernoulli") - exact) for n in (1, 2, 3, 5)}
    assert bias[1] > bias[2] > bias[3] > bias[5] and bias[5] < 1e-9, bias
    for mask_count in ("bernoulli", "floor"):
        est = SequenceELBOEstimator(nodes=3, mask_count=mask_count, mask_id=model.mask_id)
        draws = elbo_draws(model, est, o, 4000)
        se = float(draws.std()) / math.sqrt(len(draws))
        assert abs(float(draws.mean()) - _expected_gauss_legendre(model, o, 3, mask_count)) < 5 * se


def test_gauss_legendre_variance_is_below_double_monte_carlo_at_equal_forwards():
    """3 nodes each (3 forwards per estimate), 4000 draws each, random table V = 3, L = 4, o = (2, 0, 1, 1).

    Measured variances: double Monte Carlo 31.7 (its exact variance is infinite; 44 at 20000 draws);
    Gauss–Legendre with Bernoulli masks 18.55 (exact 18.55), with the paper's ⌊t·L⌋ masks 21.2.
    On the Potts toy (L = 10): double MC 126, GL-Bernoulli 110 (exact 109), GL-⌊t·L⌋ 47 — the margin of
    deterministic nodes over random t is large only once the within-node mask noise is small.
    """
    model, o = ToyModel.random_table(vocab=3, length=4, seed=0), (2, 0, 1, 1)
    mc = elbo_draws(model, SequenceELBOEstimator(3, "monte_carlo", mask_id=model.mask_id), o, 4000, seed0=10**6)
    lp = model.masked_logp(o)
    sums = np.array([np.nansum(lp[b]) if b else 0.0 for b in range(16)])
    size = np.array([bin(b).count("1") for b in range(16)])
    exact_var = 0.0  # independent nodes: Σ_n (w_n/t_n)² Var_{M ~ Bern(t_n)}[Σ_{k∈M} lp]
    for t, w in zip(*gauss_legendre(3)):
        prob = t ** size * (1 - t) ** (4 - size)
        exact_var += (w / t) ** 2 * ((prob * sums ** 2).sum() - (prob * sums).sum() ** 2)
    for mask_count in ("bernoulli", "floor"):
        gl = elbo_draws(model, SequenceELBOEstimator(3, mask_count=mask_count, mask_id=model.mask_id), o, 4000)
        assert float(gl.var()) < 0.8 * float(mc.var()), (mask_count, float(gl.var()), float(mc.var()))
        if mask_count == "bernoulli":
            assert abs(float(gl.var()) / exact_var - 1) < 0.1


# -- shared invariants on a tiny LLaDA -----------------------------------------------------------------------
def _llada_rollout(policy):
    from rl_dlm.data.prompts import encode_prompts
    from rl_dlm.sampling.semi_ar import SemiARSampler

    prompts = [[{"role": "user", "content": f"Compute {a}+{b}."}] for a, b in [(1, 2), (3, 45), (6, 7), (8, 9)]]
    ids, mask = encode_prompts(policy.tokenizer, prompts, None)
    return SemiARSampler(gen_length=8, block_length=8, steps=4, temperature=1.0).sample(
        policy, ids, mask, torch.arange(100, 104))


@pytest.mark.parametrize("kw", [{}, {"full_canvas": True}, {"quadrature": "monte_carlo"}])
def test_same_plan_same_logp_and_rechunking_leaves_masks_unchanged(tiny_policy, kw):
    rollout = _llada_rollout(tiny_policy)
    est = SequenceELBOEstimator(mask_id=tiny_policy.mask_id, **kw)
    whole = est.plan(rollout, 2)
    assert torch.equal(whole.input_ids, est.plan(rollout, 2).input_ids)
    assert not torch.equal(whole.input_ids, est.plan(rollout, 3).input_ids)
    for rows in ([0, 1], [2, 3], [3], [1, 2, 3]):
        index = torch.tensor(rows)
        part = est.plan(rollout.rows(index), 2)
        assert torch.equal(part.input_ids, whole.input_ids[index]) and torch.equal(part.weights, whole.weights[index])
    full = est.reduce(score(tiny_policy, rollout, whole), whole)
    assert torch.equal(full, est.reduce(score(tiny_policy, rollout, whole), whole))
    part = est.reduce(score(tiny_policy, rollout.rows(slice(1, 3)), whole.rows(slice(1, 3)), 2), whole.rows(slice(1, 3)))
    assert torch.allclose(full[1:3], part, atol=1e-5)


@pytest.mark.parametrize("full_canvas", [False, True])
def test_policy_equal_old_gives_sequence_ratio_one_and_no_clipping(tiny_lora_policy, full_canvas):
    policy = tiny_lora_policy
    rollout = _llada_rollout(policy)
    est = SequenceELBOEstimator(full_canvas=full_canvas, mask_id=policy.mask_id)
    plan = est.plan(rollout, 0)
    with torch.no_grad():
        old = est.reduce(score(policy, rollout, plan), plan)
        with policy.reference():
            ref = est.reduce(score(policy, rollout, plan), plan)
    logp = est.reduce(score(policy, rollout, plan), plan)
    objective = ClippedSequenceObjective(epsilon=0.5, beta=0.04, full_canvas=full_canvas)
    loss, stats = objective(logp, old, ref, torch.tensor([1.0, -1.0, 0.5, -0.5]), rollout.completion_mask)
    assert stats["ratio_mean"] == 1.0 and stats["clip_fraction"] == 0.0 and stats["kl"] == 0.0
    assert torch.isfinite(loss) and loss.requires_grad


def test_gdpo_default_leaves_the_tail_visible_and_unscored_as_nemo_rl():
    # NeMo-RL's port masks and scores only the response and shows the padding after it in every view; the
    # official code (full_canvas) masks and scores it at the node's rate. GDPO's default is the former.
    from rl_dlm.trainers.gdpo import GDPOConfig

    est = GDPOConfig().estimator()
    assert (est.full_canvas, est.mask_tail) == (False, False)
    est.mask_id = 99
    lengths = [1, 5, 12]
    rollout = _rollout_with_lengths(lengths)
    plan = est.plan(rollout, 0)
    for i, length in enumerate(lengths):
        assert torch.equal(plan.input_ids[i, :, 3 + length:],
                           rollout.completion_ids[i, length:].expand(est.nodes, -1))  # visible, as generated
        assert (plan.weights[i, :, length:] == 0).all()  # never scored
