"""Artifact-side steps shared by the local runner and the operator.

Everything here reads and writes an :class:`ArtifactStore` rooted at one adaptation's folder and
nothing else (no processes, no Kubernetes)::

    eval/evalset.jsonl  eval/manifest.json       frozen before any training
    data/pool.jsonl     data/preparation.json    the cleaned training pool, and what cleaning did
    attempts/<name>/attempt.json                 the trainer's input (TrainingAttempt spec)
    attempts/<name>/train.jsonl curation.json    the attempt's dataset, and what each rule did
    attempts/<name>/output/...  failure.json     the trainer's output
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pioneer.api.models import (
    AttemptInputs,
    AttemptMetrics,
    ModelAdaptationSpec,
    ObjectMeta,
    Phase,
    TrainingAttempt,
    TrainingAttemptSpec,
    TrainingAttemptStatus,
)
from pioneer.core.controller import NewAttempt
from pioneer.data import curation
from pioneer.data.evalset import build_eval_set, build_random_eval_set, serialize, sha256
from pioneer.data.examples import DataError, Example
from pioneer.data.ner_curation import build_ner_eval_set, build_ner_training_set
from pioneer.data.similarity import TextIndex
from pioneer.data.sources import label_names, load_sources
from pioneer.layout import (
    EVAL_KEY,
    EVAL_MANIFEST,
    POOL_KEY,
    PREPARATION_KEY,
    Prepared,
    attempt_key,
    now,
    reopen,
)
from pioneer.revisions import CorruptOutput, verify_output
from pioneer.store import ArtifactStore, read_json, read_jsonl, write_json, write_jsonl
from pioneer.trainer.run import FAILURE, OUTPUT, SUCCESS

IDENTITY = "training-identity"  # per attempt: hash of what decides its result (see training_identity)


def prepare(spec: ModelAdaptationSpec, store: ArtifactStore, base_dir: Path | None = None, api_key: str | None = None) -> Prepared:
    """Build and freeze the evaluation set and the cleaned pool, once. Later calls reuse and verify them.

    With ``data.synthesis`` a teacher first writes what the sources lack (``api_key``, default ANTHROPIC_API_KEY); without
    any real data the evaluation set is its own synthesized batch, frozen like any other before training."""
    if (frozen := reopen(store, "evaluation set")) is not None:
        return frozen

    task, cur = spec.task, spec.data.curation
    examples = load_sources(spec.data.sources, base_dir, task.labels, task.type)
    synthesized_eval: list = []
    synthesis_record = None
    if spec.data.synthesis is not None:
        from pioneer.agent import synthesis

        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise DataError(llm_key_problem(spec, {}) or "data.synthesis needs ANTHROPIC_API_KEY")
        added, synthesized_eval, synthesis_record = synthesis.fill(spec, store, key, examples)
        examples = examples + added
    labels = task.labels or sorted(set().union(*(label_names(ex, task.type) for ex in examples)))
    for field, value in (("positiveLabel", task.positive_label), ("negativeLabel", task.negative_label),
                         ("outOfScopeLabel", task.out_of_scope_label)):
        if value is not None and value not in labels:
            raise DataError(f"task.{field} {value!r} does not occur in the data (labels: {labels})")
    loaded = len(examples)
    examples, rules = curation.remove_exact_duplicates(examples)
    examples, near = curation.remove_near_duplicates(examples, cur.near_duplicate_similarity)
    rules.append(near)
    evaluation = spec.data.evaluation
    if synthesized_eval:  # its own batch: every synthesized evaluation example (none of them is in the pool)
        eval_set, eval_record = synthesized_eval_set(synthesized_eval, task)
    elif task.type == "ner":
        eval_set, eval_record = build_ner_eval_set(examples, evaluation.size, evaluation.boundary_share, spec.search.seed)
    elif task.type == "generation":
        eval_set, eval_record = build_random_eval_set(examples, evaluation.size, spec.search.seed)
    else:
        eval_set, eval_record = build_eval_set(examples, evaluation.size, evaluation.boundary_share, task.negative_label,
                                               spec.search.seed, TextIndex([ex.text for ex in examples]))
    pool, leak = curation.remove_eval_leakage(examples, eval_set, cur.near_duplicate_similarity)
    rules.append(leak)
    missing = sorted(set(labels) - set().union(*(label_names(ex, task.type) for ex in pool)))
    if missing:
        raise DataError(f"no training examples left for label(s) {missing} after holding out the evaluation set")
    if spec.strategy.supervision == "chainOfThought":
        pool, rationale_record = _with_rationales(spec, store, api_key, pool)
        synthesis_record = {**(synthesis_record or {}), **rationale_record}

    eval_bytes = serialize(eval_set)
    digest = sha256(eval_bytes)
    record = {"loaded": loaded, "labels": labels, "rules": [r.to_dict() for r in rules], "evaluation": eval_record,
              "pool_size": len(pool), "created_at": now(), **({"synthesis": synthesis_record} if synthesis_record else {})}
    write_jsonl(store, POOL_KEY, [ex.to_row() for ex in pool])
    write_json(store, PREPARATION_KEY, record)
    store.write_bytes(EVAL_KEY, eval_bytes)
    # the manifest is written last: its presence means the evaluation set is frozen
    write_json(store, EVAL_MANIFEST, {"sha256": digest, "labels": labels, "size": len(eval_set), "pool_size": len(pool),
                                      "slices": eval_record["slices"], "frozen_at": now()})
    return Prepared(labels, store.uri(EVAL_KEY), digest, len(pool), record)


def synthesized_eval_set(batch: list, task) -> tuple[list, dict[str, Any]]:
    """The evaluation set when it is its own synthesized batch (no real data to hold out): every example of it."""
    if task.type == "ner":
        eval_set = [ex.with_role("positive" if label_names(ex, "ner") else "negative") for ex in batch]
        labels = Counter(t for ex in eval_set for t in label_names(ex, "ner"))
    else:
        eval_set = [ex.with_role("negative" if ex.label == task.negative_label else "positive") for ex in batch]
        labels = Counter(ex.label for ex in eval_set)
    return eval_set, {"size": len(eval_set), "slices": dict(Counter(ex.role for ex in eval_set)), "labels": dict(sorted(labels.items())),
                      "boundary_pairs": 0, "notes": ["the evaluation set is a separate synthesis batch (no real data to hold out)"]}


def _with_rationales(spec: ModelAdaptationSpec, store: ArtifactStore, api_key: str | None, pool: list) -> tuple[list, dict[str, Any]]:
    """chainOfThought supervision: the pool's rationales, a teacher's (data.synthesis) where an example has none. Without a
    teacher every example must bring its own: a missing one is refused here rather than trained on as a direct answer."""
    lacking = sum(not ex.meta.get("rationale") for ex in pool)
    if spec.data.synthesis is None:
        if lacking:
            raise DataError(f"strategy.supervision is chainOfThought but {lacking} of {len(pool)} training examples have no "
                            "'rationale' field: add one to each row, or set data.synthesis to have a teacher write them")
        return pool, {"rationales": {"needed": 0, "written": 0, "real": len(pool)}}
    from pioneer.agent import synthesis

    key = api_key or os.environ.get("ANTHROPIC_API_KEY")
    if lacking and not key:
        raise DataError(llm_key_problem(spec, {}) or "data.synthesis needs ANTHROPIC_API_KEY")
    pool, record = synthesis.explain(spec, store, key or "", pool)
    return pool, {"model": record["model"], "rationales": record["rationales"], "rationaleUsage": record["usage"],
                  "rationalesRejected": record["rejectedBy"]}


def _failures(store: ArtifactStore, attempt: str) -> list[dict[str, Any]]:
    key = attempt_key(attempt, f"{OUTPUT}/predictions.jsonl")
    if not store.exists(key):
        raise DataError(f"surgical augmentation needs the predictions of {attempt}, which are missing")
    return [r for r in read_jsonl(store, key) if not r["correct"]]


def materialize(adaptation: str, spec: ModelAdaptationSpec, prepared: Prepared, new: NewAttempt, store: ArtifactStore,
                namespace: str | None = None) -> TrainingAttempt:
    """Write the attempt's dataset and spec; return it as a TrainingAttempt. Idempotent."""
    spec_key = attempt_key(new.name, "attempt.json")
    train_uri = None
    production = spec.mode == "production"
    pipeline = new.pipeline
    parent_sha = None
    if production and new.iteration == 0:  # the baseline of a repair is the deployed parent itself
        parent_model = prepared.record.get("parent_model")
        # scored as deployed: its own backend (a repair may retrain with another one, from the base model)
        hp = {"base_model": parent_model, "backend": prepared.record.get("parent_backend", pipeline.hyperparameters.backend)}
        pipeline = pipeline.model_copy(update={"hyperparameters": pipeline.hyperparameters.model_copy(update=hp)})
        parent_sha = prepared.record.get("parent_model_sha256")
    if new.iteration >= 1:
        train_key = attempt_key(new.name, "train.jsonl")
        if not store.exists(train_key):
            recipe = new.pipeline.data
            if production:
                from pioneer.production import curriculum, ner_repair

                remaining = _failures(store, recipe.augment_from) if recipe.augment_from else None
                build = ner_repair.build_curriculum if spec.task.type == "ner" else curriculum.build
                training, records = build(*curriculum.sources(store), recipe, recipe.replay_share, remaining)
            else:
                pool = [Example.from_row(r) for r in read_jsonl(store, POOL_KEY)]
                failures = {recipe.augment_from: _failures(store, recipe.augment_from)} if recipe.augment_from else None
                build = {"ner": build_ner_training_set, "generation": curation.build_sampled_training_set}.get(
                    spec.task.type, curation.build_training_set)
                training, records = build(pool, recipe, failures)
            write_json(store, attempt_key(new.name, "curation.json"), {"attempt": new.name, "size": len(training), "rules": records})
            write_jsonl(store, train_key, [ex.to_row() for ex in training])
        train_uri = store.uri(train_key)
    attempt_spec = TrainingAttemptSpec(
        adaptation=adaptation, iteration=new.iteration, parent=new.parent, modification=new.modification,
        rationale=new.rationale, evidence=new.evidence, task=spec.task, labels=prepared.labels, pipeline=pipeline,
        inputs=AttemptInputs(train_uri=train_uri, eval_uri=prepared.eval_uri, eval_sha256=prepared.eval_sha256,
                             regression_uri=store.uri("eval/regression.jsonl")
                             if production and prepared.record.get("regression_set") else None,
                             cross_checkpoint_uri=store.uri("eval/cross.jsonl")
                             if production and prepared.record.get("cross_checkpoint_set") else None,
                             base_model_sha256=parent_sha,
                             parent_model_uri=prepared.record.get("parent_model") if production and new.iteration >= 1 else None,
                             parent_model_sha256=prepared.record.get("parent_model_sha256") if production and new.iteration >= 1 else None),
        gate=spec.gate if production else None,
        output_uri=store.uri(attempt_key(new.name)),
    )
    if not store.exists(spec_key):
        write_json(store, spec_key, attempt_spec.dump())
    if new.iteration >= 1 and not store.exists(attempt_key(new.name, IDENTITY)):
        identity = training_identity(attempt_spec, store.read_bytes(attempt_key(new.name, "train.jsonl")))
        store.write_bytes(attempt_key(new.name, IDENTITY), identity.encode())
    return TrainingAttempt(
        metadata=ObjectMeta(name=new.name, namespace=namespace, labels={"pioneer.dev/adaptation": adaptation}),
        spec=attempt_spec,
        status=TrainingAttemptStatus(phase=Phase.pending),
    )


def training_identity(spec: TrainingAttemptSpec, train_bytes: bytes) -> str:
    """What decides a trained model's result: the training bytes, the hyperparameters, strategy and seed, the
    task and the sets it is scored on. Two data recipes that produce the same bytes (e.g. a replay share raised
    when every replayable example is already in) are the same training; the seeded trainer would repeat it."""
    p = spec.pipeline
    facts = {"train": sha256(train_bytes), "hyperparameters": p.hyperparameters.model_dump(), "seed": p.data.seed,
             "strategy": p.strategy.model_dump(), "gate": spec.gate.model_dump() if spec.gate else None,
             "task": spec.task.model_dump(), "labels": spec.labels, "inputs": spec.inputs.model_dump(exclude={"train_uri"})}
    return sha256(json.dumps(facts, sort_keys=True, default=str).encode())


def pending_twin(store: ArtifactStore, attempt: TrainingAttempt, siblings: Iterable[TrainingAttempt]) -> str | None:
    """Before ``attempt`` trains: the earlier sibling (the adaptation's other attempts) that trains exactly the
    same thing (:func:`training_identity`) and has not finished yet, which ``attempt`` should wait for. When
    that twin has finished, its output is copied to ``attempt`` (``collect`` then returns the result) and None
    is returned; a failed twin does not count, and neither does a later one (two twins never wait for each other)."""
    name = attempt.metadata.name
    if not store.exists(attempt_key(name, IDENTITY)) or store.exists(attempt_key(name, f"{OUTPUT}/{SUCCESS}")):
        return None
    identity, mine = store.read_bytes(attempt_key(name, IDENTITY)), (attempt.spec.iteration, name)
    earlier = sorted((a.spec.iteration, a.metadata.name) for a in siblings if (a.spec.iteration, a.metadata.name) < mine)
    for _, twin in earlier:
        key = attempt_key(twin, IDENTITY)
        if not store.exists(key) or store.read_bytes(key) != identity or store.exists(attempt_key(twin, FAILURE)):
            continue
        if store.exists(attempt_key(twin, f"{OUTPUT}/{SUCCESS}")):
            try:
                _reuse(store, twin, name)
            except CorruptOutput:  # the twin's output is damaged: it is trained again, and this one waits for it
                return twin
            return None
        return twin
    return None


def _reuse(store: ArtifactStore, twin: str, name: str) -> None:
    """Give ``name`` the verified output of its finished twin instead of training the same thing again
    (its own manifest is written last)."""
    source, target = attempt_key(twin, OUTPUT), attempt_key(name, OUTPUT)
    files = verify_output(store, source)
    manifest = {}
    for rel, fact in files.items():
        data = store.read_bytes(f"{source}/{rel}")
        if rel == "metrics.json":
            data = json.dumps({**json.loads(data), "reused_from": twin}, indent=2).encode() + b"\n"
            fact = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        store.write_bytes(f"{target}/{rel}", data)
        manifest[rel] = fact
    store.write_bytes(f"{target}/{SUCCESS}", json.dumps({"files": manifest}, indent=1).encode())


@dataclass(frozen=True)
class BeforeTraining:
    """What to do with a pending attempt before starting a trainer for it (the same rule in both adapters)."""

    wait_for: str | None = None  # an earlier attempt trains exactly the same thing and has not finished
    reused: TrainingAttemptStatus | None = None  # a verified finished output is already there: no trainer
    rejected: str | None = None  # an output was there but failed verification: train it again


def before_training(store: ArtifactStore, attempt: TrainingAttempt, siblings: Iterable[TrainingAttempt]) -> BeforeTraining:
    twin = pending_twin(store, attempt, siblings)
    if twin is not None:
        return BeforeTraining(wait_for=twin)
    try:
        return BeforeTraining(reused=collect(store, attempt))
    except CorruptOutput as exc:
        return BeforeTraining(rejected=str(exc))


def attempt_spec_uri(store: ArtifactStore, name: str) -> str:
    return store.uri(attempt_key(name, "attempt.json"))


def read_progress(store: ArtifactStore, name: str) -> dict[str, Any] | None:
    key = attempt_key(name, "progress.json")
    try:
        return read_json(store, key) if store.exists(key) else None
    except ValueError:  # caught mid-write on a store without atomic writes
        return None


def read_metrics(store: ArtifactStore, name: str) -> AttemptMetrics:
    """An attempt's metrics.json, parsed once at the boundary (CorruptOutput when unreadable)."""
    key = attempt_key(name, f"{OUTPUT}/metrics.json")
    try:
        return AttemptMetrics.model_validate_json(store.read_bytes(key))
    except (OSError, ValidationError) as exc:
        raise CorruptOutput(f"{store.uri(key)} cannot be read: {str(exc).splitlines()[0]}") from None


def verify_attempt(store: ArtifactStore, name: str) -> None:
    """Check a finished attempt's output against its manifest; CorruptOutput names the file that differs."""
    verify_output(store, attempt_key(name, OUTPUT))


def collect(store: ArtifactStore, attempt: TrainingAttempt) -> TrainingAttemptStatus | None:
    """The finished status of an attempt from its verified artifacts, or None while it has no result.

    Raises CorruptOutput (naming the file) when the output does not match its manifest or its metrics
    cannot be parsed: the caller trains the attempt again rather than trusting it."""
    name = attempt.metadata.name
    status = (attempt.status or TrainingAttemptStatus()).model_copy()
    if store.exists(attempt_key(name, f"{OUTPUT}/{SUCCESS}")):
        verify_attempt(store, name)
        metrics = read_metrics(store, name)
        if metrics.eval_sha256 != attempt.spec.inputs.eval_sha256:
            return status.model_copy(update={"phase": Phase.failed, "finished_at": now(),
                                             "message": "metrics were computed on a different evaluation set (hash mismatch)"})
        return status.model_copy(update={
            "phase": Phase.succeeded, "finished_at": now(), "score": metrics.score,
            "regressions": metrics.regressions, "slice_scores": metrics.slice_scores,
            "cross_checkpoint_regressions": metrics.cross_checkpoint_regressions,
            "train_loss": (metrics.training or {}).get("final_loss"),
            "failure_patterns": (metrics.failure_patterns or [])[:5],
            "regression_profile": metrics.regression_profile,
            "metrics_uri": store.uri(attempt_key(name, f"{OUTPUT}/metrics.json")),
            "model_uri": store.uri(attempt_key(name, f"{OUTPUT}/model")), "message": None, "reused_from": metrics.reused_from,
        })
    if store.exists(attempt_key(name, FAILURE)):
        try:
            failure = read_json(store, attempt_key(name, FAILURE))
        except ValueError:
            failure = {"error": "CorruptOutput", "message": f"{store.uri(attempt_key(name, FAILURE))} is unreadable"}
        return status.model_copy(update={"phase": Phase.failed, "finished_at": now(),
                                         "message": f"{failure.get('error')}: {failure.get('message')}"})
    return None


def llm_key_problem(spec: ModelAdaptationSpec, environ: dict[str, str] | None = None) -> str | None:
    """Why the spec's planner cannot run here (no API key), or None. Checked before any work: never a silent downgrade."""
    field = ("spec.search.planner is 'claude'" if spec.search.planner == "claude"
             else "spec.data.synthesis is set" if spec.data.synthesis is not None
             else "spec.production.triage.llm is true" if spec.mode == "production" and spec.production.triage.llm else None)
    if field is None:
        return None
    from pioneer.agent.anthropic_api import KEY_ENV

    if (environ if environ is not None else os.environ).get(KEY_ENV):
        return None
    return (f"{field}, but {KEY_ENV} is not set: set it to an Anthropic API key (for a compatible gateway also "
            "ANTHROPIC_BASE_URL or the spec's baseUrl), or use planner: deterministic and data sources of your own")


def planning_advisor(spec: ModelAdaptationSpec, store: ArtifactStore, api_key: str | None, on_event=None):
    """The advisor :func:`pioneer.core.controller.reconcile` takes for ``search.planner``: None for the deterministic policy."""
    if spec.search.planner != "claude":
        return None
    from pioneer.agent.claude_planner import ClaudeAdvisor

    if not api_key:
        raise ValueError(llm_key_problem(spec, {}))
    return ClaudeAdvisor(spec, store, api_key, on_event=on_event)
