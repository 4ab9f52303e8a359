"""Files named by records stay inside the data root; bad bytes and bad images are located (issue 17)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from trace_core.data.files import DataFiles, UnsafePathError, path_problem
from trace_core.data.mbeir import load_pool, load_queries, read_qrels
from trace_core.io import DataError, iter_jsonl
from trace_core.types import EncodeItem

QUERY = {
    "qid": "9:6", "query_txt": None, "query_img_path": "images/q.png", "query_modality": "image",
    "query_src_content": None, "pos_cand_list": ["9:2"], "neg_cand_list": [], "task_id": 3,
}  # fmt: skip
CANDIDATE = {"did": "9:2", "txt": None, "img_path": "images/c.png", "modality": "image", "src_content": None}


def png_bytes(size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A data root with one real image, one image linked inside and one linked outside."""
    root = tmp_path / "project" / "data" / "mbeir"
    (root / "images").mkdir(parents=True)
    (root / "images" / "q.png").write_bytes(png_bytes())
    (root / "images" / "inside.png").symlink_to(root / "images" / "q.png")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    (root / "images" / "out.png").symlink_to(secret)
    return root


@pytest.mark.parametrize(
    ("rel", "problem"),
    [
        ("images/q.png", None),
        ("images/./q.png", None),
        ("/etc/passwd", "absolute path"),
        ("../outside.png", "'..'"),
        ("images/../../outside.png", "'..'"),
        ("images\\..\\..\\x.png", "'..'"),
        ("C:\\x.png", "absolute path"),
        ("", "empty path"),
        ("images/a\x00.png", "NUL"),
    ],
)
def test_path_problem(rel: str, problem: str | None) -> None:
    found = path_problem(rel)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_resolver_follows_symlinks_and_refuses_the_outside(root: Path) -> None:
    files = DataFiles(root)
    assert files.resolve("images/q.png") == (root / "images" / "q.png").resolve()
    assert files.resolve("images/inside.png") == (root / "images" / "q.png").resolve()
    with pytest.raises(UnsafePathError, match="outside the data root") as err:
        files.resolve("images/out.png")
    assert "images/out.png" in str(err.value) and "secret.txt" in str(err.value)
    with pytest.raises(UnsafePathError, match="absolute path"):
        files.resolve(str(root / "images" / "q.png"))  # absolute even though it is inside
    with pytest.raises(UnsafePathError, match="'..'"):
        files.resolve("../mbeir/images/q.png")


def test_symlinks_into_the_dvc_cache_are_allowed(root: Path) -> None:
    project = root.parents[1]
    cached = project / ".dvc" / "cache" / "files" / "md5" / "ab" / "cdef"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(png_bytes())
    (root / "images" / "cached.png").symlink_to(cached)
    assert DataFiles(root).resolve("images/cached.png") == cached.resolve()
    other = project.parent / "elsewhere-cache"
    (project / ".dvc" / "config").write_text(f"[cache]\n    dir = {other}\n    type = symlink\n")
    (other / "x").mkdir(parents=True)
    (other / "x" / "y").write_bytes(png_bytes())
    (root / "images" / "cached2.png").symlink_to(other / "x" / "y")
    assert DataFiles(root).resolve("images/cached2.png") == (other / "x" / "y").resolve()


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.png", "images/../../x.png"])
def test_loaders_refuse_paths_leaving_the_root(tmp_path: Path, bad: str) -> None:
    q, c = tmp_path / "q.jsonl", tmp_path / "c.jsonl"
    q.write_text(json.dumps(QUERY) + "\n" + json.dumps({**QUERY, "qid": "9:7", "query_img_path": bad}) + "\n")
    c.write_text(json.dumps({**CANDIDATE, "img_path": bad}) + "\n")
    with pytest.raises(DataError) as err:
        load_queries(q)
    assert err.value.path == str(q) and err.value.where == "line 2 (record 9:7)"
    assert "query_img_path" in err.value.rule and repr(bad) in err.value.rule
    with pytest.raises(DataError) as err:
        load_pool(c)
    assert err.value.where == "line 1 (record 9:2)" and "img_path" in err.value.rule


def test_training_file_refuses_paths_leaving_the_root(tmp_path: Path) -> None:
    from trace_core.data.dataset import load_train_samples

    item = {"id": "9:2", "task_id": 3, "text": None, "img_path": "images/c.png"}
    row = {"qid": "9:6", "task_id": 3, "dataset_id": 9, "z": 0, "query": item, "positive": item, "target": "<|emb|>"}
    bad = {**row, "positive": {**item, "img_path": "/etc/passwd"}}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as err:
        load_train_samples(path)
    assert err.value.where == "line 2 (record 9:6)" and "'/etc/passwd'" in err.value.rule


def test_non_utf8_bytes_name_file_line_and_offset(tmp_path: Path) -> None:
    good = json.dumps(QUERY)
    bad = json.dumps({**QUERY, "qid": "9:7", "query_txt": "caf_"}).replace("caf_", "caf\xff")
    path = tmp_path / "q.jsonl"
    path.write_bytes(good.encode() + b"\n" + bad.encode("latin-1") + b"\n")
    offset = len(good) + 1 + bad.index("\xff")
    with pytest.raises(DataError) as err:
        list(iter_jsonl(path))
    assert err.value.where == "line 2" and f"byte offset {offset}" in err.value.rule and "0xff" in err.value.rule
    qrels = tmp_path / "qrels.txt"
    qrels.write_bytes(b"9:6 0 9:2 1 3\n9:7 0 9:\xfe 1 3\n")
    with pytest.raises(DataError, match="line 2: not UTF-8"):
        read_qrels(qrels)


def test_collate_refuses_outside_images_and_names_undecodable_ones(root: Path) -> None:
    from trace_core.model.collate import load_images

    assert len(load_images([EncodeItem("9:1", 3, None, "images/inside.png")], root)) == 1
    with pytest.raises(DataError) as err:
        load_images([EncodeItem("9:5", 3, None, "images/out.png")], root)
    assert "record 9:5" in str(err.value) and "outside the data root" in str(err.value)
    (root / "images" / "cut.png").write_bytes(png_bytes(64)[:-40])
    with pytest.raises(DataError) as err:
        load_images([EncodeItem("9:8", 3, None, "images/cut.png")], root)
    assert str(root / "images" / "cut.png") in str(err.value) and "record 9:8" in str(err.value)
    assert "does not decode" in str(err.value)


def test_teachers_name_undecodable_images(root: Path) -> None:
    from trace_core.cot.prompts import TeacherRequest
    from trace_core.cot.teacher_hf import load_images
    from trace_core.cot.teacher_openai import image_data_url

    cut = root / "images" / "cut.png"
    cut.write_bytes(png_bytes(64)[:-40])
    _, failed = load_images([TeacherRequest("9:8", "chain", "s", "u", str(cut))])
    assert str(cut) in (failed["9:8"].error or "") and "record 9:8" in (failed["9:8"].error or "")
    with pytest.raises(DataError) as err:
        image_data_url(str(cut), "9:8")
    assert str(cut) in str(err.value) and "record 9:8" in str(err.value)
    assert image_data_url(str(root / "images" / "q.png"), "9:6").startswith("data:image/png;base64,")
