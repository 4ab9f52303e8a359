"""The one internal form of every zero-shot dataset, and the helpers its loaders share.

A loader turns its dataset's files into :class:`ZsTask` objects: queries (an
:class:`~trace_core.types.EncodeItem` each, instruction-prefixed like M-BEIR queries), the
candidates they are ranked against (one shared gallery, or a gallery per query), the
positives of each query, and the metric of the task. Image paths inside items are relative
to the task's image root: the zero-shot root, or the crop folder for GeneCIS's Visual Genome
subsets (``ZsTask.crops``), so every image is opened through the data-root resolver.

Malformed files raise :class:`~trace_core.io.DataError` naming the file, the line (for JSON,
the line where the offending record starts) and the rule broken.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trace_core.data.normalize import uniir_format
from trace_core.io import DataError
from trace_core.types import EncodeItem, Segment

Metric = Literal["recall", "map", "accuracy"]
Key = str | int

#: M-BEIR task ids whose query prompt (system prompt goal) each zero-shot kind of query uses.
TEXT_TO_IMAGE, IMAGE_TO_TEXT, COMPOSED_TO_IMAGE = 0, 3, 7


@dataclass(frozen=True)
class ZsQuery:
    """One query: what the model encodes, its positives, and the candidates it is ranked against.

    ``gallery`` None means the task's whole candidate list; ``exclude`` ids are never ranked
    for this query (a story's own images, for instance).
    """

    qid: str
    item: EncodeItem
    positives: frozenset[str]
    gallery: tuple[str, ...] | None = None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ZsTask:
    """One scored unit: a direction of a dataset or one of its subsets."""

    name: str
    dataset: str
    metric: Metric
    ks: tuple[int, ...]
    queries: tuple[ZsQuery, ...]
    candidates: tuple[EncodeItem, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    crops: bool = False  # image paths are relative to the crop folder, not the zero-shot root

    def __post_init__(self) -> None:
        check_task(self)


def check_task(task: ZsTask) -> None:
    """Ids unique and whitespace-free, positives and galleries made of the task's candidates."""
    cids = [c.id for c in task.candidates]
    known = set(cids)
    if len(known) != len(cids):
        raise ValueError(f"task {task.name}: duplicate candidate ids")
    qids = [q.qid for q in task.queries]
    if len(set(qids)) != len(qids):
        raise ValueError(f"task {task.name}: duplicate query ids")
    for ident in (*cids, *qids):
        if not ident or any(ch.isspace() for ch in ident):
            raise ValueError(f"task {task.name}: id {ident!r} is empty or holds whitespace")
    for q in task.queries:
        pool = set(q.gallery) if q.gallery is not None else known
        if not q.positives or not q.positives <= pool or not pool <= known:
            raise ValueError(f"task {task.name}: query {q.qid} has positives or gallery outside its candidates")


@dataclass(frozen=True)
class LoadContext:
    """Where a loader reads (the zero-shot root) and may write derived images (GeneCIS crops)."""

    root: Path
    crop_dir: Path

    def rel(self, path: Path) -> str:
        """``path`` relative to the zero-shot root (how items name their images)."""
        return path.relative_to(self.root).as_posix()

    def crop_rel(self, path: Path) -> str:
        """``path`` relative to the crop folder (how items of a ``crops`` task name their images)."""
        return path.relative_to(self.crop_dir).as_posix()


# --- ids and items -------------------------------------------------------------------------------
def make_id(dataset: str, native: Key) -> str:
    """``<dataset>:<native id>`` with whitespace replaced, usable in run and qrels files."""
    return f"{dataset}:{'_'.join(str(native).split())}"


def query_item(qid: str, task_id: int, instruction: str, text: str | None, image: str | None) -> EncodeItem:
    """A query: the instruction prefixes the text (``"<instruction> <text>."``, UniIR's format), image as is.

    The instruction and the text are formatted as one sentence (an instruction ending in ``:``
    keeps it), as LamRA's zero-shot queries are.
    """
    return EncodeItem(qid, task_id, uniir_format(f"{instruction} {text or ''}"), image)


def interleaved_query(qid: str, task_id: int, instruction: str, parts: Sequence[Segment]) -> EncodeItem:
    """A query whose user turn is the instruction, then ``parts`` (texts and images) in order."""
    return EncodeItem(qid, task_id, None, None, (("text", uniir_format(instruction)), *parts))


def image_candidate(cid: str, task_id: int, image: str) -> EncodeItem:
    """An image candidate (no instruction)."""
    return EncodeItem(cid, task_id, None, image)


def text_candidate(cid: str, task_id: int, text: str) -> EncodeItem:
    """A text candidate (no instruction)."""
    return EncodeItem(cid, task_id, text, None)


def unique_candidates(items: Sequence[EncodeItem]) -> tuple[EncodeItem, ...]:
    """Candidates in first-seen order, one per id."""
    seen: dict[str, EncodeItem] = {}
    for item in items:
        seen.setdefault(item.id, item)
    return tuple(seen.values())


@dataclass(frozen=True)
class CaptionPair:
    """An image and one of its captions (several pairs may share the image)."""

    image_key: str
    image: str
    caption_key: str
    caption: str


def caption_tasks(dataset: str, pairs: Sequence[CaptionPair], t2i: str, i2t: str) -> list[ZsTask]:
    """Text->image and image->text R@1 tasks over the same pairs (LamRA's protocol).

    Every caption queries the images (its own is the positive); every image queries the
    captions (all of its captions are positives).

    Args:
        dataset: dataset name (task names ``<dataset>_t2i`` / ``<dataset>_i2t``, id prefix).
        pairs: image-caption pairs in file order.
        t2i: instruction of the text queries.
        i2t: instruction of the image queries.
    """
    img = {p.image_key: make_id(dataset, f"img{p.image_key}") for p in pairs}
    txt = {p.caption_key: make_id(dataset, f"txt{p.caption_key}") for p in pairs}
    captions_of: dict[str, set[str]] = {}
    for p in pairs:
        captions_of.setdefault(img[p.image_key], set()).add(txt[p.caption_key])
    images = unique_candidates([image_candidate(img[p.image_key], TEXT_TO_IMAGE, p.image) for p in pairs])
    texts = unique_candidates([text_candidate(txt[p.caption_key], IMAGE_TO_TEXT, p.caption) for p in pairs])
    image_of = {i.id: i.img_path for i in images}
    t2i_queries = tuple(
        ZsQuery(
            txt[p.caption_key],
            query_item(txt[p.caption_key], TEXT_TO_IMAGE, t2i, p.caption, None),
            frozenset({img[p.image_key]}),
        )
        for p in pairs
    )
    i2t_queries = tuple(
        ZsQuery(i, query_item(i, IMAGE_TO_TEXT, i2t, None, image_of[i]), frozenset(captions_of[i])) for i in captions_of
    )
    return [
        ZsTask(f"{dataset}_t2i", dataset, "recall", (1, 5, 10), t2i_queries, images),
        ZsTask(f"{dataset}_i2t", dataset, "recall", (1, 5, 10), i2t_queries, texts),
    ]


# --- files ----------------------------------------------------------------------------------------
def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a :class:`DataError` saying what is missing."""
    if not path.is_file():
        raise DataError(path, "file", f"missing {what}")
    return path


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`DataError` saying what is missing."""
    if not path.is_dir():
        raise DataError(path, "folder", f"missing {what}")
    return path


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _members(text: str, start: int) -> Iterator[tuple[Key, int]]:
    """(key or index, offset) of each member of the array/object opening at ``start``."""
    dec = json.JSONDecoder()
    close = "]" if text[start] == "[" else "}"
    i, index = _skip_ws(text, start + 1), 0
    while i < len(text) and text[i] != close:
        key: Key = index
        if close == "}":
            key, i = dec.raw_decode(text, i)
            i = _skip_ws(text, _skip_ws(text, i) + 1)  # past ':'
        yield key, i
        _, i = dec.raw_decode(text, i)
        i = _skip_ws(text, i)
        i = _skip_ws(text, i + 1) if i < len(text) and text[i] == "," else i
        index += 1


def line_of(path: Path, keys: Sequence[Key]) -> int | None:
    """Line where the member at ``keys`` (indices and object keys from the top) starts."""
    text = path.read_text(encoding="utf-8")
    offset = _skip_ws(text, 0)
    for key in keys:
        if offset >= len(text) or text[offset] not in "[{":
            return None
        offset = next((o for k, o in _members(text, offset) if k == key), -1)
        if offset < 0:
            return None
    return text.count("\n", 0, offset) + 1


@dataclass(frozen=True)
class JsonFile:
    """A parsed JSON file that can point at the line of any of its records."""

    path: Path
    data: Any

    @classmethod
    def read(cls, path: Path, what: str) -> JsonFile:
        """Parse ``path`` (a missing file or malformed JSON raises :class:`DataError`)."""
        require_file(path, what)
        try:
            return cls(path, json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise DataError(path, f"line {err.lineno}", f"malformed JSON ({err.msg})") from None
        except UnicodeDecodeError:
            raise DataError(path, "file", "not UTF-8 text") from None

    def error(self, keys: Sequence[Key], rule: str) -> DataError:
        """A :class:`DataError` at the record ``keys`` (``line N (record a/b)``)."""
        record = "/".join(str(k) for k in keys) or "top level"
        line = line_of(self.path, keys)
        where = f"line {line} (record {record})" if line is not None else f"record {record}"
        return DataError(self.path, where, rule)

    def expect(self, value: Any, kind: type | tuple[type, ...], keys: Sequence[Key], what: str) -> Any:
        """``value`` if it has the type ``kind`` (bool is never an int here), else an error at ``keys``."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            want = " or ".join(k.__name__ for k in kinds)
            raise self.error(keys, f"{what} must be {want}, got {type(value).__name__}")
        return value

    def fields(self, obj: Any, spec: Mapping[str, type | tuple[type, ...]], keys: Sequence[Key]) -> dict[str, Any]:
        """``obj`` as a dict having every field of ``spec`` with its type."""
        record = self.expect(obj, dict, keys, "each record")
        for name, kind in spec.items():
            if name not in record:
                raise self.error(keys, f"missing field '{name}'")
            self.expect(record[name], kind, keys, f"field '{name}'")
        return dict(record)

    def nonempty_text(self, value: Any, keys: Sequence[Key], what: str) -> str:
        """A string with non-blank content, stripped."""
        text = str(self.expect(value, str, keys, what)).strip()
        if not text:
            raise self.error(keys, f"{what} is empty")
        return text
