"""A Kubernetes API for tests: kmock's KubernetesEmulator served on a loopback port from a background thread.

The real Kopf runtime (kopf.testing.KopfRunner) and the `kubernetes` client talk to it over HTTP, as
they would to a kube-apiserver, through a kubeconfig file.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import uuid
from pathlib import Path

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml

VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}
RESOURCES = {
    "pioneer.dev/v1alpha1/modeladaptations": {"namespaced": True, "kind": "ModelAdaptation", "subresources": {"status"}, "verbs": VERBS},
    "pioneer.dev/v1alpha1/trainingattempts": {"namespaced": True, "kind": "TrainingAttempt", "subresources": {"status"}, "verbs": VERBS},
    "pioneer.dev/v1alpha1/deployedmodels": {"namespaced": True, "kind": "DeployedModel", "subresources": {"status"}, "verbs": VERBS},
    "batch/v1/jobs": {"namespaced": True, "kind": "Job", "subresources": {"status"}, "verbs": VERBS},
    "v1/events": {"namespaced": True, "kind": "Event", "verbs": VERBS},
    "v1/namespaces": {"namespaced": False, "kind": "Namespace", "verbs": VERBS},
}
# what the Helm chart installs, for `helm template | kubectl apply --dry-run=server` (tests/test_chart.py)
CHART_RESOURCES = {
    "v1/serviceaccounts": {"namespaced": True, "kind": "ServiceAccount", "verbs": VERBS},
    "v1/services": {"namespaced": True, "kind": "Service", "verbs": VERBS},
    "apps/v1/deployments": {"namespaced": True, "kind": "Deployment", "subresources": {"status"}, "verbs": VERBS},
    "rbac.authorization.k8s.io/v1/clusterroles": {"namespaced": False, "kind": "ClusterRole", "verbs": VERBS},
    "rbac.authorization.k8s.io/v1/clusterrolebindings": {"namespaced": False, "kind": "ClusterRoleBinding", "verbs": VERBS},
    "rbac.authorization.k8s.io/v1/roles": {"namespaced": True, "kind": "Role", "verbs": VERBS},
    "rbac.authorization.k8s.io/v1/rolebindings": {"namespaced": True, "kind": "RoleBinding", "verbs": VERBS},
    "monitoring.coreos.com/v1/servicemonitors": {"namespaced": True, "kind": "ServiceMonitor", "verbs": VERBS},
    "monitoring.coreos.com/v1/prometheusrules": {"namespaced": True, "kind": "PrometheusRule", "verbs": VERBS},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {"namespaced": False, "kind": "CustomResourceDefinition", "verbs": VERBS},
}


@attrs.frozen
class PatchTestFailed(kmock.KubernetesError):
    """What a kube-apiserver answers when a JSON patch's ``test`` op fails (Kopf then retries later)."""

    status: int = 422
    reason: str = "Invalid"
    message: str = "the object has been modified; the JSON patch test operation failed"


class ApiServer(kmock.KubernetesEmulator):
    """The emulator plus what a kube-apiserver adds on writes and Kopf relies on: uid, resourceVersion,
    generation, creationTimestamp, and names for ``generateName`` (kmock leaves these to subclasses)."""

    _versions = itertools.count(1)

    async def _serve_version(self, request):
        """Discovery of one group version; the core group's is 'v1', not '/v1' as kmock writes it (kubectl then
        finds no core kinds at all)."""
        payload = await super()._serve_version(request)
        if request.resource.group == "":
            payload["groupVersion"] = request.resource.version
        return payload

    async def _handle(self, request):
        data = request.data
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta["generation"] = 1
            meta["resourceVersion"] = str(next(self._versions))
            if request.params.get("dryRun") == "All":  # answered as created, never stored
                return aiohttp.web.json_response(data, status=201)
        elif request.resource is not None and request.action == kmock.action.UPDATE:
            version = str(next(self._versions))
            if isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(data, list):
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchTestFailed() from None


class Emulator:
    """``with Emulator() as api: api.url, api.write_kubeconfig(path)``."""

    def __init__(self, resources=RESOURCES):
        self.resources = resources
        self._ready = threading.Event()

    def __enter__(self) -> Emulator:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True, name="kmock")
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("kmock emulator did not start")
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with ApiServer() as emulator, kmock.Server(emulator) as server:
            for key, info in self.resources.items():
                emulator.resources[key] = info
            self.emulator, self.url = emulator, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": "default"}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path
