"""Multi-turn FashionIQ: a sequence of (garment image, feedback) turns -> the wanted garment, R@5.

Source: "Conversational Fashion Image Retrieval via Multiturn Natural Language Feedback" (Yuan &
Lam, SIGIR 2021), ``github.com/yfyuan01/MultiturnFashionRetrieval``, built on FashionIQ images.
Files read:

* ``data/all.val.json``: a JSON array of sessions::

      {"target": ["http://ecx.images-amazon.com/images/I/414TIJ6E-EL._SX342_.jpg", "B008VPNQCK"],
       "reference": [["http://.../41y6igcEvTL._SX342_.jpg",
                      ["has long sleeves", "has same length and has longer sleeves"], "B0090KHN7E"],
                     ["http://.../31Xx84xvupL._SX342_.jpg",
                      ["A paisley long sleeved short dress", " is belted and is navy blue"], "B009OCO9XO"]]}

  (the last element of ``target`` and of each turn is the FashionIQ image name, the middle
  element of a turn its two feedback sentences);
* ``image_splits/split.all.val.json``: a JSON array of image names, the candidate gallery;
* the images ``images/<name>.jpg``.

The query interleaves each turn's image with its feedback (sentences joined by "and"); the
positive is the target. A target missing from the split file is added to the gallery (noted).
"""

from __future__ import annotations

from trace_core.data.zeroshot import MTFASHIONIQ_GALLERY, MTFASHIONIQ_IMAGES, MTFASHIONIQ_QUERIES
from trace_core.evaluation.zeroshot.base import (
    COMPOSED_TO_IMAGE,
    JsonFile,
    Key,
    LoadContext,
    ZsQuery,
    ZsTask,
    image_candidate,
    interleaved_query,
    make_id,
)
from trace_core.types import Segment

NAME = "mtfashioniq"
INSTRUCTION = "Find the garment the shopper wants, given these garments and the feedback on each"


def _name(jf: JsonFile, entry: object, keys: list[Key], what: str) -> str:
    pair = jf.expect(entry, list, keys, what)
    if not pair:
        raise jf.error(keys, f"{what} is empty (its last element is the image name)")
    return jf.nonempty_text(pair[-1], keys, f"the image name of {what}")


def turn_parts(jf: JsonFile, turns: list[object], keys: list[Key]) -> list[Segment]:
    """Image name then joined feedback of each turn (image names are mapped to files later)."""
    parts: list[Segment] = []
    for t, turn in enumerate(turns):
        name = _name(jf, turn, [*keys, t], "each reference turn")
        texts = turn[1] if isinstance(turn, list) and len(turn) == 3 else None
        if not isinstance(texts, list) or not all(isinstance(x, str) for x in texts):
            raise jf.error([*keys, t], "a reference turn must be [image url, [feedback, ...], image name]")
        parts += [("image", name), ("text", " and ".join(x.strip() for x in texts if x.strip()))]
    return parts


def gallery_names(ctx: LoadContext) -> list[str]:
    """Image names of the split file, de-duplicated in file order."""
    split = JsonFile.read(ctx.root / NAME / MTFASHIONIQ_GALLERY, "multi-turn FashionIQ image split")
    names = split.expect(split.data, list, [], "the top level")
    return list(dict.fromkeys(split.nonempty_text(n, [i], "each image name") for i, n in enumerate(names)))


def load(ctx: LoadContext) -> list[ZsTask]:
    """One R@5 task: each session's target among the split's images."""
    folder = ctx.root / NAME
    gallery = gallery_names(ctx)
    known = set(gallery)
    jf = JsonFile.read(folder / MTFASHIONIQ_QUERIES, "multi-turn FashionIQ sessions")
    sessions, added = [], []
    for i, obj in enumerate(jf.expect(jf.data, list, [], "the top level")):
        rec = jf.fields(obj, {"target": list, "reference": list}, [i])
        if not rec["reference"]:
            raise jf.error([i], "a session without reference turns")
        target = _name(jf, rec["target"], [i, "target"], "target")
        sessions.append((make_id(NAME, f"s{i}"), turn_parts(jf, rec["reference"], [i, "reference"]), target))
        if target not in known:
            known.add(target)
            gallery.append(target)
            added.append(target)
    if not sessions:
        raise jf.error([], "no sessions")

    def file(name: str) -> str:
        return ctx.rel(folder / MTFASHIONIQ_IMAGES / f"{name}.jpg")

    queries = tuple(
        ZsQuery(
            qid,
            interleaved_query(
                qid, COMPOSED_TO_IMAGE, INSTRUCTION, [(k, file(v) if k == "image" else v) for k, v in parts]
            ),
            frozenset({make_id(NAME, target)}),
        )
        for qid, parts, target in sessions
    )
    notes = (f"{len(added)} targets missing from {MTFASHIONIQ_GALLERY} were added to the gallery",) if added else ()
    cands = tuple(image_candidate(make_id(NAME, n), COMPOSED_TO_IMAGE, file(n)) for n in gallery)
    return [ZsTask(NAME, NAME, "recall", (1, 5, 10), queries, cands, notes)]
