"""Target mode, payloads, processes x threads, request-count stop, open loop, capacity search: config, plan,
Locust environment, counts and validity. Pure: no server, no Locust, no Docker."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.engine import ROOT

from loadgrid import cli, config, load, plan, validity
from loadgrid.errors import UserError
from loadgrid.plan import RunSpec

TARGET = {"target": {"url": "http://127.0.0.1:9000/v1/predict"}, "num_users_list": [4], "run_time": "10s"}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "docker-compose.yml").write_text("services: {model: {}, gateway: {}}\n")
    (tmp_path / "locustfile.py").write_text("")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes((ROOT / "images" / "rocket.jpg").read_bytes())
    (tmp_path / "doc.json").write_text('{"inputs": [1]}')
    return tmp_path


def cfg(base: Path, environ: dict | None = None, **raw) -> config.Config:
    return config.from_mapping(raw, base=base, environ=environ or {})


def test_target_mode_has_no_stack_and_no_replica_axis(base):
    c = cfg(base, **TARGET)
    assert c.target_mode and c.variants == ("target",) and c.num_models_list == (1,)
    assert c.host == "http://127.0.0.1:9000" and c.predict_path == "/v1/predict" and c.compose_files == ()
    assert c.spawn_rate_list == (4.0,)  # default: every user within a second
    p = plan.build(c)
    assert [r.id for r in p.runs] == ["target/4_4"]
    assert p.runs[0].html_path(Path("/out")) == Path("/out/target/4_4.html")
    assert "no compose stack" in plan.describe(p, c)
    assert cfg(base, **{**TARGET, "target": "http://h:1"}).predict_path == "/"


@pytest.mark.parametrize("raw, words", [
    ({**TARGET, "host": "http://localhost:8080"}, ["host", "not used with target"]),
    ({**TARGET, "num_models_list": [1]}, ["num_models_list", "not used with target"]),
    ({**TARGET, "target": "ftp://x"}, ["target", "http(s) URL"]),
    ({**TARGET, "target": {"uri": "http://x"}}, ["target", "unknown key 'uri'"]),
    ({**TARGET, "target": {}}, ["target.url", "ENDPOINT"]),
    ({**TARGET, "threads": 2}, ["threads", "not both"]),
    ({**TARGET, "processes": 2, "locust_processes": 2}, ["processes", "only one"]),
    ({"target": "http://x:1/p", "run_time": "1m"}, ["missing key num_users_list", "arrival_rate_list"]),
    ({"target": "http://x:1/p", "num_users_list": [1]}, ["missing key run_time"]),
    ({**TARGET, "arrival": "bursty"}, ["arrival", "constant or poisson"]),
    ({**TARGET, "send_as": "base64"}, ["send_as", "raw or multipart"]),
    ({**TARGET, "expect": "json"}, ["expect", "prediction or status"]),
    ({**TARGET, "payload": "nope.jpg"}, ["payload", "nope.jpg", "does not exist"]),
    ({**TARGET, "payload": "doc.json", "send_as": "multipart"}, ["send_as", "JSON"]),
    ({**TARGET, "payload": "images", "images_dir": "images"}, ["images_dir", "not both"]),
    ({"target": "http://x:1/p", "arrival_rate_list": [5], "requests_per_user": 3, "run_time": "5s"},
     ["requests_per_user", "closed-loop"]),
    ({**TARGET, "capacity_search": {"steps": 1}}, ["capacity_search.steps", "2 to 50"]),
    ({**TARGET, "capacity_search": {"start": 50, "max": 10}}, ["capacity_search.max", "at or above start"]),
    ({**TARGET, "capacity_search": {"stpes": 3}}, ["capacity_search", "unknown key 'stpes'"]),
    ({**TARGET, "arrival_rate_list": [0]}, ["arrival_rate_list", "not above zero"]),
])
def test_bad_load_settings_are_one_line_naming_the_key(base, raw, words):
    with pytest.raises(UserError) as err:
        cfg(base, **raw)
    assert "\n" not in str(err.value) and err.value.exit_code == 2
    for word in words:
        assert word in str(err.value)


def test_endpoint_and_payload_from_the_environment(base, tmp_path, monkeypatch):
    monkeypatch.chdir(base)
    env = {"ENDPOINT": "http://127.0.0.1:9/infer", "PAYLOAD": "doc.json"}
    c = cfg(base, env, num_users_list=[1], run_time="5s")
    assert c.target_url == "http://127.0.0.1:9/infer" and c.payload == str(base / "doc.json")
    # a config that names a compose grid is not turned into target mode by ENDPOINT ...
    c = cfg(base, env, num_models_list=[1], num_users_list=[1], run_time="5s", host="http://localhost:1")
    assert not c.target_mode
    # ... but target: {} takes its url from it, and a config's own payload wins over PAYLOAD
    c = cfg(base, env, target={}, num_users_list=[1], run_time="5s", payload="images")
    assert c.target_url == env["ENDPOINT"] and c.payload == str(base / "images")


def test_processes_x_threads_and_request_count(base):
    c = cfg(base, target="http://x:1/p", processes=2, threads=[1, 4], requests_per_user=50)
    assert c.num_users_list == (2, 8) and c.locust_processes == 2 and c.requests_per_user == 50
    assert c.run_time_s == config.DEFAULT_REQUEST_CAP_S  # no run_time: the cap defaults to 10 minutes
    assert plan.describe(plan.build(c), c).count("requests_per_user=50") == 2


def test_open_loop_and_capacity_search_plan(base):
    c = cfg(base, target="http://x:1/p", arrival_rate_list=[20, 50.5], arrival="poisson", run_time="10s",
            processes=2, capacity_search={"start": 5, "max": 80, "steps": 4, "run_time": "7s"})
    runs = plan.build(c).runs
    assert [r.id for r in runs] == ["target/r20", "target/r50.5"]
    assert all(r.users == 2 and r.open_loop for r in runs)
    assert c.capacity_search == config.CapacitySearch(start=5, max=80, steps=4, run_time_s=7, factor=2.0)
    text = plan.describe(plan.build(c), c)
    assert "open loop 20 req/s (poisson" in text and "capacity search: up to 4" in text
    probe = plan.open_loop_spec(c, "cpu", 2, 40, 7, probe=True, cpus=4)
    assert probe.id == "cpu/2_cap_r40"
    assert plan.open_loop_spec(c, "target", 1, 40, 7, probe=True, cpus=4).name == "cap_r40"
    assert RunSpec("cpu", 3, 2, 2.0, 10, arrival_rate=25).name == "3_r25"


def test_compose_grid_keeps_working_and_mixes_open_loop(base):
    c = cfg(base, num_models_list=[1, 2], num_users_list=[4], spawn_rate_list=[2], run_time="5s",
            host="http://localhost:8080", arrival_rate_list=[30])
    assert [r.id for r in plan.build(c).runs] == ["cpu/1_4_2", "cpu/1_r30", "cpu/2_4_2", "cpu/2_r30"]


def test_fingerprint_only_changes_with_a_new_setting(base):
    c = cfg(base, num_models_list=[1], num_users_list=[4], spawn_rate_list=[2], run_time="5s",
            host="http://localhost:8080")
    spec = plan.build(c).runs[0]
    same = cfg(base, num_models_list=[1], num_users_list=[4], spawn_rate_list=[2], run_time="5s",
               host="http://localhost:8080", send_as="raw", arrival="constant")
    assert plan.fingerprint(c, spec) == plan.fingerprint(same, spec)
    other = cfg(base, num_models_list=[1], num_users_list=[4], spawn_rate_list=[2], run_time="5s",
                host="http://localhost:8080", send_as="multipart")
    assert plan.fingerprint(c, spec) != plan.fingerprint(other, spec)


def test_locust_environment_for_each_kind_of_run(tmp_path):
    files = load.RunFiles(tmp_path, "x")
    options = load.LoadOptions(send_as="multipart", expect="status", requests_per_user=7, arrival="poisson")
    closed = load.locust_env(tmp_path, "/p", files, options, RunSpec("target", 1, 3, 3.0, 60))
    assert closed["LOADGRID_REQUESTS_PER_USER"] == "7" and closed["LOADGRID_WINDOW_RESET"] == "0"
    assert closed["LOADGRID_ARRIVAL_RATE"] == "0" and closed["LOADGRID_SEND_AS"] == "multipart"
    assert closed["LOADGRID_PAYLOAD"] == str(tmp_path) and closed["LOADGRID_EXPECT"] == "status"
    assert closed["LOADGRID_COUNTS_FILE"] == str(tmp_path / "x.counts")
    spec = RunSpec("target", 1, 2, 2.0, 60, arrival_rate=40)
    opened = load.locust_env(tmp_path, "/p", files, options, spec)
    assert opened["LOADGRID_REQUESTS_PER_USER"] == "0" and opened["LOADGRID_WINDOW_RESET"] == "1"
    assert opened["LOADGRID_ARRIVAL_RATE"] == "40" and opened["LOADGRID_ARRIVAL"] == "poisson"
    assert opened["LOADGRID_USERS"] == "2" and opened["LOADGRID_TIMEOUT_S"] == "10"


def part(**kw) -> dict:
    base = {"window_start_at": 100.0, "first_slot_at": 100.01, "last_slot_at": 110.0, "scheduled": 250,
            "sent": 250, "late": 0, "dropped": 0, "late_tolerance_ms": 20.0, "max_late_ms": 3.0, "max_in_flight": 250,
            "users_finished": 0, "requests_sent": 250}
    return {**base, **kw}


def test_open_loop_counts_add_up_over_processes():
    spec = RunSpec("target", 1, 2, 2.0, 10, arrival_rate=50)
    out = load.open_loop_counts([part(), part(sent=240, dropped=10)], spec, load.LoadOptions())
    assert out.intended_rate == 50 and out.scheduled_rate == 50.0 and out.achieved_rate == 49.0
    assert out.dropped == 10 and out.sent == 490 and out.processes == 2 and out.window_s == 10.0
    assert load.open_loop_counts([], spec, load.LoadOptions()).error is not None


def test_validity_of_open_loop_and_request_count_runs():
    assert validity.open_loop_problems({"intended_rate": 50, "scheduled": 500, "sent": 500, "late": 2,
                                        "achieved_rate": 50.0, "scheduled_rate": 50.0}) == ([], False)
    reasons, behind = validity.open_loop_problems({"intended_rate": 50, "scheduled": 500, "sent": 480, "dropped": 20,
                                                   "max_in_flight": 8, "achieved_rate": 48, "scheduled_rate": 50})
    assert not behind and "20 of 500 scheduled requests were dropped" in reasons[0] and "8 in-flight" in reasons[0]
    reasons, behind = validity.open_loop_problems({"intended_rate": 50, "scheduled": 500, "sent": 500, "late": 90,
                                                   "late_tolerance_ms": 20.0, "achieved_rate": 44,
                                                   "scheduled_rate": 50})
    assert behind and "client-bound" in reasons[0]
    assert validity.stop_problems({"by": "requests"}) == []
    text = validity.stop_problems({"by": "time", "requests_per_user": 9, "users": 4, "users_finished": 1,
                                   "requests_sent": 20})[0]
    assert "run_time cap" in text and "1 of 4 users" in text


@pytest.mark.parametrize("argv, words", [
    (["--users", "ten"], ["--users:", "'ten' is not a whole number"]),
    (["--arrival", "bursty"], ["--arrival:", "constant or poisson"]),
    (["--target", "localhost:9"], ["--target:", "http(s) URL"]),
    (["--run-time", "soon"], ["--run-time:", "duration"]),
])
def test_flags_are_checked_like_config_keys_and_named(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENDPOINT", raising=False)
    (tmp_path / "doc.json").write_text("{}")
    base_args = ["--target", "http://127.0.0.1:9/p", "--payload", "doc.json", "--users", "1", "--run-time", "5s"]
    assert cli.main([*base_args, *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    for word in words:
        assert word in err


def test_flags_replace_the_config_files_load_axis_and_stack(project_root, monkeypatch, capsys):
    monkeypatch.delenv("ENDPOINT", raising=False)
    monkeypatch.delenv("PAYLOAD", raising=False)
    assert cli.main(["--config", str(project_root / "config.yaml"), "--target", "http://127.0.0.1:9/p",
                     "--arrival-rate", "5,10", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "target/r5" in out and "target/r10" in out and "cpu/" not in out and "2 runs" in out
