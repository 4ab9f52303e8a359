"""Stage ``download``: generate M-BEIR-mini, fetch ``TIGER-Lab/M-BEIR``, or lay out a local copy.

Every path ends with ``MANIFEST.json`` (relative path, size and sha256 of every file) written
last, so its presence means the dataset root is complete. Work is resumable: the hub client
skips complete files, copied files of the right size are kept, joined/extracted image
archives are marked done, and file hashes are cached by (size, mtime).

The zero-shot root (``paths.zeroshot_root``, layout in :mod:`trace_core.data.zeroshot`) is
filled the same way: zero-shot-mini generated with the mini profile, or links to real copies
from ``download.zeroshot_from_dir`` (only the dataset folders present there), with its own
``MANIFEST.json``; with neither, it holds only an empty manifest and the zero-shot stage
reports every column as n/a.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trace_core.config import DownloadParams, Params
from trace_core.io import DataError, atomic_open, read_json, sha256_file, write_json
from trace_core.paths import Paths

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
STATE_DIR = ".trace_download"
ANNOTATION_DIRS: tuple[str, ...] = ("query", "cand_pool", "qrels", "instructions")
ANNOTATION_PATTERNS: tuple[str, ...] = tuple(f"{d}/**" for d in ANNOTATION_DIRS)
IMAGES_DIR = "mbeir_images"
IMAGE_ARCHIVE = "mbeir_images.tar.gz"
_PART_RE = re.compile(r"^mbeir_images\.tar\.gz\.part-(\d+)$")
_HASH_SAVE_EVERY = 500


# --- pure planning ------------------------------------------------------------------------------
def image_parts(names: Iterable[str]) -> list[str]:
    """The image archive parts among repository file names, in join order (numeric suffix)."""
    found = [(int(m.group(1)), n) for n in names if (m := _PART_RE.match(Path(n).name))]
    return [n for _, n in sorted(found)]


def is_layout_file(rel: str) -> bool:
    """Whether a relative path belongs to the M-BEIR layout (annotations or extracted images)."""
    top = rel.split("/", 1)[0]
    return top in (*ANNOTATION_DIRS, IMAGES_DIR) and not any(p.startswith(".") for p in rel.split("/"))


def manifest_skips(rel: str) -> bool:
    """Files never listed in the manifest: the manifest itself and the resume state."""
    return rel == MANIFEST or rel.split("/", 1)[0] == STATE_DIR


def resolve_source(params: DownloadParams, profile: str | None, from_dir: Path | None) -> tuple[str, Path | None]:
    """(profile, from_dir) after CLI overrides; a from_dir always means 'lay out that copy'."""
    chosen = profile or params.profile
    if chosen not in ("mini", "full"):
        raise DataError("download.profile", "value", f"profile must be 'mini' or 'full', got {chosen!r}")
    src = from_dir if from_dir is not None else (Path(params.from_dir) if params.from_dir else None)
    return chosen, src


# --- files ----------------------------------------------------------------------------------------
def walk_files(root: Path) -> Iterator[str]:
    """Relative POSIX paths of every regular file under ``root``, sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield (Path(dirpath) / name).relative_to(root).as_posix()


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link (or copy when linking is impossible) unless ``dst`` already has ``src``'s size."""
    if dst.exists() and dst.stat().st_size == src.stat().st_size:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return True


def join_parts(parts: list[Path], archive: Path) -> None:
    """Concatenate archive parts in order (skipped when the joined file is already complete)."""
    total = sum(p.stat().st_size for p in parts)
    if archive.exists() and archive.stat().st_size == total:
        log.info("image archive already joined: %s", archive)
        return
    with atomic_open(archive, "wb") as out:
        for part in tqdm(parts, desc="join", unit="part", disable=None):
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, length=1 << 24)


def extract_archive(archive: Path, root: Path, marker: Path) -> None:
    """Extract the joined image archive under ``root`` once (``marker`` records completion)."""
    if marker.exists():
        log.info("images already extracted (%s)", marker)
        return
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(archive, "archive", f"cannot extract image archive ({err})") from None
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("done\n")


def assemble_images(parts: list[Path], root: Path) -> None:
    """Join the parts, extract into ``root`` and drop the joined archive."""
    state = root / STATE_DIR
    archive = state / IMAGE_ARCHIVE
    marker = state / "images_extracted"
    if not marker.exists():
        join_parts(parts, archive)
    extract_archive(archive, root, marker)
    archive.unlink(missing_ok=True)


# --- manifest --------------------------------------------------------------------------------------
def _load_hash_cache(path: Path) -> dict[str, list[Any]]:
    try:
        cache = read_json(path)
    except (FileNotFoundError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def build_manifest(root: Path, rels: Iterable[str], source: dict[str, Any], cache_path: Path) -> dict[str, Any]:
    """Size and sha256 of each file; the manifest holds nothing machine- or run-specific.

    Hashes are cached by (size, mtime) across interrupted runs in ``cache_path``, which lies
    outside the dataset root (the state folder), so the DVC output stays byte-reproducible.
    """
    cache = _load_hash_cache(cache_path)
    files = []
    for i, rel in enumerate(tqdm(sorted(rels), desc="sha256", unit="file", disable=None)):
        st = (root / rel).stat()
        hit = cache.get(rel)
        if not (hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns):
            hit = cache[rel] = [st.st_size, st.st_mtime_ns, sha256_file(root / rel)]
        files.append({"path": rel, "size": st.st_size, "sha256": hit[2]})
        if (i + 1) % _HASH_SAVE_EVERY == 0:
            write_json(cache_path, cache)
    write_json(cache_path, cache)
    return {
        "source": source,
        "n_files": len(files),
        "total_bytes": sum(f["size"] for f in files),
        "files": files,
    }


def hash_cache_path(paths: Paths, root: Path) -> Path:
    """Where the (size, mtime) -> sha256 cache of ``root`` lives: the state folder, keyed by the root."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return paths.state_dir / "download" / f"hashes-{key}.json"


def manifest_is_current(root: Path, source: dict[str, Any]) -> bool:
    """A manifest exists for the same source and every listed file has its recorded size."""
    path = root / MANIFEST
    if not path.exists():
        return False
    try:
        manifest = read_json(path)
    except ValueError:
        return False
    if manifest.get("source") != source:
        return False
    return all(
        (root / f["path"]).is_file() and (root / f["path"]).stat().st_size == f["size"] for f in manifest["files"]
    )


# --- the three sources ---------------------------------------------------------------------------
def generate_mini(params: Params, root: Path) -> list[str]:
    """Write M-BEIR-mini under ``root``; return the relative paths written."""
    from trace_core.data.mini import write_mini

    written = write_mini(params.download.mini, params.base.seed, root)
    return [p.relative_to(root).as_posix() for p in written]


def layout_from_dir(src: Path, root: Path, include_images: bool) -> list[str]:
    """Link or copy an M-BEIR copy into ``root``; join/extract image parts if asked and needed."""
    if not src.is_dir() or not any((src / d).is_dir() for d in ("query", "cand_pool")):
        raise DataError(src, "layout", "not an M-BEIR root: no query/ or cand_pool/ folder")
    rels = [r for r in walk_files(src) if is_layout_file(r)]
    if src.resolve() != root.resolve():
        copied = sum(link_or_copy(src / r, root / r) for r in tqdm(rels, desc="layout", unit="file", disable=None))
        log.info("laid out %d files from %s (%d already present)", len(rels), src, len(rels) - copied)
    parts = image_parts(walk_files(src))
    if include_images and parts and not (root / IMAGES_DIR).is_dir():
        assemble_images([src / p for p in parts], root)
    return [r for r in walk_files(root) if not manifest_skips(r)]


def fetch_full(params: DownloadParams, root: Path) -> list[str]:
    """Annotations from the hub first, then (optionally) the image archive parts."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    kw: dict[str, Any] = {"repo_id": params.repo_id, "repo_type": "dataset", "revision": params.revision}
    try:
        snapshot_download(**kw, allow_patterns=list(ANNOTATION_PATTERNS), local_dir=root)
        if params.include_images:
            names = HfApi().list_repo_files(**kw)
            parts_dir = root / STATE_DIR / "parts"
            parts = [Path(hf_hub_download(**kw, filename=n, local_dir=parts_dir)) for n in image_parts(names)]
            assemble_images(parts, root)
    except (OfflineModeIsEnabled, HfHubHTTPError, OSError) as err:
        rule = f"cannot fetch from the hub ({type(err).__name__}: {err}); use --from-dir for a local copy"
        raise DataError(params.repo_id, "hub", rule) from None
    return [r for r in walk_files(root) if not manifest_skips(r) and not r.startswith(".cache/")]


def layout_zeroshot(src: Path, root: Path) -> list[str]:
    """Link or copy the zero-shot dataset folders found in ``src`` into ``root``."""
    from trace_core.data.zeroshot import DATASETS

    present = [d for d in DATASETS if (src / d).is_dir()]
    if not present:
        raise DataError(src, "layout", f"no zero-shot dataset folder (expected some of {', '.join(DATASETS)})")
    log.info("zero-shot datasets found in %s: %s", src, ", ".join(present))
    rels = [
        f"{d}/{r}" for d in present for r in walk_files(src / d) if not any(p.startswith(".") for p in r.split("/"))
    ]
    if src.resolve() != root.resolve():
        for r in tqdm(rels, desc="zero-shot layout", unit="file", disable=None):
            link_or_copy(src / r, root / r)
    return rels


def generate_zeroshot_mini(params: Params, root: Path) -> list[str]:
    """Write zero-shot-mini under ``root`` (its dataset folders are replaced); return the paths."""
    from trace_core.data.mini.zeroshot import write_zeroshot_mini
    from trace_core.data.zeroshot import DATASETS

    for name in DATASETS:
        shutil.rmtree(root / name, ignore_errors=True)
    written = write_zeroshot_mini(params.download.zeroshot_mini, params.download.mini, params.base.seed, root)
    return [p.relative_to(root).as_posix() for p in written]


def zeroshot_source(params: Params, profile: str, src: Path | None) -> dict[str, Any]:
    """What the zero-shot root is made from (recorded in its manifest; no machine path).

    ``profile`` is ``mini`` when M-BEIR-mini is generated (then so is zero-shot-mini), else ``full``.
    """
    if src is not None:
        return {"zeroshot_from_dir": src.resolve().name}
    if profile == "mini":
        mini = params.download.mini
        render = {"image_size": mini.image_size, "jitter_px": mini.jitter_px, "shade_jitter": mini.shade_jitter}
        scenes = {"min_objects": mini.min_objects, "max_objects": mini.max_objects}
        sizes = params.download.zeroshot_mini.model_dump()
        return {"profile": "mini", "seed": params.base.seed, "zeroshot_mini": sizes, "render": render, **scenes}
    return {"profile": profile, "zeroshot": "none"}


def prepare_zeroshot(params: Params, paths: Paths, profile: str, src: Path | None) -> None:
    """Fill the zero-shot root (mini, real copies or nothing) and write its manifest last."""
    root = paths.zeroshot_root
    source = zeroshot_source(params, profile, src)
    if src is None and profile == "mini" and manifest_is_current(root, source):
        log.info("zero-shot-mini already complete at %s (manifest matches)", root)
        return
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    if src is not None:
        rels = layout_zeroshot(src, root)
    elif profile == "mini":
        rels = generate_zeroshot_mini(params, root)
    else:
        log.warning("no zero-shot data: set download.zeroshot_from_dir to a folder of real copies (see README)")
        rels = []
    manifest = build_manifest(root, rels, source, hash_cache_path(paths, root))
    os.sync()
    write_json(root / MANIFEST, manifest)
    log.info("wrote %s: %d files", root / MANIFEST, manifest["n_files"])


def run(
    params: Params,
    paths: Paths,
    profile: str | None = None,
    from_dir: Path | None = None,
    out: Path | None = None,
    zeroshot_from_dir: Path | None = None,
) -> None:
    """Produce a complete M-BEIR root (mini, full or from a local copy) with its manifest last.

    Without ``out`` (the pipeline's case) the zero-shot root is prepared too, from
    ``zeroshot_from_dir`` or ``download.zeroshot_from_dir`` when given.
    """
    root = out or paths.data_root
    chosen, src = resolve_source(params.download, profile, from_dir)
    if src is not None:
        source: dict[str, Any] = {"profile": chosen, "from_dir": src.resolve().name}  # no machine path
    elif chosen == "mini":
        source = {"profile": "mini", "seed": params.base.seed, "mini": params.download.mini.model_dump()}
    else:
        source = {"profile": "full", "repo_id": params.download.repo_id, "revision": params.download.revision}
    source["include_images"] = params.download.include_images if chosen == "full" or src else True
    if out is None:
        zs = zeroshot_from_dir or (
            Path(params.download.zeroshot_from_dir) if params.download.zeroshot_from_dir else None
        )
        # zero-shot-mini goes with generated M-BEIR-mini only (a real M-BEIR copy gets real zero-shot copies or none)
        prepare_zeroshot(params, paths, "mini" if chosen == "mini" and src is None else "full", zs)
    if chosen == "mini" and src is None and manifest_is_current(root, source):
        log.info("M-BEIR-mini already complete at %s (manifest matches)", root)
        return
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    if src is not None:
        rels = layout_from_dir(src, root, params.download.include_images)
    elif chosen == "mini":
        rels = generate_mini(params, root)
    else:
        rels = fetch_full(params.download, root)
    manifest = build_manifest(root, rels, source, hash_cache_path(paths, root))
    os.sync()  # every listed file is on disk before the manifest says the root is complete
    write_json(root / MANIFEST, manifest)
    log.info("wrote %s: %d files, %d bytes", root / MANIFEST, manifest["n_files"], manifest["total_bytes"])
