"""MDPO's recording MaskGIT sampler: the linear schedule, what it records, and running confidence remasking
(RCR) — masked counts on schedule, and an earlier committed token re-masked (a constructed case)."""
from __future__ import annotations

import pytest
import torch

from rl_dlm.data.prompts import encode_prompts
from rl_dlm.sampling.maskgit import MaskGITSampler, maskgit_counts, maskgit_revealed
from tests.sampling.scripted_policy import RecordingPolicy, ScriptedPolicy, peaked

PROMPTS = [[{"role": "user", "content": "Compute 3+4*2."}],
           [{"role": "user", "content": "Using the numbers [3, 5, 7], create an equation that equals 22."}]]


def test_linear_maskgit_schedule():
    # N = 10, S = 4: revealed after step t = 10 − ⌊10·(1 − (t+1)/4)⌋ = 10 − [7, 5, 2, 0].
    assert maskgit_revealed(10, 4) == [3, 5, 8, 10]
    assert maskgit_counts(10, 4) == [3, 2, 3, 2]
    assert maskgit_revealed(6, 3) == [2, 4, 6]
    with pytest.raises(ValueError, match="sampler.steps"):
        MaskGITSampler(gen_length=4, steps=5)


@pytest.mark.parametrize("rcr", [False, True])
def test_records_every_state_prediction_and_confidence(tiny_policy, rcr):
    ids, mask = encode_prompts(tiny_policy.tokenizer, PROMPTS, None)
    policy = RecordingPolicy(tiny_policy)
    rollout = MaskGITSampler(gen_length=12, steps=5, temperature=0.4, rcr=rcr).sample(
        policy, ids, mask, torch.tensor([1, 2]))
    p, mask_id = ids.shape[1], tiny_policy.mask_id
    preds, masked = rollout.step_predictions, rollout.step_masked
    assert preds.shape == rollout.confidence.shape == masked.shape == (2, 5, 12)
    revealed = [0] + maskgit_revealed(12, 5)
    for t, seen in enumerate(policy.inputs):
        # x_t is rebuilt from the records: masked positions, and the predictions elsewhere.
        assert torch.equal(torch.where(masked[:, t], mask_id, preds[:, t]), seen[:, p:])
        assert (masked[:, t].sum(1) == 12 - revealed[t]).all()  # on schedule, RCR or not
        # The prediction keeps every committed token and fills every masked one.
        assert torch.equal(preds[:, t][~masked[:, t]], seen[:, p:][~masked[:, t]])
        assert not (preds[:, t] == mask_id).any()
    assert torch.equal(preds[:, -1], rollout.completion_ids)
    assert ("unmask_step" in MaskGITSampler(rcr=rcr).records) is (not rcr)
    if not rcr:
        assert all(torch.bincount(r, minlength=5).tolist() == maskgit_counts(12, 5) for r in rollout.unmask_step)


def test_rcr_remasks_an_earlier_committed_token():
    # L = 6, S = 3: 2, 4, 6 revealed. Step 0: position 0 is sure (0.9), position 1 fairly (0.5), the rest 0.3.
    # RCR commits all six, keeps the two most confident (0, 1). Step 1: the four masked positions now get
    # 0.8, so the remembered 0.9, 0.8, 0.8, 0.8 win and position 1 (0.5) is re-masked; position 5 (0.8, the
    # last of a tie) stays masked. Step 2 commits the remaining budget, everything.
    p, length = 2, 6

    def probs(call, x):
        if call == 0:
            top = {p + 0: (10, 0.9), p + 1: (11, 0.5)}
        else:
            top = {p + i: (12, 0.8) for i in range(length)}
        return peaked(x.shape[0], p + length, 16, top)

    policy = ScriptedPolicy(probs)
    rollout = MaskGITSampler(gen_length=length, steps=3, temperature=0.0, rcr=True).sample(
        policy, torch.full((1, p), 20), torch.ones(1, p, dtype=torch.bool), torch.tensor([0]))
    masked = rollout.step_masked[0]
    assert masked[0].all()
    assert masked[1].tolist() == [False, False, True, True, True, True]
    assert masked[2].tolist() == [False, True, False, False, False, True]  # position 1 re-masked
    assert policy.inputs[2][0, p + 1] == policy.mask_id and policy.inputs[1][0, p + 1] == 11
    assert rollout.completion_ids[0].tolist() == [10, 12, 12, 12, 12, 12]  # re-decoded at step 2
    assert rollout.unmask_step[0].tolist() == [0, 2, 1, 1, 1, 2]
    assert (policy.inputs[2][0, :p] == 20).all()  # the prompt is never re-masked


def test_without_rcr_a_committed_token_stays():
    p, length = 2, 6

    def probs(call, x):
        top = {p + 0: (10, 0.9), p + 1: (11, 0.5)} if call == 0 else {p + i: (12, 0.8) for i in range(length)}
        return peaked(x.shape[0], p + length, 16, top)

    rollout = MaskGITSampler(gen_length=length, steps=3, temperature=0.0).sample(
        ScriptedPolicy(probs), torch.full((1, p), 20), torch.ones(1, p, dtype=torch.bool), torch.tensor([0]))
    assert rollout.completion_ids[0, :2].tolist() == [10, 11]
    assert rollout.unmask_step[0, :2].tolist() == [0, 0]
