"""Logging of the ``trace`` commands and flows: our INFO lines, third-party lines only when verbose.

By default the root logger shows WARNING and above, so the INFO chatter of Great Expectations,
Milvus Lite, MLflow, DeepSpeed and others stays out of the terminal, while ``trace_core`` (and
``flows``) log at ``base.log_level``. ``trace --verbose`` (or ``TRACE_VERBOSE=1``, which also
reaches stages run by ``dvc repro``) brings everything back. Python warnings are routed through
logging, and ANSI colour codes (MLflow colours its warnings) are stripped from every line.
"""

from __future__ import annotations

import logging
import re
import sys

from trace_core.env import is_verbose

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
OUR_LOGGERS = ("trace_core", "flows")
#: third-party warnings known to be harmless here, hidden unless verbose. MLflow warns that
#: ``predict`` has no type hints (on purpose: it would read them as a schema) from inside its own
#: ``simplefilter("once")``, which no ``warnings`` filter of ours can override.
BENIGN_WARNINGS = (re.compile(r"Add type hints to the `predict` method"),)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (colour codes)."""
    return ANSI.sub("", text)


class QuietFilter(logging.Filter):
    """Pass our records, warnings and errors; other INFO/DEBUG records only when verbose.

    A filter on the handler, because libraries that set their own logger level (Great
    Expectations sets INFO) bypass the root logger's level when their records propagate.
    """

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record is shown."""
        if self.verbose:
            return True
        if record.name == "py.warnings" and any(p.search(record.getMessage()) for p in BENIGN_WARNINGS):
            return False
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OUR_LOGGERS


class PlainFormatter(logging.Formatter):
    """A formatter whose output never carries terminal escape codes."""

    def format(self, record: logging.LogRecord) -> str:
        """Format as usual, then strip escape sequences."""
        return strip_ansi(super().format(record))


def setup_logging(level: str = "INFO", verbose: bool | None = None) -> None:
    """Configure the root handler once per process (idempotent).

    Args:
        level: level of our own loggers (``base.log_level``).
        verbose: third-party INFO lines too; default from ``TRACE_VERBOSE``.
    """
    verbose = is_verbose() if verbose is None else verbose
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_trace", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._trace = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    if isinstance(handler, logging.StreamHandler):
        # the current stderr (a re-call after it was replaced writes there); no flush of the old
        # one, which may already be closed (a test runner's capture buffer)
        handler.stream = sys.stderr
    handler.setFormatter(PlainFormatter(FORMAT))
    for old in [f for f in handler.filters if isinstance(f, QuietFilter)]:
        handler.removeFilter(old)
    handler.addFilter(QuietFilter(verbose))
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(False)  # re-arm: something may have restored warnings.showwarning since
    logging.captureWarnings(True)
