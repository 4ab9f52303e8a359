"""MLflow adapter: parent/child runs, tags, and the champion promotion rule on a real store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from trace_core import tracking
from trace_core.config import Params
from trace_core.stages import STAGES
from trace_core.tracking.runs import LAST_STAGE, stage_params


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")  # one database for the module: migrations run once


@pytest.fixture()
def params(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Params:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    monkeypatch.setenv("DVC_STAGE", "test")  # as under `dvc repro`: stage runs hang under one parent
    monkeypatch.chdir(tmp_path)
    name = request.node.name.replace("_", "-")
    raw = {
        "tracking": {
            "tracking_uri": f"sqlite:///{store / 'mlruns.db'}",
            "artifact_location": str(store / "mlartifacts" / name),
            "experiment": f"exp-{name}",
            "registered_model": f"model-{name}",
        }
    }
    return Params.model_validate(raw)


def _client(params: Params):
    uri = params.tracking.tracking_uri
    return mlflow.tracking.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_decide_alias_rule() -> None:
    assert tracking.decide_alias(0.1, "1", None) == "champion"
    assert tracking.decide_alias(0.5, "2", ("1", 0.4)) == "champion"
    assert tracking.decide_alias(0.4, "2", ("1", 0.4)) == "challenger"  # ties do not promote
    assert tracking.decide_alias(0.3, "2", ("1", 0.4)) == "challenger"
    assert tracking.decide_alias(0.0, "1", ("1", 0.4)) == "champion"  # re-evaluating the champion


def test_champion_scored_on_other_data_is_not_compared() -> None:
    from trace_core.tracking.registry import comparable_champion

    assert comparable_champion(None, "abc") is None
    assert comparable_champion(("1", 0.15, "abc"), "abc") == ("1", 0.15)
    # a higher average on another test set (e.g. 64 instead of 200 queries per task) does not block promotion
    assert comparable_champion(("1", 0.15, "old"), "abc") is None
    assert tracking.decide_alias(0.10, "2", comparable_champion(("1", 0.15, "old"), "abc")) == "champion"


def test_params_hash_and_stage_params(params: Params) -> None:
    assert len(tracking.params_hash(params)) == 12
    other = params.model_copy(update={"base": params.base.model_copy(update={"seed": 7})})
    assert tracking.params_hash(other) != tracking.params_hash(params)
    sp = stage_params(params, STAGES["train"].params)
    assert "base.seed" in sp and "train.lambda_gen" in sp and "model.family" in sp
    assert not any(k.startswith(("export.", "base.run_name")) for k in sp)


def test_stages_share_one_parent(params: Params) -> None:
    with tracking.stage_run(params, "download", STAGES["download"].params) as first:
        tracking.log_metrics({"n_queries": 3, "bad": float("nan"), "flag": True})
    with tracking.stage_run(params, "validate") as second:
        tracking.log_metrics({"success": 1.0})
    client = _client(params)
    a, b = client.get_run(first), client.get_run(second)
    parent = a.data.tags["mlflow.parentRunId"]
    assert parent == b.data.tags["mlflow.parentRunId"]
    assert a.data.tags[tracking.TAG_PARAMS_HASH] == tracking.params_hash(params)
    assert a.data.tags[tracking.TAG_STAGE] == "download"
    assert a.data.metrics == {"n_queries": 3.0}
    assert a.data.params["download.profile"] == "mini"
    assert client.get_run(parent).info.status == "RUNNING"
    with tracking.stage_run(params, "evaluate"):
        pass
    assert client.get_run(parent).info.status == "RUNNING"  # evaluate is not the last stage any more
    assert LAST_STAGE == list(STAGES)[-1] == "evaluate_zeroshot"
    with tracking.stage_run(params, LAST_STAGE):
        pass
    assert client.get_run(parent).info.status == "FINISHED"  # the last stage closes it
    with tracking.stage_run(params, "download") as again:
        pass
    assert client.get_run(again).data.tags["mlflow.parentRunId"] != parent


def test_outside_a_pipeline_a_stage_is_one_run_that_always_ends(
    params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trace validate --data-root DIR` typed by a user: one top-level run, never a dangling parent."""
    monkeypatch.delenv("DVC_STAGE")
    client = _client(params)
    with tracking.stage_run(params, "validate") as ok:
        pass
    with pytest.raises(ValueError), tracking.stage_run(params, "validate") as bad:
        raise ValueError("bad data")
    assert client.get_run(ok).info.status == "FINISHED" and client.get_run(bad).info.status == "FAILED"
    assert "mlflow.parentRunId" not in client.get_run(ok).data.tags
    exp = client.get_experiment_by_name(params.tracking.experiment)
    running = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert running == []


def test_env_parent_and_failed_stage(params: Params, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = tracking.start_pipeline(params, reuse=False)
    monkeypatch.setenv(tracking.PARENT_ENV, parent)
    with pytest.raises(RuntimeError), tracking.stage_run(params, "train") as rid:
        raise RuntimeError("boom")
    client = _client(params)
    assert client.get_run(rid).info.status == "FAILED"
    assert client.get_run(rid).data.tags["mlflow.parentRunId"] == parent
    tracking.end_pipeline(params, parent)
    assert client.get_run(parent).info.status == "FINISHED"
    empty = tracking.start_pipeline(params, reuse=False)
    tracking.end_pipeline(params, empty)  # no stage ran: deleted
    assert client.get_run(empty).info.lifecycle_stage == "deleted"


def test_disabled_is_noop(params: Params) -> None:
    off = params.model_copy(update={"tracking": params.tracking.model_copy(update={"enabled": False})})
    with tracking.stage_run(off, "download") as rid:
        tracking.log_metrics({"x": 1.0})
    assert rid == ""
    assert not Path("mlruns.db").exists()


def _constructed_version(params: Params, client, run_id: str) -> str:
    name = params.tracking.registered_model
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass
    return str(client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id).version)


def test_promotion_on_constructed_runs(params: Params, tmp_path: Path) -> None:
    client = _client(params)
    name = params.tracking.registered_model
    scores = [0.30, 0.25, 0.45, 0.45]
    expected = ["champion", "challenger", "champion", "challenger"]
    for score, want in zip(scores, expected, strict=True):
        with tracking.stage_run(params, "evaluate") as rid:
            version = _constructed_version(params, client, rid)
            assert tracking.promote(params, version, score) == want
        decision = json.loads((Path(client.download_artifacts(rid, "promotion.json", str(tmp_path)))).read_text())
        assert decision["alias"] == want and decision["score"] == score
    champ = client.get_model_version_by_alias(name, "champion")
    assert str(champ.version) == "3" and float(champ.tags[tracking.TAG_SCORE]) == 0.45
    assert champ.tags[tracking.TAG_SCORE_PCT] == "45.00" and champ.tags[tracking.TAG_EVALUATE_RUN]
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "4"
    assert tracking.find_model_run(params) == client.get_model_version(name, "4").run_id


def test_promote_model_finds_version_by_model_id(params: Params) -> None:
    client = _client(params)
    name = params.tracking.registered_model
    with tracking.stage_run(params, "train") as rid:
        version = _constructed_version(params, client, rid)
        client.set_model_version_tag(name, version, tracking.TAG_MODEL_ID, "abc123")
    with tracking.stage_run(params, "evaluate"):
        assert tracking.promote_model(params, "unknown-id", 0.9) == ""
        assert tracking.promote_model(params, "abc123", 0.2) == "champion"
    assert str(client.get_model_version_by_alias(name, "champion").version) == version


def test_experiment_opens_in_model_training_mode(params: Params) -> None:
    client = _client(params)
    exp_id = tracking.experiment_id(params)
    assert client.get_experiment(exp_id).tags[tracking.TAG_EXPERIMENT_KIND] == tracking.MODEL_TRAINING
    client.delete_experiment_tag(exp_id, tracking.TAG_EXPERIMENT_KIND)  # an experiment made by an older version
    tracking.experiment_id(params)
    assert client.get_experiment(exp_id).tags[tracking.TAG_EXPERIMENT_KIND] == tracking.MODEL_TRAINING


def test_pipeline_run_names_say_what_changed(params: Params) -> None:
    changed = tracking.changed_params(params, {"train.lambda_gen": 0.5, "base.run_name": "x", "base.seed": 42})
    assert changed == {"train.lambda_gen": params.train.lambda_gen}
    assert tracking.changed_params(params, None) == {}
    assert tracking.pipeline_run_name("mini", {}) == "mini"
    assert tracking.pipeline_run_name("mini", {"train.lambda_gen": 0.5}, "exp-1") == "mini exp-1 train.lambda_gen=0.5"
    long = tracking.pipeline_run_name("mini", {f"k{i}": "v" * 20 for i in range(20)})
    assert len(long) == 120 and long.endswith("...")
    parent = tracking.start_pipeline(params, reuse=False, name="mini export.routing=never")
    run = _client(params).get_run(parent)
    assert run.info.run_name == "mini export.routing=never"
    assert run.data.params["train.lambda_gen"] == str(params.train.lambda_gen)  # every param on the parent


def test_headline_metrics_reach_the_parent(params: Params, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = tracking.start_pipeline(params, reuse=False)
    monkeypatch.setenv(tracking.PARENT_ENV, parent)
    head = {"mbeir/local/avg": 25.5, "mbeir/local/tasks/01_qt-ci_VisualNews": 12.5}
    with tracking.stage_run(params, "evaluate") as rid:
        tracking.log_headline(head)
    client = _client(params)
    assert client.get_run(parent).data.metrics == head
    assert client.get_run(rid).data.metrics["mbeir/local/avg"] == 25.5
    monkeypatch.delenv(tracking.PARENT_ENV)
    monkeypatch.delenv("DVC_STAGE")
    with tracking.stage_run(params, "evaluate") as single:  # outside a pipeline: only the run itself
        tracking.log_headline({"mbeir/local/avg": 1.0})
    assert client.get_run(single).data.metrics == {"mbeir/local/avg": 1.0}


def test_version_tags_record_provenance(params: Params, tmp_path: Path) -> None:
    manifest = Path("data/mbeir/MANIFEST.json")  # paths.data_root relative to the test's cwd
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    with tracking.stage_run(params, "train") as rid:
        tags = tracking.version_tags(params, "abc")
    assert tags[tracking.TAG_PARAMS_HASH] == tracking.params_hash(params) and tags[tracking.TAG_MODEL_ID] == "abc"
    assert tags[tracking.TAG_TRAIN_RUN] == rid and tags[tracking.TAG_COMMIT]
    assert tags[tracking.TAG_DATA_MANIFEST] == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("http://alice:s3cret@teacher.example:8000/v1?api_key=k#frag", "http://teacher.example:8000/v1"),
        ("https://token@host/v1", "https://host/v1"),
        ("http://[::1]:8000/v1?key=1", "http://[::1]:8000/v1"),
        ("https://host.example/v1", "https://host.example/v1"),
        ("sqlite:///mlruns.db", "sqlite:///mlruns.db"),
        ("data/mbeir", "data/mbeir"),
        ("http://user:pw@[::1", "http://<redacted>"),  # unparsable: nothing of it is kept
    ],
)
def test_redact_url(url: str, logged: str) -> None:
    from trace_core.redact import redact_url

    assert redact_url(url) == logged


def test_urls_logged_without_credentials(params: Params) -> None:
    url = "http://alice:s3cret@teacher.example:8000/v1?api_key=k3y"
    teacher = {"kind": "openai", "model": "m", "base_url": url}
    raw = {**params.model_dump(by_alias=True), "cot_generate": {"teacher": teacher}}
    p = Params.model_validate(raw)
    with tracking.stage_run(p, "cot_generate", STAGES["cot_generate"].params) as rid:
        pass
    client = _client(p)
    run = client.get_run(rid)
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    for logged in (run.data.params, parent.data.params):
        assert logged["cot_generate.teacher.base_url"] == "http://teacher.example:8000/v1"
        assert not [k for k, v in logged.items() if "s3cret" in v or "k3y" in v]
