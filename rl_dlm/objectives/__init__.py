"""The objectives, loop stage 5: `objective(logp, old_logp, ref_logp, adv, mask) -> (loss, stats)`.

- `ClippedTokenObjective` (token.py): the clipped token ratio with a k1/k2/k3 KL (diffu-GRPO, coupled-GRPO,
  CJ-GRPO, IGPO); `kl_penalty` and `masked_mean` are shared by the others.
- `ClippedSequenceObjective` (sequence.py): the clipped sequence ratio of a sequence ELBO (GDPO; IGPO with
  `importance_sampling_level=sequence`).
- `WeightedTokenObjective` (weighted_token.py): per-token weights carried by the mask (MDPO's confidence weights).
"""
from rl_dlm.objectives.sequence import ClippedSequenceObjective
from rl_dlm.objectives.token import ClippedTokenObjective, kl_penalty, masked_mean
from rl_dlm.objectives.weighted_token import WeightedTokenObjective

__all__ = ["ClippedSequenceObjective", "ClippedTokenObjective", "WeightedTokenObjective", "kl_penalty", "masked_mean"]
