"""`pioneer serve`: a real server process, a real HTTP client; every request becomes a trace, and new
revisions (a passing gate, an explicit rollback) are served without a restart."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import tiny_adaptation
from pioneer import deploy
from pioneer.api.models import GateVerdict, Revision
from pioneer.cli import main
from pioneer.store import LocalStore
from pioneer.traces.store import connect, query

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_logs_every_request_and_follows_revisions(write_spec, tmp_path, python):
    spec = write_spec(tiny_adaptation(search={"maxAttempts": 2}, gate={"tau": 0.05}, deployedModel="intents"))
    assert main(["run", str(spec), "--quiet"]) == 0
    artifacts = LocalStore(tmp_path / "pioneer-artifacts")
    status = deploy.load(artifacts, "intents")
    assert status.current_revision == 1 and status.last_verdict.passed  # the cold-start gate promoted the best attempt

    port, db = free_port(), tmp_path / "traces.db"
    proc = subprocess.Popen([python, "-m", "pioneer.cli", "serve", "intents", "--artifacts", str(artifacts.root),
                             "--db", str(db), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60)
                break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() is not None else "timeout"
                time.sleep(0.5)

        code, first = post(port, {"input": "turn on the kitchen lights"})
        assert code == 200 and first["revision"] == 1 and first["prediction"] in {"HassTurnOn", "HassTurnOff", "HassLightSet"}
        assert 0 < first["confidence"] <= 1
        assert post(port, {"text": "wrong key"})[0] == 400

        # a second revision passes the gate: served on the next request, same process
        other = next(p for p in (tmp_path / "pioneer-artifacts" / "tiny" / "attempts").glob("tiny-i1-*/output/model")
                     if str(p) != status.model_uri)
        deploy.decide(artifacts, "intents", GateVerdict(passed=True, reason="test promotion"), Revision(revision=1, model_uri=str(other)))
        code, second = post(port, {"input": "switch off the desk lamp"})
        assert code == 200 and second["revision"] == 2 and second["model"] == str(other)

        assert main(["rollback", "intents", "--to", "1", "--artifacts", str(artifacts.root)]) == 0
        assert post(port, {"input": "turn off the tv"})[1]["revision"] == 1

        _, rows = query(connect(db), "SELECT input, prediction, model_id FROM traces ORDER BY created_at, model_id")
        assert sorted(r[0] for r in rows) == ["switch off the desk lamp", "turn off the tv", "turn on the kitchen lights"]
        assert {r[2] for r in rows} == {"intents@1", "intents@2"}
        assert proc.poll() is None  # never restarted
    finally:
        proc.terminate()
        proc.wait(10)
