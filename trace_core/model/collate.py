"""Turning items into Qwen2-VL model inputs: chat prompt, image tokens, responses, labels.

The Qwen2-VL processor class cannot be built here without torchvision, so the tokenizer
and the (PIL) image processor are used directly, exactly as the processor would: each
``<|image_pad|>`` of the chat template (one per image, in order; an item may hold several
images interleaved with text) is expanded to ``grid_t*grid_h*grid_w / merge**2`` copies of
its image, and ``mm_token_type_ids`` marks them (transformers 5 needs it for M-RoPE).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from trace_core.data.files import IMAGE_ERRORS, open_record_file
from trace_core.io import DataError
from trace_core.model.pooling import response_pool_index
from trace_core.model.prompts import image_paths, messages
from trace_core.model.tokens import IMAGE_PAD, SpecialIds
from trace_core.types import EncodeItem, Segment, Side, TrainSample

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Processors:
    """Tokenizer + image processor + the ids and sizes the input code needs.

    ``prompt_cache`` holds the chat template's rendering per prompt shape (see :func:`render_prompt`).
    """

    tokenizer: Any
    image_processor: Any
    ids: SpecialIds
    emb_token: str
    max_length: int
    merge_size: int
    prompt_cache: dict[Any, tuple[str, ...] | None] = field(default_factory=dict, compare=False, repr=False)


#: Stand-in for the i-th text part when a prompt shape is rendered once: edge spaces, a newline and
#: markup characters, so a template that trims, escapes or rewrites text fails the verbatim check.
_PROBE = " <&'\"\n\x00{}\x00> "
Messages = list[dict[str, Any]]


def _render(tokenizer: Any, msgs: Messages) -> str:
    return str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))


def _skeleton(tokenizer: Any, msgs: Messages) -> tuple[str, ...] | None:
    """The template's rendering of ``msgs`` cut at its user text parts, or None if it does not copy text verbatim.

    Each user text part is rendered as a distinct probe; the pieces between the probes are the
    fixed text of this prompt shape (system prompt, role markers, image slots).
    """
    content = msgs[1]["content"]
    probes = [_PROBE.format(i) for i in range(sum(part["type"] == "text" for part in content))]
    it = iter(probes)
    probed = [{**part, "text": next(it)} if part["type"] == "text" else part for part in content]
    probe_msgs = [msgs[0], {**msgs[1], "content": probed}]
    rendered = _render(tokenizer, probe_msgs)
    pieces, rest = [], rendered
    for probe in probes:
        if rendered.count(probe) != 1 or probe not in rest:
            return None
        head, rest = rest.split(probe, 1)
        pieces.append(head)
    return (*pieces, rest)


def render_prompt(proc: Processors, msgs: Messages) -> str:
    """``apply_chat_template(msgs, add_generation_prompt=True)`` as text, rendered once per prompt shape.

    A shape is the system prompt and the kinds of the user parts in order; the user texts are
    spliced into the shape's cached rendering. Falls back to rendering (same result) for
    templates that do not copy text verbatim, for an empty text part, and for other message layouts.
    """
    if len(msgs) != 2 or msgs[0]["role"] != "system" or not isinstance(msgs[1]["content"], list):
        return _render(proc.tokenizer, msgs)
    content = msgs[1]["content"]
    texts = [str(part["text"]) for part in content if part["type"] == "text"]
    if not all(texts):
        return _render(proc.tokenizer, msgs)
    key = (msgs[0]["content"], tuple(part["type"] for part in content))
    if key not in proc.prompt_cache:
        proc.prompt_cache[key] = _skeleton(proc.tokenizer, msgs)
    pieces = proc.prompt_cache[key]
    if pieces is None:
        return _render(proc.tokenizer, msgs)
    return pieces[0] + "".join(text + piece for text, piece in zip(texts, pieces[1:], strict=True))


def load_images(items: Sequence[EncodeItem], image_root: Path) -> list[Image.Image]:
    """Open every image of the items, in item order (and in order within an item), as RGB.

    Raises:
        DataError: naming the image and the item's record, for a path that leaves
            ``image_root`` (see :mod:`trace_core.data.files`) or an image that does not decode.
    """
    out = []
    for item in items:
        for rel in image_paths(item):
            path = open_record_file(image_root, rel, item.id)
            try:
                with Image.open(path) as im:
                    out.append(im.convert("RGB"))
            except IMAGE_ERRORS as err:
                raise DataError(path, f"record {item.id}", f"image does not decode ({err})") from None
    return out


def expand_image_pads(rendered: str, counts: Sequence[int]) -> str:
    """Replace the i-th ``<|image_pad|>`` of a rendered prompt by ``counts[i]`` copies."""
    pieces = rendered.split(IMAGE_PAD)
    if len(pieces) - 1 != len(counts):
        raise ValueError(f"prompt has {len(pieces) - 1} image slots for {len(counts)} images")
    return pieces[0] + "".join(IMAGE_PAD * n + piece for n, piece in zip(counts, pieces[1:], strict=True))


def _prompt_ids(
    proc: Processors,
    item: EncodeItem,
    side: Side,
    counts: Sequence[int],
    text: str | None,
    segments: tuple[Segment, ...] | None = None,
) -> list[int]:
    return tokenize(proc, [prompt_text(proc, item, side, counts, text, segments)])[0]


def prompt_text(
    proc: Processors,
    item: EncodeItem,
    side: Side,
    counts: Sequence[int],
    text: str | None = None,
    segments: tuple[Segment, ...] | None = None,
) -> str:
    """The item's prompt as text (``text``/``segments`` replace the item's), image slots expanded to ``counts``."""
    return expand_image_pads(render_prompt(proc, messages(item, side, proc.emb_token, text, segments)), counts)


def tokenize(proc: Processors, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (no special tokens added), in one tokenizer call."""
    return [list(ids) for ids in proc.tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []


def fit_prompt(proc: Processors, item: EncodeItem, side: Side, counts: Sequence[int], n_response: int) -> list[int]:
    """Prompt ids of an item, its text cut so that prompt + response fit ``max_length``.

    Args:
        proc: tokenizer/image processor bundle.
        item: what to encode.
        side: ``query`` or ``candidate``.
        counts: image tokens of each of the item's images, in order.
        n_response: tokens of the response that follows the prompt.
    """
    ids = _prompt_ids(proc, item, side, counts, None)
    overflow = len(ids) + n_response - proc.max_length
    if overflow <= 0:
        return ids
    if item.segments:
        return _fit_segments(proc, item, side, counts, n_response, overflow)
    text_ids = proc.tokenizer(item.text or "", add_special_tokens=False)["input_ids"]
    keep = len(text_ids) - overflow
    if keep <= 0:
        raise ValueError(f"item {item.id}: prompt without text already exceeds max_length {proc.max_length}")
    log.debug("item %s: text cut to %d tokens", item.id, keep)
    ids = _prompt_ids(proc, item, side, counts, proc.tokenizer.decode(text_ids[:keep]))
    return ids[: proc.max_length - n_response] if len(ids) + n_response > proc.max_length else ids


def cut_context(proc: Processors, segments: tuple[Segment, ...], overflow: int) -> tuple[Segment, ...]:
    """Drop ``overflow`` tokens of context text, oldest first, keeping the first text (the instruction)."""
    out = list(segments)
    text_at = [i for i, (kind, _) in enumerate(out) if kind == "text"]
    for i in text_at[1:]:
        if overflow <= 0:
            break
        ids = proc.tokenizer(out[i][1], add_special_tokens=False)["input_ids"]
        drop = min(len(ids), overflow)
        out[i] = ("text", proc.tokenizer.decode(ids[drop:]))
        overflow -= drop
    return tuple(out)


def _fit_segments(
    proc: Processors, item: EncodeItem, side: Side, counts: Sequence[int], n_response: int, overflow: int
) -> list[int]:
    segments = item.segments
    for _ in range(3):  # decode/encode round trips may leave a token or two over
        segments = cut_context(proc, segments, overflow)
        ids = _prompt_ids(proc, item, side, counts, None, segments)
        overflow = len(ids) + n_response - proc.max_length
        if overflow <= 0:
            log.debug("item %s: context text cut to fit %d tokens", item.id, proc.max_length)
            return ids
    raise ValueError(
        f"item {item.id}: {len(counts)} images and the instruction alone exceed max_length {proc.max_length} "
        "(raise model.max_length or lower model.max_pixels)"
    )


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = [(r + [value] * (width - len(r))) if side == "right" else ([value] * (width - len(r)) + r) for r in rows]
    return torch.tensor(padded, dtype=torch.long)


def encode_items(
    proc: Processors,
    items: Sequence[EncodeItem],
    sides: Sequence[Side],
    responses: Sequence[str | None],
    label_rows: Sequence[bool],
    image_root: Path,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Model inputs for a batch of items.

    Args:
        proc: tokenizer/image processor bundle.
        items: what to encode.
        sides: ``query`` or ``candidate`` per item (selects the system prompt).
        responses: assistant text appended after the generation prompt (None: prompt only).
        label_rows: rows whose response tokens get generation labels.
        image_root: root the items' image paths are relative to.
        padding_side: ``right`` for training, ``left`` for decoding.

    Returns:
        ``input_ids``/``attention_mask``/``mm_token_type_ids``/``labels`` (batch, seq), ``pool_index``
        (batch,) = position of the state that predicts the response's first ``<|emb|>`` (-1 if none) and, when
        any item has an image, ``pixel_values`` (patches, C*T*P*P) and ``image_grid_thw`` (images, 3).
    """
    out: dict[str, torch.Tensor] = {}
    images = load_images(items, image_root)
    n_tokens: list[int] = []
    if images:
        vis = proc.image_processor(images=images, return_tensors="pt")
        out["pixel_values"], out["image_grid_thw"] = vis["pixel_values"], vis["image_grid_thw"]
        n_tokens = [int(g.prod()) // proc.merge_size**2 for g in vis["image_grid_thw"]]
    rows, labels, pool = [], [], []
    img_iter = iter(n_tokens)
    counts = [[next(img_iter) for _ in image_paths(item)] for item in items]
    prompts = tokenize(proc, [prompt_text(proc, i, s, c) for i, s, c in zip(items, sides, counts, strict=True)])
    distinct = list(dict.fromkeys(r for r in responses if r))
    resp_ids_of: dict[str | None, list[int]] = dict(zip(distinct, tokenize(proc, distinct), strict=True))
    for i, (item, side, resp, labelled) in enumerate(zip(items, sides, responses, label_rows, strict=True)):
        resp_ids, prompt = resp_ids_of.get(resp, []), prompts[i]
        if len(prompt) + len(resp_ids) > proc.max_length:  # too long: cut the item's text
            prompt = fit_prompt(proc, item, side, counts[i], len(resp_ids))
        rows.append(prompt + resp_ids)
        labels.append([IGNORE_INDEX] * len(prompt) + (resp_ids if labelled else [IGNORE_INDEX] * len(resp_ids)))
        pool.append(response_pool_index(len(prompt), resp_ids, proc.ids.emb))
    width = max(len(r) for r in rows)
    shift = [width - len(r) if padding_side == "left" else 0 for r in rows]
    out["pool_index"] = torch.tensor([p + s if p >= 0 else -1 for p, s in zip(pool, shift, strict=True)])
    out["input_ids"] = _pad(rows, proc.ids.pad, padding_side)
    out["attention_mask"] = _pad([[1] * len(r) for r in rows], 0, padding_side)
    out["labels"] = _pad(labels, IGNORE_INDEX, padding_side)
    out["mm_token_type_ids"] = (out["input_ids"] == proc.ids.image_pad).long() * out["attention_mask"]
    return out


@dataclass
class TrainCollator:
    """Batch of training samples -> one forward's inputs over [queries; positives; negatives; own chains].

    Query rows are teacher-forced with their target (labelled); candidate rows end with
    ``<|emb|>`` (not labelled). Up to ``hard_negatives`` negatives per sample are appended
    as extra candidate rows. Samples with an ``embed_target`` (self-chain training) add one
    unlabelled query row each, prompt + ``embed_target``, after the candidates; then
    ``query_rows`` (queries,) names the row whose pooled state is each query's InfoNCE
    embedding (its own-chain row, else its gold row) and ``own_rows`` counts the added rows.
    Without any ``embed_target`` the batch is exactly the plain one (neither key is set).
    """

    proc: Processors
    image_root: Path
    hard_negatives: int = 0

    def __call__(self, samples: list[TrainSample]) -> dict[str, Any]:
        """Collate samples (the Trainer's ``data_collator``)."""
        negs = [n for s in samples for n in s.negatives[: self.hard_negatives]]
        own = [(i, s.query, s.embed_target) for i, s in enumerate(samples) if s.embed_target is not None]
        items = [s.query for s in samples] + [s.positive for s in samples] + negs + [q for _, q, _ in own]
        n_q, n_own = len(samples), len(own)
        n_cand = len(items) - n_q - n_own
        query: list[Side] = ["query"]
        candidate: list[Side] = ["candidate"]
        sides = query * n_q + candidate * n_cand + query * n_own
        responses = [s.target for s in samples] + [self.proc.emb_token] * n_cand
        responses += [target for _, _, target in own]
        labelled = [True] * n_q + [False] * (len(items) - n_q)
        batch: dict[str, Any] = encode_items(self.proc, items, sides, responses, labelled, self.image_root)
        batch["n_queries"] = n_q
        if own:
            rows = list(range(n_q))
            for j, (i, _, _) in enumerate(own):
                rows[i] = n_q + n_cand + j
            batch["query_rows"] = torch.tensor(rows, dtype=torch.long)
            batch["own_rows"] = n_own
        return batch
