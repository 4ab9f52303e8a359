"""Full-shaped local checkpoints made offline: the Hugging Face layout of Qwen2(.5)-VL-Instruct at toy size.

:func:`write_fixture_checkpoint` writes a folder that looks like a hub snapshot of
``Qwen/Qwen2.5-VL-*-Instruct`` (or ``Qwen2-VL``): ``config.json`` naming the real
architecture class, ``model.safetensors`` with random weights, ``generation_config.json``,
a Qwen2 byte-level BPE tokenizer (``tokenizer.json`` + ``tokenizer_config.json`` with the
Qwen chat template, the ``<|im_start|>``/``<|vision_start|>``/``<|image_pad|>``... special
tokens placed after the BPE vocabulary as in Qwen's, and the embedding matrix padded past the
tokenizer as Qwen pads it), ``preprocessor_config.json`` and ``chat_template.json``. Only the
sizes differ (``model.tiny``), so the full preset loads it through
:func:`trace_core.model.backbone.load_pretrained` by pointing ``model.name_or_path`` at it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from trace_core.config import TinyModelParams
from trace_core.model.backbone import FAMILIES, model_class, mrope_section
from trace_core.model.prompts import all_prompt_texts
from trace_core.model.tokens import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_PAD,
    QWEN2VL_CHAT_TEMPLATE,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)

log = logging.getLogger(__name__)

#: Qwen2(.5)-VL's added tokens in their vocabulary order (all after the BPE merges' tokens).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    VISION_START,
    VISION_END,
    "<|vision_pad|>",
    IMAGE_PAD,
    VIDEO_PAD,
)
#: Qwen's non-special added tokens (tool calls, fill-in-the-middle).
QWEN_PLAIN_ADDED: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
#: the processor class the hub's ``preprocessor_config.json`` names, per model class
PROCESSOR_CLASS = {
    "Qwen2VLForConditionalGeneration": "Qwen2VLProcessor",
    "Qwen2_5_VLForConditionalGeneration": "Qwen2_5_VLProcessor",
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PATCH, MERGE, TEMPORAL = 14, 2, 2
#: Qwen pads the embedding matrix past the tokenizer to a multiple of this
VOCAB_PAD_MULTIPLE = 64

#: a few lines of text so the toy BPE has merges beyond the prompts
BASE_CORPUS = (
    "a photo of a red circle left of a blue square on a white background",
    "find an image that matches the description and the caption of the picture",
    "what is shown in this image? the answer is a small green triangle",
    "retrieve a wikipedia passage about the object in the picture",
    "The quick brown fox jumps over the lazy dog. 0123456789",
)


def qwen_tokenizer(texts: Iterable[str], bpe_vocab_size: int) -> Any:
    """A ``Qwen2Tokenizer`` whose byte-level BPE is trained on ``texts``, with Qwen's added tokens.

    Args:
        texts: training texts (the prompts and :data:`BASE_CORPUS` are always included).
        bpe_vocab_size: size of the BPE vocabulary before the added tokens.

    Returns:
        The tokenizer: eos ``<|im_end|>``, pad ``<|endoftext|>``, Qwen-VL chat template.
    """
    from tokenizers import AddedToken, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    corpus = [*BASE_CORPUS, *all_prompt_texts("<|emb|>"), *texts]
    shell = Qwen2Tokenizer()  # Qwen's normalizer and pre-tokenizer; the BPE model is trained below
    backend = shell.backend_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    vocab = {k: v for k, v in model["vocab"].items() if k != ENDOFTEXT}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    qwen2: Any = Qwen2Tokenizer  # typed for string merges; the BPE model takes pairs
    tok = qwen2(vocab=vocab, merges=merges, unk_token=None, errors="replace")
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_PLAIN_ADDED])
    tok.add_special_tokens(
        {"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])}, replace_extra_special_tokens=False
    )
    tok.eos_token = IM_END
    tok.pad_token = ENDOFTEXT
    tok.chat_template = QWEN2VL_CHAT_TEMPLATE
    tok.model_max_length = 32768
    return tok


def padded_vocab(n_tokens: int) -> int:
    """Embedding rows for ``n_tokens``: the next multiple of :data:`VOCAB_PAD_MULTIPLE` (as Qwen's)."""
    return -(-n_tokens // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE


def text_config(tiny: TinyModelParams, tokenizer: Any) -> dict[str, Any]:
    """The ``text_config`` of a toy Qwen2(.5)-VL (sizes from ``tiny``, ids from ``tokenizer``)."""
    return {
        "vocab_size": max(padded_vocab(len(tokenizer)), tiny.min_vocab_size),
        "hidden_size": tiny.hidden_size,
        "intermediate_size": tiny.intermediate_size,
        "num_hidden_layers": tiny.num_layers,
        "num_attention_heads": tiny.num_heads,
        "num_key_value_heads": tiny.num_kv_heads,
        "max_position_embeddings": tiny.max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": tiny.rope_theta,
            "mrope_section": mrope_section(tiny.hidden_size // tiny.num_heads),
        },
        "bos_token_id": tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        "eos_token_id": tokenizer.convert_tokens_to_ids(IM_END),
        "pad_token_id": tokenizer.convert_tokens_to_ids(ENDOFTEXT),
    }


def vision_config(class_name: str, tiny: TinyModelParams) -> dict[str, Any]:
    """The ``vision_config`` of the family's vision tower at toy size (patch 14, merge 2 as the real ones)."""
    common = {"depth": tiny.vision_depth, "num_heads": tiny.vision_num_heads, "patch_size": PATCH}
    common |= {"spatial_merge_size": MERGE, "temporal_patch_size": TEMPORAL, "in_channels": 3}
    if class_name == "Qwen2_5_VLForConditionalGeneration":
        return common | {
            "hidden_size": tiny.vision_embed_dim,
            "intermediate_size": tiny.vision_embed_dim * tiny.vision_mlp_ratio,
            "out_hidden_size": tiny.hidden_size,
            "window_size": PATCH * MERGE * 2,
            "fullatt_block_indexes": [tiny.vision_depth - 1],
            "tokens_per_second": 2,
        }
    return common | {
        "embed_dim": tiny.vision_embed_dim,
        "hidden_size": tiny.hidden_size,
        "mlp_ratio": tiny.vision_mlp_ratio,
    }


def model_config(class_name: str, tiny: TinyModelParams, tokenizer: Any) -> Any:
    """The top-level config of ``class_name`` (Qwen2VL or Qwen2_5_VL) with the tokenizer's vision ids."""
    import transformers

    config_cls = getattr(transformers, class_name.replace("ForConditionalGeneration", "Config"))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END)}
    return config_cls(
        text_config=text_config(tiny, tokenizer),
        vision_config=vision_config(class_name, tiny),
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=False,
    )


def preprocessor_config(class_name: str) -> dict[str, Any]:
    """``preprocessor_config.json`` as the hub ships it (CLIP mean/std, patch 14, merge 2)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": PROCESSOR_CLASS[class_name],
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "rescale_factor": 1 / 255,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": PATCH,
        "temporal_patch_size": TEMPORAL,
        "merge_size": MERGE,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_fixture_checkpoint(
    out_dir: Path, family: str, tiny: TinyModelParams, seed: int = 0, texts: Iterable[str] = ()
) -> Path:
    """Write a toy checkpoint of ``family`` (a key of :data:`FAMILIES` other than ``tiny``) to ``out_dir``.

    The folder is written to ``<out_dir>.tmp`` and renamed when complete.

    Args:
        out_dir: the checkpoint folder (replaced if it exists).
        family: e.g. ``qwen2.5-vl-7b`` or ``qwen2-vl-2b``; only its architecture class is used.
        tiny: the toy sizes (``tiny.vocab_size`` is the BPE vocabulary before Qwen's added tokens).
        seed: seed of the random weights.
        texts: extra texts for the tokenizer's BPE merges (e.g. the training data).

    Returns:
        ``out_dir``.
    """
    import shutil

    if family not in FAMILIES or FAMILIES[family].hub_id is None:
        known = ", ".join(k for k, f in FAMILIES.items() if f.hub_id)
        raise ValueError(f"fixture checkpoint: family '{family}' is not a hub family; known: {known}")
    class_name = FAMILIES[family].model_class
    tok = qwen_tokenizer(texts, tiny.vocab_size)
    torch.manual_seed(seed)
    model = model_class(class_name)(model_config(class_name, tiny, tok))
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id = tok.convert_tokens_to_ids(ENDOFTEXT), tok.pad_token_id
    gen.eos_token_id = [tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)]
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _write_json(tmp / "preprocessor_config.json", preprocessor_config(class_name))
    _write_json(tmp / "chat_template.json", {"chat_template": QWEN2VL_CHAT_TEMPLATE})
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("wrote a toy %s checkpoint (%s, vocab %d) to %s", family, class_name, len(tok), out_dir)
    return out_dir
