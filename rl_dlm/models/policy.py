"""The policy: a dLLM plus its family conventions, wrapped with LoRA.

A family (rl_dlm/models/families.py) states what every consumer must agree on — the mask id, the logit
alignment, the end-of-turn (stop) and pad ids, the chat template — so samplers and estimators never hard-code
them. `Policy.logits` always returns logits aligned so that position i scores token i (LLaDA's convention); a
family with shifted logits (Dream) is realigned here, once (a left-padded row's first token keeps its own logit,
so padded and unpadded rows agree).

`load_policy` reads config.json, picks the family (`model_type` / `architectures` / `auto_map`), loads LLaDA and
Dream/DiffuCoder into the native classes without remote code, checks the mask id and alignment at start-up, and
optionally quantises the base weights to 4 bit (bitsandbytes, CUDA only).

The reference policy is the same weights with the LoRA adapters disabled (`with policy.reference():`), so
there is never a second copy of the model.

    policy = load_policy("checkpoints/tiny-llada", lora=LoraSettings(r=16))
    logits = policy.logits(input_ids, attention_mask)        # [n, T, V], aligned
    block = policy.logits(input_ids, attention_mask, keep=slice(lo, hi))   # [n, hi - lo, V], the same values

Samplers and the scorer ask only for the positions they read (`keep`): at a 126k vocabulary the LM head over the
whole canvas is ~7 % of a forward's FLOPs and its [n, T, V] output the largest tensor of a rollout step. Under
bf16 autocast without grad and dropout (rollouts, old / reference log-probs), `Policy.logits` also skips peft's
cast of each adapted layer's input to the fp32 adapter dtype, which autocast undoes at once
(rl_dlm/models/lora_casts.py).
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from rl_dlm.models.cuda_graphs import GraphedForward
from rl_dlm.models.families import Family, FamilySpec, check_family, family_of, probe_alignment, spec_from_config
from rl_dlm.models.compiled_blocks import compile_blocks
from rl_dlm.models.elementwise import check_compilable, compile_elementwise, compiled_modules
from rl_dlm.models.fused_projections import fuse_projections, residual_sums_in_place
from rl_dlm.models.lora_casts import lora_input_casts_skipped_if_redundant

__all__ = ["Family", "LoraSettings", "Policy", "add_lora", "disable_dropout", "family_of", "load_policy"]


@dataclass
class LoraSettings:
    r: int = 128
    alpha: int = 64
    dropout: float = 0.05
    # `ff_out` is both LLaDA's block down-projection and its LM head: match the block one explicitly.
    target_modules: list[str] | str = field(
        default_factory=lambda: r".*(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|blocks\.\d+\.ff_out"
        r"|o_proj|gate_proj|down_proj)"
    )


class Policy:
    """A dLLM with its family conventions; `model` may be peft-wrapped."""

    def __init__(self, model: nn.Module, tokenizer, family: Family | None = None):
        self.graphs = GraphedForward()
        self.model = model
        self.tokenizer = tokenizer
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.family = family or family_of(base, tokenizer)
        check_family(base, self.family)  # a hand-made Family must agree with the model's known family
        self._sampling = self._adapters_off = 0  # depths of `inference()` and `reference()`

    # Replay the rollouts' forwards (inside `inference()`) from CUDA graphs where they apply: bit-identical
    # logits, far fewer kernel launches (rl_dlm/models/cuda_graphs.py); the trainers set it from their config.
    cuda_graphs = False

    @property
    def model(self) -> nn.Module:
        return self._model

    @model.setter
    def model(self, model: nn.Module):
        self._model = model
        self._kernel_probe = None  # see `kernels()`
        self.graphs.reset()  # captured graphs point at the old model's weights

    def kernels(self) -> str:
        """The element-wise kernels the model runs now ("eager" or "compiled", rl_dlm/models/elementwise.py; ""
        for another library's model). Part of every graph's key: a graph replays the kernels it recorded, so one
        captured before `compile_elementwise` switched the model would replay the other set. The modules switch
        together, so one of them, found once per model, tells."""
        if self._kernel_probe is None:
            modules = compiled_modules(self._model)
            self._kernel_probe = modules[0] if modules else nn.Identity()
        kernels = getattr(self._kernel_probe, "elementwise", None)
        return kernels.name if kernels is not None else ""

    mask_id = property(lambda self: self.family.mask_id)
    stop_id = property(lambda self: self.family.stop_id)
    pad_id = property(lambda self: self.family.pad_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None, keep: slice | None = None) -> Tensor:
        """[n, T] → [n, T, V], position i scoring token i. Left padding is hidden from attention and the
        position ids are aligned so a padded row computes what it would alone.

        keep: a slice of positions (`slice(lo, hi)`, `slice(p, None)`) → only their logits, [n, |keep|, V]. The
        native models project only those positions through the LM head (a shifted family one more, the one
        before `lo`); any other model computes all logits and slices them. Same values as `logits(...)[:, keep]`."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        padded = attention_mask is not None and not bool(attention_mask.all())  # the one host check
        inputs = [input_ids]
        if padded:
            four_d = getattr(base, "supports_4d_key_mask", False)  # the native models (rl_dlm/models/key_mask.py)
            inputs += [attention_mask.bool()[:, None, None, :] if four_d else attention_mask.long(),
                       (attention_mask.long().cumsum(-1) - 1).clamp_min(0)]
        total = input_ids.shape[1]
        start, stop, stride = (keep or slice(None)).indices(total)
        if stride != 1 or stop <= start:
            raise ValueError(f"keep must be a non-empty slice of consecutive positions of {total}, got {keep}")
        shift = 1 if self.family.shift_logits else 0
        lo = max(start - shift, 0)  # first raw position needed: a shifted family scores token i at i - 1

        def forward(ids: Tensor, mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
            kwargs = {} if mask is None else {"attention_mask": mask, "position_ids": positions}
            with lora_input_casts_skipped_if_redundant(self.model, ids.device.type):
                if (lo, stop) == (0, total):
                    return self.model(input_ids=ids, **kwargs).logits
                if getattr(base, "supports_logits_slice", False):
                    return self.model(input_ids=ids, logits_to_keep=slice(lo, stop), **kwargs).logits
                return self.model(input_ids=ids, **kwargs).logits[:, lo:stop]

        raw = self.graphed(("logits", lo, stop), forward, *inputs)
        if not shift:
            return raw
        off = start - lo  # 1, or 0 when keep starts at position 0 (whose own logit stands in for its left one)
        logits = raw[:, :-1] if off else torch.cat([raw[:, :1], raw[:, :-1]], 1)
        if padded:  # a left-padded row's first token has no left neighbour: its own logit
            first = (inputs[2][:, start:stop] == 0)[..., None]
            logits = torch.where(first, raw[:, off:], logits)
        return logits

    def uses_graphs(self, input_ids: Tensor) -> bool:
        """Whether a forward of input_ids replays from CUDA graphs: `cuda_graphs` on, inside `inference()`, and
        where graphs apply (rl_dlm/models/cuda_graphs.py)."""
        return bool(self.cuda_graphs and self._sampling and self.graphs.usable(self.model, input_ids))

    def graphed(self, key, forward, *inputs: Tensor | None) -> Tensor:
        """forward(*inputs) (input ids first; a None input is passed as it is), replayed from a CUDA graph where
        `uses_graphs`; the key adds which code path runs (adapters on or off, merged or not, `kernels()`)."""
        if not self.uses_graphs(inputs[0]):
            return forward(*inputs)
        mode = (bool(self._adapters_off), bool(self.merge_lora_for_inference), self.kernels())
        return self.graphs((key, mode), forward, *inputs)

    def graph_state(self, key, make, input_ids: Tensor):
        """make(), kept across rollouts while forwards of input_ids replay from graphs (which read and write it)."""
        return self.graphs.state(key, make) if self.uses_graphs(input_ids) else make()

    merge_lora_for_inference = False  # see `inference()`; the trainers set it from their config

    @contextlib.contextmanager
    def inference(self):
        """Rollouts and evaluation; their forwards accumulate residual sums in place (`residual_sums_in_place`,
        rl_dlm/models/fused_projections.py). With `merge_lora_for_inference`, the LoRA update is folded into the
        base weights while sampling (no adapter matmuls at each denoising step) and the base weights are restored
        bit for bit afterwards, so training and resumption never see merge/unmerge rounding drift. It costs a
        copy of the adapted weights, so it is meant for small models on one process."""
        self._sampling += 1
        try:
            with residual_sums_in_place():  # rl_dlm/models/fused_projections.py: scoring passes keep their adds
                if not self.merge_lora_for_inference or not hasattr(self.model, "merge_adapter"):
                    yield self
                    return
                saved = {n: p.detach().clone() for n, p in self.model.named_parameters() if ".base_layer." in n}
                self.model.merge_adapter()
                try:
                    yield self
                finally:
                    self.model.unmerge_adapter()
                    with torch.no_grad():
                        for n, p in self.model.named_parameters():
                            if n in saved:
                                p.copy_(saved[n])
        finally:
            self._sampling -= 1

    @contextlib.contextmanager
    def reference(self):
        """The reference policy: the same weights with the LoRA adapters disabled."""
        self._adapters_off += 1
        try:
            if hasattr(self.model, "disable_adapter"):
                with self.model.disable_adapter():
                    yield self
            else:
                yield self
        finally:
            self._adapters_off -= 1

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def add_lora(model: nn.Module, lora: LoraSettings) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    names = [n for n, _ in model.named_modules()]
    pattern = lora.target_modules if isinstance(lora.target_modules, str) else None
    if pattern is not None and not any(re.fullmatch(pattern, n) for n in names):
        raise ValueError(f"lora.target_modules {pattern!r} matches no module of {type(model).__name__}")
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, bias="none")
    return get_peft_model(model, config)


def disable_dropout(model: nn.Module) -> None:
    """TRL's `disable_dropout_in_model`: every `nn.Dropout` (peft's LoRA dropout included) gets p = 0. Also the
    attention dropout that the native LLaDA/Dream and transformers models pass to SDPA from their config (a
    number, not a module). With no dropout left, the old log-probs (no grad) and the update's log-probs come
    from the same function, so the importance ratio is exactly 1 at the first inner step."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for holder in (module, getattr(module, "config", None)):
            if isinstance(getattr(holder, "attention_dropout", None), float):
                holder.attention_dropout = 0.0


def read_config(name_or_path: str | Path) -> dict:
    """config.json of a local directory or hub id, as a dict (no model code is imported)."""
    from transformers import PreTrainedConfig

    path = Path(name_or_path)
    if path.exists() and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json; is it a model directory?")
    try:
        return PreTrainedConfig.get_config_dict(str(name_or_path))[0]
    except OSError as exc:  # not local, and the hub has no such id or cannot be reached: say both
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(f"model {str(name_or_path)!r} is not a local directory (from {Path.cwd()}) and could not be "
                      f"loaded from the hub: {first}") from exc


def _resolve(dotted: str):
    import importlib

    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def load_tokenizer(name_or_path: str | Path, spec: FamilySpec | None, trust_remote_code: bool = False):
    """The checkpoint's tokenizer. Dream/DiffuCoder ship a remote-code tokenizer class over Qwen2's files; unless
    remote code is trusted, the same files are read with transformers' own Qwen2 tokenizer."""
    from transformers import AutoTokenizer

    remote = False
    try:
        from transformers.utils import cached_file

        tok_config = cached_file(str(name_or_path), "tokenizer_config.json", _raise_exceptions_for_missing_entries=False)
        if tok_config:
            import json

            remote = "auto_map" in json.loads(Path(tok_config).read_text())
    except OSError:
        pass
    if remote and not trust_remote_code:
        if spec is None or spec.tokenizer_class is None:
            raise ValueError(f"{name_or_path}: the tokenizer is remote code; pass trust_remote_code=True or a "
                             "tokenizer")
        return _resolve(spec.tokenizer_class).from_pretrained(str(name_or_path))
    return AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)


def _model_class(config: dict, spec: FamilySpec | None, trust_remote_code: bool, family: Family | None):
    """Native class for a known family; transformers' own class for a transformers model type; remote code only
    when the user asks for it."""
    from transformers import CONFIG_MAPPING, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    if spec is not None:
        return _resolve(spec.model_class), {}
    model_type = config.get("model_type")
    if model_type in CONFIG_MAPPING:
        archs = " ".join(config.get("architectures") or [])
        return (AutoModelForMaskedLM if "MaskedLM" in archs else AutoModelForCausalLM), {}
    if not trust_remote_code:
        raise ValueError(f"unknown model family {model_type!r} (architectures {config.get('architectures')}): "
                         "rl_dlm has native LLaDA and Dream/DiffuCoder; to run the checkpoint's own code pass "
                         "trust_remote_code=True and family=Family(...) stating its mask id and logit alignment")
    if family is None:
        raise ValueError(f"model family {model_type!r} is loaded with remote code: pass family=Family(name, mask_id, "
                         "stop_id, pad_id, shift_logits) so samplers and estimators know its conventions")
    return AutoModel, {"trust_remote_code": True}


def _quantization(load_in_4bit: bool, device, dtype: torch.dtype) -> dict:
    if not load_in_4bit:
        return {}
    if torch.device(device).type != "cuda":
        raise ValueError(f"load_in_4bit needs a CUDA device (bitsandbytes 4-bit kernels); got device={device!r}. "
                         "Load in bf16/fp32 on CPU instead")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ImportError("load_in_4bit needs bitsandbytes: pip install bitsandbytes") from exc
    from transformers import BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                           bnb_4bit_use_double_quant=True)
    return {"quantization_config": q, "device_map": {"": torch.device(device).index or 0}}


def load_policy(name_or_path: str | Path | nn.Module, tokenizer=None, lora: LoraSettings | None = None,
                dtype: torch.dtype | str = "float32", device: str | torch.device = "cpu", *,
                family: Family | None = None, trust_remote_code: bool = False, load_in_4bit: bool = False,
                check_alignment: bool = True, fused_projections: bool = True,
                compiled_elementwise: bool = False, compiled_blocks: bool = False) -> Policy:
    """Loads a dLLM (local directory or hub id, or takes a model), picks and checks its family, adds LoRA.

    The family comes from config.json (`model_type` / `architectures` / `auto_map`): LLaDA and Dream/DiffuCoder
    load into the native classes without remote code. A transformers model type loads with transformers' class
    (it must be bidirectional, `is_causal=False`). Anything else needs `trust_remote_code=True` and `family`.
    `load_in_4bit` quantises the base weights with bitsandbytes (CUDA only). `check_alignment` runs
    `probe_alignment` on a chat-formatted text: it raises only when the opposite alignment is clearly better.
    `fused_projections` packs the native models' q/k/v and gate/up weights so each group runs as one GEMM, and
    gives LoRA adapters a path with fewer passes (rl_dlm/models/fused_projections.py: same names, same LoRA
    targets, outputs equal to rounding). `compiled_elementwise` runs the native models' RMSNorm, RoPE and
    SiLU·mul as fused compiled kernels (rl_dlm/models/elementwise.py: outputs equal to bf16 rounding).
    `compiled_blocks` runs each block's pass under autograd as one compiled graph, and the compiled element-wise
    kernels everywhere (rl_dlm/models/compiled_blocks.py: outputs equal to bf16 rounding).
    """
    import rl_dlm.models.dream  # noqa: F401  (registers the native classes with the Auto API)
    import rl_dlm.models.llada  # noqa: F401

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    for knob, on in (("compiled_elementwise", compiled_elementwise), ("compiled_blocks", compiled_blocks)):
        if on:
            check_compilable(device, knob)  # before the model loads
    if isinstance(name_or_path, nn.Module):
        model = name_or_path
        if tokenizer is None:
            raise ValueError("pass processing_class (a tokenizer) when model is an nn.Module")
        model.to(device)
    else:
        config = read_config(name_or_path)
        spec = spec_from_config(config)
        cls, extra = _model_class(config, spec, trust_remote_code, family)
        quant = _quantization(load_in_4bit, device, dtype)
        model = cls.from_pretrained(str(name_or_path), dtype=dtype, **extra, **quant)
        if not quant:
            model.to(device)
        tokenizer = tokenizer or load_tokenizer(name_or_path, spec, trust_remote_code)
    if fused_projections:
        fuse_projections(model)  # on the final device: a later move onto another one unpacks them again
    compile_elementwise(model, enabled=compiled_elementwise)
    if compiled_blocks:
        compile_blocks(model)
    family = family or family_of(model, tokenizer)
    check_family(model, family)
    if tokenizer.mask_token_id is None:  # LLaDA's tokenizer does not set it; downstream text tools need it
        tokenizer.mask_token = tokenizer.convert_ids_to_tokens(family.mask_id)
    if family.chat_template is not None:
        tokenizer.chat_template = family.chat_template
    model.eval()
    policy = Policy(model, tokenizer, family)
    if check_alignment:
        probe_alignment(policy, _probe_ids(tokenizer))
    if lora is not None:
        policy.model = add_lora(model, lora)
    return policy


def _probe_ids(tokenizer) -> Tensor:
    chat = [{"role": "user", "content": "What is 12 plus 30?"}, {"role": "assistant", "content": "42"},
            {"role": "user", "content": "And 5 times 6?"}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    except Exception:  # no chat template: plain text still probes the alignment
        text = "What is 12 plus 30? The answer is 42. And 5 times 6? The answer is 30."
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
