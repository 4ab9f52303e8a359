"""params.yaml is the full schema; unknown or invalid keys are rejected with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trace_core.config import Params, ParamsError, dump_params, load_params, parse_params

PARAMS_YAML = Path(__file__).resolve().parents[2] / "params.yaml"


def test_params_yaml_is_the_full_schema() -> None:
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    assert dump_params(load_params(PARAMS_YAML)) == raw  # every key of every section is present
    assert dump_params(Params()) == raw  # and params.yaml holds the defaults


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"download": {"mini": {"n_entitys": 3}}}, "download.mini.n_entitys"),
        ({"validate": {"image_fraction": 0.5}}, "validate.image_fraction"),
        ({"bogus": {}}, "bogus"),
    ],
)
def test_unknown_key_rejected_and_named(raw: dict, key: str) -> None:
    with pytest.raises(ParamsError, match=f"unknown key '{key}'"):
        parse_params(raw, "p.yaml")


@pytest.mark.parametrize(
    ("mini", "key"),
    [({"image_size": 100}, "download.mini.image_size"), ({"min_objects": 3, "max_objects": 2}, "download.mini")],
)
def test_invalid_mini_values_rejected(mini: dict, key: str) -> None:
    with pytest.raises(ParamsError, match=f"key '{key}"):
        parse_params({"download": {"mini": mini}}, "p.yaml")


def test_bad_yaml_file_named(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("download: [unclosed\n")
    with pytest.raises(ParamsError, match=str(p)):
        load_params(p)


def test_set_dotted_sets_existing_keys_and_names_typos() -> None:
    from trace_core.config import set_dotted

    raw = {"train": {"lambda_route": 1.0}}
    set_dotted(raw, "train.lambda_route", 0.0)
    assert raw == {"train": {"lambda_route": 0.0}}
    with pytest.raises(KeyError, match="train.lambda_rout'"):
        set_dotted(raw, "train.lambda_rout", 0.0)


# --- every size, count and batch field is constrained at load (issue 17) ---------------------------
BAD_VALUES: list[tuple[str, object, str]] = [
    # (dotted key, bad value, key the error line must name)
    ("cot_generate.max_queries", -1, "cot_generate.max_queries"),
    ("cot_generate.max_queries", 0, "cot_generate.max_queries"),
    ("cot_generate.shard_size", 0, "cot_generate.shard_size"),
    ("cot_generate.max_error_rate", 1.5, "cot_generate.max_error_rate"),
    ("cot_generate.teacher.max_retry_after_s", -1.0, "cot_generate.teacher.max_retry_after_s"),
    ("cot_generate.teacher.device", "gpu", "cot_generate.teacher.device"),
    ("cot_generate.teacher.kind", "openai", "cot_generate.teacher"),  # no base_url/model
    ("cot_generate.teacher.kind", "transformers", "cot_generate.teacher"),  # no model
    ("cot_generate.routing.overrides", {"bogus:1": 1}, "cot_generate.routing.overrides"),
    ("cot_generate.routing.overrides", {"cirr:7": 2}, "cot_generate.routing.overrides"),
    ("cot_generate.routing.reason_datasets", [42], "cot_generate.routing.reason_datasets.0"),
    ("validate.max_failures_listed", -1, "validate.max_failures_listed"),
    ("cot_curate.ngram_n", 0, "cot_curate.ngram_n"),
    ("cot_curate.max_ngram_repeat", 0, "cot_curate.max_ngram_repeat"),
    ("cot_curate.reasoning_max_tokens", 0, "cot_curate.reasoning_max_tokens"),
    ("cot_curate.answer_min_tokens", -1, "cot_curate.answer_min_tokens"),
    ("cot_curate.reasoning_min_tokens", 999, "cot_curate"),  # above reasoning_max_tokens
    ("cot_curate.near_duplicate_threshold", 1.5, "cot_curate.near_duplicate_threshold"),
    ("cot_curate.verifier_threshold", 2.0, "cot_curate.verifier_threshold"),
    ("cot_curate.min_english_ratio", -0.1, "cot_curate.min_english_ratio"),
    ("cot_curate.keyword_min_chars", 0, "cot_curate.keyword_min_chars"),
    ("cot_curate.report_examples", -1, "cot_curate.report_examples"),
    ("cot_curate.extra_refusal_patterns", ["(unclosed"], "cot_curate.extra_refusal_patterns"),
    ("model.family", "qwen3-vl", "model.family"),
    ("model.emb_token", "<emb>", "model.emb_token"),
    ("model.max_length", 0, "model.max_length"),
    ("model.min_pixels", 0, "model.min_pixels"),
    ("model.max_pixels", 100, "model"),  # below min_pixels
    ("model.lora_r", 0, "model.lora_r"),
    ("model.lora_dropout", 1.0, "model.lora_dropout"),
    ("model.tiny.num_heads", 0, "model.tiny.num_heads"),
    ("model.tiny.hidden_size", 130, "model.tiny"),  # not a multiple of num_heads
    ("model.tiny.num_layers", 0, "model.tiny.num_layers"),
    ("train.epochs", -1, "train.epochs"),
    ("train.epochs", 0, "train.epochs"),
    ("train.val_queries", -3, "train.val_queries"),
    ("train.val_queries", 0, "train.val_queries"),
    ("train.per_device_batch_size", 0, "train.per_device_batch_size"),
    ("train.max_steps", 0, "train.max_steps"),
    ("train.max_steps", -2, "train.max_steps"),
    ("train.hard_negatives", -1, "train.hard_negatives"),
    ("train.logging_steps", 0, "train.logging_steps"),
    ("train.eval_steps", -1, "train.eval_steps"),
    ("train.save_steps", 0, "train.save_steps"),
    ("train.save_total_limit", 0, "train.save_total_limit"),
    ("train.val_k", 0, "train.val_k"),
    ("train.temperature", 0.0, "train.temperature"),
    ("train.learning_rate", 0.0, "train.learning_rate"),
    ("train.warmup_ratio", 1.5, "train.warmup_ratio"),
    ("train.zero_stage", 4, "train.zero_stage"),
    ("train.lr_scheduler", "cosin", "train.lr_scheduler"),
    ("export.shard_size", 0, "export.shard_size"),
    ("export.batch_size", -1, "export.batch_size"),
    ("export.batch_size", 0, "export.batch_size"),
    ("index.insert_batch", 0, "index.insert_batch"),
    ("index.search_batch", 0, "index.search_batch"),
    ("index.hnsw_m", 0, "index.hnsw_m"),
    ("index.hnsw_ef", 0, "index.hnsw_ef"),
    ("index.ivf_nlist", 0, "index.ivf_nlist"),
    ("index.ivf_nprobe", 0, "index.ivf_nprobe"),
    ("index.timeout_s", 0.0, "index.timeout_s"),
    ("evaluate.ks", [], "evaluate.ks"),
    ("evaluate.ks", [0, 5], "evaluate.ks.0"),
    ("evaluate.fashion_ks", [-1], "evaluate.fashion_ks.0"),
    ("evaluate.run_id", "my run", "evaluate.run_id"),
    ("base.log_level", "LOUD", "base.log_level"),
]


@pytest.mark.parametrize(("key", "value", "named"), BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_bad_value_rejected_at_load_naming_file_and_key(tmp_path: Path, key: str, value: object, named: str) -> None:
    from trace_core.config import set_dotted

    raw = dump_params(Params())
    set_dotted(raw, key, value)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as err:
        load_params(bad)
    lines = str(err.value).splitlines()
    assert lines and all(line.startswith(f"{bad}: key '") for line in lines), lines
    assert any(f"key '{named}'" in line for line in lines), lines


def test_zero_means_off_where_documented() -> None:
    from trace_core.config import set_dotted

    raw = dump_params(Params())
    for key in ("train.eval_steps", "train.grad_cache_chunk", "cot_curate.report_examples", "train.hard_negatives"):
        set_dotted(raw, key, 0)
    parse_params(raw, "p.yaml")  # 0 is allowed (off / none) for these


def test_model_families_and_schedulers_match_their_registries() -> None:
    from typing import get_args

    from transformers.trainer_utils import SchedulerType

    from trace_core.config import LR_SCHEDULERS, ModelParams
    from trace_core.model.backbone import FAMILIES

    assert set(get_args(ModelParams.model_fields["family"].annotation)) == set(FAMILIES)
    assert set(get_args(LR_SCHEDULERS)) <= {s.value for s in SchedulerType}
