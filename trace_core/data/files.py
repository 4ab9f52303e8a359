"""The one resolver of files named by records (images today, any referenced file).

A record names a file by a path relative to the data root. It is accepted only if it is a
plain relative path (not empty, not absolute, no ``..`` component, no NUL byte) and, after
every symlink is followed, lands inside the data root. The one exception is the DVC cache of
the project holding the data root: with ``cache.type symlink`` every data file is a symlink
into it. Loaders apply the lexical rule (:func:`check_record_path`) to every record they
parse; everything that opens a file goes through :meth:`DataFiles.resolve` or
:func:`open_record_file`, so no stage opens or sends a file outside the data even when
validation was skipped.
"""

from __future__ import annotations

import configparser
import functools
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image

from trace_core.io import DataError

#: what PIL raises for a file that is not a (complete) image
IMAGE_ERRORS: tuple[type[Exception], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class UnsafePathError(ValueError):
    """A record's path is not a file inside the data root; the message says why."""


def path_problem(rel: str) -> str | None:
    """Why ``rel`` is not a plain relative path inside the data root (lexically), else None."""
    if not rel:
        return "empty path"
    if "\x00" in rel:
        return "path contains a NUL byte"
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).anchor:
        return "absolute path (must be relative to the data root)"
    if ".." in PurePosixPath(rel).parts or ".." in PureWindowsPath(rel).parts:
        return "'..' leaves the data root"
    return None


def check_record_path(value: str | None, field: str, path: str | Path, where: str) -> None:
    """Raise :class:`DataError` (file, line and record in ``where``) if ``value`` may leave the root."""
    problem = path_problem(value) if value is not None else None
    if problem:
        raise DataError(path, where, f"{field} {value!r}: {problem}")


def dvc_cache_dirs(root: Path) -> tuple[Path, ...]:
    """Cache folders of the DVC project holding ``root`` (default and configured ``cache.dir``)."""
    for folder in (root, *root.parents):
        dvc = folder / ".dvc"
        if not dvc.is_dir():
            continue
        dirs = [dvc / "cache"]
        for name in ("config", "config.local"):
            cfg = configparser.ConfigParser()
            try:
                cfg.read(dvc / name, encoding="utf-8")
            except (configparser.Error, UnicodeDecodeError):
                continue
            if cfg.has_option("cache", "dir"):
                dirs.append(dvc / cfg.get("cache", "dir").strip().strip("'\""))  # relative to .dvc/
        return tuple(Path(os.path.realpath(d)) for d in dirs)
    return ()


class DataFiles:
    """Resolves paths named by records against one data root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        real = Path(os.path.realpath(self.root))
        caches = {*dvc_cache_dirs(Path(os.path.abspath(self.root))), *dvc_cache_dirs(real)}  # root may be a link
        self._allowed = (real, *sorted(caches))
        self._real_root = str(real)  # realpath(root / rel) == realpath(realpath(root) / rel)
        self._real_dirs: dict[str, str] = {}

    def _realpath(self, path: str) -> str:
        """``os.path.realpath(path)``, its directory's real path cached (a pool's files share a few folders).

        Only the last component is looked up per call: when it is a link the whole path is resolved.
        """
        head, name = os.path.split(path)
        real_head = self._real_dirs.get(head)
        if real_head is None:
            real_head = self._real_dirs.setdefault(head, os.path.realpath(head))
        joined = os.path.join(real_head, name)
        return os.path.realpath(joined) if name in ("", ".") or os.path.islink(joined) else joined

    def resolve(self, rel: str) -> Path:
        """The real path of ``rel``; :class:`UnsafePathError` if it is unsafe or leads outside."""
        problem = path_problem(rel)
        if problem:
            raise UnsafePathError(f"{rel!r}: {problem}")
        real = Path(self._realpath(os.path.join(self._real_root, rel)))
        if not any(real.is_relative_to(a) for a in self._allowed):
            raise UnsafePathError(f"{rel!r} resolves to {real}, outside the data root {self.root}")
        return real

    def problem(self, rel: str) -> str | None:
        """Why ``rel`` is refused, or None when it resolves inside the data root."""
        try:
            self.resolve(rel)
        except UnsafePathError as err:
            return str(err)
        return None


@functools.lru_cache(maxsize=16)
def data_files(root: Path) -> DataFiles:
    """The (cached) resolver of a data root."""
    return DataFiles(root)


def open_record_file(root: Path, rel: str, record: str) -> Path:
    """Resolve a record's file for opening; :class:`DataError` names the path and the record."""
    try:
        return data_files(Path(root)).resolve(rel)
    except UnsafePathError as err:
        raise DataError(rel, f"record {record}", f"refused: {err}") from None
