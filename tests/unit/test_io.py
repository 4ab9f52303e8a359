"""Atomic writes: the file appears whole, with the mode a plain open() would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from trace_core.io import atomic_open, default_file_mode, write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.csv", "x\n")
        assert _mode(tmp_path / "a.csv") == 0o644 == default_file_mode()
        os.umask(0o077)
        write_text(tmp_path / "b.csv", "x\n")
        assert _mode(tmp_path / "b.csv") == 0o600
    finally:
        os.umask(old)
    with atomic_open(tmp_path / "secret", file_mode=0o600) as fh:
        fh.write("k")
    assert _mode(tmp_path / "secret") == 0o600


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "c.txt") as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
