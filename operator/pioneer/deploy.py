"""DeployedModels on the embedded default: one JSON file per model in the artifact store.

Holds the same DeployedModelStatus as the Kubernetes resource (revision history, current revision, last
gate verdict) and changes it only through :mod:`pioneer.core.gate`: a passing verdict or an explicit
rollback. :class:`FileRegistry` is the local implementation of the lifecycle's registry port; promoted
models are published under ``models/sha256-<hash>/`` beside the files.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator

from pioneer.api.models import DNS1123, DeployedModelStatus, GateVerdict, Revision
from pioneer.core import gate
from pioneer.store import ArtifactStore, LocalStore, located, portable, read_json, write_json

PREFIX = "deployed"


def key(name: str) -> str:
    if not DNS1123.match(name or "") or len(name) > 63:
        raise ValueError(f"DeployedModel name {name!r} is not a DNS-1123 name")
    return f"{PREFIX}/{name}.json"


def load(store: ArtifactStore, name: str) -> DeployedModelStatus:
    if not store.exists(key(name)):
        return DeployedModelStatus()
    body = read_json(store, key(name))
    if isinstance(store, LocalStore):  # recorded relative to the store: a moved or copied folder still serves
        body = located(body, store.root)
    return DeployedModelStatus.model_validate(body)


def save(store: ArtifactStore, name: str, status: DeployedModelStatus) -> None:
    body = status.dump()
    write_json(store, key(name), portable(body, store.root) if isinstance(store, LocalStore) else body)


class FileRegistry:
    """The registry port over an artifact store: read-modify-write under a file lock on a local store."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.models = store

    def load(self, name: str) -> DeployedModelStatus | None:
        return load(self.store, name) if self.store.exists(key(name)) else None

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        if not isinstance(self.store, LocalStore):
            yield
            return
        path = self.store.path(key(name) + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def update(self, name: str, change: Callable[[DeployedModelStatus], DeployedModelStatus]) -> DeployedModelStatus:
        with self._locked(name):
            status = change(load(self.store, name))
            save(self.store, name, status)
            return status


def decide(store: ArtifactStore, name: str, verdict: GateVerdict, candidate: Revision | None) -> DeployedModelStatus:
    return FileRegistry(store).update(name, lambda st: gate.promote(st, verdict, candidate))


def rollback(store: ArtifactStore, name: str, to: int, at: str, reason: str | None = None) -> DeployedModelStatus:
    if not store.exists(key(name)):
        raise ValueError(f"no DeployedModel {name!r} in {store.uri(PREFIX)}")
    return FileRegistry(store).update(name, lambda st: gate.rollback(st, to, at, reason))


def approve(store: ArtifactStore, name: str, attempt: str | None, at: str, by: str) -> DeployedModelStatus:
    """Serve the candidate that passed the gate under manual promotion (see :func:`pioneer.core.gate.approve`)."""
    if not store.exists(key(name)):
        raise ValueError(f"no DeployedModel {name!r} in {store.uri(PREFIX)}")
    return FileRegistry(store).update(name, lambda st: gate.approve(st, attempt, at, by))
