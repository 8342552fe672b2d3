"""Drive Debian's headless chromium over its DevTools protocol: open a report, read its console errors and charts."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, binary: str, timeout: float = 60.0):
        self.profile = tempfile.mkdtemp(prefix="loadgrid-chromium-")
        self.log = open(Path(self.profile) / "stderr.log", "w+b")  # noqa: SIM115 (closed in close())
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"]
        # The shell moves our stdin/stdout pipes to fds 3 and 4, where Chromium expects the protocol.
        self.proc = subprocess.Popen(
            ["sh", "-c", 'exec 3<&0 4>&1 0</dev/null 1>/dev/null; exec "$0" "$@"', binary, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self.proc.stdin.flush()
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str | None = None) -> dict:
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def _read(self) -> dict:
        fd = self.proc.stdout.fileno()
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(f"chromium stopped answering; its log:\n{self.stderr()[-2000:]}")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise TimeoutError(f"chromium closed the pipe; its log:\n{self.stderr()[-2000:]}")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def stderr(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


CHART_PROBE = """JSON.stringify({
  charts: Array.from(document.querySelectorAll('svg.chart')).map(function (svg) {
    var box = svg.getBoundingClientRect();
    return {title: svg.getAttribute('aria-label'), width: box.width, height: box.height,
            lines: Array.from(svg.querySelectorAll('path.series')).map(function (p) { return p.getTotalLength(); }),
            markers: svg.querySelectorAll('circle').length,
            fails: Array.from(svg.querySelectorAll('path.fail')).map(function (p) {
              var b = p.getBoundingClientRect(); return b.width > 0 && b.height > 0; }),
            notes: Array.from(svg.querySelectorAll('g.note text')).map(function (t) { return t.textContent; }),
            targets: svg.querySelectorAll('line.target').length};
  }),
  rows: document.querySelectorAll('table.runs tbody tr').length,
  excluded: document.querySelectorAll('table.runs tbody tr.excluded').length,
  conclusions: Array.from(document.querySelectorAll('ul.conclusions li')).map(function (li) {
    return li.textContent; }),
  filter: !!document.querySelector('.filter input'),
  overflowX: document.documentElement.scrollWidth > window.innerWidth + 1
})"""


def open_report(binary: str, page: Path, screenshot: Path | None = None, width: int = 1280,
                javascript: bool = True) -> dict:
    """Load `page` from the file system; return what the page shows, its console errors and its requests."""
    tools = DevTools(binary)
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.send(f"{domain}.enable", {}, session)
        tools.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        if not javascript:
            tools.send("Emulation.setScriptExecutionDisabled", {"value": True}, session)
        tools.send("Page.navigate", {"url": page.resolve().as_uri()}, session)
        tools.wait_for("Page.loadEventFired", session)
        if not javascript:  # the probe itself is script: let it run once the page has loaded without any
            tools.send("Emulation.setScriptExecutionDisabled", {"value": False}, session)
        probe = tools.send("Runtime.evaluate", {"expression": CHART_PROBE, "returnByValue": True}, session)
        result = json.loads(probe["result"]["value"])
        if screenshot is not None:
            size = tools.send("Page.getLayoutMetrics", {}, session)["cssContentSize"]
            tools.send("Emulation.setDeviceMetricsOverride",
                       {"width": width, "height": min(int(size["height"]), 16000), "deviceScaleFactor": 1,
                        "mobile": False}, session)
            shot = tools.send("Page.captureScreenshot", {"format": "png"}, session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        events = [e for e in tools.events if e.get("sessionId") == session]
        errors = []
        for e in events:
            params = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif e.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif e.get("method") == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(params["entry"].get("text", ""))
        requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
        result.update(errors=errors, requests=requests)
        return result
    finally:
        tools.close()


def check_page(result: dict, variants: int, javascript: bool = True, offered: int = 0) -> None:
    assert result["errors"] == [], result["errors"]
    remote = [u for u in result["requests"] if not u.startswith(("file:", "data:", "about:"))]
    assert remote == [], f"the page fetched from the network: {remote}"
    # throughput, p50 and p95 per variant, the scaling chart, and latency + throughput vs offered rate per variant
    assert len(result["charts"]) == 3 * variants + 1 + 2 * offered
    for chart in result["charts"]:
        assert chart["width"] > 300 and chart["height"] > 150, chart
        # a series of one point is a zero-length path: its marker is what shows
        assert chart["lines"] and chart["markers"] > 0, chart
    assert result["filter"] == javascript, "the table filter script did not run"
    assert not result["overflowX"], "the page scrolls sideways"
