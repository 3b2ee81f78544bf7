"""Local HTTP servers speaking the wire formats of OpenAI-compatible chat, Ollama and Anthropic.

One threaded stdlib server answers all three APIs. Behaviour per query is scripted with
``faults``: {query substring: [behaviour, ...]}, consumed one per request, then "ok".
Behaviours: ok, 429[:retry_after], 500, slow:<seconds>, badjson, truncated, wrongformat,
echo401 and echo500 (an error body that repeats the request headers, API key included).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def good_answer(query: str) -> str:
    base = query.split(" /only:")[0]
    if query.endswith("/only:lex"):
        return f"lex: {base} reference\nlex: {base} setup notes"
    return (
        f"hyde: This passage explains {base} in practical terms with one concrete example and the usual caveats.\n"
        f"lex: {base} reference\n"
        f"lex: {base} setup notes\n"
        f"vec: how do people usually approach {base} in practice\n"
        f"vec: what should a beginner know first about {base}"
    )


# Degenerate answers measured from a small model (issue 9): 49 identical vec lines; the
# prompt example's hyde copied verbatim plus another example's query as a lex line.
DEGENERATE = {
    "repeat": "hyde: Docker compose networking connects services.\nlex: docker compose network\n"
    + "vec: docker-comdll\n" * 49,
    "copy": "hyde: A sourdough starter is flour and water fermented by wild yeast; feed it daily until it"
    " doubles in 6 hours.\nlex: kubernetes ingress tls /only:lex\nvec: how often should a sourdough starter be fed",
}


class FakeLLMServer:
    def __init__(self, latency: float = 0.0, batch_polls: int = 1) -> None:
        self.latency = latency
        self.batch_polls = batch_polls
        self.faults: dict[str, list[str]] = {}
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, path_part: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path_part in r["path"])

    # ------------------------------------------------------------------ dispatch

    def _next_behaviour(self, query: str) -> str:
        with self.lock:
            for key, script in self.faults.items():
                if key in query and script:
                    return script.pop(0)
        return "ok"

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        with self.lock:
            self.requests.append({"path": h.path, "method": method, "body": body})
            self.headers.append({k.lower(): v for k, v in h.headers.items()})
        path = h.path.split("?")[0]
        try:
            if path.endswith("/chat/completions"):
                self._chat(h, body, "openai")
            elif path == "/api/chat":
                self._chat(h, body, "ollama")
            elif path == "/api/show":
                self._send(h, 200, {"model_info": {}, "details": {}, "template": ""})
            elif path == "/v1/messages":
                self._chat(h, body, "anthropic")
            elif path.startswith("/v1/messages/batches"):
                self._batches(h, method, path, body)
            else:
                self._send(h, 404, {"error": f"no route {path}"})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(
        self, h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    @staticmethod
    def _query(body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    return "".join(part.get("text", "") for part in content if isinstance(part, dict))
                return str(content)
        return ""

    def _chat(self, h: BaseHTTPRequestHandler, body: dict[str, Any], api: str) -> None:
        query = self._query(body)
        behaviour = self._next_behaviour(query)
        if self.latency:
            time.sleep(self.latency)
        name, _, arg = behaviour.partition(":")
        if name == "429":
            self._send(
                h,
                429,
                {"error": {"type": "rate_limit_error", "message": "slow down"}},
                {"Retry-After": arg or "1"},
            )
            return
        if name == "500":
            self._send(h, 500, {"error": {"type": "api_error", "message": "boom"}})
            return
        if name in ("echo401", "echo500"):  # a careless proxy: the request headers in the error body
            key = h.headers.get("Authorization") or h.headers.get("x-api-key")
            seen = {k: v for k, v in h.headers.items()}
            message = f"rejected credentials {key}; request headers {seen}"
            self._send(h, int(name[4:]), {"error": {"type": "api_error", "message": message}})
            return
        if name == "slow":
            time.sleep(float(arg or 5))
        if name == "badjson":
            self._send(h, 200, b'{"choices": [ {"message": ')
            return
        if name == "truncated":
            payload = json.dumps(self._payload(api, body, good_answer(query))).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload[: len(payload) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        text = "Sure! Here are some search ideas for you." if name == "wrongformat" else good_answer(query)
        text = DEGENERATE.get(name, text)
        self._send(h, 200, self._payload(api, body, text))

    @staticmethod
    def _payload(api: str, body: dict[str, Any], text: str) -> dict[str, Any]:
        model = body.get("model", "m")
        if api == "openai":
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
            }
        if api == "ollama":
            return {
                "model": model,
                "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": text},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 100,
                "eval_count": 50,
            }
        return message_payload(model, text)

    # ------------------------------------------------------------------ batches

    def _batches(self, h: BaseHTTPRequestHandler, method: str, path: str, body: dict[str, Any]) -> None:
        parts = path.strip("/").split("/")  # v1 messages batches [id] [results]
        if method == "POST" and len(parts) == 3:
            batch_id = f"msgbatch_{len(self.batches) + 1:04d}"
            self.batches[batch_id] = {"requests": body["requests"], "polls": 0}
            self._send(h, 200, self._batch_object(batch_id, ended=False))
            return
        batch_id = parts[3]
        batch = self.batches.get(batch_id)
        if batch is None:
            self._send(h, 404, {"type": "error", "error": {"type": "not_found_error", "message": "no batch"}})
            return
        if len(parts) == 4:
            batch["polls"] += 1
            self._send(h, 200, self._batch_object(batch_id, ended=batch["polls"] > self.batch_polls))
            return
        lines = []
        for request in batch["requests"]:
            query = self._query(request["params"])
            behaviour = self._next_behaviour(query)
            if behaviour == "errored":
                result = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": "api_error", "message": "x"}},
                }
            else:
                text = "no idea" if behaviour == "wrongformat" else good_answer(query)
                result = {"type": "succeeded", "message": message_payload(request["params"]["model"], text)}
            lines.append(json.dumps({"custom_id": request["custom_id"], "result": result}))
        data = ("\n".join(lines) + "\n").encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/binary")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _batch_object(self, batch_id: str, ended: bool) -> dict[str, Any]:
        n = len(self.batches[batch_id]["requests"])
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else n,
                "succeeded": n if ended else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T00:01:00Z" if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }


def message_payload(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 50,
            "cache_read_input_tokens": 80,
            "cache_creation_input_tokens": 0,
        },
    }
