"""A fake Docker SDK client (stats and events streams) for the monitor's pure tests."""

from __future__ import annotations

import copy
import threading
import time
from types import SimpleNamespace

MiB = 2**20


V2_FRAME = {
    "read": "2026-01-01T10:00:02.004567891Z",
    "preread": "2026-01-01T10:00:01.003456789Z",
    "pids_stats": {"current": 9, "limit": 28398},
    "num_procs": 0,
    "cpu_stats": {
        "cpu_usage": {"total_usage": 48_761_234_000, "usage_in_kernelmode": 4_120_331_000,
                      "usage_in_usermode": 44_640_903_000},
        "system_cpu_usage": 2_460_511_300_000_000,
        "online_cpus": 2,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
    "precpu_stats": {
        "cpu_usage": {"total_usage": 47_861_234_000, "usage_in_kernelmode": 4_050_331_000,
                      "usage_in_usermode": 43_810_903_000},
        "system_cpu_usage": 2_460_509_300_000_000,
        "online_cpus": 2,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
    "memory_stats": {
        "usage": 331_870_208,
        "stats": {"active_anon": 0, "active_file": 2_490_368, "anon": 301_268_992, "anon_thp": 0, "file": 28_086_272,
                  "file_dirty": 0, "file_mapped": 19_726_336, "inactive_anon": 301_256_704,
                  "inactive_file": 25_595_904, "kernel_stack": 147_456, "pgfault": 151_206, "pgmajfault": 96,
                  "shmem": 0, "slab": 1_561_120, "sock": 0, "unevictable": 0},
        "limit": 25_274_728_448,
    },
    "name": "/loadgrid-cpu-model-1",
    "id": "4f1c2b9d7e6a5f4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c",
    "networks": {"eth0": {"rx_bytes": 91_540_112, "rx_packets": 3_904, "tx_bytes": 402_331, "tx_packets": 2_511}},
}


FIRST_FRAME = {**copy.deepcopy(V2_FRAME), "preread": "0001-01-01T00:00:00Z",
               "precpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}}


class FakeStream:
    """What the Docker SDK returns for a streaming call: an iterator that can be closed."""

    def __init__(self, items, hold: threading.Event | None = None):
        self.items = list(items)
        self.hold = hold
        self.closed = threading.Event()

    def __iter__(self):
        yield from self.items
        if self.hold is not None:  # a live stream: waits for more until closed
            self.closed.wait(10)

    def close(self):
        self.closed.set()


class FakeContainer:
    def __init__(self, name, frames, attrs=None):
        self.name = name
        self.frames = frames
        if attrs is not None:  # what `docker inspect` says; a sparse listing has none
            self.attrs = attrs

    def stats(self, stream=True, decode=True):
        assert stream and decode
        return FakeStream(self.frames, hold=threading.Event())


class FakeDocker:
    def __init__(self, containers, events=()):
        self._containers = containers
        self._events = events
        self.containers = SimpleNamespace(list=self._list)
        self.event_filters = None

    def _list(self, filters=None):
        assert filters == {"label": "com.docker.compose.project=loadgrid-cpu"}
        return self._containers

    def events(self, since=None, decode=True, filters=None):
        self.event_filters = filters
        return FakeStream(self._events, hold=threading.Event())


def frames_v2(n: int) -> list[dict]:
    """n consecutive stats frames a second apart, after the stream's first frame (which has no CPU figure)."""
    out = [FIRST_FRAME]
    for i in range(n):
        f = copy.deepcopy(V2_FRAME)
        f["cpu_stats"]["cpu_usage"]["total_usage"] += i * 900_000_000
        f["precpu_stats"]["cpu_usage"]["total_usage"] += i * 900_000_000
        f["memory_stats"]["usage"] += i * MiB
        out.append(f)
    return out


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()
