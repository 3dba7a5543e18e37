"""The embedded model's tokenizer: a small word-level vocabulary with LLaDA's special-token names.

The real LLaDA tokenizer has 126k entries; the embedded model only ever sees the synthetic tasks, so a
word-level vocabulary (whole words, single digits, single symbols, whitespace kept as tokens) is enough and
keeps sequences short. The special tokens reuse LLaDA's names (`<|mdm_mask|>`, `<|eot_id|>`, `<|endoftext|>`
as EOS *and* pad, header ids) so the same family adapter handles both.

Built with `tokenizers`, wrapped in `PreTrainedTokenizerFast`, saved with `save_pretrained`, and loaded back
with `AutoTokenizer.from_pretrained(local_dir)` — the same path as a hub tokenizer.

    from rl_dlm.data.tokenizer import build_tokenizer
    tok = build_tokenizer(["<reasoning>\\n3*5=15\\n</reasoning>"])
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BOS, EOS, MASK, UNK = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|unk|>"
HEADER_START, HEADER_END, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [EOS, BOS, MASK, UNK, HEADER_START, HEADER_END, EOT]
TAGS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>"]

# One token per special, tag, word, digit, whitespace character or symbol. Digits are split so numbers
# are spelled digit by digit, which is what lets a tiny model learn carries.
PIECES = r"<\|[a-z_]+\|>|</?[a-z]+>|[A-Za-z]+|\d|\s|[^\sA-Za-z\d]"

# LLaDA-Instruct's chat format, but the generation prompt is added only when asked for (the shipped
# LLaDA template appends it unconditionally; rl_dlm/models/families.py).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_BASE_VOCAB = [chr(c) for c in range(32, 127)] + ["\n", "\t"] + [chr(c) * 1 for c in range(ord("a"), ord("z") + 1)]


def build_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary covers every printable ASCII character plus the words of `corpus`."""
    import re

    pattern = re.compile(PIECES)
    vocab: dict[str, int] = {}
    for piece in [*SPECIAL_TOKENS, *TAGS, *_BASE_VOCAB]:
        vocab.setdefault(piece, len(vocab))
    for text in corpus:
        for piece in pattern.findall(text):
            vocab.setdefault(piece, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PIECES), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        mask_token=MASK,
        unk_token=UNK,
        additional_special_tokens=[HEADER_START, HEADER_END, EOT],
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
