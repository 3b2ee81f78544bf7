"""The lean HTTP/1.1 client (`generate/http11.py`) against real sockets: a scripted TCP server
on 127.0.0.1 answers each request with exact bytes, so every framing a server may use is
checked on the wire (Content-Length, chunked, close-delimited, gzip, HTTP/1.0, 1xx, TLS)."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qmd_finetune.generate.http11 import Client, HttpError
from qmd_finetune.generate.providers import OpenAICompatProvider, ProviderConfig, ProviderError

BODY = b'{"choices": [{"message": {"content": "lex: a"}}]}'

Reply = Callable[[socket.socket, bytes, int], bool]
"""Writes the answer to one request (its head and body, and its index on the connection);
returns whether to keep reading requests on this connection."""


def read_request(conn: socket.socket, buffer: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buffer) < end + length:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    request = bytes(buffer[: end + length])
    del buffer[: end + length]
    return request


class Scripted:
    """A threaded TCP server whose every connection runs ``reply`` per request."""

    def __init__(self, reply: Reply, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = self.request
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                outer.connections += 1
                buffer = bytearray()
                index = 0
                while True:
                    request = read_request(conn, buffer)
                    if request is None:
                        return
                    outer.requests.append(request)
                    if not reply(conn, request, index):
                        conn.close()
                        return
                    index += 1

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(reply: Reply, tls: ssl.SSLContext | None = None) -> Scripted:
        servers.append(Scripted(reply, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def fixed(raw: bytes, keep: bool = True) -> Reply:
    def reply(conn: socket.socket, request: bytes, index: int) -> bool:
        conn.sendall(raw)
        return keep

    return reply


def post(port: int, body: bytes = b"{}", scheme: str = "http", times: int = 1, **kw):
    async def go():
        client = Client(
            f"{scheme}://127.0.0.1:{port}/v1/chat/completions", {"Content-Type": "application/json"}, **kw
        )
        try:
            return [await client.post(body) for _ in range(times)]
        finally:
            await client.close()

    return asyncio.run(go())


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def test_the_request_on_the_wire_and_keep_alive(scripted) -> None:
    server = scripted(fixed(ok()))
    responses = post(server.port, b'{"model": "m"}', times=3)
    assert [r.status for r in responses] == [200, 200, 200] and responses[0].body == BODY
    assert server.connections == 1  # one keep-alive connection served all three
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: 14" in lines and b"Content-Type: application/json" in lines
    assert body == b'{"model": "m"}'


def test_chunked_close_delimited_gzip_deflate_and_http10(scripted) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (BODY[:7], BODY[7:20], BODY[20:]))
    chunked += b"0\r\nX-Trailer: 1\r\n\r\n"
    cases = {
        "chunked": (fixed(chunked), True),
        "close-delimited": (fixed(b"HTTP/1.1 200 OK\r\n\r\n" + BODY, keep=False), False),
        "gzip": (fixed(ok(gzip.compress(BODY), b"Content-Encoding: gzip\r\n")), True),
        "deflate": (fixed(ok(zlib.compress(BODY), b"Content-Encoding: deflate\r\n")), True),
        "http/1.0": (fixed(ok().replace(b"HTTP/1.1", b"HTTP/1.0"), keep=False), False),
        "connection close": (fixed(ok(extra=b"Connection: close\r\n"), keep=False), False),
        "100 continue first": (fixed(b"HTTP/1.1 100 Continue\r\n\r\n" + ok()), True),
    }
    for name, (reply, reused) in cases.items():
        server = scripted(reply)
        responses = post(server.port, times=2)
        assert [r.body for r in responses] == [BODY, BODY], name
        assert server.connections == (1 if reused else 2), name


def test_a_keep_alive_connection_the_server_closed_while_idle_is_replaced(scripted) -> None:
    # The server answers one request per connection and then closes it without saying so: the
    # second request finds its pooled connection dead and goes out once more on a new one.
    server = scripted(fixed(ok(), keep=False))

    async def go():
        client = Client(f"http://127.0.0.1:{server.port}/x", {})
        try:
            first = await client.post(b"{}")
            await asyncio.sleep(0.2)  # the close reaches the client while the connection is idle
            second = await client.post(b"{}")
            third = await client.post(b"{}")  # and without the pause (a race the client must survive)
            return first, second, third
        finally:
            await client.close()

    responses = asyncio.run(go())
    assert [r.body for r in responses] == [BODY] * 3
    assert len(server.requests) == 3 and server.connections == 3


def test_a_server_that_drops_the_connection_mid_answer_is_a_connection_error(scripted) -> None:
    def cut(conn: socket.socket, request: bytes, index: int) -> bool:
        conn.sendall(ok()[:-10])
        return False

    server = scripted(cut)
    with pytest.raises(HttpError, match="server closed the connection"):
        post(server.port)
    assert len(server.requests) == 1  # a fresh connection that failed is not silently re-sent


def test_a_close_delimited_body_cut_by_a_reset_is_a_connection_error(scripted) -> None:
    def reset(conn: socket.socket, request: bytes, index: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + BODY[:10])
        threading.Event().wait(0.2)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        return False

    server = scripted(reset)
    with pytest.raises(HttpError, match="ConnectionResetError"):
        post(server.port)


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH_9.6 sk-test-secret\r\n\r\n",  # not HTTP; the line is never echoed
        b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
    ],
)
def test_unreadable_answers_fail_in_one_line_without_echoing_them(scripted, raw: bytes) -> None:
    server = scripted(fixed(raw, keep=False))
    with pytest.raises(HttpError) as info:
        post(server.port)
    message = str(info.value)
    assert "\n" not in message and "secret" not in message and "SSH" not in message


@pytest.mark.parametrize("how", ["post timeout", "caller cancels"])
def test_a_timeout_mid_answer_drops_the_connection_and_the_next_request_works(scripted, how: str) -> None:
    def slow_first(conn: socket.socket, request: bytes, index: int) -> bool:
        if index == 0 and len(scripted_state) == 0:
            scripted_state.append(1)
            conn.sendall(ok()[:20])  # half a head, then nothing
            threading.Event().wait(1.0)
            return False
        conn.sendall(ok())
        return True

    scripted_state: list[int] = []
    server = scripted(slow_first)

    async def go():
        client = Client(f"http://127.0.0.1:{server.port}/x", {})
        try:
            with pytest.raises(TimeoutError):
                if how == "post timeout":
                    await client.post(b"{}", timeout=0.3)
                else:
                    async with asyncio.timeout(0.3):
                        await client.post(b"{}")
            return await client.post(b"{}", timeout=5.0)
        finally:
            await client.close()

    assert asyncio.run(go()).body == BODY
    assert server.connections == 2


def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(HttpError, match="ConnectionRefusedError"):
            post(port)


def test_tls_is_verified_against_the_ca_store(scripted, tmp_path: Path, monkeypatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = scripted(fixed(ok()), tls=tls)
    with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
        post(server.port, scheme="https")  # a self-signed certificate the system does not trust
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted by the user: the same request passes
    assert [r.body for r in post(server.port, scheme="https", times=2)] == [BODY, BODY]


def test_the_provider_sends_the_key_and_never_writes_it(scripted, monkeypatch) -> None:
    secret = "sk-test-DO-NOT-LEAK-0a1b2c"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    echo = json.dumps({"error": f"bad key {secret}"}).encode()
    server = scripted(fixed(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n" % len(echo) + echo))
    provider = OpenAICompatProvider(
        ProviderConfig(model="openai/m", api_base=f"http://127.0.0.1:{server.port}/v1")
    )

    async def go():
        from qmd_finetune.generate.providers import GenerationParams

        try:
            await provider.complete([{"role": "user", "content": "q"}], GenerationParams(max_tokens=8), 5.0)
        finally:
            await provider.aclose()

    with pytest.raises(ProviderError) as info:
        asyncio.run(go())
    assert f"Authorization: Bearer {secret}".encode() in server.requests[0]
    assert info.value.status == 401 and not info.value.retryable
    assert secret not in str(info.value)


def test_credentials_in_the_url_are_sent_as_basic_auth(scripted) -> None:
    server = scripted(fixed(ok()))

    async def go():
        client = Client(f"http://us%40er:p%3Ass@127.0.0.1:{server.port}/v1/chat/completions", {})
        try:
            return await client.post(b"{}")
        finally:
            await client.close()

    assert asyncio.run(go()).body == BODY
    assert b"Authorization: Basic dXNAZXI6cDpzcw==" in server.requests[0]  # base64 of "us@er:p:ss"


@pytest.mark.parametrize(
    ("api_base", "key", "message"),
    [
        ("ftp://user:hunter2@example.com/v1", "k", "the API base must be an http:// or https:// URL"),
        ("http://user:hunter2@example.com:port/v1", "k", "has a port that is not a number"),
        ("http://127.0.0.1:9/v1", "sk-abc\r\nX-Evil: 1", "header would hold a line break"),
    ],
)
def test_a_bad_api_base_or_key_fails_before_any_request_in_one_line(
    tmp_path, monkeypatch, api_base: str, key: str, message: str
) -> None:
    from typer.testing import CliRunner

    from qmd_finetune.generate.cli import app

    monkeypatch.setenv("OPENAI_API_KEY", key)
    queries = tmp_path / "q.txt"
    queries.write_text("docker compose networking\n", encoding="utf-8")
    args = ["expand", "--model", "openai/m", "--api-base", api_base, "--queries", str(queries)]
    args += ["--output", str(tmp_path / "out.jsonl"), "--no-progress", "--no-cache"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert message in text and "hunter2" not in text and "Traceback" not in result.output
    assert not (tmp_path / "out.jsonl").exists() or not (tmp_path / "out.jsonl").read_text()
