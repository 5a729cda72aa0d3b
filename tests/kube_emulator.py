"""A Kubernetes API for tests: kmock's KubernetesEmulator served on a loopback port from a background thread.

The real Kopf runtime (kopf.testing.KopfRunner) and the `kubernetes` client talk to it over HTTP, as
they would to a kube-apiserver, through a kubeconfig file.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import re
import threading
import uuid
from pathlib import Path

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml

CRDS = Path(__file__).resolve().parent.parent / "crds"
VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}
RESOURCES = {
    "pioneer.dev/v1alpha1/modeladaptations": {"namespaced": True, "kind": "ModelAdaptation", "subresources": {"status"}, "verbs": VERBS},
    "pioneer.dev/v1alpha1/trainingattempts": {"namespaced": True, "kind": "TrainingAttempt", "subresources": {"status"}, "verbs": VERBS},
    "pioneer.dev/v1alpha1/deployedmodels": {"namespaced": True, "kind": "DeployedModel", "subresources": {"status"}, "verbs": VERBS},
    "batch/v1/jobs": {"namespaced": True, "kind": "Job", "subresources": {"status"}, "verbs": VERBS},
    "v1/events": {"namespaced": True, "kind": "Event", "verbs": VERBS},
    "v1/secrets": {"namespaced": True, "kind": "Secret", "verbs": VERBS},
    "serving.kserve.io/v1beta1/inferenceservices": {"namespaced": True, "kind": "InferenceService", "subresources": {"status"}, "verbs": VERBS},
    "v1/namespaces": {"namespaced": False, "kind": "Namespace", "verbs": VERBS},
    "apps/v1/deployments": {"namespaced": True, "kind": "Deployment", "subresources": {"status"}, "verbs": VERBS},
    "v1/services": {"namespaced": True, "kind": "Service", "verbs": VERBS},
}
# what the Helm chart installs, for `helm template | kubectl apply --dry-run=server` (tests/test_chart.py)
CHART_RESOURCES = {
    "v1/serviceaccounts": {"namespaced": True, "kind": "ServiceAccount", "verbs": VERBS},
    "rbac.authorization.k8s.io/v1/clusterroles": {"namespaced": False, "kind": "ClusterRole", "verbs": VERBS},
    "rbac.authorization.k8s.io/v1/clusterrolebindings": {"namespaced": False, "kind": "ClusterRoleBinding", "verbs": VERBS},
    "rbac.authorization.k8s.io/v1/roles": {"namespaced": True, "kind": "Role", "verbs": VERBS},
    "rbac.authorization.k8s.io/v1/rolebindings": {"namespaced": True, "kind": "RoleBinding", "verbs": VERBS},
    "monitoring.coreos.com/v1/servicemonitors": {"namespaced": True, "kind": "ServiceMonitor", "verbs": VERBS},
    "monitoring.coreos.com/v1/prometheusrules": {"namespaced": True, "kind": "PrometheusRule", "verbs": VERBS},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {"namespaced": False, "kind": "CustomResourceDefinition", "verbs": VERBS},
}


def _requirements(selector: str) -> list[str]:
    """Split a label selector at the commas that are not inside ``in (a, b)``."""
    out, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [r for r in [*out, cur.strip()] if r]


def label_selector_matches(selector: str | None, labels: dict[str, str] | None) -> bool:
    """Kubernetes label selector semantics: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``."""
    labels = labels or {}
    for req in _requirements(selector or ""):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)", req):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (labels.get(key) in values) != (op == "in") or (op == "in" and key not in labels):
                return False
        elif "!=" in req:
            key, value = (x.strip() for x in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (x.strip() for x in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def field_selector_matches(selector: str | None, obj: dict) -> bool:
    """Field selectors: ``path=value``, ``path==value``, ``path!=value`` over dotted paths (``metadata.name``)."""
    for req in _requirements(selector or ""):
        negate = "!=" in req
        path, value = (x.strip() for x in req.replace("!=", "=").replace("==", "=").split("=", 1))
        cur = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur) if cur is not None else "") == value if negate else (str(cur) if cur is not None else "") != value:
            return False
    return True


def selected(request, obj: dict) -> bool:
    return (label_selector_matches(request.params.get("labelSelector"), (obj.get("metadata") or {}).get("labels"))
            and field_selector_matches(request.params.get("fieldSelector"), obj))


@attrs.frozen
class Conflict(kmock.KubernetesError):
    """What a kube-apiserver answers when a write names an older resourceVersion than the stored one."""

    status: int = 409
    reason: str = "Conflict"
    message: str = "the object has been modified; please apply your changes to the latest version and try again"


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
        for entry in payload.get("resources", []):  # kmock repeats the plural as singular and gives subresources every verb
            if "/" in entry["name"]:
                entry.update(singularName="", verbs=["get", "patch", "update"], shortNames=[], categories=[])
                continue
            names = self.crd_names.get(entry["name"], {})
            entry["singularName"] = names.get("singular", entry["kind"].lower())
            entry["shortNames"] = names.get("shortNames", [])
            entry["categories"] = names.get("categories", [])
        return payload

    schemas: dict[str, dict] = {}  # plural -> openAPIV3Schema of the CRDs served (set per instance)

    async def _serve_list(self, request):
        """A list honours labelSelector and fieldSelector (kmock returns every object)."""
        payload = await super()._serve_list(request)
        payload["items"] = [o for o in payload["items"] if selected(request, o)]
        return payload

    async def _serve_watch(self, request):
        """A watch stream honours the selectors too."""
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or selected(request, event.get("object") or {}):
                yield event

    def _stored(self, request) -> dict | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _has_status(self, request) -> bool:
        info = self.resources.get(f"{request.resource.group}/{request.resource.version}/{request.resource.plural}".lstrip("/"))
        return bool(info and "status" in (getattr(info, "subresources", None) or ()))

    def _admit_update(self, request, data):
        """What a kube-apiserver does to a patch before applying it: a stale resourceVersion is a 409; with a status
        subresource, a patch of the object cannot change its status and a patch of /status changes nothing else;
        a spec change bumps metadata.generation; fields the CRD schema does not know are pruned."""
        stored = self._stored(request)
        if stored is None:
            return data
        if isinstance(data, dict):
            wanted = (data.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != stored["metadata"].get("resourceVersion"):
                raise Conflict()
        if self._has_status(request):
            on_status = request.subresource == "status"
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if (k == "status") == on_status or k == "metadata"}
                if on_status and "metadata" in data:
                    data["metadata"] = {k: v for k, v in data["metadata"].items() if k == "resourceVersion"}
            elif isinstance(data, list):
                data = [op for op in data if op.get("path", "").startswith("/status") == on_status
                        or op.get("path", "").startswith("/metadata/resourceVersion")]
        changes_spec = (isinstance(data, dict) and "spec" in data) or (
            isinstance(data, list) and any(op.get("path", "").startswith("/spec") for op in data))
        if changes_spec and request.subresource != "status":
            generation = int(stored["metadata"].get("generation") or 1) + 1
            if isinstance(data, dict):
                data.setdefault("metadata", {})["generation"] = generation
            else:
                data.append({"op": "add", "path": "/metadata/generation", "value": generation})
        schema = self.schemas.get(request.resource.plural)
        if schema is not None and isinstance(data, dict):
            data = prune(data, schema, root=True)
        return data

    openapi: dict[str, dict] = {}  # "apis/<group>/<version>" -> OpenAPI v3 document built from the CRDs
    crd_names: dict[str, dict] = {}  # plural -> the CRD's spec.names (singular, shortNames, categories)

    calls: list = []  # (user agent, verb, apiGroup, resource[/subresource]) of every resource request (set per instance)

    def _record(self, request) -> None:
        method = str(getattr(request.method, "value", request.method)).upper()
        if method == "GET":
            verb = "watch" if request.params.get("watch") in ("true", "1") else ("get" if request.name else "list")
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete" if request.name else "deletecollection"}.get(method, method.lower())
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        self.calls.append((request.headers.get("User-Agent", ""), verb, request.resource.group, resource))

    async def _handle(self, request):
        """kmock keeps every request it has served and matches each new one to a reaction by filtering that whole
        history: the same work again for every request (a test of minutes, thousands of requests, spent a quarter of
        its process's time there). Nothing asserts on kmock's history (`calls` records what the tests check), so a
        request leaves it once answered: what remains is the requests in flight, all that matching needs."""
        try:
            return await self._serve(request)
        finally:
            index = next((i for i, r in enumerate(self._requests) if r is request), None)
            if index is not None:
                del self._requests[index]

    async def _serve(self, request):
        path = request.url.path
        if request.resource is not None and request.resource.plural:
            self._record(request)
        if path == "/openapi/v3":  # what `kubectl explain` reads: an index, then one document per group version
            return aiohttp.web.json_response({"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={abs(hash(gv))}"}
                                                        for gv in self.openapi}})
        if path.startswith("/openapi/v3/"):
            doc = self.openapi.get(path.removeprefix("/openapi/v3/"))
            return aiohttp.web.json_response(doc) if doc else aiohttp.web.json_response({"message": "not found"}, status=404)
        data = request.data
        if request.resource is not None and request.action == kmock.action.UPDATE and request.name is not None:
            data = self._admit_update(request, data)
            object.__setattr__(request, "data", data)
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(data, dict):
            schema = self.schemas.get(request.resource.plural)
            if schema is not None:
                data = default(prune(data, schema, root=True), schema)
            if self._has_status(request):  # status is written through /status only, never on create
                data = {k: v for k, v in data.items() if k != "status"}
            object.__setattr__(request, "data", data)
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


def prune(obj, schema: dict, root: bool = False):
    """Drop what the structural schema does not declare (as a kube-apiserver prunes CRD objects)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or not isinstance(obj, (dict, list)):
        return obj
    if isinstance(obj, list):
        items = schema.get("items") or {}
        return [prune(v, items) for v in obj]
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    if props is None and extra is None:
        return obj if not schema.get("type") == "object" or root else {}
    out = {}
    for k, v in obj.items():
        if root and k in ("apiVersion", "kind", "metadata"):
            out[k] = v
        elif props is not None and k in props:
            out[k] = prune(v, props[k])
        elif isinstance(extra, dict):
            out[k] = prune(v, extra)
        elif extra is True:
            out[k] = v
    return out


def default(obj, schema: dict):
    """Fill the schema's defaults into an object, where the field is absent (as a kube-apiserver defaults CRDs)."""
    if not isinstance(obj, dict):
        return obj
    for k, sub in (schema.get("properties") or {}).items():
        if k not in obj and "default" in sub:
            obj[k] = sub["default"]
        if isinstance(obj.get(k), dict):
            default(obj[k], sub)
        elif isinstance(obj.get(k), list) and isinstance(sub.get("items"), dict):
            for item in obj[k]:
                default(item, sub["items"])
    return obj


def crd_schemas(folder: Path = CRDS) -> dict[str, dict]:
    """plural -> openAPIV3Schema of every CRD in crds/ (what the emulator prunes and defaults with)."""
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["plural"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


def crd_names(folder: Path = CRDS) -> dict[str, dict]:
    return {(crd := yaml.safe_load(p.read_text()))["spec"]["names"]["plural"]: crd["spec"]["names"] for p in sorted(folder.glob("*.yaml"))}


def openapi_documents(folder: Path = CRDS) -> dict[str, dict]:
    """One OpenAPI v3 document per group version, as a kube-apiserver publishes for its CRDs: each kind's schema under
    its reversed-group name, tagged with its group-version-kind (how kubectl finds it)."""
    docs: dict[str, dict] = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            gv = f"apis/{group}/{version['name']}"
            doc = docs.setdefault(gv, {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
                                       "paths": {}, "components": {"schemas": {}}})
            name = ".".join(reversed(group.split("."))) + f".{version['name']}.{kind}"
            gvk = {"group": group, "kind": kind, "version": version["name"]}
            doc["components"]["schemas"][name] = {**version["schema"]["openAPIV3Schema"], "x-kubernetes-group-version-kind": [gvk]}
            ref = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}
            plural = crd["spec"]["names"]["plural"]
            item = f"/{gv}/namespaces/{{namespace}}/{plural}/{{name}}"
            doc["paths"][item] = {"get": {"operationId": f"read{kind}", "responses": ref, "x-kubernetes-action": "get",
                                          "x-kubernetes-group-version-kind": gvk}}
            doc["paths"][f"{item}/status"] = {"get": {"operationId": f"read{kind}Status", "responses": ref,
                                                      "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk}}
    return docs


class Emulator:
    """``with Emulator() as api: api.url, api.write_kubeconfig(path)``."""

    def __init__(self, resources=RESOURCES, server=None):
        self.resources = resources
        self.server = server  # another emulator class (kmock's own, to show what it gets wrong)
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
        async with (self.server or ApiServer)() as emulator, kmock.Server(emulator) as server:
            if isinstance(emulator, ApiServer):
                emulator.schemas, emulator.openapi, emulator.crd_names = crd_schemas(), openapi_documents(), crd_names()
                emulator.calls = []
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
