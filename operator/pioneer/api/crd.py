"""Generate CustomResourceDefinitions (structural OpenAPI v3 schemas) from the pydantic models.

``pioneer crds --out crds/`` writes them; ``tests/test_crds.py`` fails when ``crds/`` is stale.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pioneer import defaults as d
from pioneer.api import models as m

# name, plural, short names, printer columns
CRD_KINDS: dict[str, dict[str, Any]] = {
    "ModelAdaptation": {
        "model": m.ModelAdaptation,
        "plural": "modeladaptations",
        "short": ["madapt", "ma"],
        "columns": [
            ("Mode", "string", ".spec.mode"),
            ("Phase", "string", ".status.phase"),
            ("Baseline", "number", ".status.baselineScore"),
            ("Best", "number", ".status.bestScore"),
            ("Attempts", "integer", ".status.attempts.total"),
        ],
    },
    "TrainingAttempt": {
        "model": m.TrainingAttempt,
        "plural": "trainingattempts",
        "short": ["tattempt", "ta"],
        "columns": [
            ("Adaptation", "string", ".spec.adaptation"),
            ("Iteration", "integer", ".spec.iteration"),
            ("Parent", "string", ".spec.parent"),
            ("Phase", "string", ".status.phase"),
            ("Score", "number", ".status.score"),
            ("Regressions", "integer", ".status.regressions"),
        ],
    },
    "DeployedModel": {
        "model": m.DeployedModel,
        "plural": "deployedmodels",
        "short": ["dmodel", "dm"],
        "columns": [
            ("Revision", "integer", ".status.currentRevision"),
            ("Model", "string", ".status.modelUri"),
            ("Gate", "boolean", ".status.lastVerdict.passed"),
            ("Candidate", "string", ".status.lastVerdict.attempt"),
            ("Verdict", "string", ".status.lastVerdict.reason"),
            ("Pending", "string", ".status.pendingRevision.candidate.attempt"),
            ("Failures", "integer", ".status.improvement.failuresSinceRevision"),
            ("Repair", "string", ".status.improvement.inFlight"),
        ],
    },
}

# Cross-field rules the API server enforces with CEL, mirroring the pydantic validators.
CEL_RULES: dict[str, list[dict[str, str]]] = {
    "DataSource": [
        {
            "rule": "[has(self.path), has(self.s3), has(self.hub), has(self.traces), has(self.builtin)].filter(x, x).size() == 1",
            "message": "exactly one of path, s3, hub, traces, builtin must be set",
        }
    ],
    "Task": [
        {"rule": "self.metric != 'f1' || has(self.positiveLabel)", "message": "positiveLabel is required when metric is f1"}
    ],
}

_DROP = {"title", "examples"}


def _structural(node: Any, defs: dict[str, Any], name: str | None = None) -> Any:
    """Turn a pydantic JSON Schema (2020-12) node into a structural OpenAPI v3 schema node."""
    if not isinstance(node, dict):
        return node
    node = copy.deepcopy(node)
    if "$ref" in node:
        ref_name = node.pop("$ref").split("/")[-1]
        target = _structural(defs[ref_name], defs, ref_name)
        for key in ("description", "default"):
            if key in node:
                target[key] = node[key]
        return target
    for key in ("anyOf", "oneOf"):
        if key in node:
            every = node.pop(key)
            options = [o for o in every if o.get("type") != "null"]
            if len(options) == 1:
                inner = _structural(options[0], defs)
                inner.update({k: v for k, v in node.items() if k not in _DROP})
                node = inner
                if len(options) < len(every):
                    node["nullable"] = True
            else:
                node = {"x-kubernetes-preserve-unknown-fields": True, **{k: v for k, v in node.items() if k not in _DROP}}
            break
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            node[bound] = node.pop(key)
            node[key] = True
    if isinstance(node.get("default"), (dict, list)):
        node.pop("default")
    if node.get("default") is None:
        node.pop("default", None)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {p: _structural(v, defs) for p, v in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and "enum" in out:
        out["type"] = "string"
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if name in CEL_RULES:
        out["x-kubernetes-validations"] = CEL_RULES[name]
    return out


def openapi_schema(model: type[m.ApiModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})
    props = schema["properties"]
    root = {
        "type": "object",
        "description": schema.get("description", ""),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "Versioned schema of this object: pioneer.dev/v1alpha1."},
            "kind": {"type": "string", "description": "The REST resource this object represents."},
            "metadata": {"type": "object", "description": "Standard object metadata (name, namespace, labels, ...)."},
            "spec": _structural(props["spec"], defs),
            "status": _structural(props["status"], defs),
        },
    }
    root["properties"]["status"].pop("nullable", None)
    return root


def crd(kind: str) -> dict[str, Any]:
    info = CRD_KINDS[kind]
    plural = info["plural"]
    columns = [{"name": n, "type": t, "jsonPath": p} for n, t, p in info["columns"]]
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{d.API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "pioneer"},
            "annotations": {"pioneer.dev/generated-by": "pioneer crds (from pioneer.api.models)"},
        },
        "spec": {
            "group": d.API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": info["short"],
                "categories": ["pioneer"],
            },
            "versions": [
                {
                    "name": d.API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(info["model"])},
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    files = {}
    for kind, info in CRD_KINDS.items():
        text = "# Generated by `pioneer crds` from pioneer.api.models. Do not edit.\n"
        text += yaml.safe_dump(crd(kind), sort_keys=False, width=120)
        files[f"{d.API_GROUP}_{info['plural']}.yaml"] = text
    return files


def write_all(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        (out / name).write_text(text)
        written.append(out / name)
    return written
