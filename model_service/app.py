"""HTTP layer of the model service: GET /health and POST /predict (Starlette on uvicorn).

Settings come from the environment (see Settings). The model loads in a background thread so /health
can answer 503 while it loads; it turns 200 only after one warm-up inference. Inference runs on a
single worker thread: one replica serves one image at a time, off the event loop, so /health still
answers under load.

Run from the folder above this one: python -m model_service.app
(or: uvicorn --factory model_service.app:create_app, which reads the same environment).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from model_service import model

log = logging.getLogger("model_service")
HERE = Path(__file__).resolve().parent
RAW_TYPES = {"application/octet-stream", "image/jpeg", "image/jpg", "image/png"}


@dataclass(frozen=True)
class Settings:
    model_path: str = str(HERE / "model" / "efficientnet_lite0.onnx")
    labels_path: str = str(HERE / "labels.txt")
    device: str = "cpu"
    intra_op_threads: int = 1
    port: int = 8000
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 50_000_000

    @classmethod
    def from_env(cls, env=os.environ) -> Settings:
        d = cls()
        return cls(
            model_path=env.get("MODEL_PATH", d.model_path),
            labels_path=env.get("LABELS_PATH", d.labels_path),
            device=env.get("DEVICE", d.device).strip().lower(),
            intra_op_threads=int(env.get("INTRA_OP_THREADS", d.intra_op_threads)),
            port=int(env.get("PORT", d.port)),
            max_upload_bytes=int(env.get("MAX_UPLOAD_BYTES", d.max_upload_bytes)),
            max_image_pixels=int(env.get("MAX_IMAGE_PIXELS", d.max_image_pixels)),
        )


@dataclass
class State:
    """What /health reports. Counters change only on the event loop thread, so they are exact."""

    replica: str = field(default_factory=socket.gethostname)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    classifier: model.Classifier | None = None
    device_name: str = ""
    error: str | None = None
    requests: int = 0  # successful POST /predict
    errors: int = 0  # POST /predict answered with an error status
    ready: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)  # loaded or failed


def error_response(state: State, status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status,
                        headers={**(headers or {}), "X-Replica": state.replica})


def create_app(
    settings: Settings | None = None,
    loader: Callable[[Settings], model.Classifier] | None = None,
    on_load_failure: Callable[[str], None] | None = None,
) -> Starlette:
    """Build the app; `loader` and `on_load_failure` are seams for tests (defaults: real model, stay 503)."""
    settings = settings or Settings.from_env()
    loader = loader or (
        lambda s: model.load_classifier(s.model_path, s.labels_path, s.device, s.intra_op_threads)
    )
    state = State()
    # A single worker serialises decode + inference: one replica = one image at a time.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def load() -> None:
        try:
            classifier = loader(settings)
            classifier.warm_up()
        except Exception as exc:  # any failure must be loud and must keep /health at 503
            state.error = f"{type(exc).__name__}: {exc}"
            log.error("model not loaded, replica will not become healthy: %s", state.error)
            state.finished.set()
            if on_load_failure:
                on_load_failure(state.error)
            return
        state.device_name = model.device_name(settings.device)
        state.classifier = classifier
        state.ready.set()
        state.finished.set()
        log.info("ready: %s on %s (%s)", model.MODEL_NAME, classifier.provider, state.device_name)

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=load, name="model-loader", daemon=True).start()
        yield
        worker.shutdown(wait=False, cancel_futures=True)

    async def health(request: Request) -> JSONResponse:
        base = {"replica": state.replica, "device": settings.device, "started_at": state.started_at,
                "requests": state.requests, "errors": state.errors}
        classifier = state.classifier
        if classifier is None:
            status = "failed" if state.error else "loading"
            return JSONResponse({"ready": False, "status": status, "error": state.error, **base},
                                status_code=503, headers={"X-Replica": state.replica})
        return JSONResponse({
            "ready": True,
            "provider": classifier.provider,
            "providers": classifier.session.get_providers(),
            "device_name": state.device_name,
            "model": {"name": model.MODEL_NAME, "sha256": classifier.sha256},
            **base,
        }, headers={"X-Replica": state.replica})

    async def predict(request: Request) -> JSONResponse:
        classifier = state.classifier
        if classifier is None:
            state.errors += 1
            return error_response(state, 503, "model not loaded yet")
        try:
            data = await read_image(request, settings.max_upload_bytes)
            loop = asyncio.get_running_loop()
            rgb = await loop.run_in_executor(worker, model.decode_image, data, settings.max_image_pixels)
            predictions = await loop.run_in_executor(worker, classifier.classify, rgb)
        except model.ImageError as exc:
            state.errors += 1
            return error_response(state, exc.status, str(exc))
        except HTTPException as exc:
            state.errors += 1
            return error_response(state, exc.status_code, exc.detail)
        except ClientDisconnect:  # the client went away mid-upload (e.g. a load test stopping)
            state.errors += 1
            return error_response(state, 400, "client disconnected")
        except Exception:
            state.errors += 1
            log.exception("prediction failed")
            return error_response(state, 500, "internal error")
        state.requests += 1
        return JSONResponse({"predictions": predictions, "replica": state.replica},
                            headers={"X-Replica": state.replica})

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # 404/405 from routing, as JSON like every other error (405 keeps its Allow header).
        return error_response(state, exc.status_code, exc.detail, exc.headers)

    app = Starlette(
        routes=[Route("/health", health, methods=["GET"]), Route("/predict", predict, methods=["POST"])],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.service = state
    return app


async def read_image(request: Request, limit: int) -> bytes:
    """The image bytes from a raw body or the first file of a multipart form, at most `limit` bytes."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in RAW_TYPES and content_type != "multipart/form-data":
        raise HTTPException(415, f"unsupported content type {content_type or '(none)'!r}: send "
                                 "multipart/form-data, image/jpeg, image/png or application/octet-stream")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:  # refuse before reading anything
        raise HTTPException(413, f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies that declare no length
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    if content_type in RAW_TYPES:
        return body

    async def replay():
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=4, max_fields=16).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"bad multipart body: {exc.message}") from exc
    try:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        upload = form.get("file") if isinstance(form.get("file"), UploadFile) else (files or [None])[0]
        if upload is None:
            raise HTTPException(400, "multipart body has no file field (use the field name 'file')")
        return await upload.read()
    finally:
        await form.close()


def exit_on_load_failure(reason: str) -> None:
    """In a container: exit non-zero so the replica shows as failed at once instead of hanging at 503."""
    logging.shutdown()
    os._exit(3)


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    app = create_app(settings, on_load_failure=exit_on_load_failure)
    # No access log: one line per request would cost CPU that the benchmark should measure as inference.
    uvicorn.run(app, host="0.0.0.0", port=settings.port, access_log=False, log_level="info")


if __name__ == "__main__":
    main()
