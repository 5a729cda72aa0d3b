"""DeployedModels on the embedded default: one JSON file per model in the artifact store.

Holds the same DeployedModelStatus as the Kubernetes resource (revision history, current revision, last
gate verdict) and changes it only through :mod:`pioneer.core.gate`: a passing verdict or an explicit
rollback.
"""

from __future__ import annotations

from pioneer.api.models import DeployedModelStatus, GateVerdict, Revision
from pioneer.core import gate
from pioneer.store import ArtifactStore, read_json, write_json

PREFIX = "deployed"


def key(name: str) -> str:
    return f"{PREFIX}/{name}.json"


def load(store: ArtifactStore, name: str) -> DeployedModelStatus:
    return DeployedModelStatus.model_validate(read_json(store, key(name))) if store.exists(key(name)) else DeployedModelStatus()


def save(store: ArtifactStore, name: str, status: DeployedModelStatus) -> None:
    write_json(store, key(name), status.dump())


def decide(store: ArtifactStore, name: str, verdict: GateVerdict, candidate: Revision | None) -> DeployedModelStatus:
    status = gate.promote(load(store, name), verdict, candidate)
    save(store, name, status)
    return status


def rollback(store: ArtifactStore, name: str, to: int, at: str, reason: str | None = None) -> DeployedModelStatus:
    if not store.exists(key(name)):
        raise ValueError(f"no DeployedModel {name!r} in {store.uri(PREFIX)}")
    status = gate.rollback(load(store, name), to, at, reason)
    save(store, name, status)
    return status
