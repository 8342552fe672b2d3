"""Readiness after a scale step (readiness.py) and loadgrid's own fast health polling (stack.wait_healthy),
with fakes: answers, a clock, replicas."""

from __future__ import annotations

import itertools

import pytest

from loadgrid import readiness, sizes
from loadgrid.quiesce import Answer
from loadgrid.session import GridOutcome
from loadgrid.stack import ComposeStack, Replica, StackError


class Clock:
    def __init__(self, step: float = 0.1):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def sender(answers):
    it = iter(answers)
    last = []

    def send():
        answer = next(it, None) or last[0]
        last[:] = [answer]
        return answer
    return send


def ok(ms, replica=None):
    return Answer(ms, "", replica)


FAIL = Answer(None, "Connection refused")


def test_needs_replicas_plus_two_in_a_row_and_at_least_three():
    assert [readiness.needed(n) for n in (1, 2, 4)] == [3, 4, 6]


def test_ready_after_failures_once_enough_succeed_in_a_row():
    clock = Clock()
    send = sender([FAIL, FAIL, ok(20), FAIL, ok(20), ok(21), ok(19)])
    result = readiness.wait_ready(send, 1, 30, "requests", clock=clock, pause=clock.pause)
    assert result["ready"] and result["method"] == "requests"
    assert result["requests"] == 7 and result["median_ms"] == 20
    assert result["waited_s"] >= 3 * readiness.POLL_S  # it paused after each failure


def test_a_held_first_request_keeps_the_stack_not_ready_until_it_leaves_the_window():
    clock = Clock()
    # the first answer took 4 s (held while the model loaded): not settled until three fast ones follow it
    send = sender([ok(4000), ok(20), ok(22), ok(21)])
    result = readiness.wait_ready(send, 1, 30, "requests", clock=clock, pause=clock.pause)
    assert result["ready"] and result["requests"] == 4 and "20, 22, 21 ms" in result["detail"]


def test_settled_means_each_within_ratio_of_the_median_plus_margin():
    assert readiness.settled([10, 10, 35])
    assert not readiness.settled([10, 10, 36])


def test_every_named_replica_must_answer_when_answers_name_them():
    clock = Clock()
    send = sender([ok(20, "aaa")])  # only one of two replicas ever answers
    result = readiness.wait_ready(send, 2, 5, "requests", {"aaa", "bbb"}, clock=clock, pause=clock.pause)
    assert not result["ready"] and "bbb not among the last 4 answers" in result["detail"]
    both = sender(itertools.cycle([ok(20, "aaa"), ok(20, "bbb")]))
    result = readiness.wait_ready(both, 2, 5, "requests", {"aaa", "bbb"}, clock=clock, pause=clock.pause)
    assert result["ready"] and result["requests"] == 4 and "every replica answered" in result["detail"]


def test_answers_that_name_no_container_are_not_held_to_coverage():
    clock = Clock()
    send = sender([ok(20, "worker")])  # e.g. an API that names itself, not the replica
    result = readiness.wait_ready(send, 2, 5, "requests", {"aaa", "bbb"}, clock=clock, pause=clock.pause)
    assert result["ready"] and "every replica" not in result["detail"]


def test_never_ready_within_the_timeout_says_why():
    clock = Clock()
    result = readiness.wait_ready(sender([FAIL]), 1, 3, "requests", clock=clock, pause=clock.pause)
    assert not result["ready"] and result["waited_s"] >= 3
    assert "within 3 s (startup_timeout); last: Connection refused" in result["detail"]
    assert readiness.reason(result).startswith("stack not ready: no 3 requests in a row served")
    # nothing ever answered on host: say so (the stack may be up, but nothing serves there)
    assert result["reached"] is False
    assert readiness.reason(result, "http://127.0.0.1:9").startswith(
        "host http://127.0.0.1:9 not reachable after the stack is up: no 3 requests in a row served")
    # an HTTP answer that is not served (503 while loading) is reached, just not ready
    held = readiness.wait_ready(sender([Answer(None, "HTTP 503")]), 1, 3, "requests", clock=clock,
                                pause=clock.pause)
    assert held["reached"] is True and readiness.reason(held, "http://x").startswith("stack not ready")


def replica(cid="c1", status="running", health="starting", started="t1", test=("CMD", "true")) -> Replica:
    return Replica(cid, f"m-{cid}", status, health, started, 0, 0, False, "sha256:1", health_test=test)


def test_a_replica_checked_by_loadgrid_is_ready_while_docker_still_says_starting():
    assert not replica().ready
    assert replica(health=None).ready and replica(health="healthy").ready
    assert Replica(**{**replica().__dict__, "checked": True}).ready
    assert not Replica(**{**replica(status="exited").__dict__, "checked": True}).ready


class FakeStack(ComposeStack):
    def __init__(self, states, passes):
        super().__init__("p", (), "model", gateway_service=None)
        self.states, self.passes, self.ran = iter(states), passes, []

    def replicas(self):
        self.current = next(self.states, None) or self.current
        return [self._mark(r) for r in self.current]

    def run_health_test(self, r):
        self.ran.append(r.container_id)
        return self.passes(r)


def test_wait_healthy_runs_the_health_test_itself_until_it_passes():
    clock = Clock()
    attempts = itertools.count()
    stack = FakeStack([[replica("c1"), replica("c2")]], lambda r: next(attempts) >= 3)
    found = stack.wait_healthy(2, 30, clock=clock, pause=clock.pause)
    assert all(r.ready and r.checked for r in found)
    # the next snapshot keeps the mark, unless the container restarted (another StartedAt)
    assert all(r.checked for r in stack.replicas())
    stack.current = [replica("c1", started="t2"), replica("c2")]
    assert [r.checked for r in stack.replicas()] == [False, True]


def test_wait_healthy_fails_at_once_on_an_exited_replica_and_after_the_timeout():
    clock = Clock()
    stack = FakeStack([[replica("c1", status="exited")]], lambda r: False)
    with pytest.raises(StackError, match="found 0 .*exited"):
        stack.wait_healthy(1, 30, clock=clock, pause=clock.pause)
    assert clock.now < 1
    stack = FakeStack([[replica("c1")]], lambda r: False)
    with pytest.raises(StackError, match=r"found 0 after 5 s \(startup_timeout\)"):
        stack.wait_healthy(1, 5, clock=clock, pause=clock.pause)


def test_no_health_check_is_ready_when_running():
    stack = FakeStack([[replica("c1", health=None, test=())]], lambda r: pytest.fail("nothing to run"))
    assert [r.ready for r in stack.wait_healthy(1, 5)] == [True]


class ScaledStack:
    project = "lgunit-cpu"

    def __init__(self, found=None, error=None):
        self.found, self.error = found, error

    def scale(self, models, timeout_s):
        if self.error:
            raise StackError(self.error)
        return self.found


def config(tmp_path):
    from support.engine import ROOT

    from loadgrid.config import from_mapping
    raw = {"num_models_list": [1], "num_users_list": [1], "spawn_rate_list": [1], "run_time": "5s",
           "host": "http://127.0.0.1:9", "images_dir": str(ROOT / "images"), "startup_timeout": "1s",
           "expect": "status", "compose_files": [str(ROOT / "docker-compose.yml")]}
    return from_mapping(raw, tmp_path)


def test_bring_up_without_health_check_says_so_once_and_records_why_not_ready(tmp_path, monkeypatch):
    monkeypatch.setattr(sizes, "unloaded_sender", lambda config, answer=False: sender([FAIL]))
    monkeypatch.setattr(readiness, "POLL_S", 0.01)
    said: list[str] = []
    outcome = GridOutcome()
    stack = ScaledStack([replica(health=None, test=())])
    known = sizes.StackSizes()  # one grid's sizes: a project's missing health check is said once per grid
    error = known.bring_up(config(tmp_path), stack, 1, outcome, said.append)
    # nothing listens on the host (port 9): said as such, with the readiness detail
    assert error.startswith("host http://127.0.0.1:9 not reachable after the stack is up: no 3 requests in a row "
                            "served") and "startup_timeout" in error
    known.bring_up(config(tmp_path), stack, 1, outcome, said.append)
    assert len(said) == 1 and "model has no health check" in said[0] and "startup_timeout, 1 s" in said[0]
    assert known.of("lgunit-cpu", 1).readiness["method"] == "requests"
    assert [s["ready"] for s in outcome.scale_steps] == [False, False] and outcome.timings.scale_s > 0


def test_bring_up_with_a_health_check_still_warms_up(tmp_path, monkeypatch):
    monkeypatch.setattr(sizes, "unloaded_sender", lambda config, answer=False: sender([ok(300), ok(30)]))
    said: list[str] = []
    outcome = GridOutcome()
    known = sizes.StackSizes()
    assert known.bring_up(config(tmp_path), ScaledStack([replica(health="healthy")]), 1, outcome, said.append) is None
    ready = known.of("lgunit-cpu", 1).readiness
    assert ready["method"] == "healthcheck" and ready["ready"] and ready["requests"] == 4 and said == []
    assert known.of("lgunit-cpu", 1).baseline_ms == 30  # the warm-up's median is quiesce's unloaded baseline


def test_bring_up_records_a_failed_scale_step(tmp_path):
    outcome = GridOutcome()
    known = sizes.StackSizes()
    known.of("lgunit-cpu", 1).baseline_ms = 25.0  # from an earlier bring-up: a failed one forgets it
    error = known.bring_up(config(tmp_path), ScaledStack(error="replica m1 exited"), 1, outcome, print)
    assert error == "stack not ready: replica m1 exited"
    assert known.of("lgunit-cpu", 1).readiness == {"method": "healthcheck", "ready": False, "requests": 0,
                                                   "waited_s": pytest.approx(0, abs=1), "detail": "replica m1 exited"}
    assert known.of("lgunit-cpu", 1).baseline_ms is None


def test_stack_sizes_are_kept_apart_and_belong_to_one_grid():
    first, second = sizes.StackSizes(), sizes.StackSizes()
    first.of("lgunit-cpu", 1).readiness = {"ready": True}
    assert first.of("lgunit-cpu", 2).readiness == {} and first.of("lgunit-gpu", 1).readiness == {}
    assert second.of("lgunit-cpu", 1).readiness == {}  # no state outlives the grid that made it
