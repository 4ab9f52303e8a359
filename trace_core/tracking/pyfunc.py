"""MLflow pyfunc wrapper of a saved TRACE encoder (registered by :mod:`trace_core.tracking`).

The model is logged *as code* (MLflow "models from code"): the logged file only imports
:class:`TracePyfunc` and hands an instance to ``mlflow.models.set_model``, so nothing is
pickled. ``load_context`` loads the saved Hugging Face files (weights, tokenizer, image
processor, ``trace_meta.json``) with :func:`trace_core.model.inference.load_encoder`.

Input: a DataFrame with columns ``text`` and ``img_path`` (either may be empty), optional
``task_id`` and ``side`` (``query`` routes through the model's adaptive reasoning,
``candidate`` embeds directly). Inference params: ``image_root``, ``routing``,
``max_new_tokens``, ``batch_size``. ``img_path`` is relative to ``image_root`` and must stay
inside it (:mod:`trace_core.data.files`). Output: one L2-normalised embedding per row.
"""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc import PythonModel

_MODEL_CODE = '''"""TRACE pyfunc entry point (MLflow models-from-code)."""
import mlflow

from trace_core.tracking.pyfunc import TracePyfunc

mlflow.models.set_model(TracePyfunc())
'''


def model_code() -> str:
    """Source of the models-from-code entry file."""
    return _MODEL_CODE


def signature() -> Any:
    """Input/output/params schema of the pyfunc."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema(
        [
            ColSpec("string", "text", required=False),
            ColSpec("string", "img_path", required=False),
            ColSpec("long", "task_id", required=False),
            ColSpec("string", "side", required=False),
        ]
    )
    outputs = Schema([TensorSpec(np.dtype("float32"), (-1, -1))])
    params = ParamSchema(
        [
            ParamSpec("image_root", "string", "."),
            ParamSpec("routing", "string", "adaptive"),
            ParamSpec("max_new_tokens", "long", 192),
            ParamSpec("batch_size", "long", 8),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _cell(row: Any, key: str) -> Any:
    value = row.get(key) if hasattr(row, "get") else None
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    return value


class TracePyfunc(PythonModel):
    """Pyfunc that embeds queries (routed) and candidates with a saved TRACE encoder."""

    def load_context(self, context: Any) -> None:
        """Load the encoder from the logged ``model_dir`` artifact."""
        from pathlib import Path

        from trace_core.model.inference import load_encoder

        self.encoder = load_encoder(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """Embed every row of ``model_input`` (a DataFrame); returns an (n, dim) float32 array.

        Left unannotated on purpose: MLflow reads type hints of ``predict`` as a schema.
        """
        from pathlib import Path

        import numpy as np

        from trace_core.types import EncodeItem, routing_mode

        opts = {"image_root": ".", "routing": "adaptive", "max_new_tokens": 192, "batch_size": 8, **(params or {})}
        rows = model_input.to_dict("records")
        items = [
            EncodeItem(
                id=str(i),
                task_id=int(_cell(r, "task_id") or 0),
                text=_cell(r, "text"),
                img_path=_cell(r, "img_path"),
            )
            for i, r in enumerate(rows)
        ]
        is_query = [(_cell(r, "side") or "candidate") == "query" for r in rows]
        out = np.zeros((len(items), self.encoder.dim), dtype=np.float32)
        root = Path(str(opts["image_root"]))
        q_idx = [i for i, q in enumerate(is_query) if q]
        c_idx = [i for i, q in enumerate(is_query) if not q]
        if q_idx:
            enc = self.encoder.encode_queries(
                [items[i] for i in q_idx],
                root,
                mode=routing_mode(str(opts["routing"])),
                max_new_tokens=int(opts["max_new_tokens"]),
                batch_size=int(opts["batch_size"]),
            )
            out[q_idx] = enc.vectors
        if c_idx:
            out[c_idx] = self.encoder.encode_candidates([items[i] for i in c_idx], root, int(opts["batch_size"]))
        return out
