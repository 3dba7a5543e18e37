"""Toy denoisers whose every likelihood quantity can be computed exactly, for the estimator tests.

A toy model has `vocab` real tokens (mask id = `vocab`) and a completion of `length` L ≤ 12 tokens. Its
denoiser q(o_k | visible tokens) is an explicit table, so every one of the 2^L masks of a completion can be
enumerated. It exposes `logits(input_ids, attention_mask)` like `rl_dlm.models.policy.Policy`, so the real
estimators and `rl_dlm.likelihood.base.score` run on it unchanged.

Two kinds:
- `ToyModel.random_table(...)`: an arbitrary (inconsistent) denoiser — one random categorical per position and
  visible state. Its generative model is the masked-diffusion sampler run one token at a time, whose
  likelihood is p(o) = E_σ Π_i q(o_σi | o_σ<i) over uniformly random orders σ.
- `ToyModel.from_joint(...)`: conditionals are the exact marginals of an explicit joint over V^L (a Potts
  model with fields), so the chain rule holds in every order and p(o) is the joint itself.

Exact quantities (for a completion o), with M the masked set and lp[M, k] = log q(o_k | o with M masked):
- `exact_elbo`:   Σ_{M ≠ ∅} Σ_{k∈M} lp[M, k] / (|M|·C(L, |M|))  =  ∫₀¹ (1/t) E_{M~Bern(t)^L} Σ_{k∈M} lp[M, k] dt
  (`elbo_by_quadrature` computes the t-integral with 64-node Gauss–Legendre, which is exact: the integrand
  is a polynomial of degree L − 1);
- `exact_loglik`: log E_σ Π_i q(o_σi | o_σ<i), by a dynamic programme over subsets. Jensen gives
  ELBO = E_σ log Π ≤ log E_σ Π; equality holds for `from_joint` (every order gives the same product);
- `mean_masked_sum(m)`: h(m) = mean over |M| = m of Σ_{k∈M} lp[M, k], the exact expectation of one
  fixed-size mask's term.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rl_dlm.components import Rollout


@dataclass
class ToyModel:
    vocab: int
    length: int
    kind: str  # "table" or "joint"
    seed: int = 0
    scale: float = 1.5  # spread of the random logits (table) or couplings (joint)
    joint_logp: np.ndarray | None = None  # [V^L] for kind == "joint"
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def mask_id(self) -> int:
        return self.vocab

    @classmethod
    def random_table(cls, vocab=3, length=4, seed=0, scale=1.5) -> "ToyModel":
        return cls(vocab, length, "table", seed, scale)

    @classmethod
    def from_joint(cls, vocab=2, length=4, seed=0, coupling=0.8, field_scale=0.5) -> "ToyModel":
        """Potts joint p(x) ∝ exp(J Σ_{i<j} 1[x_i = x_j] + Σ_i h_i(x_i)), random fields h. With vocab = 2 and
        J > 0 this is a ferromagnetic Ising model, which satisfies the FKG lattice condition."""
        rng = np.random.default_rng(seed)
        fields = rng.normal(0.0, field_scale, (length, vocab))
        seqs = np.array(list(itertools.product(range(vocab), repeat=length)))
        equal_pairs = sum((seqs[:, i] == seqs[:, j]) for i in range(length) for j in range(i + 1, length))
        energy = coupling * equal_pairs + fields[np.arange(length), seqs].sum(1)
        joint = energy - np.logaddexp.reduce(energy)
        return cls(vocab, length, "joint", seed, coupling, joint)

    # -- the denoiser ----------------------------------------------------------------------------------------
    def cond_logp(self, state: tuple[int, ...]) -> np.ndarray:
        """[L, V] float64: log q(x_k = v | the visible tokens of `state`) (state uses mask_id for masked)."""
        if state not in self._cache:
            self._cache[state] = self._table(state) if self.kind == "table" else self._marginals(state)
        return self._cache[state]

    def _table(self, state):
        digest = hashlib.blake2b(f"{self.seed}/{state}".encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        logits = rng.normal(0.0, self.scale, (self.length, self.vocab))
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)

    def _marginals(self, state):
        if "seqs" not in self._cache:
            seqs = np.array(list(itertools.product(range(self.vocab), repeat=self.length)))
            self._cache["seqs"] = (seqs, np.eye(self.vocab)[seqs])  # [V^L, L], one-hot [V^L, L, V]
        seqs, onehot = self._cache["seqs"]
        visible = np.array(state) != self.mask_id
        consistent = (seqs[:, visible] == np.array(state)[visible]).all(1)
        weight = np.where(consistent, np.exp(self.joint_logp - self.joint_logp.max()), 0.0)
        marg = np.einsum("s,slv->lv", weight, onehot)
        with np.errstate(divide="ignore"):  # visible positions: their other tokens have probability 0
            return np.log(marg / marg.sum(1, keepdims=True))

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None, keep: slice | None = None) -> Tensor:
        """[R, P + L] → [R, P + L, V + 1] fp32 log-probs (the mask token gets −1e4; prompt slots are unused);
        `keep` selects positions, as `Policy.logits` does."""
        r, total = input_ids.shape
        p = total - self.length
        out = torch.full((r, total, self.vocab + 1), -1e4)
        out[:, :, : self.vocab] = math.log(1.0 / self.vocab)
        states, inverse = torch.unique(input_ids[:, p:].cpu(), dim=0, return_inverse=True)
        table = torch.stack([torch.from_numpy(self.cond_logp(tuple(row))) for row in states.tolist()]).float()
        out[:, p:, : self.vocab] = table[inverse]
        return out if keep is None else out[:, keep]

    # -- exact quantities ------------------------------------------------------------------------------------
    def masked_logp(self, o: tuple[int, ...]) -> np.ndarray:
        """[2^L, L]: lp[M, k] = log q(o_k | o with the positions of bitmask M masked) (NaN where k ∉ M)."""
        if ("masked", o) in self._cache:
            return self._cache[("masked", o)]
        L = self.length
        out = np.full((1 << L, L), np.nan)
        for bits in range(1, 1 << L):
            state = tuple(self.mask_id if bits >> k & 1 else o[k] for k in range(L))
            lp = self.cond_logp(state)
            for k in range(L):
                if bits >> k & 1:
                    out[bits, k] = lp[k, o[k]]
        self._cache[("masked", o)] = out
        return out

    def exact_elbo(self, o) -> float:
        lp, L = self.masked_logp(o), self.length
        return sum(np.nansum(lp[b]) / (m * math.comb(L, m)) for b in range(1, 1 << L) for m in [bin(b).count("1")])

    def elbo_integrand(self, o, t: float) -> float:
        """f(t) = (1/t) E_{M~Bern(t)^L} Σ_{k∈M} lp[M, k] = Σ_M t^(|M|−1) (1−t)^(L−|M|) Σ_{k∈M} lp[M, k]."""
        lp, L = self.masked_logp(o), self.length
        return sum(t ** (m - 1) * (1 - t) ** (L - m) * np.nansum(lp[b])
                   for b in range(1, 1 << L) for m in [bin(b).count("1")])

    def elbo_by_quadrature(self, o, nodes: int = 64) -> float:
        x, w = np.polynomial.legendre.leggauss(nodes)
        return float(sum(wi / 2 * self.elbo_integrand(o, (xi + 1) / 2) for xi, wi in zip(x, w)))

    def exact_loglik(self, o) -> float:
        """log E_σ Π_i q(o_σi | o_σ<i): F(M) = mean_{k∈M} q(o_k | M masked) · F(M \\ {k}), F(∅) = 1."""
        lp, L = self.masked_logp(o), self.length
        logf = np.zeros(1 << L)
        for bits in sorted(range(1, 1 << L), key=lambda b: bin(b).count("1")):
            terms = [lp[bits, k] + logf[bits & ~(1 << k)] for k in range(L) if bits >> k & 1]
            logf[bits] = np.logaddexp.reduce(terms) - math.log(len(terms))
        return float(logf[(1 << L) - 1])

    def mean_masked_sum(self, o, m: int) -> float:
        """h(m): mean over masks of exactly m positions of Σ_{k∈M} lp[M, k]."""
        lp = self.masked_logp(o)
        sums = [np.nansum(lp[b]) for b in range(1, 1 << self.length) if bin(b).count("1") == m]
        return float(np.mean(sums))


def toy_rollout(model: ToyModel, completions: list[tuple[int, ...]], seeds, prompt_len: int = 1) -> Rollout:
    """A rollout of fixed completions (no end-of-turn token: the completion mask is all True)."""
    n = len(completions)
    return Rollout(
        prompt_ids=torch.zeros(n, prompt_len, dtype=torch.long),
        prompt_mask=torch.ones(n, prompt_len, dtype=torch.bool),
        completion_ids=torch.tensor(completions, dtype=torch.long),
        completion_mask=torch.ones(n, model.length, dtype=torch.bool),
        group_ids=torch.zeros(n, dtype=torch.long),
        row_seeds=torch.as_tensor(seeds, dtype=torch.long),
    )
