"""Teacher on a local Qwen2-VL / Qwen2.5-VL checkpoint through ``transformers`` (batched).

The checkpoint directory (``teacher.model``) holds the model, its tokenizer and its image
processor. Prompts use the Qwen chat format; each image becomes
``grid_t*grid_h*grid_w / merge**2`` ``<|image_pad|>`` tokens and ``mm_token_type_ids`` marks
them (transformers 5 needs it). Batches are left-padded and decoded greedily unless
``teacher.temperature`` > 0. A batch that raises becomes error rows for its requests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from trace_core.config import TeacherParams
from trace_core.cot.prompts import TeacherRequest, TeacherResult
from trace_core.data.files import IMAGE_ERRORS

log = logging.getLogger(__name__)
MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}
IMAGE_BLOCK = "<|vision_start|>{pads}<|vision_end|>"


def chat_prompt(system: str, user: str, n_image_tokens: Sequence[int]) -> str:
    """A Qwen chat prompt with one image block per image (in order), ending at the assistant turn."""
    images = "".join(IMAGE_BLOCK.format(pads="<|image_pad|>" * n) for n in n_image_tokens)
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{images}{user}<|im_end|>\n<|im_start|>assistant\n"
    )


def load_images(requests: Sequence[TeacherRequest]) -> tuple[dict[str, list[Any]], dict[str, TeacherResult]]:
    """Open each request's images (query, then target) as RGB; an unreadable one makes an error result."""
    from PIL import Image

    images: dict[str, list[Any]] = {}
    failed: dict[str, TeacherResult] = {}
    for r in requests:
        try:
            opened = []
            for path in r.images:
                with Image.open(path) as im:
                    opened.append(im.convert("RGB"))
            images[r.id] = opened
        except IMAGE_ERRORS as err:
            failed[r.id] = TeacherResult(r.id, None, f"cannot read image {path} (record {r.id}): {err}")
    return images, failed


def _device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersTeacher:
    """Batched generation with a local Qwen2(.5)-VL checkpoint."""

    def __init__(self, cfg: TeacherParams, seed: int) -> None:
        import torch
        import transformers
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        if not cfg.model:
            raise ValueError("transformers teacher needs teacher.model (a local checkpoint directory)")
        conf = AutoConfig.from_pretrained(cfg.model)
        if conf.model_type not in MODEL_CLASSES:
            raise ValueError(f"{cfg.model}: model_type {conf.model_type!r} is not Qwen2-VL or Qwen2.5-VL")
        dtype: Any = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        self.cfg, self.device = cfg, _device(cfg.device)
        cls = getattr(transformers, MODEL_CLASSES[conf.model_type])
        self.model = cls.from_pretrained(cfg.model, dtype=dtype).to(self.device).eval()
        self.tok = AutoTokenizer.from_pretrained(cfg.model)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.improc = Qwen2VLImageProcessorPil.from_pretrained(
            cfg.model, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels
        )
        self.merge = int(conf.vision_config.spatial_merge_size)
        self.image_token_id = int(conf.image_token_id)
        self.name = f"transformers:{cfg.model}"
        torch.manual_seed(seed)

    def _inputs(self, batch: Sequence[TeacherRequest], images: dict[str, list[Any]]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        counts: Iterator[int] = iter(())
        pics = [im for r in batch for im in images.get(r.id, [])]
        if pics:
            iv = self.improc(images=pics, return_tensors="pt")
            extra = {"pixel_values": iv["pixel_values"], "image_grid_thw": iv["image_grid_thw"]}
            counts = iter([int(g.prod()) // self.merge**2 for g in iv["image_grid_thw"]])
        prompts = [chat_prompt(r.system, r.user, [next(counts) for _ in images.get(r.id, [])]) for r in batch]
        enc = self.tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        enc["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).long()
        return {k: v.to(self.device) for k, v in {**enc, **extra}.items()}

    def _batch(self, batch: Sequence[TeacherRequest], images: dict[str, list[Any]]) -> list[str]:
        import torch

        inputs = self._inputs(batch, images)
        sample = self.cfg.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.cfg.max_new_tokens,
                do_sample=sample,
                temperature=self.cfg.temperature if sample else None,
                pad_token_id=self.tok.pad_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        return list(self.tok.batch_decode(new, skip_special_tokens=True))

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        """Generate in batches of ``teacher.batch_size``; unreadable images and failing batches give error rows."""
        images, failed = load_images(requests)
        done: dict[str, TeacherResult] = dict(failed)
        todo = [r for r in requests if r.id not in failed]
        bs = self.cfg.batch_size
        for i in range(0, len(todo), bs):
            batch = todo[i : i + bs]
            try:
                texts = self._batch(batch, images)
                done.update({r.id: TeacherResult(r.id, t) for r, t in zip(batch, texts, strict=True)})
            except Exception as err:  # noqa: BLE001 - recorded as error rows
                log.warning("transformers teacher batch %d failed: %s", i // bs, err)
                done.update({r.id: TeacherResult(r.id, None, f"{type(err).__name__}: {err}") for r in batch})
        return [done[r.id] for r in requests]

    def close(self) -> None:
        """Drop the model."""
        self.model = None
