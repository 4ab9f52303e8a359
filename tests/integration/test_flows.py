"""Prefect flows on a real (temporary) Prefect server running real `dvc repro` stages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _trace_project import make_project, run

from flows.dvc import dvc_command, format_override


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _artifacts(keys: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    return {a.key: a.data for a in found}


def _pipeline_runs(project: Path) -> list:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("trace")
    return client.search_runs([exp.experiment_id], filter_string="tags.`trace.kind` = 'pipeline'")


def _children(project: Path, parent: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns.db'}")
    exp = client.get_experiment_by_name("trace")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return sorted(r.data.tags["trace.stage"] for r in runs)


def test_dvc_command_forms() -> None:
    assert dvc_command(["train"], {})[1:] == ["repro", "train"]
    cmd = dvc_command(["validate"], {"train.lambda_gen": 0.0, "export.routing": "never"}, force=True)
    assert cmd[1:] == [
        "exp",
        "run",
        "-S",
        "export.routing=never",
        "-S",
        "train.lambda_gen=0.0",
        "--force",
        "--single-item",
        "validate",
    ]
    assert format_override("a.b", [5, 6]) == "a.b=[5, 6]"
    assert format_override("a.b", None) == "a.b=null"


def test_data_phase_runs_dvc_and_publishes(harness: None, tmp_path: Path) -> None:
    from flows.pipeline import RunConfig, trace_pipeline

    project = make_project(tmp_path / "project")
    config = RunConfig(project_dir=str(project))
    state = trace_pipeline(config, phases=["data"], return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["data"]["validate"]["success"] == 1.0
    assert (project / "data/mbeir/MANIFEST.json").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"download", "validate"}
    assert "up to date" in run(["dvc", "status", "validate"], project).stdout

    parent = result["mlflow_parent_run_id"]
    assert _children(project, parent) == ["download", "validate"]
    arts = _artifacts(["trace-metrics-validate", "trace-mlflow-run"])
    assert parent in str(arts["trace-mlflow-run"])
    assert "success" in str(arts["trace-metrics-validate"])

    # Nothing is stale: DVC skips both stages, and the empty MLflow parent is removed.
    again = trace_pipeline(config, phases=["data"], return_state=True)
    assert again.is_completed()
    assert yaml.safe_load((project / "dvc.lock").read_text()) == lock
    assert [r.info.run_id for r in _pipeline_runs(project)] == [parent]


@pytest.mark.slow
def test_overrides_become_dvc_experiment(harness: None, tmp_path: Path) -> None:
    from flows.pipeline import RunConfig, trace_pipeline

    project = make_project(tmp_path / "project")
    run(["dvc", "repro", "validate"], project)
    config = RunConfig(project_dir=str(project), overrides={"validate.max_failures_listed": 7})
    state = trace_pipeline(config, phases=["data"], return_state=True)
    assert state.is_completed(), state.message
    assert yaml.safe_load((project / "params.yaml").read_text())["validate"]["max_failures_listed"] == 7
    exps = run(["dvc", "exp", "ls", "--name-only"], project).stdout.split()
    assert exps, "dvc exp run recorded no experiment"
    # only validate read the changed key; download was not re-run
    assert _children(project, state.result()["mlflow_parent_run_id"]) == ["validate"]
