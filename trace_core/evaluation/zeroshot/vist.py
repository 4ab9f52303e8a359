"""Visual Storytelling (VIST): interleaved images and sentences -> the story's last image, R@1.

Source: VIST (Huang et al., NAACL 2016), ``visionandlanguage.net/VIST``; the story-in-sequence
file ``sis/val.story-in-sequence.json``::

    {"images": [...], "albums": [...], "info": {...}, "type": "story-in-sequence",
     "annotations": [[{"story_id": "45530", "photo_flickr_id": "2627795780",
                       "worker_arranged_photo_order": 0, "text": "the family got together ...",
                       "original_text": "...", "album_id": "...", "storylet_id": "...",
                       "setting": "...", "tier": "story-in-sequence", "worker_id": "..."}], ...]}

Images: ``images/val/<photo_flickr_id>.jpg`` (a few are ``.png`` or ``.gif``). Each story (its
sentences ordered by ``worker_arranged_photo_order``) is a query: sentence 1, image 1, ...,
sentence n-1, image n-1, then sentence n; the positive is image n. The gallery is every photo
of the file; a story's own context photos are excluded from its ranking.
"""

from __future__ import annotations

from pathlib import Path

from trace_core.data.zeroshot import VIST_IMAGES, VIST_JSON, VIST_SUFFIXES
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
from trace_core.io import DataError
from trace_core.types import Segment

NAME = "vist"
INSTRUCTION = "Find the photo that goes with the last sentence of this story"
FIELDS: dict[str, type | tuple[type, ...]] = {
    "story_id": (str, int),
    "photo_flickr_id": (str, int),
    "worker_arranged_photo_order": int,
    "text": str,
}


def photo_path(folder: Path, photo: str) -> Path:
    """The image file of a photo id (``.jpg``, else ``.png``, else ``.gif``)."""
    for suffix in VIST_SUFFIXES:
        if (folder / f"{photo}{suffix}").is_file():
            return folder / f"{photo}{suffix}"
    raise DataError(folder, f"photo {photo}", f"no image file {photo} with suffix {', '.join(VIST_SUFFIXES)}")


def stories(jf: JsonFile) -> dict[str, list[tuple[int, str, str]]]:
    """Each story id mapped to its ``(order, photo id, sentence)`` rows, sorted by order."""
    anns = jf.fields(jf.data, {"annotations": list}, [])["annotations"]
    out: dict[str, list[tuple[int, str, str]]] = {}
    for i, group in enumerate(anns):
        for j, obj in enumerate(jf.expect(group, list, ["annotations", i], "each annotation")):
            keys: list[Key] = ["annotations", i, j]
            rec = jf.fields(obj, FIELDS, keys)
            sentence = jf.nonempty_text(rec["text"], keys, "field 'text'")
            out.setdefault(str(rec["story_id"]), []).append(
                (rec["worker_arranged_photo_order"], str(rec["photo_flickr_id"]), sentence)
            )
    for sid, rows in out.items():
        if len(rows) < 2:
            raise jf.error(["annotations"], f"story {sid} has fewer than two sentences")
        rows.sort()
    return out


def load(ctx: LoadContext) -> list[ZsTask]:
    """One R@1 task: each story's last photo among every photo of the file."""
    folder = ctx.root / NAME
    jf = JsonFile.read(folder / VIST_JSON, "VIST story-in-sequence file")
    by_story = stories(jf)
    if not by_story:
        raise jf.error(["annotations"], "no stories")
    photos = list(dict.fromkeys(p for rows in by_story.values() for _, p, _ in rows))
    paths = {p: ctx.rel(photo_path(folder / VIST_IMAGES, p)) for p in photos}
    queries = []
    for sid, rows in by_story.items():
        parts: list[Segment] = []
        for _, photo, sentence in rows[:-1]:
            parts += [("text", sentence), ("image", paths[photo])]
        parts.append(("text", rows[-1][2]))
        qid = make_id(NAME, sid)
        target = make_id(NAME, rows[-1][1])
        seen = frozenset(make_id(NAME, p) for _, p, _ in rows[:-1]) - {target}
        item = interleaved_query(qid, COMPOSED_TO_IMAGE, INSTRUCTION, parts)
        queries.append(ZsQuery(qid, item, frozenset({target}), exclude=seen))
    gallery = tuple(image_candidate(make_id(NAME, p), COMPOSED_TO_IMAGE, paths[p]) for p in photos)
    return [ZsTask(NAME, NAME, "recall", (1, 5, 10), tuple(queries), gallery)]
