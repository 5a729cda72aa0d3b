"""One adaptation lifecycle, carried out the same way by ``pioneer run`` and the Kopf operator.

After the search (:func:`pioneer.core.controller.reconcile`) completes, three recorded steps remain, each
saved before the next starts, so that a crash anywhere is repaired by running again::

    gate      the verdict on the chosen attempt: its output verified and published to a content-addressed
              folder, then every check of :func:`pioneer.core.gate.assess` (against the untrained base model
              or the deployed parent, and the served revision when it was scored on the same set)
    promote   the verdict applied to the DeployedModel through the registry port (idempotent, keyed by
              the attempt): a new revision only when it passed
    report    the report written

:func:`next_step` decides what is missing; :func:`advance` carries the missing steps out through ports
(a model registry, the adaptation's artifact store, an event sink, a report writer and a save callback).
Nothing here knows whether it runs in a process or in a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from pioneer.api.models import DeployedModelStatus, GateCheck, GateVerdict, ModelAdaptationSpec, Revision, TrainingAttempt
from pioneer.core import gate
from pioneer.core.controller import Completion, baseline_reference, gate_limits
from pioneer.core.graph import Graph
from pioneer.engine import read_metrics
from pioneer.layout import attempt_key
from pioneer.revisions import CorruptOutput, publish_model
from pioneer.store import ArtifactStore


class Step(str, Enum):
    SEARCH = "search"
    GATE = "gate"
    PROMOTE = "promote"
    REPORT = "report"
    DONE = "done"


@dataclass(frozen=True)
class Progress:
    """What the lifecycle has recorded so far (state.json locally, ModelAdaptation status in a cluster)."""

    completion: Completion | None = None
    verdict: GateVerdict | None = None
    candidate: Revision | None = None  # the published model the verdict is about
    applied: bool = False  # the verdict has been written to the DeployedModel
    report_uri: str | None = None


class ModelRegistry(Protocol):
    """Where DeployedModels live: a file per model locally, the DeployedModel resource in a cluster."""

    models: ArtifactStore  # where promoted models are published, content-addressed

    def load(self, name: str) -> DeployedModelStatus | None: ...

    def update(self, name: str, change: Callable[[DeployedModelStatus], DeployedModelStatus]) -> DeployedModelStatus: ...


Emit = Callable[[str, str, bool], None]  # (reason, message, warning)


def next_step(spec: ModelAdaptationSpec, progress: Progress) -> Step:
    if progress.completion is None:
        return Step.SEARCH
    if spec.deployed_model and progress.verdict is None:
        return Step.GATE
    if spec.deployed_model and not progress.applied:
        return Step.PROMOTE
    if progress.report_uri is None:
        return Step.REPORT
    return Step.DONE


def served_reference(spec: ModelAdaptationSpec, graph: Graph, served: Revision | None, eval_sha256: str | None) -> gate.References:
    """References for the final verdict: the baseline, and the served revision when it was scored on this very set."""
    same_set = served is not None and served.score is not None and eval_sha256 and served.eval_sha256 == eval_sha256
    return baseline_reference(spec, graph, current_revision=served.revision if same_set else None,
                              current_score=served.score if same_set else None)


def verdict_for(spec: ModelAdaptationSpec, adaptation: str, completion: Completion, attempts: list[TrainingAttempt],
                store: ArtifactStore, served: Revision | None, eval_sha256: str | None, decided_at: str,
                output_problem: str | None = None) -> GateVerdict:
    """The gate's verdict on the attempt the search chose, from its verified metrics. Pure but for reading them."""
    graph = Graph.of(attempts)
    best = graph.get(completion.best)
    limits = gate_limits(spec)
    if best is None:
        return gate.assess(gate.Candidate(None, None), limits, decided_at=decided_at, adaptation=adaptation)
    if output_problem is None:
        try:
            metrics = read_metrics(store, best.metadata.name)
        except CorruptOutput as exc:
            output_problem = str(exc)
    if output_problem is not None:
        check = GateCheck(name="outputVerified", passed=False, message=f"{best.metadata.name}'s output failed verification: {output_problem}")
        return GateVerdict(passed=False, attempt=best.metadata.name, adaptation=adaptation, checks=[check],
                           reason=check.message, decided_at=decided_at)
    ids = metrics.example_ids("regressed_examples") + metrics.example_ids("cross_checkpoint_regressed_examples")
    candidate = gate.Candidate(best.metadata.name, metrics.score, metrics.regressions,
                               metrics.cross_checkpoint_regressions, tuple(ids))
    return gate.assess(candidate, limits, served_reference(spec, graph, served, eval_sha256), decided_at, adaptation)


def candidate_revision(attempt: TrainingAttempt, adaptation: str, model_uri: str, sha: str, reason: str,
                       promoted_at: str) -> Revision:
    """The DeployedModel revision an attempt becomes (numbered on promotion), pointing at the published copy."""
    output = attempt.spec.output_uri.rstrip("/") + "/output"
    return Revision(revision=1, model_uri=model_uri, model_sha256=sha, attempt=attempt.metadata.name,
                    adaptation=adaptation, score=attempt.status.score if attempt.status else None,
                    eval_uri=attempt.spec.inputs.eval_uri, eval_sha256=attempt.spec.inputs.eval_sha256,
                    train_uri=attempt.spec.inputs.train_uri, predictions_uri=f"{output}/predictions.jsonl",
                    promoted_at=promoted_at, reason=reason)


@dataclass
class Ports:
    registry: ModelRegistry
    store: ArtifactStore  # the adaptation's artifact folder
    emit: Emit
    write_report: Callable[[Progress], str]
    save: Callable[[Progress], None]
    now: Callable[[], str]
    on_verdict: Callable[[GateVerdict], None] = field(default=lambda v: None)


def advance(spec: ModelAdaptationSpec, adaptation: str, attempts: list[TrainingAttempt], progress: Progress,
            ports: Ports, eval_sha256: str | None) -> Progress:
    """Carry out every missing step after the search, saving progress after each one."""
    while (step := next_step(spec, progress)) not in (Step.SEARCH, Step.DONE):
        if step is Step.GATE:
            progress = _gate(spec, adaptation, attempts, progress, ports, eval_sha256)
        elif step is Step.PROMOTE:
            progress = _promote(spec, progress, ports)
        else:
            progress = replace(progress, report_uri=ports.write_report(progress))
            ports.emit("Report", f"report: {progress.report_uri}", False)
        ports.save(progress)
    return progress


def _gate(spec: ModelAdaptationSpec, adaptation: str, attempts: list[TrainingAttempt], progress: Progress, ports: Ports,
          eval_sha256: str | None) -> Progress:
    assert progress.completion is not None
    served_status = ports.registry.load(spec.deployed_model) or DeployedModelStatus()
    served = gate.current(served_status)
    best = Graph.of(attempts).get(progress.completion.best)
    published, problem = None, None
    if best is not None:
        try:  # verify the chosen output and copy its model where no later run can write
            published = publish_model(ports.store, attempt_key(best.metadata.name, "output"), ports.registry.models)
        except CorruptOutput as exc:
            problem = str(exc)
    verdict = verdict_for(spec, adaptation, progress.completion, attempts, ports.store, served, eval_sha256, ports.now(), problem)
    candidate = candidate_revision(best, adaptation, *published, verdict.reason, ports.now()) if published else None
    ports.on_verdict(verdict)
    return replace(progress, verdict=verdict, candidate=candidate)


def _promote(spec: ModelAdaptationSpec, progress: Progress, ports: Ports) -> Progress:
    verdict = progress.verdict
    assert verdict is not None
    manual = spec.gate.promotion == "manual"
    status = ports.registry.update(spec.deployed_model, lambda st: gate.promote(st, verdict, progress.candidate, manual))
    if verdict.passed and progress.candidate is not None and manual:
        ports.emit("PendingApproval", f"{spec.deployed_model}: {progress.candidate.attempt} passed the gate and waits for an "
                   f"approval (pioneer approve {spec.deployed_model}); revision {status.current_revision} is served", False)
    elif verdict.passed and progress.candidate is not None:
        ports.emit("Promoted", f"{spec.deployed_model} revision {status.current_revision}: {verdict.reason}", False)
    else:
        ports.emit("GateFailed", f"{spec.deployed_model} unchanged (revision {status.current_revision}): {verdict.reason}", True)
    return replace(progress, applied=True)
