"""Trace collection from KServe's inference logger: CloudEvents in, one trace per inference out.

An InferenceService with ``logger: {mode: all, url: http://<pioneer>/cloudevents}`` posts two CloudEvents per
request, ``org.kubeflow.serving.inference.request`` and ``...response``, sharing one id. They are parsed with
the ``cloudevents`` SDK (binary or structured mode) and the first half to arrive waits in the trace store's
``logger_events`` table, so pairing survives a restart and works across collector replicas. When both halves
are there, one trace per input instance is written, with an id derived from the event id: a redelivered event
writes nothing twice.

Requests and responses in the V1 protocol (``{"instances": [...]}`` -> ``{"predictions": [...]}``) and the
Open Inference Protocol v2 (``{"inputs": [{"datatype": "BYTES", "data": [...]}]}`` -> ``{"outputs": [...]}``)
are understood. The revision that answered is the response's ``model_version`` when it has one (``pioneer
serve`` sets it), else the DeployedModel's current revision when the response arrived (recorded as such).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pioneer.api.models import Capture
from pioneer.traces import store as trace_store

REQUEST, RESPONSE = "org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"
KINDS = {REQUEST: "request", RESPONSE: "response"}

pending = sa.Table(
    "logger_events", trace_store.metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True, doc="request | response"),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("source", sa.Text),
    sa.Column("received_at", sa.String(32), nullable=False),
)


class BadEvent(ValueError):
    """Not a KServe inference-logger CloudEvent this collector understands; the message says why."""


@dataclass(frozen=True)
class LoggedEvent:
    id: str
    kind: str  # request | response
    data: dict[str, Any]
    source: str
    inference_service: str | None


def parse(headers: Mapping[str, str], body: bytes) -> LoggedEvent:
    """One CloudEvent from an HTTP request (binary or structured content mode), through the cloudevents SDK."""
    from cloudevents.core.bindings.http import HTTPMessage, from_http_event

    try:
        event = from_http_event(HTTPMessage(headers={k.lower(): v for k, v in headers.items()}, body=body))
    except Exception as exc:  # the SDK raises its own and json/value errors for a malformed event
        raise BadEvent(f"not a CloudEvent: {exc}") from None
    kind = KINDS.get(event.get_type())
    if kind is None:
        raise BadEvent(f"event type {event.get_type()!r} is neither {REQUEST} nor {RESPONSE}")
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            raise BadEvent("the event's data is not JSON") from None
    if not isinstance(data, dict):
        raise BadEvent("the event's data is not a JSON object")
    return LoggedEvent(event.get_id(), kind, data, event.get_source(), event.get_extension("inferenceservicename"))


def _text_of(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("text", "input", "inputs"):
            if isinstance(item.get(key), str):
                return item[key]
    raise BadEvent(f"an instance is not text: {str(item)[:80]}")


def request_texts(data: dict[str, Any]) -> list[str]:
    """The input texts of a V1 (``instances``) or OIP v2 (``inputs``, a BYTES tensor) request."""
    if isinstance(data.get("instances"), list):
        return [_text_of(x) for x in data["instances"]]
    if isinstance(data.get("inputs"), list) and data["inputs"]:
        tensor = data["inputs"][0]
        if isinstance(tensor, dict) and isinstance(tensor.get("data"), list):
            return [_text_of(x) for x in tensor["data"]]
        if isinstance(tensor, str):
            return [_text_of(x) for x in data["inputs"]]
    raise BadEvent('a request needs "instances" (V1) or "inputs" (Open Inference Protocol v2)')


def _answer(item: Any) -> str:
    if isinstance(item, str | int | float | bool):
        return str(item)
    if isinstance(item, dict):
        for key in ("label", "prediction", "entity_group"):
            if key in item:
                return str(item[key])
    if isinstance(item, list):
        return " ".join(_answer(x) for x in item)
    return json.dumps(item)[:1000]


def response_answers(data: dict[str, Any]) -> tuple[list[str], str | None]:
    """(one answer per instance, the model_version the server reported) of a V1 or OIP v2 response."""
    if isinstance(data.get("predictions"), list):
        return [_answer(x) for x in data["predictions"]], None
    outputs = data.get("outputs")
    if isinstance(outputs, list) and outputs:
        chosen = next((o for o in outputs if isinstance(o, dict) and o.get("name") in ("prediction", "label", "output_0")), outputs[0])
        if isinstance(chosen, dict) and isinstance(chosen.get("data"), list):
            version = data.get("model_version")
            return [_answer(x) for x in chosen["data"]], str(version) if version not in (None, "") else None
    raise BadEvent('a response needs "predictions" (V1) or "outputs" (Open Inference Protocol v2)')


def trace_rows(event_id: str, request: dict, response: dict, model: str, revision_now: Callable[[], int | None],
               capture: Capture, at: str, inference_service: str | None) -> list[dict[str, Any]]:
    """One trace per inference of a paired request and response. Nothing the capture policy switches off is kept."""
    texts = request_texts(request)
    answers, version = response_answers(response)
    if len(answers) != len(texts):
        raise BadEvent(f"the response has {len(answers)} answer(s) for {len(texts)} input(s)")
    revision, source = (version, "response") if version is not None else (revision_now(), "collector")
    base = event_id if len(event_id) <= 56 else hashlib.sha256(event_id.encode()).hexdigest()[:48]
    rows = []
    for i, (text, answer) in enumerate(zip(texts, answers)):
        meta = {"logger_event_id": event_id, "revision_from": source, "collected_by": "kserve-logger"}
        if inference_service:
            meta["inference_service"] = inference_service
        rows.append({"id": base if len(texts) == 1 else f"{base}-{i}", **capture.kept(text, answer, meta),
                     "model_id": f"{model}@{revision}" if revision is not None else model, "created_at": at})
    return rows


class Collector:
    """Pairs logger events in the trace store and writes their traces."""

    def __init__(self, engine: sa.Engine, model: str, revision_now: Callable[[], int | None], capture: Capture | None = None):
        self.engine, self.model, self.revision_now, self.capture = engine, model, revision_now, capture or Capture()
        pending.create(engine, checkfirst=True)

    def receive(self, event: LoggedEvent) -> dict[str, Any]:
        """Store one half; when the other is there, write the inference's traces and drop both halves."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        request_texts(event.data) if event.kind == "request" else response_answers(event.data)  # refuse a bad half at once
        with self.engine.begin() as conn:
            conn.execute(trace_store.insert_ignoring_duplicates(self.engine, pending),
                         [{"event_id": event.id, "kind": event.kind, "data": event.data, "source": event.source, "received_at": at}])
            halves = {r.kind: r.data for r in conn.execute(sa.select(pending.c.kind, pending.c.data).where(pending.c.event_id == event.id))}
        if len(halves) < 2:
            return {"id": event.id, "paired": False}
        rows = trace_rows(event.id, halves["request"], halves["response"], self.model, self.revision_now, self.capture, at,
                          event.inference_service)
        written = trace_store.add_new(self.engine, rows)
        with self.engine.begin() as conn:
            conn.execute(pending.delete().where(pending.c.event_id == event.id))
        return {"id": event.id, "paired": True, "traces": written}

    def unpaired(self, older_than: float) -> int:
        """Halves still waiting for their other half after ``older_than`` seconds (a logger that lost events)."""
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - older_than))
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(pending).where(pending.c.received_at < cutoff)).scalar() or 0)
