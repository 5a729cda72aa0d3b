"""The Pioneer API (group ``pioneer.dev``, version ``v1alpha1``) as pydantic models.

These models are the single source of truth: ``crds/`` is generated from them
(``pioneer crds``), ``pioneer validate`` checks specs with them, and the controller,
trainer and operator read and write them.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic.alias_generators import to_camel

from pioneer import defaults as d

API_VERSION = f"{d.API_GROUP}/{d.API_VERSION}"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ApiModel(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields refused (kubectl's strict field validation)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True, validate_default=True
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------- enums


class Mode(str, Enum):
    cold_start = "coldStart"
    production = "production"


class TaskType(str, Enum):
    classification = "classification"
    ner = "ner"
    generation = "generation"


class Metric(str, Enum):
    accuracy = "accuracy"
    macro_f1 = "macroF1"
    f1 = "f1"
    entity_f1 = "entityF1"
    exact_match = "exactMatch"
    rouge_l = "rougeL"
    pass_at_1 = "passAt1"


METRICS_OF_TASK = {
    "classification": ("accuracy", "macroF1", "f1"),
    "ner": ("entityF1",),
    "generation": ("exactMatch", "rougeL", "passAt1"),
}


class AnswerFormat(str, Enum):
    final_number = "finalNumber"
    answer_letter = "answerLetter"
    alias = "alias"
    text = "text"
    code = "code"


class Backend(str, Enum):
    transformers = "transformers"
    gliner2 = "gliner2"


class NerBackend(str, Enum):
    """The deprecated ``nerBackend`` values (``backend`` replaced them)."""

    token_classification = "tokenClassification"
    gliner = "gliner"


class Method(str, Enum):
    full = "full"
    lora = "lora"


class Planner(str, Enum):
    deterministic = "deterministic"
    claude = "claude"


class DataFormat(str, Enum):
    auto = "auto"
    csv = "csv"
    tsv = "tsv"
    json = "json"
    jsonl = "jsonl"
    conll = "conll"


class Phase(str, Enum):
    pending = "Pending"
    preparing = "Preparing"
    running = "Running"
    succeeded = "Succeeded"
    failed = "Failed"


# --------------------------------------------------------------------------- shared pieces


class ObjectMeta(ApiModel):
    """The subset of Kubernetes object metadata Pioneer reads; other metadata is kept as given."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    name: str = Field(description="Object name (DNS-1123 subdomain).", max_length=63)
    namespace: str | None = Field(default=None, description="Namespace of the object.")
    generation: int | None = Field(default=None, description="Set by the API server.")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    @model_validator(mode="after")
    def _dns_name(self) -> ObjectMeta:
        if not DNS1123.match(self.name):
            raise ValueError(
                f"name {self.name!r} must be a lowercase DNS-1123 name (letters, digits, '-', '.')"
            )
        return self


class Condition(ApiModel):
    """A Kubernetes-style status condition."""

    type: str = Field(description="Condition type, e.g. Ready, EvalSetFrozen, TargetReached.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason.")
    message: str = Field(default="", description="Human-readable explanation.")
    last_transition_time: str | None = Field(default=None, description="RFC 3339 time of the last change.")
    observed_generation: int | None = Field(default=None, description="Generation the condition was computed for.")


# --------------------------------------------------------------------------- ModelAdaptation spec


class Task(ApiModel):
    """What the model must do and how success is measured."""

    description: str = Field(description="Natural-language description of the task.", min_length=1)
    type: TaskType = Field(default=TaskType.classification, description="Task family: classification, ner or generation.")
    labels: list[str] | None = Field(
        default=None,
        description="Allowed labels (ner: entity types). Inferred from the data when omitted; data rows with other labels are rejected when given.",
    )
    metric: Metric | None = Field(
        default=None,
        description="Score on the evaluation set. classification: accuracy (default), macroF1, or f1 of positiveLabel; "
        "ner: entityF1 (default, entity-level micro F1); generation: exactMatch (default, after answerFormat extraction), rougeL, or passAt1 (answerFormat code).",
    )
    answer_format: AnswerFormat = Field(
        default=AnswerFormat.text,
        description="generation: how the answer is read from the model's output for exactMatch: finalNumber (after ####), "
        "answerLetter (A-E), alias (any '|'-separated reference alias), text (whole normalised output) or code (the output's "
        "program, run in a sandbox followed by the reference's tests: correct when it exits 0).",
    )
    positive_label: str | None = Field(default=None, description="Label scored by metric f1 (e.g. spam).")
    negative_label: str | None = Field(
        default=None, description="Label meaning 'no label fires' (e.g. ham, out_of_scope); fills the evaluation set's negative slice."
    )
    out_of_scope_label: str | None = Field(
        default=None,
        description="classification: label for inputs the task does not handle (CLINC's oos). Production mode then trains the "
        "traces triage finds off-task (empty, gibberish, injections, off-domain) to this label instead of only excluding them.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        allowed = METRICS_OF_TASK[self.type]
        if self.metric is None:
            self.metric = d.DEFAULT_METRIC[self.type]
        elif self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} does not apply to task type {self.type}; use one of {list(allowed)}")
        if self.metric == Metric.pass_at_1.value and self.answer_format != AnswerFormat.code.value:
            raise ValueError("metric passAt1 needs answerFormat code (the reference holds the tests the program must pass)")
        if self.out_of_scope_label is not None and self.type != TaskType.classification.value:
            raise ValueError("outOfScopeLabel applies to classification tasks only")
        if self.metric == Metric.f1.value and not self.positive_label:
            raise ValueError("positiveLabel is required when metric is f1")
        if self.labels is not None:
            least = 2 if self.type == TaskType.classification.value else 1
            if len(set(self.labels)) != len(self.labels) or len(self.labels) < least:
                raise ValueError(f"labels must hold at least {least} distinct label(s)")
            for field, value in (("positiveLabel", self.positive_label), ("negativeLabel", self.negative_label),
                                 ("outOfScopeLabel", self.out_of_scope_label)):
                if value is not None and value not in self.labels:
                    raise ValueError(f"{field} {value!r} is not one of labels")
        return self


class DataSource(ApiModel):
    """One source of labelled examples. Exactly one of path, s3, hub, traces or builtin."""

    path: str | None = Field(default=None, description="Local file (CSV, TSV, JSON or JSONL), relative to the spec file.")
    s3: str | None = Field(default=None, pattern=r"^s3://[^/]+/.+", description="S3 URI of a data file, s3://bucket/key.")
    hub: str | None = Field(default=None, description="Hugging Face dataset id, 'owner/name[:file]' (needs network).")
    traces: str | None = Field(default=None, description="Trace store (SQLite file or SQLAlchemy URL) holding judged inference traces (production mode).")
    model_id: str | None = Field(default=None, max_length=256, description=(
        "traces: only traces answered by this model, 'name@3' (one revision) or 'name@' (every revision). Generated "
        "repairs set it to the revision they repair."))
    builtin: Literal["home-assistant-intents"] | None = Field(
        default=None, description="Data a registry package ships: home-assistant-intents (utterances generated with hassil)."
    )
    format: DataFormat = Field(default=DataFormat.auto, description="File format; auto uses the file extension (.conll/.txt with task type ner: CoNLL columns).")
    text_field: str = Field(default="text", description="Column or key holding the input text (ner: a list of words, or text split on spaces).")
    label_field: str = Field(default="label", description="Column or key holding the label (ner: a list of BIO tags, one per word; generation: the reference answer).")
    limit_per_label: int | None = Field(default=None, ge=1, description="builtin only: utterances generated per label.")
    credentials_secret: str | None = Field(
        default=None, max_length=253,
        description="traces: a Secret whose keys become environment variables of the preparation Job; write them into the URL "
                    "as ${NAME} (e.g. postgresql+psycopg://reader:${PGPASSWORD}@db/traces), so no password sits in the resource.")

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSource:
        given = [k for k in ("path", "s3", "hub", "traces", "builtin") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"exactly one of path, s3, hub, traces, builtin must be set (got {given or 'none'})")
        if self.model_id is not None and not self.traces:
            raise ValueError("modelId filters a traces source; this source has no traces")
        return self


class Evaluation(ApiModel):
    """The held-out evaluation set, built and frozen before any training (paper §2.5)."""

    size: int = Field(default=d.EVAL_SIZE, ge=10, description="Number of examples in the evaluation set.")
    boundary_share: float = Field(
        default=d.EVAL_BOUNDARY_SHARE, ge=0, le=0.9, description="Share of the set given to confusable boundary pairs."
    )


class Curation(ApiModel):
    """Quality controls applied to every training set (paper §2.3)."""

    max_train_examples: int = Field(default=d.MAX_TRAIN_EXAMPLES, ge=10, description="Upper bound on training examples in the first dataset.")
    max_label_ratio: float = Field(default=d.MAX_LABEL_RATIO, ge=1, description="No label may have more than this times the examples of any other.")
    hard_negative_share: float = Field(
        default=d.HARD_NEGATIVE_SHARE, ge=0, le=0.6, description="Target share of hard negatives (2-for-1 rule)."
    )
    near_duplicate_similarity: float = Field(
        default=d.NEAR_DUPLICATE_SIMILARITY, gt=0, le=1, description="Cosine similarity (char n-gram TF-IDF) above which two inputs are near-duplicates."
    )
    length_matching: bool = Field(default=True, description="Sample training lengths to follow the real input length distribution.")
    replay_share: float = Field(default=0.15, ge=0, le=d.MAX_REPLAY_SHARE, description="Production mode: share of the curriculum replayed from the parent's training data (paper: 10-20%; noisy logs with few fixable failures need more).")
    entity_max_repeats: int = Field(default=d.ENTITY_MAX_REPEATS, ge=0, description="ner: an entity value may occur at most this often; further occurrences get a same-type substitute (0 = off).")


class Synthesis(ApiModel):
    """A teacher (Claude) writes what the data lacks: examples of each label (classification), tagged sentences of each
    entity type (ner), or chain-of-thought rationales (generation with strategy.supervision chainOfThought)."""

    model: str = Field(default=d.LLM_MODEL, max_length=200, description="Anthropic model id of the teacher.")
    min_per_label: int = Field(default=d.SYNTHESIS_MIN_PER_LABEL, ge=1, le=500, description=(
        "Training examples per label (ner: sentences per entity type) the pool should have; the teacher writes the shortfall."))
    eval_per_label: int = Field(default=d.SYNTHESIS_EVAL_PER_LABEL, ge=1, le=200, description=(
        "Without any real data: evaluation examples per label (ner: per entity type), from a separate synthesis batch (never "
        "trained on)."))
    max_tokens: int = Field(default=d.SYNTHESIS_MAX_TOKENS, ge=256, le=64000, description="Most output tokens per synthesis call.")
    timeout_seconds: float = Field(default=d.LLM_TIMEOUT_SECONDS, gt=0, le=600, description="Per-call timeout.")
    base_url: str | None = Field(default=None, max_length=2000, description="An Anthropic-compatible gateway (default: ANTHROPIC_BASE_URL).")


class Data(ApiModel):
    sources: list[DataSource] = Field(default_factory=list, description=(
        "Where labelled examples come from; all are pooled. May be empty when data.synthesis writes the data."))
    evaluation: Evaluation = Field(default_factory=Evaluation)
    curation: Curation = Field(default_factory=Curation)
    synthesis: Synthesis | None = Field(default=None, description=(
        "Cold start from a description: a teacher writes examples of each label (ner: tagged sentences of each entity type) "
        "the sources lack, or (generation) chain-of-thought rationales for the examples that have none."))

    @model_validator(mode="after")
    def _some_data(self) -> Data:
        if not self.sources and self.synthesis is None:
            raise ValueError("data.sources is empty: give at least one source, or data.synthesis to have a teacher write the data")
        return self


class Gate(ApiModel):
    """Acceptance rule: score >= tau and at most epsilon regressions (paper eq. 1, §2.7)."""

    tau: float = Field(default=d.TAU, gt=0, le=1, description="Target score on the evaluation set.")
    epsilon: int = Field(default=d.EPSILON, ge=0, description="Most previously-correct examples a candidate may get wrong (absolute count).")
    cross_checkpoint: bool = Field(default=True, description="Also require the gate on the previous checkpoint's evaluation set.")
    promotion: Literal["automatic", "manual"] = Field(default=d.PROMOTION, description=(
        "automatic: a passing verdict becomes the DeployedModel's next revision at once; manual: it waits in the "
        "DeployedModel's status.pendingRevision until someone approves it (`pioneer approve NAME`, or the annotation "
        "approval.pioneer.dev/attempt set to the candidate attempt's name)."))
    regression_set_fraction: float = Field(
        default=0.5, ge=0.3, le=1.0, description="Production mode: regression set size as a fraction of the failure set (30-100%)."
    )


class TriagePolicy(ApiModel):
    """How production-mode triage tells poison from clean failures."""

    fdr: float = Field(default=d.TRIAGE_FDR, gt=0, lt=1, description=(
        "False-discovery rate of the statistical checks (domain, label support, confident learning, off-task "
        "neighbourhood): traces are flagged by Benjamini-Hochberg over conformal p-values at this level, so about this "
        "share of the traces they set aside is clean, and clean traffic yields almost no flags."))
    llm: bool = Field(default=d.TRIAGE_LLM, description=(
        "Also ask Claude (search.llm's model and key) whether each failing trace is fixable or external. The statistical "
        "triage always runs and its flags stand; a failure it kept is set aside only when Claude calls it external and its "
        "own p-value is at or below fdr. Disagreements are listed in the report (classification)."))
    reference_max: int = Field(default=d.TRIAGE_REFERENCE_MAX, ge=100, description=(
        "Most trusted examples (the parent's training data and verified passing traces) the checks compare traces with "
        "and calibrate on; above it a seeded uniform sample is taken, and the preparation records the bound and what it "
        "sampled from. It bounds the cost per trace, so a preparation grows linearly with the log."))
    fit_processes: int = Field(default=d.TRIAGE_FIT_PROCESSES, ge=1, description=(
        "Processes that fit the label-quality model (TF-IDF + logistic regression: five folds on the trusted examples and "
        "one on all of them), at most one per CPU the preparation may use. Each holds one fit in memory (about 1.5 GB at "
        "a 20,000-example reference with 150 labels), so more processes trade memory for time; decisions do not depend on it."))
    embedding_precision: Literal["float32", "bfloat16"] = Field(default=d.TRIAGE_EMBEDDING_PRECISION, description=(
        "What the base model computes triage embeddings in. bfloat16 is about 3x faster on a CPU with native bfloat16 "
        "(AMX or AVX-512 BF16) and on most GPUs, with vectors whose cosine similarity to float32's is above 0.9997, but "
        "about 8x slower on a CPU without it (AVX2 only); float32 is exact. Vectors are cached per precision: a change of "
        "precision embeds again and draws a new reference. Applies to the encoder (embeddings: encoder, and the failures of hybrid and auto)."))
    embeddings: Literal["auto", "encoder", "static", "hybrid"] = Field(default=d.TRIAGE_EMBEDDINGS, description=(
        "How traces are embedded for the triage's checks. encoder: the base model's mean-pooled hidden states (about "
        "450 texts/s on two CPU cores for MiniLM). static: a model2vec table distilled from the base model once (about "
        "20 s for MiniLM, kept in the models cache), a lookup and a mean per text (tens of thousands of texts/s), for "
        "logs of millions of traces; it separates off-task traffic less sharply (README has both measured). hybrid: "
        "the encoder for failing traces and the static table for the passing traces' domain screen (most of a log, and "
        "the one check they get; measured to decide a poisoned repair as the encoder does). auto: encoder up to "
        f"{d.TRIAGE_HYBRID_ABOVE:,} passing traces, hybrid above (the preparation records which and why). Vectors and the "
        "pinned reference are kept per choice."))

    @model_validator(mode="after")
    def _precision_is_the_encoders(self):
        if self.embeddings == "static" and self.embedding_precision != d.TRIAGE_EMBEDDING_PRECISION:
            raise ValueError("embeddingPrecision applies to embeddings: encoder; a static embedding is a float32 table")
        return self


class Production(ApiModel):
    """Production-mode settings that shape the diagnosis (frozen with the failure set)."""

    triage: TriagePolicy = Field(default_factory=TriagePolicy, description="Poison detection of the triage.")


class SecretKeyRef(ApiModel):
    """A key of a Kubernetes Secret in the adaptation's namespace."""

    name: str = Field(max_length=253, description="Secret name.")
    key: str = Field(default=d.LLM_SECRET_KEY, max_length=253, description="Key within the Secret.")


class Llm(ApiModel):
    """The Claude planner's model and limits (search.planner: claude)."""

    model: str = Field(default=d.LLM_MODEL, max_length=200, description="Anthropic model id.")
    max_tokens: int = Field(default=d.LLM_MAX_TOKENS, ge=256, le=64000, description="Most output tokens per planning call.")
    token_budget: int = Field(default=d.LLM_TOKEN_BUDGET, ge=0, description=(
        "Most tokens (input + output) the planner may spend on this adaptation; past it, iterations fall back to the "
        "deterministic policy (recorded as an event)."))
    timeout_seconds: float = Field(default=d.LLM_TIMEOUT_SECONDS, gt=0, le=600, description="Per-call timeout; a timeout falls back to the deterministic policy.")
    base_url: str | None = Field(default=None, max_length=2000, description="An Anthropic-compatible gateway (default: ANTHROPIC_BASE_URL, else Anthropic's API).")
    api_key_secret: SecretKeyRef | None = Field(default=None, description=(
        "In the cluster: the Secret holding the API key (the operator reads it; the key never enters a custom resource). "
        "Locally the key comes from ANTHROPIC_API_KEY."))


class Search(ApiModel):
    """Budget and policy of the search over training pipelines."""

    max_attempts: int = Field(default=d.MAX_ATTEMPTS, ge=1, le=200, description="Training attempts in total (the untrained baseline is not counted).")
    parallelism: int = Field(default=d.PARALLELISM, ge=1, le=64, description="Attempts trained at the same time.")
    configurations_per_iteration: int = Field(
        default=d.CONFIGURATIONS_PER_ITERATION, ge=1, le=16, description="Configurations tried in each iteration (the paper uses at least two)."
    )
    planner: Planner = Field(default=Planner.deterministic, description=(
        "deterministic (default, offline) or claude: Claude proposes each iteration's attempts from the evidence (through the "
        "anthropic SDK; every proposal is validated, and errors fall back to the deterministic policy)."))
    llm: Llm = Field(default_factory=Llm, description="The Claude planner's model, token budget and endpoint.")
    larger_base_models: list[str] = Field(
        default_factory=list,
        description="Larger base models the planner may move to when tuning (paper §2.4: 'larger base model'), in order; e.g. [mpnet].",
    )
    backends: list[Backend] = Field(default_factory=list, description=(
        "Other model families the planner may move to when tuning (paper §2.4: 'a different encoder'), e.g. [gliner2] for "
        "a transformers spec; classification and ner only."))
    seed: int = Field(default=d.SEED, ge=0, description="Seed for data sampling and training.")


class Hyperparameters(ApiModel):
    """H of a pipeline pi = (D, H, S)."""

    base_model: str = Field(default=d.BASE_MODEL, description="'minilm' (offline default), a local directory, or a hub id.")
    method: Method = Field(default=Method.full, description="full fine-tune or lora.")
    learning_rate: float = Field(default=d.LEARNING_RATE, gt=0, lt=1, description="Peak learning rate.")
    epochs: float = Field(default=d.EPOCHS, ge=0, le=100, description="Training epochs (0 evaluates the untrained model).")
    batch_size: int = Field(default=d.BATCH_SIZE, ge=1, le=4096, description="Examples per optimisation step.")
    max_length: int = Field(default=d.MAX_LENGTH, ge=8, le=8192, description="Tokens kept per input.")
    lora_rank: int = Field(default=d.LORA_RANK, ge=1, le=512, description="LoRA rank (method lora).")
    weight_decay: float = Field(default=d.WEIGHT_DECAY, ge=0, le=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(default=d.WARMUP_RATIO, ge=0, le=0.5, description="Share of steps spent warming up.")
    backend: Backend = Field(default=d.BACKEND, description=(
        "classification and ner: transformers (an encoder with a sequence or BIO token-classification head) or gliner2 (the "
        "gliner2 package, the paper's model family: a span extractor with a classification head, trained with gliner2's "
        "own trainer; needs the 'gliner' extra). With gliner2, baseModel is a GLiNER2 checkpoint (hub id such as "
        "fastino/gliner2-base-v1, or a folder) or an encoder (an alias such as minilm, or a folder) that a fresh span "
        "head is built on, and maxLength counts words."))
    task_learning_rate: float = Field(default=d.GLINER2_TASK_LEARNING_RATE, gt=0, lt=1, description=(
        "gliner2: learning rate of the span and classification heads (learningRate is the encoder's); a head built "
        "from config starts untrained and learns faster than the encoder."))
    gliner2_architecture: Literal["span", "boundary"] = Field(default=d.GLINER2_ARCHITECTURE, description=(
        "gliner2: the extractor built from config on an encoder: boundary (gliner2's start/end boundary head, trained on "
        "batches of similar length) or span (scores every span up to a width). A GLiNER2 checkpoint keeps the "
        "architecture it was saved with."))
    ner_backend: NerBackend | None = Field(default=None, description=(
        "Deprecated: the earlier name of backend. tokenClassification means backend transformers; gliner (GLiNER v1) is "
        "no longer accepted, see backend gliner2."))
    decision_threshold: float | None = Field(
        default=None, gt=0, lt=1,
        description="ner: fixed decision threshold on the entity tags' probability; unset, the trainer sweeps it on the evaluation set.",
    )
    system_prompt: str | None = Field(default=None, description="generation: system message of the chat template (a searchable hyperparameter).")
    max_new_tokens: int = Field(default=d.MAX_NEW_TOKENS, ge=1, le=4096, description="generation: most tokens generated per answer.")

    _deprecated: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _deprecated_ner_backend(self) -> Hyperparameters:
        """``nerBackend`` is read as the ``backend`` it names; GLiNER v1 is refused with the reason (README, 'GLiNER')."""
        if self.ner_backend == NerBackend.gliner.value:
            raise ValueError("nerBackend: 'gliner' (GLiNER v1) is not supported: gliner 0.2.x pins transformers < 5.17, and its "
                             "fork gliner-py 0.2.27 builds a model that it cannot load back after saving; use backend: gliner2")
        if self.ner_backend == NerBackend.token_classification.value:
            if "backend" in self.model_fields_set and self.backend != Backend.transformers.value:
                raise ValueError(f"nerBackend: tokenClassification (deprecated) contradicts backend: {self.backend}; set backend only")
            # read once as the backend it names; the old field is then dropped (a derived attempt may switch backend),
            # and what the user wrote is remembered for the deprecation report (api.validation.deprecations)
            self.backend, self.ner_backend = Backend.transformers.value, None
            self._deprecated = ("nerBackend",)
        return self


DEPRECATED_FIELDS = {"nerBackend": "hyperparameters.nerBackend is deprecated: use hyperparameters.backend (transformers or gliner2)"}


class Resources(ApiModel):
    cpu: str = Field(default="2", description="CPU request of each training Job.")
    memory: str = Field(default="8Gi", description="Memory request of each training Job.")
    gpu: int = Field(default=0, ge=0, description="nvidia.com/gpu count of each training Job.")


class Toleration(ApiModel):
    key: str | None = Field(default=None, description="Taint key the toleration matches (empty with Exists: every key).")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (default Equal).")
    value: str | None = Field(default=None, description="Taint value the toleration matches (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description="Taint effect to match; empty matches all.")
    toleration_seconds: int | None = Field(default=None, description="NoExecute: how long the pod stays bound after the taint appears.")


class Trainer(ApiModel):
    """Where and how training Jobs run (operator); the local runner uses timeoutSeconds and maxRetries."""

    image: str = Field(default=d.TRAINER_IMAGE, description="Trainer image for Kubernetes Jobs.")
    resources: Resources = Field(default_factory=Resources, description="CPU, memory and GPU requests of each training and preparation Job.")
    node_selector: dict[str, str] | None = Field(default=None, description="Node selector of training Jobs.")
    tolerations: list[Toleration] | None = Field(default=None, description="Tolerations of training Jobs.")
    service_account_name: str | None = Field(default=None, description="Service account of training Jobs.")
    s3_credentials_secret: str | None = Field(default=None, description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and optional AWS_ENDPOINT_URL).")
    timeout_seconds: int = Field(default=d.TRAINER_TIMEOUT_SECONDS, ge=10, description="A training attempt running longer fails.")
    max_retries: int = Field(default=d.TRAINER_MAX_RETRIES, ge=0, le=10, description="Retries of a crashed attempt before it counts as failed.")


class Artifacts(ApiModel):
    uri: str = Field(default=d.ARTIFACTS_URI, min_length=1,
                     description="Local directory or s3://bucket/prefix for datasets, models, metrics and reports.")

    @model_validator(mode="after")
    def _bucket(self) -> Artifacts:
        if "://" in self.uri:
            scheme, _, rest = self.uri.partition("://")
            if scheme != "s3":
                raise ValueError(f"artifacts.uri {self.uri!r}: only s3:// URIs or local directories are supported")
            if not rest.split("/", 1)[0]:
                raise ValueError(f"artifacts.uri {self.uri!r} names no bucket (expected s3://bucket/prefix)")
        return self


class Strategy(ApiModel):
    """S of a pipeline."""

    supervision: Literal["direct", "chainOfThought"] = Field(default="direct", description=(
        "generation: learn the reference answer directly, or chainOfThought: a rationale followed by the answer (each "
        "example's 'rationale' field, or written by the data.synthesis teacher for examples without one)."))
    evaluation: str = Field(default="heldOutSet", description="How the attempt is scored.")
    distillation: float = Field(
        default=d.DISTILLATION_WEIGHT, ge=0, le=10,
        description="Production repair of a classifier: weight of a learning-without-forgetting term, the KL divergence from the "
                    "deployed parent's output distribution on replayed and hard-negative examples (never on the corrections or the "
                    "gate's sets), added to the cross-entropy. 0 = off.")
    distillation_temperature: float | None = Field(
        default=d.DISTILLATION_TEMPERATURE, gt=0, le=20,
        description="Temperature of the parent's distribution in the distillation term; unset, it is calibrated (temperature "
                    "scaling: least negative log-likelihood of the verified labels of the replayed examples), so an under-confident "
                    "parent still passes on its ranking.")
    confidence_replay: float = Field(
        default=d.CONFIDENCE_REPLAY, ge=0, le=10,
        description="Production repair of a classifier: each replayed example's loss is weighted 1 + c x (1 - the parent's margin "
                    "on its label), so the parent's fragile boundaries get the most replay. 0 = off.")
    interpolation: bool = Field(
        default=d.INTERPOLATION,
        description="Production repair of a classifier (WiSE-FT): the trained weights are mixed with the parent's, (1 - alpha) x "
                    "parent + alpha x candidate; alpha is the one with the least churn on a validation slice of passing traces held "
                    "out of training (never the regression set) whose failure-set score still reaches the gate's tau.")

    def preserving(self) -> list[str]:
        """The preservation objectives this strategy turns on (API names)."""
        return [name for name, on in (("distillation", self.distillation > 0), ("confidenceReplay", self.confidence_replay > 0),
                                      ("interpolation", self.interpolation)) if on]


class ModelAdaptationSpec(ApiModel):
    mode: Mode = Field(default=Mode.cold_start, description="coldStart (task + data -> model) or production (deployed model + judged traces -> repaired model).")
    task: Task
    data: Data = Field(description="Where examples (or, in production mode, judged traces) come from, the evaluation set and the curation rules.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="First configuration; the planner derives the others.")
    strategy: Strategy = Field(default_factory=Strategy, description=(
        "First configuration's strategy (supervision, preservation objectives); the planner derives the others."))
    gate: Gate = Field(default_factory=Gate)
    production: Production = Field(default_factory=Production, description="Production mode: how judged traces are triaged.")
    search: Search = Field(default_factory=Search)
    trainer: Trainer = Field(default_factory=Trainer)
    artifacts: Artifacts = Field(default_factory=Artifacts, description="Where datasets, models, metrics and reports are written.")
    deployed_model: str | None = Field(default=None, max_length=63,
                                       description="Name of the DeployedModel this adaptation may promote to (DNS-1123).")

    @model_validator(mode="after")
    def _supported(self) -> ModelAdaptationSpec:
        if self.hyperparameters.backend == Backend.gliner2.value and self.task.type == TaskType.generation.value:
            raise ValueError("hyperparameters.backend: gliner2 trains classification and ner tasks, not generation")
        if self.deployed_model is not None and not DNS1123.match(self.deployed_model):
            raise ValueError(f"deployedModel {self.deployed_model!r} is not a DNS-1123 name (lower-case letters, digits, '-' and '.')")
        if self.strategy.supervision == "chainOfThought" and self.task.type != TaskType.generation.value:
            raise ValueError(f"strategy.supervision chainOfThought applies to task.type generation (got {self.task.type!r})")
        if (preserving := self.strategy.preserving()) and not (
                self.mode == Mode.production.value and self.task.type == TaskType.classification.value):
            raise ValueError(f"strategy {preserving} keep a deployed parent's answers: they apply to production mode classification")
        if self.data.synthesis is not None:
            if self.mode == Mode.production.value:
                raise ValueError("data.synthesis is for cold start; production mode learns from judged traces")
            if self.task.type == TaskType.generation.value:
                if self.strategy.supervision != "chainOfThought":
                    raise ValueError("data.synthesis for task.type generation writes chain-of-thought rationales: set "
                                     "strategy.supervision: chainOfThought (or remove data.synthesis)")
                if not self.data.sources:
                    raise ValueError("data.synthesis for task.type generation explains the sources' examples: give data.sources")
            elif not self.task.labels:
                what = "entity type" if self.task.type == TaskType.ner.value else "label"
                raise ValueError(f"data.synthesis needs task.labels: the teacher writes examples of each {what}")
        if self.mode == Mode.production.value and self.task.type == TaskType.generation.value:
            raise ValueError("production mode supports task.type classification and ner (got 'generation')")
        if self.mode == Mode.production.value:
            if not self.deployed_model:
                raise ValueError("deployedModel is required in production mode")
            if not any(src.traces for src in self.data.sources):
                raise ValueError("production mode needs a data source with traces (the judged inference logs)")
        return self


class AttemptCounts(ApiModel):
    total: int = Field(default=0, description="Training attempts created (the baseline is not counted).")
    running: int = Field(default=0, description="Attempts not finished yet.")
    succeeded: int = Field(default=0, description="Attempts that produced a scored model.")
    failed: int = Field(default=0, description="Attempts that failed (bad data, crashes past their retries).")


class ModelAdaptationStatus(ApiModel):
    phase: Phase | None = Field(default=None, description="Pending, Preparing, Running, Succeeded or Failed.")
    observed_generation: int | None = Field(default=None, description="The metadata.generation this status was computed for.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and EvalSetFrozen, Kubernetes style.")
    eval_set_sha256: str | None = Field(default=None, description="Content hash of the frozen evaluation set.")
    started_at: str | None = Field(default=None, description="RFC 3339 time the operator first saw the adaptation (recorded once; the stuck alert reads it).")
    baseline_score: float | None = Field(default=None, description="Score of the untrained base model.")
    best_score: float | None = Field(default=None, description="Score of the attempt the search chose.")
    best_attempt: str | None = Field(default=None, description="The attempt the search chose (in production: the best within epsilon).")
    attempts: AttemptCounts = Field(default_factory=AttemptCounts, description="Attempt counts by outcome.")
    iteration: int = Field(default=0, description="Latest search iteration (0: only the baseline).")
    llm_usage: dict[str, int] | None = Field(default=None, description=(
        "The Claude planner's spend (search.planner: claude): calls, inputTokens, outputTokens, and iterations that fell back "
        "to the deterministic policy."))
    report_uri: str | None = Field(default=None, description="Where the report was written (the lifecycle's last step).")
    message: str | None = Field(default=None, description="Human-readable summary of the current phase.")
    verdict: GateVerdict | None = Field(default=None, description="The gate's verdict on the chosen attempt (recorded before it is applied).")
    candidate_revision: Revision | None = Field(default=None, description="The published model the verdict is about.")
    gate_applied: bool = Field(default=False, description="True once the verdict has been written to the DeployedModel.")


class ModelAdaptation(ApiModel):
    """Adapt a small model to a task (coldStart) or repair a deployed one from judged traces (production)."""

    api_version: Literal["pioneer.dev/v1alpha1"] = Field(default=API_VERSION, description="pioneer.dev/v1alpha1")
    kind: Literal["ModelAdaptation"] = "ModelAdaptation"
    metadata: ObjectMeta = Field(description="Standard object metadata; the name is DNS-1123.")
    spec: ModelAdaptationSpec = Field(description="What to adapt, from what data, under which gate and budget.")
    status: ModelAdaptationStatus | None = Field(default=None, description="Written by the operator.")


# --------------------------------------------------------------------------- TrainingAttempt


class DataRecipe(ApiModel):
    """D of a pipeline: how the training set is built from the pool. The same recipe always builds the same set."""

    max_examples: int = Field(ge=2, description="Upper bound on gold + hard-negative examples.")
    hard_negative_share: float = Field(ge=0, le=0.6, description="Target share of hard negatives.")
    max_label_ratio: float = Field(ge=1, description="Label balance cap.")
    length_matching: bool = Field(default=True, description="Sample training lengths to follow real input lengths.")
    near_duplicate_similarity: float = Field(gt=0, le=1, description="Cosine similarity above which same-label examples count as near-duplicates.")
    augment_from: str | None = Field(default=None, description="Attempt whose evaluation failures drive surgical augmentation.")
    augment_per_pattern: int = Field(default=0, ge=0, description="Examples added per failure pattern (plus one hard negative each).")
    replay_share: float = Field(default=0.15, ge=0, le=d.MAX_REPLAY_SHARE, description="Production mode: share of the set replayed from the parent's training data.")
    entity_max_repeats: int = Field(default=0, ge=0, description="ner: entity diversification cap (0 = off).")
    seed: int = Field(default=0, description="Seed of the data sampling (and of training).")


class Pipeline(ApiModel):
    data: DataRecipe
    hyperparameters: Hyperparameters
    strategy: Strategy = Field(default_factory=Strategy)


class AttemptInputs(ApiModel):
    """Artifact locations the trainer reads. Written by the controller before the attempt starts."""

    train_uri: str | None = Field(default=None, description="JSONL training set (absent for the untrained baseline).")
    eval_uri: str = Field(description="JSONL frozen evaluation set.")
    eval_sha256: str = Field(description="Expected content hash of the evaluation set; the trainer refuses a mismatch.")
    regression_uri: str | None = Field(default=None, description="JSONL of previously passing examples (production mode).")
    cross_checkpoint_uri: str | None = Field(default=None, description="JSONL of the previous checkpoint's evaluation examples it got right.")
    base_model_sha256: str | None = Field(default=None, description="Content hash the base model folder must have (a deployed parent's revision); the trainer refuses another.")
    parent_model_uri: str | None = Field(default=None, description="The deployed parent's model (production repairs): the preservation objectives and the regression profile read it.")
    parent_model_sha256: str | None = Field(default=None, description="Content hash the parent model folder must have; the trainer refuses another.")


class TrainingAttemptSpec(ApiModel):
    adaptation: str = Field(description="Owning ModelAdaptation.")
    iteration: int = Field(ge=0, description="Search iteration (0 = untrained baseline).")
    parent: str | None = Field(default=None, description="Attempt this one was derived from.")
    modification: str = Field(description="What changed relative to the parent.")
    rationale: str = Field(description="Why the planner chose this modification.")
    evidence: dict[str, Any] = Field(default_factory=dict, description="Facts the decision rested on.")
    task: Task
    labels: list[str] = Field(default_factory=list, description="Label set in the order of the classifier head (ner: entity types; generation: empty).")
    pipeline: Pipeline = Field(description="The node pi = (D, H, S): data recipe, hyperparameters and strategy.")
    inputs: AttemptInputs
    gate: Gate | None = Field(default=None, description="The gate the candidate will face (production): interpolation picks its mix against its tau.")
    output_uri: str = Field(description="Where the trainer writes model/, metrics.json, predictions.jsonl and _SUCCESS.")


class TrainingAttemptStatus(ApiModel):
    phase: Phase | None = Field(default=None, description="Pending, Running, Succeeded or Failed.")
    observed_generation: int | None = Field(default=None, description="The metadata.generation this status was computed for.")
    conditions: list[Condition] = Field(default_factory=list, description="Kubernetes-style conditions.")
    job_name: str | None = Field(default=None, description="The Job (or local process) that trains the attempt.")
    score: float | None = Field(default=None, description="Score on the frozen evaluation set (production: the failure set).")
    regressions: int | None = Field(default=None, description="Previously passing traces this model gets wrong (production).")
    cross_checkpoint_regressions: int | None = Field(default=None, description="Regressions on the previous checkpoint's evaluation set (production).")
    slice_scores: dict[str, float] | None = Field(default=None, description="Score per evaluation slice (positives, negatives, boundary pairs, ...).")
    train_loss: float | None = Field(default=None, description="Final training loss (underfit vs. overfit evidence).")
    failure_patterns: list[dict[str, Any]] | None = Field(default=None, description="Most frequent (label -> prediction) confusions on the evaluation set.")
    regression_profile: dict[str, Any] | None = Field(
        default=None, description="Production: what the regressions are: flipped label pairs, the parent's margin on them, how near the fixed failures they sit.")
    metrics_uri: str | None = Field(default=None, description="The trainer's metrics.json.")
    model_uri: str | None = Field(default=None, description="The trained model folder (promotion copies it to a content-addressed revision).")
    reused_from: str | None = Field(default=None, description=(
        "The earlier attempt whose output this one reused: it built exactly the same training data and configuration, so "
        "nothing was trained and it does not count against search.maxAttempts."))
    retries: int = Field(default=0, description="Crashed runs retried so far.")
    started_at: str | None = Field(default=None, description="RFC 3339 time training started.")
    progress: dict[str, Any] | None = Field(default=None, description="The trainer's latest progress (phase, step of total steps, epoch, loss).")
    finished_at: str | None = Field(default=None, description="RFC 3339 time the result was collected.")
    message: str | None = Field(default=None, description="Why it failed, or what it waits for.")


class TrainingAttempt(ApiModel):
    """One node of the search graph: a training pipeline (data, hyperparameters, strategy), its parent and why it was tried."""

    api_version: Literal["pioneer.dev/v1alpha1"] = API_VERSION
    kind: Literal["TrainingAttempt"] = "TrainingAttempt"
    metadata: ObjectMeta = Field(description="Standard object metadata; labelled with its adaptation.")
    spec: TrainingAttemptSpec = Field(description="The trainer's input: one pipeline, its inputs and where to write.")
    status: TrainingAttemptStatus | None = Field(default=None, description="Written by the operator from the trainer's artifacts.")


class AttemptMetrics(BaseModel):
    """The trainer's ``output/metrics.json``: the contract between trainer and controller, parsed once."""

    model_config = ConfigDict(extra="allow")
    score: float
    eval_sha256: str
    regressions: int | None = None
    cross_checkpoint_regressions: int | None = None
    regressed_examples: list[dict[str, Any]] = []
    cross_checkpoint_regressed_examples: list[dict[str, Any]] = []
    slice_scores: dict[str, float] | None = None
    training: dict[str, Any] | None = None
    failure_patterns: list[dict[str, Any]] | None = None
    regression_profile: dict[str, Any] | None = None
    reused_from: str | None = None

    def example_ids(self, which: str = "regressed_examples") -> list[str]:
        return [str(r.get("id") or r.get("text", ""))[:60] for r in getattr(self, which)]


# --------------------------------------------------------------------------- DeployedModel


class Revision(ApiModel):
    """One immutable revision of a DeployedModel: a content-addressed model and what it was gated on."""

    revision: int = Field(ge=1, description="Revision number, 1 for the first model, +1 per promotion.")
    model_uri: str = Field(description="Where the revision's model lies: a content-addressed copy no later run writes to.")
    model_sha256: str | None = Field(default=None, description="Content hash of the model folder; serving and training verify it when loading.")
    attempt: str | None = Field(default=None, description="TrainingAttempt that produced the model.")
    adaptation: str | None = Field(default=None, description="ModelAdaptation that promoted it.")
    score: float | None = Field(default=None, description="Score on the evaluation set it passed.")
    eval_uri: str | None = Field(default=None, description="Evaluation set this revision passed (used by the cross-checkpoint gate).")
    eval_sha256: str | None = Field(default=None, description="Hash of that evaluation set: a later candidate scored on the same set must not score lower.")
    predictions_uri: str | None = Field(default=None, description="This revision's predictions on that evaluation set.")
    train_uri: str | None = Field(default=None, description="Training set of this revision (replay source for its children).")
    promoted_at: str | None = Field(default=None, description="RFC 3339 time of the promotion.")
    reason: str | None = Field(default=None, description="Why it was promoted: the gate's summary.")


class GateCheck(ApiModel):
    """One check of the regression gate, with its own limit (like one metric of an Argo Rollouts analysis)."""

    name: str = Field(description="Check name: modelProduced, score, notBelowBaseline, notBelowCurrentRevision, regressions, crossCheckpoint.")
    value: float | None = Field(default=None, description="The candidate's measured value (None when nothing was measured).")
    limit: float | None = Field(default=None, description="The limit the value is held to.")
    passed: bool = Field(description="Whether the value is within its limit.")
    message: str = Field(default="", description="The check in words.")


class GateVerdict(ApiModel):
    """The gate's decision on one candidate: passed only when every check passed (the worst check wins)."""

    passed: bool = Field(description="True only when every check passed.")
    attempt: str | None = Field(default=None, description="The candidate attempt the verdict is about (promotion is keyed by it).")
    adaptation: str | None = Field(default=None, description="The ModelAdaptation that asked for the verdict.")
    score: float | None = Field(default=None, description="The candidate's score on the (failure) evaluation set.")
    regressions: int | None = Field(default=None, description="Previously passing traces the candidate gets wrong.")
    cross_checkpoint_regressions: int | None = Field(default=None, description="Regressions on the previous checkpoint's evaluation set.")
    checks: list[GateCheck] = Field(default_factory=list, description="Every check with its value and limit.")
    reason: str = Field(default="", description="Summary: the failed checks, or all checks when it passed.")
    regressed_examples: list[str] = Field(default_factory=list, description="Ids (or texts) of regressed examples, capped.")
    regressed_examples_total: int | None = Field(default=None, description="How many regressed examples there were before the cap.")
    decided_at: str | None = Field(default=None, description="RFC 3339 time of the decision.")


class ServedDeployment(ApiModel):
    """A Deployment + Service running `pioneer serve`, owned by the DeployedModel (for clusters without KServe). Each
    revision change rolls it: the new pods load the new revision and are ready before an old pod goes."""

    replicas: int = Field(default=d.SERVE_REPLICAS, ge=1, le=100, description="Server replicas.")
    image: str | None = Field(default=None, max_length=500, description="Image with pioneer and torch (default: the operator's PIONEER_SERVE_IMAGE, from the chart's serve.image).")
    port: int = Field(default=d.SERVE_PORT, ge=1, le=65535, description="Container and Service port.")
    traces: str | None = Field(default=None, max_length=2000, description=(
        "Trace store the servers log to (a SQLAlchemy URL; ${NAME} is read from the environment). Default: the "
        "improvement template's trace source, else the operator's PIONEER_TRACES_URL."))
    credentials_secret: str | None = Field(default=None, max_length=253, description="A Secret whose keys become the servers' environment (e.g. PGPASSWORD for ${PGPASSWORD} in traces).")


class ServingTarget(ApiModel):
    """What serves the DeployedModel's current revision; the operator points it at every new revision (promotion or
    rollback) and at nothing else."""

    inference_service: str | None = Field(
        default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A KServe InferenceService in the same namespace: its spec.predictor.model.storageUri is set to the "
                    "current revision's model URI (the Hugging Face runtime serves sequence and token classification).")
    deployment: ServedDeployment | None = Field(default=None, description=(
        "Or: a `pioneer serve` Deployment and Service named after the DeployedModel, created and owned by it."))

    @model_validator(mode="after")
    def _one_target(self) -> ServingTarget:
        if self.inference_service and self.deployment:
            raise ValueError("serving: set inferenceService or deployment, not both")
        return self


class Capture(ApiModel):
    """What a trace keeps of an inference (the OpenTelemetry GenAI conventions make content capture switchable). A
    repair learns from inputs and judges answers: traces without them are counted, never trained on."""

    inputs: bool = Field(default=d.CAPTURE_INPUTS, description="Store the request text (off: only its SHA-256, in meta.input_sha256).")
    outputs: bool = Field(default=d.CAPTURE_OUTPUTS, description="Store the model's answer (off: none is stored).")

    def kept(self, text: str, answer: str | None, meta: dict[str, Any]) -> dict[str, Any]:
        """The input, prediction and meta columns of a trace under this policy (an input not kept leaves its SHA-256)."""
        import hashlib

        if not self.inputs:
            meta = {**meta, "input_sha256": hashlib.sha256(text.encode()).hexdigest()}
        return {"input": text if self.inputs else "", "prediction": answer if self.outputs else None, "meta": meta}


class Trigger(ApiModel):
    """When the next repair starts: enough new judged failures of the current revision, a schedule, or both (either
    fires), never sooner than the cool-down after the previous one."""

    new_failures: int | None = Field(default=d.IMPROVEMENT_NEW_FAILURES, ge=1, description=(
        "Judged failures of the current revision (traces with its model id and a fail verdict) that start a repair."))
    schedule: str | None = Field(default=None, max_length=100, description="A cron schedule (5 fields, UTC) on which a repair starts when there is any new failure.")
    cooldown_seconds: int = Field(default=d.IMPROVEMENT_COOLDOWN_SECONDS, ge=0, description="Least time between two repairs' starts.")

    @model_validator(mode="after")
    def _some_trigger(self) -> Trigger:
        if self.new_failures is None and not self.schedule:
            raise ValueError("trigger: set newFailures, schedule or both")
        if self.schedule:
            from croniter import croniter

            if not croniter.is_valid(self.schedule) or len(self.schedule.split()) != 5:
                raise ValueError(f"trigger.schedule {self.schedule!r} is not a 5-field cron expression")
        return self


class Improvement(ApiModel):
    """Repairs the operator starts by itself: a production ModelAdaptation from the template whenever the trigger
    fires, owned by the DeployedModel and named from (model, revision, sequence)."""

    template: dict[str, Any] = Field(description=(
        "The spec of the ModelAdaptation to create (production mode; deployedModel is this DeployedModel; the trace "
        "source is read for the current revision's traces only). Validated like a ModelAdaptation's spec."))
    trigger: Trigger = Field(default_factory=Trigger, description="When a repair starts.")
    max_concurrent: int = Field(default=1, ge=1, le=1, description="Repairs in flight at once (one: each is gated against the revision it repairs).")
    paused: bool = Field(default=False, description="Start no repair (one in flight runs to its end).")
    promotion: Literal["automatic", "manual"] = Field(default=d.PROMOTION, description=(
        "Copied into each generated adaptation's gate.promotion: manual makes a passing verdict wait for an approval."))

    def traces_source(self) -> str | None:
        """The template's trace store (where the trigger counts failures); validation makes sure there is one."""
        return next((s["traces"] for s in self.template.get("data", {}).get("sources", []) if isinstance(s, dict) and s.get("traces")), None)

    def adaptation_spec(self, deployed_model: str, revision: int | None) -> dict[str, Any]:
        """The generated adaptation's spec: the template, in production mode, for this model's current revision."""
        import copy

        spec = copy.deepcopy(self.template)
        spec["mode"], spec["deployedModel"] = "production", deployed_model
        spec.setdefault("gate", {})["promotion"] = self.promotion
        if revision is not None:
            for src in spec.get("data", {}).get("sources", []):
                if isinstance(src, dict) and src.get("traces"):
                    src.setdefault("modelId", f"{deployed_model}@{revision}")
        return spec


class DeployedModelSpec(ApiModel):
    task: Task
    serving: ServingTarget | None = Field(default=None, description="Where the current revision is served; updated on every revision change.")
    capture: Capture = Field(default_factory=Capture, description="What traces of this model keep (pioneer serve, the KServe logger collector).")
    improvement: Improvement | None = Field(default=None, description="Continual improvement: repairs started by a trigger, gated like any other.")
    base_model: str = Field(default=d.BASE_MODEL, description="Base model every retraining restarts from.")
    initial_model_uri: str | None = Field(default=None, description="Model served as revision 1 when no revision exists yet.")
    rollback_to: int | None = Field(default=None, ge=1, description="Set to restore an earlier revision (explicit user rollback).")

    @model_validator(mode="after")
    def _valid_template(self) -> DeployedModelSpec:
        if self.improvement is not None:
            from pydantic import ValidationError

            try:
                ModelAdaptationSpec.model_validate(self.improvement.adaptation_spec("template-check", None))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'template'}: {e['msg'].removeprefix('Value error, ')}"
                                     for e in exc.errors())
                raise ValueError(f"improvement.template is not a valid ModelAdaptation spec: {problems}") from None
        return self


class PendingRevision(ApiModel):
    """A candidate that passed the gate under manual promotion and waits for an approval."""

    candidate: Revision = Field(description="The published model it would become (numbered on approval).")
    verdict: GateVerdict = Field(description="The passing verdict.")
    based_on_revision: int | None = Field(default=None, description="The revision it was gated against: approval is refused once another is served.")
    since: str = Field(description="RFC 3339 time it started waiting.")


class ImprovementStatus(ApiModel):
    """Where the continual-improvement trigger stands."""

    revision: int | None = Field(default=None, description="The revision whose failures are counted.")
    failures_since_revision: int | None = Field(default=None, description="Judged failures of that revision so far.")
    last_check_at: str | None = Field(default=None, description="RFC 3339 time of the latest check.")
    next_check_at: str | None = Field(default=None, description="When the trigger is looked at next.")
    last_trigger_at: str | None = Field(default=None, description="When the latest repair was started.")
    last_trigger_reason: str | None = Field(default=None, description="Why it was started.")
    last_adaptation: str | None = Field(default=None, description="The latest generated ModelAdaptation.")
    in_flight: str | None = Field(default=None, description="The generated adaptation still running, if any.")
    waiting: str | None = Field(default=None, description="Why no repair starts now.")


class DeployedModelStatus(ApiModel):
    current_revision: int | None = Field(default=None, description="The revision being served.")
    model_uri: str | None = Field(default=None, description="The served revision's model (content-addressed).")
    revisions: list[Revision] = Field(default_factory=list, description="Every revision ever promoted, oldest first; never rewritten.")
    last_verdict: GateVerdict | None = Field(default=None, description="The gate's latest verdict (or the latest explicit rollback).")
    pending_revision: PendingRevision | None = Field(default=None, description="Manual promotion: a passing candidate waiting for an approval.")
    improvement: ImprovementStatus | None = Field(default=None, description="Continual improvement: the trigger's state.")
    conditions: list[Condition] = Field(default_factory=list, description="Kubernetes-style conditions.")
    observed_generation: int | None = Field(default=None, description="The metadata.generation this status was computed for.")


class DeployedModel(ApiModel):
    """The model served for a task and its revision history; it changes only through a passing gate or an explicit rollback."""

    api_version: Literal["pioneer.dev/v1alpha1"] = API_VERSION
    kind: Literal["DeployedModel"] = "DeployedModel"
    metadata: ObjectMeta = Field(description="Standard object metadata; the name is what adaptations name in deployedModel.")
    spec: DeployedModelSpec = Field(description="The task served, the base model and an optional explicit rollback.")
    status: DeployedModelStatus | None = Field(default=None, description="Revisions and verdicts, written only through the gate or a rollback.")


KINDS: dict[str, type[ApiModel]] = {
    "ModelAdaptation": ModelAdaptation,
    "TrainingAttempt": TrainingAttempt,
    "DeployedModel": DeployedModel,
}
ModelAdaptationStatus.model_rebuild()
