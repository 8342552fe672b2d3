"""Quiesce before a run: the bounded wait for an idle stack, with fake gauges, requests and clock."""

from __future__ import annotations

from loadgrid import quiesce


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def pause(self, seconds):
        self.t += seconds


def draining(depths):
    """Replica gauges that read each depth in turn, then stay at the last."""
    seq = list(depths)

    def gauges():
        d = seq.pop(0) if len(seq) > 1 else seq[0]
        return {"cpu-model-1": {"loadgrid_queue_depth": d, "loadgrid_in_flight_requests": d}}
    return gauges


def test_waits_until_every_replica_reads_zero():
    clock = Clock()
    q = quiesce.wait_idle(draining([37, 20, 5, 0]), None, None, clock=clock, pause=clock.pause)
    assert q["idle"] and q["method"] == "metrics" and q["waited_s"] == 3 * quiesce.POLL_S
    assert "read 0" in q["detail"]


def test_still_busy_after_the_bound_is_invalid_with_the_figures():
    clock = Clock()
    q = quiesce.wait_idle(draining([37]), None, None, timeout_s=30, clock=clock, pause=clock.pause)
    assert not q["idle"] and q["waited_s"] >= 30 and q["waited_s"] < 30 + 2 * quiesce.POLL_S
    assert quiesce.reason(q) == ("the stack was still busy before the run (queue 37, in flight 37 on cpu-model-1 "
                                 "after 30 s): the previous run's backlog would be measured")
    assert quiesce.reason({"idle": True}) is None and quiesce.reason({}) is None


def test_unloaded_requests_must_answer_near_the_baseline():
    clock = Clock()
    answers = iter([400, 390, 380, 200, 120, 90, 60, 55, 52])  # a backlog draining, then baseline 50 ms again

    q = quiesce.wait_idle(None, lambda: next(answers), 50.0, clock=clock, pause=clock.pause)
    assert q["idle"] and q["method"] == "requests" and q["waited_s"] == 2 * quiesce.POLL_S
    assert "baseline 50 ms" in q["detail"]
    # the limit is 1.5x + 20 ms: 95 ms passes for a 50 ms baseline, 96 ms does not
    assert quiesce.near(95, 50) and not quiesce.near(96, 50)
    clock = Clock()
    q = quiesce.wait_idle(None, lambda: 500.0, 50.0, timeout_s=5, clock=clock, pause=clock.pause)
    assert not q["idle"] and "limit 95 ms" in q["detail"]


def test_gauges_first_then_requests_and_nothing_to_check():
    clock = Clock()
    q = quiesce.wait_idle(draining([2, 0]), lambda: 10.0, 10.0, clock=clock, pause=clock.pause)
    assert q["idle"] and q["method"] == "metrics+requests"
    q = quiesce.wait_idle(lambda: {"r": None}, None, None, clock=clock, pause=clock.pause)
    assert q["idle"] and q["method"] == "none" and "not checked" in q["detail"]


def test_gauges_are_read_from_prometheus_text():
    text = ("# HELP loadgrid_queue_depth x\n# TYPE loadgrid_queue_depth gauge\nloadgrid_queue_depth 3.0\n"
            "loadgrid_in_flight_requests 4.0\nmodel_queue_depth 3.0\n")
    assert quiesce.parse_gauges(text) == {"loadgrid_queue_depth": 3.0, "loadgrid_in_flight_requests": 4.0}
    assert quiesce.parse_gauges("other_metric 1\n") is None and quiesce.parse_gauges(None) is None


def test_baseline_is_the_median_and_none_when_a_request_failed():
    answers = iter([30.0, 10.0, 20.0])
    assert quiesce.baseline_ms(lambda: next(answers)) == 20.0
    assert quiesce.baseline_ms(lambda: None) is None
