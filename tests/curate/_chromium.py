"""A small driver for the system's headless Chromium over the DevTools protocol (websocket via
aiohttp): open a page, collect console errors and exceptions, run JavaScript, take screenshots.

Run as a script to screenshot a report: ``python tests/curate/_chromium.py report.html outdir``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


def chromium_path() -> str | None:
    """``$QMD_CHROMIUM`` or the Debian ``chromium`` on PATH (never a downloaded browser)."""
    return os.environ.get("QMD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab of a running Chromium; events are kept so the test can read console errors."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: str, reader: dict[str, Any]) -> None:
        self.ws, self.session, self.reader = ws, session, reader
        self.errors: list[str] = []

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        return await self.reader["call"](method, params or {}, self.session, timeout)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise TimeoutError(f"page never satisfied {expression!r}; errors: {self.errors}")

    async def goto(self, url: str) -> None:
        loaded = self.reader["expect"]("Page.loadEventFired", self.session)
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(loaded, 60)

    async def screenshot(self, path: Path, selector: str | None = None, max_height: float = 2400) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if selector is not None:
            box = await self.evaluate(
                f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                " const r = e.getBoundingClientRect();"
                " return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; })()"
            )
            params["clip"] = {**box, "height": min(box["height"], max_height), "scale": 1}
        data = await self.send("Page.captureScreenshot", params)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


class Chromium:
    """``async with Chromium() as browser: page = await browser.new_page()``."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900) -> None:
        exe = executable or chromium_path()
        if exe is None:
            raise FileNotFoundError(
                "chromium is not installed (apt-get install -y chromium; `make test` does it)"
            )
        self.exe, self.width, self.height = exe, width, height
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.waiters: list[tuple[str, str | None, asyncio.Future]] = []
        self.pages: dict[str, Page] = {}

    async def __aenter__(self) -> Chromium:
        self.profile = tempfile.TemporaryDirectory(prefix="qmd-chromium-", ignore_cleanup_errors=True)
        # its own session: closing ends the whole process tree (renderers and the crash
        # handler keep writing into the profile after the browser process has gone)
        self.process = subprocess.Popen(
            [self.exe, *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        url = await asyncio.get_running_loop().run_in_executor(None, self._devtools_url)
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(url, max_msg_size=0)
        self.listener = asyncio.create_task(self._listen())
        return self

    def _devtools_url(self) -> str:
        assert self.process.stderr is not None
        seen = []
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace")
            seen.append(line)
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                threading_drain(self.process.stderr)
                return match.group(1)
        raise RuntimeError("chromium exited before DevTools started:\n" + "".join(seen[-20:]))

    async def __aexit__(self, *exc: object) -> None:
        self.listener.cancel()
        await self.ws.close()
        await self.http.close()
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._signal_group(signal.SIGKILL)
        for _ in range(20):
            shutil.rmtree(self.profile.name, ignore_errors=True)
            if not os.path.exists(self.profile.name):
                break
            time.sleep(0.1)
        self.profile.cleanup()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    async def _listen(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self.pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(f"{data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            method, session = data.get("method", ""), data.get("sessionId")
            page = self.pages.get(session or "")
            params = data.get("params", {})
            if page is not None:
                if method == "Runtime.exceptionThrown":
                    details = params["exceptionDetails"]
                    page.errors.append(
                        f"exception: {details.get('exception', {}).get('description') or details}"
                    )
                elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    page.errors.append("console: " + " ".join(str(a.get("value", a)) for a in params["args"]))
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    page.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            for waiter in list(self.waiters):
                if waiter[0] == method and waiter[1] == session and not waiter[2].done():
                    waiter[2].set_result(params)
                    self.waiters.remove(waiter)

    async def call(
        self, method: str, params: dict[str, Any], session: str | None, timeout: float
    ) -> dict[str, Any]:
        message_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, timeout)

    def expect(self, method: str, session: str | None) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((method, session, future))
        return future

    async def new_page(self) -> Page:
        target = await self.call("Target.createTarget", {"url": "about:blank"}, None, 30)
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, None, 30
        )
        session = attached["sessionId"]
        page = Page(self.ws, session, {"call": self.call, "expect": self.expect})
        self.pages[session] = page
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page


def threading_drain(stream: Any) -> None:
    """Keep reading chromium's stderr so a full pipe never blocks it."""
    import threading

    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()


async def _screenshots(html: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    async with Chromium(height=1000) as browser:
        page = await browser.new_page()
        await page.goto(html.resolve().as_uri())
        await page.wait_for(
            "document.querySelector('#browser') === null || document.querySelector('#browser').dataset.ready === '1'"
        )
        shots = []
        for name, selector in (
            ("top", None),
            ("funnel", "#run ~ .grid"),
            ("before-after", "#before-after ~ .grid"),
            ("categories", "#categories ~ .grid"),
            ("lengths", "#lengths ~ .grid"),
            ("scores", "#scores ~ .grid"),
        ):
            if selector is None or await page.evaluate(f"!!document.querySelector({json.dumps(selector)})"):
                shots.append(await page.screenshot(out / f"{name}.png", selector))
        await page.evaluate(
            "(() => { const s = document.querySelector('#browser [name=status]'); s.value = 'rejected';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        shots.append(await page.screenshot(out / "browser-rejected.png", "#browser", max_height=1100))
        if page.errors:
            print("page errors:", *page.errors, sep="\n  ")
        return shots


if __name__ == "__main__":
    for shot in asyncio.run(_screenshots(Path(sys.argv[1]), Path(sys.argv[2]))):
        print(shot)
