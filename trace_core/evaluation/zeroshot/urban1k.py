"""Urban-1K: long-caption text<->image retrieval on 1,000 urban scenes, R@1 both ways.

Source: Urban-1K from Long-CLIP (Zhang et al., 2024), distributed on the Hugging Face hub as
``BeichenZhang/Urban1k``: a folder ``image/`` of ``<n>.jpg`` and a folder ``caption/`` of
``<n>.txt`` with the same stems; the caption is the first line of the text file.
"""

from __future__ import annotations

from pathlib import Path

from trace_core.data.zeroshot import URBAN1K_CAPTIONS, URBAN1K_IMAGES
from trace_core.evaluation.zeroshot.base import CaptionPair, LoadContext, ZsTask, caption_tasks, require_dir
from trace_core.io import DataError

NAME = "urban1k"
T2I = "Find the street photo that this long description depicts:"
I2T = "Find the long description of this street scene."


def _stem_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def read_caption(path: Path) -> str:
    """First line of a caption file, stripped; an empty first line is an error."""
    try:
        first = path.read_text(encoding="utf-8").splitlines()[:1]
    except UnicodeDecodeError:
        raise DataError(path, "file", "not UTF-8 text") from None
    if not first or not first[0].strip():
        raise DataError(path, "line 1", "the caption (first line) is empty")
    return first[0].strip()


def load(ctx: LoadContext) -> list[ZsTask]:
    """The t2i and i2t tasks over every caption file and its image."""
    folder = ctx.root / NAME
    images = require_dir(folder / URBAN1K_IMAGES, "Urban-1K image folder")
    captions = sorted(require_dir(folder / URBAN1K_CAPTIONS, "Urban-1K caption folder").glob("*.txt"), key=_stem_order)
    if not captions:
        raise DataError(folder / URBAN1K_CAPTIONS, "folder", "no <n>.txt caption files")
    pairs = []
    for path in captions:
        image = images / f"{path.stem}.jpg"
        if not image.is_file():
            raise DataError(path, "file", f"no image {URBAN1K_IMAGES}/{path.stem}.jpg for this caption")
        pairs.append(CaptionPair(path.stem, ctx.rel(image), path.stem, read_caption(path)))
    return caption_tasks(NAME, pairs, T2I, I2T)
