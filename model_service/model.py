"""EfficientNet-Lite0 on ONNX Runtime: session creation, image checks, preprocessing, postprocessing.

Everything here is plain functions and one small class, so tests call it in-process without HTTP.
The preprocessing constants are the ones the weights were trained with (TensorFlow's EfficientNet-Lite
eval pipeline); model/PROVENANCE.md records them next to the exported model.
"""

from __future__ import annotations

import glob
import hashlib
import os
import struct
from dataclasses import dataclass

import numpy as np

# OpenCV refuses images above this many pixels while reading the header (its own decompression-bomb
# guard). It is read once, when OpenCV first decodes, so it must be in the environment before that.
# Our own header check below runs first and gives the precise 413; this is the backstop.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", os.environ.get("MAX_IMAGE_PIXELS", "50000000"))
# onnxruntime >= 1.2x on Linux sends usage telemetry to Microsoft unless this is set before import;
# a benchmark replica should make no outbound connections.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import cv2  # noqa: E402  (must come after the environment defaults above)
import onnxruntime as ort  # noqa: E402

MODEL_NAME = "efficientnet_lite0"
INPUT_SIZE = 224
# TF EfficientNet eval crop: the centre 224/(224+32) of the shorter side, resized (bicubic) to 224.
CROP_PADDING = 32
# EfficientNet-Lite uses inception-style normalisation (not the usual ImageNet mean/std): (x - 127) / 128.
MEAN_RGB = 127.0
STD_RGB = 128.0
TOP_K = 5

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class ImageError(ValueError):
    """The body is not a usable image (HTTP 400)."""

    status = 400


class ImageTooLarge(ImageError):
    """The image declares more pixels than allowed (HTTP 413)."""

    status = 413


class DeviceUnavailable(RuntimeError):
    """The requested device cannot be used; the service must not fall back silently."""


# --- image checks and decoding -------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def header_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height as declared in a PNG or JPEG header, read without decoding any pixels."""
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("truncated PNG header")
        return struct.unpack(">II", data[16:24])
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ImageError("corrupt JPEG header")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
                pos += 2
                continue
            (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
            if marker in JPEG_SOF:
                if pos + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return width, height
            if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
                raise ImageError("JPEG has no frame header")
            pos += 2 + length
        raise ImageError("truncated JPEG header")
    raise ImageError("not a JPEG or PNG image")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Check the declared size, then decode to an RGB uint8 array (H, W, 3)."""
    if not data:
        raise ImageError("empty body")
    width, height = header_dimensions(data)
    if width == 0 or height == 0:
        raise ImageError("image has a zero dimension")
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels, limit {max_pixels}")
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit
        raise ImageError(f"cannot decode image: {str(exc).splitlines()[-1]}") from exc
    if bgr is None:
        raise ImageError("cannot decode image (corrupt or truncated)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def prepare(data: bytes, max_pixels: int) -> np.ndarray:
    """Encoded image -> model input (1, 3, 224, 224): what one request costs before inference."""
    return preprocess(decode_image(data, max_pixels))


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (1, 3, 224, 224), cropped and normalised as in training."""
    height, width = rgb.shape[:2]
    crop = max(1, int(INPUT_SIZE / (INPUT_SIZE + CROP_PADDING) * min(height, width)))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    square = rgb[top : top + crop, left : left + crop]
    resized = cv2.resize(square, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_CUBIC)
    chw = (resized.astype(np.float32) - MEAN_RGB) / STD_RGB
    return np.ascontiguousarray(chw.transpose(2, 0, 1)[np.newaxis])


def top_k(logits: np.ndarray, labels: list[str], k: int = TOP_K) -> list[dict]:
    """Softmax over one row of logits; the k best classes, best first."""
    z = logits.astype(np.float64).ravel()
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    best = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i], "score": round(float(probs[i]), 5)} for i in best]


# --- devices and sessions ------------------------------------------------------------------------


def requested_providers(device: str, available: list[str]) -> list[str]:
    """The providers to ask ORT for; refuses a GPU request that this ORT build cannot serve."""
    if device == "cpu":
        return [CPU]
    if device == "gpu":
        if CUDA not in available:
            raise DeviceUnavailable(
                f"DEVICE=gpu but this onnxruntime build has no {CUDA} (available: {', '.join(available)}); "
                "this is the CPU image: the GPU image is built with -f docker-compose.gpu.yml"
            )
        return [CUDA, CPU]
    raise DeviceUnavailable(f"DEVICE must be 'cpu' or 'gpu', not {device!r}")


def check_active_provider(device: str, active: list[str]) -> str:
    """The provider the session really uses; a GPU session that fell back to the CPU is refused."""
    wanted = CUDA if device == "gpu" else CPU
    if not active or active[0] != wanted:
        raise DeviceUnavailable(
            f"DEVICE={device} asked for {wanted} but the session runs on {active[0] if active else 'nothing'}"
            " (for CUDA: missing libraries or no visible GPU)"
        )
    return active[0]


def gpu_missing() -> str | None:
    """Why this container sees no NVIDIA GPU, or None when it does.

    Checked before ORT is asked for CUDA, so a replica without a GPU says so in plain words instead of
    ORT's fallback warning. The NVIDIA Container Toolkit mounts /dev/nvidiactl and /dev/nvidiaN into
    containers that reserved a GPU; without the reservation (or the toolkit) they are absent.
    """
    if not os.path.exists("/dev/nvidiactl") or not glob.glob("/dev/nvidia[0-9]*"):
        return ("no NVIDIA GPU visible in this container (/dev/nvidia* absent): run it with a GPU reservation "
                "(docker-compose.gpu.yml) on a host whose Docker has the NVIDIA Container Toolkit")
    return None


def device_name(device: str) -> str:
    """Human-readable CPU model or GPU name, for the run's record."""
    if device == "gpu":
        try:  # NVML (nvidia-ml-py, in the GPU image) names the first GPU the container sees, as CUDA does
            import pynvml

            pynvml.nvmlInit()
            try:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
                return name.decode() if isinstance(name, bytes) else name
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # no NVML here: fall back to the driver's /proc entry
            pass
        for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
            with open(info, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("Model:"):
                        return line.split(":", 1)[1].strip()
        return "unknown GPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Classifier:
    session: ort.InferenceSession
    labels: list[str]
    provider: str
    device: str
    sha256: str

    def infer(self, batch: np.ndarray) -> list[list[dict]]:
        """One session run over a (n, 3, 224, 224) batch; the top-k of each row."""
        (logits,) = self.session.run(None, {self.session.get_inputs()[0].name: batch})
        return [top_k(row, self.labels) for row in logits]

    def classify(self, rgb: np.ndarray) -> list[dict]:
        return self.infer(preprocess(rgb))[0]

    def warm_up(self, max_batch_size: int = 1) -> None:
        """Run every batch shape the service will use before /health turns 200.

        The first run of a shape pays for lazy initialisation (and on CUDA for cuDNN's algorithm search
        and arena growth). Warming up at the largest batch also means a replica whose GPU memory is too
        small fails here, loudly, instead of mid-benchmark; and its memory use is at its peak when the
        orchestrator measures it. On the CPU the sizes in between cost nothing extra, so only 1 and max.
        """
        sizes = range(1, max_batch_size + 1) if self.device == "gpu" else sorted({1, max_batch_size})
        one = preprocess(np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8))
        for n in sizes:
            self.infer(np.repeat(one, n, axis=0))


def load_labels(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        labels = [line.strip() for line in f if line.strip()]
    if len(labels) != 1000:
        raise ValueError(f"{path}: expected 1000 ImageNet labels, found {len(labels)}")
    return labels


def cuda_options(gpu_mem_limit_mb: int = 0) -> dict:
    """CUDA execution provider options: predictable memory, so N replicas can be planned to fit."""
    options = {
        "device_id": 0,  # the first GPU the container sees (the reservation decides which one that is)
        # Grow the arena by what is asked, not in powers of two: a replica holds what it needs, no more.
        "arena_extend_strategy": "kSameAsRequested",
    }
    if gpu_mem_limit_mb > 0:
        options["gpu_mem_limit"] = gpu_mem_limit_mb * 2**20
    return options


def load_classifier(model_path: str, labels_path: str, device: str = "cpu", intra_op_threads: int = 1,
                    gpu_mem_limit_mb: int = 0) -> Classifier:
    """Create the ORT session on the requested device, or raise DeviceUnavailable."""
    providers: list = requested_providers(device, ort.get_available_providers())
    if device == "gpu":
        missing = gpu_missing()
        if missing:
            raise DeviceUnavailable(f"DEVICE=gpu but {missing}")
        if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN come from PyPI wheels (nvidia-*), not the system
            ort.preload_dlls()
        providers = [(CUDA, cuda_options(gpu_mem_limit_mb)), CPU]
    options = ort.SessionOptions()
    # One replica = a fixed number of cores, so adding replicas is measured honestly.
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    cv2.setNumThreads(intra_op_threads)  # OpenCV's resize would otherwise use every core
    session = ort.InferenceSession(model_path, sess_options=options, providers=providers)
    # ORT's Python API quietly retries on the CPU when CUDA fails to initialise: refuse that.
    provider = check_active_provider(device, session.get_providers())
    return Classifier(session, load_labels(labels_path), provider, device, file_sha256(model_path))
