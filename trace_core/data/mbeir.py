"""The real M-BEIR layout: task table, file locations and streaming parsers.

One loader serves the real ``TIGER-Lab/M-BEIR`` snapshot and the generated M-BEIR-mini,
which share the layout exactly. Files are streamed line by line (strict UTF-8); images are never
opened, and an image path that could leave the data root is refused (:mod:`trace_core.data.files`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trace_core.data.files import check_record_path
from trace_core.io import DataError, iter_jsonl, iter_text_lines
from trace_core.types import MODALITIES, CandidateRecord, QrelsEntry, QueryRecord

DATASETS: dict[int, str] = {
    0: "VisualNews",
    1: "Fashion200K",
    2: "WebQA",
    3: "EDIS",
    4: "NIGHTS",
    5: "OVEN",
    6: "InfoSeek",
    7: "FashionIQ",
    8: "CIRR",
    9: "MSCOCO",
}
DATASET_IDS: dict[str, int] = {name.lower(): i for i, name in DATASETS.items()}

# task id -> (query modality, candidate modality of the positive)
TASKS: dict[int, tuple[str, str]] = {
    0: ("text", "image"),
    1: ("text", "text"),
    2: ("text", "image,text"),
    3: ("image", "text"),
    4: ("image", "image"),
    6: ("image,text", "text"),
    7: ("image,text", "image"),
    8: ("image,text", "image,text"),
}
# Datasets whose queries may list positives from the other one (OVEN <-> InfoSeek).
CROSS_DATASET_POSITIVES: dict[int, frozenset[int]] = {5: frozenset({5, 6}), 6: frozenset({5, 6})}
FASHION_DATASETS: frozenset[int] = frozenset({1, 7})


@dataclass(frozen=True)
class TestTask:
    """One of the 16 M-BEIR test tasks (local pool evaluation)."""

    column: int
    dataset_id: int
    task_id: int

    @property
    def dataset(self) -> str:
        """Dataset display name."""
        return DATASETS[self.dataset_id]

    @property
    def stem(self) -> str:
        """File stem, e.g. ``mscoco_task0``."""
        return f"{self.dataset.lower()}_task{self.task_id}"

    @property
    def modalities(self) -> tuple[str, str]:
        """(query modality, candidate modality)."""
        return TASKS[self.task_id]

    @property
    def reported_k(self) -> int:
        """The k of the reported recall: 10 for Fashion200K and FashionIQ, else 5."""
        return 10 if self.dataset_id in FASHION_DATASETS else 5

    @property
    def label(self) -> str:
        """Short column label such as ``qt->ci MSCOCO``."""
        q, c = self.modalities
        short = {"text": "qt", "image": "qi", "image,text": "(qi,qt)"}
        cand = short[c].replace("q", "c")
        return f"{short[q]}->{cand} {self.dataset}"


TEST_TASKS: tuple[TestTask, ...] = tuple(
    TestTask(i + 1, d, t)
    for i, (d, t) in enumerate(
        [
            (0, 0),
            (9, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (2, 2),
            (0, 3),
            (9, 3),
            (1, 3),
            (4, 4),
            (5, 6),
            (6, 6),
            (7, 7),
            (8, 7),
            (5, 8),
            (6, 8),
        ]
    )
)
TEST_TASKS_BY_STEM: dict[str, TestTask] = {t.stem: t for t in TEST_TASKS}


# --- layout ---------------------------------------------------------------------------
def query_file(root: Path, split: str, stem: str) -> Path:
    """``query/<split>/mbeir_<stem>_<split>.jsonl`` (stem is ``<dataset>_task<N>``)."""
    return root / "query" / split / f"mbeir_{stem}_{split}.jsonl"


def train_query_file(root: Path, dataset: str) -> Path:
    """Per-dataset training queries ``query/train/mbeir_<dataset>_train.jsonl``."""
    return root / "query" / "train" / f"mbeir_{dataset.lower()}_train.jsonl"


UPSAMPLED_TRAIN_FILE = "mbeir_union_up_train.jsonl"


def union_train_file(root: Path) -> Path:
    """The default (upsampled union) training file."""
    return root / "query" / "union_train" / UPSAMPLED_TRAIN_FILE


def local_pool_file(root: Path, stem: str) -> Path:
    """Local candidate pool of a test task (MSCOCO pools carry ``_test`` in the name)."""
    name = f"mbeir_{stem}_test_cand_pool.jsonl" if stem.startswith("mscoco_") else f"mbeir_{stem}_cand_pool.jsonl"
    return root / "cand_pool" / "local" / name


def global_pool_file(root: Path, split: str) -> Path:
    """Union candidate pool of a split (train, val or test)."""
    return root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl"


def qrels_file(root: Path, split: str, stem: str) -> Path:
    """``qrels/<split>/mbeir_<stem>_<split>_qrels.txt``."""
    return root / "qrels" / split / f"mbeir_{stem}_{split}_qrels.txt"


def instructions_file(root: Path) -> Path:
    """``instructions/query_instructions.tsv``."""
    return root / "instructions" / "query_instructions.tsv"


def present_test_tasks(root: Path) -> list[TestTask]:
    """The standard test tasks whose query file exists under ``root``."""
    return [t for t in TEST_TASKS if query_file(root, "test", t.stem).exists()]


# --- parsing --------------------------------------------------------------------------
QUERY_FIELDS: dict[str, tuple[type, ...]] = {
    "qid": (str,),
    "query_txt": (str, type(None)),
    "query_img_path": (str, type(None)),
    "query_modality": (str,),
    "query_src_content": (str, type(None)),
    "pos_cand_list": (list,),
    "neg_cand_list": (list,),
    "task_id": (int,),
}
CANDIDATE_FIELDS: dict[str, tuple[type, ...]] = {
    "did": (str,),
    "txt": (str, type(None)),
    "img_path": (str, type(None)),
    "modality": (str,),
    "src_content": (str, type(None)),
}


def check_fields(obj: dict[str, Any], spec: dict[str, tuple[type, ...]], path: Path, where: str) -> None:
    """Every field of ``spec`` is present with an allowed type (bool never passes for int)."""
    for name, types in spec.items():
        if name not in obj:
            raise DataError(path, where, f"missing field '{name}'")
        value = obj[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise DataError(path, where, f"field '{name}' must be {want}, got {type(value).__name__}")


def check_id(value: str, field: str, path: Path, where: str) -> None:
    """An id must be ``<dataset_id>:<n>`` with a known dataset id and n >= 1."""
    head, sep, tail = value.partition(":")
    if not sep or not head.isdigit() or not tail.isdigit() or int(tail) < 1 or int(head) not in DATASETS:
        raise DataError(path, where, f"{field} '{value}' is not '<dataset_id>:<n>' with a known dataset id")


def check_modality(modality: str, txt: str | None, img: str | None, path: Path, where: str) -> None:
    """Modality must be known and agree with which of text and image are present."""
    if modality not in MODALITIES:
        raise DataError(path, where, f"unknown modality '{modality}' (expected one of {', '.join(MODALITIES)})")
    want_txt, want_img = "text" in modality, "image" in modality
    if want_txt != (txt is not None) or want_img != (img is not None):
        state = f"txt={'set' if txt is not None else 'null'}, image={'set' if img is not None else 'null'}"
        raise DataError(path, where, f"modality '{modality}' inconsistent with {state}")


def parse_query(obj: dict[str, Any], path: Path, lineno: int) -> QueryRecord:
    """Validate and convert one query object (``path``/``lineno`` locate errors)."""
    where = f"line {lineno}"
    check_fields(obj, QUERY_FIELDS, path, where)
    check_id(obj["qid"], "qid", path, where)
    check_modality(obj["query_modality"], obj["query_txt"], obj["query_img_path"], path, where)
    check_record_path(obj["query_img_path"], "query_img_path", path, f"{where} (record {obj['qid']})")
    for did in [*obj["pos_cand_list"], *obj["neg_cand_list"]]:
        if not isinstance(did, str):
            raise DataError(path, where, "candidate lists must hold did strings")
    if obj["task_id"] not in TASKS:
        raise DataError(path, where, f"unknown task_id {obj['task_id']}")
    return QueryRecord(
        qid=obj["qid"],
        query_txt=obj["query_txt"],
        query_img_path=obj["query_img_path"],
        query_modality=obj["query_modality"],
        query_src_content=obj["query_src_content"],
        pos_cand_list=tuple(obj["pos_cand_list"]),
        neg_cand_list=tuple(obj["neg_cand_list"]),
        task_id=obj["task_id"],
    )


def parse_candidate(obj: dict[str, Any], path: Path, lineno: int) -> CandidateRecord:
    """Validate and convert one candidate object."""
    where = f"line {lineno}"
    check_fields(obj, CANDIDATE_FIELDS, path, where)
    check_id(obj["did"], "did", path, where)
    check_modality(obj["modality"], obj["txt"], obj["img_path"], path, where)
    check_record_path(obj["img_path"], "img_path", path, f"{where} (record {obj['did']})")
    return CandidateRecord(obj["did"], obj["txt"], obj["img_path"], obj["modality"], obj["src_content"])


def iter_queries(path: Path) -> Iterator[QueryRecord]:
    """Stream query records of a file."""
    for lineno, obj in iter_jsonl(path):
        yield parse_query(obj, path, lineno)


def iter_numbered_queries(path: Path) -> Iterator[tuple[int, QueryRecord]]:
    """Stream ``(line, query record)`` pairs of a file."""
    for lineno, obj in iter_jsonl(path):
        yield lineno, parse_query(obj, path, lineno)


def iter_candidates(path: Path) -> Iterator[CandidateRecord]:
    """Stream candidate records of a pool file."""
    for lineno, obj in iter_jsonl(path):
        yield parse_candidate(obj, path, lineno)


def allows_repeats(path: Path) -> bool:
    """Whether a query file is a multiset: UniIR's upsampled union train file.

    UniIR builds ``mbeir_union_up_train.jsonl`` by sampling whole records with replacement
    (``random.choices``) without renaming qids, so a qid occurs several times, each time with
    the identical record. Every other query file (test, val, per-dataset train) has unique qids.
    """
    return path.name == UPSAMPLED_TRAIN_FILE


def differing_fields(a: QueryRecord, b: QueryRecord) -> list[str]:
    """Names of the fields in which two query records differ."""
    return [f for f in QUERY_FIELDS if getattr(a, f) != getattr(b, f)]


def load_queries(path: Path) -> list[QueryRecord]:
    """All queries of a file in file order, repeats included where the file allows them.

    A repeated qid is an error naming both lines and the qid, unless the file is the
    upsampled union train file (:func:`allows_repeats`) and the repeat is the identical record.
    """
    first: dict[str, tuple[int, QueryRecord]] = {}
    multiset = allows_repeats(path)
    out = []
    for lineno, q in iter_numbered_queries(path):
        prev = first.setdefault(q.qid, (lineno, q))
        if prev[0] != lineno:
            where = f"lines {prev[0]} and {lineno} (record {q.qid})"
            if not multiset:
                raise DataError(path, where, "duplicate qid (qids must be unique in this file)")
            if prev[1] != q:
                fields = ", ".join(differing_fields(prev[1], q))
                raise DataError(path, where, f"qid repeated with different content (fields {fields} differ)")
        out.append(q)
    return out


def distinct_queries(queries: Sequence[QueryRecord]) -> list[QueryRecord]:
    """The first occurrence of every qid, in order (a multiset's distinct records)."""
    first: dict[str, QueryRecord] = {}
    for q in queries:
        first.setdefault(q.qid, q)
    return list(first.values())


def train_query_files(root: Path, train_file: str) -> list[Path]:
    """The training query files ``data.train_file`` names: the union file or the ten per-dataset ones."""
    if train_file == "union_up":
        return [union_train_file(root)]
    if train_file == "per_dataset":
        return [train_query_file(root, name) for name in DATASETS.values()]
    raise ValueError(f"data.train_file must be 'union_up' or 'per_dataset', got {train_file!r}")


def load_train_queries(root: Path, train_file: str) -> list[QueryRecord]:
    """Training queries in file order: the union multiset (repeats kept) or the ten files concatenated.

    Raises:
        DataError: a file is missing, malformed, or (per-dataset) a qid occurs in two files.
    """
    out: list[QueryRecord] = []
    seen: dict[str, Path] = {}
    for path in train_query_files(root, train_file):
        if not path.is_file():
            raise DataError(path, "file", f"training query file missing (data.train_file: {train_file})")
        records = load_queries(path)
        for q in distinct_queries(records) if train_file == "per_dataset" else ():
            if seen.setdefault(q.qid, path) != path:
                raise DataError(path, f"record {q.qid}", f"qid also in {seen[q.qid]} (per-dataset files are disjoint)")
        out.extend(records)
    return out


def load_pool(path: Path) -> list[CandidateRecord]:
    """All candidates of a pool file; duplicate dids are an error."""
    seen: set[str] = set()
    out = []
    for c in iter_candidates(path):
        if c.did in seen:
            raise DataError(path, f"record {c.did}", "duplicate did in pool")
        seen.add(c.did)
        out.append(c)
    return out


def parse_qrels_line(line: str, path: Path, lineno: int, check_ids: bool = True) -> tuple[str, str, int]:
    """Parse ``qid 0 did 1 task_id``; return ``(qid, did, task_id)``.

    ``check_ids`` requires M-BEIR ids (``<dataset_id>:<n>``); off, any whitespace-free id passes.
    """
    parts = line.split()
    where = f"line {lineno}"
    if len(parts) != 5:
        raise DataError(path, where, f"qrels line must have 5 columns 'qid 0 did 1 task_id', got {len(parts)}")
    qid, zero, did, rel, task = parts
    if zero != "0" or rel != "1" or not task.isdigit():
        raise DataError(path, where, "qrels columns 2 and 4 must be '0' and '1', column 5 an integer task id")
    if check_ids:
        check_id(qid, "qid", path, where)
        check_id(did, "did", path, where)
    return qid, did, int(task)


def read_qrels(path: Path, check_ids: bool = True) -> dict[str, QrelsEntry]:
    """Read a qrels file into ``qid -> QrelsEntry`` (positives only); ids as in :func:`parse_qrels_line`."""
    pos: dict[str, set[str]] = {}
    task: dict[str, int] = {}
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        qid, did, task_id = parse_qrels_line(line, path, lineno, check_ids)
        pos.setdefault(qid, set()).add(did)
        task[qid] = task_id
    return {q: QrelsEntry(q, task[q], frozenset(d)) for q, d in pos.items()}


def format_qrels(entries: list[tuple[str, str, int]]) -> str:
    """Render ``(qid, did, task_id)`` triples as qrels lines."""
    return "".join(f"{q} 0 {d} 1 {t}\n" for q, d, t in entries)
