"""Terminal output: third-party INFO off unless verbose, no escape codes, quiet environment."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from trace_core import env
from trace_core.logs import PlainFormatter, QuietFilter, setup_logging, strip_ansi


def _record(name: str, level: int, msg: str = "m") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_quiet_filter() -> None:
    quiet, verbose = QuietFilter(False), QuietFilter(True)
    assert quiet.filter(_record("trace_core.train", logging.INFO))
    assert quiet.filter(_record("flows.pipeline", logging.INFO))
    assert not quiet.filter(_record("great_expectations._docs_decorators", logging.INFO))
    assert quiet.filter(_record("mlflow.store", logging.WARNING))
    assert verbose.filter(_record("great_expectations._docs_decorators", logging.INFO))
    message = "x.py:1: UserWarning: \x1b[33mAdd type hints to the `predict` method"
    benign = _record("py.warnings", logging.WARNING, message)
    assert not quiet.filter(benign) and verbose.filter(benign)
    assert quiet.filter(_record("py.warnings", logging.WARNING, "x.py:1: UserWarning: something new"))


def test_escape_codes_stripped() -> None:
    assert strip_ansi("\x1b[1;33mAn input example\x1b[0m") == "An input example"
    line = PlainFormatter("%(message)s").format(_record("py.warnings", logging.WARNING, "\x1b[33mwarn\x1b[0m"))
    assert line == "warn"


def test_setup_logging_routes_warnings_without_colour(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", verbose=False)
    setup_logging("INFO", verbose=False)  # idempotent: one handler
    logging.getLogger("great_expectations").setLevel(logging.INFO)  # as GX does: bypasses the root level
    logging.getLogger("great_expectations.x").info("noise")
    logging.getLogger("trace_core.x").info("ours")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("\x1b[33mcoloured\x1b[0m", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "ours" in err and "noise" not in err and "coloured" in err and "\x1b[" not in err
    logging.captureWarnings(False)


def test_quiet_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in env.QUIET_OUTPUT:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(env.VERBOSE_ENV, "1")
    env.quiet_environment()
    assert "MLFLOW_LOGGING_LEVEL" not in os.environ
    monkeypatch.delenv(env.VERBOSE_ENV)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")  # a user's choice is kept
    env.quiet_environment()
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
