"""A loopback HTTP server that speaks Anthropic's Messages API with scripted answers, for the real `anthropic` SDK.

Each POST /v1/messages takes the next scripted answer (then ``responder(body)``: a tool input, or a string for a text answer): a tool call (``("tool", input)``), an HTTP error
(``("status", 429)``), a delay longer than the client's timeout (``("sleep", seconds)``) or a text-only
answer (``("text", "...")``). Every request body is kept (``server.requests``) so tests can assert on what
was sent. Token counts are the request's length / 4: an estimate, labelled as such where reported.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERRORS = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error", 400: "invalid_request_error"}


class MessagesApi:
    def __init__(self, script: list[tuple[str, Any]] | None = None):
        self.script = list(script or [])
        self.requests: list[dict[str, Any]] = []
        self.responder: Any = None  # body -> tool input, for requests past the script
        self.headers: list[dict[str, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                api.requests.append(body)
                api.headers.append({k.lower(): v for k, v in self.headers.items()})
                if api.script:
                    kind, value = api.script.pop(0)
                elif api.responder:
                    value = api.responder(body)
                    kind = "text" if isinstance(value, str) else "tool"
                else:
                    kind, value = "text", "no scripted answer left"
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = "text", "too late"
                if kind == "status":
                    self._send(value, {"type": "error", "error": {"type": ERRORS.get(value, "api_error"), "message": f"scripted {value}"}})
                    return
                content = ([{"type": "tool_use", "id": f"toolu_{len(api.requests)}", "name": body["tools"][0]["name"], "input": value}]
                           if kind == "tool" else [{"type": "text", "text": value}])
                self._send(200, {"id": f"msg_{len(api.requests)}", "type": "message", "role": "assistant", "model": body["model"],
                                 "content": content, "stop_reason": "tool_use" if kind == "tool" else "end_turn", "stop_sequence": None,
                                 "usage": {"input_tokens": len(json.dumps(body)) // 4, "output_tokens": len(json.dumps(content)) // 4}})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
