"""Real Locust runs against a local test server on 127.0.0.1 (no Docker): payload kinds and content types,
URL payloads fetched once, ENDPOINT/PAYLOAD defaults, request-count stop, open-loop rate accuracy, target mode
end to end through orchestrate.py. Each run is bounded (a few seconds) and the server is always stopped."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from support.engine import ROOT
from support.sink_server import SinkServer
from support.target import clean_env, orchestrate, run_locust

from loadgrid import quiesce
from loadgrid.plan import RunSpec

JPEG = ROOT / "images" / "chelsea.jpg"
LOCUSTFILE = ROOT / "locustfile.py"


@pytest.fixture
def sink():
    with SinkServer() as server:
        yield server


@pytest.fixture
def png(tmp_path) -> Path:
    cv2 = pytest.importorskip("cv2")
    ok, data = cv2.imencode(".png", cv2.imread(str(JPEG)))
    path = tmp_path / "cat.png"
    path.write_bytes(data.tobytes())
    return path


@pytest.mark.parametrize("kind", ["images-raw", "png-raw", "png-multipart", "json", "jsonl"])
def test_payload_kinds_and_content_types_seen_by_the_server(kind, sink, tmp_path, png):
    source: Path = {"images-raw": ROOT / "images", "png-raw": png, "png-multipart": png}.get(kind, tmp_path / "d")
    if kind == "json":
        source = tmp_path / "doc.json"
        source.write_text('{"inputs": [[0.5, 1.5]]}')
    if kind == "jsonl":
        source = tmp_path / "docs.jsonl"
        source.write_text('{"id": 1}\n{"id": 2}\n{"id": 3}\n')
    sink.answer = b'{"ok": true}' if kind.startswith("json") else sink.answer  # not a prediction: expect status
    spec = RunSpec("target", 1, 2, 2.0, 30)
    result = run_locust(tmp_path, sink.url, spec, source, send_as="multipart" if "multipart" in kind else "raw",
                        requests_per_user=10)
    assert result.error is None and result.failures == 0 and result.requests == 20
    assert sink.count == 20 and {s.path for s in sink.seen} == {"/predict"}
    types = {s.content_type.split(";")[0] for s in sink.seen}
    bodies = [s.body for s in sink.seen]
    if kind == "images-raw":
        assert types == {"application/octet-stream"}
        assert set(bodies) <= {p.read_bytes() for p in (ROOT / "images").glob("*.jpg")} and len(set(bodies)) > 1
    elif kind == "png-raw":  # re-encoded once to JPEG
        assert types == {"application/octet-stream"} and all(b[:3] == b"\xff\xd8\xff" for b in bodies)
    elif kind == "png-multipart":
        assert types == {"multipart/form-data"}
        assert all(b'name="file"; filename="cat.png"' in b and png.read_bytes() in b for b in bodies)
    elif kind == "json":
        assert types == {"application/json"} and {json.loads(b)["inputs"][0][1] for b in bodies} == {1.5}
    else:
        assert types == {"application/json"} and {json.loads(b)["id"] for b in bodies} <= {1, 2, 3}


def test_a_body_that_is_not_a_prediction_fails_unless_expect_status(sink, tmp_path):
    sink.answer = b'{"ok": true}'
    spec = RunSpec("target", 1, 1, 1.0, 30)
    strict = run_locust(tmp_path, sink.url, spec, JPEG, requests_per_user=3)
    assert strict.failures == 3 and any("no predictions" in m for m in strict.failure_messages)
    lenient = run_locust(tmp_path / "b", sink.url, spec, JPEG, requests_per_user=3, expect="status")
    assert lenient.failures == 0 and lenient.requests == 3


@pytest.mark.parametrize("processes, threads, per_user", [(1, 3, 7), (2, 2, 5)])
def test_request_count_stop_sends_exactly_users_x_n(processes, threads, per_user, sink, tmp_path):
    users = processes * threads
    spec = RunSpec("target", 1, users, float(users), 60)
    result = run_locust(tmp_path, sink.url, spec, ROOT / "images", processes=processes, requests_per_user=per_user)
    assert sink.count == users * per_user
    assert result.requests == users * per_user and result.whole_run.requests == users * per_user
    assert result.stop.to_dict() == {"requests_per_user": per_user, "users": users, "users_finished": users,
                                     "requests_sent": users * per_user, "by": "requests"}


def test_request_count_stop_is_capped_by_run_time(tmp_path):
    with SinkServer(delay_s=0.2, serial=True) as slow:
        spec = RunSpec("target", 1, 2, 2.0, 2)
        result = run_locust(tmp_path, slow.url, spec, JPEG, requests_per_user=1000)
    assert result.stop.by == "time" and result.stop.users_finished == 0 and result.requests < 2000


def gaps(times: list[float]) -> list[float]:
    times = sorted(times)
    return [b - a for a, b in zip(times[:-1], times[1:], strict=True)]


@pytest.mark.parametrize("rate", [20, 50])
def test_open_loop_rate_is_kept_within_a_few_percent(rate, sink, tmp_path):
    sink.delay_s = 0.01
    spec = RunSpec("target", 1, 1, 1.0, 8, arrival_rate=rate)
    result = run_locust(tmp_path, sink.url, spec, ROOT / "images")
    ol = result.open_loop
    assert result.error is None and result.failures == 0
    assert ol.intended_rate == rate and ol.dropped == 0 and ol.scheduled == ol.sent
    assert abs(ol.achieved_rate / rate - 1) < 0.03, ol
    # the server saw the same rate, evenly spaced, over the window
    window = [s.at for s in sink.seen if s.at >= result.window.start_at]
    seen_rate = (len(window) - 1) / (max(window) - min(window))
    assert abs(seen_rate / rate - 1) < 0.05, seen_rate
    assert statistics.median(gaps(window)) == pytest.approx(1 / rate, rel=0.2)


def test_poisson_arrivals(sink, tmp_path):
    spec = RunSpec("target", 1, 1, 1.0, 8, arrival_rate=40)
    result = run_locust(tmp_path, sink.url, spec, ROOT / "images", arrival="poisson")
    ol = result.open_loop
    assert ol.arrival == "poisson" and ol.dropped == 0
    assert abs(ol.achieved_rate / ol.scheduled_rate - 1) < 0.03  # the generator kept its schedule ...
    assert abs(ol.scheduled_rate / 40 - 1) < 0.2  # ... a random one, around the intended rate
    g = gaps([s.at for s in sink.seen])
    cv = statistics.pstdev(g) / statistics.mean(g)
    assert 0.7 < cv < 1.3  # exponential gaps (a constant schedule is near 0)


def test_open_loop_does_not_slow_down_with_the_server_it_drops_and_counts(tmp_path):
    # A server that serves one request at a time in 50 ms (20 req/s) offered 40 req/s with 5 requests in flight.
    with SinkServer(delay_s=0.05, serial=True) as slow:
        spec = RunSpec("target", 1, 1, 1.0, 4, arrival_rate=40)
        result = run_locust(tmp_path, slow.url, spec, JPEG, max_in_flight=5)
    ol = result.open_loop
    assert ol.dropped > 0.3 * ol.scheduled and ol.sent + ol.dropped == ol.scheduled
    assert abs(ol.scheduled_rate / 40 - 1) < 0.05  # the schedule went on at 40/s regardless
    from loadgrid import validity

    reasons, _ = validity.open_loop_problems(ol)
    assert any("dropped" in r for r in reasons)


def test_locustfile_alone_takes_endpoint_and_payload_from_the_environment(sink, png, tmp_path):
    env = {**clean_env(), "ENDPOINT": f"{sink.url}/v1/infer", "PAYLOAD": str(png),
           "LOADGRID_REQUESTS_PER_USER": "4"}
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-r", "1",
                           "-t", "30s", "--only-summary", "--loglevel", "WARNING"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sink.count == 4 and {s.path for s in sink.seen} == {"/v1/infer"}
    assert all(s.body[:3] == b"\xff\xd8\xff" for s in sink.seen)  # the PNG, re-encoded for raw


def test_target_mode_end_to_end_through_orchestrate(sink, tmp_path):
    (tmp_path / "config.yaml").write_text(
        f"target: {{url: {sink.url}/predict}}\npayload: {ROOT / 'images'}\nnum_users_list: [2]\n"
        f"requests_per_user: 15\narrival_rate_list: [20]\nrun_time: 4s\nclient_cpu_limit_pct: 100\n")
    proc = orchestrate(["--config", "config.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "docker-called").exists()
    out = tmp_path / "reports"
    closed = json.loads((out / "target" / "2_2.json").read_text())
    assert closed["variant"] == "target" and closed["target"] == f"{sink.url}/predict"
    assert closed["status"] == "completed" and closed["validity"]["valid"], closed["validity"]
    assert closed["load"]["requests"] == 30 and closed["requests_per_user"] == 15
    assert closed["payload"]["kind"] == "images" and closed["payload"]["expect"] == "prediction"
    opened = json.loads((out / "target" / "r20.json").read_text())
    assert opened["arrival_rate"] == 20 and opened["load"]["open_loop"]["achieved_rate"] > 18
    assert (out / "target" / "2_2.html").is_file() and (out / "target" / "r20.html").is_file()
    summary = (out / "summary.csv").read_text()
    assert "target/2_2" in summary and "target/r20" in summary
    assert 'href="target/2_2.html"' in (out / "index.html").read_text()
    assert sink.count >= 30 + 60


def test_endpoint_and_payload_variables_with_no_config_and_url_payload_fetched_once(sink, png, tmp_path):
    sink.files["cat.png"] = png.read_bytes()
    env = {**clean_env(), "ENDPOINT": f"{sink.url}/predict", "PAYLOAD": f"{sink.url}/files/cat.png"}
    proc = orchestrate(["--users", "1,2", "--requests-per-user", "3", "--send-as", "multipart", "--output", "out"],
                       tmp_path, env)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 1 only if a run failed, checked below
    assert sink.fetches == {"cat.png": 1}  # fetched once, before both runs
    assert (tmp_path / "out" / "payload-cat.png").read_bytes() == png.read_bytes()
    for name, users in (("1_2", 1), ("2_2", 2)):  # spawn rate by default: every user within a second
        record = json.loads((tmp_path / "out" / "target" / f"{name}.json").read_text())
        assert record["status"] == "completed" and record["load"]["requests"] == users * 3
        assert record["payload"]["url"] == f"{sink.url}/files/cat.png"
        assert record["quiesce"]["method"] == "requests" and record["quiesce"]["idle"] is True
    assert sink.count == 9 and all(s.content_type.startswith("multipart/form-data") for s in sink.seen)
    # the idle checks: a baseline of 3 unloaded requests, then 3 before each of the 2 runs (not in `seen`)
    assert sink.quiesce_checks == 3 * quiesce.REQUESTS
    assert not (tmp_path / "docker-called").exists()


def test_unreachable_target_is_one_line(tmp_path):
    (tmp_path / "doc.json").write_text("{}")
    proc = orchestrate(["--target", "http://127.0.0.1:9/p", "--payload", "doc.json", "--users", "1",
                        "--run-time", "2s"], tmp_path)
    assert proc.returncode == 1 and "cannot connect" in proc.stderr and proc.stderr.count("\n") == 1


def test_capacity_search_on_a_server_with_known_capacity(tmp_path):
    # One request at a time in 20 ms: 50 req/s at most; p95 under 250 ms holds below that, and far from it
    # above (the queue grows without bound: p95 near a second at 80 req/s).
    with SinkServer(delay_s=0.02, serial=True) as server:
        (tmp_path / "config.yaml").write_text(
            f"target: {server.url}/predict\npayload: {JPEG}\nrun_time: 3s\nlatency_target_ms: 250\n"
            f"capacity_search: {{start: 10, max: 160, steps: 4}}\nclient_cpu_limit_pct: 100\n")
        proc = orchestrate(["--config", "config.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "reports" / "capacity.json").read_text())["stacks"][0]
    assert result["variant"] == "target" and 20 <= result["capacity_rps"] <= 50, result
    assert len(result["probes"]) <= 4 and result["lowest_failing_rps"] > result["capacity_rps"]
    for probe in result["probes"]:  # every probe is a stored run
        assert (tmp_path / "reports" / f"{probe['run_id']}.json").is_file()
    assert "capacity target:" in proc.stdout
    assert 'id="capacity-search"' in (tmp_path / "reports" / "index.html").read_text()
