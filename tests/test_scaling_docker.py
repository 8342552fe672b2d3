"""The gateway spreads load over every replica, also after scaling down and up again (real engine)."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter

import pytest
from support.engine import ROOT, free_port, project_resources

from loadgrid.stack import ComposeStack, running, wait_reachable

pytestmark = pytest.mark.docker

IMAGE = (ROOT / "images" / "chelsea.jpg").read_bytes()


def spread(port: int, requests: int) -> Counter:
    """Send `requests` predictions one after another through the gateway; count who answered."""
    seen: Counter = Counter()
    for _ in range(requests):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=IMAGE,
                                     headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            seen[json.loads(resp.read())["replica"]] += 1
    return seen


def assert_fair(seen: Counter, replicas: int) -> None:
    assert len(seen) == replicas, f"not every replica served: {dict(seen)}"
    mean = sum(seen.values()) / replicas
    for name, count in seen.items():
        assert abs(count - mean) <= 0.2 * mean, f"replica {name} served {count}, mean {mean:.0f}: {dict(seen)}"


def test_requests_spread_over_replicas_across_rescaling(tmp_path):
    port = free_port()
    stack = ComposeStack("lgtest-scale", (ROOT / "docker-compose.yml",), "model",
                         env={"LOADGRID_GATEWAY_PORT": str(port)})
    with running(stack):
        stack.build(tmp_path / "lgtest-scale-build.log")
        for replicas in (2, 3, 1, 3):
            found = stack.scale(replicas, timeout_s=300)
            assert len(found) == replicas
            wait_reachable(f"http://127.0.0.1:{port}/health")
            seen = spread(port, 150 * replicas)
            assert_fair(seen, replicas)
            # the hostnames that answered are exactly the running replicas
            assert set(seen) == {r.container_id[:12] for r in found}
    assert project_resources("lgtest-scale") == ([], [])
