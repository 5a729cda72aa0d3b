"""The lifecycle's registry port in a cluster: the DeployedModel custom resource.

Its status is changed by read-modify-write with optimistic concurrency: the patch carries the
resourceVersion that was read, so a concurrent writer makes the API server answer 409 and the change is
applied again to the fresh object. Promoted models are published to the adaptation's artifact store root.
"""

from __future__ import annotations

from collections.abc import Callable

from pioneer.api.models import DeployedModelStatus
from pioneer.kube import client
from pioneer.store import ArtifactStore

CONFLICT_RETRIES = 5


def merge_patch(before: dict, after: dict) -> dict:
    """The JSON merge patch (RFC 7386) from ``before`` to ``after``: keys ``after`` lacks become null, so a field
    cleared in the model (a pending revision approved) is removed from the resource, not left behind."""
    patch = dict(after)
    for key, value in before.items():
        if key not in after:
            patch[key] = None
        elif isinstance(value, dict) and isinstance(after[key], dict):
            patch[key] = merge_patch(value, after[key])
    return patch


class DeployedModelMissing(LookupError):
    pass


class DeployedModelRegistry:
    def __init__(self, namespace: str, models: ArtifactStore):
        self.namespace = namespace
        self.models = models

    def load(self, name: str) -> DeployedModelStatus | None:
        obj = client.get("DeployedModel", self.namespace, name)
        return None if obj is None else DeployedModelStatus.model_validate(obj.get("status") or {})

    def update(self, name: str, change: Callable[[DeployedModelStatus], DeployedModelStatus]) -> DeployedModelStatus:
        for _ in range(CONFLICT_RETRIES):
            obj = client.get("DeployedModel", self.namespace, name)
            if obj is None:
                raise DeployedModelMissing(f"DeployedModel {self.namespace}/{name} not found")
            before = obj.get("status") or {}
            status = change(DeployedModelStatus.model_validate(before))
            if client.patch_status("DeployedModel", self.namespace, name, merge_patch(before, status.dump()),
                                   resource_version=(obj.get("metadata") or {}).get("resourceVersion")):
                return status
        raise RuntimeError(f"DeployedModel {self.namespace}/{name} kept changing under {CONFLICT_RETRIES} updates")
