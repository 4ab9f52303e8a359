"""Atomic file writes, JSONL streaming with located errors, manifests and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


class DataError(ValueError):
    """Bad input data: the message names the file, the line or record, and the rule."""

    def __init__(self, path: str | Path, where: str, rule: str) -> None:
        self.path, self.where, self.rule = str(path), where, rule
        super().__init__(f"{path}:{where}: {rule}")


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask (0644 under umask 022)."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8", file_mode: int | None = None
) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; rename it into place only if the block succeeds.

    The file ends with ``file_mode`` (default: what a plain ``open()`` would give, see
    :func:`default_file_mode`), not the 0600 of the temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.fchmod(fd, default_file_mode() if file_mode is None else file_mode)
    os.close(fd)
    enc = None if "b" in mode else encoding
    try:
        with open(tmp, mode, encoding=enc) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_open(path) as fh:
        fh.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write pretty, key-sorted JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Atomically write JSON lines; return the number of rows."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def parse_jsonl_line(path: str | Path, lineno: int, line: str) -> dict[str, Any] | None:
    """One JSONL line as an object (``None`` for a blank line).

    Raises :class:`DataError` naming the file and line for malformed JSON or a non-object.
    """
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(path, f"line {lineno}", f"malformed JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"line {lineno}", "each line must be a JSON object")
    return obj


def iter_raw_lines(path: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """Stream ``(line_number, byte_offset_of_line, raw_bytes)`` of a file."""
    offset = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            yield lineno, offset, raw
            offset += len(raw)


def decode_line(raw: bytes, path: str | Path, lineno: int, offset: int) -> str:
    """A line's bytes as strict UTF-8; :class:`DataError` names the file, line and byte offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        rule = f"not UTF-8: byte 0x{raw[err.start]:02x} at byte offset {offset + err.start} of the file"
        raise DataError(path, f"line {lineno}", rule) from None


def iter_text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Stream ``(line_number, line)`` of a strictly UTF-8 file (a bad byte is a located :class:`DataError`)."""
    for lineno, offset, raw in iter_raw_lines(path):
        yield lineno, decode_line(raw, path, lineno, offset)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line_number, object)`` from a JSONL file; blank lines are skipped.

    Raises :class:`DataError` naming the file and line for bytes that are not UTF-8 (with the
    byte offset), malformed JSON or a non-object.
    """
    p = Path(path)
    for lineno, line in iter_text_lines(p):
        obj = parse_jsonl_line(p, lineno, line)
        if obj is not None:
            yield lineno, obj


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
