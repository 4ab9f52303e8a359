"""dvc.yaml agrees with the stage registry, params.yaml, the CLI, paths.py and the code it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from import_graph import closure, module_file

from trace_core.cli import app
from trace_core.config import load_params
from trace_core.paths import Paths
from trace_core.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ["download", "validate", "cot_generate", "cot_curate", "cot_build", "train", "self_train", "export"]
ELEVEN = [*PIPELINE, "index", "evaluate", "evaluate_zeroshot"]
#: code a stage may run without listing it: MLflow logging never changes a stage's outputs.
NOT_CODE_DEPS = ("trace_core.tracking",)


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


def test_eleven_stages_in_order(dvc_yaml: dict) -> None:
    assert list(dvc_yaml["stages"]) == list(STAGES) == ELEVEN


def test_every_params_key_exists(dvc_yaml: dict, params_raw: dict) -> None:
    for name, stage in dvc_yaml["stages"].items():
        assert stage.get("params"), f"stage {name} declares no params"
        for key in stage["params"]:
            assert isinstance(key, str), f"{name}: params from other files are not used"
            _lookup(params_raw, key)


def test_params_match_the_registry(dvc_yaml: dict) -> None:
    declared = {name: tuple(stage["params"]) for name, stage in dvc_yaml["stages"].items()}
    assert declared == {name: s.params for name, s in STAGES.items()}


def _code_deps(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if d.startswith("trace_core")}


def test_code_deps_match_the_registry(dvc_yaml: dict) -> None:
    for name, stage in dvc_yaml["stages"].items():
        assert _code_deps(stage) == set(STAGES[name].code), name
        for dep in STAGES[name].code:
            assert (ROOT / dep).exists(), f"{name}: code dep {dep} does not exist"


def _covered(rel: str, entries: tuple[str, ...]) -> bool:
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in entries)


def test_code_deps_cover_the_import_closure_of_each_run_function() -> None:
    """Every trace_core module a stage runs is a DVC dependency (so editing it re-runs the stage)."""
    for name, stage in STAGES.items():
        modules = closure(stage.run.__module__, skip=NOT_CODE_DEPS)
        files = {module_file(m).relative_to(ROOT).as_posix() for m in modules}  # type: ignore[union-attr]
        needed = {f for f in files if not f.endswith("__init__.py")}
        missing = sorted(f for f in needed if not _covered(f, stage.code))
        assert not missing, f"stage {name} runs {missing} but does not list them as code deps"
        unused = [e for e in stage.code if not any(_covered(f, (e,)) for f in needed)]
        assert not unused, f"stage {name} lists code deps it never runs: {unused}"


def test_outs_and_metrics_match_the_registry(dvc_yaml: dict) -> None:
    for name, stage in dvc_yaml["stages"].items():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
        assert tuple(outs) == STAGES[name].outs, name
        metrics = [next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])]
        want = [f"${{paths.metrics_dir}}/{STAGES[name].metrics}.json"] if STAGES[name].metrics else []
        assert metrics == want, name


def test_teacher_params_not_read_after_generation(dvc_yaml: dict) -> None:
    for name in ("cot_curate", "cot_build", "train", "export", "index", "evaluate", "evaluate_zeroshot"):
        assert not any(k.startswith("cot_generate") for k in dvc_yaml["stages"][name]["params"])
    assert "persist" in json.dumps(dvc_yaml["stages"]["cot_generate"]["outs"])


def test_commands_are_trace_cli(dvc_yaml: dict) -> None:
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    for name, stage in dvc_yaml["stages"].items():
        cli = STAGES[name].command
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
        "self_train": paths.self_model_dir,
        "export": paths.embeddings_dir,
        "index": paths.index_manifest,
        "evaluate": paths.metrics_file("mbeir"),
    }
    for stage, path in expected.items():
        assert str(path) in outs[stage], f"{stage}: {path} not among its outputs {outs[stage]}"
    order = list(expected)
    for before, after in zip(order, order[1:], strict=False):  # each stage consumes the previous one's output
        assert deps[after] & outs[before], f"{after} does not depend on an output of {before}"
    # the zero-shot suite branches off: the trained model and the zero-shot root from download
    assert str(paths.zeroshot_root) in outs["download"]
    assert {str(paths.model_dir), str(paths.zeroshot_root)} <= deps["evaluate_zeroshot"]
    assert str(paths.metrics_file("zeroshot")) in outs["evaluate_zeroshot"]
    # both load the served model (paths.served_model_dir): phase 1, or phase 2 with self_chain.enabled
    for stage in ("export", "evaluate_zeroshot"):
        assert {str(paths.model_dir), str(paths.self_model_dir)} <= deps[stage], stage
    assert str(paths.self_chains_dir) in outs["self_train"]


def test_stages_serving_the_model_read_the_switch(dvc_yaml: dict) -> None:
    """A stage that loads the served model re-runs when self_chain.enabled flips."""
    for name in ("export", "evaluate_zeroshot"):
        assert "self_chain.enabled" in dvc_yaml["stages"][name]["params"], name
    assert "persist" in json.dumps(dvc_yaml["stages"]["self_train"]["outs"])
