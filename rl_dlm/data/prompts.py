"""Turning dataset rows into model inputs: chat template, left truncation, left padding.

Rows follow TRL's conventions: `prompt` is either a string or a list of chat messages (conversational); every
other column is passed to the reward functions by name. A string prompt is used as is, without the chat template:
for a chat model that usually means the model never writes its end-of-turn token, fills the whole canvas, and every
completion of a group gets the same reward, so nothing is learned. `encode_prompts` warns once per tokenizer when
string prompts meet a tokenizer that has a chat template.
"""
from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping

import torch
from torch import Tensor

_warned_plain: weakref.WeakSet = weakref.WeakSet()  # tokenizers already warned about string prompts


def prompt_problem(prompt) -> str | None:
    """Why `prompt` cannot be used (None when it can): a non-empty string, or a non-empty list of
    {role, content} messages with string contents, at least one of them non-empty."""
    if prompt is None:
        return "the prompt is null (None)"
    if isinstance(prompt, str):
        return None if prompt.strip() else "the prompt is an empty string"
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            return "the prompt is an empty list of messages"
        for j, message in enumerate(prompt):
            if not (isinstance(message, Mapping) and "role" in message and "content" in message):
                return f"message {j} is not a {{role, content}} mapping: {message!r:.80}"
            if not isinstance(message["content"], str):
                return f"message {j} has content {message['content']!r:.80}, not a string"
        if not any(m["content"].strip() for m in prompt):
            return "every message of the prompt is empty"
        return None
    return f"the prompt must be a string or a list of {{role, content}} messages, got {type(prompt).__name__}"


def warn_if_plain_prompts(tokenizer, prompts: list) -> None:
    """One warning per tokenizer: string prompts skip a chat model's template (see the module docstring)."""
    if not getattr(tokenizer, "chat_template", None) or not any(isinstance(p, str) for p in prompts):
        return
    try:
        if tokenizer in _warned_plain:
            return
        _warned_plain.add(tokenizer)
    except TypeError:  # a tokenizer that cannot be weakly referenced: warn every time rather than never
        pass
    warnings.warn(
        "prompts are plain strings but the model's tokenizer has a chat template, which string prompts skip: a chat "
        "model then rarely writes its end-of-turn token, fills the whole canvas (max_completion_length), and gets "
        "no learning signal. Pass each prompt as [{'role': 'user', 'content': text}] to apply the template "
        "(TRL's conversational format), or silence this warning if your model is not a chat model.", stacklevel=3)


def prompt_text(tokenizer, prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"a row's 'prompt' must be a string or a list of {{role, content}} messages, got {prompt!r:.80}")


def encode_prompts(tokenizer, prompts: list, max_prompt_length: int | None,
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """→ (ids [B, P], mask [B, P] bool), left padded with the tokenizer's pad id, truncated from the left."""
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token")
    warn_if_plain_prompts(tokenizer, prompts)
    encoded = [tokenizer(prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    if max_prompt_length is not None:
        encoded = [ids[-max_prompt_length:] for ids in encoded]
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.bool)
    for i, row in enumerate(encoded):
        if row:
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = True
    return ids.to(device), mask.to(device)


def completion_texts(tokenizer, completion_ids: Tensor, completion_mask: Tensor) -> list[str]:
    return [tokenizer.decode(ids[m].tolist(), skip_special_tokens=True)
            for ids, m in zip(completion_ids, completion_mask)]


def reward_columns(rows: list[dict], exclude=("prompt",)) -> dict[str, list]:
    """Column-major view of the rows' extra fields, as TRL passes them to reward functions."""
    keys = [k for k in rows[0] if k not in exclude]
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"row {i} lacks column(s) {missing} that other rows have")
    return {k: [row[k] for row in rows] for k in keys}
