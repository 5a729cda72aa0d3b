"""The repair workflow a newcomer follows, with the CLI and HTTP only: cold start a DeployedModel, serve it, send
traffic, attach corrections (CLI, feedback endpoint, a later upsert), judge, repair, edit the gate, re-run.

A real `pioneer serve` process answers a real HTTP client; every other step is a `pioneer` command."""

from __future__ import annotations

import json
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from conftest import start_server, tiny_adaptation
from pioneer.cli import main
from pioneer.data.sources import home_assistant_intents

pytestmark = pytest.mark.slow
LABELS = ["HassTurnOn", "HassTurnOff", "HassLightSet"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Revision 1 of DeployedModel `lights` (a cold start trained at maxLength 8, far below serve's old fixed 128),
    served by a real `pioneer serve` process."""
    import sys

    folder = tmp_path_factory.mktemp("workflow")
    v1 = tiny_adaptation("v1", gate={"tau": 0.05}, search={"maxAttempts": 1, "configurationsPerIteration": 1},
                         hyperparameters={"maxLength": 8}, deployedModel="lights")
    (folder / "v1.yaml").write_text(yaml.safe_dump(v1, sort_keys=False))
    assert main(["run", str(folder / "v1.yaml"), "--quiet"]) == 0
    proc, url = start_server(sys.executable, folder, folder / "pioneer-artifacts", "lights")
    yield folder, url, proc
    proc.terminate()
    proc.wait(15)


def _count(db: str, capsys) -> int:
    capsys.readouterr()
    assert main(["traces", "query", "select count(*) as n from traces", "--db", db, "--json"]) == 0
    return json.loads(capsys.readouterr().out)[0]["n"]


def test_every_malformed_request_gets_a_400_and_oversized_ones_a_413(served, capsys):
    folder, url, _ = served
    assert httpx.get(url).json()["endpoints"]["POST /feedback"]  # GET / says what the server answers
    logged = _count(str(folder / "traces.db"), capsys)
    bad = [
        (b"{not json", "not valid JSON"),
        (b'{"input": "\\ud800 lone surrogate"}', "lone surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"text": "wrong key"}', "expected JSON"),
        (b'{"input": "   "}', "non-empty"),
        (b'"just a string"', "expected JSON"),
    ]
    for body, why in bad:
        r = httpx.post(f"{url}/predict", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and why in r.json()["error"], (body[:40], r.text)
    assert httpx.post(f"{url}/predict", json={"input": "x" * 9000}).status_code == 413
    r = httpx.post(f"{url}/v2/models/lights/infer", json={"inputs": [{"name": "input", "datatype": "FP32", "data": [1.0]}]})
    assert r.status_code == 400 and "BYTES" in r.json()["error"]
    assert httpx.post(f"{url}/v2/models/other/infer", json={}).status_code == 404
    assert httpx.post(f"{url}/feedback", json={"trace_id": "no-such-trace", "verdict": "pass"}).status_code == 404
    # a malformed Content-Length on a raw socket: an answer, not a dropped connection
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        assert s.recv(200).startswith(b"HTTP/1.1 400")
    assert _count(str(folder / "traces.db"), capsys) == logged  # nothing malformed was logged


def test_serve_correct_judge_repair_and_regate_with_the_cli_only(served, capsys):
    folder, url, server = served
    db = str(folder / "traces.db")
    art = folder / "pioneer-artifacts"

    # train/serve parity: the server answers the trainer's own evaluation texts exactly as the trainer scored them
    scored = [json.loads(x) for x in (art / "v1" / "attempts" / "v1-i1-a" / "output" / "predictions.jsonl").read_text().splitlines()]
    infer = httpx.post(f"{url}/v2/models/lights/infer",
                       json={"id": "parity", "inputs": [{"name": "input", "datatype": "BYTES", "shape": [len(scored)],
                                                         "data": [r["text"] for r in scored]}]}).json()
    assert infer["id"] == "parity" and infer["model_version"] == "1"
    assert infer["outputs"][0]["data"] == [r["prediction"] for r in scored]

    # traffic from 8 concurrent clients (micro-batched): every 2xx answer is exactly one trace
    traffic = home_assistant_intents(40, LABELS, seed=11)[:90]
    before = _count(db, capsys)
    with httpx.Client(timeout=60) as http, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda ex: http.post(f"{url}/predict", json={"input": ex.text}), traffic))
    assert all(a.status_code == 200 for a in answers)
    assert _count(db, capsys) == before + len(traffic)
    got = [a.json() for a in answers]
    assert {g["revision"] for g in got} == {1}

    # corrections: the CLI, the feedback endpoint, and a file of corrections that arrives later (--upsert) + judge
    wrong = [(g, ex) for g, ex in zip(got, traffic) if g["prediction"] != ex.label]
    right = [(g, ex) for g, ex in zip(got, traffic) if g["prediction"] == ex.label]
    assert len(wrong) >= 6 and len(right) >= 6, (len(wrong), len(right))
    by_cli, by_http, by_file = wrong[: len(wrong) // 3], wrong[len(wrong) // 3 : 2 * len(wrong) // 3], wrong[2 * len(wrong) // 3 :]
    for g, ex in by_cli:
        assert main(["traces", "correct", g["trace_id"], ex.label, "--by", "alice", "--db", db]) == 0
    for g, ex in by_http:
        r = httpx.post(f"{url}/feedback", json={"trace_id": g["trace_id"], "correction": ex.label, "by": "bob"})
        assert r.status_code == 200 and r.json()["verdict"] == "fail"
    for g, _ in right[:3]:  # thumbs up on a right answer
        assert httpx.post(f"{url}/feedback", json={"trace_id": g["trace_id"], "thumbs": "up"}).json()["verdict"] == "pass"
    # the unjudged rest: exported, given references by a labelling tool, imported back as corrections
    assert main(["traces", "export", "--verdict", "unjudged", "--model", "lights@", "--out", str(folder / "todo.jsonl"), "--db", db]) == 0
    todo = [json.loads(x) for x in (folder / "todo.jsonl").read_text().splitlines()]
    truth = {g["trace_id"]: ex.label for g, ex in zip(got, traffic)}
    truth.update(zip(infer["outputs"][2]["data"], [r["label"] for r in scored]))
    assert {r["id"] for r in todo} == {g["trace_id"] for g, _ in by_file + right[3:]} | set(infer["outputs"][2]["data"])
    (folder / "labels.jsonl").write_text("".join(json.dumps({"id": r["id"], "corrected": truth[r["id"]]}) + "\n" for r in todo))
    assert main(["traces", "import", "--upsert", str(folder / "labels.jsonl"), "--db", db]) == 0
    assert f"{len(todo)} updated" in capsys.readouterr().out
    assert main(["traces", "judge", "--db", db]) == 0
    assert f"judged {len(todo)} trace(s)" in capsys.readouterr().out
    assert main(["traces", "query", "select verdict, count(*) as n from effective_traces group by verdict", "--db", db, "--json"]) == 0
    verdicts = {r["verdict"]: r["n"] for r in json.loads(capsys.readouterr().out)}
    assert verdicts.get(None) is None and verdicts["fail"] >= len(wrong)
    # a person's correction sits beside the judge's columns, who and when recorded, never overwriting them
    first = by_cli[0][0]["trace_id"]
    assert main(["traces", "query", f"select verdict, human_verdict, human_corrected from traces where id = '{first}'",
                 "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"verdict": None, "human_verdict": "fail", "human_corrected": by_cli[0][1].label}]
    assert main(["traces", "query", f"select by, source from trace_overrides where trace_id = '{first}'", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"by": "alice", "source": "cli"}]

    # the repair: a gate it cannot pass first (tau 1.0, no regression allowed), then an edited gate re-applied
    repair = tiny_adaptation("repair", mode="production", deployedModel="lights", task={"labels": LABELS},
                             data={"sources": [{"traces": "traces.db"}]}, gate={"tau": 1.0, "epsilon": 0},
                             hyperparameters={"maxLength": 8},
                             search={"maxAttempts": 1, "configurationsPerIteration": 1})
    spec = folder / "repair.yaml"
    spec.write_text(yaml.safe_dump(repair, sort_keys=False))
    main(["run", str(spec), "--quiet"])
    state = json.loads((art / "repair" / "state.json").read_text())
    assert state["gate"]["passed"] is False
    # the parent scores 0 on its own logged failures: served and re-scored answers are the same answers
    assert state["status"]["baselineScore"] == 0.0

    repair["spec"]["gate"] = {"tau": 0.05, "epsilon": 1000}
    spec.write_text(yaml.safe_dump(repair, sort_keys=False))
    capsys.readouterr()
    assert main(["run", str(spec), "--quiet"]) == 0
    quiet = capsys.readouterr().out.strip().splitlines()
    assert len(quiet) == 1 and quiet[0].startswith("Succeeded"), quiet  # --quiet: the outcome line only
    events = " ".join(e["message"] for e in json.loads((art / "repair" / "state.json").read_text())["events"])
    assert "the gate changed (" in events and "tau 1.0 -> 0.05" in events and "epsilon 0 -> 1000" in events
    capsys.readouterr()
    assert main(["status", str(spec)]) == 0
    shown = capsys.readouterr().out
    assert "gate promoted" in shown and "pass  regressions" in shown and "pass  score" in shown

    # the running server answers with revision 2 on the next request, without a restart
    r = httpx.post(f"{url}/predict", json={"input": "turn off the garage light"}).json()
    assert r["revision"] == 2 and server.poll() is None
    assert main(["rollback", "lights", "--to", "1", "--artifacts", str(art)]) == 0
    assert httpx.post(f"{url}/predict", json={"input": "turn on the porch light"}).json()["revision"] == 1

    # the run folder moved elsewhere still reports and serves from where it lies now
    moved = folder / "moved"
    shutil.copytree(art, moved / "pioneer-artifacts")
    shutil.rmtree(art / "repair")
    assert main(["report", str(spec), "--artifacts", str(moved / "pioneer-artifacts")]) == 0
    report = (moved / "pioneer-artifacts" / "repair" / "report" / "report.md").read_text()
    result = report.split("## Gate")[0]
    assert str(art) not in result and "models/sha256-" in result and "repair/attempts/repair-i1-a/output/model" in result
    assert str(art) not in (moved / "pioneer-artifacts" / "deployed" / "lights.json").read_text()
    recorded = json.loads((moved / "pioneer-artifacts" / "repair" / "state.json").read_text())
    for k in ("status", "attempts", "lifecycle", "gate"):
        assert str(art) not in json.dumps(recorded[k]), (k, [m for m in json.dumps(recorded[k]).split(",") if str(art) in m][:5])
    from pioneer import deploy, inference
    from pioneer.store import LocalStore

    status = deploy.load(LocalStore(moved / "pioneer-artifacts"), "lights")
    assert status.model_uri.startswith(str(moved)) and inference.load(status.model_uri).predict(["turn on the light"])
