"""Run records (versioned, atomic) and the validity judgement: pure, no Docker."""

from __future__ import annotations

import json

import pytest
from support.records import record

from loadgrid import store, validity
from loadgrid.errors import UserError
from loadgrid.stack import Replica
from loadgrid.store import LoadReport, ReplicaReport, Validity


def test_round_trip(tmp_path):
    path = tmp_path / "cpu" / "2_50_10.json"
    store.write(record(), path)
    data = json.loads(path.read_text())
    assert data["schema"] == store.SCHEMA_VERSION and list(data)[0] == "schema"
    assert store.load(path) == record()
    assert store.load_all(tmp_path) == [record()]


def test_unknown_schema_is_refused_with_a_clear_line(tmp_path):
    path = tmp_path / "cpu" / "1_1_1.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**record().to_dict(), "schema": 99}))
    with pytest.raises(UserError, match="schema 99 is not supported"):
        store.load(path)


def test_locust_stats_json_is_not_taken_for_a_record(tmp_path):
    store.write(record(), tmp_path / "cpu" / "2_50_10.json")
    for companion in ("stats", "window", "telemetry"):
        (tmp_path / "cpu" / f"2_50_10.{companion}.json").write_text("[]")
    assert [p.name for p in store.record_paths(tmp_path)] == ["2_50_10.json"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(OSError):
        store.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def replica(cid="c1", name="m1", status="running", health="healthy", started="s", restarts=0, exit_code=0,
            oom=False) -> Replica:
    return Replica(cid, name, status, health, started, restarts, exit_code, oom, "sha256:1")


OK_LOAD = LoadReport(0, 100, 0, 10.0, 10.0, {})


def test_valid_run():
    v = validity.judge("cpu", 1, OK_LOAD, None, [replica()], [replica()],
                       [ReplicaReport("c1", "m1", "running", "healthy", provider="CPUExecutionProvider",
                                      requests_served=100)])
    assert v == Validity(True, [])


@pytest.mark.parametrize("after, words", [
    ([replica(status="exited", exit_code=137, oom=True)], ["m1 exited", "137", "OOM-killed"]),
    ([replica(started="s2", restarts=1)], ["m1 restarted"]),
    ([], ["disappeared", "0 of 1 replicas"]),
    ([replica(health="unhealthy")], ["unhealthy"]),
])
def test_crashed_replica_makes_the_run_invalid(after, words):
    v = validity.judge("cpu", 1, OK_LOAD, None, [replica()], after, [])
    assert not v.valid
    text = "; ".join(v.reasons)
    for word in words:
        assert word in text


def test_failed_requests_make_the_run_invalid():
    load = LoadReport(1, 100, 5, 10.0, 10.0, {}, {"HTTP 502": 5})
    v = validity.judge("cpu", 1, load, None, [replica()], [replica()], [])
    assert not v.valid and "5 of 100 requests failed" in v.reasons[0] and "HTTP 502" in v.reasons[0]


def test_gpu_run_on_cpu_is_invalid():
    reports = [ReplicaReport("c1", "m1", "running", "healthy", provider="CPUExecutionProvider")]
    v = validity.judge("gpu", 1, OK_LOAD, None, [replica()], [replica()], reports)
    assert not v.valid and "not on the GPU" in v.reasons[0]
    reports[0].provider = "CUDAExecutionProvider"
    assert validity.judge("gpu", 1, OK_LOAD, None, [replica()], [replica()], reports).valid


def test_failures_before_the_window_make_the_run_invalid():
    load = LoadReport(0, 100, 0, 10.0, 10.0, {}, whole_run={"requests": 110, "failures": 3})
    v = validity.judge("cpu", 1, load, None, [replica()], [replica()], [])
    assert not v.valid and "3 requests failed before the measurement window" in v.reasons[0]
    clean = LoadReport(0, 100, 0, 10.0, 10.0, {}, whole_run={"requests": 110, "failures": 0})
    assert validity.judge("cpu", 1, clean, None, [replica()], [replica()], []).valid


def test_a_short_window_is_invalid_naming_the_minimum():
    load = LoadReport(0, 14, 0, 6.7, 2.1, {}, window={"start_at": 5.0, "duration_s": 2.1})
    v = validity.judge("cpu", 1, load, None, [replica()], [replica()], [], run_time_s=20, ramp_up_s=2.0)
    assert not v.valid
    assert "lasted 2.1 s with 14 requests; at least 9.0 s and 20 requests" in v.reasons[0]
    ok = LoadReport(0, 100, 0, 10.0, 10.0, {}, window={"start_at": 5.0, "duration_s": 10.0})
    assert validity.judge("cpu", 1, ok, None, [replica()], [replica()], [], run_time_s=20, ramp_up_s=2.0).valid
    # measured whole (requests_per_user, open loop): only the request minimum applies
    short = LoadReport(0, 30, 0, 10.0, 1.0, {})
    assert validity.judge("cpu", 1, short, None, [replica()], [replica()], [], run_time_s=20,
                          measured_whole=True).valid
    few = LoadReport(0, 10, 0, 10.0, 1.0, {})
    v = validity.judge("cpu", 1, few, None, [replica()], [replica()], [], run_time_s=20, measured_whole=True)
    assert not v.valid and "at least 20" in v.reasons[0]


def test_replicas_not_ready_before_the_run_are_named():
    v = validity.judge("cpu", 2, OK_LOAD, None, [replica(), replica("c2", "m2", health="starting")],
                       [replica(), replica("c2", "m2")], [])
    assert not v.valid
    assert any("replica m2" in r and "before the run" in r for r in v.reasons)
    assert any("1 of 2 replicas running and ready before the run" in r for r in v.reasons)


def _served(*counts):
    return [ReplicaReport(f"c{i}", f"m{i}", "running", "healthy", requests_served=n) for i, n in enumerate(counts)]


def test_a_stack_serving_more_than_loadgrid_sent_has_another_client():
    load = LoadReport(0, 100, 0, 10.0, 10.0, {}, whole_run={"requests": 120, "failures": 0})
    two = [replica(), replica("c2", "m2")]
    v = validity.judge("cpu", 2, load, None, two, two, _served(150, 140))
    assert not v.valid
    assert any("the stack served 170 requests loadgrid did not send: another client is loading it" in r
               for r in v.reasons)
    # within the tolerance (5% + 10 of the 120 sent = 136): valid
    assert validity.judge("cpu", 2, load, None, two, two, _served(70, 66)).valid
    assert not validity.judge("cpu", 2, load, None, two, two, _served(70, 67)).valid


def test_another_client_not_judged_without_counters_is_said():
    v = validity.judge("cpu", 1, OK_LOAD, None, [replica()], [replica()], _served(None))
    assert v.valid and v.unjudged == ["another client: not judged (replicas report no request counter)"]
    assert store.Validity(**{"valid": True, "reasons": []}).unjudged == []  # old records still load
