"""``download`` fills the zero-shot root: zero-shot-mini (deterministic, real formats) or real copies."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import tiny_params

from trace_core.config import Params
from trace_core.data import download
from trace_core.data.zeroshot import DATASETS
from trace_core.evaluation.zeroshot.base import LoadContext
from trace_core.evaluation.zeroshot.suite import load_suite
from trace_core.io import DataError, read_json
from trace_core.paths import Paths


def _params(root: Path, **download_update: object) -> Params:
    raw = tiny_params(root).model_dump(by_alias=True, mode="json")
    raw["paths"]["zeroshot_root"] = str(root / "zs")
    raw["download"]["zeroshot_mini"] = {"queries": 4, "distractors": 2}
    raw["download"]["mini"]["image_size"] = 56
    raw["download"].update(download_update)
    return Params.model_validate(raw)


def _manifest(root: Path) -> dict:
    return read_json(root / "MANIFEST.json")


def test_mini_is_deterministic_complete_and_loadable(tmp_path: Path) -> None:
    a, b = _params(tmp_path / "a"), _params(tmp_path / "b")
    download.prepare_zeroshot(a, Paths.from_params(a), "mini", None)
    download.prepare_zeroshot(b, Paths.from_params(b), "mini", None)
    ma, mb = _manifest(tmp_path / "a" / "zs"), _manifest(tmp_path / "b" / "zs")
    assert ma == mb  # byte-identical files, no machine path or time inside
    listed = {f["path"] for f in ma["files"]}
    assert {p.split("/")[0] for p in listed} == set(DATASETS)
    assert {r for r in download.walk_files(tmp_path / "a" / "zs") if not download.manifest_skips(r)} == listed
    assert ma["source"]["profile"] == "mini" and "zs" not in str(ma["source"])
    tasks, missing = load_suite(LoadContext(tmp_path / "a" / "zs", tmp_path / "crops"), list(DATASETS))
    assert missing == [] and len({t.dataset for t in tasks}) == 10
    # a second run with the manifest current does nothing
    stamp = (tmp_path / "a" / "zs" / "MANIFEST.json").stat().st_mtime_ns
    download.prepare_zeroshot(a, Paths.from_params(a), "mini", None)
    assert (tmp_path / "a" / "zs" / "MANIFEST.json").stat().st_mtime_ns == stamp


def test_zeroshot_from_dir_lays_out_dataset_folders_only(tmp_path: Path) -> None:
    gen = _params(tmp_path / "gen")
    download.prepare_zeroshot(gen, Paths.from_params(gen), "mini", None)
    src = tmp_path / "my_zeroshot_copies"
    (src / "visdial").mkdir(parents=True)
    for rel in download.walk_files(tmp_path / "gen" / "zs" / "visdial"):
        download.link_or_copy(tmp_path / "gen" / "zs" / "visdial" / rel, src / "visdial" / rel)
    (src / "notes").mkdir()
    (src / "notes" / "readme.txt").write_text("not a dataset")
    (src / "visdial" / ".cache").write_text("hidden")
    params = _params(tmp_path / "ws", zeroshot_from_dir=str(src))
    download.prepare_zeroshot(params, Paths.from_params(params), "full", src)
    root = tmp_path / "ws" / "zs"
    manifest = _manifest(root)
    assert manifest["source"] == {"zeroshot_from_dir": "my_zeroshot_copies"}
    assert {f["path"].split("/")[0] for f in manifest["files"]} == {"visdial"}
    assert not (root / "notes").exists() and not (root / "visdial" / ".cache").exists()
    tasks, missing = load_suite(LoadContext(root, tmp_path / "crops"), list(DATASETS))
    assert [t.name for t in tasks] == ["visdial"] and len(missing) == 9


def test_no_zeroshot_source_and_bad_dir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    params = _params(tmp_path)
    with caplog.at_level(logging.WARNING):
        download.prepare_zeroshot(params, Paths.from_params(params), "full", None)
    assert _manifest(tmp_path / "zs")["files"] == [] and "download.zeroshot_from_dir" in caplog.text
    (tmp_path / "junk" / "stuff").mkdir(parents=True)
    with pytest.raises(DataError, match="no zero-shot dataset folder"):
        download.prepare_zeroshot(params, Paths.from_params(params), "full", tmp_path / "junk")


def test_the_download_stage_writes_both_roots(mini_workspace: Path) -> None:
    """The session's M-BEIR-mini was written by download.run, which also wrote zero-shot-mini."""
    mbeir, zeroshot = _manifest(mini_workspace / "data" / "mbeir"), _manifest(mini_workspace / "data" / "zeroshot")
    assert mbeir["source"]["profile"] == zeroshot["source"]["profile"] == "mini"
    assert {f["path"].split("/")[0] for f in zeroshot["files"]} == set(DATASETS)
