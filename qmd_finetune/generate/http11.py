"""A lean HTTP/1.1 client for JSON POSTs to one server: keep-alive connections on asyncio's
Protocol API, no per-request objects beyond the response.

Why not aiohttp: at concurrency 64 the event loop of `generate expand` is the bottleneck, and
aiohttp's request path (request and response objects, header multidicts, stream readers,
payload writers, timers) cost about 0.4 ms of CPU per request on this 2-core machine, more
than everything else `expand` does per answer (bench/generate_runner.py). This client
builds the request as one bytes object, parses the response head once, and hands back the
body: what a chat completions call needs and nothing else.

What it speaks: HTTP/1.1 over TCP or TLS (``https://``, verified with the system's CA store,
which ``SSL_CERT_FILE`` extends), ``Content-Length`` or ``chunked`` bodies, a body delimited
by the connection's close, ``gzip``/``deflate`` content encodings, ``Connection: close`` and
HTTP/1.0 servers. A request on a reused keep-alive connection that the server closed while it
was idle is sent once more on a new connection (nothing was received for it, so it was not
handled). No proxies, redirects or cookies (aiohttp was used without them too).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MAX_HEAD = 64 * 1024
"""A response head longer than this is not HTTP we can read (the connection is dropped)."""


class HttpError(Exception):
    """The connection failed or the server's answer is not HTTP/1.x: retryable by the caller."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.received = False  # any byte of the current response
        self.keep_alive = True
        # The response being read: its head, once parsed.
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._length: int | None = None
        self._chunked = False
        self._until_close = False

    # ---------------------------------------------------------------- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Bytes nobody asked for (a server talking out of turn): this connection is unusable.
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        self.received = True
        self.buffer += data
        try:
            self._parse()
        except HttpError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        if self._headers is not None and self._until_close and exc is None:
            self._finish(bytes(self.buffer))  # a clean close ends a close-delimited body; a reset does not
            return
        reason = f"{type(exc).__name__}: {exc}" if exc else "server closed the connection"
        self._fail(HttpError(reason))

    # ---------------------------------------------------------------- one exchange

    def send(self, request: bytes, waiter: asyncio.Future[Response]) -> None:
        self.waiter = waiter
        self.received = False
        self._headers = None
        assert self.transport is not None
        self.transport.write(request)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _finish(self, body: bytes) -> None:
        headers = self._headers or {}
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            try:
                # gzip framing, zlib framing, or raw deflate (servers disagree on "deflate").
                wbits = 31 if "gzip" in encoding else (15 if body[:1] == b"\x78" else -15)
                body = zlib.decompress(body, wbits)
            except zlib.error as exc:
                self._fail(HttpError(f"cannot decode a {encoding} body: {exc}"))
                return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, headers, body))

    def _parse(self) -> None:
        while True:
            if self._headers is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        raise HttpError("response head too long")
                    return
                self._head(bytes(self.buffer[:end]))
                del self.buffer[: end + 4]
                if self._headers is None:
                    continue  # an informational 1xx head: the real one follows
            if self._until_close:
                return  # connection_lost delivers the body
            if self._chunked:
                body = self._dechunk()
                if body is None:
                    return
                self._finish(body)
                return
            length = self._length or 0
            if len(self.buffer) < length:
                return
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
            self._finish(body)
            return

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpError("not an HTTP/1.x response")  # never echoed: it could hold anything
        status = int(parts[1])
        if 100 <= status < 200:
            self._headers = None
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        self._status = status
        self._headers = headers
        connection = headers.get("connection", "").lower()
        self.keep_alive = (
            parts[0] == b"HTTP/1.1" and "close" not in connection
        ) or "keep-alive" in connection
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._length = None
        self._until_close = False
        if status in (204, 304):
            self._length = 0
        elif not self._chunked:
            raw = headers.get("content-length")
            if raw is not None:
                if not raw.isdigit():
                    raise HttpError("bad Content-Length")
                self._length = int(raw)
            else:
                self._until_close = True
                self.keep_alive = False

    def _dechunk(self) -> bytes | None:
        """The whole chunked body once it is all in the buffer (None until then)."""
        out = bytearray()
        pos = 0
        buffer = self.buffer
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size_text = bytes(buffer[pos:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError("bad chunk size") from None
            start = line_end + 2
            if size == 0:
                # Trailers (usually none) end with an empty line.
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if buffer[start : start + 2] == b"\r\n":
                    del buffer[: start + 2]
                elif trailer_end >= 0:
                    del buffer[: trailer_end + 4]
                else:
                    return None
                return bytes(out)
            if len(buffer) < start + size + 2:
                return None
            out += buffer[start : start + size]
            pos = start + size + 2


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an API base (never echoing it: it may hold credentials), or None."""
    parts = urlsplit(url)
    try:
        _ = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        return "the API base URL has a port that is not a number"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the API base must be an http:// or https:// URL with a host"
    return None


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Client:
    """POST JSON bodies to one ``http(s)://host[:port]`` with a pool of keep-alive connections."""

    def __init__(self, url: str, headers: dict[str, str], pool_size: int = 100) -> None:
        problem = url_problem(url)
        if problem:
            raise ValueError(problem)
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if default_port else f"{host}:{self.port}"
        fixed = {"Host": authority, "User-Agent": "qmd-finetune", "Accept": "application/json"}
        if parts.username is not None and not any(k.lower() == "authorization" for k in headers):
            # Credentials in the URL are sent as HTTP Basic auth (as aiohttp did).
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            fixed["Authorization"] = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        fixed.update(headers)
        for name, value in fixed.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"the {name} header would hold a line break (check the API key)")
        head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items() if k.lower() != "content-length")
        self._head = f"POST {self.path} HTTP/1.1\r\n{head}".encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._open: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        self._open.add(connection)
        return connection

    async def post(self, body: bytes, timeout: float | None = None) -> Response:
        """One request. Raises HttpError (connection, protocol) or TimeoutError when ``timeout``
        seconds pass before the whole answer is in; a connection left mid-exchange (a timeout, a
        cancellation) is dropped. The deadline is one timer per request, not ``asyncio.timeout``
        (its scope objects were about 7% of the event loop at concurrency 64)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        request = b"".join((self._head, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))
        if self._slots.locked() and deadline is not None:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, deadline - loop.time()))
        else:
            await self._slots.acquire()
        try:
            for attempt in range(3):
                reused = False
                connection = None
                while self._idle:
                    candidate = self._idle.pop()
                    if not candidate.closed:
                        connection, reused = candidate, True
                        break
                    self._open.discard(candidate)
                if connection is None:
                    if deadline is None:
                        connection = await self._connect()
                    else:
                        connection = await asyncio.wait_for(self._connect(), max(0.0, deadline - loop.time()))
                waiter: asyncio.Future[Response] = loop.create_future()
                timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
                try:
                    connection.send(request, waiter)
                    response = await waiter
                except HttpError:
                    self._drop(connection)
                    if reused and not connection.received and attempt < 2:
                        continue  # the server closed it while idle: the request never reached it
                    raise
                except BaseException:
                    self._drop(connection)  # a timeout or cancellation mid-exchange: its state is unknown
                    raise
                finally:
                    if timer is not None:
                        timer.cancel()
                if connection.keep_alive and not connection.closed:
                    self._idle.append(connection)
                else:
                    self._drop(connection)
                return response
        finally:
            self._slots.release()
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def _drop(self, connection: _Connection) -> None:
        connection.closed = True
        connection.waiter = None
        if connection.transport is not None:
            connection.transport.close()
        self._open.discard(connection)

    async def close(self) -> None:
        for connection in list(self._open):
            self._drop(connection)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks
