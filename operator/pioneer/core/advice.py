"""What an LLM planner may propose, and how a proposal becomes (or fails to become) an attempt. Pure.

The controller asks an *advisor* for the next iteration's attempts (``search.planner: claude``); the advisor
answers with proposals as partial pipeline changes through one tool whose input schema is generated here
from the pipeline model. Every proposal is validated against the API before it can become an attempt:
out-of-range values are refused with the validator's reason, a base model outside the spec's list is
refused, and a pipeline that an earlier attempt already trained is dropped. What an LLM writes only ever
becomes field values of a pipeline (validated) and free text (modification, rationale) in the record: never
a name, a path, a command or a gate decision.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pioneer.api.models import DataRecipe, Hyperparameters, ModelAdaptationSpec, Pipeline, Strategy, TrainingAttempt
from pioneer.core.graph import Graph, pipeline_key, score
from pioneer.core.planner import Proposal, flat_fields

TOOL_NAME = "propose_attempts"
# the fields a proposal may change, per pipeline section (camelCase, as in the API); the rest is the parent's
CHANGEABLE = {
    "data": ("maxExamples", "hardNegativeShare", "maxLabelRatio", "lengthMatching", "nearDuplicateSimilarity",
             "augmentPerPattern", "replayShare", "entityMaxRepeats"),
    "hyperparameters": ("baseModel", "method", "learningRate", "epochs", "batchSize", "maxLength", "loraRank",
                        "weightDecay", "warmupRatio", "decisionThreshold", "backend", "taskLearningRate", "gliner2Architecture"),
    "strategy": ("supervision", "distillation", "distillationTemperature", "confidenceReplay", "interpolation"),
}
SECTIONS = {"data": DataRecipe, "hyperparameters": Hyperparameters, "strategy": Strategy}
MAX_TEXT = {"modification": 200, "rationale": 1200}


@dataclass(frozen=True)
class Request:
    """What the controller asks: the next iteration's attempts, derived from ``parent``."""

    iteration: int
    parent: TrainingAttempt
    k: int
    spec: ModelAdaptationSpec
    graph: Graph
    fallback: list[Proposal]  # the deterministic policy's proposals (offered as options, used when the advisor cannot answer)


@dataclass(frozen=True)
class Advice:
    proposals: list[Proposal]
    record: dict[str, Any] = field(default_factory=dict)  # decidedBy, usage, refused, fallback reason: into each attempt's evidence


Advisor = Callable[[Request], Advice]


def _section_schema(section: str) -> dict[str, Any]:
    full = SECTIONS[section].model_json_schema(by_alias=True)
    props = {k: _inline(v, full.get("$defs", {})) for k, v in full["properties"].items() if k in CHANGEABLE[section]}
    return {"type": "object", "properties": props, "additionalProperties": False}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The property schema with $refs resolved (a tool's input schema is read by a model, not a validator)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def tool(k: int) -> dict[str, Any]:
    """The one tool of a planning call: its input schema is generated from the pipeline model's changeable fields."""
    change = {"type": "object", "additionalProperties": False,
              "properties": {section: _section_schema(section) for section in CHANGEABLE}}
    attempt = {"type": "object", "additionalProperties": False, "required": ["modification", "rationale", "changes"],
               "properties": {
                   "modification": {"type": "string", "maxLength": MAX_TEXT["modification"],
                                    "description": "What changes relative to the parent, in a few words."},
                   "rationale": {"type": "string", "maxLength": MAX_TEXT["rationale"],
                                 "description": "Why, citing the evidence (scores, slices, regressions, failure clusters)."},
                   "changes": {**change, "description": "Only the fields that change; everything else stays as in the parent."}}}
    return {"name": TOOL_NAME,
            "description": (f"Propose up to {k} training attempts for the next search iteration, each a change of the parent "
                            "pipeline (data recipe, hyperparameters, strategy). Proposals are validated; invalid ones are refused."),
            "input_schema": {"type": "object", "additionalProperties": False, "required": ["attempts"],
                             "properties": {"attempts": {"type": "array", "minItems": 1, "maxItems": k, "items": attempt}}}}


def validate(tool_input: Any, request: Request) -> tuple[list[Proposal], list[dict[str, Any]]]:
    """(proposals that may become attempts, refused ones with the reason). ``tool_input`` is untrusted."""
    if not isinstance(tool_input, dict) or not isinstance(tool_input.get("attempts"), list):
        raise ValueError(f"the tool input has no 'attempts' list: {json.dumps(tool_input, default=str)[:200]}")
    parent = request.parent.spec.pipeline
    allowed_models = {parent.hyperparameters.base_model, request.spec.hyperparameters.base_model, *request.spec.search.larger_base_models}
    allowed_backends = {parent.hyperparameters.backend, request.spec.hyperparameters.backend, *request.spec.search.backends}
    seen = request.graph.keys()
    accepted, refused = [], []
    for n, item in enumerate(tool_input["attempts"]):
        if n >= request.k:
            refused.append({"index": n, "reason": f"beyond the {request.k} attempts this iteration may train"})
            continue
        if not isinstance(item, dict):
            refused.append({"index": n, "reason": "not an object"})
            continue
        modification = str(item.get("modification") or "").strip()[:MAX_TEXT["modification"]] or "change proposed by the planner"
        rationale = str(item.get("rationale") or "").strip()[:MAX_TEXT["rationale"]]
        changes = item.get("changes")
        why = _refusal(changes, allowed_models, allowed_backends) or _strategy_refusal(changes, request.spec, parent)
        pipeline = None
        if why is None:
            merged = parent.model_dump(by_alias=True, mode="json")
            for section, values in changes.items():
                merged[section] = {**merged[section], **values}
            if merged["data"].get("augmentPerPattern"):
                merged["data"]["augmentFrom"] = request.parent.metadata.name  # names come from the controller, never the model
            try:
                pipeline = Pipeline.model_validate(merged)
            except ValidationError as exc:
                why = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())[:400]
        if why is None and pipeline_key(pipeline) in seen:
            why = "duplicate: an earlier attempt already trained this pipeline"
        if why is None and pipeline == parent:
            why = "changes nothing"
        if why is not None:
            refused.append({"index": n, "modification": modification, "changes": changes if isinstance(changes, dict) else None, "reason": why})
            continue
        seen.add(pipeline_key(pipeline))
        accepted.append(Proposal(pipeline, modification, rationale, {"proposed": changes}))
    return accepted, refused


PRESERVATION_FIELDS = ("distillation", "distillationTemperature", "confidenceReplay", "interpolation")


def _strategy_refusal(changes: dict[str, Any], spec: ModelAdaptationSpec, parent: Pipeline) -> str | None:
    """chainOfThought supervision is for generation. The preservation objectives need a deployed parent and a transformers
    classifier head: production repairs of transformers classifiers only. The gliner2 architecture is a gliner2 choice."""
    if (changes.get("strategy") or {}).get("supervision") == "chainOfThought" and spec.task.type != "generation":
        return f"strategy.supervision chainOfThought applies to generation tasks (this task is {spec.task.type})"
    asked = sorted(set(changes.get("strategy") or {}) & set(PRESERVATION_FIELDS))
    backend = (changes.get("hyperparameters") or {}).get("backend", parent.hyperparameters.backend)
    if "gliner2Architecture" in (changes.get("hyperparameters") or {}) and backend != "gliner2":
        return f"hyperparameters.gliner2Architecture applies to the gliner2 backend only (this pipeline trains {backend})"
    if asked and (spec.mode != "production" or spec.task.type != "classification" or backend != "transformers"):
        return f"strategy {asked}: preservation objectives apply to production repairs of transformers classifiers only"
    return None


def _refusal(changes: Any, allowed_models: set[str], allowed_backends: set[str]) -> str | None:
    if not isinstance(changes, dict) or not changes:
        return "no changes given"
    for section, values in changes.items():
        if section not in CHANGEABLE:
            return f"{section!r} is not a pipeline section the planner may change ({', '.join(CHANGEABLE)})"
        if not isinstance(values, dict):
            return f"{section} must be an object of field values"
        unknown = sorted(set(values) - set(CHANGEABLE[section]))
        if unknown:
            return f"{section}: field(s) {unknown} may not be changed by the planner (changeable: {', '.join(CHANGEABLE[section])})"
    model = (changes.get("hyperparameters") or {}).get("baseModel")
    if model is not None and model not in allowed_models:
        return f"hyperparameters.baseModel {str(model)[:80]!r} is neither the spec's base model nor one of search.largerBaseModels"
    backend = (changes.get("hyperparameters") or {}).get("backend")
    if backend is not None and backend not in allowed_backends:
        return f"hyperparameters.backend {str(backend)[:40]!r} is neither the spec's backend nor one of search.backends"
    return None


def context(request: Request, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evidence a planning call reads, as JSON-able data: the task, the gate, the search graph, the parent's failure
    patterns and the deterministic options. Trace text only ever appears inside it as data."""
    spec = request.spec
    attempts = []
    for a in request.graph.attempts:
        st = a.status
        attempts.append({"name": a.metadata.name, "iteration": a.spec.iteration, "parent": a.spec.parent, "modification": a.spec.modification,
                         "rationale": a.spec.rationale[:300], "phase": st.phase if st else None, "score": score(a),
                         "regressions": st.regressions if st else None, "crossCheckpointRegressions": st.cross_checkpoint_regressions if st else None,
                         "sliceScores": st.slice_scores if st else None, "trainLoss": st.train_loss if st else None,
                         "message": (st.message or "")[:200] if st and st.phase == "Failed" else None,
                         "pipeline": flat_fields(a.spec.pipeline.model_dump(by_alias=True, mode="json"))})
    st = request.parent.status
    return {
        "task": {"description": spec.task.description, "type": spec.task.type, "labels": spec.task.labels, "metric": spec.task.metric,
                 "mode": spec.mode},
        "gate": {"tau": spec.gate.tau, "epsilon": spec.gate.epsilon},
        "budget": {"maxAttempts": spec.search.max_attempts, "trained": len(request.graph.distinct_trainings), "proposeNow": request.k},
        "largerBaseModels": spec.search.larger_base_models,
        "backends": spec.search.backends,
        "parent": request.parent.metadata.name,
        "attempts": attempts,
        "parentFailurePatterns": (st.failure_patterns or [])[:10] if st else [],
        "deterministicOptions": [{"modification": p.modification, "rationale": p.rationale[:300]} for p in request.fallback[:6]],
        **(extra or {}),
    }
