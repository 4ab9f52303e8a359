"""``validate`` on a generated M-BEIR-mini: it passes, and each rule catches its corruption."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import copy_tree, tiny_params

from trace_core.config import dump_params
from trace_core.data.validate import suite as validate
from trace_core.io import read_json
from trace_core.paths import Paths

QFILE = "query/test/mbeir_mscoco_task0_test.jsonl"
POOL = "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl"
QRELS = "qrels/test/mbeir_mscoco_task0_test_qrels.txt"


def test_mini_passes_and_writes_reports(mini_root: Path, mini_params) -> None:  # type: ignore[no-untyped-def]
    paths = Paths.from_params(mini_params)
    assert validate.run(mini_params, paths, data_root=mini_root)
    summary = read_json(paths.validation_dir / "summary.json")
    assert summary["success"] and summary["failed_checks"] == 0 and len(summary["found_test_tasks"]) == 16
    assert (paths.validation_dir / "data_docs" / "index.html").exists()
    metrics = read_json(paths.metrics_file("validation"))
    assert metrics["success"] == 1 and metrics["checks"] == len(validate.RULES) and metrics["found_test_tasks"] == 16


# --- corruptions ---------------------------------------------------------------------------------
def _edit(root: Path, rel: str, lineno: int, fn: Callable[[dict], object]) -> None:
    path = root / rel
    lines = path.read_text().splitlines(keepends=True)
    obj = json.loads(lines[lineno - 1])
    new = fn(obj)
    lines[lineno - 1] = (new if isinstance(new, str) else json.dumps(obj)) + "\n"
    path.write_text("".join(lines))


def _first(root: Path, rel: str, key: str, line: int = 1) -> str:
    return json.loads((root / rel).read_text().splitlines()[line - 1])[key]


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda o: o.__setitem__(key, value)


def _append(root: Path, rel: str, text: str) -> int:
    path = root / rel
    n = len(path.read_text().splitlines()) + 1
    path.write_text(path.read_text() + text)
    return n


def c_malformed(root: Path) -> tuple[str, str]:
    _edit(root, QFILE, 2, lambda o: '{"qid": "9:2", ')
    return "file_well_formed", f"{root / QFILE}:line 2: malformed JSON"


def c_missing_field(root: Path) -> tuple[str, str]:
    _edit(root, QFILE, 3, lambda o: o.pop("task_id"))
    return "file_well_formed", f"{root / QFILE}:line 3: missing field 'task_id'"


def c_unknown_modality(root: Path) -> tuple[str, str]:
    _edit(root, POOL, 1, _set("modality", "video"))
    return "candidate_modality_known", f"{root / POOL}:line 1 ({_first(root, POOL, 'did')})"


def c_dangling_qrels_qid(root: Path) -> tuple[str, str]:
    n = _append(root, QRELS, "9:99999 0 9:1 1 0\n")
    return "qrels_qid_in_query_file", f"{root / QRELS}:line {n} (9:99999)"


def c_dangling_qrels_did(root: Path) -> tuple[str, str]:
    n = _append(root, QRELS, f"{_first(root, QFILE, 'qid')} 0 9:99999 1 0\n")
    return "qrels_did_in_pool", f"{root / QRELS}:line {n}"


def c_missing_image(root: Path) -> tuple[str, str]:
    rel = _first(root, POOL, "img_path")
    (root / rel).unlink()
    return "image_exists", rel


def c_undecodable_image(root: Path) -> tuple[str, str]:
    rel = _first(root, POOL, "img_path")
    (root / rel).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return "image_decodes", rel


def c_duplicate_qid(root: Path) -> tuple[str, str]:
    _edit(root, QFILE, 2, _set("qid", _first(root, QFILE, "qid")))
    return "qid_unique_per_file", f"{root / QFILE}:line 2"


def c_duplicate_did(root: Path) -> tuple[str, str]:
    _edit(root, POOL, 2, _set("did", _first(root, POOL, "did")))
    return "did_unique_per_pool", f"{root / POOL}:line 2"


def c_bad_qid(root: Path) -> tuple[str, str]:
    _edit(root, QFILE, 4, _set("qid", "9-4"))
    return "qid_format", f"{root / QFILE}:line 4 (9-4)"


def c_modality_content(root: Path) -> tuple[str, str]:
    _edit(root, QFILE, 1, _set("query_txt", None))
    return "query_modality_matches_content", f"{root / QFILE}:line 1"


def c_task_modality(root: Path) -> tuple[str, str]:
    _edit(root, QFILE, 2, _set("task_id", 3))
    return "task_matches_query_modality", f"{root / QFILE}:line 2"


def c_positive_not_in_pool(root: Path) -> tuple[str, str]:
    _edit(root, QFILE, 5, _set("pos_cand_list", ["9:99999"]))
    return "positives_in_pool", f"{root / QFILE}:line 5"


def c_positive_wrong_dataset(root: Path) -> tuple[str, str]:
    _edit(root, QFILE, 6, _set("pos_cand_list", ["0:1"]))
    return "positive_datasets_allowed", f"{root / QFILE}:line 6"


def c_instructions_missing_key(root: Path) -> tuple[str, str]:
    path = root / "instructions" / "query_instructions.tsv"
    path.write_text("".join(ln for ln in path.read_text().splitlines(keepends=True) if "\tCIRR\t" not in ln))
    return "instruction_covered", f"{root / 'query/test/mbeir_cirr_task7_test.jsonl'}:line 1"


# --- issue 17: paths leaving the data root, bad bytes, truncated images, qrels coverage -----------
IMG_QFILE = "query/test/mbeir_mscoco_task3_test.jsonl"  # image queries


def _outside(root: Path) -> Path:
    secret = root.parent / "outside.txt"
    secret.write_text("not an image, and not the data's business\n")
    return secret


def c_image_absolute(root: Path) -> tuple[str, str]:
    secret = str(_outside(root))
    _edit(root, IMG_QFILE, 2, _set("query_img_path", secret))
    qid = _first(root, IMG_QFILE, "qid", 2)
    return "file_well_formed", f"{root / IMG_QFILE}:line 2 (record {qid}): query_img_path '{secret}'"


def c_image_dotdot(root: Path) -> tuple[str, str]:
    _outside(root)
    _edit(root, POOL, 3, _set("img_path", "../outside.txt"))
    did = _first(root, POOL, "did", 3)
    return "file_well_formed", f"{root / POOL}:line 3 (record {did}): img_path '../outside.txt'"


def c_image_symlink_out(root: Path) -> tuple[str, str]:
    rel = _first(root, IMG_QFILE, "query_img_path", 1)
    (root / rel).unlink()
    (root / rel).symlink_to(_outside(root))
    qid = _first(root, IMG_QFILE, "qid", 1)
    return "file_well_formed", f"{root / IMG_QFILE}:line 1 (record {qid}): query_img_path '{rel}'"


def c_non_utf8(root: Path) -> tuple[str, str]:
    path = root / QFILE
    lines = path.read_bytes().splitlines(keepends=True)
    offset = len(lines[0]) + len(lines[1]) + lines[2].index(b'"query_txt": "') + len('"query_txt": "')
    lines[2] = lines[2].replace(b'"query_txt": "', b'"query_txt": "\xff', 1)
    path.write_bytes(b"".join(lines))
    return "file_well_formed", f"{path}:line 3: not UTF-8: byte 0xff at byte offset {offset}"


def c_truncated_png(root: Path) -> tuple[str, str]:
    rel = _first(root, POOL, "img_path")
    data = (root / rel).read_bytes()
    (root / rel).write_bytes(data[: len(data) * 2 // 3])
    return "image_decodes", f"{rel} (referenced at {root / POOL}:line 1 ({_first(root, POOL, 'did')}))"


def c_query_not_in_qrels(root: Path) -> tuple[str, str]:
    qid = _first(root, QFILE, "qid", 2)
    path = root / QRELS
    path.write_text("".join(ln for ln in path.read_text().splitlines(keepends=True) if ln.split()[0] != qid))
    return "query_in_qrels", f"{root / QFILE}:line 2 ({qid})"


def c_missing_qrels_file(root: Path) -> tuple[str, str]:
    (root / QRELS).unlink()
    return "test_task_has_qrels", f"mscoco_task0: {root / QRELS}"


CORRUPTIONS = [
    c_malformed, c_missing_field, c_unknown_modality, c_dangling_qrels_qid, c_dangling_qrels_did,
    c_missing_image, c_undecodable_image, c_duplicate_qid, c_duplicate_did, c_bad_qid, c_modality_content,
    c_task_modality, c_positive_not_in_pool, c_positive_wrong_dataset, c_instructions_missing_key,
    c_image_absolute, c_image_dotdot, c_image_symlink_out, c_non_utf8, c_truncated_png, c_query_not_in_qrels,
    c_missing_qrels_file,
]  # fmt: skip


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__[2:])
def test_each_rule_catches_its_corruption(mini_root: Path, tmp_path: Path, corrupt) -> None:  # type: ignore[no-untyped-def]
    root = copy_tree(mini_root, tmp_path / "mbeir")
    rule, where = corrupt(root)
    summary = validate.validate_root(root, tmp_path / "reports", 1.0, 5)
    assert not summary["success"]
    failed = {f["rule"]: f for f in summary["failures"]}
    assert rule in failed, (rule, list(failed), summary["issues"])
    messages = failed[rule]["examples"] + (summary["issues"] if rule == "file_well_formed" else [])
    assert any(where in m for m in messages), (where, messages)
    assert all(rule in m or m in summary["issues"] for m in messages)
    assert (tmp_path / "reports" / "data_docs" / "index.html").exists()
    assert not list((tmp_path / "reports").glob(".data_docs.*"))  # temp build swapped in whole


def test_cli_exit_status_and_message(mini_root: Path, tmp_path: Path) -> None:
    root = copy_tree(mini_root, tmp_path / "mbeir")
    rule, where = c_dangling_qrels_did(root)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(dump_params(tiny_params(tmp_path))))
    out = subprocess.run(
        [sys.executable, "-m", "trace_core", "validate", "--params", str(params), "--data-root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert rule in out.stderr and where in out.stderr
    assert read_json(tmp_path / "metrics" / "validation.json")["success"] == 0
