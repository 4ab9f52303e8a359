"""``download``: laying out a local copy in the real layout, the manifest, resuming, image parts."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from conftest import tiny_params

from trace_core.data import download
from trace_core.io import DataError, read_json, sha256_file
from trace_core.paths import Paths


def _with_download(params, **update):  # type: ignore[no-untyped-def]
    return params.model_copy(update={"download": params.download.model_copy(update=update)})


def _layout_files(root: Path) -> set[str]:
    return {r for r in download.walk_files(root) if not download.manifest_skips(r)}


def test_image_parts_join_order() -> None:
    names = ["README.md", "mbeir_images.tar.gz.part-10", "x/mbeir_images.tar.gz.part-02", "mbeir_images.tar.gz.part-00"]
    assert download.image_parts(names) == [
        "mbeir_images.tar.gz.part-00",
        "x/mbeir_images.tar.gz.part-02",
        "mbeir_images.tar.gz.part-10",
    ]
    assert download.ANNOTATION_PATTERNS == ("query/**", "cand_pool/**", "qrels/**", "instructions/**")
    assert download.is_layout_file("query/test/a.jsonl") and not download.is_layout_file("README.md")


def test_from_dir_manifest_and_resume(mini_root: Path, tmp_path: Path) -> None:
    params = tiny_params(tmp_path)
    out = tmp_path / "copy"
    download.run(params, Paths.from_params(params), from_dir=mini_root, out=out)
    manifest = read_json(out / "MANIFEST.json")
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == _layout_files(mini_root) == _layout_files(out)
    assert all(sha256_file(out / p) == f["sha256"] and (out / p).stat().st_size == f["size"] for p, f in listed.items())
    assert manifest["n_files"] == len(listed) and manifest["total_bytes"] == sum(f["size"] for f in listed.values())

    # resume after an interruption: the manifest is gone and one file is missing
    victim = next(p for p in listed if p.startswith("query/test/"))
    keep = next(p for p in listed if p.startswith("mbeir_images/"))
    before = (out / keep).stat().st_mtime_ns
    (out / "MANIFEST.json").unlink()
    (out / victim).unlink()
    download.run(params, Paths.from_params(params), from_dir=mini_root, out=out)
    assert read_json(out / "MANIFEST.json")["files"] == manifest["files"]
    assert (out / keep).stat().st_mtime_ns == before  # complete files are not copied again


def test_mini_profile_is_skipped_when_complete(mini_workspace: Path, mini_params) -> None:  # type: ignore[no-untyped-def]
    paths = Paths.from_params(mini_params)
    manifest = paths.data_root / "MANIFEST.json"
    stamp = manifest.stat().st_mtime_ns
    download.run(mini_params, paths)
    assert manifest.stat().st_mtime_ns == stamp
    assert read_json(manifest)["source"]["profile"] == "mini"


def test_image_parts_joined_and_extracted(mini_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "hub_copy"
    (src / "instructions").mkdir(parents=True)
    (src / "instructions" / "query_instructions.tsv").write_bytes(
        (mini_root / "instructions" / "query_instructions.tsv").read_bytes()
    )
    (src / "query").mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(mini_root / "mbeir_images", arcname="mbeir_images")
    blob = buf.getvalue()
    cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    for i in range(3):
        (src / f"mbeir_images.tar.gz.part-0{i}").write_bytes(blob[cut[i] : cut[i + 1]])
    params = _with_download(tiny_params(tmp_path), include_images=True)
    out = tmp_path / "out"
    download.run(params, Paths.from_params(params), from_dir=src, out=out)
    images = sorted(p for p in download.walk_files(out) if p.startswith("mbeir_images/"))
    assert images == sorted(p for p in download.walk_files(mini_root) if p.startswith("mbeir_images/"))
    assert all(sha256_file(out / p) == sha256_file(mini_root / p) for p in images[:20])
    assert (out / download.STATE_DIR / "images_extracted").exists()
    assert not (out / download.STATE_DIR / download.IMAGE_ARCHIVE).exists()
    assert all(
        not p.startswith(download.STATE_DIR) for p in (f["path"] for f in read_json(out / "MANIFEST.json")["files"])
    )


def test_full_profile_offline_is_a_clear_error(tmp_path: Path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    params = tiny_params(tmp_path)
    with pytest.raises(DataError, match="--from-dir"):
        download.run(params, Paths.from_params(params), profile="full", out=tmp_path / "full")
    assert not (tmp_path / "full" / "MANIFEST.json").exists()


def test_from_dir_must_look_like_mbeir(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    params = tiny_params(tmp_path)
    with pytest.raises(DataError, match="not an M-BEIR root"):
        download.run(params, Paths.from_params(params), from_dir=tmp_path / "junk", out=tmp_path / "o")
