"""Samplers and model families. The sampler contract, `sample(policy, prompt_ids, prompt_mask, row_seeds) -> Rollout`,
is `Sampler` in rl_dlm/components.py (re-exported here).

A sampler may also declare `families`, the model families (`rl_dlm.models.families`, "llada" | "dream") whose
reference decoding it reproduces. `check_sampler_family` refuses, at start-up, a sampler made for other
families than the policy's, naming both; a model of no known family (a bidirectional transformers model in
tests and small experiments) is never refused, and neither is a sampler that declares no families.
"""
from __future__ import annotations

from rl_dlm.components import Sampler

__all__ = ["SAMPLERS_FOR", "Sampler", "check_sampler_family"]

# Where to look for a sampler made for a family: `conf/sampler/` names and classes.
SAMPLERS_FOR = {
    "llada": "sampler=semi_ar | cached | eoser | ass | eoser_ass | maskgit | dream",
    "dream": "sampler=dream (DreamSampler, the official diffusion_generate), cached (CachedSemiARSampler) or "
             "maskgit (MaskGITSampler)",
}


def check_sampler_family(sampler, policy) -> None:
    """Raises when `sampler` declares families and the policy's known family is not among them."""
    from rl_dlm.models.families import SPECS

    families = getattr(sampler, "families", None)
    family = policy.family.name
    if families is None or family not in SPECS or family in families:
        return
    raise ValueError(
        f"sampler {type(sampler).__name__} is made for {' and '.join(sorted(families))} models, but the model is "
        f"a {family} model; pick a sampler made for {family}: {SAMPLERS_FOR.get(family, 'see conf/sampler/')}")
