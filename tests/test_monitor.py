"""Telemetry from recorded answers: Docker stats frames (cgroup v1 and v2), NVML replies for two GPUs.

No Docker engine and no GPU: the frames below have the shape the Docker Engine API returns from
`GET /containers/{id}/stats` (API 1.41+), the NVML answers the types nvidia-ml-py returns; `Monitor` runs
against a fake Docker client and a fake `nvml` module object that replay them.
"""

from __future__ import annotations

import copy
import os
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from support.engine import base_image
from support.fake_docker import FIRST_FRAME, V2_FRAME, FakeContainer, FakeDocker, MiB, frames_v2, wait_until

from loadgrid import monitor
from loadgrid.monitor import Monitor, NvmlSampler, Telemetry

# cgroup v2 (Docker 20.10+ on a unified hierarchy): no percpu_usage, memory "stats" are cgroup v2's memory.stat
# keys (anon, file, inactive_file, ...). A 2-core machine: system_cpu_usage grows by 2e9 ns a second.

# cgroup v1 (older hosts): percpu_usage per core and no online_cpus on old engines; memory "stats" carry both the
# cgroup's own counters and the hierarchical total_* ones. A 4-core machine.
V1_FRAME = {
    "read": "2026-01-01T10:00:02.000000000Z",
    "preread": "2026-01-01T10:00:01.000000000Z",
    "pids_stats": {"current": 7},
    "num_procs": 0,
    "cpu_stats": {
        "cpu_usage": {"total_usage": 120_300_000_000, "percpu_usage": [30_100_000_000, 30_050_000_000,
                                                                       30_100_000_000, 30_050_000_000],
                      "usage_in_kernelmode": 10_000_000_000, "usage_in_usermode": 110_000_000_000},
        "system_cpu_usage": 9_000_004_000_000_000,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
    "precpu_stats": {
        "cpu_usage": {"total_usage": 118_700_000_000, "percpu_usage": [29_700_000_000, 29_650_000_000,
                                                                       29_700_000_000, 29_650_000_000],
                      "usage_in_kernelmode": 9_900_000_000, "usage_in_usermode": 108_800_000_000},
        "system_cpu_usage": 9_000_000_000_000_000,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
    "memory_stats": {
        "usage": 412_700_672, "max_usage": 431_017_984,
        "stats": {"active_anon": 350_617_600, "active_file": 12_288_000, "cache": 45_056_000, "inactive_anon": 0,
                  "inactive_file": 32_768_000, "mapped_file": 20_480_000, "rss": 350_617_600,
                  "total_active_anon": 350_617_600, "total_active_file": 12_288_000, "total_cache": 45_056_000,
                  "total_inactive_anon": 0, "total_inactive_file": 32_768_000, "total_rss": 350_617_600},
        "failcnt": 0, "limit": 8_589_934_592,
    },
    "name": "/loadgrid-cpu-model-2",
    "id": "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
}

# The first frame of a stream: Docker has no previous reading yet, so precpu_stats is nearly empty.

# A container that has stopped: the engine sends empty stats.
STOPPED_FRAME = {"read": "2026-01-01T10:00:09Z", "preread": "2026-01-01T10:00:08Z", "pids_stats": {},
                 "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
                 "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}, "memory_stats": {},
                 "name": "/loadgrid-cpu-model-1", "id": "4f1c2b9d7e6a"}


def test_cpu_percent_cgroup_v2():
    # 0.9 s of CPU over 2 s of system time on 2 cores: 90% of one core, as `docker stats` shows it
    assert monitor.cpu_percent(V2_FRAME) == pytest.approx(90.0)


def test_cpu_percent_cgroup_v1_counts_cores_from_percpu_usage():
    # 1.6 s of CPU over 4 s of system time; no online_cpus, so 4 cores from percpu_usage: 160%
    assert monitor.cpu_percent(V1_FRAME) == pytest.approx(160.0)


def test_cpu_percent_without_a_previous_reading_is_none():
    assert monitor.cpu_percent(FIRST_FRAME) is None
    assert monitor.cpu_percent(STOPPED_FRAME) is None
    assert monitor.cpu_percent({}) is None


def test_cpu_percent_idle_and_counter_reset():
    idle = copy.deepcopy(V2_FRAME)
    idle["cpu_stats"]["cpu_usage"]["total_usage"] = idle["precpu_stats"]["cpu_usage"]["total_usage"]
    assert monitor.cpu_percent(idle) == 0.0
    reset = copy.deepcopy(V2_FRAME)
    reset["cpu_stats"]["cpu_usage"]["total_usage"] = 1_000  # container restarted: the counter went back
    assert monitor.cpu_percent(reset) is None


def test_memory_bytes_cgroup_v2_leaves_out_inactive_file():
    assert monitor.memory_bytes(V2_FRAME) == 331_870_208 - 25_595_904  # 292.1 MiB, as `docker stats`


def test_memory_bytes_cgroup_v1_leaves_out_inactive_file():
    assert monitor.memory_bytes(V1_FRAME) == 412_700_672 - 32_768_000


def test_memory_bytes_of_a_stopped_container_is_none():
    assert monitor.memory_bytes(STOPPED_FRAME) is None
    assert monitor.memory_bytes({"memory_stats": {"usage": 1_000}}) == 1_000  # no detail: usage as it is


def test_memory_bytes_matches_docker_cli_on_cgroup_v1_hierarchies():
    frame = copy.deepcopy(V1_FRAME)
    frame["memory_stats"]["stats"]["inactive_file"] = 1_000_000  # the cgroup's own; total_ counts its children
    assert monitor.memory_bytes(frame) == 412_700_672 - 32_768_000


def test_telemetry_summary():
    t = Telemetry(containers={
        "loadgrid-cpu-model-1": [(1.0, 80.0, 300 * MiB), (2.0, 100.0, 310 * MiB), (3.0, 90.5, 320 * MiB)],
        "loadgrid-cpu-gateway-1": [(1.0, 2.0, 10 * MiB)],
        "loadgrid-cpu-empty-1": [],
    }, gpu_absent_reason="not a GPU run")
    s = t.summary()
    assert list(s["containers"]) == ["loadgrid-cpu-empty-1", "loadgrid-cpu-gateway-1", "loadgrid-cpu-model-1"]
    unknown_limit = {"cpu_limit_cores": None, "service": None, "cpu_interval": "whole run"}
    assert s["containers"]["loadgrid-cpu-model-1"] == {"samples": 3, "cpu_pct_mean": 90.2, "cpu_pct_max": 100.0,
                                                       "mem_mb_mean": 310.0, "mem_mb_max": 320.0, **unknown_limit}
    assert s["containers"]["loadgrid-cpu-empty-1"] == {"samples": 0, "cpu_pct_mean": None, "cpu_pct_max": None,
                                                       "mem_mb_mean": None, "mem_mb_max": None, **unknown_limit}
    assert s["gpus"] == {} and s["gpu_absent"] == "not a GPU run"
    assert "host" not in s  # nothing sampled the host


def test_telemetry_summary_counts_only_the_window_when_given():
    t = Telemetry(containers={"m": [(1.0, 10.0, MiB), (5.0, 90.0, MiB), (6.0, 100.0, MiB), (9.0, 5.0, MiB)]},
                  host=[(0.0, 1.0, 20.0), (4.5, 5.5, 96.0), (5.5, 6.5, 98.0), (8.5, 9.5, 30.0)], host_cores=2,
                  limits={"m": {"service": "model", "cpu_limit_cores": 1.5}})
    s = t.summary(window=(4.0, 7.0))
    m = s["containers"]["m"]
    assert (m["cpu_pct_mean"], m["cpu_pct_max"], m["cpu_interval"]) == (95.0, 100.0, "measurement window")
    assert m["samples"] == 4 and m["cpu_limit_cores"] == 1.5 and m["service"] == "model"
    assert s["host"] == {"cores": 2, "cpu_pct_mean": 97.0, "cpu_pct_max": 98.0, "samples": 2,
                         "interval": "measurement window"}
    # no window (or none of the samples in it): the whole run, and the record says so
    whole = t.summary()["host"]
    assert whole["interval"] == "whole run" and whole["samples"] == 4 and whole["cpu_pct_mean"] == 61.0
    assert t.summary(window=(100.0, 200.0))["host"]["interval"] == "whole run"


PROC_STAT = """cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0
cpu0 1 0 1 1 0 0 0 0 0 0
cpu1 1 0 1 1 0 0 0 0 0 0
intr 12345
"""


def test_host_cpu_from_proc_stat():
    before = monitor.read_proc_stat(PROC_STAT.format(user=100, system=50, idle=800, iowait=50))
    assert before == (150, 1000, 2)
    after = monitor.read_proc_stat(PROC_STAT.format(user=260, system=80, idle=810, iowait=50))  # +200 ticks
    assert monitor.host_cpu_pct(before, after) == pytest.approx(95.0)
    assert monitor.host_cpu_pct(after, after) is None  # no time passed


def test_cpu_limit_cores_from_docker_inspect():
    from loadgrid.stack import cpu_limit_cores

    assert cpu_limit_cores({"HostConfig": {"NanoCpus": 1_500_000_000}}, 4) == 1.5  # --cpus 1.5
    assert cpu_limit_cores({"HostConfig": {"CpuQuota": 50_000, "CpuPeriod": 100_000}}, 4) == 0.5
    assert cpu_limit_cores({"HostConfig": {"CpuQuota": 200_000}}, 4) == 2.0  # default period 100 ms
    assert cpu_limit_cores({"HostConfig": {"CpusetCpus": "0,2-3"}}, 8) == 3.0
    assert cpu_limit_cores({"HostConfig": {"NanoCpus": 8_000_000_000}}, 2) == 2.0  # never more than the host has
    assert cpu_limit_cores({"HostConfig": {"NanoCpus": 0, "CpuQuota": -1, "CpusetCpus": ""}}, 2) == 2.0  # no limit
    assert cpu_limit_cores({"HostConfig": {}}, None) is None


# --- NVML ---------------------------------------------------------------------------------------------------

class FakeNvml:
    """A stand-in for the `pynvml` module (nvidia-ml-py) replaying recorded answers, one reading per call.

    GPU 0 is an NVIDIA A10G (24 GiB, 300 W cap), GPU 1 a Tesla T4 (16 GiB, 70 W): utilisation in %, memory in
    bytes, power in milliwatts, the name as `bytes` (nvidia-ml-py before 11.5) or `str` (after).
    """

    def __init__(self, readings=None, fail_init: Exception | None = None):
        self.readings = readings or RECORDED
        self.fail_init = fail_init
        self.calls = {i: 0 for i in range(len(self.readings))}
        self.shutdown = 0
        self.lock = threading.Lock()

    def nvmlInit(self):
        if self.fail_init:
            raise self.fail_init

    def nvmlShutdown(self):
        self.shutdown += 1

    def nvmlDeviceGetCount(self):
        return len(self.readings)

    def nvmlDeviceGetHandleByIndex(self, index):
        return SimpleNamespace(index=index)

    def _reading(self, handle):
        rows = self.readings[handle.index]["samples"]
        return rows[min(self.calls[handle.index], len(rows) - 1)]

    def nvmlDeviceGetName(self, handle):
        return self.readings[handle.index]["name"]

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=self._reading(handle)[0], memory=self._reading(handle)[0] // 2)

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = self._reading(handle)[1]
        total = self.readings[handle.index]["total"]
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetPowerUsage(self, handle):
        value = self._reading(handle)[2]
        with self.lock:  # the last query of a reading: the next call gets the next one
            self.calls[handle.index] += 1
        return value


# (util %, memory used bytes, power mW) per reading
RECORDED = [
    {"name": b"NVIDIA A10G", "total": 24_146_608_128,
     "samples": [(0, 2_154_823_680, 58_318), (87, 6_711_934_976, 201_442), (93, 6_736_052_224, 243_910),
                 (91, 6_736_052_224, 238_004)]},
    {"name": "Tesla T4", "total": 16_106_127_360,
     "samples": [(0, 440_401_920, 27_050), (64, 3_152_019_456, 61_221), (71, 3_152_019_456, 69_870),
                 (69, 3_154_116_608, 68_002)]},
]


def test_nvml_sampler_reads_every_gpu():
    nvml = FakeNvml()
    sampler = NvmlSampler(nvml)
    first = sampler.sample()
    assert sorted(first) == ["0", "1"]
    assert first["0"]["name"] == "NVIDIA A10G" and first["1"]["name"] == "Tesla T4"  # bytes and str names
    assert first["0"]["util_pct"] == 0.0 and first["0"]["mem_used_mb"] == pytest.approx(2055.0)
    assert first["0"]["power_w"] == pytest.approx(58.318)
    second = sampler.sample()
    assert second["1"]["util_pct"] == 64.0 and second["1"]["mem_used_mb"] == pytest.approx(3006.0)
    assert second["1"]["power_w"] == pytest.approx(61.221)
    assert abs(second["0"]["t"] - time.time()) < 5
    sampler.close()
    assert nvml.shutdown == 1


def test_nvml_close_never_raises():
    nvml = FakeNvml()
    sampler = NvmlSampler(nvml)

    def boom():
        raise RuntimeError("NVML_ERROR_UNINITIALIZED")

    calls = []
    nvml.nvmlShutdown = lambda: (calls.append("shutdown"), boom())
    sampler.close()  # raising here fails the test: the run's record must still be written
    assert calls == ["shutdown"]  # it did try to shut NVML down (a close that skipped it would pass silently)


def test_summarise_gpu_over_recorded_samples():
    sampler = NvmlSampler(FakeNvml())
    samples = [sampler.sample() for _ in range(4)]
    a10g = monitor.summarise_gpu([s["0"] for s in samples])
    assert a10g["name"] == "NVIDIA A10G" and a10g["samples"] == 4
    assert a10g["util_pct_mean"] == pytest.approx((0 + 87 + 93 + 91) / 4, abs=0.05) and a10g["util_pct_max"] == 93.0
    assert a10g["mem_used_mb_max"] == pytest.approx(6424.0) and a10g["power_w_max"] == pytest.approx(243.9)
    assert a10g["power_w_mean"] == pytest.approx((58.318 + 201.442 + 243.910 + 238.004) / 4, abs=0.05)
    t4 = monitor.summarise_gpu([s["1"] for s in samples])
    assert t4["name"] == "Tesla T4" and t4["util_pct_max"] == 71.0 and t4["power_w_max"] == pytest.approx(69.9)
    assert monitor.summarise_gpu([])["samples"] == 0 and monitor.summarise_gpu([])["util_pct_mean"] is None
    # a GPU that does not report power (NVML_ERROR_NOT_SUPPORTED, stored as None) still summarises the rest
    partial = monitor.summarise_gpu([{"name": "x", "util_pct": 10.0, "mem_used_mb": 5.0, "power_w": None}])
    assert partial["power_w_mean"] is None and partial["util_pct_mean"] == 10.0


# --- Monitor, against a fake Docker client ------------------------------------------------------------------


def test_cpu_run_monitor_records_gpu_absent_and_container_samples(monkeypatch):
    def no_nvml(*a, **k):
        raise AssertionError("a CPU run must not touch NVML")

    monkeypatch.setattr(monitor, "NvmlSampler", no_nvml)
    died = {"Type": "container", "Action": "die", "id": "9a8b7c6d5e4f3a2b", "timeNano": 1_767_261_610_500_000_000,
            "Actor": {"ID": "9a8b7c6d5e4f3a2b", "Attributes": {"name": "loadgrid-cpu-model-2", "exitCode": "137",
                                                               "com.docker.compose.service": "model"}}}
    started = {**died, "Action": "start"}
    client = FakeDocker([FakeContainer("loadgrid-cpu-model-1", frames_v2(3)),
                         FakeContainer("loadgrid-cpu-model-2", [V1_FRAME, STOPPED_FRAME])], events=[started, died])
    mon = Monitor("loadgrid-cpu", "model", gpu=False, client=client)
    with mon:
        assert wait_until(lambda: len(mon.telemetry.containers.get("loadgrid-cpu-model-1", [])) == 3
                          and mon.events)
    summary = mon.telemetry.summary()
    assert summary["gpu_absent"] == "not a GPU run" and summary["gpus"] == {}
    model1 = summary["containers"]["loadgrid-cpu-model-1"]
    assert model1["samples"] == 3 and model1["cpu_pct_mean"] == pytest.approx(90.0)
    assert model1["mem_mb_max"] == pytest.approx(round((331_870_208 + 2 * MiB - 25_595_904) / MiB, 1))
    assert summary["containers"]["loadgrid-cpu-model-2"]["samples"] == 1  # the stopped frame is skipped
    assert [(e.action, e.exit_code, e.name) for e in mon.replica_events()] == [("die", 137, "loadgrid-cpu-model-2")]
    assert client.event_filters == {"type": "container", "label": "com.docker.compose.project=loadgrid-cpu"}


def test_gpu_run_monitor_samples_both_gpus(monkeypatch):
    nvml = FakeNvml()
    client = FakeDocker([FakeContainer("loadgrid-gpu-model-1", frames_v2(2))])
    mon = Monitor("loadgrid-cpu", "model", gpu=True, client=client, nvml=nvml, interval_s=0.01)
    with mon:
        assert wait_until(lambda: len(mon.telemetry.gpus.get("1", [])) >= 4)
    assert nvml.shutdown == 1  # the sampler is closed when the run ends
    summary = mon.telemetry.summary()
    assert "gpu_absent" not in summary
    assert sorted(summary["gpus"]) == ["0", "1"]
    assert summary["gpus"]["0"]["name"] == "NVIDIA A10G" and summary["gpus"]["1"]["name"] == "Tesla T4"
    assert summary["gpus"]["0"]["util_pct_max"] == 93.0 and summary["gpus"]["1"]["power_w_max"] == pytest.approx(69.9)


def test_gpu_run_without_nvml_records_why():
    client = FakeDocker([])
    mon = Monitor("loadgrid-cpu", "model", gpu=True, client=client,
                  nvml=FakeNvml(fail_init=RuntimeError("NVML Shared Library Not Found")))
    with mon:
        pass
    summary = mon.telemetry.summary()
    assert summary["gpus"] == {} and summary["gpu_absent"] == "NVML unavailable: NVML Shared Library Not Found"


def test_monitor_samples_host_cpu_and_records_each_containers_cpu_limit(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(PROC_STAT.format(user=100, system=50, idle=800, iowait=50))
    limited = {"HostConfig": {"NanoCpus": 500_000_000}, "Config": {"Labels": {"com.docker.compose.service": "model"}}}
    unlimited = {"HostConfig": {"NanoCpus": 0}, "Config": {"Labels": {"com.docker.compose.service": "gateway"}}}
    client = FakeDocker([FakeContainer("loadgrid-cpu-model-1", frames_v2(2), limited),
                         FakeContainer("loadgrid-cpu-gateway-1", frames_v2(2), unlimited)])
    mon = Monitor("loadgrid-cpu", "model", client=client, interval_s=0.01, proc_stat=str(stat))
    with mon:
        later = tmp_path / "stat.new"
        later.write_text(PROC_STAT.format(user=260, system=80, idle=810, iowait=50))
        later.replace(stat)  # atomically, as the kernel's file reads
        assert wait_until(lambda: any(pct == 95.0 for _, _, pct in mon.telemetry.host))
    summary = mon.telemetry.summary()
    assert summary["host"]["cores"] == 2 and summary["host"]["cpu_pct_max"] == 95.0
    model, gateway = summary["containers"]["loadgrid-cpu-model-1"], summary["containers"]["loadgrid-cpu-gateway-1"]
    assert (model["cpu_limit_cores"], model["service"]) == (0.5, "model")
    assert (gateway["cpu_limit_cores"], gateway["service"]) == (2.0, "gateway")  # no limit: the host's cores


def test_monitor_does_not_sample_host_cpu_of_a_remote_engine(tmp_path):
    client = FakeDocker([])
    client.api = SimpleNamespace(base_url="https://build-box:2376")
    mon = Monitor("loadgrid-cpu", "model", client=client, proc_stat="/proc/stat")
    with mon:
        pass
    summary = mon.telemetry.summary()
    assert "host" not in summary and "https://build-box:2376" in summary["host_absent"]


# --- Monitor, against the real engine -----------------------------------------------------------------------

@pytest.mark.docker
def test_monitor_on_the_real_engine_reads_cpu_limits_and_samples_host_cpu():
    """A container limited to half a core (busy) and one without a limit (idle), watched for a few samples."""
    from support.engine import project_resources

    project = f"lgtest-limits-{uuid.uuid4().hex[:8]}"

    def start(service: str, *args: str) -> str:
        proc = subprocess.run(["docker", "run", "-d", "--label", f"com.docker.compose.project={project}",
                               "--label", f"com.docker.compose.service={service}", "--name", f"{project}-{service}-1",
                               *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return f"{project}-{service}-1"

    try:
        busy = start("model", "--cpus", "0.5", base_image(), "sh", "-c", "while :; do :; done")
        idle = start("gateway", base_image(), "sleep", "120")
        with Monitor(project, "model", interval_s=0.5) as mon:
            assert wait_until(lambda: len(mon.telemetry.host) >= 3
                              and len(mon.telemetry.containers.get(busy, [])) >= 2, timeout=60), mon.telemetry
        summary = mon.telemetry.summary()
    finally:
        subprocess.run(["docker", "rm", "-f", f"{project}-model-1", f"{project}-gateway-1"], capture_output=True,
                       timeout=60)
    assert project_resources(project) == ([], [])
    host = summary["host"]
    assert host["cores"] == os.cpu_count() and host["samples"] >= 3 and host["interval"] == "whole run"
    assert 0 < host["cpu_pct_mean"] <= 100  # the busy container alone keeps some of it busy
    assert summary["containers"][busy]["cpu_limit_cores"] == 0.5 and summary["containers"][busy]["service"] == "model"
    assert summary["containers"][idle]["cpu_limit_cores"] == host["cores"]  # no limit: the host's cores
    assert summary["containers"][busy]["cpu_pct_mean"] > 0
