"""Tests for the native Dream architecture (rl_dlm/models/dream.py).

The strongest check is against transformers' own Qwen2 made bidirectional (`is_causal=False`): Dream is exactly
that network, so with the same weights the logits must match, in fp32 and in bf16 (where Dream's RoPE is applied
in the activation dtype, as Qwen2's is).

Run: .venv/bin/python -m pytest tests/models/test_dream.py -q
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModel

from rl_dlm.models.dream import DreamConfig, DreamModel
from tests.models.golden import DREAM_VOCAB, dream_config_dict, tiny_dream, write_dream_dir


def official_shapes(layers: int, d: int, kv: int, ffn: int, vocab: int) -> dict:
    shapes = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,), "lm_head.weight": (vocab, d)}
    for n in range(layers):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (d, d), p + "self_attn.q_proj.bias": (d,),
            p + "self_attn.k_proj.weight": (kv, d), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (d, d), p + "mlp.gate_proj.weight": (ffn, d),
            p + "mlp.up_proj.weight": (ffn, d), p + "mlp.down_proj.weight": (d, ffn),
        })
    return shapes


def test_state_dict_has_the_official_names_and_shapes():
    model = tiny_dream(num_hidden_layers=3)  # 4 query heads, 2 kv heads of 16: kv dim 32
    want = official_shapes(3, 64, 32, 128, DREAM_VOCAB)
    assert len(want) == 12 * 3 + 3  # (339 = 12 · 28 + 3 for the 7B)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == want
    assert list(model.buffers()) == []  # rotary tables are recomputed (non-persistent in the official code)
    assert model.model.embed_tokens.padding_idx == 256  # pad_token_id, as the official embedding


def test_loads_the_official_layout_without_remote_code(tmp_path):
    sd = {k: v.clone() for k, v in tiny_dream(seed=3).state_dict().items()}
    path = write_dream_dir(tmp_path / "dream", sd)
    for loader in (DreamModel, AutoModel):
        model, info = loader.from_pretrained(path, output_loading_info=True, dtype=torch.float32)
        assert type(model) is DreamModel
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    cfg = model.config
    assert (cfg.model_type, cfg.mask_token_id, cfg.rope_theta, cfg.rms_norm_eps) == ("Dream", 260, 1e6, 1e-6)
    assert not hasattr(cfg, "auto_map")  # never re-saved: AutoModel must not look for remote code
    with pytest.raises(ValueError, match="rope_scaling"):
        DreamConfig(**{k: v for k, v in dream_config_dict(rope_scaling={"type": "yarn"}).items() if k != "auto_map"})


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 0.0)])
def test_matches_bidirectional_qwen2(dtype, atol):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dream = tiny_dream(seed=1).to(dtype)
    c = dream.config
    qwen_cfg = Qwen2Config(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                           num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                           num_key_value_heads=c.num_key_value_heads, rms_norm_eps=c.rms_norm_eps,
                           rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
                           pad_token_id=c.pad_token_id, is_causal=False, attn_implementation="sdpa")
    qwen = Qwen2ForCausalLM(qwen_cfg).eval()
    inv_freq = qwen.model.rotary_emb.inv_freq.clone()
    qwen.to(dtype).model.rotary_emb.inv_freq = inv_freq  # .to() would round the fp32 RoPE frequencies too
    qwen.load_state_dict(dream.state_dict(), strict=True)
    ids = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(dream(ids).logits, qwen(ids).logits, atol=atol, rtol=0 if atol == 0 else 1e-5)


def test_bidirectional():
    model = tiny_dream()
    ids = torch.randint(0, 256, (1, 12))
    ids2 = ids.clone()
    ids2[0, -1] = 7
    with torch.no_grad():
        assert (model(ids).logits[0, 0] - model(ids2).logits[0, 0]).abs().max() > 1e-4


def test_left_padding_with_aligned_positions_matches_unpadded_rows():
    model = tiny_dream()
    long_row, short_row = torch.randint(0, 256, (10,)), torch.randint(0, 256, (6,))
    ids = torch.full((2, 10), 256)
    ids[0], ids[1, 4:] = long_row, short_row
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    bool4d = (mask[:, None, :, None] & mask[:, None, None, :]).bool()  # the official q∧k mask
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, position_ids=pos).logits
        official = model(ids, attention_mask=bool4d, position_ids=pos).logits
        alone = [model(long_row[None]).logits[0], model(short_row[None]).logits[0]]
        other_pads = ids.clone()
        other_pads[1, :4] = 9
        other = model(other_pads, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1, 4:], alone[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(official[1, 4:], alone[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(other[1, 4:], alone[1], atol=1e-5, rtol=0)
    assert torch.isfinite(official).all()  # fully masked pad query rows: no NaN


def test_logits_to_keep():
    # The last layer then runs only the kept queries: its matrix products on fewer rows may round the fp32
    # sums differently (a few ulp of logits of order 10), hence the tolerance.
    model = tiny_dream()
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        torch.testing.assert_close(model(ids, logits_to_keep=3).logits, full[:, -3:], atol=1e-5, rtol=0)
        torch.testing.assert_close(model(ids, logits_to_keep=slice(2, 5)).logits, full[:, 2:5], atol=1e-5, rtol=0)
        hidden = model(ids, logits_to_keep=3, output_hidden_states=True)  # all hidden states: every position
        assert all(h.shape[1] == 9 for h in hidden.hidden_states)
        torch.testing.assert_close(hidden.logits, full[:, -3:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_with_lora_gives_the_same_gradients(use_reentrant):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(tiny_dream(), LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    ids, mask = torch.randint(0, 256, (2, 12)), torch.ones(2, 12)
    mask[1, :3] = 0
    calls = []
    model.base_model.model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda *a: calls.append(1))
    model.train()

    def grads():
        model.zero_grad()
        calls.clear()
        model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)[..., 5].sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = grads()
    assert len(calls) == 1
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    ckpt = grads()
    assert len(calls) == 2  # recomputed in backward: checkpointing really ran
    assert plain.keys() == ckpt.keys() and len(plain) == 2 * len(targets) * 2
    for n in plain:
        assert plain[n].abs().sum() > 0, n
        torch.testing.assert_close(ckpt[n], plain[n], atol=1e-5, rtol=0)


def test_the_padding_embedding_row_gets_no_gradient():
    model = tiny_dream().train()
    ids = torch.tensor([[256, 256, 5, 6, 7]])
    model(ids).logits.sum().backward()
    grad = model.model.embed_tokens.weight.grad
    assert grad[256].abs().sum() == 0 and grad[5].abs().sum() > 0


def test_bf16_forward_is_finite():
    model = tiny_dream().to(torch.bfloat16)
    ids, mask = torch.randint(0, 256, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    mask[0, :5] = 0
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.bias is None
