"""Load and validate Pioneer resources from YAML, with errors that name the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pioneer.api.models import API_VERSION, KINDS, ApiModel

MAX_SPEC_BYTES = 1 << 20  # a spec is configuration, not data
MAX_SPEC_DEPTH = 64


class _BoundedLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases (no 'billion laughs' expansion) and nesting deeper than MAX_SPEC_DEPTH."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, "YAML aliases (*name) are not allowed in a spec", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                raise yaml.constructor.ConstructorError(None, None, f"nested deeper than {MAX_SPEC_DEPTH} levels",
                                                        self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml_documents(text: str) -> list[Any]:
    """Every document of a YAML text, loaded safely and within bounds (raises yaml.YAMLError)."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise yaml.YAMLError(f"larger than {MAX_SPEC_BYTES} bytes")
    loader = _BoundedLoader(text)
    try:
        docs = []
        while loader.check_data():
            docs.append(loader.get_data())
        return docs
    finally:
        loader.dispose()


class SpecError(ValueError):
    """A resource is invalid. ``problems`` lists 'field.path: message' lines."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid\n" + "\n".join(f"  {p}" for p in problems))


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith("function-") or part in ("str", "int"):
            continue
        else:
            path += ("." if path else "") + str(part)
    return path or "(root)"


def _format(exc: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        field = _field_path(err["loc"])
        problems.append(f"{prefix}{field}: {msg}")
    return problems


def parse_resource(doc: Any, source: str = "<input>") -> ApiModel:
    """Validate one decoded YAML/JSON document as a Pioneer resource."""
    if not isinstance(doc, dict):
        raise SpecError(source, ["(root): expected a mapping with apiVersion, kind, metadata and spec"])
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version != API_VERSION:
        raise SpecError(source, [f"apiVersion: expected {API_VERSION!r}, got {api_version!r}"])
    if kind not in KINDS:
        raise SpecError(source, [f"kind: expected one of {sorted(KINDS)}, got {kind!r}"])
    try:
        return KINDS[kind].model_validate(doc)
    except ValidationError as exc:
        name = (doc.get("metadata") or {}).get("name", "?")
        raise SpecError(f"{source} ({kind} {name})", _format(exc)) from None


def load_resources(path: str | Path) -> list[ApiModel]:
    """All Pioneer resources in a (multi-document) YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [f"(file): cannot read: {exc.strerror}"]) from None
    try:
        docs = [doc for doc in load_yaml_documents(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"(yaml): {exc}"]) from None
    if not docs:
        raise SpecError(str(path), ["(file): no YAML documents"])
    return [parse_resource(doc, f"{path}#{i}" if len(docs) > 1 else str(path)) for i, doc in enumerate(docs)]


def deprecations(resource: ApiModel) -> list[str]:
    """'field.path: message' for each deprecated field a valid resource still uses (``pioneer validate`` prints them; the
    operator records them as Warning Events). The resource works as it is; these say what to rename."""
    from pydantic import BaseModel

    from pioneer.api.models import DEPRECATED_FIELDS, DeployedModel, Hyperparameters

    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Hyperparameters):
            found.extend(f"{path}.{name}: {DEPRECATED_FIELDS[name]}" for name in node._deprecated)
        if isinstance(node, BaseModel):
            for name, info in type(node).model_fields.items():
                walk(getattr(node, name), f"{path}.{info.alias or name}" if path else (info.alias or name))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(resource, "")
    if isinstance(resource, DeployedModel) and resource.spec.improvement is not None:
        hp = (resource.spec.improvement.template or {}).get("hyperparameters") or {}
        if isinstance(hp, dict) and "nerBackend" in hp:
            found.append(f"spec.improvement.template.hyperparameters.nerBackend: {DEPRECATED_FIELDS['nerBackend']}")
    return found
