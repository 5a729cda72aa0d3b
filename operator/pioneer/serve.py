"""``pioneer serve``: serve a DeployedModel's current revision over HTTP and log every inference as a trace.

An ASGI application (starlette) run by uvicorn. Endpoints (``GET /`` lists them):

    POST /predict                 {"input": "..."} -> {"prediction", "confidence", "raw_confidence", "revision",
                                                       "model", "trace_id"}
    POST /feedback                {"trace_id", "correction"?, "verdict"?: pass|fail, "thumbs"?: up|down, "by"?}
    POST /v2/models/NAME/infer    Open Inference Protocol v2 (KServe, Triton clients): a BYTES input tensor
    GET  /v2/models/NAME          model metadata;  GET /v2/models/NAME/ready
    GET  /v2/health/live          the process is up;  GET /v2/health/ready: a verified revision is loaded
    GET  /healthz                 {"revision", "model"} (503 while no revision can be served)

``confidence`` is calibrated per label from the judged history in the trace store (paper §2.7). Each
request is written to the trace store (verdict empty until a judge, a person through ``/feedback`` or
``pioneer traces correct`` fills it). A new revision (a passing gate or ``pioneer rollback``) is picked
up on the next request, without a restart. Inputs are preprocessed exactly as the trainer did, from the
model folder's saved preprocessing (:mod:`pioneer.inference`).

Concurrent requests are micro-batched into one forward pass. Every malformed request gets a 400 with
the reason; bodies and inputs over their limits a 413.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pioneer import defaults as d
from pioneer.api.models import Capture
from pioneer.core import gate
from pioneer.deploy import FileRegistry
from pioneer.revisions import ModelTampered, verify_model_dir
from pioneer.store import split_uri


@dataclass(frozen=True)
class Limits:
    """What one request may carry, and how the server batches and times out."""

    max_body_bytes: int = d.SERVE_MAX_BODY_BYTES
    max_input_chars: int = d.SERVE_MAX_INPUT_CHARS
    max_batch: int = d.SERVE_MAX_BATCH
    batch_wait_seconds: float = d.SERVE_BATCH_WAIT_SECONDS
    idle_timeout_seconds: int = d.SERVE_IDLE_TIMEOUT_SECONDS


class BadRequest(ValueError):
    """The request is malformed; the message says what was expected."""

    status = 400


class TooLarge(BadRequest):
    status = 413


class ModelServer:
    """The served revision (reloaded when the DeployedModel's current revision changes) and the trace log."""

    def __init__(self, name: str, registry, traces_db: str, capture: Capture | None = None):
        """``registry`` is the lifecycle's registry port (a FileRegistry locally, the DeployedModel resource in a
        cluster); an artifact store is read as a FileRegistry. ``capture`` says what a trace keeps (PII)."""
        from pioneer.traces import store as trace_store

        if not hasattr(registry, "update"):
            registry = FileRegistry(registry)
        self.name, self.registry, self.capture = name, registry, capture or Capture()
        self.traces = trace_store.connect(trace_store.resolve_reference(str(traces_db)))
        self._lock = threading.Lock()
        self.revision: int | None = None
        self.model_uri: str | None = None
        self.predictor = None
        self.loading = False
        self._history_cache: dict = {}
        self._history_at: float | None = None

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
        from pioneer import inference

        with self._lock:
            if revision == self.revision and uri == self.model_uri:
                return
            self.loading = True
            try:
                store, key = split_uri(uri)
                local = store.download_dir(key, _cache_dir(uri)) if uri.startswith("s3://") else uri
                # serve exactly the promoted bytes: a model changed after promotion is refused, never served
                verify_model_dir(local, sha, f"revision {revision} of {self.name}")
                self.predictor = inference.load(local)
                self.revision, self.model_uri = revision, uri
                pre = self.predictor.preprocessing
                note = "" if pre.source == inference.PREPROCESSING_FILE else f" (no {inference.PREPROCESSING_FILE}: defaults used)"
                print(f"pioneer serve: revision {revision} of {self.name} loaded: {pre.task_type}, max length "
                      f"{pre.max_length}{note}", flush=True)
            finally:
                self.loading = False

    def _history(self) -> dict:
        """Per-label judged history for calibration, read again at most every few seconds (verdicts arrive slowly)."""
        from pioneer.traces.calibration import label_history

        now = time.monotonic()
        if self._history_at is None or now - self._history_at > d.SERVE_CALIBRATION_REFRESH_SECONDS:
            self._history_cache, self._history_at = label_history(self.traces, f"{self.name}@"), now
        return self._history_cache

    @property
    def ready(self) -> bool:
        return self.predictor is not None and not self.loading

    def log(self, rows: list[dict[str, Any]]) -> None:
        from pioneer.traces.store import add

        add(self.traces, rows)

    def answer_batch(self, texts: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the answers, their trace rows) of one forward pass; the rows are not written yet."""
        from pioneer.traces.calibration import calibrate

        self.refresh()
        with self._lock:
            answers = self.predictor.predict(texts)
            revision, uri = self.revision, self.model_uri
            classification = self.predictor.preprocessing.task_type == "classification"
        history = self._history() if classification else {}
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results, rows = [], []
        for text, answer in zip(texts, answers):
            trace_id = str(uuid.uuid4())
            accuracy, n = history.get(answer.output, (None, 0))
            calibrated = calibrate(answer.confidence, accuracy, n)
            meta = {"confidence": round(answer.confidence, 5), "calibrated_confidence": round(calibrated, 5), "model_uri": uri}
            rows.append({"id": trace_id, **self.capture.kept(text, answer.output, meta), "model_id": f"{self.name}@{revision}",
                         "created_at": at})
            results.append({"prediction": answer.output, "confidence": calibrated, "raw_confidence": answer.confidence,
                            "revision": revision, "model": uri, "trace_id": trace_id})
        return results, rows

    def feedback(self, body: dict[str, Any]) -> dict[str, Any]:
        from pioneer.traces import store

        trace_id = body.get("trace_id")
        if not isinstance(trace_id, str) or not trace_id:
            raise BadRequest('expected {"trace_id": "...", "correction"?: "...", "verdict"?: "pass"|"fail", "thumbs"?: "up"|"down"}')
        thumbs = body.get("thumbs")
        if thumbs not in (None, "up", "down"):
            raise BadRequest("thumbs must be 'up' or 'down'")
        verdict = body.get("verdict") or {"up": "pass", "down": "fail", None: None}[thumbs]
        correction = body.get("correction")
        if correction is not None and not isinstance(correction, str):
            raise BadRequest("correction must be a string")
        by = body.get("by") or "feedback"
        if not isinstance(by, str):
            raise BadRequest("by must be a string")
        try:
            rec = store.correct(self.traces, trace_id, corrected=correction, verdict=verdict, by=by, source="feedback")
        except store.UnknownTrace:
            raise LookupError(f"no trace {trace_id!r}") from None
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return rec.to_dict()


class PinnedRegistry:
    """One revision given on the command line or in the environment (the operator's `pioneer serve` Deployment sets
    PIONEER_SERVE_REVISION, _MODEL_URI and _MODEL_SHA256): the pod serves exactly it, and a new revision is a new
    pod (a rolling update), so the servers need no access to the Kubernetes API."""

    def __init__(self, name: str, revision: int, model_uri: str, model_sha256: str | None):
        from pioneer.api.models import DeployedModelStatus, Revision

        rev = Revision(revision=revision, model_uri=model_uri, model_sha256=model_sha256 or None)
        self.status = DeployedModelStatus(revisions=[rev], current_revision=revision, model_uri=model_uri)
        self.name = name

    def load(self, name: str):
        return self.status if name == self.name else None

    def update(self, name, change):
        raise RuntimeError("a pinned server changes no DeployedModel")


def _cache_dir(uri: str):
    import hashlib
    import tempfile
    from pathlib import Path

    return Path(tempfile.gettempdir()) / "pioneer-serve" / hashlib.sha256(uri.encode()).hexdigest()[:16]


class Batcher:
    """Collects concurrent inputs for up to ``wait`` seconds (or ``max_batch`` of them) into one forward pass.

    A batch's traces are written by one writer thread while the next batch's forward pass runs; each request is
    answered only once its trace is stored (a 2xx always means a logged trace)."""

    def __init__(self, server: ModelServer, limits: Limits):
        from concurrent.futures import ThreadPoolExecutor

        self.server, self.limits = server, limits
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="pioneer-model")
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="pioneer-traces")
        self.pending: set[asyncio.Task] = set()

    async def submit(self, texts: list[str]) -> list[dict[str, Any]]:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _deliver(self, batch, results, rows) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self.writer, self.server.log, rows)
        except Exception as exc:  # not logged: not answered as a success either
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        start = 0
        for ts, fut in batch:
            if not fut.done():
                fut.set_result(results[start:start + len(ts)])
            start += len(ts)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.limits.batch_wait_seconds
            while sum(len(t) for t, _ in batch) < self.limits.max_batch:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except TimeoutError:
                    break
            texts = [t for ts, _ in batch for t in ts]
            try:
                results, rows = await loop.run_in_executor(self.model_thread, self.server.answer_batch, texts)
            except Exception as exc:  # handed to every waiting request
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            task = loop.create_task(self._deliver(batch, results, rows))  # written while the next batch is answered
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)


async def _json_body(request, limits: Limits) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limits.max_body_bytes:
            raise TooLarge(f"body over {limits.max_body_bytes} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limits.max_body_bytes:
            raise TooLarge(f"body over {limits.max_body_bytes} bytes")
    try:
        return json.loads(bytes(data) or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON (UTF-8)") from None
    except RecursionError:
        raise BadRequest("the JSON is nested too deeply") from None


def _text(value: Any, limits: Limits, what: str = "input") -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f'{what} must be non-empty text')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid Unicode (a lone surrogate?)") from None
    if len(value) > limits.max_input_chars:
        raise TooLarge(f"{what} is {len(value)} characters; the limit is {limits.max_input_chars}")
    return value


def _v2_inputs(body: Any, limits: Limits) -> list[str]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise BadRequest('expected {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [n], "data": ["...", ...]}]}')
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict) or tensor.get("datatype") != "BYTES" or not isinstance(tensor.get("data"), list):
        raise BadRequest("the input tensor must have datatype BYTES and a data list")
    data = tensor["data"]
    shape = tensor.get("shape")
    if not data or (shape is not None and shape not in ([len(data)], [len(data), 1], [1, len(data)])):
        raise BadRequest(f"shape {shape} does not match {len(data)} data element(s)")
    if len(data) > limits.max_batch:
        raise TooLarge(f"{len(data)} inputs in one request; the limit is {limits.max_batch}")
    return [_text(x, limits, "each input") for x in data]


def make_app(server: ModelServer, limits: Limits = Limits()):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    batcher = Batcher(server, limits)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def guarded(call):
        try:
            return await call()
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except (LookupError, ModelTampered) as exc:
            return error(503, str(exc).strip("'\""))

    async def index(request):
        return JSONResponse({"model": server.name, "revision": server.revision, "endpoints": {
            "POST /predict": '{"input": "<text>"}', "POST /feedback": '{"trace_id", "correction"?, "verdict"? | "thumbs"?, "by"?}',
            f"POST /v2/models/{server.name}/infer": "Open Inference Protocol v2, one BYTES input tensor",
            f"GET /v2/models/{server.name}": "model metadata", "GET /v2/health/live": "liveness",
            "GET /v2/health/ready": "readiness (a verified revision is loaded)", "GET /healthz": "revision and model served"}})

    async def healthz(request):
        async def call():
            await run_in_threadpool(server.refresh)
            return JSONResponse({"revision": server.revision, "model": server.model_uri})
        return await guarded(call)

    async def live(request):
        return JSONResponse({"live": True})

    async def ready(request):
        try:
            await run_in_threadpool(server.refresh)
        except (LookupError, ModelTampered) as exc:
            return JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
        return JSONResponse({"ready": server.ready}, status_code=200 if server.ready else 503)

    async def predict(request):
        async def call():
            body = await _json_body(request, limits)
            if not isinstance(body, dict) or "input" not in body:
                raise BadRequest('expected JSON {"input": "<non-empty text>"}')
            return JSONResponse((await batcher.submit([_text(body["input"], limits)]))[0])
        return await guarded(call)

    async def feedback(request):
        async def call():
            body = await _json_body(request, limits)
            if not isinstance(body, dict):
                raise BadRequest("expected a JSON object")
            try:
                return JSONResponse(await run_in_threadpool(server.feedback, body))
            except LookupError as exc:
                return error(404, str(exc))
        return await guarded(call)

    def _known(request) -> JSONResponse | None:
        if request.path_params["model"] != server.name:
            return error(404, f"no model {request.path_params['model']!r} here (this server serves {server.name!r})")
        return None

    async def v2_metadata(request):
        if (missing := _known(request)) is not None:
            return missing
        async def call():
            await run_in_threadpool(server.refresh)
            return JSONResponse({"name": server.name, "versions": [str(server.revision)], "platform": "pioneer",
                                 "inputs": [{"name": "input", "datatype": "BYTES", "shape": [-1]}],
                                 "outputs": [{"name": "prediction", "datatype": "BYTES", "shape": [-1]},
                                             {"name": "confidence", "datatype": "FP32", "shape": [-1]},
                                             {"name": "trace_id", "datatype": "BYTES", "shape": [-1]}]})
        return await guarded(call)

    async def v2_ready(request):
        if (missing := _known(request)) is not None:
            return missing
        return await ready(request)

    async def v2_infer(request):
        if (missing := _known(request)) is not None:
            return missing
        async def call():
            body = await _json_body(request, limits)
            texts = _v2_inputs(body, limits)
            results = await batcher.submit(texts)
            n = len(results)
            return JSONResponse({
                "model_name": server.name, "model_version": str(results[0]["revision"]),
                **({"id": body["id"]} if isinstance(body.get("id"), str) else {}),
                "outputs": [{"name": "prediction", "datatype": "BYTES", "shape": [n], "data": [r["prediction"] for r in results]},
                            {"name": "confidence", "datatype": "FP32", "shape": [n], "data": [r["confidence"] for r in results]},
                            {"name": "trace_id", "datatype": "BYTES", "shape": [n], "data": [r["trace_id"] for r in results]}]})
        return await guarded(call)

    collector = None

    async def cloudevents(request):
        """KServe's inference logger (``logger: {mode: all, url: .../cloudevents}``): pairs request and response."""
        nonlocal collector
        if collector is None:
            collector = make_collector(server)
        return await receive_event(request, collector, limits)

    async def not_found(request, exc):
        return error(exc.status_code, "not found" if exc.status_code == 404 else str(exc.detail))

    routes = [
        Route("/", index), Route("/healthz", healthz), Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/predict", predict, methods=["POST"]), Route("/feedback", feedback, methods=["POST"]),
        Route("/v2/models/{model}", v2_metadata), Route("/v2/models/{model}/ready", v2_ready),
        Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]), Route("/cloudevents", cloudevents, methods=["POST"]),
    ]
    from starlette.exceptions import HTTPException

    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


def make_collector(server: ModelServer):
    from pioneer.traces.collector import Collector

    def revision_now() -> int | None:
        status = server.registry.load(server.name)
        return status.current_revision if status is not None else None

    return Collector(server.traces, server.name, revision_now, server.capture)


async def receive_event(request, collector, limits: Limits):
    """One logger CloudEvent: 202 with what was done, 400 with the reason for anything else."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    from pioneer.traces.collector import BadEvent, parse

    try:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
            raise TooLarge(f"body over {limits.max_body_bytes} bytes") if declared.isdigit() else BadRequest("Content-Length is not a number")
        body = await request.body()
        if len(body) > limits.max_body_bytes:
            raise TooLarge(f"body over {limits.max_body_bytes} bytes")
        event = parse(dict(request.headers), body)
        result = await run_in_threadpool(collector.receive, event)
    except BadRequest as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    except BadEvent as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(result, status_code=202)


def make_collector_app(server: ModelServer, limits: Limits = Limits()):
    """Only the trace collector (for models KServe serves): POST /cloudevents, GET /v2/health/live|ready."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    collector = make_collector(server)

    async def cloudevents(request):
        return await receive_event(request, collector, limits)

    async def health(request):
        return JSONResponse({"live": True, "collector": server.name})

    return Starlette(routes=[Route("/cloudevents", cloudevents, methods=["POST"]), Route("/v2/health/live", health),
                             Route("/v2/health/ready", health)])


def serve(name: str, registry, traces_db: str, host: str, port: int, limits: Limits = Limits(),
          capture: Capture | None = None, collect_only: bool = False) -> None:
    import uvicorn

    server = ModelServer(name, registry, traces_db, capture)
    if collect_only:
        print(f"collecting KServe logger events for DeployedModel {name} on http://{host}:{port}/cloudevents (traces -> {traces_db})", flush=True)
        uvicorn.run(make_collector_app(server, limits), host=host, port=port, log_level="warning", access_log=False,
                    timeout_keep_alive=limits.idle_timeout_seconds, backlog=d.SERVE_BACKLOG)
        return
    try:  # load before the first request, so readiness reflects the served revision
        server.refresh()
    except (LookupError, ModelTampered) as exc:
        print(f"pioneer serve: not ready yet: {exc}", flush=True)
    print(f"serving DeployedModel {name} on http://{host}:{port} (traces -> {traces_db})", flush=True)
    uvicorn.run(make_app(server, limits), host=host, port=port, log_level="warning", access_log=False,
                timeout_keep_alive=limits.idle_timeout_seconds, backlog=d.SERVE_BACKLOG,
                timeout_graceful_shutdown=d.SERVE_GRACEFUL_SHUTDOWN_SECONDS)
