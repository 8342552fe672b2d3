"""Locust argument building and totals from Locust's final JSON: pure, no Docker. Also the plugins' part files
and one short real Locust run on 127.0.0.1 for what only a real process shows (its command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from support.engine import ROOT
from support.sink_server import SinkServer

from loadgrid import load
from loadgrid.plan import RunSpec

SPEC = RunSpec("cpu", 2, 50, 10.0, 60)


def test_locust_command():
    files = load.RunFiles.for_run(SPEC, Path("/out"))
    cmd = load.locust_command(SPEC, "http://localhost:8080", Path("/p/locustfile.py"), files)
    assert cmd[:3] == [sys.executable, "-m", "locust"]

    def arg(flag):
        return cmd[cmd.index(flag) + 1]

    assert "--headless" in cmd
    assert arg("--users") == "50" and arg("--spawn-rate") == "10" and arg("--run-time") == "60s"
    assert arg("--host") == "http://localhost:8080"
    assert arg("--html") == "/out/cpu/2_50_10.html"
    assert arg("--csv") == "/out/cpu/2_50_10"
    # Locust appends .json itself
    assert arg("--json-file") == "/out/cpu/2_50_10.stats"
    assert files.stats_json == Path("/out/cpu/2_50_10.stats.json")
    assert files.record == Path("/out/cpu/2_50_10.json")


def entry(times: dict, failures=0, start=100.0, end=110.0):
    return {"name": "/predict", "method": "POST", "start_time": start, "last_request_timestamp": end,
            "num_requests": sum(times.values()), "num_failures": failures, "max_response_time": max(map(int, times)),
            "response_times": {str(k): v for k, v in times.items()}}


def test_totals_merge_endpoints_and_compute_percentiles():
    result = load.totals([entry({10: 50, 20: 40}, start=100, end=108), entry({30: 9, 400: 1}, failures=2, end=110)])
    assert result.requests == 100 and result.failures == 2
    assert result.duration_s == 10.0 and result.rps == 10.0
    assert result.latency_ms["p50"] == 10.0
    assert result.latency_ms["p90"] == 20.0
    assert result.latency_ms["p95"] == 30.0
    assert result.latency_ms["p99"] == 30.0
    assert result.latency_ms["max"] == 400.0


def test_percentile_edges():
    assert load.percentile({}, 0.5) == 0.0
    assert load.percentile({7: 1}, 0.99) == 7.0
    assert load.percentile({1: 99, 1000: 1}, 0.99) == 1.0
    assert load.percentile({1: 98, 1000: 2}, 0.99) == 1000.0


def test_parse_result_without_stats_is_a_failed_run(tmp_path):
    files = load.RunFiles(tmp_path, "1_1_1")
    files.locust_log.write_text("Traceback...\nImportError: boom\n")
    result = load.parse_result(2, files)
    assert result.error and "no final stats" in result.error and "boom" in result.error


@pytest.mark.parametrize("code, broken", [(0, False), (1, False), (2, True)])
def test_locust_exit_codes(tmp_path, code, broken):
    files = load.RunFiles(tmp_path, "1_1_1")
    files.stats_json.write_text(json.dumps([entry({10: 5}, failures=1 if code else 0)]))
    files.locust_log.write_text("")
    assert (load.parse_result(code, files).error is not None) is broken


def test_self_delay_estimate_from_cpu_share():
    # 37% of one core over 20 s for 12,245 requests: 0.6 ms of Locust CPU each; 50 users on that process can
    # queue about 30 ms behind each other (bench/accuracy.py measured the median 13 ms over the true 50 ms).
    gen = {"processes": 1, "cores": 1, "cpu_pct_mean": 37.0}
    delay = load.self_delay(gen, 12245, 20.0, 50)
    assert delay == {"cpu_ms_per_request": 0.604, "self_delay_worst_ms": 30.2}
    assert load.self_delay({"processes": 2, "cores": 2, "cpu_pct_mean": 35.0}, 1000, 10.0, 100)[
        "self_delay_worst_ms"] == 350.0
    assert load.self_delay({"cpu_pct_mean": None}, 10, 1.0, 1) == {}


HISTORY_HEADER = ("Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
                  "99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
                  "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
                  "Total Average Content Size\r\n")


def history_row(ts, rps, p95, requests, failures):
    return f"{ts},10,,Aggregated,{rps},0.000000,40,50,60,70,80,{p95},100,110,120,130,140,{requests},{failures}," \
           "40,45.5,3,200,512\r\n"


def test_live_figures_are_the_last_complete_row(tmp_path):
    path = tmp_path / "run_stats_history.csv"
    assert load.live_figures(path) is None  # Locust has not written it yet
    path.write_text(HISTORY_HEADER)
    assert load.live_figures(path) is None  # the header only
    path.write_text(HISTORY_HEADER + history_row(1, "0.000000", "N/A", 0, 0))
    assert load.live_figures(path) == load.LiveFigures(rps=0.0, p95_ms=None, failures=0, requests=0)
    rows = "".join(history_row(t, f"{t * 1.5:f}", 90 + t, 10 * t, t // 100) for t in range(2, 2000))
    path.write_text(HISTORY_HEADER + rows + "2000,10,,Aggreg")  # a long run, its last row cut by a flush
    assert load.live_figures(path) == load.LiveFigures(rps=1999 * 1.5, p95_ms=2089.0, failures=19, requests=19990)


def test_run_passes_each_tick_the_live_figures(tmp_path, monkeypatch):
    # A stand-in for Locust: writes its stats history, then waits (bounded) for loadgrid's tick to have seen it.
    files = load.RunFiles(tmp_path / "cpu", "1_5_5")
    seen = tmp_path / "ticked"
    text = HISTORY_HEADER + history_row(1, "7.5", 42, 30, 2)
    script = (f"import pathlib, time\n"
              f"pathlib.Path({str(files.stats_history)!r}).write_text({text!r})\n"
              f"end = time.monotonic() + 20\n"
              f"while not pathlib.Path({str(seen)!r}).exists() and time.monotonic() < end:\n"
              f"    time.sleep(0.05)\n")
    monkeypatch.setattr(load, "locust_command", lambda *a, **k: [sys.executable, "-c", script])
    ticks = []

    def on_tick(seconds, live):
        ticks.append((seconds, live))
        if live is not None:
            seen.touch()

    load.run(RunSpec("cpu", 1, 5, 5.0, 5), "http://h", Path("l.py"), files, {"PATH": "/usr/bin"}, on_tick=on_tick)
    assert ticks and all(seconds > 0 for seconds, _ in ticks)
    assert ticks[-1][1] == load.LiveFigures(rps=7.5, p95_ms=42.0, failures=2, requests=30)


# --- credentials stay off Locust's command line ---------------------------------------------------------------

SECRET = "hunter2-pw"


def test_a_host_with_credentials_goes_in_the_environment_not_on_the_command_line():
    files = load.RunFiles.for_run(SPEC, Path("/out"))
    host = f"http://alice:{SECRET}@localhost:8080"
    cmd = load.locust_command(SPEC, host, Path("/p/locustfile.py"), files)
    assert "--host" not in cmd and not any(SECRET in arg for arg in cmd)
    assert load.host_env(host) == {"LOCUST_HOST": host}
    assert load.host_env("http://localhost:8080") == {}  # a plain host stays on the command line (above)
    secret_query = "http://localhost:8080?token=abc"
    assert "--host" not in load.locust_command(SPEC, secret_query, Path("/p/l.py"), files)
    assert load.host_env(secret_query) == {"LOCUST_HOST": secret_query}


def test_a_real_run_with_a_credentialed_host_shows_no_password_in_ps(tmp_path):
    """Every Locust process's command line, read while it runs (as `ps` would), lacks the password, and the
    requests still reach the host (Locust took it from LOCUST_HOST). Symlinks planted at the run's file names
    (a shared results folder) are not written through."""
    spec = RunSpec("target", 1, 2, 2.0, 3)
    files = load.RunFiles(tmp_path / "runs", spec.name)
    files.folder.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    planted = [Path(f"{files.window_json}.tmp"), files.html, files.locust_log, files.folder / f"{spec.name}_stats.csv"]
    for name in planted:  # the window plugin's old temporary name, and names Locust opens as they are
        name.symlink_to(victim)
    opts = load.LoadOptions()
    env = {**load.locust_env(ROOT / "images", "/predict", files, opts, spec), "ENDPOINT": "", "PAYLOAD": "",
           "LOCUST_HOST": ""}
    seen: list[list[str]] = []

    def look(*_tick):
        for proc in psutil.Process().children(recursive=True):
            try:
                seen.append(proc.cmdline())
            except psutil.Error:
                continue

    with SinkServer() as sink:
        host = sink.url.replace("http://", f"http://alice:{SECRET}@")
        result = load.run(spec, host, ROOT / "locustfile.py", files, env, opts, on_tick=look)
        served = len(sink.seen)
    assert result.error is None and result.requests > 0 and served > 0
    locusts = [cmd for cmd in seen if "locust" in cmd]
    assert locusts, seen  # the command lines were read while Locust ran
    assert not any(SECRET in arg for cmd in seen for arg in cmd)
    assert SECRET not in files.locust_log.read_text(encoding="utf-8")
    assert victim.read_text() == "keep me\n" and Path(f"{files.window_json}.tmp").is_symlink()
    page = files.html.read_text(encoding="utf-8")
    assert not files.html.is_symlink() and "locust" in page.lower()
    assert SECRET not in page and "alice:***@127.0.0.1" in page  # Locust's report names the host, masked
    assert not [f.name for f in files.folder.iterdir() if SECRET in f.read_text(encoding="utf-8", errors="replace")]
    assert json.loads(files.window_json.read_text(encoding="utf-8"))["window_start_at"]


# --- the plugins' part files: fresh temporary names, UTF-8, whatever the locale -------------------------------

PLUGIN_WRITES = textwrap.dedent("""
    import json, os, sys
    from types import SimpleNamespace
    folder = sys.argv[1]
    victim = os.path.join(folder, "victim.txt")
    pid = os.getpid()
    names = {"LOADGRID_LATENCY_FILE": os.path.join(folder, "run.latency"),
             "LOADGRID_COUNTS_FILE": os.path.join(folder, "run.counts"),
             "LOADGRID_WINDOW_FILE": os.path.join(folder, "run.window.json")}
    os.environ.update(names)
    # The fixed temporary names the plugins used to write through, planted as symlinks to the victim.
    for planted in (f"{names['LOADGRID_LATENCY_FILE']}.{pid}.part.tmp",
                    f"{names['LOADGRID_COUNTS_FILE']}.{pid}.part.tmp", names["LOADGRID_WINDOW_FILE"] + ".tmp"):
        os.symlink(victim, planted)
    import locust_latency, locust_users, locust_window
    stub = SimpleNamespace(runner=SimpleNamespace(stats=SimpleNamespace(errors={})))
    locust_latency._write(stub)
    locust_users.counts["users_started"] = 1
    locust_users._write_counts(stub)
    locust_window._write(stub)
    print(json.dumps(sorted(os.listdir(folder))))
""")


def test_plugin_parts_never_follow_a_planted_symlink_under_the_c_locale(tmp_path):
    folder = tmp_path / "résultats"
    folder.mkdir()
    victim = folder / "victim.txt"
    victim.write_text("keep me\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(ROOT / "loadgrid")}
    done = subprocess.run([sys.executable, "-c", PLUGIN_WRITES, str(folder)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert victim.read_text() == "keep me\n"
    names = json.loads(done.stdout.splitlines()[-1])
    parts = [n for n in names if n.endswith(".part")]
    assert len(parts) == 2 and not [n for n in names if n.endswith(".tmp") and not (folder / n).is_symlink()]
    files = load.RunFiles(folder, "run")
    latency, counts = load._read_parts(files.latency_parts()), load._read_parts(files.count_parts())
    assert latency[0]["step"] == 1.001 and counts[0]["users_started"] == 1
    assert json.loads(files.window_json.read_text(encoding="utf-8"))["reset"] is True
