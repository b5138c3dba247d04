"""A headless Chromium driven over the DevTools protocol (websocket-client), for the HTML report tests."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--hide-scrollbars"]


DEBIAN_CHROMIUM = Path("/usr/bin/chromium")


def chromium_or_skip() -> str:
    """The Chromium binary; a clear skip when it is absent, a failure when VLMAUDIT_REQUIRE_CHROMIUM is set (CI)."""
    found = shutil.which("chromium") or (DEBIAN_CHROMIUM.is_file() and str(DEBIAN_CHROMIUM))
    if found:
        return found
    if os.environ.get("VLMAUDIT_REQUIRE_CHROMIUM"):
        pytest.fail("VLMAUDIT_REQUIRE_CHROMIUM is set but no chromium binary was found (apt-get install chromium)")
    pytest.skip("chromium not installed (Debian: apt-get install chromium; CI installs it and sets "
                "VLMAUDIT_REQUIRE_CHROMIUM=1)")


class Browser:
    """One page of a headless Chromium: navigate, evaluate, click, screenshot; records console
    errors, uncaught exceptions and every network request the page makes."""

    def __init__(self, binary: str, profile: Path, width: int = 1200, height: int = 900):
        import websocket

        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = self._port(profile)
        pages = self._targets(port)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], suppress_origin=True, timeout=120)
        self.next_id, self.errors, self.requests, self.events = 0, [], [], []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _port(self, profile: Path) -> int:
        marker = profile / "DevToolsActivePort"
        for _ in range(1200):
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    def _targets(self, port: int) -> list:
        for _ in range(600):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return pages
            time.sleep(0.1)
        raise RuntimeError("chromium has no page")

    def call(self, method: str, **params):
        self.next_id += 1
        wanted = self.next_id
        self.ws.send(json.dumps({"id": wanted, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv())
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        self.events.append(method)
        return message

    def open(self, path: Path) -> None:
        self.events = []
        self.call("Page.navigate", url=path.resolve().as_uri())
        while "Page.loadEventFired" not in self.events:
            self._receive()
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str, index: int = 0) -> None:
        """A real mouse click (pressed + released) at the centre of the element."""
        box = self.evaluate(f"(() => {{const e = document.querySelectorAll({json.dumps(selector)})[{index}];"
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                            "return [r.x + r.width / 2, r.y + r.height / 2];})()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, out: Path) -> Path:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 12000), "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
