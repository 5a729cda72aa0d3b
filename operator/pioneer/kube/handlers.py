"""Kopf handlers: thin adapters between the Kubernetes API and the controller core.

* ModelAdaptation (timer + create): prepare the frozen evaluation set, ask the core what to do,
  create TrainingAttempts (owned by the adaptation), write status, report and metrics; at the end,
  the gate decides whether the target DeployedModel gets a new revision.
* TrainingAttempt (create/resume): one batch/v1 Job running the trainer image.
* Job (events): when it finishes, read the attempt's metrics from the artifact store into its status.
* DeployedModel: first revision from spec.initialModelUri; spec.rollbackTo restores a past revision.

Run with ``kopf run -m pioneer.kube.handlers`` (the operator image does), or ``pioneer operator``.
Every decision is logged as a Kubernetes Event on the object it concerns.
"""

from __future__ import annotations

import calendar
import logging
import math
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import kopf

from pioneer import defaults as d
from pioneer import engine, preparation, report
from pioneer.api.models import (
    Condition,
    DeployedModelStatus,
    ModelAdaptation,
    ModelAdaptationStatus,
    Phase,
    Revision,
    TrainingAttempt,
    TrainingAttemptStatus,
)
from pioneer.api.validation import SpecError, deprecations, parse_resource
from pioneer.conditions import set_condition
from pioneer.core import gate, lifecycle
from pioneer.core.controller import reconcile
from pioneer.data.evalset import EvalSetTampered
from pioneer.data.examples import DataError
from pioneer.kube import client, jobs, metrics
from pioneer.kube.registry import DeployedModelRegistry, merge_patch
from pioneer.layout import reopen
from pioneer.revisions import CorruptOutput
from pioneer.runner.local import adaptation_store
from pioneer.status import adaptation_status
from pioneer.store import open_store
from pioneer.trainer.base_models import ModelNotFound

GROUP, VERSION = d.API_GROUP, d.API_VERSION
RECONCILE_SECONDS = float(os.environ.get("PIONEER_RECONCILE_SECONDS", "10"))
IMPROVEMENT_SECONDS = float(os.environ.get("PIONEER_IMPROVEMENT_SECONDS", d.IMPROVEMENT_CHECK_SECONDS))
TERMINAL = (Phase.succeeded.value, Phase.failed.value)
_locks: dict[tuple[str, str], threading.Lock] = {}


def _lock(namespace: str, name: str) -> threading.Lock:
    return _locks.setdefault((namespace, name), threading.Lock())


@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger, **_) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.INFO
    # Namespace scanning lists namespaces cluster-wide; a namespace-scoped install may turn it off.
    settings.scanning.disabled = os.environ.get("PIONEER_SCANNING", "on") == "off"
    for kind in ("ModelAdaptation", "TrainingAttempt", "DeployedModel"):
        metrics.RECONCILE_ERRORS.labels(kind).inc(0)  # present at 0 before the first error
    port = int(os.environ.get("PIONEER_METRICS_PORT", "8080"))
    if port:
        metrics.serve(port)
        logger.info(f"metrics on :{port}/metrics")


# --------------------------------------------------------------------------- ModelAdaptation


def _attempts(namespace: str, adaptation: str) -> list[TrainingAttempt]:
    items = client.list_by_label("TrainingAttempt", namespace, f"{jobs.LABEL_ADAPTATION}={adaptation}")
    return [TrainingAttempt.model_validate(item) for item in items]


def _deadline(ma: ModelAdaptation) -> float:
    s = ma.spec
    return s.trainer.timeout_seconds * math.ceil((s.search.max_attempts + 1) / s.search.parallelism) + 600


@kopf.on.create(GROUP, VERSION, "modeladaptations")
@kopf.timer(GROUP, VERSION, "modeladaptations", interval=RECONCILE_SECONDS, initial_delay=RECONCILE_SECONDS)
def reconcile_adaptation(body: kopf.Body, namespace: str, name: str, patch: kopf.Patch, logger, **_) -> None:
    with _lock(namespace, name):
        try:
            _reconcile_adaptation(body, namespace, name, patch, logger)  # an invalid spec is handled inside
            _last_error.pop((namespace, name), None)
        except Exception as exc:
            metrics.RECONCILE_ERRORS.labels("ModelAdaptation").inc()
            _warn_once(body, namespace, name, exc)
            raise


_last_error: dict[tuple[str, str], str] = {}


def _warn_once(body: kopf.Body, namespace: str, name: str, exc: Exception) -> None:
    """A handler failure becomes one Warning Event on the object (again only when the message changes); a permanent
    failure has posted its own reason already."""
    if isinstance(exc, kopf.PermanentError):
        return
    message = f"{type(exc).__name__}: {exc}"[:1000]
    if _last_error.get((namespace, name)) != message:
        _last_error[(namespace, name)] = message
        kopf.warn(body, reason="Waiting" if isinstance(exc, kopf.TemporaryError) else "ReconcileError", message=message)


def progress_update(attempt: TrainingAttempt, progress: dict | None) -> dict | None:
    """The status patch that shows a running attempt's training progress, or None when nothing changed."""
    if progress is None or not attempt.status or attempt.status.phase != Phase.running.value:
        return None
    shown = {k: progress[k] for k in ("phase", "step", "total_steps", "epoch", "loss") if k in progress}
    return None if shown == (attempt.status.progress or {}) or not shown else {"progress": shown}


def _reconcile_adaptation(body: kopf.Body, namespace: str, name: str, patch: kopf.Patch, logger) -> None:
    raw = {k: v for k, v in dict(body).items() if k in ("apiVersion", "kind", "metadata", "spec")}
    raw["metadata"] = {k: v for k, v in raw["metadata"].items() if k in ("name", "namespace", "generation", "labels", "annotations")}
    previous = ModelAdaptationStatus.model_validate(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation")
    if previous.phase in TERMINAL and previous.observed_generation == generation:
        return
    try:
        ma = parse_resource(raw, f"{namespace}/{name}")
        assert isinstance(ma, ModelAdaptation)
    except SpecError as exc:
        message = "; ".join(exc.problems)
        if previous.message != message:
            kopf.warn(body, reason="InvalidSpec", message=message)
        st = previous.model_copy(update={"phase": Phase.failed.value, "message": message, "observed_generation": generation})
        st.conditions = set_condition(st.conditions, Condition(type="Ready", status="False", reason="InvalidSpec",
                                                               message=message, observed_generation=generation))
        patch.status.update(st.dump())
        return

    problem = cluster_data_problem(ma, os.environ.get("PIONEER_DATA_ROOT"))
    if problem:
        _fail(body, namespace, name, previous, generation, "InvalidSpec", problem)
        raise kopf.PermanentError(problem)
    api_key, problem = _llm_key(ma, namespace)
    if problem:
        _fail(body, namespace, name, previous, generation, "MissingLlmKey", problem)
        raise kopf.PermanentError(problem)
    store = adaptation_store(ma, None)
    registry = DeployedModelRegistry(namespace, open_store(ma.spec.artifacts.uri))
    if previous.phase is None:
        for line in deprecations(ma):
            kopf.warn(body, reason="DeprecatedField", message=line)
        kopf.info(body, reason="Preparing", message="building the frozen evaluation set")
    if ma.spec.mode == "production" and not store.exists(engine.EVAL_MANIFEST):
        _await_preparation(body, ma, namespace, store, registry, previous, generation, patch)
        return
    try:
        prepared = _prepare(ma, store, api_key)
    except (DataError, EvalSetTampered, ModelNotFound) as exc:  # bad data is a Failed condition, never an endless retry
        _fail(body, namespace, name, previous, generation, "InvalidData", str(exc))
        raise kopf.PermanentError(str(exc)) from None
    if previous.eval_set_sha256 is None:
        kopf.info(body, reason="EvalSetFrozen", message=f"{prepared.record['evaluation']['size']} examples, sha256 {prepared.eval_sha256[:12]}")
    elif previous.eval_set_sha256 != prepared.eval_sha256:
        message = (f"the frozen evaluation set now hashes to {prepared.eval_sha256[:12]}, but status records "
                   f"{previous.eval_set_sha256[:12]}: it was edited after freezing")
        _fail(body, namespace, name, previous, generation, "EvalSetTampered", message)
        raise kopf.PermanentError(message)

    attempts = _attempts(namespace, name)
    for a in attempts:  # training progress into each running attempt's status (at most once per reconcile)
        update = progress_update(a, engine.read_progress(store, a.metadata.name))
        if update:
            client.patch_status("TrainingAttempt", namespace, a.metadata.name, update)
    advisor = engine.planning_advisor(ma.spec, store, api_key,
                                      on_event=lambda kind, message: kopf.info(body, reason="PlannerDecision", message=message[:1000]))
    plan = reconcile(name, ma.spec, attempts, prepared.pool_size, advisor)
    for new in plan.create:
        attempt = engine.materialize(name, ma.spec, prepared, new, store, namespace)
        child = attempt.dump()
        child["metadata"]["labels"] = {**child["metadata"].get("labels", {}), jobs.LABEL_ADAPTATION: name}
        kopf.adopt(child, owner=body)
        if client.create("TrainingAttempt", namespace, child):
            kopf.info(body, reason="AttemptCreated", message=f"{new.name} from {new.parent or '-'}: {new.modification}. {new.rationale}"[:1000])
        attempts.append(attempt)

    progress = lifecycle.Progress(completion=plan.complete, verdict=previous.verdict, candidate=previous.candidate_revision,
                                  applied=previous.gate_applied, report_uri=previous.report_uri if plan.complete else None)
    if plan.complete is not None:
        progress = _finish(body, ma, namespace, attempts, progress, store, registry, prepared)
        kopf.info(body, reason=plan.complete.reason, message=plan.complete.message)

    st = adaptation_status(previous, generation, prepared, attempts, plan.complete, report_uri=progress.report_uri)
    st.verdict, st.candidate_revision, st.gate_applied = progress.verdict, progress.candidate, progress.applied
    patch.status.update(st.dump())
    _export_metrics(namespace, name, ma, st)


def _await_preparation(body: kopf.Body, ma: ModelAdaptation, namespace: str, store, registry: DeployedModelRegistry,
                       previous: ModelAdaptationStatus, generation, patch: kopf.Patch) -> None:
    """Production preparation is heavy (triage, embeddings, live probes): a Job from the trainer image does it and
    writes the frozen sets to the store. Until its manifest is there, the operator only starts and watches it."""
    name = ma.metadata.name
    failed = preparation.failure(store)
    if failed:
        _fail(body, namespace, name, previous, generation, "InvalidData", failed)
        raise kopf.PermanentError(failed)
    job = client.get_job(namespace, jobs.preparation_name(name))
    if job is not None and jobs.job_outcome(job) == "failed":  # crashed past its retries without a verdict
        message = f"preparation Job {jobs.preparation_name(name)} failed {job.get('status', {}).get('failed', 0)} time(s) without a result"
        _fail(body, namespace, name, previous, generation, "PreparationFailed", message)
        raise kopf.PermanentError(message)
    if job is None:
        target = ma.spec.deployed_model
        deployed = registry.load(target)
        if deployed is None:
            raise kopf.TemporaryError(f"DeployedModel {namespace}/{target} not found; preparation waits for it", delay=30)
        uri = preparation.request(store, name, ma.spec, deployed, f"DeployedModel {namespace}/{target}")
        manifest = jobs.preparation_manifest(name, ma.spec, uri)
        kopf.adopt(manifest, owner=body)
        if client.create_job(namespace, manifest):
            kopf.info(body, reason="PreparationStarted",
                      message=f"Job {manifest['metadata']['name']} triages the judged traces against revision {deployed.current_revision}")
    st = adaptation_status(previous, generation, None, [], None)
    patch.status.update(st.dump())
    _export_metrics(namespace, name, ma, st)


def cluster_data_problem(ma: ModelAdaptation, data_root: str | None) -> str | None:
    """In a cluster only URIs (s3://, hub ids, database URLs) and files under the operator's data root may be read:
    a spec must not make the operator read its own filesystem."""
    root = Path(data_root).resolve() if data_root else None
    for i, src in enumerate(ma.spec.data.sources):
        local = src.path or (src.traces if src.traces and "://" not in src.traces else None)
        if local is None:
            continue
        field = f"spec.data.sources[{i}].{'path' if src.path else 'traces'}"
        if root is None:
            return f"{field}: {local!r} is a local file, which the operator does not read; use an s3:// URI or a database URL"
        resolved = (root / local).resolve()
        if resolved != root and root not in resolved.parents:
            return f"{field}: {local!r} is outside the operator's data root {root}"
    return None


def _prepare(ma: ModelAdaptation, store, api_key: str | None = None) -> engine.Prepared:
    if ma.spec.mode == "production":  # its preparation Job froze the sets: only read them back
        return reopen(store, "failure set")
    data_root = os.environ.get("PIONEER_DATA_ROOT")
    return engine.prepare(ma.spec, store, base_dir=Path(data_root) if data_root else None, api_key=api_key)


def _llm_key(ma: ModelAdaptation, namespace: str) -> tuple[str | None, str | None]:
    """(the Anthropic API key the Claude planner or data.synthesis needs, or why there is none). The key comes from the
    Secret the spec names, else from the operator's own environment; it is never written into a custom resource."""
    if ma.spec.search.planner != "claude" and ma.spec.data.synthesis is None:
        return None, None
    field = "spec.search.planner is 'claude'" if ma.spec.search.planner == "claude" else "spec.data.synthesis is set"
    ref = ma.spec.search.llm.api_key_secret
    if ref is not None:
        value = client.secret_value(namespace, ref.name, ref.key)
        if value:
            return value, None
        return None, (f"{field}, but Secret {namespace}/{ref.name} (spec.search.llm.apiKeySecret) "
                      f"has no key {ref.key!r}: create it with the Anthropic API key, or use planner: deterministic")
    if os.environ.get("ANTHROPIC_API_KEY"):
        return os.environ["ANTHROPIC_API_KEY"], None
    return None, (f"{field}, but no API key is configured: set spec.search.llm.apiKeySecret to a Secret "
                  "holding the Anthropic API key (or give the operator ANTHROPIC_API_KEY), or use planner: deterministic")


def _fail(body: kopf.Body, namespace: str, name: str, previous: ModelAdaptationStatus, generation, reason: str, message: str) -> None:
    """Record a permanent failure on the object itself (status written now: the handler raises PermanentError next)."""
    kopf.warn(body, reason=reason, message=message[:1000])
    st = previous.model_copy(update={"phase": Phase.failed.value, "message": message, "observed_generation": generation})
    st.conditions = set_condition(st.conditions, Condition(type="Ready", status="False", reason=reason, message=message,
                                                           observed_generation=generation))
    client.patch_status("ModelAdaptation", namespace, name, st.dump())
    metrics.ADAPTATION_DONE.labels(namespace, name).set(1)


def _finish(body: kopf.Body, ma: ModelAdaptation, namespace: str, attempts: list[TrainingAttempt], progress: lifecycle.Progress,
            store, registry: DeployedModelRegistry, prepared: engine.Prepared) -> lifecycle.Progress:
    """The same gate, promotion and report steps as ``pioneer run``; Events go to the object they concern."""
    target = ma.spec.deployed_model
    target_ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeployedModel",
                  "metadata": {"name": target, "namespace": namespace}} if target else None
    if target and registry.load(target) is None:
        raise kopf.TemporaryError(f"DeployedModel {namespace}/{target} not found; the verdict waits for it", delay=30)

    def emit(reason: str, message: str, warning: bool) -> None:
        post = kopf.warn if warning else kopf.info
        for obj in (body, target_ref) if reason in ("Promoted", "GateFailed", "PendingApproval") else (body,):
            post(obj, reason=reason, message=message[:1000])

    def write_report(p: lifecycle.Progress) -> str:
        state = {"adaptation": ma.dump(), "attempts": [a.dump() for a in attempts],
                 "completion": asdict(p.completion) if p.completion else None, "events": [],
                 "gate": p.verdict.dump() if p.verdict else None}
        return report.write(store, state)

    def on_verdict(verdict) -> None:
        metrics.GATE_VERDICTS.labels(namespace, target, "passed" if verdict.passed else "failed").inc()

    ports = lifecycle.Ports(registry=registry, store=store, emit=emit, write_report=write_report,
                            save=lambda p: None, now=engine.now, on_verdict=on_verdict)
    done = lifecycle.advance(ma.spec, ma.metadata.name, attempts, progress, ports, prepared.eval_sha256)
    if target and done.applied and done.verdict is not None and done.verdict.passed:
        dm = client.get("DeployedModel", namespace, target) or {}
        current = dm.get("status") or {}
        sync_pending_metric(namespace, target, DeployedModelStatus.model_validate(current))
        sync_serving_target(target_ref, namespace, target, dm.get("spec"), current.get("modelUri"), current.get("currentRevision"))
    return done


def _export_metrics(namespace: str, name: str, ma: ModelAdaptation, st: ModelAdaptationStatus) -> None:
    """Every adaptation gauge, rebuilt from status on each reconcile (so an operator restart loses none of them)."""
    if st.started_at:
        metrics.ADAPTATION_STARTED.labels(namespace, name).set(calendar.timegm(time.strptime(st.started_at, "%Y-%m-%dT%H:%M:%SZ")))
    metrics.ADAPTATION_DEADLINE.labels(namespace, name).set(_deadline(ma))
    metrics.ADAPTATION_DONE.labels(namespace, name).set(1 if st.phase in TERMINAL else 0)
    counts = st.attempts
    for phase, n in (("Running", counts.running), ("Succeeded", counts.succeeded), ("Failed", counts.failed)):
        metrics.ATTEMPTS.labels(namespace, name, phase).set(n)
    if st.best_score is not None:
        metrics.BEST_SCORE.labels(namespace, name).set(st.best_score)
    if st.baseline_score is not None:
        metrics.BASELINE_SCORE.labels(namespace, name).set(st.baseline_score)


# --------------------------------------------------------------------------- TrainingAttempt -> Job


@kopf.on.create(GROUP, VERSION, "trainingattempts")
@kopf.on.resume(GROUP, VERSION, "trainingattempts")
def launch_attempt(body: kopf.Body, namespace: str, name: str, patch: kopf.Patch, logger, **_) -> None:
    attempt = TrainingAttempt.model_validate({k: v for k, v in dict(body).items() if k != "metadata"} |
                                             {"metadata": {"name": name, "namespace": namespace}})
    if attempt.status and attempt.status.phase in TERMINAL:
        return
    owner = client.get("ModelAdaptation", namespace, attempt.spec.adaptation)
    if owner is None:
        raise kopf.TemporaryError(f"ModelAdaptation {attempt.spec.adaptation} not found", delay=10)
    ma = ModelAdaptation.model_validate({k: v for k, v in owner.items() if k in ("apiVersion", "kind", "spec")}
                                        | {"metadata": {"name": attempt.spec.adaptation}})
    store = adaptation_store(ma, None)
    decision = engine.before_training(store, attempt, _attempts(namespace, attempt.spec.adaptation))
    if decision.wait_for is not None:  # the same training is under way in another attempt: wait for its result
        raise kopf.TemporaryError(f"waits for {decision.wait_for}: same training data and configuration", delay=RECONCILE_SECONDS)
    if decision.rejected:  # a half-written output from an earlier Job: the new Job trains it again
        kopf.warn(body, reason="OutputRejected", message=decision.rejected[:1000])
    if (reused := decision.reused) is not None:  # the output is already there (copied from a finished twin): no Job
        kopf.info(body, reason="Reused", message="same training data and configuration as an earlier attempt; its result is reused")
        patch.status.update(reused.dump())
        return
    manifest = jobs.job_manifest(attempt, ma.spec, f"{attempt.spec.output_uri.rstrip('/')}/attempt.json")
    kopf.adopt(manifest, owner=body)
    created = client.create_job(namespace, manifest)
    if created:
        kopf.info(body, reason="JobCreated", message=f"Job {manifest['metadata']['name']} runs {ma.spec.trainer.image}")
    patch.status.update({"phase": Phase.running.value, "jobName": manifest["metadata"]["name"],
                         "startedAt": (attempt.status.started_at if attempt.status and attempt.status.started_at else engine.now())})


@kopf.on.event("batch", "v1", "jobs", labels={jobs.LABEL_ATTEMPT: kopf.PRESENT})
def job_event(body: kopf.Body, namespace: str, labels, logger, **_) -> None:
    outcome = jobs.job_outcome(dict(body))
    if outcome is None:
        return
    name = labels[jobs.LABEL_ATTEMPT]
    raw = client.get("TrainingAttempt", namespace, name)
    if raw is None:
        return
    attempt = TrainingAttempt.model_validate({k: v for k, v in raw.items() if k != "metadata"} | {"metadata": {"name": name}})
    if attempt.status and attempt.status.phase in TERMINAL:
        return
    owner = client.get("ModelAdaptation", namespace, attempt.spec.adaptation)
    if owner is None:
        return
    store = adaptation_store(ModelAdaptation.model_validate({k: v for k, v in owner.items() if k in ("apiVersion", "kind", "spec")}
                                                            | {"metadata": {"name": attempt.spec.adaptation}}), None)
    try:
        result = engine.collect(store, attempt)
    except CorruptOutput as exc:  # never trust an output that does not match its manifest
        result = (attempt.status or TrainingAttemptStatus()).model_copy(update={
            "phase": Phase.failed.value, "finished_at": engine.now(), "message": f"output failed verification: {exc}"})
    if result is None:  # the Job ended without a verdict in the store: it crashed past its retries
        retries = (body.get("status") or {}).get("failed", 0)
        result = (attempt.status or TrainingAttemptStatus()).model_copy(update={
            "phase": Phase.failed.value, "finished_at": engine.now(), "retries": retries,
            "message": f"Job {outcome} without results after {retries} pod failure(s) (backoffLimit reached)"})
    client.patch_status("TrainingAttempt", namespace, name, result.dump())
    started = (attempt.status.started_at if attempt.status else None)
    if started:
        took = time.time() - calendar.timegm(time.strptime(started, "%Y-%m-%dT%H:%M:%SZ"))
        metrics.TRAINING_SECONDS.labels(namespace, attempt.spec.adaptation, Phase(result.phase).value).observe(max(0.0, took))
    owner_body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingAttempt", "metadata": raw["metadata"]}
    if result.phase == Phase.succeeded.value:
        kopf.info(owner_body, reason="Succeeded", message=f"score {result.score:.4f}")
    else:
        kopf.warn(owner_body, reason="Failed", message=result.message or "failed")


# --------------------------------------------------------------------------- DeployedModel


@kopf.on.create(GROUP, VERSION, "deployedmodels")
@kopf.on.resume(GROUP, VERSION, "deployedmodels")
def initial_revision(body: kopf.Body, namespace: str, name: str, spec, status, patch: kopf.Patch, **_) -> None:
    # both verdict series exist from the start at 0, so the first refusal is an increase an alert can see
    for result in ("passed", "failed"):
        metrics.GATE_VERDICTS.labels(namespace, name, result).inc(0)
    current = DeployedModelStatus.model_validate(status or {})
    uri = spec.get("initialModelUri")
    if current.revisions or not uri:
        sync_serving_target(body, namespace, name, spec, current.model_uri, current.current_revision)
        return
    first = Revision(revision=1, model_uri=uri, promoted_at=engine.now(), reason="initial model from spec.initialModelUri")
    patch.status.update(current.model_copy(update={"revisions": [first], "current_revision": 1, "model_uri": uri}).dump())
    kopf.info(body, reason="Revision", message=f"revision 1: {uri}")
    sync_serving_target(body, namespace, name, spec, uri, 1)


def sync_serving_target(body, namespace: str, name: str, spec, uri: str | None, revision) -> None:
    """Point the DeployedModel's serving target at the revision it now serves, when they differ. Called after every
    revision change (promotion, rollback, the initial revision) and when the operator resumes, so a restart between
    the two writes is mended."""
    from pioneer.kube import serving

    serving_spec = (spec or {}).get("serving") or {}
    if serving_spec.get("deployment") and uri:
        _sync_deployment(body, namespace, name, spec, revision)
        return
    target = serving_spec.get("inferenceService")
    if not target or not uri:
        return
    try:
        before = serving.sync_inference_service(namespace, target, uri)
    except LookupError as exc:
        _warn_once(body, namespace, name, exc)
        return
    if before is not None:
        kopf.info(body, reason="ServingUpdated", message=f"InferenceService {target} now serves revision {revision} ({uri})")


def sync_pending_metric(namespace: str, name: str, status: DeployedModelStatus) -> None:
    """The pending-approval gauge (the alert on approvals waiting too long reads it), rebuilt from status."""
    pending = status.pending_revision
    if pending is not None and pending.since:
        metrics.PENDING_APPROVAL_SINCE.labels(namespace, name).set(calendar.timegm(time.strptime(pending.since, "%Y-%m-%dT%H:%M:%SZ")))
    else:
        try:
            metrics.PENDING_APPROVAL_SINCE.remove(namespace, name)
        except KeyError:
            pass


@kopf.on.field(GROUP, VERSION, "deployedmodels", field=["metadata", "annotations", d.APPROVE_ANNOTATION])
def approve_revision(body: kopf.Body, namespace: str, name: str, new, **_) -> None:
    """A person approves the candidate waiting under manual promotion (``pioneer approve NAME --namespace NS``)."""
    if not new:
        return
    by = (body.get("metadata", {}).get("annotations") or {}).get(d.APPROVED_BY_ANNOTATION) or "annotation"
    registry = DeployedModelRegistry(namespace, None)
    try:
        status = registry.update(name, lambda st: gate.approve(st, str(new), engine.now(), by))
    except ValueError as exc:
        kopf.warn(body, reason="ApprovalRefused", message=str(exc)[:1000])
        return
    sync_pending_metric(namespace, name, status)
    kopf.info(body, reason="Promoted", message=f"revision {status.current_revision}: {new} approved by {by}")
    sync_serving_target(body, namespace, name, body.get("spec"), status.model_uri, status.current_revision)


# --------------------------------------------------------------------------- continual improvement


FAILURES_AT_START = f"{GROUP}/failures-at-start"  # on a generated repair: the revision's judged failures when it started


def _has_improvement(spec, **_) -> bool:
    return bool((spec or {}).get("improvement"))


def _repairs(namespace: str, name: str) -> list:
    from pioneer.core.improvement import Repair

    found = []
    for item in client.list_by_label("ModelAdaptation", namespace, f"{jobs.LABEL_DEPLOYED_MODEL}={name}"):
        meta, phase = item.get("metadata") or {}, (item.get("status") or {}).get("phase")
        revision = (meta.get("labels") or {}).get(jobs.LABEL_REVISION)
        seen = (meta.get("annotations") or {}).get(FAILURES_AT_START, "0")
        created = _parse_time(meta.get("creationTimestamp")) or _parse_time(engine.now())
        found.append(Repair(meta["name"], int(revision) if revision and revision.isdigit() else None, created, phase in TERMINAL,
                            int(seen) if seen.isdigit() else 0))
    return sorted(found, key=lambda r: r.created_at)


def _parse_time(value: str | None):
    from datetime import UTC, datetime

    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if value else None


def count_revision_failures(spec, model_id: str) -> int:
    """The current revision's judged failures, counted in the template's trace store (a light COUNT; the heavy
    triage runs in the repair's preparation Job). ``${NAME}`` in the URL comes from the operator's environment."""
    from pioneer.traces import store as trace_store

    ref = spec.improvement.traces_source()
    if not ref:
        raise ValueError("improvement.template has no traces source to count failures in")
    ref = trace_store.resolve_reference(ref)
    if ref.startswith("s3://"):
        raise ValueError("the trigger counts failures in a database (a SQLAlchemy URL), not in an export on S3")
    if "://" not in ref:  # a file only under the operator's data root, as for any spec
        root = os.environ.get("PIONEER_DATA_ROOT")
        if not root:
            raise ValueError(f"the trace source {ref!r} is a local file, which the operator does not read; use a database URL")
        ref = str(Path(root) / ref)
    engine_ = trace_store.connect(ref)
    try:
        return trace_store.count_failures(engine_, model_id)
    finally:
        engine_.dispose()


@kopf.timer(GROUP, VERSION, "deployedmodels", interval=IMPROVEMENT_SECONDS, initial_delay=1, when=_has_improvement)
def improve(body: kopf.Body, namespace: str, name: str, spec, status, patch: kopf.Patch, **_) -> None:
    """Start the next repair when the trigger fires: a production ModelAdaptation from the template, owned by this
    DeployedModel, named from (model, revision, sequence); at most one in flight."""
    from datetime import UTC, datetime

    from pioneer.api.models import DeployedModelSpec, ImprovementStatus
    from pioneer.core.improvement import decide

    current = DeployedModelStatus.model_validate(status or {})
    sync_pending_metric(namespace, name, current)
    previous = current.improvement or ImprovementStatus()
    at = engine.now()
    try:
        dm_spec = DeployedModelSpec.model_validate(dict(spec))
    except ValueError as exc:
        _warn_once(body, namespace, name, exc)
        patch.status["improvement"] = previous.model_copy(update={"waiting": f"invalid spec: {exc}"[:1000], "last_check_at": at}).dump()
        return
    revision = current.current_revision
    try:
        failures = count_revision_failures(dm_spec, f"{name}@{revision}") if revision is not None else 0
    except Exception as exc:  # an unreachable trace store: wait and say why, once
        _warn_once(body, namespace, name, exc)
        patch.status["improvement"] = previous.model_copy(update={"waiting": f"{type(exc).__name__}: {exc}"[:1000], "last_check_at": at}).dump()
        return
    now = datetime.now(UTC).replace(microsecond=0)
    repairs = _repairs(namespace, name)
    decision = decide(dm_spec.improvement, name, revision, failures, repairs, now, _parse_time(previous.last_check_at), IMPROVEMENT_SECONDS)
    st = previous.model_copy(update={
        "revision": revision, "failures_since_revision": failures, "last_check_at": at,
        "next_check_at": decision.next_check.strftime("%Y-%m-%dT%H:%M:%SZ") if decision.next_check else None,
        "in_flight": next((r.name for r in repairs if not r.finished), None), "waiting": None if decision.fires else decision.message})
    if decision.fires:
        manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelAdaptation",
                    "metadata": {"name": decision.name, "namespace": namespace,
                                 "labels": {jobs.LABEL_DEPLOYED_MODEL: name, jobs.LABEL_REVISION: str(revision)},
                                 "annotations": {f"{GROUP}/trigger": decision.message[:1000], FAILURES_AT_START: str(failures)}},
                    "spec": dm_spec.improvement.adaptation_spec(name, revision)}
        kopf.adopt(manifest, owner=body)
        if client.create("ModelAdaptation", namespace, manifest):
            metrics.REPAIRS_STARTED.labels(namespace, name).inc()
            kopf.info(body, reason="RepairStarted", message=f"{decision.name}: {decision.message}"[:1000])
        st = st.model_copy(update={"last_trigger_at": at, "last_trigger_reason": decision.message, "last_adaptation": decision.name,
                                   "in_flight": decision.name})
    if st != previous:
        patch.status["improvement"] = merge_patch(previous.dump(), st.dump())


def _sync_deployment(body, namespace: str, name: str, spec, revision) -> None:
    """The DeployedModel's own `pioneer serve` Deployment + Service, pinned to the revision it serves now."""
    from pioneer.api.models import DeployedModelSpec
    from pioneer.kube import serving

    dm_spec = DeployedModelSpec.model_validate(dict(spec))
    target = dm_spec.serving.deployment
    status = DeployedModelRegistry(namespace, None).load(name) or DeployedModelStatus()
    served = gate.current(status)
    if served is None:
        return
    traces = target.traces or (dm_spec.improvement.traces_source() if dm_spec.improvement else None) or os.environ.get("PIONEER_TRACES_URL")
    if not traces:
        _warn_once(body, namespace, name, ValueError("spec.serving.deployment needs a trace store: set its traces, an improvement "
                                                     "template with a traces source, or the chart's traces.url"))
        return
    owner = body if body.get("metadata", {}).get("uid") else (client.get("DeployedModel", namespace, name) or body)
    manifest = serving.deployment_manifest(name, target, dm_spec.capture, traces, served.revision, served.model_uri, served.model_sha256)
    changed = serving.sync_deployment(namespace, owner, manifest, serving.service_manifest(name, target))
    if changed:
        kopf.info(owner, reason="ServingUpdated", message=f"Deployment {name} {changed}: serves revision {served.revision} "
                  f"({served.model_uri}), {target.replicas} replica(s), rolling with maxUnavailable 0")


@kopf.on.field(GROUP, VERSION, "deployedmodels", field="spec.serving")
@kopf.on.field(GROUP, VERSION, "deployedmodels", field="spec.capture")
def serving_changed(body: kopf.Body, namespace: str, name: str, spec, status, **_) -> None:
    """A changed serving target or capture policy is applied to what serves the current revision."""
    current = DeployedModelStatus.model_validate(status or {})
    sync_serving_target(body, namespace, name, spec, current.model_uri, current.current_revision)


@kopf.on.field(GROUP, VERSION, "deployedmodels", field="spec.rollbackTo")
def rollback_revision(body: kopf.Body, new, status, patch: kopf.Patch, **_) -> None:
    if not new:
        return
    current = DeployedModelStatus.model_validate(status or {})
    try:
        restored = gate.rollback(current, int(new), engine.now())
    except ValueError as exc:
        raise kopf.PermanentError(str(exc)) from None
    patch.status.update(restored.dump())
    kopf.info(body, reason="RolledBack", message=f"serving revision {new} again ({restored.model_uri})")
    sync_serving_target(body, body.get("metadata", {}).get("namespace"), body.get("metadata", {}).get("name"), body.get("spec"),
                        restored.model_uri, restored.current_revision)
