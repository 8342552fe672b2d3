"""A run's own report: Locust's HTML with the stack's telemetry added below it (loadgrid/run_page.py).

The Locust report is a real one: Locust runs headless for 2 s through `loadgrid.load.run` against a tiny HTTP
server on 127.0.0.1 that answers like the model service.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadgrid import load, report, run_page, store
from loadgrid.monitor import Telemetry
from loadgrid.plan import RunSpec
from loadgrid.store import Incident, LoadReport, ReplicaReport, RunRecord, StackReport, Validity

ROOT = Path(__file__).resolve().parents[1]
ANSWER = json.dumps({"predictions": [{"label": "tabby cat", "score": 0.62}]}).encode()


class Predict(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (the name http.server calls)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def locust_run(tmp_path_factory):
    """A real Locust report of 2 s (2 users) and its totals, written by loadgrid's own Locust path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Predict)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec = RunSpec("cpu", 2, 2, 2.0, 2)
        files = load.RunFiles.for_run(spec, tmp_path_factory.mktemp("locust"))
        env = load.locust_env(ROOT / "images", "/predict", files)
        result = load.run(spec, f"http://127.0.0.1:{server.server_address[1]}", ROOT / "locustfile.py", files, env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.error is None and result.requests > 0, result
    return files, result


def make_record(result: load.LoadResult, **changes) -> RunRecord:
    values = dict(
        id="cpu/2_2_2", variant="cpu", models=2, users=2, spawn_rate=2.0, run_time_s=2, host="http://127.0.0.1",
        status="completed", started_at="2026-01-01T10:00:00+00:00", ended_at="2026-01-01T10:00:03+00:00",
        stack=StackReport("loadgrid-cpu", ["docker-compose.yml"], 2, 1, {}, [
            ReplicaReport("abc123", "loadgrid-cpu-model-1", "running", "healthy", 0, "CPUExecutionProvider", "cpu",
                          None, 80),
            ReplicaReport("def456", "loadgrid-cpu-model-2", "exited", None, 0)]),
        load=LoadReport(result.locust_exit, result.requests, result.failures, result.rps, result.duration_s,
                        result.latency_ms, result.failure_messages, window=result.window, whole_run=result.whole_run,
                        generator={**result.generator.to_dict(), "cpu_pct_mean": 72.5, "cpu_pct_max": 96.0}),
        validity=Validity(False, ["client-bound: Locust used 72% of its 1 core(s) (limit 60%), so the numbers measure "
                                  "the load generator; raise locust_processes or give it more cores",
                                  "replica loadgrid-cpu-model-2 died during the run (exit code 137, OOM-killed)"],
                          client_bound=True),
        files={"html": "2_2_2.html", "telemetry": "2_2_2.telemetry.json"},
        incidents=[Incident("def456", "loadgrid-cpu-model-2", "died", 0.0, 137, True,
                            ["INFO: POST /predict 200", "<script>alert('log')</script> Killed"])],
    )
    values.update(changes)
    return RunRecord(**values)


def series_for(result: load.LoadResult, gpus: bool = False) -> tuple[dict, Telemetry]:
    """Samples a second apart around the run, as Monitor stores them (`<stem>.telemetry.json`)."""
    start = (result.window.start_at or time.time()) - 3
    t = Telemetry(gpu_absent_reason=None if gpus else "not a GPU run")
    for name, cpu, mem in (("loadgrid-cpu-gateway-1", 3.0, 12), ("loadgrid-cpu-model-1", 95.0, 310),
                           ("loadgrid-cpu-model-2", 90.0, 305)):
        t.containers[name] = [(start + i, cpu + i % 3, (mem + i) * 2**20) for i in range(8)]
    if gpus:
        for index, name in (("0", "NVIDIA A10G"), ("1", "Tesla T4")):
            t.gpus[index] = [{"t": start + i, "name": name, "util_pct": 80.0 + i, "mem_used_mb": 3000.0 + i,
                              "power_w": 150.0 + i} for i in range(8)]
    events = [{"time": start + 5, "container": "def456", "name": "loadgrid-cpu-model-2", "service": "model",
               "action": "die", "exit_code": 137}]
    return {"containers": t.containers, "gpus": t.gpus, "events": events}, t


def section_of(text: str) -> str:
    sections = re.findall(r"<!-- loadgrid:begin -->.*?<!-- loadgrid:end -->", text, flags=re.S)
    assert len(sections) == 1, len(sections)
    return sections[0]


def test_annotate_inserts_before_the_last_body_and_is_idempotent(locust_run, tmp_path):
    files, result = locust_run
    original = files.html.read_text()
    assert original.count("</body>") == 2  # Locust's bundle carries one inside a script: the last one is the page's
    page = tmp_path / "2_2_2.html"
    page.write_text(original)
    series, t = series_for(result)
    record = make_record(result, telemetry=t.summary())
    run_page.annotate(page, record, series)
    once = page.read_text()
    section = section_of(once)
    assert once.count("</body>") == 2
    assert once.index(section) > original.rindex("window.templateArgs")  # after Locust's app and its data
    assert once[once.index(section) + len(section):].lstrip().startswith("</body>")
    assert run_page.strip(once) == original  # nothing of Locust's page is changed
    run_page.annotate(page, record, series)
    assert page.read_text() == once  # idempotent
    # re-annotating replaces the section
    valid = make_record(result, validity=Validity(True, []), incidents=[], telemetry=t.summary())
    run_page.annotate(page, valid, series)
    again = page.read_text()
    assert "Verdict: valid" in section_of(again) and "Verdict: invalid" not in again
    # what could not be judged is shown with the verdict, not only stored
    unjudged = make_record(result, validity=Validity(True, [], unjudged=["another client: not judged (no <counter>)"]),
                           incidents=[], telemetry=t.summary())
    verdict = run_page._verdict(unjudged)
    assert "Not judged:" in verdict and "<li>another client: not judged (no &lt;counter&gt;)</li>" in verdict
    assert "Not judged" not in run_page._verdict(valid)
    assert run_page.strip(again) == original


def test_section_shows_telemetry_window_generator_incidents_and_verdict(locust_run, tmp_path):
    _, result = locust_run
    series, t = series_for(result)
    section = run_page.section(make_record(result, telemetry=t.summary()), series)
    charts = re.findall(r'<svg class="tchart".*?</svg>', section, flags=re.S)
    titles = [re.search(r'aria-label="([^"]*)"', c).group(1) for c in charts]
    assert titles == ["Locust CPU", "Locust event-loop lag (worst per second)", "CPU per container",
                      "Memory per container"]
    # the generator's own CPU and lag over time, from the real Locust run's record
    lag = result.generator.lag_ms
    assert f"p99 <b>{lag.p99:.2f} ms</b>" in section and f"over {lag.samples} wake-ups" in section
    assert charts[0].count('<path class="tseries"') == 1 and charts[1].count('<path class="tseries"') == 1
    for chart in charts[2:]:
        assert chart.count('<path class="tseries"') == 3 and "window start" in chart
        assert re.findall(r'class="legend">([^<]*)<', chart)[:3] == ["gateway-1", "model-1", "model-2"]
        assert 'class="window"' in chart and "loadgrid-cpu-model-2: die, exit code 137" in chart  # event marked
    assert "no GPU telemetry: not a GPU run" in section
    # the window's totals beside the whole run's
    assert "<th>measurement window</th><th>whole run (with ramp-up)</th>" in section
    assert f'<th class="l">requests</th><td>{result.requests}</td><td>{result.whole_run.requests}</td>' in section
    # the load generator
    assert "<b>72.5%</b> on average and 96% at most" in section and '<span class="badge">client-bound</span>' in section
    # incidents: exit code, OOM flag, last log lines (escaped)
    incident = re.search(r"<h3>Incidents</h3>(.*?)<h3>", section, flags=re.S).group(1)
    assert "<td>137</td><td>yes</td>" in incident and "INFO: POST /predict 200" in incident
    assert "&lt;script&gt;alert(&#39;log&#39;)&lt;/script&gt; Killed" in incident and "<script>" not in section
    assert "Verdict: invalid" in section and "died during the run (exit code 137, OOM-killed)" in section
    # the mean/max summary of the record
    assert '<td class="l">loadgrid-cpu-model-1</td><td>8</td><td>95.9</td><td>97</td>' in section


def test_section_is_self_contained(locust_run):
    _, result = locust_run
    series, t = series_for(result, gpus=True)
    section = run_page.section(make_record(result, telemetry=t.summary()), series)
    assert "<script" not in section and "<link" not in section and "url(" not in section and " src=" not in section
    assert set(re.findall(r"https?://[^\s\"'<>)]+", section)) == {"http://www.w3.org/2000/svg"}


def test_gpu_charts_when_sampled(locust_run):
    _, result = locust_run
    series, t = series_for(result, gpus=True)
    section = run_page.section(make_record(result, telemetry=t.summary()), series)
    titles = re.findall(r'<svg class="tchart"[^>]*aria-label="([^"]*)"', section)
    assert titles[2:] == ["CPU per container", "Memory per container", "GPU utilisation", "GPU memory used",
                          "GPU power"]
    assert "GPU 0: NVIDIA A10G" in section and "GPU 1: Tesla T4" in section and "no GPU telemetry" not in section
    assert '<td class="l">1</td><td class="l">Tesla T4</td><td>8</td><td>83.5</td><td>87</td>' in section


def test_gpu_run_without_nvml_says_why(locust_run):
    _, result = locust_run
    record = make_record(result, variant="gpu", telemetry={"containers": {}, "gpus": {},
                                                           "gpu_absent": "NVML unavailable: no driver"})
    section = run_page.section(record, {"containers": {}, "gpus": {}, "events": []})
    assert "no GPU telemetry: NVML unavailable: no driver" in section
    assert "No container samples were recorded" in section


def test_without_series_or_measurement(locust_run):
    _, result = locust_run
    section = run_page.section(make_record(result), None)
    assert "No telemetry time series stored for this run" in section and "no GPU telemetry: not a GPU run" in section
    failed = make_record(result, status="failed", load=None, error="Locust exited with 2",
                         validity=Validity(False, ["Locust exited with 2"]), incidents=[])
    section = run_page.section(failed, None)
    assert "Verdict: failed: Locust exited with 2" in section and "No measurement" in section


def test_a_page_without_body_gets_the_section_at_the_end(tmp_path):
    page = tmp_path / "x.html"
    page.write_text("<!doctype html><title>x</title><p>x</p>")
    text = run_page.insert(page.read_text(), "<section>s</section>")
    assert text.endswith("<!-- loadgrid:begin -->\n<section>s</section>\n<!-- loadgrid:end -->\n")
    assert run_page.insert(text, "<section>t</section>").count("loadgrid:begin") == 1


def test_annotate_writes_atomically(locust_run, tmp_path, monkeypatch):
    files, result = locust_run
    page = tmp_path / "2_2_2.html"
    page.write_text(files.html.read_text())
    before = page.read_text()

    def full_disk(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", full_disk)
    with pytest.raises(OSError):
        run_page.annotate(page, make_record(result), None)
    assert page.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["2_2_2.html"]


def test_long_series_are_reduced_keeping_the_peaks():
    points = [(float(i), 50.0 + (40.0 if i == 1234 else 0.0) - (30.0 if i == 2222 else 0.0)) for i in range(3600)]
    reduced = run_page.reduce(points)
    assert len(reduced) <= run_page.MAX_POINTS and (1234.0, 90.0) in reduced and (2222.0, 20.0) in reduced
    assert reduced == sorted(reduced)
    assert run_page.reduce(points[:10]) == points[:10]


def test_annotate_all_and_report_rebuild(locust_run, tmp_path):
    files, result = locust_run
    out = tmp_path / "out"
    (out / "cpu").mkdir(parents=True)
    series, t = series_for(result)
    # a completed run with its telemetry, one whose telemetry file is missing, a failed run without a report,
    # and a record this loadgrid cannot read
    store.write(make_record(result, telemetry=t.summary()), out / "cpu" / "2_2_2.json")
    (out / "cpu" / "2_2_2.html").write_text(files.html.read_text())
    (out / "cpu" / "2_2_2.telemetry.json").write_text(json.dumps(series))
    store.write(make_record(result, id="cpu/2_2_2_r2", repeat=2, files={"html": "2_2_2_r2.html"}),
                out / "cpu" / "2_2_2_r2.json")
    (out / "cpu" / "2_2_2_r2.html").write_text(files.html.read_text())
    store.write(make_record(result, id="cpu/1_2_2", models=1, status="failed", load=None, files={},
                            error="stack not ready", validity=Validity(False, ["stack not ready"])),
                out / "cpu" / "1_2_2.json")
    (out / "cpu" / "1_1_1.json").write_text('{"schema": 99}')
    done = run_page.annotate_all(out)
    assert sorted(p.name for p in done) == ["2_2_2.html", "2_2_2_r2.html"]
    assert 'class="tchart"' in section_of((out / "cpu" / "2_2_2.html").read_text())
    assert "No telemetry time series stored" in section_of((out / "cpu" / "2_2_2_r2.html").read_text())
    assert run_page.annotate_all(tmp_path / "missing") == []
    # `orchestrate.py report` (report.write_all) re-annotates too: a fresh Locust page gets its section
    (out / "cpu" / "1_1_1.json").unlink()
    (out / "cpu" / "2_2_2.html").write_text(files.html.read_text())
    report.write_all(out)
    assert "CPU per container" in section_of((out / "cpu" / "2_2_2.html").read_text())


PROBE = """JSON.stringify((function () {
  var root = document.getElementById('root'), section = document.getElementById('loadgrid-run');
  var r = root.getBoundingClientRect(), s = section.getBoundingClientRect();
  return {app: root.children.length, rootBottom: r.bottom, top: s.top, height: s.height, width: s.width,
          visible: getComputedStyle(section).display !== 'none' && getComputedStyle(section).visibility !== 'hidden',
          charts: Array.from(section.querySelectorAll('svg.tchart')).map(function (svg) {
            return {w: svg.getBoundingClientRect().width,
                    lines: Array.from(svg.querySelectorAll('path.tseries')).map(function (p) {
                      return p.getTotalLength(); })}; }),
          overflowX: document.documentElement.scrollWidth > window.innerWidth + 1};
})())"""


def browse(binary: str, page: Path, screenshot: Path | None = None) -> dict:
    from support.browser import DevTools

    tools = DevTools(binary)
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            tools.send(f"{domain}.enable", {}, session)
        tools.send("Emulation.setDeviceMetricsOverride",
                   {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        tools.send("Page.navigate", {"url": page.resolve().as_uri()}, session)
        tools.wait_for("Page.loadEventFired", session)
        deadline = time.monotonic() + 10
        while True:  # Locust's React app renders after load
            probe = tools.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session)
            rendered = "value" in probe["result"] and json.loads(probe["result"]["value"])["app"]
            if rendered or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        result = json.loads(probe["result"]["value"]) if "value" in probe["result"] else {}
        if screenshot is not None:
            size = tools.send("Page.getLayoutMetrics", {}, session)["cssContentSize"]
            tools.send("Emulation.setDeviceMetricsOverride",
                       {"width": 1280, "height": int(size["height"]), "deviceScaleFactor": 1, "mobile": False},
                       session)
            import base64

            shot = tools.send("Page.captureScreenshot", {"format": "png"}, session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors = []
        for e in (e for e in tools.events if e.get("sessionId") == session):
            params = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif e.get("method") == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(f'{params["entry"].get("text", "")} {params["entry"].get("url", "")}')
            elif e.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", "")) for a in params["args"]))
        result["errors"] = errors
        return result
    finally:
        tools.close()


@pytest.mark.browser
def test_annotated_locust_report_in_headless_chromium(locust_run, tmp_path):
    from support.browser import find_browser

    binary = find_browser()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser check, but no chromium is installed (see setup.sh)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    files, result = locust_run
    plain = tmp_path / "plain" / "2_2_2.html"
    plain.parent.mkdir()
    plain.write_text(files.html.read_text())
    page = tmp_path / "annotated" / "2_2_2.html"
    page.parent.mkdir()
    page.write_text(files.html.read_text())
    series, t = series_for(result, gpus=True)
    run_page.annotate(page, make_record(result, telemetry=t.summary()), series)
    before = browse(binary, plain)
    after = browse(binary, page, tmp_path / "annotated.png")
    # the section adds no console error of its own (Locust's report may miss its favicon from the file system)
    assert [e.replace("annotated", "plain") for e in after["errors"]] == before["errors"], after["errors"]
    assert all("favicon" in e or "ERR_FILE_NOT_FOUND" in e for e in after["errors"]), after["errors"]
    assert after["app"] > 0, "Locust's app no longer renders"
    assert after["visible"] and after["top"] >= after["rootBottom"] - 1, after  # below Locust's app
    assert after["height"] > 1000 and after["width"] > 1000, after
    # Locust's CPU and lag (a 2 s run may hold a single CPU sample: no line to measure), then the stack's 5
    charts = after["charts"]
    assert len(charts) == 7 and all(c["w"] > 300 for c in charts[:2])
    assert all(c["w"] > 300 and min(c["lines"]) > 50 for c in charts[2:])
    assert not after["overflowX"]
    assert (tmp_path / "annotated.png").stat().st_size > 50_000


def test_an_unchanged_page_is_not_rewritten(locust_run, tmp_path, monkeypatch):
    files, result = locust_run
    page = tmp_path / "2_2_2.html"
    page.write_text(files.html.read_text())
    record = make_record(result)
    run_page.annotate(page, record, None)

    def no_write(*a, **k):
        raise AssertionError("the page had not changed")

    monkeypatch.setattr(run_page.store, "write_atomic", no_write)
    run_page.annotate(page, record, None)
