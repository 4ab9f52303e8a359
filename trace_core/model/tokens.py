"""Special tokens: the ``<|emb|>`` token and an offline Qwen2-VL-style tokenizer for the tiny preset.

The tiny preset has no pretrained tokenizer, so one is trained here with the ``tokenizers``
library (byte-level BPE, so every string round-trips) on the texts it will see, and given
the Qwen2-VL special tokens and chat template so the same prompt code serves real
checkpoints and the tiny model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
QWEN2VL_SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

# The chat template shipped with Qwen2-VL-*-Instruct (image and text content parts).
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the model code needs."""

    emb: int
    image_pad: int
    vision_start: int
    vision_end: int
    pad: int
    im_end: int


def special_ids(tokenizer: Any, emb_token: str) -> SpecialIds:
    """Look up the ids of the special tokens; fail loudly if one is missing."""
    ids = {}
    for name, tok in (
        ("emb", emb_token),
        ("image_pad", IMAGE_PAD),
        ("vision_start", VISION_START),
        ("vision_end", VISION_END),
        ("im_end", IM_END),
    ):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer lacks the special token {tok}")
        ids[name] = int(tid)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    return SpecialIds(pad=int(pad), **ids)


def add_emb_token(tokenizer: Any, emb_token: str) -> bool:
    """Add ``emb_token`` as a special token if absent; return whether it was added."""
    if emb_token in tokenizer.get_vocab():
        return False
    tokenizer.add_special_tokens({"additional_special_tokens": [emb_token]}, replace_extra_special_tokens=False)
    return True


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int, emb_token: str) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` with the Qwen2-VL special tokens and ``emb_token``.

    Args:
        texts: training texts (queries, candidates, targets, prompts).
        vocab_size: target vocabulary size including special tokens.
        emb_token: the retrieval token, added as a special token.

    Returns:
        A ``PreTrainedTokenizerFast`` with the Qwen2-VL chat template, pad = ``<|endoftext|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [*QWEN2VL_SPECIAL_TOKENS, emb_token]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=specials[1:],
    )
    fast.chat_template = QWEN2VL_CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast
