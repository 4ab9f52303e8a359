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


def _logs(flow_run_id: object) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # the log worker sends in batches: everything the run wrote, then read
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(log_filter=flt, limit=200, offset=len(messages)):  # the API caps a page
            messages += [log.message for log in page]
    return messages


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
    arts = _artifacts(["trace-metrics-validate", "trace-mlflow-run", "trace-mlflow-links"])
    assert f"/runs/{parent}?workflowType=machine_learning" in str(arts["trace-mlflow-run"])  # a link to the UI
    links = str(arts["trace-mlflow-links"])
    assert f"[pipeline run {parent}](http://127.0.0.1:5000/#/experiments/" in links
    assert links.index("[download]") < links.index("[validate]")
    assert "success" in str(arts["trace-metrics-validate"])
    # stage lines land on the top-level run, which `prefect deployment run --watch` streams
    top = _logs(state.state_details.flow_run_id)
    for line in ("stage download: started", "stage download: finished", "stage validate: finished"):
        assert any(line in m for m in top), (line, top)
    assert any(m.startswith("validate | ") and "validation passed" in m for m in top), top

    # Nothing is stale: DVC skips both stages, and the empty MLflow parent is removed; the
    # links point at the live run that made the current outputs, not at the deleted one.
    again = trace_pipeline(config, phases=["data"], return_state=True)
    assert again.is_completed()
    assert yaml.safe_load((project / "dvc.lock").read_text()) == lock
    assert [r.info.run_id for r in _pipeline_runs(project)] == [parent]
    assert again.result()["mlflow_parent_run_id"] != parent
    assert f"/runs/{parent}?" in str(_artifacts(["trace-mlflow-run"])["trace-mlflow-run"])


def test_phases_are_chained(harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each phase subflow waits on the previous one, so the run graph draws them in order."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows import pipeline

    @flow(name="fake-phase")
    def fake_phase(config: object, parent_run_id: str = "") -> dict[str, dict[str, float]]:
        return {}

    monkeypatch.setattr(pipeline, "PHASE_FLOWS", dict.fromkeys(pipeline.PHASES, fake_phase))
    project = make_project(tmp_path / "project", {"tracking.enabled": False})
    state = pipeline.trace_pipeline(
        pipeline.RunConfig(project_dir=str(project)), phases=["data", "cot", "train"], return_state=True
    )
    assert state.is_completed(), state.message
    only_this = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=only_this)
    phases = sorted((r for r in runs if r.name.startswith("fake-phase")), key=lambda r: r.expected_start_time)
    assert len(phases) == 3
    assert "wait_for" not in phases[0].task_inputs
    for before, after in zip(phases, phases[1:], strict=False):
        assert [i.id for i in after.task_inputs["wait_for"]] == [before.id]


def test_stage_output_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pipeline import experiment_link, is_summary, mlflow_ui_url, run_link

    assert is_summary("2026-01-01 10:00:00,000 INFO trace_core.training.train: train: 22 steps")
    assert not is_summary("2026-01-01 10:00:00,000 INFO milvus_lite.server: started")
    assert not is_summary("Updating lock file 'dvc.lock'")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TRACE_MLFLOW_UI_URL", raising=False)
    assert mlflow_ui_url() == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org/")
    assert mlflow_ui_url() == "https://mlflow.example.org"
    assert run_link("http://h", "1", "abc") == "http://h/#/experiments/1/runs/abc?workflowType=machine_learning"
    assert experiment_link("http://h", "1").endswith("/#/experiments/1/runs?workflowType=machine_learning")


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
