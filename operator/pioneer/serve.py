"""``pioneer serve``: serve a DeployedModel's current revision over HTTP and log every inference as a trace.

    POST /predict  {"input": "..."}  ->  {"prediction", "confidence", "raw_confidence", "revision", "model", "trace_id"}

``confidence`` is calibrated per label from the judged history in the trace store (paper §2.7).
    GET  /healthz                    ->  {"revision", "model"}

Each request is written to the trace store (verdict empty until a judge fills it), which closes the
loop for teams with no serving stack. A new revision (a passing gate or `pioneer rollback`) is picked
up on the next request, without a restart.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pioneer.core import gate
from pioneer.deploy import FileRegistry
from pioneer.revisions import ModelTampered, verify_model_dir
from pioneer.store import split_uri

MAX_BODY = 1 << 20


class ModelServer:
    """Holds the loaded revision; reloads when the DeployedModel's current revision changes."""

    def __init__(self, name: str, registry, traces_db: str, max_length: int = 128):
        """``registry`` is the lifecycle's registry port (a FileRegistry locally, the DeployedModel resource in a
        cluster); an artifact store is read as a FileRegistry."""
        from pioneer.traces import store as trace_store

        if not hasattr(registry, "update"):
            registry = FileRegistry(registry)
        self.name, self.registry, self.max_length = name, registry, max_length
        self.traces = trace_store.connect(traces_db)
        self._lock = threading.Lock()
        self.revision: int | None = None
        self.model_uri: str | None = None
        self.tokenizer = self.model = None

    def _current(self) -> tuple[int, str, str | None]:
        status = self.registry.load(self.name)
        current = gate.current(status) if status is not None else None
        if status is None or status.current_revision is None or not status.model_uri:
            raise LookupError(f"DeployedModel {self.name!r} has no revision yet")
        return status.current_revision, status.model_uri, current.model_sha256 if current else None

    def refresh(self) -> None:
        revision, uri, sha = self._current()
        if revision == self.revision and uri == self.model_uri:
            return
        from pioneer.trainer.classification import load_trained

        with self._lock:
            if revision == self.revision and uri == self.model_uri:
                return
            store, key = split_uri(uri)
            local = store.download_dir(key, _cache_dir(uri)) if uri.startswith("s3://") else uri
            # serve exactly the promoted bytes: a model changed after promotion is refused, never served
            verify_model_dir(local, sha, f"revision {revision} of {self.name}")
            self.tokenizer, self.model = load_trained(local)
            self.revision, self.model_uri = revision, uri

    def predict(self, text: str) -> dict[str, Any]:
        from pioneer.traces.store import add
        from pioneer.trainer.classification import predict

        self.refresh()
        with self._lock:
            labels, probs = predict(self.model, self.tokenizer, [text], self.max_length)
            revision, uri = self.revision, self.model_uri
        trace_id = str(uuid.uuid4())
        confidence = float(probs[0].max())
        from pioneer.traces.calibration import calibrate, label_history

        accuracy, n = label_history(self.traces, f"{self.name}@").get(labels[0], (None, 0))
        calibrated = calibrate(confidence, accuracy, n)
        add(self.traces, [{"id": trace_id, "input": text, "prediction": labels[0], "model_id": f"{self.name}@{revision}",
                           "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "meta": {"confidence": round(confidence, 5), "calibrated_confidence": round(calibrated, 5), "model_uri": uri}}])
        return {"prediction": labels[0], "confidence": calibrated, "raw_confidence": confidence, "revision": revision,
                "model": uri, "trace_id": trace_id}


def _cache_dir(uri: str):
    import hashlib
    import tempfile
    from pathlib import Path

    return Path(tempfile.gettempdir()) / "pioneer-serve" / hashlib.sha256(uri.encode()).hexdigest()[:16]


def make_handler(server: ModelServer):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != "/healthz":
                return self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            try:
                server.refresh()
            except (LookupError, ModelTampered) as exc:
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            self._send(HTTPStatus.OK, {"revision": server.revision, "model": server.model_uri})

        def do_POST(self) -> None:
            if self.path != "/predict":
                return self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                text = body["input"]
                if not isinstance(text, str) or not text.strip():
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                return self._send(HTTPStatus.BAD_REQUEST, {"error": 'expected JSON {"input": "<non-empty text>"}'})
            try:
                self._send(HTTPStatus.OK, server.predict(text))
            except (LookupError, ModelTampered) as exc:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})

        def log_message(self, fmt: str, *args: Any) -> None:  # one quiet line per request
            pass

    return Handler


def serve(name: str, registry, traces_db: str, host: str, port: int) -> None:
    server = ModelServer(name, registry, traces_db)
    httpd = ThreadingHTTPServer((host, port), make_handler(server))
    print(f"serving DeployedModel {name} on http://{host}:{httpd.server_address[1]} (traces -> {traces_db})", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
