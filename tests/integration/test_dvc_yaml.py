"""dvc.yaml agrees with params.yaml, the CLI, paths.py and the tracking adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trace_core.cli import app
from trace_core.config import load_params
from trace_core.paths import Paths

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["download", "validate", "cot_generate", "cot_curate", "cot_build", "train", "export", "index", "evaluate"]


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


@pytest.fixture(scope="module")
def params_raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _lookup(raw: dict, dotted: str) -> object:
    node: object = raw
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"params.yaml has no key {dotted!r}"
        node = node[part]
    return node


def test_nine_stages_in_order(dvc_yaml: dict) -> None:
    assert list(dvc_yaml["stages"]) == STAGES


def test_every_params_key_exists(dvc_yaml: dict, params_raw: dict) -> None:
    for name, stage in dvc_yaml["stages"].items():
        assert stage.get("params"), f"stage {name} declares no params"
        for key in stage["params"]:
            assert isinstance(key, str), f"{name}: params from other files are not used"
            _lookup(params_raw, key)


def test_params_match_tracking_sections(dvc_yaml: dict) -> None:
    from trace_core.tracking import STAGE_SECTIONS

    declared = {name: tuple(stage["params"]) for name, stage in dvc_yaml["stages"].items()}
    assert declared == STAGE_SECTIONS


def test_teacher_params_not_read_after_generation(dvc_yaml: dict) -> None:
    for name in ("cot_curate", "cot_build", "train", "export", "index", "evaluate"):
        assert not any(k.startswith("cot_generate") for k in dvc_yaml["stages"][name]["params"])
    assert "persist" in json.dumps(dvc_yaml["stages"]["cot_generate"]["outs"])


def test_commands_are_trace_cli(dvc_yaml: dict) -> None:
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    for name, stage in dvc_yaml["stages"].items():
        cli = name.replace("_", "-")
        assert stage["cmd"] == f"trace {cli} -p params.yaml"
        assert cli in commands


def test_dvc_resolves_templated_paths() -> None:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        outs = {s.name: {str(o.def_path) for o in s.outs} for s in repo.index.stages}
        deps = {s.name: {str(d.def_path) for d in s.deps} for s in repo.index.stages}
    paths = Paths.from_params(load_params(ROOT / "params.yaml"), root=Path("."))
    expected = {
        "download": paths.data_root,
        "validate": paths.metrics_file("validation"),
        "cot_generate": paths.cot_raw_dir,
        "cot_curate": paths.cot_curated,
        "cot_build": paths.cot_train,
        "train": paths.model_dir,
        "export": paths.embeddings_dir,
        "index": paths.index_dir,
        "evaluate": paths.metrics_file("mbeir"),
    }
    for stage, path in expected.items():
        assert str(path) in outs[stage], f"{stage}: {path} not among its outputs {outs[stage]}"
    order = list(expected)
    for before, after in zip(order, order[1:], strict=False):  # each stage consumes the previous one's output
        assert deps[after] & outs[before], f"{after} does not depend on an output of {before}"
