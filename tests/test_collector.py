"""Trace collection from KServe's inference logger: a real collector process, CloudEvents built by the cloudevents
SDK and posted by a real HTTP client, exactly as an InferenceService with `logger: {mode: all}` sends them."""

from __future__ import annotations

import sys

import httpx
import pytest
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from conftest import start_server
from pioneer import deploy
from pioneer.api.models import Capture, DeployedModelStatus, Revision
from pioneer.store import open_store
from pioneer.traces.collector import REQUEST, RESPONSE, Collector, parse
from pioneer.traces.store import connect, iter_traces


def event(kind: str, event_id: str, data: dict, structured: bool = False) -> tuple[dict, bytes]:
    ce = CloudEvent(attributes={"type": REQUEST if kind == "request" else RESPONSE, "source": "http://localhost:9081/",
                                "id": event_id, "specversion": "1.0", "datacontenttype": "application/json",
                                "inferenceservicename": "lights", "namespace": "ml", "component": "predictor"}, data=data)
    message = to_structured_event(ce) if structured else to_binary_event(ce)
    return dict(message.headers), message.body


@pytest.fixture
def collector(tmp_path):
    """`pioneer serve --collect-only` for DeployedModel `lights`, whose revision 3 is served (by KServe)."""
    artifacts = tmp_path / "pioneer-artifacts"
    first = Revision(revision=3, model_uri="s3://bucket/models/sha256-x", model_sha256="x")
    deploy.save(open_store(str(artifacts)), "lights", DeployedModelStatus(revisions=[first], current_revision=3, model_uri=first.model_uri))

    def start():
        return start_server(sys.executable, tmp_path, artifacts, "lights", "--collect-only")

    proc, url = start()
    running = {"proc": proc}
    yield tmp_path, url, running, start
    running["proc"].terminate()
    running["proc"].wait(15)


def post(url: str, kind: str, event_id: str, data: dict, structured: bool = False) -> httpx.Response:
    headers, body = event(kind, event_id, data, structured)
    return httpx.post(f"{url}/cloudevents", content=body, headers=headers, timeout=30)


def stored(folder) -> dict[str, dict]:
    return {t["id"]: t for t in iter_traces(connect(folder / "traces.db"))}


def test_a_request_and_its_response_become_one_trace_with_the_revision_that_answered(collector):
    folder, url, _, _ = collector
    first = post(url, "request", "ev-1", {"instances": ["turn on the kitchen light"]})
    assert first.status_code == 202 and first.json() == {"id": "ev-1", "paired": False}
    assert stored(folder) == {}
    second = post(url, "response", "ev-1", {"predictions": ["HassTurnOn"]})
    assert second.status_code == 202 and second.json()["traces"] == 1
    trace = stored(folder)["ev-1"]
    assert trace["input"] == "turn on the kitchen light" and trace["prediction"] == "HassTurnOn"
    assert trace["model_id"] == "lights@3" and trace["meta"]["revision_from"] == "collector"
    assert trace["meta"]["inference_service"] == "lights" and "verdict" not in trace  # judged later


def test_halves_pair_in_either_order_in_both_content_modes_and_v2_responses_name_their_revision(collector):
    folder, url, _, _ = collector
    assert post(url, "response", "ev-2", {"model_name": "lights", "model_version": "2", "outputs": [
        {"name": "prediction", "datatype": "BYTES", "shape": [2], "data": ["HassTurnOff", "HassLightSet"]}]}, structured=True).status_code == 202
    assert post(url, "request", "ev-2", {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [2],
                                                     "data": ["lights off", "dim the lamp to 20%"]}]}, structured=True).json()["traces"] == 2
    traces = stored(folder)
    assert {k: (v["input"], v["prediction"], v["model_id"]) for k, v in traces.items()} == {
        "ev-2-0": ("lights off", "HassTurnOff", "lights@2"), "ev-2-1": ("dim the lamp to 20%", "HassLightSet", "lights@2")}
    assert traces["ev-2-0"]["meta"]["revision_from"] == "response"


def test_a_redelivered_event_writes_nothing_twice(collector):
    folder, url, _, _ = collector
    post(url, "request", "ev-3", {"instances": ["lights on"]})
    post(url, "response", "ev-3", {"predictions": ["HassTurnOn"]})
    again = post(url, "response", "ev-3", {"predictions": ["HassTurnOn"]})
    post(url, "request", "ev-3", {"instances": ["lights on"]})
    assert again.status_code == 202 and len(stored(folder)) == 1


def test_the_first_half_survives_a_collector_restart(collector):
    folder, url, running, start = collector
    post(url, "request", "ev-4", {"instances": ["close the blinds"]})
    running["proc"].terminate()
    running["proc"].wait(15)
    running["proc"], url = start()
    assert post(url, "response", "ev-4", {"predictions": ["HassTurnOff"]}).json()["paired"] is True
    assert stored(folder)["ev-4"]["input"] == "close the blinds"


def test_anything_but_a_logger_event_gets_a_400_with_the_reason(collector):
    folder, url, _, _ = collector
    assert httpx.post(f"{url}/cloudevents", content=b"{}", headers={"content-type": "application/json"}).status_code == 400
    headers, body = event("request", "ev-5", {"instances": ["x"]})
    headers["ce-type"] = "com.example.other"
    r = httpx.post(f"{url}/cloudevents", content=body, headers=headers)
    assert r.status_code == 400 and "neither" in r.json()["error"]
    r = post(url, "request", "ev-6", {"rows": [1, 2]})
    assert r.status_code == 400 and "instances" in r.json()["error"]
    assert post(url, "request", "ev-7", {"instances": ["a", "b"]}).status_code == 202
    r = post(url, "response", "ev-7", {"predictions": ["HassTurnOn"]})
    assert r.status_code == 400 and "1 answer(s) for 2 input(s)" in r.json()["error"]
    assert stored(folder) == {}


def test_capture_switched_off_keeps_neither_text_nor_answer(tmp_path):
    engine = connect(tmp_path / "traces.db")
    sink = Collector(engine, "lights", lambda: 5, Capture(inputs=False, outputs=False))
    for kind, data in (("request", {"instances": ["call me at 555-0100"]}), ("response", {"predictions": ["HassTurnOn"]})):
        headers, body = event(kind, "pii-1", data)
        sink.receive(parse(headers, body))
    trace = stored(tmp_path)["pii-1"]
    assert trace["input"] == "" and "prediction" not in trace and trace["model_id"] == "lights@5"
    assert len(trace["meta"]["input_sha256"]) == 64 and "555" not in str(trace)
