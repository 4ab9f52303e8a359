"""Zero-shot-mini: each unseen dataset of the zero-shot suite, generated small in its real format.

Scenes, captions and renders come from the M-BEIR-mini scene generator, so a model trained on
M-BEIR-mini can transfer; the files (names, JSON shapes, the CC-Neg ``.pt``, JPEG images) are
laid out exactly as the real datasets (:mod:`trace_core.data.zeroshot`), so the loaders in
``trace_core/evaluation/zeroshot/`` read both. Deterministic: the same seed and sizes give
byte-identical files (no timestamps or machine paths inside them).
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trace_core.config import MiniParams, ZeroshotMiniParams
from trace_core.data import zeroshot as layout
from trace_core.data.mini.render import RADIUS_FRACTION, RenderSpec, render_scene
from trace_core.data.mini.scene import (
    COLORS,
    POSITIONS,
    SHAPES,
    Change,
    Scene,
    SceneObject,
    apply_change,
    object_phrase,
    object_ref,
    random_change,
    random_object,
    random_scene,
    scene_caption,
    scene_caption_alt,
)
from trace_core.io import atomic_open

log = logging.getLogger(__name__)
JPEG_QUALITY = 92


@dataclass
class Writer:
    """Writes one dataset's files under the zero-shot root and remembers them."""

    root: Path
    spec: RenderSpec
    written: list[Path] = field(default_factory=list)

    def image(self, rel: str, scene: Scene, variant: int = 0) -> str:
        """Render ``scene`` to ``rel`` (JPEG for ``.jpg``, else PNG); return ``rel``."""
        path = self.root / rel
        img = render_scene(scene, self.spec, variant)
        buf = io.BytesIO()
        if path.suffix == ".jpg":
            img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        else:
            img.save(buf, format="PNG")
        self.data(rel, buf.getvalue())
        return rel

    def data(self, rel: str, payload: bytes) -> None:
        """Write bytes atomically."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
        self.written.append(path)

    def json(self, rel: str, obj: Any) -> None:
        """Write JSON (indented, key order as given, like the authors' files)."""
        with atomic_open(self.root / rel) as fh:
            json.dump(obj, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        self.written.append(self.root / rel)


@dataclass(frozen=True)
class Ctx:
    """Sizes and the scene range of one generation."""

    n: int
    distractors: int
    mini: MiniParams

    @property
    def per_subset(self) -> int:
        """Queries per subset of the datasets split in subsets (GeneCIS, Sugar-Crepe)."""
        return max(2, self.n // 4)

    def scenes(self, rng: random.Random, k: int, taken: set[str] | None = None, min_objects: int = 1) -> list[Scene]:
        """``k`` distinct random scenes (none of ``taken``; ``taken`` is updated)."""
        seen = taken if taken is not None else set()
        lo, hi = max(min_objects, self.mini.min_objects), max(min_objects, self.mini.max_objects)
        out: list[Scene] = []
        while len(out) < k:
            scene = random_scene(rng, lo, hi)
            if scene.key() not in seen:
                seen.add(scene.key())
                out.append(scene)
        return out


def unique_ints(rng: random.Random, k: int, low: int = 1, high: int = 599_999) -> list[int]:
    """``k`` distinct integers (dataset-style ids)."""
    return rng.sample(range(low, high), k)


# --- wording ----------------------------------------------------------------------------------------
def long_caption(scene: Scene) -> str:
    """A ShareGPT4V/Urban-1K-style long caption: an overview, then one sentence per object."""
    n = len(scene.objects)
    head = f"The image shows {n} shape{'s' if n > 1 else ''} on a plain {scene.background} background."
    body = " ".join(f"There is {object_phrase(o)}." for o in scene.objects)
    return f"{head} {body} {scene_caption(scene)}"


def caption_variants(scene: Scene) -> list[str]:
    """Five different captions of a scene (Flickr30K gives five per image)."""
    objs = [object_phrase(o) for o in scene.objects]
    listing = ", ".join(objs)
    return [
        scene_caption(scene),
        scene_caption_alt(scene),
        f"A {scene.background} picture with {listing}.",
        f"On a {scene.background} background: {listing}.",
        f"{listing[0].upper()}{listing[1:]}, seen against {scene.background}.",
    ]


def relative_caption(scene: Scene, change: Change) -> str:
    """CIRCO-style relative caption of a change (completes "... except that it")."""
    ref = object_ref(scene.objects[change.object])
    if change.attribute == "color":
        return f"has {ref} in {change.to}"
    if change.attribute == "shape":
        return f"has {ref} replaced by a {change.to}"
    if change.attribute == "size":
        return f"has {ref} made {change.to}"
    return f"has {ref} moved to the {change.to}"


def change_sentence(scene: Scene, change: Change) -> str:
    """A story sentence narrating a change."""
    ref = object_ref(scene.objects[change.object])
    verb = {
        "color": f"turned {change.to}",
        "shape": f"became a {change.to}",
        "size": f"grew {change.to}" if change.to == "large" else "shrank",
        "position": f"moved to the {change.to}",
    }[change.attribute]
    return f"Then {ref} {verb}."


def feedback(change: Change) -> list[str]:
    """Two FashionIQ-style feedback sentences for one change."""
    if change.attribute == "shape":
        return [f"has a {change.to} print", f"shows a {change.to} instead of a {change.from_}"]
    if change.attribute == "position":
        return [f"has the print at the {change.to}", f"print moved from the {change.from_} to the {change.to}"]
    return [f"is {change.to}", f"is {change.to} instead of {change.from_}"]


def bbox(obj: SceneObject, size: int) -> list[float]:
    """``[x, y, w, h]`` of an object's square in a render of side ``size``."""
    col, row = POSITIONS[obj.position]
    cell = size / 3
    r = RADIUS_FRACTION[obj.size] * cell
    cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
    return [round(cx - r, 1), round(cy - r, 1), round(2 * r, 1), round(2 * r, 1)]


# --- the ten datasets ---------------------------------------------------------------------------------
def write_sharegpt4v(w: Writer, rng: random.Random, c: Ctx) -> None:
    """LLaVA-style conversation records with long captions (first ``n`` evaluated)."""
    records = []
    for i, scene in enumerate(c.scenes(rng, c.n)):
        image = f"coco/train2017/{i + 1:012d}.jpg"
        w.image(f"sharegpt4v/{image}", scene)
        human = {"from": "human", "value": "<image>\nDescribe this image in detail."}
        records.append(
            {
                "id": f"{i + 1:012d}",
                "image": image,
                "conversations": [human, {"from": "gpt", "value": long_caption(scene)}],
            }
        )
    w.json(f"sharegpt4v/{layout.SHAREGPT4V_JSON}", records)


def write_urban1k(w: Writer, rng: random.Random, c: Ctx) -> None:
    """``image/<n>.jpg`` and ``caption/<n>.txt`` pairs."""
    for i, scene in enumerate(c.scenes(rng, c.n, min_objects=2), start=1):
        w.image(f"urban1k/{layout.URBAN1K_IMAGES}/{i}.jpg", scene)
        w.data(f"urban1k/{layout.URBAN1K_CAPTIONS}/{i}.txt", (long_caption(scene) + "\n").encode())


def write_flickr30k(w: Writer, rng: random.Random, c: Ctx) -> None:
    """Karpathy-split JSON: ``n`` test images with five captions each, plus two train images."""
    images, sentid = [], 0
    for i, scene in enumerate(c.scenes(rng, c.n + 2)):
        filename = f"{1_000_000 + i * 7919}.jpg"
        w.image(f"flickr30k/{layout.FLICKR30K_IMAGES}/{filename}", scene)
        sentences = []
        for text in caption_variants(scene):
            tokens = text.lower().rstrip(".").replace(",", "").replace(":", "").split()
            sentences.append({"tokens": tokens, "raw": text, "imgid": i, "sentid": sentid})
            sentid += 1
        split = "train" if i < 2 else "test"
        images.append(
            {
                "sentids": [s["sentid"] for s in sentences],
                "imgid": i,
                "sentences": sentences,
                "split": split,
                "filename": filename,
            }
        )
    w.json(f"flickr30k/{layout.FLICKR30K_JSON}", {"images": images, "dataset": "flickr30k"})


def write_circo(w: Writer, rng: random.Random, c: Ctx) -> None:
    """Queries with one to three ground truths (renders of the target scene) and a shared gallery."""
    refs = c.scenes(rng, c.n + c.distractors, min_objects=2)
    ids = iter(unique_ints(rng, 8 * (c.n + c.distractors)))
    info, queries = [], []

    def add(scene: Scene, variant: int) -> int:
        image_id = next(ids)
        name = f"{image_id:012d}.jpg"
        w.image(f"circo/{layout.CIRCO_IMAGES}/{name}", scene, variant)
        info.append(
            {
                "license": 1,
                "file_name": name,
                "coco_url": "",
                "height": c.mini.image_size,
                "width": c.mini.image_size,
                "date_captured": "",
                "id": image_id,
            }
        )
        return image_id

    for q, ref in enumerate(refs[: c.n]):
        change = random_change(rng, ref)
        target = apply_change(ref, change)
        ref_id = add(ref, 0)
        gts = [add(target, v) for v in range(rng.randint(1, 3))]
        kept = [o for i, o in enumerate(ref.objects) if i != change.object]
        concept = f"a {kept[0].color} {kept[0].shape}" if kept else f"a {ref.background} background"
        queries.append(
            {
                "reference_img_id": ref_id,
                "target_img_id": gts[0],
                "relative_caption": relative_caption(ref, change),
                "shared_concept": concept,
                "gt_img_ids": gts,
                "id": q,
            }
        )
    for scene in refs[c.n :]:
        add(scene, 0)
    w.json(f"circo/{layout.CIRCO_ANNOTATIONS}", queries)
    w.json(
        f"circo/{layout.CIRCO_IMAGE_INFO}",
        {"info": {"description": "COCO 2017 unlabeled (zero-shot-mini)"}, "images": info},
    )


def with_shape(scene: Scene, shape: str) -> Scene:
    """The scene with its first object turned into ``shape``."""
    return Scene.make([replace(scene.objects[0], shape=shape), *scene.objects[1:]], scene.background)


def without_shape(rng: random.Random, scene: Scene, shape: str) -> Scene:
    """The scene with every ``shape`` object turned into another shape."""
    others = [s for s in SHAPES if s != shape]
    objs = [replace(o, shape=rng.choice(others)) if o.shape == shape else o for o in scene.objects]
    return Scene.make(objs, scene.background)


def _genecis_object_entries(rng: random.Random, c: Ctx, subset: str) -> list[tuple[Scene, str, Scene, list[Scene]]]:
    """(reference, condition, target, distractors) of the object subsets (condition: a shape)."""
    out = []
    for ref in c.scenes(rng, c.per_subset, min_objects=1):
        shape = rng.choice(SHAPES)
        if subset == "change_object":  # the reference with an object of that shape added
            ref = without_shape(rng, ref, shape)
            free = {o.position for o in ref.objects}
            added = replace(random_object(rng, free, set()), shape=shape)
            target = Scene.make([*ref.objects, added], ref.background)
            wrong = [Scene.make([*ref.objects, replace(added, shape=s)], ref.background) for s in SHAPES if s != shape]
        else:  # focus_object: another scene sharing the reference's object of that shape
            ref = with_shape(ref, shape)
            target = with_shape(random_scene(rng, 1, 2), shape)
            wrong = [without_shape(rng, random_scene(rng, 1, 2), shape) for _ in range(4)]
        out.append((ref, shape, target, rng.sample(wrong, min(4, len(wrong)))))
    return out


def _genecis_attribute_entries(rng: random.Random, c: Ctx, subset: str) -> list[tuple[Scene, str, Scene, list[Scene]]]:
    """(reference, condition, target, distractors) of the attribute subsets: one object each."""
    out = []
    for _ in range(c.per_subset):
        obj = random_object(rng, set(), set())
        ref = Scene.make([obj], "gray")
        if subset == "change_attribute":
            color = rng.choice([k for k in COLORS if k != obj.color])
            target = Scene.make([replace(obj, color=color, position=rng.choice(list(POSITIONS)))], "gray")
            others = [Scene.make([replace(obj, color=k)], "gray") for k in COLORS if k not in (color, obj.color)]
            condition = color
        else:
            shape = rng.choice([s for s in SHAPES if s != obj.shape])
            target = Scene.make([replace(obj, shape=shape)], "gray")
            others = [Scene.make([replace(obj, shape=shape, color=k)], "gray") for k in COLORS if k != obj.color]
            condition = "color"
        out.append((ref, condition, target, rng.sample(others, min(4, len(others)))))
    return out


def write_genecis(w: Writer, rng: random.Random, c: Ctx) -> None:
    """The four template files; object subsets use COCO ids, attribute subsets VG ids and boxes."""
    ids = iter(unique_ints(rng, 64 * c.per_subset, 1, 2_500_000))
    for subset in layout.GENECIS_SUBSETS:
        entries = (_genecis_object_entries if subset.endswith("_object") else _genecis_attribute_entries)(
            rng, c, subset
        )

        def ref(scene: Scene, sub: str = subset) -> dict[str, Any]:
            image_id = next(ids)
            if sub.endswith("_object"):
                w.image(f"genecis/{layout.GENECIS_COCO_IMAGES}/{image_id:012d}.jpg", scene)
                return {"val_image_id": image_id}
            w.image(f"genecis/{layout.GENECIS_VG_IMAGES}/{image_id}.jpg", scene)
            obj = scene.objects[0]
            return {"image_id": image_id, "instance_bbox": bbox(obj, c.mini.image_size), "object_name": obj.shape}

        templates = [
            {"reference": ref(r), "target": ref(t), "condition": cond, "gallery": [ref(d) for d in ds]}
            for r, cond, t, ds in entries
        ]
        w.json(f"genecis/{layout.GENECIS_ANNOTATIONS}/{subset}.json", templates)


def dialog_rounds(rng: random.Random, scene: Scene) -> list[tuple[str, str]]:
    """Question/answer rounds that together pin the scene down."""
    n = len(scene.objects)
    rounds = [("how many shapes are there", f"{n}"), ("what color is the background", scene.background)]
    for o in scene.objects:
        rounds.append((f"is there a {o.shape}", f"yes, a {o.size} {o.color} one"))
        rounds.append((f"where is the {o.color} {o.shape}", f"at the {o.position}"))
    missing = rng.choice([s for s in SHAPES if all(o.shape != s for o in scene.objects)])
    rounds.append((f"is there a {missing}", "no"))
    return rounds


def write_visdial(w: Writer, rng: random.Random, c: Ctx) -> None:
    """VisDial v1.0 JSON with question/answer tables and one image per dialogue."""
    questions: dict[str, int] = {}
    answers: dict[str, int] = {}
    dialogs = []
    for scene, image_id in zip(c.scenes(rng, c.n), unique_ints(rng, c.n), strict=True):
        w.image(f"visdial/{layout.VISDIAL_IMAGES}/VisualDialog_val2018_{image_id:012d}.jpg", scene)
        rounds = []
        for q, a in dialog_rounds(rng, scene):
            qi, ai = questions.setdefault(q, len(questions)), answers.setdefault(a, len(answers))
            options = sorted({ai, *rng.sample(range(max(len(answers), 1)), min(3, len(answers)))})
            rounds.append({"answer": ai, "question": qi, "answer_options": options, "gt_index": options.index(ai)})
        dialogs.append({"image_id": image_id, "caption": scene_caption(scene).lower().rstrip("."), "dialog": rounds})
    data = {"dialogs": dialogs, "answers": list(answers), "questions": list(questions)}
    w.json(f"visdial/{layout.VISDIAL_JSON}", {"version": "1.0", "split": "val2018", "data": data})


def write_vist(w: Writer, rng: random.Random, c: Ctx) -> None:
    """Stories of five photos, each a change of the previous scene; one photo stored as PNG."""
    photo_ids = iter(unique_ints(rng, 5 * c.n, 10_000_000, 99_999_999))
    annotations, albums = [], []
    for s, start in enumerate(c.scenes(rng, c.n, min_objects=2)):
        scenes, sentences = [start], [scene_caption(start)]
        while len(scenes) < 5:
            change = random_change(rng, scenes[-1])
            sentences.append(change_sentence(scenes[-1], change))
            scenes.append(apply_change(scenes[-1], change))
        album, story = str(70_000 + s), str(40_000 + s)
        albums.append({"id": album, "title": f"album {album}", "vist_label": "story"})
        for order, (scene, text) in enumerate(zip(scenes, sentences, strict=True)):
            photo = str(next(photo_ids))
            suffix = ".png" if s == 0 and order == 2 else ".jpg"
            w.image(f"vist/{layout.VIST_IMAGES}/{photo}{suffix}", scene)
            annotations.append(
                [
                    {
                        "original_text": text,
                        "album_id": album,
                        "photo_flickr_id": photo,
                        "setting": "first-2-pick-and-tell",
                        "worker_id": "W0",
                        "story_id": story,
                        "tier": "story-in-sequence",
                        "worker_arranged_photo_order": order,
                        "text": text.lower(),
                        "storylet_id": str(5 * s + order),
                    }
                ]
            )
    doc = {
        "images": [],
        "info": {"description": "VIST zero-shot-mini"},
        "albums": albums,
        "type": "story-in-sequence",
        "annotations": annotations,
    }
    w.json(f"vist/{layout.VIST_JSON}", doc)


def asin(rng: random.Random) -> str:
    """An Amazon-style image name."""
    return "B00" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(7))


def write_mtfashioniq(w: Writer, rng: random.Random, c: Ctx) -> None:
    """Sessions of two or three feedback turns over single-item images, and the image split."""
    names: dict[str, str] = {}
    sessions = []

    def name_of(scene: Scene) -> str:
        if scene.key() not in names:
            names[scene.key()] = asin(rng)
            w.image(f"mtfashioniq/{layout.MTFASHIONIQ_IMAGES}/{names[scene.key()]}.jpg", scene)
        return names[scene.key()]

    url = "http://ecx.images-amazon.com/images/I/{}._SX342_.jpg"
    for _ in range(c.n):
        item = Scene.make([random_object(rng, set(), set())], "white")
        turns = []
        for _ in range(rng.randint(2, 3)):
            change = random_change(rng, item)
            turns.append([url.format(name_of(item)), feedback(change), name_of(item)])
            item = apply_change(item, change)
        sessions.append({"target": [url.format(name_of(item)), name_of(item)], "reference": turns})
    for scene in c.scenes(rng, c.distractors, taken=set(names)):
        name_of(Scene.make([scene.objects[0]], "white"))
    w.json(f"mtfashioniq/{layout.MTFASHIONIQ_QUERIES}", sessions)
    w.json(f"mtfashioniq/{layout.MTFASHIONIQ_GALLERY}", sorted(names.values()))


def negated_caption(rng: random.Random, scene: Scene) -> str:
    """A caption that negates one object the image does show."""
    gone = rng.randrange(len(scene.objects))
    rest = [object_phrase(o) for i, o in enumerate(scene.objects) if i != gone]
    lost = scene.objects[gone]
    if not rest:
        return f"A plain {scene.background} background with no {lost.color} {lost.shape}."
    listing = ", ".join(rest)
    return f"{listing[0].upper()}{listing[1:]} on a {scene.background} background, but no {lost.color} {lost.shape}."


def write_ccneg(w: Writer, rng: random.Random, c: Ctx) -> None:
    """``ccneg_preprocessed.pt``: image paths with the authors' prefix and caption pairs."""
    import torch

    paths, anns = [], []
    for i, scene in enumerate(c.scenes(rng, c.n)):
        rest = f"cc3m_subset_images_extracted_final/{i:07d}.jpg"
        w.image(f"ccneg/{layout.CCNEG_IMAGES}/{rest}", scene)
        paths.append(layout.CCNEG_PATH_PREFIX + rest)
        caption = scene_caption(scene)
        anns.append(
            {
                "json": {"caption": caption, "key": f"{i:09d}"},
                "sop_data": {"negative-prompt": negated_caption(rng, scene)},
            }
        )
    buf = io.BytesIO()
    torch.save({"image_paths": paths, "annotations": anns}, buf)  # in memory: the archive name stays fixed
    w.data(f"ccneg/{layout.CCNEG_FILE}", buf.getvalue())


SUGAR_SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")


def sugar_negative(rng: random.Random, scene: Scene, subset: str) -> tuple[str, str]:
    """(caption, hard negative) of one subset's perturbation."""
    objs = list(scene.objects)
    bg = scene.background

    def say(items: list[str]) -> str:
        text = ", ".join(items) + f" on a {bg} background."
        return text[0].upper() + text[1:]

    plain = [f"a {o.color} {o.shape} at the {o.position}" for o in objs]
    i = rng.randrange(len(objs))
    o = objs[i]
    other_color = rng.choice([k for k in COLORS if k != o.color])
    other_shape = rng.choice([s for s in SHAPES if s != o.shape])
    if subset == "add_att":
        wrong = "small" if o.size == "large" else "large"
        return say(plain), say([*plain[:i], f"a {wrong} {o.color} {o.shape} at the {o.position}", *plain[i + 1 :]])
    if subset == "add_obj":
        free = next(p for p in POSITIONS if all(x.position != p for x in objs))
        return say(plain), say([*plain, f"a {other_color} {other_shape} at the {free}"])
    if subset in ("swap_att", "swap_obj") and len(objs) >= 2:
        j = (i + 1) % len(objs)
        a, b = objs[i], objs[j]
        swapped = list(plain)
        if subset == "swap_att":
            swapped[i], swapped[j] = (
                f"a {b.color} {a.shape} at the {a.position}",
                f"a {a.color} {b.shape} at the {b.position}",
            )
        else:
            swapped[i], swapped[j] = (
                f"a {a.color} {b.shape} at the {a.position}",
                f"a {b.color} {a.shape} at the {b.position}",
            )
        return say(plain), say(swapped)
    field_ = {"replace_att": "color", "replace_obj": "shape", "replace_rel": "position"}.get(subset, "color")
    new = {"color": other_color, "shape": other_shape, "position": None}[field_]
    if new is None:
        new = rng.choice([p for p in POSITIONS if all(x.position != p for x in objs)])
    changed = replace(o, **{field_: new})
    return say(plain), say(
        [*plain[:i], f"a {changed.color} {changed.shape} at the {changed.position}", *plain[i + 1 :]]
    )


def write_sugar_crepe(w: Writer, rng: random.Random, c: Ctx) -> None:
    """One JSON object per subset and the COCO-style images."""
    ids = iter(unique_ints(rng, len(SUGAR_SUBSETS) * c.per_subset))
    for subset in SUGAR_SUBSETS:
        records = {}
        min_objects = 2 if subset.startswith("swap") else 1
        for k, scene in enumerate(c.scenes(rng, c.per_subset, min_objects=min_objects)):
            filename = f"{next(ids):012d}.jpg"
            w.image(f"sugar_crepe/{layout.SUGAR_CREPE_IMAGES}/{filename}", scene)
            caption, negative = sugar_negative(rng, scene, subset)
            records[str(k)] = {"filename": filename, "caption": caption, "negative_caption": negative}
        w.json(f"sugar_crepe/{layout.SUGAR_CREPE_DATA}/{subset}.json", records)


WRITERS: dict[str, Callable[[Writer, random.Random, Ctx], None]] = {
    "sharegpt4v": write_sharegpt4v,
    "urban1k": write_urban1k,
    "flickr30k": write_flickr30k,
    "circo": write_circo,
    "genecis": write_genecis,
    "visdial": write_visdial,
    "vist": write_vist,
    "mtfashioniq": write_mtfashioniq,
    "ccneg": write_ccneg,
    "sugar_crepe": write_sugar_crepe,
}


def write_zeroshot_mini(params: ZeroshotMiniParams, mini: MiniParams, seed: int, root: Path) -> list[Path]:
    """Write every dataset of zero-shot-mini under ``root``; return the files written."""
    spec = RenderSpec(mini.image_size, mini.jitter_px, mini.shade_jitter)
    ctx = Ctx(params.queries, params.distractors, mini)
    written: list[Path] = []
    for name in layout.DATASETS:
        w = Writer(root, spec)
        WRITERS[name](w, random.Random(f"{seed}:zeroshot:{name}"), ctx)
        written += w.written
    log.info("zero-shot-mini: %d files under %s", len(written), root)
    return written
