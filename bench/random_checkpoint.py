"""Randomly initialised checkpoints of the LLaDA-8B-Instruct and Dream-7B / DiffuCoder-7B shapes, written in the
official on-disk layout, so that a benchmark loads them through the same path as the hub checkpoints
(`load_policy` → config.json family detection → `from_pretrained` of sharded safetensors → family checks).

What is written to `<dir>`:
- `config.json`: the official keys, `architectures`, `model_type` ("llada" / "Dream") and `auto_map` (the remote
  code modules, which `rl_dlm.models.families` also recognises);
- `model-0000k-of-0000n.safetensors` (6 shards for LLaDA-8B, 4 for Dream-7B, split by size in the official key
  order) and `model.safetensors.index.json` (`metadata.total_size`, `weight_map`), with the official weight names
  (the official safetensors indexes): LLaDA `model.transformer.{wte, blocks.N.*, ln_f, ff_out}`,
  Dream `model.{embed_tokens, layers.N.*, norm}` + `lm_head` (q/k/v biases included);
- a tokenizer (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`) with the real vocabulary size
  and the family's special tokens at their official ids: LLaDA `<|startoftext|>` 126080 (BOS), `<|endoftext|>`
  126081 (EOS and pad), `<|mdm_mask|>` 126336 (mask; like the official tokenizer it does not set `mask_token`),
  headers 126346/126347, `<|eot_id|>` 126348 (126349 tokens); Dream/DiffuCoder `<|endoftext|>` 151643,
  `<|im_start|>`/`<|im_end|>` 151644/151645, `<|beginoftext|>` 151665, `<|mask|>` 151666 and DiffuCoder's
  `<|dlm_pad|>` 151667 (the tokenizer's pad). A chat template of the family's format is included.
  Deviation: the ordinary tokens are synthetic words (`w<i>`) in a word-level model, not the official BPE
  merges; nothing here depends on how text splits into tokens. For the same reason the Dream tokenizer_config
  has no `auto_map` (the hub one names the remote `DreamTokenizer`, which `load_tokenizer` replaces by
  transformers' BPE `Qwen2Tokenizer`; a word-level vocabulary needs the plain `AutoTokenizer` path).

Weights: every matrix N(0, 0.02²) (the configs' init_std / initializer_range), norms 1, biases 0, drawn in bf16 on
the given device by a generator seeded from (seed, tensor name), so a tensor does not depend on the shard layout;
shards are written one at a time (one shard in host memory at once). An 8B checkpoint takes about 16 GB of disk.
A `.complete` marker holding the shape name and seed is written last; `write_checkpoint` reuses a directory whose
marker matches, so a machine builds each checkpoint once.

    python bench/random_checkpoint.py /tmp/llada8b --shape llada8b [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

LLADA_CHAT = ("{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
              "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
              "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}")
DREAM_CHAT = ("{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
              "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
              "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
QWEN_EXTRA = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
              "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
              "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
              "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]


def llada_specials(first: int) -> dict[str, int]:
    """LLaDA's special tokens at the official offsets from `<|startoftext|>` (126080 in the real tokenizer)."""
    out = {"<|startoftext|>": first, "<|endoftext|>": first + 1, "[CLS]": first + 2, "[gMASK]": first + 3}
    reserved = [*range(first + 4, first + 256), *range(first + 257, first + 260)]
    out.update({f"<|reserved_token_{k}|>": i for k, i in enumerate(reserved)})
    out["<|mdm_mask|>"] = first + 256
    for k, name in enumerate(["<role>", "</role>", "<|arithmetic_start|>", "<|arithmetic_end|>", "<|number_start|>",
                              "<|number_end|>"]):
        out[name] = first + 260 + k
    out.update({"<|start_header_id|>": first + 266, "<|end_header_id|>": first + 267, "<|eot_id|>": first + 268})
    return out


def dream_specials(first: int, diffucoder: bool) -> dict[str, int]:
    """Qwen2.5's special tokens from `<|endoftext|>` (151643), then Dream's BOS and mask (and DiffuCoder's pad)."""
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *QWEN_EXTRA, "<|beginoftext|>", "<|mask|>"]
    names += ["<|dlm_pad|>"] if diffucoder else []
    return {name: first + k for k, name in enumerate(names)}


@dataclass(frozen=True)
class Shape:
    name: str
    family: str  # "llada" | "dream"
    config: dict  # config.json
    specials: dict[str, int]
    special_roles: dict[str, str]  # tokenizer role (bos_token, eos_token, pad_token, mask_token) → token
    chat_template: str
    shards: int
    additional: list[str] = field(default_factory=list)

    @property
    def tokenizer_size(self) -> int:
        return max(self.specials.values()) + 1


def llada_shape(name: str, d_model: int, n_layers: int, n_heads: int, mlp: int, vocab: int, first_special: int,
                shards: int) -> Shape:
    specials = llada_specials(first_special)
    config = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": d_model,
        "embedding_dropout": 0.0, "embedding_size": vocab, "eos_token_id": specials["<|endoftext|>"],
        "flash_attention": False, "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None,
        "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
        "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": specials["<|mdm_mask|>"],
        "max_sequence_length": 4096, "mlp_hidden_size": mlp, "mlp_ratio": 4, "model_type": "llada",
        "multi_query_attention": None, "n_heads": n_heads, "n_kv_heads": n_heads, "n_layers": n_layers,
        "pad_token_id": specials["<|endoftext|>"], "precision": "amp_bf16", "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True, "rope_theta": 500000.0,
        "scale_logits": False, "torch_dtype": "bfloat16", "use_cache": False, "vocab_size": vocab,
        "weight_tying": False,
    }
    roles = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    extra = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<role>", "</role>"]
    return Shape(name, "llada", config, specials, roles, LLADA_CHAT, shards, additional=extra)


def dream_shape(name: str, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
                first_special: int, shards: int, diffucoder: bool = True) -> Shape:
    specials = dream_specials(first_special, diffucoder)
    eos = specials["<|endoftext|>"]
    config = {
        "architectures": ["DreamModel"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": eos, "eos_token_id": eos, "hidden_act": "silu", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": intermediate, "mask_token_id": specials["<|mask|>"],
        "max_position_embeddings": 131072, "max_window_layers": layers, "model_type": "Dream",
        "num_attention_heads": heads, "num_hidden_layers": layers, "num_key_value_heads": kv_heads,
        "pad_token_id": eos, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": False,
        "use_sliding_window": False, "vocab_size": vocab,
    }
    roles = {"bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>", "mask_token": "<|mask|>",
             "pad_token": "<|dlm_pad|>" if diffucoder else "<|endoftext|>"}
    return Shape(name, "dream", config, specials, roles, DREAM_CHAT, shards,
                 additional=["<|im_start|>", "<|im_end|>"])


SHAPES = {
    "llada8b": llada_shape("llada8b", 4096, 32, 32, 12288, 126464, 126080, shards=6),
    "diffucoder7b": dream_shape("diffucoder7b", 3584, 28, 28, 4, 18944, 152064, 151643, shards=4),
    # --tiny: the same layouts and special-token structure at a few hundred thousand parameters
    "tiny_llada": llada_shape("tiny_llada", 64, 2, 4, 128, 384, 100, shards=2),
    "tiny_diffucoder": dream_shape("tiny_diffucoder", 64, 2, 4, 2, 128, 160, 100, shards=2),
}


def weight_shapes(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """(official name, shape) of every tensor, in the official order."""
    c = shape.config
    if shape.family == "llada":
        d, mlp, v, hd = c["d_model"], c["mlp_hidden_size"], c["embedding_size"], c["d_model"] // c["n_heads"]
        kv = c["n_kv_heads"] * hd
        out = [("model.transformer.wte.weight", (v, d))]
        for n in range(c["n_layers"]):
            p = f"model.transformer.blocks.{n}."
            out += [(p + "attn_norm.weight", (d,)), (p + "q_proj.weight", (d, d)), (p + "k_proj.weight", (kv, d)),
                    (p + "v_proj.weight", (kv, d)), (p + "attn_out.weight", (d, d)), (p + "ff_norm.weight", (d,)),
                    (p + "ff_proj.weight", (mlp, d)), (p + "up_proj.weight", (mlp, d)),
                    (p + "ff_out.weight", (d, mlp))]
        return out + [("model.transformer.ln_f.weight", (d,)), ("model.transformer.ff_out.weight", (v, d))]
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    out = [("model.embed_tokens.weight", (v, h))]
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.q_proj.bias", (h,)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.k_proj.bias", (kv,)), (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.bias", (kv,)), (p + "self_attn.o_proj.weight", (h, h)),
                (p + "post_attention_layernorm.weight", (h,)), (p + "mlp.gate_proj.weight", (inter, h)),
                (p + "mlp.up_proj.weight", (inter, h)), (p + "mlp.down_proj.weight", (h, inter))]
    return out + [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]


def random_tensor(name: str, size: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
        return torch.ones(size, dtype=torch.bfloat16, device=device)
    if name.endswith(".bias"):
        return torch.zeros(size, dtype=torch.bfloat16, device=device)
    gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return torch.randn(size, generator=gen, dtype=torch.bfloat16, device=device).mul_(0.02)


def _shard_plan(names: list[tuple[str, tuple[int, ...]]], shards: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    sizes = [torch.Size(s).numel() for _, s in names]
    target = sum(sizes) / shards
    plan, current, filled = [], [], 0
    for item, size in zip(names, sizes):
        if current and filled + size / 2 > target and len(plan) < shards - 1:
            plan.append(current)
            current, filled = [], 0
        current.append(item)
        filled += size
    return plan + [current]


def write_tokenizer(shape: Shape, out: Path) -> None:
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    ordinary = ["<unk>", "system", "user", "assistant", "You", "are", "a", "helpful", "assistant."]
    vocab = {tok: i for i, tok in enumerate(ordinary)}
    first_special = min(shape.specials.values())
    vocab.update({f"w{i}": i for i in range(len(ordinary), first_special)})
    vocab.update(shape.specials)
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in shape.specials])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", padding_side="left",
                                  additional_special_tokens=shape.additional, **shape.special_roles)
    tok.chat_template = shape.chat_template
    tok.save_pretrained(str(out))


def write_checkpoint(shape: Shape | str, out: str | Path, device: str | torch.device = "cpu", seed: int = 0,
                     log=print) -> Path:
    """Writes (or reuses) a random checkpoint of `shape` in `out`; returns the directory."""
    from safetensors.torch import save_file

    shape = SHAPES[shape] if isinstance(shape, str) else shape
    out, device = Path(out), torch.device(device)
    marker = out / ".complete"
    fingerprint = f"{shape.name} seed={seed}"
    if marker.exists() and marker.read_text().strip() == fingerprint:
        log(f"reusing the {shape.name} checkpoint in {out}")
        return out
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("model-*.safetensors"):
        old.unlink()
    marker.unlink(missing_ok=True)
    plan = _shard_plan(weight_shapes(shape), shape.shards)
    weight_map, total = {}, 0
    for k, names in enumerate(plan, 1):
        file = f"model-{k:05d}-of-{len(plan):05d}.safetensors"
        tensors = {name: random_tensor(name, size, seed, device).cpu() for name, size in names}
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, file))
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(shape.config, indent=2) + "\n")
    write_tokenizer(shape, out)
    marker.write_text(fingerprint + "\n")
    log(f"wrote the {shape.name} checkpoint ({total / 2**30:.1f} GiB, {len(plan)} shards) to {out} in "
        f"{time.perf_counter() - start:.0f} s")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llada8b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write_checkpoint(args.shape, args.out, args.device, args.seed)


if __name__ == "__main__":
    main()
