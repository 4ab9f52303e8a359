"""Typed parameters: one frozen pydantic model per ``params.yaml`` section.

``params.yaml`` is the single source of parameters. Every section is parsed into a frozen
model that rejects unknown keys, so a typo fails loudly with the offending key named.
Derived values never go back into these models (see :mod:`trace_core.paths`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PARAMS = Path("params.yaml")
#: teacher tokens the ``<reasoning></reasoning><answer></answer>`` tags (and spacing) may take.
CHAIN_FORMAT_TOKENS = 24
PositiveInt = Annotated[int, Field(ge=1)]


def _steps(v: int) -> int:
    if v == 0:
        raise ValueError("must be -1 (train for `epochs`) or >= 1")
    return v


#: A training run's step cap: -1 = train for ``epochs``, N >= 1 = stop after N optimizer steps.
MaxSteps = Annotated[int, Field(ge=-1), AfterValidator(_steps)]
#: learning-rate schedules of ``transformers`` (a test checks them against ``SchedulerType``).
LR_SCHEDULERS = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
]
#: backbone families (a test checks them against the registry in ``trace_core.model.backbone``).
MODEL_FAMILIES = Literal["tiny", "qwen2-vl-2b", "qwen2-vl-7b", "qwen2.5-vl-3b", "qwen2.5-vl-7b"]
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


class Section(BaseModel):
    """Base class of every params section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class BaseParams(Section):
    """Settings shared by every stage."""

    seed: int = 42
    profile: Literal["mini", "full"] = "mini"
    run_name: str = "mini"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"


class PathsParams(Section):
    """Artifact roots; every concrete location is derived in :mod:`trace_core.paths`."""

    data_root: str = "data/mbeir"
    zeroshot_root: str = "data/zeroshot"
    cot_dir: str = "data/cot"
    model_dir: str = "models/trace"
    self_model_dir: str = "models/trace_self"  # phase-2 (self-chain) model; see SelfChainParams
    embeddings_dir: str = "embeddings"
    index_dir: str = "index"
    metrics_dir: str = "metrics"
    reports_dir: str = "reports"
    state_dir: str = ".trace"


class MiniParams(Section):
    """Sizes and shape of the generated M-BEIR-mini benchmark (see trace_core/data/mini/)."""

    image_size: int = Field(112, gt=0, multiple_of=28)
    train_per_task: int = Field(240, ge=1)
    test_per_task: int = Field(200, ge=1)
    pool_per_task: int = Field(200, ge=1)
    val_per_task: int = Field(16, ge=1)
    n_entities: int = Field(150, ge=2, le=2000)
    min_objects: int = Field(1, ge=1, le=9)
    max_objects: int = Field(3, ge=1, le=9)
    distractors_per_query: int = Field(2, ge=0)
    cross_dataset_fraction: float = Field(0.1, ge=0.0, le=1.0)
    query_variants: int = Field(4, ge=2)
    jitter_px: int = Field(3, ge=0)
    shade_jitter: int = Field(12, ge=0, le=255)

    @model_validator(mode="after")
    def _objects_range(self) -> MiniParams:
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) must not exceed max_objects ({self.max_objects})")
        return self


class ZeroshotMiniParams(Section):
    """Sizes of zero-shot-mini (trace_core/data/mini/zeroshot.py; renders use ``download.mini``'s)."""

    queries: int = Field(24, ge=4)  # per dataset; GeneCIS and Sugar-Crepe: a quarter per subset
    distractors: int = Field(24, ge=0)  # extra gallery images (CIRCO, multi-turn FashionIQ)


class DownloadParams(Section):
    """Where the data comes from: generated (mini) or the Hugging Face dataset (full).

    The zero-shot root is filled alongside: zero-shot-mini with the mini profile, or links to
    real copies from ``zeroshot_from_dir`` (one folder per dataset, see trace_core/data/zeroshot.py).
    """

    profile: Literal["mini", "full"] = "mini"
    repo_id: str = "TIGER-Lab/M-BEIR"
    revision: str = "main"
    include_images: bool = False
    from_dir: str | None = None
    mini: MiniParams = MiniParams()
    zeroshot_from_dir: str | None = None
    zeroshot_mini: ZeroshotMiniParams = ZeroshotMiniParams()


class DataParams(Section):
    """How M-BEIR records become training and model inputs (read by every stage that encodes text).

    ``train_file`` picks the training queries that cot_generate and cot_build read (they build
    the training file train reads): ``union_up`` is UniIR's upsampled union
    ``query/union_train/mbeir_union_up_train.jsonl`` (a multiset: the same qid repeats with
    identical content), ``per_dataset`` the ten ``query/train/mbeir_<dataset>_train.jsonl``
    files, each query once. ``normalize_text`` is UniIR's text normalisation of query and
    candidate text at encoding time (:func:`trace_core.data.normalize.uniir_format`), or
    ``none`` (raw text; the instruction is joined to the query text with one space).
    """

    train_file: Literal["union_up", "per_dataset"] = "union_up"
    normalize_text: Literal["uniir", "none"] = "uniir"


class ValidateParams(Section):
    """Great Expectations validation settings."""

    image_check_fraction: float = Field(1.0, ge=0.0, le=1.0)
    max_failures_listed: int = Field(20, ge=1, description="offending rows listed per failed rule (>= 1)")


class TeacherParams(Section):
    """A chain-of-thought teacher (also used as routing assessor and as verifier).

    ``oracle`` reads M-BEIR-mini metadata; ``transformers`` loads a local Qwen2(.5)-VL
    checkpoint from ``model``; ``openai`` calls an OpenAI-compatible chat-completions server
    at ``base_url`` (key read from the environment variable named ``api_key_env``).
    ``timeout_s`` bounds a whole request (connect and every read); a server's ``Retry-After``
    is honoured up to ``max_retry_after_s`` seconds.
    """

    kind: Literal["oracle", "transformers", "openai"] = "oracle"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = Field(384, ge=1)  # >= the curation length bounds + tags (checked by Params)
    temperature: float = Field(0.0, ge=0.0)
    batch_size: int = Field(8, ge=1)
    concurrency: int = Field(4, ge=1)
    max_retries: int = Field(4, ge=0)
    retry_base_delay_s: float = Field(1.0, ge=0.0)
    max_retry_after_s: float = Field(60.0, ge=0.0, description="cap on a server's Retry-After wait, seconds")
    timeout_s: float = Field(60.0, gt=0.0, description="deadline of one request (connect + all reads), seconds")
    device: str = Field("auto", description="auto, cpu, mps, cuda or cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    min_pixels: int = Field(3136, ge=1)
    max_pixels: int = Field(313600, ge=1)
    oracle_answer_max_words: int = Field(40, ge=4)
    show_target_hint: bool = True

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError(f"'{v}' is not auto, cpu, mps, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _needs_endpoint(self) -> TeacherParams:
        if self.kind == "openai" and not (self.base_url and self.model):
            raise ValueError("kind 'openai' needs base_url and model")
        if self.kind == "transformers" and not self.model:
            raise ValueError("kind 'transformers' needs model (a local checkpoint directory)")
        return self


class RoutingParams(Section):
    """Difficulty routing of training queries (z=0 direct, z=1 reason).

    ``overrides`` maps ``"<dataset>:<task>"`` (dataset id or name, task id or ``*``) to z.
    ``assessor`` is the model that labels queries in ``assessor`` mode (default: the teacher).
    """

    mode: Literal["rule", "assessor"] = "rule"
    reason_datasets: list[Annotated[int, Field(ge=0, le=9)]] = [5, 6, 7, 8]  # M-BEIR dataset ids 0-9
    overrides: dict[str, int] = {}
    assessor: TeacherParams | None = None

    @field_validator("overrides")
    @classmethod
    def _override_keys(cls, v: dict[str, int]) -> dict[str, int]:
        if v:  # imported here: the dataset registry is not needed to load params otherwise
            from trace_core.cot.overrides import parse_overrides

            parse_overrides(v)
        return v


class CotGenerateParams(Section):
    """M-BEIR-CoT generation (stage cot_generate).

    The stage fails (after writing its shards) when more than ``max_error_rate`` of the
    teacher requests end as error rows; a re-run retries those rows.
    """

    routing: RoutingParams = RoutingParams()
    teacher: TeacherParams = TeacherParams()
    shard_size: int = Field(256, ge=1, description="queries per shard (>= 1)")
    max_queries: int | None = Field(None, ge=1, description="first N training queries (>= 1); null = all")
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0, description="tolerated share of teacher error rows")


class CotCurateParams(Section):
    """Dual filtering of teacher chains (stage cot_curate).

    ``verifier`` picks the model filter; for ``transformers``/``openai`` the connection
    settings come from ``verifier_teacher`` (whose ``kind`` must then equal ``verifier``).
    """

    reasoning_min_tokens: int = Field(16, ge=0)
    reasoning_max_tokens: int = Field(256, ge=1)
    answer_min_tokens: int = Field(2, ge=0)
    answer_max_tokens: int = Field(64, ge=1)
    max_ngram_repeat: int = Field(3, ge=1)
    ngram_n: int = Field(4, ge=1)
    min_english_ratio: float = Field(0.9, ge=0.0, le=1.0)
    min_english_function_words: int = Field(1, ge=0)
    min_english_function_share: float = Field(0.6, ge=0.0, le=1.0)  # English / (English + foreign) function words
    extra_refusal_patterns: list[str] = []
    keyword_min_chars: int = Field(3, ge=1)
    near_duplicate_threshold: float = Field(0.9, ge=0.0, le=1.0)
    fallback_piece_chars: int = Field(4, ge=1)
    verifier: Literal["oracle", "transformers", "openai", "none"] = "oracle"
    verifier_teacher: TeacherParams = TeacherParams()
    verifier_threshold: float = Field(0.7, ge=0.0, le=1.0)
    tokenizer: str | None = None
    report_examples: int = Field(3, ge=0, description="examples per rule in the report; 0 = none")

    @field_validator("extra_refusal_patterns")
    @classmethod
    def _patterns_compile(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"pattern {pattern!r} is not a regular expression ({err})") from None
        return v

    @model_validator(mode="after")
    def _verifier_kind(self) -> CotCurateParams:
        if self.verifier in ("transformers", "openai") and self.verifier_teacher.kind != self.verifier:
            raise ValueError(f"verifier_teacher.kind must be '{self.verifier}' when verifier is '{self.verifier}'")
        for what in ("reasoning", "answer"):
            low, high = getattr(self, f"{what}_min_tokens"), getattr(self, f"{what}_max_tokens")
            if low > high:
                raise ValueError(f"{what}_min_tokens ({low}) must not exceed {what}_max_tokens ({high})")
        return self


class CotBuildParams(Section):
    """Joining curated chains with training queries (stage cot_build)."""

    dropped_policy: Literal["fallback", "exclude"] = "fallback"
    joiner: str = "\n"
    max_negatives: int = Field(8, ge=0)


class TinyModelParams(Section):
    """The ``tiny`` preset: a Qwen2-VL-architecture model from a small config, random weights."""

    vocab_size: PositiveInt = 2048
    min_vocab_size: int = Field(0, ge=0, description="pad the vocabulary to at least this; 0 = off")
    hidden_size: PositiveInt = 128
    intermediate_size: PositiveInt = 512
    num_layers: PositiveInt = 2
    num_heads: PositiveInt = 4
    num_kv_heads: PositiveInt = 2
    max_position_embeddings: PositiveInt = 2048
    rope_theta: float = Field(10000.0, gt=0.0)
    vision_depth: PositiveInt = 2
    vision_embed_dim: PositiveInt = 64
    vision_num_heads: PositiveInt = 4
    vision_mlp_ratio: PositiveInt = 2

    @model_validator(mode="after")
    def _head_shapes(self) -> TinyModelParams:
        checks = [
            ("hidden_size", self.hidden_size, "num_heads", self.num_heads),
            ("num_heads", self.num_heads, "num_kv_heads", self.num_kv_heads),
            ("vision_embed_dim", self.vision_embed_dim, "vision_num_heads", self.vision_num_heads),
        ]
        for a, x, b, y in checks:
            if x % y:
                raise ValueError(f"{a} ({x}) must be a multiple of {b} ({y})")
        return self


class ModelParams(Section):
    """Backbone and TRACE head."""

    family: MODEL_FAMILIES = "tiny"
    name_or_path: str | None = None
    emb_token: Literal["<|emb|>"] = "<|emb|>"  # the training file's target token
    min_pixels: PositiveInt = 3136
    max_pixels: PositiveInt = 12544
    max_length: PositiveInt = 512
    lora: bool = False
    lora_r: PositiveInt = 128
    lora_alpha: PositiveInt = 256
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_target_modules: list[str] = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    freeze_vision: bool = False
    train_merger: bool = True
    tiny: TinyModelParams = TinyModelParams()

    @model_validator(mode="after")
    def _pixels(self) -> ModelParams:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        return self


class TrainParams(Section):
    """Joint training (generation CE + InfoNCE) with DeepSpeed ZeRO-3.

    Defaults are the embedded (tiny, random-init) recipe: ``lambda_gen`` 0.2 because from
    random weights the CE gradient on ``<|emb|>`` swamps InfoNCE at first and collapses the
    pooled states; lr 2e-3 for a from-scratch model. The full preset uses the paper's
    ``lambda_gen`` 1.0 and lr 2e-4. ``grad_cache_chunk`` > 0 runs each step's rows in chunks of
    that many (gradient caching: same loss and global in-batch negatives, one chunk's activations,
    one extra forward per chunk); see :mod:`trace_core.model.grad_cache`.
    """

    lambda_gen: float = 0.2
    lambda_ret: float = 1.0
    # CE of each query's first response token (the routing decision), averaged over queries;
    # our addition (0 = the paper's loss, as in the full preset), see README "Routing decision loss"
    lambda_route: float = Field(1.0, ge=0.0)
    temperature: float = Field(0.05, gt=0.0)
    learnable_temperature: bool = False
    hard_negatives: int = Field(0, ge=0, description="hard negatives per query; 0 = in-batch negatives only")
    gather_across_ranks: bool = True
    per_device_batch_size: PositiveInt = 32
    epochs: float = Field(4.0, gt=0.0)
    max_steps: MaxSteps = Field(-1, description="-1 = train for `epochs`; N >= 1 stops after N steps")
    learning_rate: float = Field(2e-3, gt=0.0)
    lr_scheduler: LR_SCHEDULERS = "cosine"
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, ge=0.0)
    bf16: bool = False
    gradient_checkpointing: bool = False
    grad_cache_chunk: int = Field(0, ge=0)  # rows per gradient-cache chunk; 0 = one forward
    deepspeed: bool = True
    zero_stage: Literal[0, 1, 2, 3] = 3
    offload: bool = False
    task_balanced: bool = True
    logging_steps: PositiveInt = 25
    eval_steps: int = Field(100, ge=0, description="validate every N steps; 0 = only before and after training")
    save_steps: PositiveInt = 100
    val_queries: PositiveInt = 200  # held-out validation queries (at least one per task)
    val_k: PositiveInt = 5
    val_routing: Literal["adaptive", "never", "always"] = "adaptive"  # validation encodes like export
    val_max_new_tokens: int = Field(192, ge=0)
    save_total_limit: PositiveInt = 2


class SelfChainParams(Section):
    """Self-chain training (stage self_train, beyond the paper): InfoNCE after the model's own chains.

    Phase 1 (``train``) embeds a reasoning query after the teacher's gold chain (teacher
    forcing); export embeds it after the model's own greedy chain. With ``enabled`` the stage
    ``self_train`` regenerates the chains of the reasoning-route (z=1) training queries with
    the phase-1 model (the export's routed decoding, routing ``always``; cached per model id)
    and trains a second phase from the phase-1 weights: ``L_gen`` (and the routing term) on
    the gold chain, InfoNCE on the embedding after the model's own chain for ``own_fraction``
    of those queries (the rest keep the gold chain; 0.0 = the steps-matched "continue on gold
    chains" control). ``reward``: keep an own chain only when its embedding scores the
    positive higher than the gold chain's embedding does (rejection sampling, the embedder
    as judge), else the gold chain. Downstream stages serve ``paths.self_model_dir`` when
    enabled, ``paths.model_dir`` otherwise.
    """

    enabled: bool = True  # on in the mini default: see README "Method notes" (ablation intervals)
    own_fraction: float = Field(1.0, ge=0.0, le=1.0, description="share of z=1 queries trained on own chains")
    reward: bool = False
    epochs: float = Field(1.0, gt=0.0, description="phase-2 epochs")
    max_steps: MaxSteps = Field(-1, description="-1 = train for `epochs`; N >= 1 stops phase 2 after N steps")
    learning_rate: float = Field(5e-4, gt=0.0, description="phase-2 peak learning rate")
    max_new_tokens: int = Field(192, ge=1, description="cap of a regenerated chain, as export.max_new_tokens")
    batch_size: PositiveInt = 32  # queries per decoding batch
    max_queries: int | None = Field(None, ge=1, description="first N distinct z=1 training queries; null = all")


class ExportParams(Section):
    """Embedding export with implicit routing.

    ``num_workers``: DataLoader worker processes that open, decode and collate the images and
    prompts of the next batches while the model runs (prefetching ``2 x num_workers`` batches);
    0 does it in the exporting process, between forwards (the fastest on a CPU-only machine, where
    workers and the forward share the cores: bench/bench_export.py). ``barrier_timeout_s``: under several
    ranks (``torch.distributed.run``), how long a rank that has finished its shards waits at a
    barrier for the slowest one.
    """

    routing: Literal["adaptive", "never", "always"] = "adaptive"
    max_new_tokens: int = Field(192, ge=0)  # M-BEIR-mini chains are 80-140 tokens
    batch_size: PositiveInt = 32
    shard_size: PositiveInt = 4096
    union_pool: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0)
    barrier_timeout_s: float = Field(86400.0, gt=0.0)


class IndexParams(Section):
    """Vector index backend.

    Index types per pool kind: ``local_index_type`` for the 16 local pools, which the M-BEIR
    protocol scores by exhaustive search (UniIR: faiss ``IDMap,Flat``), so ``FLAT`` unless you
    opt in to an approximate index; ``index_type`` for the union pool and for serving, where
    HNSW/IVF_FLAT make 5.6 M candidates searchable. ``evaluate`` records the index type and
    its search parameters next to every number and marks numbers from approximate indexes.
    """

    backend: Literal["milvus", "numpy"] = "milvus"
    uri: str | None = None
    index_type: Literal["FLAT", "HNSW", "IVF_FLAT"] = "FLAT"  # union pool and serving
    local_index_type: Literal["FLAT", "HNSW", "IVF_FLAT"] = "FLAT"  # the 16 local pools (protocol: FLAT)
    metric: Literal["IP", "COSINE"] = "IP"
    hnsw_m: PositiveInt = 16
    hnsw_ef_construction: PositiveInt = 200
    hnsw_ef: PositiveInt = 64
    ivf_nlist: PositiveInt = 128
    ivf_nprobe: PositiveInt = 16
    insert_batch: PositiveInt = 2048
    search_batch: PositiveInt = 256
    timeout_s: float = Field(30.0, gt=0.0)


class EvaluateParams(Section):
    """M-BEIR evaluation."""

    ks: list[PositiveInt] = Field([1, 5, 10], min_length=1)
    fashion_ks: list[PositiveInt] = Field([10, 20, 50], min_length=1)
    union_pool: bool = True
    run_id: str = Field("trace", pattern=r"^\S+$", description="run-file column 6: no whitespace")
    gallery_queries: int = Field(3, ge=0)  # queries per task in reports/gallery/index.html (0: none)


ZEROSHOT_DATASETS: tuple[str, ...] = (
    "sharegpt4v",
    "urban1k",
    "flickr30k",
    "circo",
    "genecis",
    "visdial",
    "vist",
    "mtfashioniq",
    "ccneg",
    "sugar_crepe",
)


class EvaluateZeroshotParams(Section):
    """The zero-shot suite (stage evaluate_zeroshot); queries are encoded with ``export``'s settings."""

    datasets: list[str] = list(ZEROSHOT_DATASETS)
    keep_k: int = Field(50, ge=1)  # candidates per query written to the run files
    run_id: str = "trace"
    # prompt length cap of zero-shot queries (None: the model's max_length); interleaved queries
    # hold several images (VIST: four), so full-size images need more than training's 1024
    max_length: int | None = Field(None, ge=64)

    @model_validator(mode="after")
    def _known_datasets(self) -> EvaluateZeroshotParams:
        unknown = [d for d in self.datasets if d not in ZEROSHOT_DATASETS]
        if unknown:
            raise ValueError(f"unknown zero-shot datasets {unknown} (known: {', '.join(ZEROSHOT_DATASETS)})")
        return self


class TrackingParams(Section):
    """MLflow tracking (the URI may also come from MLFLOW_TRACKING_URI)."""

    tracking_uri: str = "sqlite:///mlruns.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "trace"
    registered_model: str = "trace-retriever"
    enabled: bool = True
    promote: bool = True  # evaluate may move the champion/challenger aliases (ablation variants: false)


class Params(Section):
    """All of ``params.yaml``."""

    base: BaseParams = BaseParams()
    paths: PathsParams = PathsParams()
    download: DownloadParams = DownloadParams()
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    cot_generate: CotGenerateParams = CotGenerateParams()
    cot_curate: CotCurateParams = CotCurateParams()
    cot_build: CotBuildParams = CotBuildParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    self_chain: SelfChainParams = SelfChainParams()
    export: ExportParams = ExportParams()
    index: IndexParams = IndexParams()
    evaluate: EvaluateParams = EvaluateParams()
    evaluate_zeroshot: EvaluateZeroshotParams = EvaluateZeroshotParams()
    tracking: TrackingParams = TrackingParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())

    @model_validator(mode="after")
    def _teacher_can_reach_the_length_bounds(self) -> Params:
        """A chain at the filter's upper length bounds must fit in the teacher's ``max_new_tokens``.

        Otherwise the bounds are never reached: a long chain is cut before ``</answer>`` and
        dropped as ``format`` instead of being judged by ``length``.
        """
        teacher, cur = self.cot_generate.teacher, self.cot_curate
        need = cur.reasoning_max_tokens + cur.answer_max_tokens + CHAIN_FORMAT_TOKENS
        if teacher.kind != "oracle" and teacher.max_new_tokens < need:
            raise ValueError(
                f"cot_generate.teacher.max_new_tokens ({teacher.max_new_tokens}) must be at least "
                f"cot_curate.reasoning_max_tokens + answer_max_tokens + {CHAIN_FORMAT_TOKENS} tag tokens ({need})"
            )
        return self


class ParamsError(ValueError):
    """A params file that cannot be parsed; the message names the file and the key."""


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]).replace("validate_", "validate") or "<top level>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}' (not a TRACE parameter)")
        else:
            lines.append(f"{source}: key '{key}': {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "<params>") -> Params:
    """Validate a params mapping; raise :class:`ParamsError` naming the bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_describe(err, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params YAML file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{p}: params file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{p}: top level must be a mapping of sections")
    return parse_params(raw, str(p))


def dump_params(params: Params) -> dict[str, Any]:
    """Return the params as a plain mapping with the ``params.yaml`` key names."""
    return params.model_dump(by_alias=True, mode="json")


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``section.sub.key`` in a nested params mapping; the key must already exist.

    Raises:
        KeyError: naming the key, for a typo or a key the schema does not have.
    """
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"params.yaml has no key {key!r}")
    node[leaf] = value


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a params mapping with dotted ``overrides`` set (what ``dvc exp run -S`` does).

    Raises:
        KeyError: naming an override key the params do not have.
    """
    out: dict[str, Any] = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        set_dotted(out, key, value)
    return out
