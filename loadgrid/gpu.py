"""GPU facts and decisions for the `gpu` variant: can Docker hand out a GPU, and do N replicas fit on it?

Pure functions decide (`parse_nvidia_smi`, `gpus_from_nvml`, `preflight`, `compose_override`); the tests
feed them recorded nvidia-smi and NVML answers (tests/fixtures/gpu/). Thin runners gather the facts on
the real machine (`probe`) and measure one replica's GPU memory once, keeping it in a JSON file beside
the output (`measure_replica_memory`).

Where replicas land: every replica of `--scale model=N` gets the same device reservation, and ONNX
Runtime in the replica uses CUDA device 0, the first GPU it sees (docker-compose.gpu.yml sets
CUDA_DEVICE_ORDER=PCI_BUS_ID, so that is the lowest nvidia-smi index among the reserved ones). So all N
replicas share one GPU: the lowest index of `device_ids`, or GPU 0 with `count` (Docker reserves GPUs
0..count-1). The fit is checked against that GPU's free memory.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import safefile

log = logging.getLogger(__name__)

# What nvidia-smi is asked; uuid last so device_ids given as GPU-... UUIDs can be matched too.
NVIDIA_SMI_FIELDS = "index,name,memory.total,memory.used,uuid"
NVIDIA_SMI_ARGS = [f"--query-gpu={NVIDIA_SMI_FIELDS}", "--format=csv,noheader,nounits"]
# Kept free on the shared GPU beyond N x one replica: allocator fragmentation, cuDNN workspaces that
# vary between runs, the driver's own use. The larger of an absolute floor and a share of the card.
MARGIN_FLOOR_MB = 256.0
MARGIN_SHARE = 0.05
# The env var docker-compose.gpu.yml reads for `count` ("all" or a number).
COUNT_ENV = "LOADGRID_GPU_COUNT"


class GpuQueryError(RuntimeError):
    """nvidia-smi or NVML gave no usable answer."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_mb: float
    memory_used_mb: float
    uuid: str = ""

    @property
    def memory_free_mb(self) -> float:
        return max(0.0, self.memory_total_mb - self.memory_used_mb)


@dataclass(frozen=True)
class GpuPreflight:
    ok: bool
    reason: str  # one line, for the console and the skipped-variant record
    gpus: list[GpuInfo]
    fits: int | None  # replicas that fit on the shared GPU; None when not checked (no measurement yet)


# --- parsing -----------------------------------------------------------------------------------------

def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,memory.used[,uuid] --format=csv,noheader,nounits`.

    Raises GpuQueryError for nvidia-smi's own failure messages and for unreadable memory figures;
    "No devices were found" is an empty list.
    """
    gpus = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.lower().startswith("no devices were found"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if not fields[0].isdigit():
            if fields[0] == "index":  # a header line: --format=csv without noheader
                continue
            raise GpuQueryError(f"nvidia-smi: {line}")
        uuid = fields.pop() if len(fields) >= 5 and fields[-1].startswith(("GPU-", "MIG-")) else ""
        if len(fields) < 4:
            raise GpuQueryError(f"nvidia-smi: cannot read {line!r}")
        try:
            total, used = float(fields[-2]), float(fields[-1])
        except ValueError:  # "[N/A]" or "[Not Supported]"
            raise GpuQueryError(f"nvidia-smi reports no memory figures for GPU {fields[0]}: {line!r}") from None
        gpus.append(GpuInfo(int(fields[0]), ",".join(fields[1:-2]).strip(), total, used, uuid))
    return sorted(gpus, key=lambda g: g.index)


def gpus_from_nvml(nvml) -> list[GpuInfo]:
    """The GPUs as NVML sees them; `nvml` is the pynvml module (nvidia-ml-py) or anything answering alike."""
    try:
        nvml.nvmlInit()
    except Exception as exc:
        raise GpuQueryError(f"NVML unavailable: {exc}") from exc
    try:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name, uuid = nvml.nvmlDeviceGetName(handle), nvml.nvmlDeviceGetUUID(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)  # bytes
            gpus.append(GpuInfo(i, _text(name), memory.total / 2**20, memory.used / 2**20, _text(uuid)))
        return gpus
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:  # shutting down a library we are done with: note it, nothing more
            log.debug("nvmlShutdown: %s", exc)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- decisions ---------------------------------------------------------------------------------------

def nvidia_runtime(docker_runtimes: dict | None) -> str | None:
    """The NVIDIA runtime registered with Docker (`nvidia`, or `nvidia-cdi`/`nvidia-legacy` of nvidia-ctk)."""
    return next((name for name in sorted(docker_runtimes or {}) if name.startswith("nvidia")), None)


def margin_mb(gpu: GpuInfo) -> float:
    return max(MARGIN_FLOOR_MB, MARGIN_SHARE * gpu.memory_total_mb)


def shared_gpu(gpus: list[GpuInfo], device_ids: list[str] | None) -> GpuInfo:
    """The GPU all replicas run on (see the module doc); ValueError naming a device id that is not here."""
    if not device_ids:
        return min(gpus, key=lambda g: g.index)
    chosen = []
    for wanted in device_ids:
        match = next((g for g in gpus if str(g.index) == str(wanted).strip() or (g.uuid and g.uuid == wanted)), None)
        if match is None:
            have = ", ".join(str(g.index) for g in gpus)
            raise ValueError(f"gpu_device_ids: {wanted!r} is not a GPU on this machine (it has {have})")
        chosen.append(match)
    return min(chosen, key=lambda g: g.index)


def preflight(replicas: int, per_replica_mb: float | None, docker_runtimes: dict | None, gpus: list[GpuInfo],
              device_ids: list[str] | None = None, count: int | str | None = None) -> GpuPreflight:
    """Can `replicas` GPU replicas start here? Pure: decides from facts gathered by `probe`."""
    if not nvidia_runtime(docker_runtimes):
        have = ", ".join(sorted(docker_runtimes or {})) or "none"
        return GpuPreflight(False, f"no NVIDIA runtime registered with Docker (runtimes: {have}); install the "
                                   "NVIDIA Container Toolkit and run `nvidia-ctk runtime configure --runtime=docker`",
                            gpus, None)
    if not gpus:
        return GpuPreflight(False, "no NVIDIA GPU found (nvidia-smi lists none): Docker has the NVIDIA runtime "
                                   "but there is no GPU or no driver", gpus, None)
    if isinstance(count, int) and count > len(gpus):
        return GpuPreflight(False, f"gpu_count: {count} GPUs reserved per replica but this machine has "
                                   f"{len(gpus)}", gpus, None)
    try:
        gpu = shared_gpu(gpus, device_ids)
    except ValueError as exc:
        return GpuPreflight(False, str(exc), gpus, None)
    where = f"GPU {gpu.index} ({gpu.name}, {gpu.memory_free_mb:.0f} of {gpu.memory_total_mb:.0f} MiB free)"
    if per_replica_mb is None:
        return GpuPreflight(True, f"{where}; one replica's GPU memory not measured yet, so the fit of "
                                  f"{replicas} replicas is not checked", gpus, None)
    margin = margin_mb(gpu)
    usable = gpu.memory_free_mb - margin
    fits = max(0, math.floor(usable / per_replica_mb)) if per_replica_mb > 0 else replicas
    need = replicas * per_replica_mb + margin
    if replicas > fits:
        return GpuPreflight(False, f"{replicas} replicas x {per_replica_mb:.0f} MiB + {margin:.0f} MiB margin = "
                                   f"{need:.0f} MiB will not fit on {where}: {fits} fit", gpus, fits)
    return GpuPreflight(True, f"{replicas} replicas x {per_replica_mb:.0f} MiB + {margin:.0f} MiB margin fit on "
                              f"{where} (up to {fits})", gpus, fits)


# --- compose -----------------------------------------------------------------------------------------

def compose_env(count: int | str | None) -> dict[str, str]:
    """Env for docker-compose.gpu.yml: `count` ("all" or a number; default there: 1)."""
    if count is None:
        return {}
    if not (count == "all" or (isinstance(count, int) and count >= 1)):
        raise ValueError(f"gpu_count: {count!r} must be a number of GPUs (1 or more) or 'all'")
    return {COUNT_ENV: str(count)}


def compose_override(count: int | str | None, device_ids: list[str] | None, service: str = "model") -> str:
    """A compose file to add after docker-compose.gpu.yml that replaces the service's GPU reservation.

    Needed for device ids only: Compose allows `count` or `device_ids`, not both, and a plain second file
    would append a second reservation to the list; `!override` (Compose >= 2.24) replaces it.
    """
    if count is not None and device_ids:
        raise ValueError("gpu_count and gpu_device_ids exclude each other (Compose takes one or the other)")
    if device_ids:
        which = "device_ids: [" + ", ".join(json.dumps(str(d)) for d in device_ids) + "]"
    else:
        which = "count: " + (compose_env(count).get(COUNT_ENV) or "1")
    return (f"# Generated by loadgrid: the GPU reservation of `{service}` (replaces docker-compose.gpu.yml's).\n"
            f"services:\n  {service}:\n    deploy:\n      resources:\n        reservations:\n"
            f"          devices: !override\n            - driver: nvidia\n              {which}\n"
            f"              capabilities: [gpu]\n")


# --- runners: gathering facts on the real machine --------------------------------------------------------

def docker_runtimes(timeout: float = 30) -> dict:
    """`docker info --format '{{json .Runtimes}}'`; {} when Docker does not answer."""
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True,
                              encoding="utf-8", errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
        return json.loads(proc.stdout or "{}") if proc.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return {}


def query_gpus(image: str | None = None, timeout: float = 60) -> list[GpuInfo]:
    """GPUs from the host's nvidia-smi, else from nvidia-smi in a throwaway container of `image`.

    In the container, the NVIDIA Container Toolkit mounts nvidia-smi (driver capability `utility`), so
    any local image will do; its answer also proves Docker can hand a GPU to a container.
    """
    if shutil.which("nvidia-smi"):
        command = ["nvidia-smi", *NVIDIA_SMI_ARGS]
    elif image:
        command = ["docker", "run", "--rm", "--pull", "never", "--gpus", "all",
                   "-e", "NVIDIA_DRIVER_CAPABILITIES=utility", "--entrypoint", "nvidia-smi", image, *NVIDIA_SMI_ARGS]
    else:
        return []
    try:
        proc = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GpuQueryError(f"{command[0]}: {exc}") from exc
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        raise GpuQueryError(f"{' '.join(command[:2])} failed: {last[-1] if last else f'exit {proc.returncode}'}")
    return parse_nvidia_smi(proc.stdout)


def probe(image: str | None = None) -> tuple[dict, list[GpuInfo]]:
    """(Docker's runtimes, the GPUs) on this machine; no GPU found is ([...], []), never an exception.

    `image`: a local image for the throwaway nvidia-smi container when the host has no nvidia-smi
    (e.g. LOADGRID_BASE_IMAGE, or the built loadgrid-model:gpu).
    """
    runtimes = docker_runtimes()
    if not nvidia_runtime(runtimes) and not shutil.which("nvidia-smi"):
        return runtimes, []  # nothing can answer: skip starting a container
    try:
        return runtimes, query_gpus(image if nvidia_runtime(runtimes) else None)
    except GpuQueryError as exc:
        log.warning("GPU probe: %s", exc)
        return runtimes, []


# --- one replica's GPU memory, measured once and kept ----------------------------------------------------

@dataclass(frozen=True)
class ReplicaMemory:
    mb: float
    measured_now: bool  # False: taken from the cache file
    key: str


def replica_memory_key(image_id: str, gpu_name: str, settings: dict | None = None) -> str:
    """What a replica's GPU memory depends on: its image, the GPU model and the service settings that size
    its buffers (e.g. MAX_BATCH_SIZE, GPU_MEM_LIMIT_MB)."""
    extra = ",".join(f"{k}={settings[k]}" for k in sorted(settings or {}))
    return f"{image_id}|{gpu_name}|{extra}"


def read_memory_cache(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return {}
    return data if isinstance(data, dict) else {}


def cached_replica_memory(path: Path, key: str) -> float | None:
    entry = read_memory_cache(path).get(key)
    return float(entry["mb"]) if isinstance(entry, dict) and isinstance(entry.get("mb"), (int, float)) else None


def measure_replica_memory(cache_path: Path, image_id: str, read_gpus: Callable[[], list[GpuInfo]],
                           start_one: Callable[[], object], *, device_ids: list[str] | None = None,
                           settings: dict | None = None) -> ReplicaMemory:
    """One replica's GPU memory: from `cache_path` when this image, GPU and settings were measured before,
    else measured now and stored there.

    Measuring: GPU memory used on the shared GPU before `start_one()` and after it, where `start_one`
    brings exactly one replica up and healthy while no other replica of the stack runs (the service warms
    up at its largest batch before /health turns 200, so its memory is at its peak by then). The
    difference is the replica's footprint: CUDA context, weights, ORT's arena and cuDNN workspace.
    """
    before = read_gpus()
    if not before:
        raise GpuQueryError("no GPU to measure a replica on")
    gpu = shared_gpu(before, device_ids)
    key = replica_memory_key(image_id, gpu.name, settings)
    cached = cached_replica_memory(cache_path, key)
    if cached is not None:
        return ReplicaMemory(cached, False, key)
    start_one()
    after = next((g for g in read_gpus() if g.index == gpu.index), None)
    if after is None:
        raise GpuQueryError(f"GPU {gpu.index} vanished while measuring a replica")
    used = after.memory_used_mb - gpu.memory_used_mb
    if used <= 0:
        raise GpuQueryError(f"one replica took no memory on GPU {gpu.index} ({gpu.name}): is it running on the GPU?")
    cache = read_memory_cache(cache_path)
    cache[key] = {"mb": round(used, 1), "gpu": asdict(gpu), "image": image_id, "settings": settings or {},
                  "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # A fresh temporary name, renamed over the cache: a symlink planted at `<cache>.tmp` is never followed.
    safefile.replace(cache_path, json.dumps(cache, indent=2, sort_keys=True) + "\n")
    return ReplicaMemory(used, True, key)
