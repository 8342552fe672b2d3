"""Quiesce on the real bundled stack: an overload far above one replica's capacity leaves a backlog; the
replica's gauges show it, the bounded queue refuses the excess with 503 + Retry-After, and the idle check
waits until the backlog is gone (lighter than two orchestrate runs, and deterministic)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.engine import ROOT, one_replica_stack

from loadgrid import quiesce
from loadgrid.stack import ComposeStack, Replica

pytestmark = pytest.mark.docker
PHOTO = (ROOT / "images" / "chelsea.jpg").read_bytes()


def post(port: int) -> int | str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=PHOTO, method="POST",
                                     headers={"Content-Type": "image/jpeg"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return f"{exc.code} retry-after={exc.headers.get('Retry-After')}"
    except OSError as exc:
        return type(exc).__name__


def test_an_overloaded_replica_is_waited_for_before_the_next_run():
    with one_replica_stack("lg-quiesce") as (compose, port, replica_id):
        stack = ComposeStack("unused", (Path(ROOT / "docker-compose.yml"),), "model")
        replica = Replica(replica_id, "model-1", "running", "healthy", "", 0, 0, False, "")
        send = quiesce.http_sender(f"http://127.0.0.1:{port}/predict", PHOTO, "image/jpeg")
        baseline = quiesce.baseline_ms(send)
        assert baseline is not None

        def gauges():
            return {"model-1": quiesce.parse_gauges(stack.get_text(replica, 8000, "/metrics"))}

        assert quiesce.wait_idle(gauges, send, baseline)["idle"]
        with ThreadPoolExecutor(160) as pool:  # 160 at once on one core: far above its queue of 64
            answers = [pool.submit(post, port) for _ in range(160)]
            seen = [f.result() for f in answers]
        assert any(str(a).startswith("503 retry-after=1") for a in seen), seen  # the bound refused the excess
        with ThreadPoolExecutor(64) as pool:  # again, but the next run starts while these are still queued
            for _ in range(64):
                pool.submit(post, port)
            deadline = time.monotonic() + 30
            while not (gauges()["model-1"] or {}).get("loadgrid_queue_depth"):  # bounded: until a backlog shows
                assert time.monotonic() < deadline, "no backlog built up"
            q = quiesce.wait_idle(gauges, send, baseline)
        assert q["idle"] and q["waited_s"] > 0 and q["method"] == "metrics+requests", q
        print("baseline", round(baseline, 1), "ms; quiesce", q)
