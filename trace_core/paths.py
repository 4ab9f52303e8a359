"""Every artifact location, derived from ``params.paths`` once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trace_core.config import Params


@dataclass(frozen=True)
class Paths:
    """Concrete artifact locations of one pipeline instance."""

    data_root: Path
    zeroshot_root: Path
    cot_dir: Path
    model_dir: Path
    self_model_dir: Path
    embeddings_dir: Path
    index_dir: Path
    metrics_dir: Path
    reports_dir: Path
    state_dir: Path

    @classmethod
    def from_params(cls, params: Params, root: Path | None = None) -> Paths:
        """Resolve ``params.paths`` against ``root`` (default: the working directory)."""
        base = root or Path.cwd()
        p = params.paths
        return cls(
            data_root=base / p.data_root,
            zeroshot_root=base / p.zeroshot_root,
            cot_dir=base / p.cot_dir,
            model_dir=base / p.model_dir,
            self_model_dir=base / p.self_model_dir,
            embeddings_dir=base / p.embeddings_dir,
            index_dir=base / p.index_dir,
            metrics_dir=base / p.metrics_dir,
            reports_dir=base / p.reports_dir,
            state_dir=base / p.state_dir,
        )

    # --- CoT stages -------------------------------------------------------------
    @property
    def cot_raw_dir(self) -> Path:
        """Sharded raw teacher outputs."""
        return self.cot_dir / "raw"

    @property
    def cot_raw_manifest(self) -> Path:
        """Manifest of the raw teacher outputs (written last by cot_generate)."""
        return self.cot_raw_dir / "manifest.json"

    @property
    def cot_curated(self) -> Path:
        """Chains kept by both filters."""
        return self.cot_dir / "curated.jsonl"

    @property
    def cot_dropped(self) -> Path:
        """Chains dropped, each with the rule that dropped it."""
        return self.cot_dir / "dropped.jsonl"

    @property
    def cot_train(self) -> Path:
        """The M-BEIR-CoT training file read by the train stage."""
        return self.cot_dir / "mbeir_cot_train.jsonl"

    @property
    def self_chains_dir(self) -> Path:
        """The model's own chains of the z=1 training queries, one file per model id (stage self_train)."""
        return self.cot_dir / "self_chains"

    # --- reports and metrics ------------------------------------------------------
    @property
    def validation_dir(self) -> Path:
        """Great Expectations results and Data Docs."""
        return self.reports_dir / "validation"

    def metrics_file(self, stage: str) -> Path:
        """DVC metrics JSON of a stage."""
        return self.metrics_dir / f"{stage}.json"

    def timings_file(self, stage: str) -> Path:
        """Run-specific measurements of a stage (wall time, throughput): never a DVC output."""
        return self.metrics_dir / "timings" / f"{stage}.json"

    @property
    def zeroshot_crops(self) -> Path:
        """Derived zero-shot images (GeneCIS instance crops): a cache, not a DVC output."""
        return self.state_dir / "zeroshot" / "crops"

    @property
    def milvus_db(self) -> Path:
        """Default Milvus Lite database file."""
        return self.index_dir / "milvus.db"

    @property
    def embeddings_manifest(self) -> Path:
        """Top manifest of the export (written last): model id, query and pool manifests."""
        return self.embeddings_dir / "manifest.json"

    @property
    def index_manifest(self) -> Path:
        """Manifest of the built index."""
        return self.index_dir / "manifest.json"


def served_model_dir(params: Params, paths: Paths) -> Path:
    """The model every stage after training loads: phase 2 (``self_model_dir``) with ``self_chain.enabled``.

    Otherwise the phase-1 model of the train stage (``model_dir``); stages that call this list
    ``self_chain.enabled`` among their params and both folders among their deps.
    """
    return paths.self_model_dir if params.self_chain.enabled else paths.model_dir
