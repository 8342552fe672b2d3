"""The run loop's steps without Docker: judge (pure: a run's facts in, its record with verdict and bottleneck
out), incident classification, and the loop itself over a fake stack (prepare -> measure -> judge -> store)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.engine import ROOT

from loadgrid import backend, grid, judge, measure, plan, preflight, sizes, store
from loadgrid.monitor import ContainerEvent, incidents
from loadgrid.plan import RunSpec
from loadgrid.stack import Replica, StackError
from loadgrid.store import Incident, LoadReport, ReplicaReport, StackReport

SPEC = RunSpec("cpu", 2, 10, 10.0, 60)


def replica(name: str, status: str = "running", health: str | None = "healthy", **more) -> Replica:
    return Replica(container_id=f"{name:0<12}abcdef", name=name, status=status, health=health,
                   started_at="2026-01-01T00:00:00Z", restart_count=0, exit_code=more.pop("exit_code", 0),
                   oom_killed=more.pop("oom_killed", False), image_id="sha256:img", **more)


def measured(load: LoadReport | None = None, **changes) -> measure.Measured:
    up = [replica("m1"), replica("m2")]
    values = dict(spec=SPEC, host="http://localhost:8080", status="completed", started_at="a", ended_at="b",
                  stack=StackReport("lg-cpu", ["dc.yml"], 2, 2, replicas=[ReplicaReport(r.container_id[:12], r.name,
                                                                                       "running", "healthy")
                                                                          for r in up]),
                  run_fields={"arrival_rate": None, "arrival": None, "capacity_probe": False,
                              "requests_per_user": None, "target": None, "payload": {"kind": "images"}},
                  load=load if load is not None else steady(), expected_replicas=2, before=up, after=up,
                  quiesce={"method": "requests", "idle": True, "waited_s": 0.2})
    values.update(changes)
    return measure.Measured(**values)


def steady(**changes) -> LoadReport:
    values = dict(locust_exit=0, requests=3000, failures=0, rps=50.0, duration_s=60.0,
                  latency_ms={"p50": 100.0, "p95": 180.0}, window={"start_at": 1.0, "end_at": 61.0, "duration_s": 60.0})
    values.update(changes)
    return LoadReport(**values)


def test_a_clean_run_is_valid_and_its_record_carries_every_fact():
    facts = measured(files={"html": "2_10_10.html"}, readiness={"method": "healthcheck", "ready": True})
    record = judge.judge(facts)
    assert record.validity.valid and record.validity.reasons == []
    assert (record.id, record.status, record.host, record.started_at, record.ended_at) == \
        ("cpu/2_10_10", "completed", "http://localhost:8080", "a", "b")
    assert record.files == {"html": "2_10_10.html"} and record.readiness.ready and record.quiesce.idle
    assert record.payload == store.Payload(kind="images") and record.arrival_rate is None
    assert record.load.requests == 3000
    assert record.bottleneck.kind and record.bottleneck.checked  # diagnosed, whatever it names


def test_failures_a_dead_replica_and_a_busy_stack_each_make_it_invalid():
    record = judge.judge(measured(steady(failures=30, failure_messages={"HTTP 503": 30})))
    assert not record.validity.valid and record.validity.reasons == [
        "30 of 3000 requests failed (1.0%), mostly: HTTP 503"]
    dead = judge.judge(measured(after=[replica("m1"), replica("m2", status="exited", health=None, exit_code=137)]))
    assert not dead.validity.valid and "1 of 2 replicas running and healthy at the end of the run" in \
        dead.validity.reasons
    busy = judge.judge(measured(quiesce={"method": "gauges", "idle": False, "waited_s": 30, "detail": "queue 4"}))
    assert not busy.validity.valid and busy.validity.reasons == [
        "the stack was still busy before the run (queue 4 after 30 s): the previous run's backlog would be measured"]


def test_a_run_stopped_by_request_count_is_judged_whole_not_by_its_window():
    short = steady(requests=3000, duration_s=5.0, window={"start_at": 1.0, "end_at": 6.0, "duration_s": 5.0})
    assert not judge.judge(measured(short)).validity.valid  # 5 s of a 60 s run: the window is too short
    assert judge.judge(measured(short), requests_per_user=300).validity.valid


def test_a_point_that_never_ran_is_invalid_with_its_reason_and_an_interrupted_one_is_not_diagnosed():
    never = measure.Measured(spec=SPEC, host="h", status="failed", started_at="t", ended_at="t",
                             stack=StackReport("lg-cpu", [], 2), run_fields={}, ran=False, error="image build failed")
    record = judge.judge(never)
    assert record.validity.valid is False and record.validity.reasons == ["image build failed"]
    assert record.load is None and record.error == "image build failed" and record.bottleneck
    never.status = "interrupted"
    assert judge.judge(never).bottleneck is None  # schema 2: absent is None (schema 1 wrote {})


def test_incidents_take_the_worst_event_per_replica_from_the_one_severity_list():
    dead = replica("m1", status="exited", health=None, exit_code=137, oom_killed=True)
    c1, c2 = dead.container_id[:12], "c2c2c2c2c2c2"
    events = [ContainerEvent(5.0, c1, "m1", "model", "die", exit_code=None),
              ContainerEvent(4.0, c1, "m1", "model", "oom"),
              ContainerEvent(9.0, c2, "m2", "model", "health_status: unhealthy"),
              ContainerEvent(8.0, c2, "m2", "model", "restart")]
    found = incidents(events, [dead], lambda container: [f"last of {container}"])
    # m1: OOM is worse than died, the exit code from its state (no event had one); m2: restarted is worse than
    # unhealthy, the first time of its events
    assert found == [
        Incident(container=c1, name="m1", action="was OOM-killed", at=4.0, exit_code=137, oom_killed=True,
                 last_logs=[f"last of {c1}"]),
        Incident(container=c2, name="m2", action="restarted", at=8.0, exit_code=None, oom_killed=False,
                 last_logs=[f"last of {c2}"])]
    assert incidents([ContainerEvent(1.0, c2, "m2", "model", "kill", exit_code=143)], [], list)[0].exit_code == 143


class FakeStack:
    """The Stack interface, in memory: what the loop asked of it is kept."""

    project, service = "lgunit-cpu", "model"

    def __init__(self, scale_errors=(), build_error=None):
        self.files, self.env = (ROOT / "docker-compose.yml",), {}
        self.scale_errors = list(scale_errors)  # one per scale call: None (ready) or a StackError message
        self.build_error = build_error
        self.calls: list[str] = []

    def validate(self):
        self.calls.append("validate")
        return ["model"]

    def build(self, log_path: Path) -> None:
        self.calls.append("build")
        if self.build_error:
            raise StackError(self.build_error)

    def scale(self, replicas: int, timeout_s: int) -> list[Replica]:
        self.calls.append(f"scale {replicas}")
        error = self.scale_errors.pop(0) if self.scale_errors else None
        if error:
            raise StackError(error)
        return [replica(f"m{i}") for i in range(1, replicas + 1)]

    @contextmanager
    def running(self):
        self.calls.append("down")
        try:
            yield self
        finally:
            self.calls.append("down")


def loop_config(tmp_path: Path, **more):
    from loadgrid.config import from_mapping

    raw = {"num_models_list": [1], "num_users_list": [1, 2, 3], "spawn_rate_list": [1], "run_time": "5s",
           "host": "http://127.0.0.1:9", "images_dir": str(ROOT / "images"), "startup_timeout": "1s",
           "expect": "status", "compose_files": [str(ROOT / "docker-compose.yml")], **more}
    return from_mapping(raw, tmp_path)


@pytest.fixture
def loop(monkeypatch):
    """Points measured by a fake: a replica of the points named in `dies` exits during the run."""
    dies: set[str] = set()

    def fake_measure(config, spec, stack, size, timings, say, progress, payload, cpus):
        say(f"{progress.begin(spec)}: fake load")
        whole = [replica(f"m{i}") for i in range(1, spec.models + 1)]
        after = [replica("m1", status="exited", health=None, exit_code=137)] if spec.id in dies else whole
        return measure.Measured(spec=spec, host=config.host, status="completed", started_at="a", ended_at="b",
                                stack=measure.stack_report(spec, stack, after, []),
                                run_fields=measure.run_fields(config, spec, payload), load=steady(),
                                expected_replicas=spec.models, before=whole, after=after,
                                readiness=dict(size.readiness))

    monkeypatch.setattr(measure, "measure", fake_measure)
    monkeypatch.setattr(sizes, "unloaded_sender", lambda config, answer=False: None)  # ready without warm-up
    monkeypatch.setattr(preflight, "make_stack", lambda *a: pytest.fail("the run made a second stack"))
    return dies


def run(tmp_path: Path, stack: FakeStack, **more) -> tuple[grid.GridOutcome, list[str]]:
    config = loop_config(tmp_path, **more)
    said: list[str] = []
    outcome = grid.run_grid(config, plan.build(config, cpus=2), said.append,
                            skip=preflight.Checked(stacks={"cpu": stack}))
    return outcome, said


def test_the_loop_runs_on_the_stack_pre_flight_validated_and_stores_every_point(tmp_path, loop):
    stack = FakeStack()
    outcome, said = run(tmp_path, stack)
    assert stack.calls == ["down", "build", "scale 1", "down"]  # no second validate, one build, one scale
    assert [r.id for r in outcome.records] == ["cpu/1_1_1", "cpu/1_2_1", "cpu/1_3_1"]
    assert all(r.validity.valid and r.readiness.ready and r.bottleneck for r in outcome.records)
    stored = store.load_all(tmp_path / "reports")
    assert [r.id for r in stored] == ["cpu/1_1_1", "cpu/1_2_1", "cpu/1_3_1"]
    config = loop_config(tmp_path)
    assert {r.id: r.fingerprint for r in stored} == plan.fingerprints(config, plan.build(config, cpus=2).runs)
    assert said[0].startswith("[cpu] building images (log: ") and said[1] == "[cpu] scaling model to 1"
    assert said[-1].startswith("run 3/3 cpu/1_3_1: 3000 requests, 0 failures") and said[-1].endswith("[valid]")
    assert [s["models"] for s in outcome.scale_steps] == [1]


def test_a_replica_that_died_is_restored_once_before_the_next_point(tmp_path, loop):
    loop.add("cpu/1_1_1")
    stack = FakeStack()
    outcome, _ = run(tmp_path, stack)
    assert stack.calls == ["down", "build", "scale 1", "scale 1", "down"]
    assert [r.validity.valid for r in outcome.records] == [False, True, True]


def test_a_stack_that_cannot_be_restored_fails_the_rest_of_its_size_with_why(tmp_path, loop):
    loop.add("cpu/1_1_1")
    stack = FakeStack(scale_errors=[None, "replica m1 exited"])
    outcome, said = run(tmp_path, stack)
    assert stack.calls == ["down", "build", "scale 1", "scale 1", "down"]  # no third try: the size is broken
    assert [r.status for r in outcome.records] == ["completed", "failed", "failed"]
    why = "could not restore 1 replicas: stack not ready: replica m1 exited"
    assert [r.error for r in outcome.failed] == [why, why] and said[-1] == f"run 3/3 cpu/1_3_1: FAILED: {why}"
    assert outcome.failed[0].readiness.ready is False  # the failed restore's readiness is the size's now


def test_a_failed_build_fails_every_point_of_the_variant_and_still_tears_down(tmp_path, loop):
    stack = FakeStack(build_error="docker compose build ...: exit 1")
    outcome, said = run(tmp_path, stack)
    assert stack.calls == ["down", "build", "down"]
    assert [r.error for r in outcome.records] == ["image build failed: docker compose build ...: exit 1"] * 3
    assert said[1] == "[cpu] image build failed: docker compose build ...: exit 1"
    record = json.loads((tmp_path / "reports" / "cpu" / "1_1_1.json").read_text())
    assert record["validity"] == {"valid": False, "reasons": ["image build failed: docker compose build ...: exit 1"],
                                  "client_bound": False, "unjudged": []}


def test_a_variant_pre_flight_skipped_runs_nothing_and_says_why(tmp_path, loop):
    stack = FakeStack()
    config = loop_config(tmp_path)
    said: list[str] = []
    outcome = grid.run_grid(config, plan.build(config, cpus=2), said.append,
                            skip=preflight.Checked(stacks={"cpu": stack}, skip={"cpu": "no GPU"}))
    assert stack.calls == [] and outcome.records == [] and outcome.skipped_variants == {"cpu": "no GPU"}
    assert said == ["cpu variant skipped: no GPU"]


def test_compose_is_a_stack_and_the_factory_picks_it(tmp_path):
    made = backend.make_stack(loop_config(tmp_path, project="lgunit"), "cpu")
    assert isinstance(made, backend.Stack) and made.project == "lgunit-cpu" and made.service == "model"
    assert made.files == (ROOT / "docker-compose.yml",) and made.env["LOADGRID_GATEWAY_PORT"] == "9"
    assert not isinstance(FakeStack(), backend.Stack)  # a class missing methods is not one
