"""Model families and their conventions, as a checked contract.

A `Family` is what every consumer must agree on: the mask id, the logit alignment, the end-of-turn (stop) and
pad ids, and the chat template. Getting one wrong does not crash, it trains on garbage (the most common failure
reported against the reference code), so every setting is checked where it is decided:

- `spec_from_config` picks the family from config.json (`model_type`, `architectures` or `auto_map`);
- `family_of` reads the ids from the config and tokenizer and fails when the tokenizer's mask token disagrees
  with the model's `mask_token_id` (or names another id);
- `check_family` rejects a `Family` whose alignment or mask id contradicts the model's family (it runs
  whenever a `Policy` is built);
- `probe_alignment` is an empirical check for trained checkpoints: mask one position at a time and see
  whether the policy's aligned logits score the hidden token better than the opposite alignment would.

Facts (the official checkpoints' config.json and tokenizer files): LLaDA logits are unshifted (position i scores
token i), mask 126336, stop `<|eot_id|>`, fill `<|endoftext|>`; its shipped chat template appends the generation prompt unconditionally, so
we ship our own. Dream/DiffuCoder logits are shifted (position i scores token i + 1), mask 151666, stop
`<|im_end|>`, fill `<|endoftext|>` (Dream) or `<|dlm_pad|>` (DiffuCoder, the tokenizer's pad); their tokenizer
class is remote code, so we load the same files with transformers' Qwen2 tokenizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LLADA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    name: str
    mask_id: int
    stop_id: int  # end of turn: the completion mask runs up to and including it
    pad_id: int  # left padding and the canvas fill after an answer
    shift_logits: bool  # True when logits[:, i] predict token i + 1 (Dream); realigned by Policy.logits
    chat_template: str | None = None  # installed on the tokenizer at load time when set


@dataclass(frozen=True)
class FamilySpec:
    """The static facts of a known family; `family_of` turns them into a `Family` for a model + tokenizer."""
    name: str
    model_class: str  # dotted path of the native implementation
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    remote_code_modules: tuple[str, ...]  # `auto_map` module names that identify the family
    shift_logits: bool
    mask_token: str
    stop_token: str
    chat_template: str | None = None
    tokenizer_class: str | None = None  # used when the checkpoint's tokenizer class is remote code


LLADA = FamilySpec("llada", "rl_dlm.models.llada.LLaDAModelLM", ("llada",), ("LLaDAModelLM",),
                   ("modeling_llada", "configuration_llada"), shift_logits=False, mask_token="<|mdm_mask|>",
                   stop_token="<|eot_id|>", chat_template=LLADA_CHAT_TEMPLATE)
DREAM = FamilySpec("dream", "rl_dlm.models.dream.DreamModel", ("dream",), ("DreamModel",),
                   ("modeling_dream", "configuration_dream"), shift_logits=True, mask_token="<|mask|>",
                   stop_token="<|im_end|>", tokenizer_class="transformers.Qwen2Tokenizer")
SPECS = {spec.name: spec for spec in (LLADA, DREAM)}


def spec_from_config(config: dict) -> FamilySpec | None:
    """config.json (as a dict) → the known family it belongs to, or None."""
    model_type = str(config.get("model_type") or "").lower()
    architectures = set(config.get("architectures") or [])
    auto_map = " ".join(str(v) for v in (config.get("auto_map") or {}).values())
    for spec in SPECS.values():
        if model_type in spec.model_types or architectures & set(spec.architectures) \
                or any(m + "." in auto_map for m in spec.remote_code_modules):
            return spec
    return None


def local_family_name(path) -> str | None:
    """The family of a local checkpoint directory, read from its config.json without loading it; None for a hub
    id, a directory without config.json or an unknown family."""
    import json
    from pathlib import Path

    config = Path(str(path)) / "config.json"
    if not config.is_file():
        return None
    spec = spec_from_config(json.loads(config.read_text()))
    return spec.name if spec else None


def _config_dict(config) -> dict:
    return {"model_type": getattr(config, "model_type", None), "architectures": getattr(config, "architectures", None),
            "auto_map": getattr(config, "auto_map", None)}


def token_id(tokenizer, token: str) -> int | None:
    """The id of a token string in this tokenizer, or None when it does not know the token."""
    idx = tokenizer.convert_tokens_to_ids(token)
    return None if idx is None or idx == tokenizer.unk_token_id else int(idx)


def _vocab_rows(model) -> int | None:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return emb.weight.shape[0] if emb is not None else None


def family_mask_id(spec: FamilySpec, model, tokenizer) -> int:
    """The mask id both the model config and the tokenizer agree on; raises, naming the fix, when they don't."""
    cfg_mask = getattr(model.config, "mask_token_id", None)
    tok_mask = tokenizer.mask_token_id
    by_name = token_id(tokenizer, spec.mask_token)
    mask_id = cfg_mask if cfg_mask is not None else tok_mask if tok_mask is not None else by_name
    if mask_id is None:
        raise ValueError(f"{spec.name}: no mask id: config.mask_token_id is unset and the tokenizer has no mask "
                         f"token; set config.mask_token_id or tokenizer.mask_token = {spec.mask_token!r}")
    if tok_mask is not None and tok_mask != mask_id:
        raise ValueError(f"mask id mismatch: config.mask_token_id={mask_id} but tokenizer.mask_token_id={tok_mask} "
                         f"({tokenizer.mask_token!r}); fix the tokenizer's mask_token or the model config")
    if by_name is not None and by_name != mask_id:
        raise ValueError(f"mask id mismatch: the tokenizer's {spec.mask_token!r} is id {by_name} but the model's "
                         f"mask id is {mask_id}; is this tokenizer from another model?")
    rows = _vocab_rows(model)
    if rows is not None and not 0 <= mask_id < rows:
        raise ValueError(f"mask id {mask_id} is outside the model's {rows}-row embedding")
    return int(mask_id)


def family_of(model, tokenizer) -> Family:
    """Reads the conventions from the config and tokenizer, and fails loudly where they disagree."""
    config = model.config
    spec = spec_from_config(_config_dict(config))
    if spec is not None:
        mask_id = family_mask_id(spec, model, tokenizer)
        stop = token_id(tokenizer, spec.stop_token)
        stop = stop if stop is not None else tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
        return Family(spec.name, mask_id, stop, pad, spec.shift_logits, spec.chat_template)
    tok_mask = tokenizer.mask_token_id
    if getattr(config, "is_causal", True) is False and tok_mask is not None:
        # A transformers model made bidirectional (tests, small experiments): LLaDA-style alignment.
        return Family(getattr(config, "model_type", "") or "custom", tok_mask, tokenizer.eos_token_id,
                      tokenizer.pad_token_id, shift_logits=False)
    raise ValueError(
        f"unsupported model family {getattr(config, 'model_type', '')!r}: expected LLaDA (model_type 'llada'), "
        "Dream/DiffuCoder (model_type 'Dream'), or a bidirectional transformers model (config.is_causal=False) "
        "with a tokenizer that sets mask_token; for anything else pass family=Family(...) explicitly")


def check_family(model, family: Family) -> None:
    """Rejects a Family that contradicts the model's known family (wrong alignment or mask id)."""
    config = model.config
    spec = spec_from_config(_config_dict(config))
    if spec is not None and family.shift_logits != spec.shift_logits:
        how = "position i scores token i+1" if spec.shift_logits else "position i scores token i"
        raise ValueError(f"logit alignment is wrong for a {spec.name} model: shift_logits={family.shift_logits}, "
                         f"but {spec.name} logits are {'shifted' if spec.shift_logits else 'unshifted'} ({how}); "
                         f"use shift_logits={spec.shift_logits}")
    cfg_mask = getattr(config, "mask_token_id", None)
    if spec is not None and cfg_mask is not None and family.mask_id != cfg_mask:
        raise ValueError(f"mask id mismatch: family.mask_id={family.mask_id} but config.mask_token_id={cfg_mask}")
    rows = _vocab_rows(model)
    if rows is not None and not 0 <= family.mask_id < rows:
        raise ValueError(f"family.mask_id={family.mask_id} is outside the model's {rows}-row embedding")


@torch.no_grad()
def probe_alignment(policy, input_ids: torch.Tensor, positions: int = 16, margin: float = 1.0) -> dict:
    """Empirical alignment check on a trained model: masks one position per view of `input_ids` ([T] tokens),
    and compares the mean log-prob of the hidden tokens under the policy's alignment with the opposite one.

    Raises when the opposite alignment is better by more than `margin` nats per token. Returns the two means
    and `conclusive` (False when neither alignment is better by `margin`, e.g. random weights)."""
    ids = input_ids.to(policy.device)
    length = ids.shape[0]
    shift = policy.family.shift_logits
    # Positions with a neighbour on the side the opposite alignment reads from.
    candidates = torch.arange(1, length - 1, device=ids.device)
    picked = candidates[torch.linspace(0, len(candidates) - 1, min(positions, len(candidates))).round().long()]
    views = ids.repeat(len(picked), 1)
    views[torch.arange(len(picked)), picked] = policy.mask_id
    logp = policy.logits(views).float().log_softmax(-1)
    rows = torch.arange(len(picked), device=ids.device)
    target = ids[picked]
    right = logp[rows, picked, target].mean().item()
    other = picked + 1 if shift else picked - 1  # where the opposite convention would read token i's logit
    wrong = logp[rows, other, target].mean().item()
    if wrong > right + margin:
        raise ValueError(
            f"logit alignment looks wrong for family {policy.family.name!r} (shift_logits={shift}): masked tokens "
            f"score {right:.2f} nats under it but {wrong:.2f} under the opposite alignment; check the family")
    return {"aligned_logp": right, "opposite_logp": wrong, "conclusive": right > wrong + margin}
