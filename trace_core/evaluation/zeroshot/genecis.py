"""GeneCIS: conditional image similarity, R@1 averaged over its four subsets.

Source: GeneCIS (Vaze et al., CVPR 2023), ``github.com/facebookresearch/genecis``. Files read:
``annotations/{change_attribute,change_object,focus_attribute,focus_object}.json``, each a
JSON array of templates::

    {"reference": {...}, "target": {...}, "condition": "red", "gallery": [{...}, ...]}

* object subsets name COCO 2017 validation images: ``{"val_image_id": 139}`` -> the file
  ``coco/val2017/000000000139.jpg``;
* attribute subsets name an object instance in a Visual Genome 1.2 image:
  ``{"image_id": 2375429, "instance_bbox": [x, y, w, h]}`` -> ``vg/VG_100K/2375429.jpg``,
  cropped as the benchmark does: the box grown by 0.7 of its width/height (from its top-left,
  clipped to the image), then padded to a square with black. Crops are written once to the
  crop folder (outside the DVC outputs).

Each template is a query (reference image + condition) ranked against its own gallery: the
target (the positive) plus the template's distractors. The column is the mean R@1 of the
subsets present.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from trace_core.data.zeroshot import GENECIS_ANNOTATIONS, GENECIS_COCO_IMAGES, GENECIS_SUBSETS, GENECIS_VG_IMAGES
from trace_core.evaluation.zeroshot.base import (
    COMPOSED_TO_IMAGE,
    JsonFile,
    Key,
    LoadContext,
    ZsQuery,
    ZsTask,
    image_candidate,
    make_id,
    query_item,
    unique_candidates,
)
from trace_core.io import DataError

NAME = "genecis"
DILATION = 0.7
#: our instruction per subset; the condition completes the sentence.
INSTRUCTIONS: dict[str, str] = {
    "change_attribute": "Find an image of the object in this image, changed to be",
    "change_object": "Find a photo of a scene like this one, now with",
    "focus_attribute": "Find an image of an object that matches the one in this image in its",
    "focus_object": "Find another photo that contains, like this one, a",
}


def crop_box(size: tuple[int, int], bbox: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The grown box ``(left, top, right, bottom)`` of an instance box ``(x, y, w, h)``."""
    width, height = size
    x, y, w, h = bbox
    left, top = max(0.0, x - DILATION * w), max(0.0, y - DILATION * h)
    right, bottom = min(width, left + (1 + DILATION) * w), min(height, top + (1 + DILATION) * h)
    return round(left), round(top), max(round(right), round(left) + 1), max(round(bottom), round(top) + 1)


def square_crop(image: Image.Image, bbox: tuple[float, float, float, float]) -> Image.Image:
    """Crop the grown box and pad it to a centred square on black."""
    crop = image.convert("RGB").crop(crop_box(image.size, bbox))
    side = max(crop.size)
    out = Image.new("RGB", (side, side), (0, 0, 0))
    out.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
    return out


def _crop_file(source: Path, bbox: tuple[float, float, float, float], out: Path) -> None:
    if out.is_file():
        return
    if not source.is_file():
        raise DataError(source, "file", "missing Visual Genome image named by a GeneCIS template")
    out.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as im:
        cropped = square_crop(im, bbox)
    tmp = out.with_name(f".{out.name}.tmp")
    cropped.save(tmp, format="PNG")
    os.replace(tmp, out)


def image_ref(jf: JsonFile, obj: Any, keys: list[Key], ctx: LoadContext, subset: str) -> tuple[str, str]:
    """(candidate id, image path) of one reference/target/gallery entry."""
    folder = ctx.root / NAME
    if subset.endswith("_object"):
        image_id = jf.fields(obj, {"val_image_id": int}, keys)["val_image_id"]
        return make_id(NAME, f"coco{image_id}"), ctx.rel(folder / GENECIS_COCO_IMAGES / f"{image_id:012d}.jpg")
    rec = jf.fields(obj, {"image_id": int, "instance_bbox": list}, keys)
    box = rec["instance_bbox"]
    if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        raise jf.error(keys, "instance_bbox must be four numbers [x, y, w, h]")
    if box[2] <= 0 or box[3] <= 0:
        raise jf.error(keys, "instance_bbox width and height must be positive")
    bbox = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    tag = "_".join(f"{v:g}" for v in bbox)
    out = ctx.crop_dir / NAME / f"vg{rec['image_id']}_{tag}.png"
    _crop_file(folder / GENECIS_VG_IMAGES / f"{rec['image_id']}.jpg", bbox, out)
    return make_id(NAME, f"vg{rec['image_id']}_{tag}"), ctx.crop_rel(out)


def load_subset(ctx: LoadContext, subset: str, path: Path) -> ZsTask:
    """One subset: each template ranks its target among its own gallery."""
    jf = JsonFile.read(path, f"GeneCIS {subset} templates")
    queries, candidates = [], []
    for i, obj in enumerate(jf.expect(jf.data, list, [], "the top level")):
        rec = jf.fields(obj, {"reference": dict, "target": dict, "condition": str, "gallery": list}, [i])
        _, ref_image = image_ref(jf, rec["reference"], [i, "reference"], ctx, subset)
        target = image_ref(jf, rec["target"], [i, "target"], ctx, subset)
        gallery = [target] + [image_ref(jf, g, [i, "gallery", j], ctx, subset) for j, g in enumerate(rec["gallery"])]
        candidates += [image_candidate(cid, COMPOSED_TO_IMAGE, img) for cid, img in gallery]
        qid = make_id(NAME, f"{subset}{i}")
        condition = jf.nonempty_text(rec["condition"], [i], "field 'condition'")
        item = query_item(qid, COMPOSED_TO_IMAGE, INSTRUCTIONS[subset], condition, ref_image)
        ids = tuple(dict.fromkeys(cid for cid, _ in gallery))
        queries.append(ZsQuery(qid, item, frozenset({target[0]}), gallery=ids))
    if not queries:
        raise jf.error([], "no templates")
    crops = not subset.endswith("_object")  # Visual Genome subsets: instance crops
    cands = unique_candidates(candidates)
    return ZsTask(f"{NAME}_{subset}", NAME, "recall", (1, 2, 3), tuple(queries), cands, crops=crops)


def load(ctx: LoadContext) -> list[ZsTask]:
    """One task per subset file present (at least one is required)."""
    folder = ctx.root / NAME / GENECIS_ANNOTATIONS
    found = [(s, folder / f"{s}.json") for s in GENECIS_SUBSETS if (folder / f"{s}.json").is_file()]
    if not found:
        names = ", ".join(f"{s}.json" for s in GENECIS_SUBSETS)
        raise DataError(folder, "folder", f"no GeneCIS template file ({names})")
    return [load_subset(ctx, subset, path) for subset, path in found]
