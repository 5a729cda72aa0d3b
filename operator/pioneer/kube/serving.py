"""Serving targets: point what serves a DeployedModel at its current revision (level-triggered, idempotent).

A KServe InferenceService named in ``spec.serving.inferenceService`` gets ``spec.predictor.model.storageUri`` set to
the DeployedModel's ``status.modelUri`` whenever the two differ: after a promotion, after a rollback, and after an
operator restart that happened between the two writes.
"""

from __future__ import annotations

from typing import Any

KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")


def storage_uri(isvc: dict[str, Any]) -> str | None:
    return ((((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("storageUri"))


def storage_uri_patch(model_uri: str) -> dict[str, Any]:
    return {"spec": {"predictor": {"model": {"storageUri": model_uri}}}}


def sync_inference_service(namespace: str, name: str, model_uri: str) -> str | None:
    """Patch the InferenceService when it serves another URI; return the URI it served before (None: unchanged).
    Raises LookupError when there is no such InferenceService."""
    from kubernetes.client.exceptions import ApiException

    from pioneer.kube.client import custom

    group, version, plural = KSERVE
    try:
        isvc = custom().get_namespaced_custom_object(group, version, namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(f"InferenceService {namespace}/{name} not found") from None
        raise
    before = storage_uri(isvc)
    if before == model_uri:
        return None
    custom().patch_namespaced_custom_object(group, version, namespace, plural, name, storage_uri_patch(model_uri))
    return before or ""
