"""The few Kubernetes API calls the operator makes (the `kubernetes` client), idempotent where it matters."""

from __future__ import annotations

import functools
from typing import Any

from pioneer import defaults as d

GROUP, VERSION = d.API_GROUP, d.API_VERSION
USER_AGENT = "pioneer-operator/0.1"
PLURALS = {"ModelAdaptation": "modeladaptations", "TrainingAttempt": "trainingattempts", "DeployedModel": "deployedmodels"}


@functools.lru_cache(maxsize=1)
def _api_client():
    import os

    import kubernetes

    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        # read KUBECONFIG now: the kubernetes package reads it once, at import time
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    api = kubernetes.client.ApiClient(configuration)
    api.user_agent = USER_AGENT  # the operator's own calls are recognisable in audit logs
    return api


def reset() -> None:
    """Forget the cached configuration (tests point the operator at a new API server)."""
    _api_client.cache_clear()


def custom():
    import kubernetes

    return kubernetes.client.CustomObjectsApi(_api_client())


def batch():
    import kubernetes

    return kubernetes.client.BatchV1Api(_api_client())


def apps():
    import kubernetes

    return kubernetes.client.AppsV1Api(_api_client())


def core():
    import kubernetes

    return kubernetes.client.CoreV1Api(_api_client())


def serialized(obj: Any) -> dict[str, Any]:
    """A kubernetes client model as the plain JSON dict the API server sent."""
    return _api_client().sanitize_for_serialization(obj)


def secret_value(namespace: str, name: str, key: str) -> str | None:
    """One key of a Secret, decoded; None when the Secret or the key is missing (the value never leaves the process)."""
    import base64

    import kubernetes
    from kubernetes.client.exceptions import ApiException

    try:
        secret = kubernetes.client.CoreV1Api(_api_client()).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if _is(exc, 404):
            return None
        raise
    raw = (secret.data or {}).get(key)
    return base64.b64decode(raw).decode() if raw else None


def _is(exc: Exception, status: int) -> bool:
    return getattr(exc, "status", None) == status


def get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return custom().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
    except ApiException as exc:
        if _is(exc, 404):
            return None
        raise


def list_by_label(kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
    return custom().list_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], label_selector=selector)["items"]


def create(kind: str, namespace: str, body: dict[str, Any]) -> bool:
    """Create unless it exists already; True when this call created it."""
    from kubernetes.client.exceptions import ApiException

    try:
        custom().create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], body)
        return True
    except ApiException as exc:
        if _is(exc, 409):
            return False
        raise


def patch_status(kind: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None) -> bool:
    """Patch the status subresource. With ``resource_version`` the patch applies only to that version of the
    object (optimistic concurrency): False when the API server answers 409 Conflict."""
    from kubernetes.client.exceptions import ApiException

    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        custom().patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURALS[kind], name, body)
        return True
    except ApiException as exc:
        if resource_version and _is(exc, 409):
            return False
        raise


def annotate(kind: str, namespace: str, name: str, annotations: dict[str, str]) -> None:
    """Merge-patch annotations of a Pioneer resource (how a person approves a pending revision)."""
    custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name, {"metadata": {"annotations": annotations}})


def create_job(namespace: str, body: dict[str, Any]) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        batch().create_namespaced_job(namespace, body)
        return True
    except ApiException as exc:
        if _is(exc, 409):
            return False
        raise


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return _api_client().sanitize_for_serialization(batch().read_namespaced_job(name, namespace))
    except ApiException as exc:
        if _is(exc, 404):
            return None
        raise
