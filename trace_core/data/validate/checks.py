"""Reading M-BEIR files leniently into tables whose boolean columns encode the validation rules.

Structural problems (bytes that are not UTF-8, malformed JSON, missing fields, wrong types,
bad qrels lines, an image path that leaves the data root) are collected as :class:`Issue` s
with file, line (and record) while streaming; every well-formed row goes into a pandas table
where cross-file rules (qrels ids resolvable, positives in the pool, test queries in their
qrels, instruction coverage, images present and decodable) become boolean columns that the
Great Expectations suites in :mod:`trace_core.data.validate` check. A path refused by
:mod:`trace_core.data.files` is never opened.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from trace_core.data.files import IMAGE_ERRORS, DataFiles
from trace_core.data.instructions import parse_instructions
from trace_core.data.mbeir import (
    CANDIDATE_FIELDS,
    CROSS_DATASET_POSITIVES,
    QUERY_FIELDS,
    TASKS,
    TEST_TASKS,
    TEST_TASKS_BY_STEM,
    allows_repeats,
    check_fields,
    global_pool_file,
    instructions_file,
    local_pool_file,
    parse_qrels_line,
    qrels_file,
    query_file,
)
from trace_core.io import DataError, decode_line, iter_raw_lines, parse_jsonl_line
from trace_core.types import MODALITIES

_QUERY_NAME = re.compile(r"^mbeir_(?P<stem>.+)_(?P<split>test|val)\.jsonl$")
_QRELS_NAME = re.compile(r"^mbeir_(?P<stem>.+)_(?P<split>test|val|train)_qrels\.txt$")


@dataclass(frozen=True)
class Issue:
    """A structural problem found while streaming: file, line or record, rule broken."""

    file: str
    where: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.where}: {self.rule}"


@dataclass
class Tables:
    """Everything the suites check, one table per file kind, plus streaming issues."""

    queries: pd.DataFrame
    candidates: pd.DataFrame
    qrels: pd.DataFrame
    images: pd.DataFrame
    instructions: pd.DataFrame
    files: pd.DataFrame
    tasks: pd.DataFrame
    issues: list[Issue] = field(default_factory=list)
    found_test_tasks: list[str] = field(default_factory=list)


# --- discovery --------------------------------------------------------------------------------------
def discover(root: Path) -> dict[str, list[Path]]:
    """The M-BEIR files present under ``root``, by kind (sorted for stable reports)."""
    return {
        "queries": sorted((root / "query").glob("*/*.jsonl")),
        "candidates": sorted((root / "cand_pool").glob("*/*.jsonl")),
        "qrels": sorted((root / "qrels").glob("*/*.txt")),
    }


def query_pool(root: Path, qfile: Path) -> Path:
    """The pool a query file's positives must resolve in: local for test, union otherwise."""
    split = qfile.parent.name
    m = _QUERY_NAME.match(qfile.name)
    if split == "test" and m:
        return local_pool_file(root, m.group("stem"))
    return global_pool_file(root, "train" if split in ("train", "union_train") else split)


def expected_task(path: Path, pattern: re.Pattern[str]) -> tuple[int, int] | None:
    """(dataset_id, task_id) named by a standard test/val file name, else None."""
    m = pattern.match(path.name)
    task = TEST_TASKS_BY_STEM.get(m.group("stem")) if m else None
    return (task.dataset_id, task.task_id) if task else None


# --- lenient streaming ------------------------------------------------------------------------------
def iter_objects(
    path: Path, spec: dict[str, tuple[type, ...]], issues: list[Issue]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line, object)`` for well-formed lines; record an issue for every other line."""
    for lineno, offset, raw in iter_raw_lines(path):
        try:
            obj = parse_jsonl_line(path, lineno, decode_line(raw, path, lineno, offset))
            if obj is None:
                continue
            check_fields(obj, spec, path, f"line {lineno}")
        except DataError as err:
            issues.append(Issue(err.path, err.where, err.rule))
            continue
        yield lineno, obj


def record_key(obj: dict[str, Any]) -> str:
    """A digest of a query record's M-BEIR fields (equal records, equal keys; key order ignored)."""
    fields = {k: obj[k] for k in QUERY_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def safe_image(
    img: str | None, field: str, files: DataFiles, path: Path, where: str, issues: list[Issue]
) -> str | None:
    """``img`` if it resolves inside the data root; else an issue is recorded and None returned."""
    problem = files.problem(img) if img is not None else None
    if problem:
        issues.append(Issue(str(path), where, f"{field} {problem}"))
        return None
    return img


def read_queries(path: Path, files: DataFiles, issues: list[Issue]) -> list[dict[str, Any]]:
    """Query rows of one file (the columns the rules need, a digest of the record; unsafe image paths become None)."""
    rows = []
    for lineno, o in iter_objects(path, QUERY_FIELDS, issues):
        pos = [d for d in o["pos_cand_list"] if isinstance(d, str)]
        if len(pos) != len(o["pos_cand_list"]):
            issues.append(Issue(str(path), f"line {lineno}", "pos_cand_list must hold did strings"))
            continue
        where = f"line {lineno} (record {o['qid']})"
        rows.append(
            {
                "file": str(path),
                "line": lineno,
                "qid": o["qid"],
                "has_txt": o["query_txt"] is not None,
                "has_img": o["query_img_path"] is not None,
                "img_path": safe_image(o["query_img_path"], "query_img_path", files, path, where, issues),
                "query_modality": o["query_modality"],
                "task_id": o["task_id"],
                "positives": pos,
                "record": record_key(o),
            }
        )
    return rows


def read_candidates(path: Path, files: DataFiles, issues: list[Issue]) -> list[dict[str, Any]]:
    """Candidate rows of one pool file (unsafe image paths become None)."""
    return [
        {
            "file": str(path),
            "line": lineno,
            "did": o["did"],
            "has_txt": o["txt"] is not None,
            "has_img": o["img_path"] is not None,
            "img_path": safe_image(
                o["img_path"], "img_path", files, path, f"line {lineno} (record {o['did']})", issues
            ),
            "modality": o["modality"],
        }
        for lineno, o in iter_objects(path, CANDIDATE_FIELDS, issues)
    ]


def read_qrels_rows(path: Path, issues: list[Issue]) -> list[dict[str, Any]]:
    """Qrels rows; a malformed line (or one that is not UTF-8) is an issue, not an exception."""
    rows = []
    for lineno, offset, raw in iter_raw_lines(path):
        try:
            line = decode_line(raw, path, lineno, offset)
            if not line.strip():
                continue
            qid, did, task = parse_qrels_line(line, path, lineno)
        except DataError as err:
            issues.append(Issue(err.path, err.where, err.rule))
            continue
        rows.append({"file": str(path), "line": lineno, "qid": qid, "did": did, "task_id": task})
    return rows


# --- rule columns (pure) ----------------------------------------------------------------------------
def modality_matches(modality: str, has_txt: bool, has_img: bool) -> bool:
    """Modality names exactly the parts that are present."""
    return modality in MODALITIES and ("text" in modality) == has_txt and ("image" in modality) == has_img


def _dataset(id_: str) -> int | None:
    head = id_.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def positive_datasets_ok(qid: str, positives: list[str]) -> bool:
    """Positives come from the query's dataset (OVEN/InfoSeek may cross to each other)."""
    ds = _dataset(qid)
    allowed = CROSS_DATASET_POSITIVES.get(ds, frozenset({ds})) if ds is not None else frozenset()
    return all(_dataset(d) in allowed for d in positives)


def query_rules(
    q: pd.DataFrame, pools: dict[str, dict[str, str]], pool_of: dict[str, str], keys: set[tuple[int, str, str]]
) -> pd.DataFrame:
    """Add the query rule columns; ``pools`` maps pool file -> did -> modality."""
    out = q.copy()
    out["modality_matches_content"] = [
        modality_matches(m, t, i) for m, t, i in zip(out.query_modality, out.has_txt, out.has_img, strict=True)
    ]
    qmod = [TASKS.get(t, ("?", "?"))[0] for t in out.task_id]
    out["task_matches_query_modality"] = [a == b for a, b in zip(qmod, out.query_modality, strict=True)]
    out["positive_datasets_allowed"] = [positive_datasets_ok(a, p) for a, p in zip(out.qid, out.positives, strict=True)]
    resolved, kinds = [], []
    for f, pos, task in zip(out.file, out.positives, out.task_id, strict=True):
        pool = pools.get(pool_of[f], {})
        resolved.append(all(d in pool for d in pos))
        want = TASKS.get(task, ("?", "?"))[1]
        kinds.append(all(pool[d] == want for d in pos if d in pool))
    out["positives_in_pool"] = resolved
    out["positives_match_task_modality"] = kinds
    out["instruction_covered"] = [
        (_dataset(qid), m, TASKS.get(t, ("?", "?"))[1]) in keys
        for qid, m, t in zip(out.qid, out.query_modality, out.task_id, strict=True)
    ]
    out["qid_unique"], out["repeat_identical"] = repeat_columns(out)
    expected = {f: expected_task(Path(f), _QUERY_NAME) for f in out.file.unique()}
    out["task_matches_file"] = [
        expected[f] is None or expected[f] == (_dataset(qid), t)
        for f, qid, t in zip(out.file, out.qid, out.task_id, strict=True)
    ]
    return out.drop(columns=["positives", "record"])


def repeat_columns(q: pd.DataFrame) -> tuple[list[bool], list[bool]]:
    """``qid_unique`` and ``repeat_identical`` flags of query rows (every row of a bad qid is False).

    A qid must occur once per file, except in UniIR's upsampled union train file
    (:func:`~trace_core.data.mbeir.allows_repeats`), where it may repeat as the identical record.
    """
    if q.empty:
        return [], []
    per_key = q.groupby(["file", "qid"], sort=False)["record"]
    count = per_key.transform("size")
    variants = per_key.transform("nunique")
    multiset = q.file.map(lambda f: allows_repeats(Path(f)))
    unique = (multiset | (count == 1)).tolist()
    identical = (~multiset | (variants == 1)).tolist()
    return unique, identical


def candidate_rules(c: pd.DataFrame) -> pd.DataFrame:
    """Add the candidate rule columns."""
    out = c.copy()
    out["modality_matches_content"] = [
        modality_matches(m, t, i) for m, t, i in zip(out.modality, out.has_txt, out.has_img, strict=True)
    ]
    return out


def qrels_rules(
    r: pd.DataFrame, qids: dict[str, set[str]], pools: dict[str, dict[str, str]], root: Path
) -> pd.DataFrame:
    """Add ``qid_in_query_file``, ``did_in_pool`` and ``task_matches_file`` (per qrels file)."""
    out = r.copy()
    in_q, in_pool, task_ok = [], [], []
    for f, qid, did, task in zip(out.file, out.qid, out.did, out.task_id, strict=True):
        m = _QRELS_NAME.match(Path(f).name)
        stem, split = (m.group("stem"), m.group("split")) if m else ("", "")
        qf = str(query_file(root, split, stem))
        in_q.append(qid in qids.get(qf, set()))
        pool = str(local_pool_file(root, stem) if split == "test" else global_pool_file(root, split))
        in_pool.append(did in pools.get(pool, {}))
        exp = expected_task(Path(f), _QRELS_NAME)
        task_ok.append(exp is None or exp[1] == task)
    out["qid_in_query_file"], out["did_in_pool"], out["task_matches_file"] = in_q, in_pool, task_ok
    return out


def query_in_qrels(q: pd.DataFrame, qrels: pd.DataFrame, root: Path) -> list[bool]:
    """Per query: a test query (standard file name) has a line in its task's qrels file."""
    by_file: dict[str, set[str]] = {}
    for f, qid in zip(qrels.file, qrels.qid, strict=True):
        by_file.setdefault(f, set()).add(qid)
    out = []
    for f, qid in zip(q.file, q.qid, strict=True):
        m = _QUERY_NAME.match(Path(f).name)
        if Path(f).parent.name != "test" or not m or m.group("split") != "test":
            out.append(True)
            continue
        out.append(qid in by_file.get(str(qrels_file(root, "test", m.group("stem"))), set()))
    return out


def task_table(root: Path, stems: list[str]) -> pd.DataFrame:
    """One row per test task present: its qrels file and whether it exists."""
    rows = [
        {
            "stem": stem,
            "qrels_file": str(qrels_file(root, "test", stem)),
            "has_qrels": qrels_file(root, "test", stem).is_file(),
        }
        for stem in stems
    ]
    return pd.DataFrame(rows, columns=["stem", "qrels_file", "has_qrels"])


def sampled(path: str, fraction: float) -> bool:
    """Stable pseudo-random sample of image paths (same paths for the same fraction)."""
    if fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def decodes(path: Path) -> bool:
    """Whether a file exists and PIL can fully decode it."""
    try:
        with Image.open(path) as im:
            im.load()
    except IMAGE_ERRORS:
        return False
    return True


def image_table(refs: dict[str, str], root: Path, fraction: float) -> pd.DataFrame:
    """One row per referenced image (sampled): where it is referenced, exists, decodes.

    ``refs`` holds only paths :class:`~trace_core.data.files.DataFiles` accepted, so every file
    opened here lies inside the data root.
    """
    rows = []
    for rel, ref in refs.items():
        if not sampled(rel, fraction):
            continue
        p = root / rel
        exists = p.is_file()  # a missing file fails image_exists only, not image_decodes too
        rows.append({"img_path": rel, "referenced_at": ref, "exists": exists, "decodes": not exists or decodes(p)})
    return pd.DataFrame(rows, columns=["img_path", "referenced_at", "exists", "decodes"])


def instruction_table(root: Path, issues: list[Issue]) -> tuple[pd.DataFrame, set[tuple[int, str, str]]]:
    """Instruction keys as a table (empty when the file is missing or unparsable)."""
    path = instructions_file(root)
    cols = ["file", "line", "dataset_id", "query_modality", "cand_modality", "n_prompts"]
    if not path.exists():
        return pd.DataFrame(columns=cols), set()
    try:
        instr = parse_instructions(path)
    except DataError as err:
        issues.append(Issue(err.path, err.where, err.rule))
        return pd.DataFrame(columns=cols), set()
    rows = [
        {
            "file": str(path),
            "line": i + 2,
            "dataset_id": k[0],
            "query_modality": k[1],
            "cand_modality": k[2],
            "n_prompts": len(v),
        }
        for i, (k, v) in enumerate(instr.prompts.items())
    ]
    return pd.DataFrame(rows, columns=cols), set(instr.prompts)


def found_tasks(root: Path) -> list[str]:
    """Stems of the 16 standard test tasks whose test query file is present."""
    return [t.stem for t in TEST_TASKS if query_file(root, "test", t.stem).exists()]


QUERY_COLUMNS = [
    "file",
    "line",
    "qid",
    "has_txt",
    "has_img",
    "img_path",
    "query_modality",
    "task_id",
    "positives",
    "record",
]
CANDIDATE_COLUMNS = ["file", "line", "did", "has_txt", "has_img", "img_path", "modality"]
QRELS_COLUMNS = ["file", "line", "qid", "did", "task_id"]


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def _image_refs(frames: list[tuple[pd.DataFrame, str]]) -> dict[str, str]:
    """First reference (file, line, record id) of every image path; queries and local pools first."""
    refs: dict[str, str] = {}
    for union_pass in (False, True):
        for df, id_col in frames:
            for f, line, ident, img in zip(df.file, df.line, df[id_col], df.img_path, strict=True):
                if isinstance(img, str) and img not in refs and ("/global/" in f) == union_pass:
                    refs[img] = f"{f}:line {line} ({ident})"
    return refs


def file_table(files: list[Path], issues: list[Issue]) -> pd.DataFrame:
    """One row per file read: whether it streamed without structural issues (first one named)."""
    first: dict[str, str] = {}
    for issue in issues:
        first.setdefault(issue.file, str(issue))
    rows = [{"file": str(p), "well_formed": str(p) not in first, "first_issue": first.get(str(p), "")} for p in files]
    return pd.DataFrame(rows, columns=["file", "well_formed", "first_issue"])


def collect(root: Path, image_fraction: float) -> Tables:
    """Stream every M-BEIR file under ``root`` and build the rule tables."""
    issues: list[Issue] = []
    found = discover(root)
    files = DataFiles(root)
    cand = {str(p): read_candidates(p, files, issues) for p in found["candidates"]}
    pools = {f: {r["did"]: r["modality"] for r in rows} for f, rows in cand.items()}
    qrows = {str(p): read_queries(p, files, issues) for p in found["queries"]}
    qrels = _frame([r for p in found["qrels"] for r in read_qrels_rows(p, issues)], QRELS_COLUMNS)
    instructions, keys = instruction_table(root, issues)
    pool_of = {f: str(query_pool(root, Path(f))) for f in qrows}
    queries = _frame([r for rows in qrows.values() for r in rows], QUERY_COLUMNS)
    queries["in_qrels"] = query_in_qrels(queries, qrels, root)
    candidates = candidate_rules(_frame([r for rows in cand.values() for r in rows], CANDIDATE_COLUMNS))
    qids = {f: {r["qid"] for r in rows} for f, rows in qrows.items()}
    instr_files = [instructions_file(root)] if instructions_file(root).exists() else []
    tasks = found_tasks(root)
    return Tables(
        queries=query_rules(queries, pools, pool_of, keys),
        candidates=candidates,
        qrels=qrels_rules(qrels, qids, pools, root),
        images=image_table(_image_refs([(queries, "qid"), (candidates, "did")]), root, image_fraction),
        instructions=instructions,
        files=file_table([*found["queries"], *found["candidates"], *found["qrels"], *instr_files], issues),
        tasks=task_table(root, tasks),
        issues=issues,
        found_test_tasks=tasks,
    )
