"""Serving targets: point what serves a DeployedModel at its current revision (level-triggered, idempotent).

* A KServe InferenceService named in ``spec.serving.inferenceService`` gets ``spec.predictor.model.storageUri`` set
  to the DeployedModel's ``status.modelUri`` whenever the two differ.
* ``spec.serving.deployment``: a Deployment + Service running ``pioneer serve`` pinned to the current revision (its
  number, model URI and content hash as container environment), owned by the DeployedModel. A revision change
  patches that environment, so the Deployment rolls: maxUnavailable 0 and a readiness probe on
  ``/v2/health/ready`` (ready only once the new revision is loaded and verified) keep it answering throughout.

Both are synced after a promotion, after a rollback, and when the operator resumes (mending a restart that
happened between the two writes).
"""

from __future__ import annotations

import os
from typing import Any

from pioneer import defaults as d
from pioneer.api.models import Capture, ServedDeployment

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


SERVE_LABEL = "app.kubernetes.io/component"


def server_env(revision: int, model_uri: str, model_sha256: str | None) -> list[dict[str, str]]:
    """What pins a `pioneer serve` pod to one revision (changing it rolls the Deployment)."""
    return [{"name": "PIONEER_SERVE_REVISION", "value": str(revision)}, {"name": "PIONEER_SERVE_MODEL_URI", "value": model_uri},
            {"name": "PIONEER_SERVE_MODEL_SHA256", "value": model_sha256 or ""}]


def deployment_manifest(name: str, target: ServedDeployment, capture: Capture, traces: str, revision: int, model_uri: str,
                        model_sha256: str | None) -> dict[str, Any]:
    """The `pioneer serve` Deployment of DeployedModel ``name``, at one revision. Pure."""
    labels = {"app.kubernetes.io/name": "pioneer-serve", "app.kubernetes.io/instance": name, "app.kubernetes.io/part-of": "pioneer",
              SERVE_LABEL: "server", "pioneer.dev/deployed-model": name}
    args = ["serve", name, "--host", "0.0.0.0", "--port", str(target.port), "--db", traces,
            "--capture-inputs" if capture.inputs else "--no-capture-inputs",
            "--capture-outputs" if capture.outputs else "--no-capture-outputs"]
    probe = {"httpGet": {"path": "/v2/health/ready", "port": target.port}, "periodSeconds": 2, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": "server", "image": target.image or os.environ.get("PIONEER_SERVE_IMAGE", d.SERVE_IMAGE),
        "command": ["pioneer"], "args": args, "ports": [{"name": "http", "containerPort": target.port}],
        "env": [*server_env(revision, model_uri, model_sha256), {"name": "HF_HUB_OFFLINE", "value": "1"}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": target.port}, "periodSeconds": 10},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if target.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": target.credentials_secret}}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": target.replicas, "selector": {"matchLabels": {"app.kubernetes.io/instance": name, SERVE_LABEL: "server"}},
            # a new pod is ready (its revision loaded and verified) before an old one goes: no downtime
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "minReadySeconds": 2,
            "template": {"metadata": {"labels": labels}, "spec": {
                "containers": [container], "terminationGracePeriodSeconds": d.SERVE_GRACEFUL_SHUTDOWN_SECONDS + 5,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}}},
        },
    }


def service_manifest(name: str, target: ServedDeployment) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "pioneer-serve", "app.kubernetes.io/instance": name}},
            "spec": {"selector": {"app.kubernetes.io/instance": name, SERVE_LABEL: "server"},
                     "ports": [{"name": "http", "port": target.port, "targetPort": target.port}]}}


def served_revision(deployment: dict[str, Any]) -> str | None:
    """The revision a `pioneer serve` Deployment is pinned to."""
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    env = {e.get("name"): e.get("value") for e in (containers[0].get("env") or [])} if containers else {}
    return env.get("PIONEER_SERVE_REVISION")


def sync_deployment(namespace: str, owner: dict[str, Any], manifest: dict[str, Any], service: dict[str, Any]) -> str | None:
    """Create the Deployment and Service (owned by ``owner``), or patch the Deployment's pod template when it serves
    another revision or configuration. Returns 'created', 'updated' or None (unchanged)."""
    import kopf
    from kubernetes.client.exceptions import ApiException

    from pioneer.kube.client import apps, core

    name = manifest["metadata"]["name"]
    kopf.adopt(manifest, owner=owner)
    kopf.adopt(service, owner=owner)
    try:
        current = apps().read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        apps().create_namespaced_deployment(namespace, manifest)
        try:
            core().create_namespaced_service(namespace, service)
        except ApiException as svc_exc:
            if svc_exc.status != 409:
                raise
        return "created"
    from pioneer.kube.client import serialized

    before = serialized(current)
    want = manifest["spec"]["template"]["spec"]["containers"][0]
    have = ((before.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", [{}])[0]
    if all(have.get(k) == want.get(k) for k in ("image", "args", "env", "envFrom")) and \
            (before.get("spec") or {}).get("replicas") == manifest["spec"]["replicas"]:
        return None
    apps().patch_namespaced_deployment(name, namespace, {"spec": {"replicas": manifest["spec"]["replicas"],
                                                                  "template": manifest["spec"]["template"]}})
    return "updated"
