"""``pioneer improve``: the continual-improvement trigger on the embedded default.

The same decision as the operator's timer (:func:`pioneer.core.improvement.decide`), over a DeployedModel file in a
local artifact store: count the current revision's judged failures in the template's trace store, and when the
trigger fires, run the generated production ModelAdaptation in-process (its gate decides as always). The repairs
started are recorded in ``improvement/<model>.json`` before they run, so an interrupted run resumes the same repair
instead of starting a second one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pioneer.api.models import DeployedModel, ModelAdaptation
from pioneer.core.improvement import Decision, Repair, decide
from pioneer.deploy import FileRegistry
from pioneer.store import ArtifactStore, open_store, read_json, write_json

TERMINAL = ("Succeeded", "Failed")


def record_key(model: str) -> str:
    return f"improvement/{model}.json"


def _repairs(store: ArtifactStore, model: str) -> list[dict[str, Any]]:
    return read_json(store, record_key(model))["repairs"] if store.exists(record_key(model)) else []


def _finished(store: ArtifactStore, name: str) -> bool:
    key = f"{name}/state.json"
    return store.exists(key) and ((read_json(store, key).get("status") or {}).get("phase") in TERMINAL)


def count_failures(dm: DeployedModel, base_dir: Path, revision: int) -> int:
    from pioneer.traces import store as trace_store

    ref = trace_store.resolve_reference(dm.spec.improvement.traces_source())
    if "://" not in ref and not Path(ref).is_absolute():
        ref = str(base_dir / ref)
    engine = trace_store.connect(ref)
    try:
        return trace_store.count_failures(engine, f"{dm.metadata.name}@{revision}")
    finally:
        engine.dispose()


def check(dm: DeployedModel, base_dir: Path, artifacts: str | None, run: Callable[[ModelAdaptation, ArtifactStore], str],
          now: datetime | None = None) -> Decision:
    """One look at the trigger; when it fires (or a recorded repair is unfinished), the repair runs through ``run``."""
    name, policy = dm.metadata.name, dm.spec.improvement
    template_uri = policy.template.get("artifacts", {}).get("uri", "./pioneer-artifacts")
    store = open_store(artifacts or template_uri, base_dir=base_dir)
    status = FileRegistry(store).load(name)
    revision = status.current_revision if status else None
    failures = count_failures(dm, base_dir, revision) if revision is not None else 0
    recorded = _repairs(store, name)
    repairs = [Repair(r["name"], r["revision"], datetime.fromisoformat(r["createdAt"]), _finished(store, r["name"]),
                      r.get("failuresAtStart", 0)) for r in recorded]
    now = now or datetime.now(UTC).replace(microsecond=0)
    decision = decide(policy, name, revision, failures, repairs, now, None)
    resume = next((r for r in recorded if not _finished(store, r["name"])), None)
    if resume is None and not decision.fires:
        return decision
    if resume is None:
        resume = {"name": decision.name, "revision": revision, "createdAt": now.isoformat(), "failuresAtStart": failures,
                  "reason": decision.message}
        write_json(store, record_key(name), {"repairs": [*recorded, resume]})  # recorded before it runs
    spec = policy.adaptation_spec(name, resume["revision"])
    spec.setdefault("artifacts", {})["uri"] = store.uri("").rstrip("/") if artifacts else template_uri
    ma = ModelAdaptation.model_validate({"metadata": {"name": resume["name"], "labels": {"pioneer.dev/deployed-model": name}}, "spec": spec})
    run(ma, store)
    return decision
