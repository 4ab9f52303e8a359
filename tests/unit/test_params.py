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
