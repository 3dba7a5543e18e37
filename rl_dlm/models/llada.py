"""Native LLaDA architecture (LLaDA-8B-Base/Instruct, LLaDA-1.5) for transformers, without remote code.

What it implements
    The bidirectional "llama"-block transformer of LLaDA (Nie et al., 2025, "Large Language Diffusion Models"):
    per block h = RMSNorm(x); q, k, v = Linear(h); half-rotation RoPE in fp32; non-causal SDPA with scale
    1/sqrt(head_dim); x += attn_out(.); h = RMSNorm(x); x += ff_out(SiLU(ff_proj(h)) * up_proj(h)). Then ln_f and
    the ff_out LM head (or wte when weight_tying). Logits are NOT shifted: logits[:, i] scores token i.

Reference code
    GSAI-ML/LLaDA-8B-Instruct `modeling_llada.py` / `configuration_llada.py` (the OLMo-derived remote code).
    `LLaDAConfig` takes the official config.json keys; `LLaDAModelLM` has the official module tree, so the
    official safetensors load by key name (`model.transformer.wte`,
    `model.transformer.blocks.N.{attn_norm,q_proj,k_proj,v_proj,attn_out,ff_norm,ff_proj,up_proj,ff_out}`,
    `model.transformer.ln_f`, `model.transformer.ff_out`). RoPE tables are recomputed, never stored.

Deliberate deviations from the official code
    - A (B, L) 0/1 `attention_mask` is always honoured as a key-only mask (pad keys hidden, pad query rows still
      computed), like the post-2025-10-21 official code; the older code silently ignored it. LLaDA was trained
      without masks, so score SFT-style sequences with `attention_mask=None`; mask only left-padded prompts.
      An all-ones mask is dropped (no mask reaches SDPA), and a row with no valid key attends everywhere (no NaN).
    - Optional `position_ids` ((L,) or (B, L)); the official positions are always 0..L-1 (the default here).
      For left-padded rows pass `cumsum(mask) - 1` (clipped at 0) to match their unpadded logits; RoPE is
      relative, so without it the difference is rounding only, but a KV cache needs true positions.
    - Dropout defaults are 0.0 (the official dataclass uses 0.1; the shipped config.json uses 0.0).
    - No process-wide SDPA backend changes (the official constructor disables memory-efficient SDPA globally).
    - HF gradient checkpointing (`activation_checkpointing_enable` / `gradient_checkpointing_enable`) per block,
      instead of the official `set_activation_checkpointing(strategy)`.
    - `kv_cache` (a block cache for rollouts, rl_dlm/models/kv_cache.py) and `logits_to_keep`, which the
      official forward lacks (it asserts there is no cache).
    - No alibi, QK-norm, input-embedding norm, logit scaling, flash-attn flag or labels->loss; the
      unsupported settings raise ValueError naming the key, the inert ones (init_*, precision, auto_map, ...) are
      accepted and dropped. `multi_query_attention` only matters when `n_kv_heads` is null (official semantics).

Speed (outputs equal to the textbook code, tests/test_exact_speedups.py; bench/previous_paths.py keeps it)
    - `logits_to_keep` also trims the last block to the kept queries (every position still gives K/V): one
      32-token block of a 456-token canvas skips ~93 % of it, ~2.5 % of the forward. Products on fewer rows
      may round fp32 sums differently, as a change of batch size does.
    - RoPE and RMSNorm round to the activation dtype as they store (RoPE half by half): ~22 instead of ~52
      bytes per element for RoPE in bf16; under autograd with hand-written backward passes that do what
      autograd does for the textbook code. Bit-identical both ways (rl_dlm/models/rope.py, rms_norm.py).
    - q/k/v and ff_proj/up_proj run as one GEMM each where their weights are packed and frozen, and LoRA
      adapters take fewer passes (rl_dlm/models/fused_projections.py; `load_policy` fuses them): outputs equal
      to rounding.

Run the tests: `.venv/bin/python -m pytest tests/models/test_llada.py -q`
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
from rl_dlm.models.rope import query_rope, rope_cos_sin

__all__ = ["LLaDAConfig", "LLaDAModelLM", "tiny_llada_config"]

# Official config keys that carry no information for this implementation (or are overridden by loaders).
_IGNORED_KEYS = (
    "alibi_bias_max", "block_group_size", "flash_attention", "init_device", "init_fn", "init_std",
    "init_cutoff_factor", "precision", "use_cache", "auto_map", "attention_layer_norm_with_affine",
    "multi_query_attention",
)


class LLaDAConfig(PreTrainedConfig):
    """LLaDA configuration; field names are the official config.json keys."""

    model_type = "llada"

    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    mlp_hidden_size: int | None = None
    mlp_ratio: int = 4
    activation_type: str = "silu"
    block_type: str = "llama"
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    rms_norm_eps: float = 1e-5
    rope: bool = True
    rope_theta: float = 500000.0
    rope_full_precision: bool = True
    alibi: bool = False
    include_bias: bool = False
    include_qkv_bias: bool = False
    bias_for_layer_norm: bool | None = None
    attention_layer_norm: bool = False
    input_emb_norm: bool = False
    scale_logits: bool = False
    weight_tying: bool = False
    vocab_size: int = 126464
    embedding_size: int | None = None
    max_sequence_length: int = 4096
    mask_token_id: int = 126336
    eos_token_id: int | None = 126081
    pad_token_id: int | None = 126081
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0

    def __post_init__(self, **kwargs):
        mqa = kwargs.get("multi_query_attention")
        for key in _IGNORED_KEYS:  # accepted, not stored (auto_map would also point AutoModel at remote code)
            kwargs.pop(key, None)
        if self.n_kv_heads is None:  # official `effective_n_kv_heads`
            self.n_kv_heads = 1 if mqa else self.n_heads
        if self.embedding_size is None:
            self.embedding_size = self.vocab_size
        if self.mlp_hidden_size is None:
            self.mlp_hidden_size = int(self.mlp_ratio * self.d_model)
        super().__post_init__(**kwargs)
        self._check_supported()

    def _check_supported(self):
        unsupported = {
            "alibi": self.alibi, "attention_layer_norm": self.attention_layer_norm,
            "input_emb_norm": self.input_emb_norm, "scale_logits": self.scale_logits,
            "layer_norm_with_affine": not self.layer_norm_with_affine,
            "block_type": self.block_type != "llama", "activation_type": self.activation_type != "silu",
            "layer_norm_type": self.layer_norm_type != "rms",
        }
        for key, bad in unsupported.items():
            if bad:
                raise ValueError(f"LLaDAConfig: unsupported setting {key}={getattr(self, key)!r}")
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"LLaDAConfig: d_model={self.d_model} must divide by n_heads={self.n_heads}, "
                f"and n_heads by n_kv_heads={self.n_kv_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def tiny_llada_config(
    vocab_size: int = 128,
    mask_token_id: int = 127,
    eos_token_id: int = 126,
    pad_token_id: int = 126,
    **overrides,
) -> LLaDAConfig:
    """A few-million-parameter LLaDA (d_model 256, 4 layers, 4 heads, MLP 768); any field can be overridden."""
    kwargs = dict(
        d_model=256, n_layers=4, n_heads=4, n_kv_heads=None, mlp_hidden_size=768, vocab_size=vocab_size,
        embedding_size=vocab_size, max_sequence_length=512, rope_theta=10000.0, mask_token_id=mask_token_id,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    kwargs.update(overrides)
    return LLaDAConfig(**kwargs)


class LLaDARMSNorm(nn.Module):
    """Official RMSLayerNorm: normalise in fp32, cast back to the input dtype, then scale (and shift)."""

    elementwise = EAGER  # or the fused kernels (rl_dlm/models/elementwise.py)

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.eps = config.rms_norm_eps
        self.weight = nn.Parameter(torch.ones(config.d_model))
        use_bias = config.include_bias if config.bias_for_layer_norm is None else config.bias_for_layer_norm
        self.bias = nn.Parameter(torch.zeros(config.d_model)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.elementwise.norm(x, self.weight, self.eps)  # in fp32, cast back (rl_dlm/models/rms_norm.py)
        return h + self.bias if self.bias is not None else h


def kept_positions(logits_to_keep: int | slice | None) -> slice | None:
    """`logits_to_keep` (transformers' convention: an int k is the last k positions, 0 or None all) as a slice."""
    if not logits_to_keep:
        return None
    return slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep


class LLaDABlock(GradientCheckpointingLayer):
    """Official LLaDALlamaBlock (pre-norm attention + SwiGLU-style MLP with plain SiLU)."""

    # siblings run as one GEMM, every projection with LoRA's fused adapter path (fused_projections.py)
    projection_groups = (("q_proj", "k_proj", "v_proj"), ("ff_proj", "up_proj"), ("attn_out",), ("ff_out",))
    elementwise = EAGER  # RoPE and SiLU·mul, or their fused kernels (rl_dlm/models/elementwise.py)

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        d, hd = config.d_model, config.head_dim
        qkv_bias = config.include_bias or config.include_qkv_bias
        self.attn_norm = LLaDARMSNorm(config)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=config.include_bias)
        self.ff_norm = LLaDARMSNorm(config)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=config.include_bias)
        self.dropout = nn.Dropout(config.residual_dropout)

    def attention(self, h: torch.Tensor, rope=None, attn_mask: torch.Tensor | None = None,
                  kv_cache=None, keep: slice | None = None, residual: torch.Tensor | None = None,
                  overwrite: bool = False) -> torch.Tensor:
        """Non-causal self-attention of the normed states h [B, L, d]; returns attn_out(.) [B, L, d], or
        [B, |keep|, d] for the query positions `keep` (every position still supplies keys and values); with
        `residual`, residual + attn_out(.), into `residual` where `overwrite` allows (fused_projections.py)."""
        cfg = self.config
        B, L, _ = h.shape
        if keep is None:  # one GEMM where the weights are packed (rl_dlm/models/fused_projections.py)
            q, k, v = project(h, self.q_proj, self.k_proj, self.v_proj)
        else:
            q, (k, v) = project_one(h[:, keep], self.q_proj), project(h, self.k_proj, self.v_proj)
        Lq = q.shape[1]
        q = q.view(B, Lq, cfg.n_heads, cfg.head_dim).transpose(1, 2)  # [B, H, Lq, hd]
        k = k.view(B, L, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(B, L, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        if rope is not None:
            q = self.elementwise.rope(q, *query_rope(rope, keep), cfg.rope_full_precision)
            k = self.elementwise.rope(k, *rope, cfg.rope_full_precision)
        if kv_cache is not None:  # post-RoPE K/V of the whole canvas (rl_dlm/models/kv_cache.py)
            k, v = kv_cache.update(self.layer_idx, k, v)
        if cfg.n_kv_heads != cfg.n_heads:  # GQA: query head i uses kv head i // group (official repeat_interleave)
            group = cfg.n_heads // cfg.n_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=False,
            dropout_p=cfg.attention_dropout if self.training else 0.0, scale=1.0 / math.sqrt(cfg.head_dim),
        )
        att = att.transpose(1, 2).reshape(B, Lq, cfg.d_model)
        if residual is None:
            return project_one(att, self.attn_out)
        return add_projection(residual, att, self.attn_out, overwrite)

    def forward(self, x: torch.Tensor, rope=None, attn_mask: torch.Tensor | None = None, kv_cache=None,
                keep: slice | None = None, overwrite: bool = False) -> torch.Tensor:
        """keep: the positions whose output is used (the last block before a sliced LM head) → [B, |keep|, d].
        overwrite: x is the caller's to reuse (run_blocks); in a rollout's forward the residual sums are then
        accumulated into it (fused_projections.add_projection)."""
        if keep is not None or (self.training and self.dropout.p > 0):
            # kept queries (a strided slice: no in-place sum), or dropout of each branch before its sum. The
            # slice is taken after attention, as before: autograd's order of summing x's gradients follows it.
            att = self.attention(self.attn_norm(x), rope=rope, attn_mask=attn_mask, kv_cache=kv_cache, keep=keep)
            x = (x if keep is None else x[:, keep]) + self.dropout(att)
            gate, up = project(self.ff_norm(x), self.ff_proj, self.up_proj)
            return x + self.dropout(project_one(self.elementwise.silu_mul(gate, up), self.ff_out))
        x = self.attention(self.attn_norm(x), rope=rope, attn_mask=attn_mask, kv_cache=kv_cache,
                           residual=x, overwrite=overwrite)
        gate, up = project(self.ff_norm(x), self.ff_proj, self.up_proj)
        # x is this block's own (a new sum, or the caller's x when it allowed overwriting)
        return add_projection(x, self.elementwise.silu_mul(gate, up), self.ff_out, overwrite=True)


class LLaDAModel(nn.Module):
    """Holds `transformer` (wte, blocks, ln_f, ff_out) so parameter names match the official checkpoint."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        modules = dict(
            wte=nn.Embedding(config.embedding_size, config.d_model),
            emb_drop=nn.Dropout(config.embedding_dropout),
            blocks=nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
            ln_f=LLaDARMSNorm(config),
        )
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(config.d_model, config.embedding_size, bias=config.include_bias)
        self.transformer = nn.ModuleDict(modules)


class LLaDAPreTrainedModel(PreTrainedModel):
    config_class = LLaDAConfig
    config: LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LLaDARMSNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class LLaDAModelLM(LLaDAPreTrainedModel):
    """LLaDA masked-diffusion LM: `forward(input_ids)` -> unshifted logits [B, L, embedding_size]."""

    supports_block_cache = True
    supports_logits_slice = True  # `logits_to_keep` takes a slice (Policy.logits(keep=...))
    supports_4d_key_mask = True  # a bool [B, 1, Lq, T] mask is taken without a host check (key_mask.py)
    compiled_block_call = None  # the block passes under torch.compile (rl_dlm/models/compiled_blocks.py)

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear | None:
        return None if self.config.weight_tying else self.model.transformer.ff_out

    def set_output_embeddings(self, value: nn.Linear):
        self.model.transformer.ff_out = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # [B, L]
        attention_mask: torch.Tensor | None = None,  # [B, T] 0/1 or [B, 1, Lq, T] bool, key-only (T = L or cache)
        position_ids: torch.LongTensor | None = None,  # [L] or [B, L]; default 0..L-1
        inputs_embeds: torch.Tensor | None = None,  # [B, L, d] instead of input_ids
        output_hidden_states: bool = False,
        return_dict: bool = True,
        kv_cache=None,  # BlockKVCache: fill it (refresh) or read it around a window (see kv_cache.py)
        logits_to_keep: int | slice | None = None,  # int k = last k positions; a slice = those positions
        **kwargs,  # labels, use_cache, ... are accepted and ignored (no loss here; see module docstring)
    ):
        tr, cfg = self.model.transformer, self.config
        x = tr.wte(input_ids) if inputs_embeds is None else inputs_embeds
        x = tr.emb_drop(x)
        B, L = x.shape[:2]

        rope = None
        if cfg.rope:
            if position_ids is None:
                position_ids = torch.arange(L, device=x.device)
            rope = rope_cos_sin(position_ids.to(x.device), cfg.head_dim, cfg.rope_theta)

        attn_mask = key_mask_4d(attention_mask, x.device)  # [B, 1, 1, T] or None (rl_dlm/models/key_mask.py)

        hidden_states = []
        keep = kept_positions(logits_to_keep)
        last_keep = None if output_hidden_states else keep  # the last block runs only the kept queries
        x = run_blocks(tr.blocks, x, rope=rope, attn_mask=attn_mask, kv_cache=kv_cache, last_keep=last_keep,
                       hidden_states=hidden_states if output_hidden_states else None,
                       block_call=self.compiled_block_call)
        x = tr.ln_f(x)
        if output_hidden_states:
            hidden_states.append(x)
        if keep is not None and last_keep is None:  # the LM head is 126k wide: only the positions read
            x = x[:, keep]
        logits = F.linear(x, tr.wte.weight) if cfg.weight_tying else tr.ff_out(x)  # weight dtype, not upcast

        hidden_states = tuple(hidden_states) if output_hidden_states else None
        if not return_dict:
            return (logits,) + ((hidden_states,) if output_hidden_states else ())
        return MaskedLMOutput(logits=logits, hidden_states=hidden_states)


AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
