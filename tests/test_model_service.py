"""The model service in-process: the real ONNX model behind Starlette's TestClient, no Docker."""

from __future__ import annotations

import hashlib
import re
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient
from support.engine import ROOT

from model_service import model
from model_service.app import Settings, create_app

IMAGES = ROOT / "images"
SHA256 = (ROOT / "model_service" / "model" / "efficientnet_lite0.onnx.sha256").read_text().split()[0]
CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
# ImageNet has no "astronaut": the model sees a portrait in an orange flight suit, helmet-like shapes.
EXPECTED = {
    "chelsea": CATS,
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "grace_hopper": {"military uniform", "suit", "Windsor tie", "bow tie", "mortarboard", "academic gown"},
    "astronaut": {"football helmet", "crash helmet", "bobsled", "jersey", "sweatshirt", "military uniform",
                  "space shuttle"},
}


def photo(name: str) -> bytes:
    return (IMAGES / f"{name}.jpg").read_bytes()


def post_raw(client, body, content_type="image/jpeg"):
    return client.post("/predict", content=body, headers={"Content-Type": content_type})


def labels_of(response) -> list[str]:
    return [p["label"] for p in response.json()["predictions"]]


@pytest.fixture(scope="module")
def classifier() -> model.Classifier:
    settings = Settings()
    return model.load_classifier(settings.model_path, settings.labels_path)


@contextmanager
def started(app):
    """A client whose app has finished loading (the TestClient context runs the lifespan)."""
    with TestClient(app) as client:
        assert app.state.service.finished.wait(60), "model did not load"
        yield client


@pytest.fixture
def client(classifier):
    # A fresh app per test, so its counters start at zero; the loaded model is shared.
    app = create_app(Settings(), loader=lambda settings: classifier)
    with started(app) as c:
        yield c


# --- predictions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_photo_gets_a_sensible_label(client, name):
    r = client.post("/predict", files={"file": (f"{name}.jpg", photo(name), "image/jpeg")})
    assert r.status_code == 200, r.text
    top5 = labels_of(r)
    assert len(top5) == 5
    assert EXPECTED[name] & set(top5), f"{name}: top-5 {top5}"


def test_prediction_shape_and_scores(client):
    r = client.post("/predict", files={"file": ("chelsea.jpg", photo("chelsea"), "image/jpeg")})
    body = r.json()
    assert set(body) == {"predictions", "replica"}
    assert r.headers["X-Replica"] == body["replica"]
    scores = [p["score"] for p in body["predictions"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    first = body["predictions"][0]
    assert set(first) == {"index", "label", "score"}
    assert model.load_labels(Settings().labels_path)[first["index"]] == first["label"]


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream", "image/jpeg; charset=x"])
def test_raw_jpeg_body_matches_multipart(client, content_type):
    multipart = client.post("/predict", files={"file": ("c.jpg", photo("chelsea"), "image/jpeg")})
    raw = post_raw(client, photo("chelsea"), content_type)
    assert raw.status_code == 200, raw.text
    assert raw.json()["predictions"] == multipart.json()["predictions"]


def test_raw_png_body(client):
    rgb = model.decode_image(photo("coffee"), 10**8)
    png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    r = post_raw(client, png, "image/png")
    assert r.status_code == 200, r.text
    assert labels_of(r)[0] == "espresso"


def test_multipart_takes_the_first_file_when_none_is_named_file(client):
    files = {"note": (None, "hi"), "image": ("x.jpg", photo("chelsea"), "image/jpeg")}
    r = client.post("/predict", files=files)
    assert r.status_code == 200, r.text
    assert CATS & set(labels_of(r))


def test_multipart_prefers_the_field_named_file(client):
    files = [("other", ("a.jpg", photo("coffee"), "image/jpeg")),
             ("file", ("b.jpg", photo("chelsea"), "image/jpeg"))]
    r = client.post("/predict", files=files)
    assert CATS & set(labels_of(r))


# --- health -----------------------------------------------------------------------------------------

def test_health_when_ready(client):
    r = client.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["ready"] is True
    assert h["provider"] == "CPUExecutionProvider" and h["providers"][0] == "CPUExecutionProvider"
    assert h["device"] == "cpu" and h["device_name"]
    assert h["model"] == {"name": "efficientnet_lite0", "sha256": SHA256}
    assert h["replica"] == r.headers["X-Replica"]
    assert h["requests"] == 0 and h["errors"] == 0 and h["cpu_threads"] == 1
    assert re.match(r"\d{4}-\d\d-\d\dT", h["started_at"])


def test_health_is_503_until_loaded_and_warmed_up(classifier):
    release = threading.Event()

    def slow_loader(settings):
        release.wait(60)
        return classifier

    app = create_app(Settings(), loader=slow_loader)
    with TestClient(app) as c:
        r = c.get("/health")
        assert r.status_code == 503
        assert r.json()["ready"] is False and r.json()["status"] == "loading"
        r = post_raw(c, photo("chelsea"))
        assert r.status_code == 503 and "error" in r.json()
        release.set()
        assert app.state.service.ready.wait(60)
        assert c.get("/health").status_code == 200


def test_failed_load_stays_503_and_reports_why():
    failures = []

    def broken_loader(settings):
        raise model.DeviceUnavailable("no CUDA here")

    app = create_app(Settings(), loader=broken_loader, on_load_failure=failures.append)
    with TestClient(app) as c:
        assert app.state.service.finished.wait(60)
        r = c.get("/health")
        assert r.status_code == 503
        assert r.json()["status"] == "failed" and "no CUDA here" in r.json()["error"]
    assert failures == ["DeviceUnavailable: no CUDA here"]


def test_health_answers_while_an_inference_runs(classifier):
    entered, release = threading.Event(), threading.Event()

    class Blocking:
        provider, sha256, session = classifier.provider, classifier.sha256, classifier.session

        def warm_up(self, max_batch_size=1):
            pass

        def infer(self, batch):
            entered.set()
            release.wait(60)
            return classifier.infer(batch)

    app = create_app(Settings(), loader=lambda settings: Blocking())
    with started(app) as c, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post_raw, c, photo("chelsea"))
        assert entered.wait(60)
        assert c.get("/health").status_code == 200  # the inference is still blocked here
        release.set()
        assert pending.result().status_code == 200
        assert c.get("/health").json()["requests"] == 1


# --- bad input --------------------------------------------------------------------------------------

def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return model.PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


BAD_INPUTS = {
    "not an image": (b"hello, world", "application/octet-stream", 400),
    "empty body": (b"", "image/jpeg", 400),
    "truncated jpeg": (photo("chelsea")[:20000], "image/jpeg", 400),
    "jpeg cut inside its header": (photo("chelsea")[:300], "image/jpeg", 400),
    "png with garbage pixels": (png_header(64, 64) + b"\x00" * 200, "image/png", 400),
    "gif": (b"GIF89a" + b"\0" * 100, "application/octet-stream", 400),
    "too many pixels": (png_header(100_000, 100_000), "image/png", 413),
    "wrong content type": (photo("chelsea"), "text/plain", 415),
    "json content type": (b"{}", "application/json", 415),
    "no content type": (photo("chelsea"), "", 415),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_json_error_and_the_replica_stays_healthy(client, case):
    body, content_type, status = BAD_INPUTS[case]
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]
    assert r.headers["X-Replica"]
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["errors"] == 1
    assert post_raw(client, photo("coffee")).status_code == 200


def test_real_image_over_the_pixel_limit_is_refused_before_decoding(classifier):
    big = cv2.imencode(".jpg", np.zeros((1500, 1000, 3), np.uint8))[1].tobytes()
    app = create_app(Settings(max_image_pixels=1_000_000), loader=lambda settings: classifier)
    with started(app) as c:
        r = post_raw(c, big)
        assert r.status_code == 413 and "1000x1500" in r.json()["error"]


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_upload_limit_is_413(classifier, chunked):
    app = create_app(Settings(max_upload_bytes=10_000), loader=lambda settings: classifier)
    data = photo("chelsea")  # 35 kB
    content = iter([data[:8000], data[8000:]]) if chunked else data  # a generator is sent chunked
    with started(app) as c:
        r = post_raw(c, content)
        assert r.status_code == 413 and "limit" in r.json()["error"]
        r = c.post("/predict", files={"file": ("c.jpg", data, "image/jpeg")})
        assert r.status_code == 413
        assert c.get("/health").json()["ready"] is True


def test_multipart_without_a_file_is_400(client):
    r = client.post("/predict", files={"file": (None, "a text field, not a file")})
    assert r.status_code == 400 and "file" in r.json()["error"]
    r = client.post("/predict", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400 and "error" in r.json()


def test_wrong_method_and_path(client):
    r = client.get("/predict")
    assert r.status_code == 405 and r.json() == {"error": "Method Not Allowed"}
    assert "POST" in r.headers["Allow"]
    assert client.post("/health").status_code == 405
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").json()


# --- counters ---------------------------------------------------------------------------------------

def test_requests_counter_is_exact_under_concurrency(client):
    def one(i):
        if i % 5 == 4:
            return post_raw(client, b"junk").status_code
        return post_raw(client, photo("rocket")).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(30)))
    assert statuses.count(200) == 24 and statuses.count(400) == 6
    h = client.get("/health").json()
    assert (h["requests"], h["errors"]) == (24, 6)


# --- pure functions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_header_dimensions_match_the_decoded_image(name):
    data = photo(name)
    height, width = model.decode_image(data, 10**8).shape[:2]
    assert model.header_dimensions(data) == (width, height)
    png = cv2.imencode(".png", np.zeros((7, 5, 3), np.uint8))[1].tobytes()
    assert model.header_dimensions(png) == (5, 7)


def test_preprocess_and_top_k():
    x = model.preprocess(np.full((300, 500, 3), 255, np.uint8))
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    assert np.allclose(x, (255 - 127) / 128)
    labels = [f"c{i}" for i in range(1000)]
    logits = np.zeros(1000, np.float32)
    logits[[3, 7]] = [5.0, 6.0]
    top = model.top_k(logits, labels)
    assert [p["index"] for p in top[:2]] == [7, 3] and len(top) == 5


def test_gpu_is_refused_when_cuda_is_missing_or_not_active():
    with pytest.raises(model.DeviceUnavailable, match="CUDAExecutionProvider"):
        model.requested_providers("gpu", ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert model.requested_providers("gpu", [model.CUDA, model.CPU]) == [model.CUDA, model.CPU]
    assert model.requested_providers("cpu", [model.CUDA, model.CPU]) == [model.CPU]
    with pytest.raises(model.DeviceUnavailable):
        model.requested_providers("tpu", [model.CPU])
    # ORT falls back to the CPU when CUDA's libraries or the GPU are missing: that must not pass.
    with pytest.raises(model.DeviceUnavailable, match="runs on CPUExecutionProvider"):
        model.check_active_provider("gpu", [model.CPU])
    assert model.check_active_provider("gpu", [model.CUDA, model.CPU]) == model.CUDA
    assert model.check_active_provider("cpu", [model.CPU]) == model.CPU


def test_gpu_request_on_this_onnxruntime_fails_loudly():
    import onnxruntime as ort

    if model.CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    settings = Settings()
    with pytest.raises(model.DeviceUnavailable):
        model.load_classifier(settings.model_path, settings.labels_path, device="gpu")


def test_gpu_request_without_a_visible_gpu_is_refused_before_onnxruntime_is_asked(monkeypatch):
    """The GPU image (CUDA provider built in) on a host or container without /dev/nvidia*: one clear reason."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [model.CUDA, model.CPU])
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: pytest.fail("must not try ORT without a GPU"))
    monkeypatch.setattr(model.os.path, "exists", lambda path: False)
    settings = Settings()
    with pytest.raises(model.DeviceUnavailable, match=r"no NVIDIA GPU visible in this container \(/dev/nvidia\* "):
        model.load_classifier(settings.model_path, settings.labels_path, device="gpu")


def test_cuda_options_keep_replica_memory_predictable():
    assert model.cuda_options() == {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}
    assert model.cuda_options(2048)["gpu_mem_limit"] == 2048 * 2**20


def test_settings_from_environment():
    s = Settings.from_env({"DEVICE": " GPU ", "INTRA_OP_THREADS": "2", "PORT": "9000",
                           "MAX_UPLOAD_BYTES": "5", "MAX_IMAGE_PIXELS": "6", "MODEL_PATH": "/m.onnx"})
    assert (s.device, s.intra_op_threads, s.port, s.max_upload_bytes, s.max_image_pixels, s.model_path) == (
        "gpu", 2, 9000, 5, 6, "/m.onnx")
    assert Settings.from_env({}) == Settings()
    assert Settings().max_upload_bytes == 10 * 1024 * 1024


def test_committed_model_matches_its_sha256_and_the_image_label():
    onnx_file = ROOT / "model_service" / "model" / "efficientnet_lite0.onnx"
    assert hashlib.sha256(onnx_file.read_bytes()).hexdigest() == SHA256
    dockerfile = (ROOT / "model_service" / "Dockerfile").read_text()
    assert f"ARG MODEL_SHA256={SHA256}" in dockerfile
    assert (ROOT / "model_service" / "labels.txt").read_text().splitlines()[281] == "tabby"
