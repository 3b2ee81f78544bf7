"""A local OpenAI-compatible chat server (127.0.0.1, random port) whose replies depend on the prompt.

The fake model is deterministic and "learns" from the rubric's rules, so an optimization against it
has a known answer: the seed prompt yields echoing, chatty replies; each rubric rule present in the
system prompt fixes one problem.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qmd_finetune.gepa.rubric import RULES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

Reply = Callable[[str, str], str]


def rule_following_reply(system: str, user: str) -> str:
    """Replies that get better with each rubric rule the prompt carries."""
    query = user.strip()
    lines = [] if RULES["format"] in system else ["Sure! Here are some expansions for your query:"]
    if RULES["echo"] in system:
        lines += [f"lex: {query} configuration reference", f"lex: {query} tutorial examples walkthrough"]
        lines += [f"vec: how do people usually approach {query} in practice"]
    else:
        lines += [f"lex: {query}", f"vec: {query}"]
    if RULES["hyde"] in system:
        lines.insert(
            0 if RULES["format"] in system else 1,
            f"hyde: A short passage explaining {query} with the details a reader needs.",
        )
    return "\n".join(lines)


class FakeChatServer:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with server.lock:
                    server.requests.append(body)
                messages = body.get("messages", [])
                system = "\n".join(m.get("content", "") for m in messages if m.get("role") == "system")
                user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
                text = server.reply(system, user)
                payload = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server() -> Iterator[FakeChatServer]:
    with FakeChatServer(rule_following_reply) as server:
        yield server


@pytest.fixture
def slow_chat_server() -> Iterator[FakeChatServer]:
    """The same model, 0.3 s per reply: slow enough to kill a run in the middle."""

    def slow(system: str, user: str) -> str:
        time.sleep(0.3)
        return rule_following_reply(system, user)

    with FakeChatServer(slow) as server:
        yield server


QUERIES = [
    "docker compose networking",
    "who is TDS motorsports",
    "git rebase vs merge",
    "React hooks tutorial",
    "kubernetes pod restart loop",
    "python asyncio timeout",
    "best pizza in Naples",
    "ssh key authentication",
]


@pytest.fixture
def query_file(tmp_path: Path) -> Path:
    path = tmp_path / "queries.txt"
    path.write_text("# test queries\n" + "\n".join(QUERIES) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def reply_server() -> Iterator[Callable[[Reply], FakeChatServer]]:
    """Start a server with a given reply function (stopped after the test)."""
    servers: list[FakeChatServer] = []

    def start(reply: Reply) -> FakeChatServer:
        server = FakeChatServer(reply).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
