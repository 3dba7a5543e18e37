"""Native Dream architecture (Dream-v0-Base/Instruct-7B, DiffuCoder-7B-Base/Instruct/cpGRPO), without remote code.

What it implements
    Dream (Ye et al., 2025, "Dream 7B") and DiffuCoder (Gong et al., 2025) are Qwen2.5 decoders turned into
    masked-diffusion LMs: per layer h = RMSNorm(x); q, k, v = Linear(h) with bias; half-rotation RoPE with the
    cos/sin tables cast to the activation dtype before rotating; K/V repeated for GQA; NON-causal SDPA with scale
    1/sqrt(head_dim); x += o_proj(.); h = RMSNorm(x); x += down_proj(SiLU(gate_proj(h)) * up_proj(h)). Then the
    final norm and lm_head. Logits are SHIFTED (the model was adapted from an AR LM): logits[:, i] scores token
    i + 1. `Policy.logits` realigns them; this class returns them raw, like the official one.

Reference code
    Dream-org/Dream-v0-Instruct-7B `modeling_dream.py` / `configuration_dream.py` (the official remote code).
    `DreamConfig` takes the official config.json keys (`model_type "Dream"`); `DreamModel` has the official
    module tree, so the official safetensors load by key name (`model.embed_tokens`,
    `model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
    mlp.{gate,up,down}_proj}`, `model.norm`, `lm_head`). The embedding keeps `padding_idx = pad_token_id`, so that
    row gets no gradient when fine-tuning, as in the official model.

Deliberate deviations from the official code
    - A (B, L) 0/1 `attention_mask` is honoured as a KEY-only mask (pad keys hidden, pad query rows still
      computed, a row without valid keys attends everywhere: no NaN). The official code only accepts None,
      "full" or a 4-D bool mask (a 2-D mask silently broadcasts garbage); a 4-D bool mask is still accepted.
      Valid rows get the same outputs either way; pad rows are never read.
    - `kv_cache` (a `rl_dlm.models.kv_cache.BlockKVCache`) and `logits_to_keep` for block-cached rollouts.
    - No sliding window, mrope or rope_scaling (the released checkpoints use none; a non-null setting raises).
    - Passing labels does nothing (the official shifted causal-LM loss is meaningless for a dLLM).

Speed: as LLaDA's (rl_dlm/models/llada.py): `logits_to_keep` also trims the last layer to the kept queries,
RoPE and RMSNorm take fewer elementwise passes with bit-identical results (with and without autograd), and
packed q/k/v and gate/up weights run as one GEMM each, LoRA in fewer passes (rl_dlm/models/fused_projections.py).

Run the tests: `.venv/bin/python -m pytest tests/models/test_dream.py -q`
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

from rl_dlm.models.compiled_blocks import run_blocks
from rl_dlm.models.elementwise import EAGER
from rl_dlm.models.fused_projections import add_projection, project, project_one
from rl_dlm.models.key_mask import key_mask_4d
from rl_dlm.models.llada import kept_positions
from rl_dlm.models.rope import query_rope, rope_cos_sin

__all__ = ["DreamConfig", "DreamModel", "tiny_dream_config"]

_IGNORED_KEYS = ("use_cache", "use_sliding_window", "sliding_window", "max_window_layers", "use_mrope", "auto_map",
                 "layer_types")


class DreamConfig(PreTrainedConfig):
    """Dream / DiffuCoder configuration; field names are the official config.json keys."""

    model_type = "Dream"

    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int | None = 4
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    rope_theta: float = 1000000.0
    rope_scaling: dict | None = None
    attention_dropout: float = 0.0
    mask_token_id: int | None = 151666
    pad_token_id: int | None = 151643
    bos_token_id: int | None = 151643
    eos_token_id: int | None = 151643

    def __post_init__(self, **kwargs):
        for key in _IGNORED_KEYS:  # accepted, not stored (auto_map would point AutoModel at remote code)
            kwargs.pop(key, None)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        super().__post_init__(**kwargs)
        if self.rope_scaling:
            raise ValueError(f"DreamConfig: unsupported setting rope_scaling={self.rope_scaling!r} (use null)")
        if self.hidden_act != "silu":
            raise ValueError(f"DreamConfig: unsupported setting hidden_act={self.hidden_act!r}")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"DreamConfig: hidden_size={self.hidden_size} must divide by num_attention_heads="
                f"{self.num_attention_heads}, and that by num_key_value_heads={self.num_key_value_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def tiny_dream_config(vocab_size: int = 128, mask_token_id: int = 127, pad_token_id: int = 126, **overrides):
    """A tiny Dream (hidden 64, 2 layers, 4 query / 2 KV heads, MLP 128); any field can be overridden."""
    kwargs = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
                  mask_token_id=mask_token_id, pad_token_id=pad_token_id, bos_token_id=pad_token_id,
                  eos_token_id=pad_token_id)
    kwargs.update(overrides)
    return DreamConfig(**kwargs)


class DreamRMSNorm(nn.Module):
    """Qwen2RMSNorm: normalise in fp32, cast back to the input dtype, then scale."""

    elementwise = EAGER  # or the fused kernels (rl_dlm/models/elementwise.py)

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.elementwise.norm(x, self.weight, self.eps)  # rl_dlm/models/rms_norm.py


class DreamAttention(nn.Module):
    projection_groups = (("q_proj", "k_proj", "v_proj"), ("o_proj",))  # rl_dlm/models/fused_projections.py
    elementwise = EAGER  # RoPE, or its fused kernel (rl_dlm/models/elementwise.py)

    def __init__(self, config: DreamConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        d, hd = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(d, config.num_attention_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, config.num_key_value_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, config.num_key_value_heads * hd, bias=True)
        self.o_proj = nn.Linear(config.num_attention_heads * hd, d, bias=False)

    def forward(self, h: torch.Tensor, rope, attn_mask=None, kv_cache=None, keep: slice | None = None,
                residual: torch.Tensor | None = None, overwrite: bool = False) -> torch.Tensor:
        """h [B, L, d] → [B, L, d], or [B, |keep|, d] for the query positions `keep` (all positions give K/V);
        with `residual`, residual + o_proj(.), into `residual` where `overwrite` allows (fused_projections.py)."""
        cfg = self.config
        B, L, _ = h.shape
        if keep is None:  # one GEMM where the weights are packed
            q, k, v = project(h, self.q_proj, self.k_proj, self.v_proj)
        else:
            q, (k, v) = project_one(h[:, keep], self.q_proj), project(h, self.k_proj, self.v_proj)
        Lq = q.shape[1]
        q = q.view(B, Lq, cfg.num_attention_heads, cfg.head_dim).transpose(1, 2)
        k = k.view(B, L, cfg.num_key_value_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(B, L, cfg.num_key_value_heads, cfg.head_dim).transpose(1, 2)
        q = self.elementwise.rope(q, *query_rope(rope, keep), False)  # official: cos/sin in the activation dtype
        k = self.elementwise.rope(k, *rope, False)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)
        group = cfg.num_attention_heads // cfg.num_key_value_heads
        if group > 1:  # official repeat_kv: query head i uses kv head i // group
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=False,
            dropout_p=cfg.attention_dropout if self.training else 0.0, scale=1.0 / math.sqrt(cfg.head_dim))
        att = att.transpose(1, 2).reshape(B, Lq, -1)
        return project_one(att, self.o_proj) if residual is None else add_projection(residual, att, self.o_proj,
                                                                                       overwrite)


class DreamMLP(nn.Module):
    projection_groups = (("gate_proj", "up_proj"), ("down_proj",))
    elementwise = EAGER  # SiLU·mul, or its fused kernel (rl_dlm/models/elementwise.py)

    def __init__(self, config: DreamConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, h: torch.Tensor, residual: torch.Tensor | None = None, overwrite: bool = False) -> torch.Tensor:
        """down(SiLU(gate(h))·up(h)); with `residual`, residual + that, into `residual` where `overwrite` allows."""
        gate, up = project(h, self.gate_proj, self.up_proj)
        act = self.elementwise.silu_mul(gate, up)
        return project_one(act, self.down_proj) if residual is None else add_projection(residual, act, self.down_proj,
                                                                                          overwrite)


class DreamDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: DreamConfig, layer_idx: int):
        super().__init__()
        self.self_attn = DreamAttention(config, layer_idx)
        self.mlp = DreamMLP(config)
        self.input_layernorm = DreamRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = DreamRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope=None, attn_mask=None, kv_cache=None, keep: slice | None = None,
                overwrite: bool = False):
        """keep: the positions whose output is used (the last layer before a sliced LM head) → [B, |keep|, d].
        overwrite: x is the caller's to reuse (run_blocks); in a rollout's forward the residual sums are then
        accumulated into it (fused_projections.add_projection)."""
        if keep is not None:
            # kept queries (a strided slice: no in-place sum). The slice is taken after attention, as before:
            # autograd's order of summing x's gradients follows it.
            att = self.self_attn(self.input_layernorm(x), rope, attn_mask=attn_mask, kv_cache=kv_cache, keep=keep)
            x = x[:, keep] + att
        else:
            x = self.self_attn(self.input_layernorm(x), rope, attn_mask=attn_mask, kv_cache=kv_cache,
                               residual=x, overwrite=overwrite)
        # x is this layer's own (a new sum, or the caller's x when it allowed overwriting)
        return self.mlp(self.post_attention_layernorm(x), residual=x, overwrite=True)


class DreamBaseModel(nn.Module):
    """Holds embed_tokens, layers and norm under `model.` so parameter names match the official checkpoint."""

    def __init__(self, config: DreamConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(DreamDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = DreamRMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamPreTrainedModel(PreTrainedModel):
    config_class = DreamConfig
    config: DreamConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DreamDecoderLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, DreamRMSNorm):
            init.ones_(module.weight)


class DreamModel(DreamPreTrainedModel):
    """Dream masked-diffusion LM: `forward(input_ids)` → SHIFTED logits [B, L, vocab] (logits[:, i] → token i+1)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    supports_block_cache = True
    supports_logits_slice = True  # `logits_to_keep` takes a slice (Policy.logits(keep=...))
    supports_4d_key_mask = True  # a bool [B, 1, Lq, T] mask is taken without a host check (key_mask.py)
    compiled_block_call = None  # the block passes under torch.compile (rl_dlm/models/compiled_blocks.py)

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.model = DreamBaseModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear):
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # [B, L]
        attention_mask: torch.Tensor | str | None = None,  # [B, T] 0/1 key mask (T = L, or the cache length)
        position_ids: torch.LongTensor | None = None,  # [L] or [B, L]; default 0..L-1
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        kv_cache=None,  # BlockKVCache: fill it (refresh) or read it around a window (see kv_cache.py)
        logits_to_keep: int | slice | None = None,  # int k = last k positions; a slice = those positions
        **kwargs,  # labels, use_cache, ... accepted and ignored
    ):
        base = self.model
        x = base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, L = x.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(L, device=x.device)
        rope = rope_cos_sin(position_ids.to(x.device), self.config.head_dim, self.config.rope_theta)
        attn_mask = key_mask_4d(attention_mask, x.device)
        hidden_states = []
        keep = kept_positions(logits_to_keep)
        last_keep = None if output_hidden_states else keep  # the last layer runs only the kept queries
        x = run_blocks(base.layers, x, rope=rope, attn_mask=attn_mask, kv_cache=kv_cache, last_keep=last_keep,
                       hidden_states=hidden_states if output_hidden_states else None,
                       block_call=self.compiled_block_call)
        x = base.norm(x)
        if output_hidden_states:
            hidden_states.append(x)
        if keep is not None and last_keep is None:
            x = x[:, keep]
        logits = self.lm_head(x)
        hidden_states = tuple(hidden_states) if output_hidden_states else None
        if not return_dict:
            return (logits,) + ((hidden_states,) if output_hidden_states else ())
        return MaskedLMOutput(logits=logits, hidden_states=hidden_states)


AutoConfig.register("Dream", DreamConfig, exist_ok=True)
AutoModel.register(DreamConfig, DreamModel, exist_ok=True)
