"""GPU pre-flight decisions from recorded nvidia-smi / NVML / docker answers (tests/fixtures/gpu/), no GPU needed."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import yaml
from support.engine import ROOT

from loadgrid import gpu
from loadgrid.gpu import GpuInfo, GpuQueryError

FIXTURES = ROOT / "tests" / "fixtures" / "gpu"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def runtimes(name: str) -> dict:
    return json.loads(fixture(f"docker-runtimes-{name}.json"))


class RecordedNvml:
    """Replays recorded NVML answers with pynvml's call names."""

    def __init__(self, name: str, fail_init: str | None = None):
        self.record = json.loads(fixture(name))
        self.fail_init = fail_init
        self.shut_down = False

    def _out(self, text: str):
        return text.encode() if self.record.get("bytes") else text

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError(self.fail_init)

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlDeviceGetCount(self):
        return len(self.record["devices"])

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.record["devices"][i]

    def nvmlDeviceGetName(self, handle):
        return self._out(handle["name"])

    def nvmlDeviceGetUUID(self, handle):
        return self._out(handle["uuid"])

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(**handle["memory"])


# --- parsing --------------------------------------------------------------------------------------

def test_parse_one_idle_card():
    assert gpu.parse_nvidia_smi(fixture("nvidia-smi-1xA10G-idle.csv")) == [GpuInfo(0, "NVIDIA A10G", 23028, 0)]


def test_parse_two_cards_with_uuids():
    gpus = gpu.parse_nvidia_smi(fixture("nvidia-smi-2xL4-first-busy.csv"))
    assert [(g.index, g.name, g.memory_free_mb) for g in gpus] == [(0, "NVIDIA L4", 2522), (1, "NVIDIA L4", 23033)]
    assert gpus[1].uuid == "GPU-a4b9c7d2-8e1f-4a3b-b6c5-0d9e2f1a7b8c"


def test_parse_skips_a_header_line_and_reads_no_devices_as_none():
    assert gpu.parse_nvidia_smi(fixture("nvidia-smi-T4-with-header.csv")) == [GpuInfo(0, "Tesla T4", 15360, 3)]
    assert gpu.parse_nvidia_smi(fixture("nvidia-smi-no-devices.txt")) == []
    assert gpu.parse_nvidia_smi("") == []


def test_parse_refuses_driver_failures_and_missing_memory_figures():
    with pytest.raises(GpuQueryError, match="couldn't communicate with the NVIDIA driver"):
        gpu.parse_nvidia_smi(fixture("nvidia-smi-no-driver.txt"))
    with pytest.raises(GpuQueryError, match="no memory figures for GPU 0"):
        gpu.parse_nvidia_smi(fixture("nvidia-smi-memory-not-available.csv"))


def test_nvml_answers():
    nvml = RecordedNvml("nvml-1xT4.json")
    (t4,) = gpu.gpus_from_nvml(nvml)
    assert (t4.index, t4.name, t4.uuid) == (0, "Tesla T4", "GPU-2e5b1c4d-7a8f-9b0c-1d2e-3f4a5b6c7d8e")
    assert t4.memory_total_mb == 15360 and t4.memory_used_mb == 425
    assert nvml.shut_down
    a, b = gpu.gpus_from_nvml(RecordedNvml("nvml-2xA100-bytes-names.json"))  # pynvml < 11.5 answers bytes
    assert a.name == b.name == "NVIDIA A100-SXM4-40GB" and b.memory_free_mb == 20480
    with pytest.raises(GpuQueryError, match="NVML unavailable: Driver Not Loaded"):
        gpu.gpus_from_nvml(RecordedNvml("nvml-1xT4.json", fail_init="Driver Not Loaded"))


# --- pre-flight decisions -----------------------------------------------------------------------------

def test_no_nvidia_runtime_is_not_ok_in_one_line():
    result = gpu.preflight(2, None, runtimes("this-machine"), [])
    assert not result.ok and result.fits is None
    assert "no NVIDIA runtime registered with Docker" in result.reason and "\n" not in result.reason
    assert "runc" in result.reason  # names what Docker does have
    # a GPU seen by the host's nvidia-smi does not help when Docker cannot hand it out
    host_gpu = gpu.parse_nvidia_smi(fixture("nvidia-smi-1xA10G-idle.csv"))
    assert not gpu.preflight(1, 500, runtimes("this-machine"), host_gpu).ok


def test_runtime_but_no_gpu_is_not_ok():
    result = gpu.preflight(1, None, runtimes("nvidia"), gpu.parse_nvidia_smi(fixture("nvidia-smi-no-devices.txt")))
    assert not result.ok and "no NVIDIA GPU found" in result.reason


def test_nvidia_ctk_runtime_names_count():
    gpus = gpu.parse_nvidia_smi(fixture("nvidia-smi-1xA10G-idle.csv"))
    assert gpu.preflight(1, None, runtimes("nvidia-ctk-cdi"), gpus).ok


def test_unmeasured_replica_memory_is_ok_but_unchecked():
    gpus = gpu.parse_nvidia_smi(fixture("nvidia-smi-1xA10G-idle.csv"))
    result = gpu.preflight(4, None, runtimes("nvidia"), gpus)
    assert result.ok and result.fits is None and "not measured" in result.reason and "GPU 0" in result.reason


def test_replicas_that_fit_and_that_do_not():
    gpus = gpu.parse_nvidia_smi(fixture("nvidia-smi-1xA10G-idle.csv"))  # 23028 MiB free
    # margin: 5% of 23028 = 1151 MiB; (23028 - 1151) // 1200 = 18
    ok = gpu.preflight(18, 1200, runtimes("nvidia"), gpus)
    assert ok.ok and ok.fits == 18 and "fit on GPU 0 (NVIDIA A10G" in ok.reason
    too_many = gpu.preflight(19, 1200, runtimes("nvidia"), gpus)
    assert not too_many.ok and too_many.fits == 18
    assert "19 replicas x 1200 MiB" in too_many.reason and "18 fit" in too_many.reason


def test_the_fit_counts_memory_other_jobs_already_use():
    gpus = gpu.parse_nvidia_smi(fixture("nvidia-smi-2xL4-first-busy.csv"))  # GPU 0: 2522 MiB free
    busy = gpu.preflight(2, 1200, runtimes("nvidia"), gpus)
    assert not busy.ok and busy.fits == 1  # (2522 - 1152) // 1200
    idle = gpu.preflight(2, 1200, runtimes("nvidia"), gpus, device_ids=["1"])
    assert idle.ok and idle.fits == 18 and "GPU 1" in idle.reason
    by_uuid = gpu.preflight(2, 1200, runtimes("nvidia"), gpus, device_ids=["GPU-a4b9c7d2-8e1f-4a3b-b6c5-0d9e2f1a7b8c"])
    assert by_uuid.ok and "GPU 1" in by_uuid.reason
    # replicas run on the first reserved GPU (CUDA device 0, PCI order): ids 1 and 0 -> GPU 0
    assert not gpu.preflight(2, 1200, runtimes("nvidia"), gpus, device_ids=["1", "0"]).ok


def test_small_cards_keep_a_floor_of_margin():
    tiny = [GpuInfo(0, "small", 2048, 0)]
    assert gpu.margin_mb(tiny[0]) == 256
    assert gpu.preflight(1, 1792, runtimes("nvidia"), tiny).ok
    assert not gpu.preflight(1, 1793, runtimes("nvidia"), tiny).ok


def test_device_ids_and_counts_that_are_not_here():
    gpus = gpu.parse_nvidia_smi(fixture("nvidia-smi-2xL4-first-busy.csv"))
    result = gpu.preflight(1, None, runtimes("nvidia"), gpus, device_ids=["3"])
    assert not result.ok and "'3' is not a GPU on this machine (it has 0, 1)" in result.reason
    result = gpu.preflight(1, None, runtimes("nvidia"), gpus, count=4)
    assert not result.ok and "gpu_count: 4" in result.reason
    assert gpu.preflight(1, None, runtimes("nvidia"), gpus, count="all").ok


def test_probe_on_this_machine_finds_no_gpu():
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    found_runtimes, gpus = gpu.probe()
    assert gpus == []
    result = gpu.preflight(1, None, found_runtimes, gpus)
    assert not result.ok and "\n" not in result.reason


# --- compose settings ----------------------------------------------------------------------------------

class OverrideLoader(yaml.SafeLoader):
    pass


OverrideLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node, deep=True))


def devices_of(text: str) -> list[dict]:
    return yaml.load(text, Loader=OverrideLoader)["services"]["model"]["deploy"]["resources"]["reservations"][
        "devices"]


def test_compose_override_for_device_ids_or_count():
    text = gpu.compose_override(None, ["0", "2"])
    assert "devices: !override" in text  # replaces the reservation instead of appending a second one
    assert devices_of(text) == [{"driver": "nvidia", "device_ids": ["0", "2"], "capabilities": ["gpu"]}]
    assert devices_of(gpu.compose_override(2, None)) == [{"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}]
    assert devices_of(gpu.compose_override("all", None))[0]["count"] == "all"
    assert devices_of(gpu.compose_override(None, None))[0]["count"] == 1
    with pytest.raises(ValueError, match="exclude each other"):
        gpu.compose_override(1, ["0"])


def test_compose_env_for_the_count():
    assert gpu.compose_env(None) == {}
    assert gpu.compose_env(2) == {"LOADGRID_GPU_COUNT": "2"}
    assert gpu.compose_env("all") == {"LOADGRID_GPU_COUNT": "all"}
    for bad in (0, -1, "two"):
        with pytest.raises(ValueError, match="gpu_count"):
            gpu.compose_env(bad)


def test_gpu_compose_file_reads_the_count_from_the_environment():
    text = (ROOT / "docker-compose.gpu.yml").read_text()
    model = yaml.safe_load(text)["services"]["model"]
    assert model["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "${LOADGRID_GPU_COUNT:-1}", "capabilities": ["gpu"]}]
    assert model["environment"]["DEVICE"] == "gpu" and model["image"] == "loadgrid-model:gpu"
    assert model["build"]["args"]["REQUIREMENTS"] == "requirements-gpu.txt"


def test_gpu_requirements_pin_the_same_versions_as_the_cpu_ones():
    def pins(name):
        lines = (ROOT / "model_service" / name).read_text().splitlines()
        return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))

    cpu, gpu_pins = pins("requirements.txt"), pins("requirements-gpu.txt")
    assert "onnxruntime" not in gpu_pins and "onnxruntime-gpu" in gpu_pins
    assert {k: v for k, v in cpu.items() if k != "onnxruntime"}.items() <= gpu_pins.items()
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= set(gpu_pins)


# --- one replica's memory, measured once -------------------------------------------------------------

def test_replica_memory_is_measured_once_and_kept(tmp_path):
    cache = tmp_path / "gpu-memory.json"
    readings = iter([[GpuInfo(0, "NVIDIA L4", 23034, 300)], [GpuInfo(0, "NVIDIA L4", 23034, 1450.5)]])
    started = []
    first = gpu.measure_replica_memory(cache, "sha256:abc", lambda: next(readings), lambda: started.append(1),
                                       settings={"MAX_BATCH_SIZE": 8})
    assert first.measured_now and first.mb == 1150.5 and started == [1]
    stored = json.loads(cache.read_text())[first.key]
    assert stored["mb"] == 1150.5 and stored["image"] == "sha256:abc" and stored["settings"] == {"MAX_BATCH_SIZE": 8}

    again = gpu.measure_replica_memory(cache, "sha256:abc", lambda: [GpuInfo(0, "NVIDIA L4", 23034, 0)],
                                       lambda: pytest.fail("must not start a replica again"),
                                       settings={"MAX_BATCH_SIZE": 8})
    assert not again.measured_now and again.mb == 1150.5
    assert gpu.cached_replica_memory(cache, first.key) == 1150.5
    # another image, GPU model or batch size is another measurement
    assert gpu.replica_memory_key("sha256:abc", "NVIDIA L4", {"MAX_BATCH_SIZE": 16}) != first.key
    assert gpu.replica_memory_key("sha256:def", "NVIDIA L4", {"MAX_BATCH_SIZE": 8}) != first.key
    assert gpu.replica_memory_key("sha256:abc", "Tesla T4", {"MAX_BATCH_SIZE": 8}) != first.key


def test_the_memory_cache_never_follows_a_symlink_planted_at_its_temporary_name(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    cache = tmp_path / "replica-memory.json"
    (tmp_path / "replica-memory.json.tmp").symlink_to(victim)  # the fixed name the cache used to go through
    readings = iter([[GpuInfo(0, "NVIDIA L4", 23034, 300)], [GpuInfo(0, "NVIDIA L4", 23034, 1450.5)]])
    measured = gpu.measure_replica_memory(cache, "sha256:abc", lambda: next(readings), lambda: None)
    assert victim.read_text() == "keep me\n" and (tmp_path / "replica-memory.json.tmp").is_symlink()
    assert json.loads(cache.read_text(encoding="utf-8"))[measured.key]["mb"] == 1150.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replica-memory.json", "replica-memory.json.tmp",
                                                          "victim.txt"]


def test_a_symlinked_cache_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("{}\n")
    cache = tmp_path / "replica-memory.json"
    cache.symlink_to(victim)
    readings = iter([[GpuInfo(0, "NVIDIA L4", 23034, 300)], [GpuInfo(0, "NVIDIA L4", 23034, 1450.5)]])
    gpu.measure_replica_memory(cache, "sha256:abc", lambda: next(readings), lambda: None)
    assert victim.read_text() == "{}\n" and not cache.is_symlink()


def test_an_unreadable_cache_is_no_cache(tmp_path):
    cache = tmp_path / "replica-memory.json"
    cache.write_bytes(b'{"k": {"mb": 1}, "\xff\xfe": 2}')  # not UTF-8: read as none, not a traceback
    assert gpu.read_memory_cache(cache) == {}
    cache.write_text('{"GPU \u00e9": {"mb": 12.5}}', encoding="utf-8")
    assert gpu.cached_replica_memory(cache, "GPU \u00e9") == 12.5


def test_a_replica_that_takes_no_gpu_memory_is_an_error(tmp_path):
    same = [GpuInfo(0, "NVIDIA L4", 23034, 300)]
    with pytest.raises(GpuQueryError, match="took no memory"):
        gpu.measure_replica_memory(tmp_path / "m.json", "img", lambda: same, lambda: None)
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(GpuQueryError, match="no GPU"):
        gpu.measure_replica_memory(tmp_path / "m.json", "img", lambda: [], lambda: None)


def test_measurement_uses_the_gpu_the_replicas_share(tmp_path):
    before = [GpuInfo(0, "L4", 23034, 20000), GpuInfo(1, "L4", 23034, 0)]
    after = [GpuInfo(0, "L4", 23034, 20000), GpuInfo(1, "L4", 23034, 900)]
    readings = iter([before, after])
    result = gpu.measure_replica_memory(tmp_path / "m.json", "img", lambda: next(readings), lambda: None,
                                        device_ids=["1"])
    assert result.mb == 900
