"""Test policies: one whose logits the test scripts, and a wrapper that records every input a sampler feeds."""
from __future__ import annotations

import math

import torch


class ScriptedPolicy:
    """`probs(call, x) -> [N, T, V]` probabilities chosen by the test; logits are their logs.

    Token ids: 0 pad/EOS, 2 mask, 6 end of turn; everything else is an ordinary token."""

    mask_id, stop_id, pad_id = 2, 6, 0

    def __init__(self, probs, vocab: int = 16):
        self.probs, self.vocab, self.calls, self.inputs = probs, vocab, 0, []

    def logits(self, x, attention_mask=None, keep=None):
        self.inputs.append(x.clone())
        out = torch.as_tensor(self.probs(self.calls, x), dtype=torch.float32).clamp_min(1e-30).log()
        self.calls += 1
        return out if keep is None else out[:, keep]


def peaked(n: int, total: int, vocab: int, top: dict[int, tuple[int, float]], default=(10, 0.3)):
    """[n, total, vocab] probabilities: at position i, token top[i][0] has probability top[i][1] (> every
    other token) and the rest is spread evenly over the other ordinary tokens."""
    out = torch.zeros(n, total, vocab)
    others = [v for v in range(vocab) if v not in (0, 2, 6)]
    for i in range(total):
        token, p = top.get(i, default)
        rest = [v for v in others if v != token]
        out[:, i, rest] = (1 - p) / len(rest)
        out[:, i, token] = p
        assert p > (1 - p) / len(rest) or math.isclose(p, 1.0)
    return out


class RecordingPolicy:
    """Forwards to a real policy and keeps a copy of every canvas passed to `logits`."""

    def __init__(self, policy):
        self._policy, self.inputs = policy, []

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def logits(self, x, attention_mask=None, keep=None):
        self.inputs.append(x.clone())
        return self._policy.logits(x, attention_mask, keep=keep)
