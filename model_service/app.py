"""HTTP layer of the model service: GET /health, GET /metrics and POST /predict (Starlette on uvicorn).

Settings come from the environment (see Settings). The model loads in a background thread so /health
can answer 503 while it loads; it turns 200 only after warm-up inferences ran. Decoding and inference
run on a single worker thread (one replica = a fixed share of cores), off the event loop, so /health
still answers under load. Requests present at the same time are batched (batching.py); each answer
carries a Server-Timing header splitting queue wait, decode and inference; /metrics has the same in
Prometheus' text format.

Run from the folder above this one: python -m model_service.app
(or: uvicorn --factory model_service.app:create_app, which reads the same environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from model_service import model
from model_service.batching import Batcher, QueueFull

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
    max_batch_size: int = 8  # 1 = batching off
    max_batch_wait_ms: float = 2.0  # how long an idle replica may hold a batch for requests still arriving
    gpu_mem_limit_mb: int = 0  # cap on ONNX Runtime's CUDA arena; 0 = none
    max_queue: int = 64  # requests waiting for the worker; beyond it 503 with Retry-After (0 = unbounded)

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
            max_batch_size=int(env.get("MAX_BATCH_SIZE", d.max_batch_size)),
            max_batch_wait_ms=float(env.get("MAX_BATCH_WAIT_MS", d.max_batch_wait_ms)),
            gpu_mem_limit_mb=int(env.get("GPU_MEM_LIMIT_MB", d.gpu_mem_limit_mb)),
            max_queue=int(env.get("MAX_QUEUE", d.max_queue)),
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


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps in one test process stay apart)."""

    LATENCY_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1.0, 2.0, 5.0)

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("model_requests", "POST /predict answers, by HTTP status", ["status"], registry=r)
        self.errors = Counter("model_errors", "POST /predict answered with an error status", ["status"],
                              registry=r)
        self.batch_size = Histogram("model_batch_size", "Images per inference batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.queue = Histogram("model_queue_seconds", "Wait from a request's arrival in the queue to the start "
                               "of its batch", buckets=self.LATENCY_BUCKETS, registry=r)
        self.decode = Histogram("model_decode_seconds", "Decode and preprocess of one image",
                                buckets=self.LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("model_inference_seconds", "One batch through the model, postprocess included",
                                   buckets=self.LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("model_queue_depth", "Requests waiting for the worker", registry=r)
        # What loadgrid polls before a run (the stack is idle when both are 0 on every replica):
        self.lg_queue_depth = Gauge("loadgrid_queue_depth", "Requests queued and not yet handed to the worker",
                                    registry=r)
        self.lg_in_flight = Gauge("loadgrid_in_flight_requests", "POST /predict received and not yet answered",
                                  registry=r)
        self.dropped = Counter("model_dropped", "Queued requests dropped before inference: their client went away",
                               registry=r)
        self.info = Gauge("model_info", "1 once the model is loaded, labelled with what it runs on",
                          ["provider", "device", "device_name"], registry=r)
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...

    def answered(self, status: int) -> None:
        self.requests.labels(str(status)).inc()
        if status >= 400:
            self.errors.labels(str(status)).inc()


@dataclass
class Outcome:
    """One request's result from the worker: predictions or the error, and where its time went."""

    predictions: list[dict] | None = None
    error: Exception | None = None
    decode_s: float = 0.0
    infer_s: float = 0.0


def server_timing(queue_s: float, outcome: Outcome, batch_size: int) -> str:
    """The Server-Timing header (milliseconds), so a client can tell queueing from inference."""
    parts = [f"queue;dur={queue_s * 1000:.3f}", f"decode;dur={outcome.decode_s * 1000:.3f}"]
    if outcome.predictions is not None:
        parts.append(f'infer;dur={outcome.infer_s * 1000:.3f};desc="batch of {batch_size}"')
    return ", ".join(parts)


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
        lambda s: model.load_classifier(s.model_path, s.labels_path, s.device, s.intra_op_threads,
                                        s.gpu_mem_limit_mb)
    )
    state = State()
    metrics = Metrics()
    # A single worker serialises decode + inference: one replica = one batch at a time.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def run_batch(bodies: list[bytes]) -> list[Outcome]:
        """On the worker thread: decode each body, one inference for all that decoded, split the answers."""
        outcomes, inputs = [], []
        for body in bodies:
            t0 = time.perf_counter()
            try:
                inputs.append((len(outcomes), model.prepare(body, settings.max_image_pixels)))
                outcomes.append(Outcome())
            except model.ImageError as exc:  # this request's fault: the others of the batch go on
                outcomes.append(Outcome(error=exc))
            outcomes[-1].decode_s = time.perf_counter() - t0
            metrics.decode.observe(outcomes[-1].decode_s)
        if inputs:
            t0 = time.perf_counter()
            try:
                results = state.classifier.infer(np.concatenate([x for _, x in inputs]))
            except Exception as exc:  # e.g. CUDA out of memory: every image of the batch fails with it
                for i, _ in inputs:
                    outcomes[i].error = exc
                return outcomes
            infer_s = time.perf_counter() - t0
            metrics.batch_size.observe(len(inputs))
            metrics.inference.observe(infer_s)
            for (i, _), predictions in zip(inputs, results, strict=True):
                outcomes[i].predictions, outcomes[i].infer_s = predictions, infer_s
        return outcomes

    batcher = Batcher(run_batch, worker, settings.max_batch_size, settings.max_batch_wait_ms / 1000,
                      settings.max_queue)
    metrics.queue_depth.set_function(lambda: batcher.depth)
    metrics.lg_queue_depth.set_function(lambda: batcher.depth)
    in_flight = [0]  # POST /predict inside the app (event loop thread only)
    metrics.lg_in_flight.set_function(lambda: in_flight[0])

    def load() -> None:
        try:
            classifier = loader(settings)
            classifier.warm_up(settings.max_batch_size)
        except Exception as exc:  # any failure must be loud and must keep /health at 503
            state.error = f"{type(exc).__name__}: {exc}"
            log.error("model not loaded, replica will not become healthy: %s", state.error)
            state.finished.set()
            if on_load_failure:
                on_load_failure(state.error)
            return
        state.device_name = model.device_name(settings.device)
        state.classifier = classifier
        metrics.info.labels(classifier.provider, settings.device, state.device_name).set(1)
        state.ready.set()
        state.finished.set()
        log.info("ready: %s on %s (%s), max batch %d, max batch wait %g ms", model.MODEL_NAME,
                 classifier.provider, state.device_name, settings.max_batch_size, settings.max_batch_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        threading.Thread(target=load, name="model-loader", daemon=True).start()
        yield
        await batcher.stop()
        worker.shutdown(wait=False, cancel_futures=True)

    async def health(request: Request) -> JSONResponse:
        base = {"replica": state.replica, "device": settings.device, "started_at": state.started_at,
                "requests": state.requests, "errors": state.errors,
                # One worker thread runs every inference on this many threads: the most cores a replica can
                # keep busy, whatever its container's CPU limit (loadgrid judges "replicas at their limit" by it).
                "cpu_threads": settings.intra_op_threads,
                "batching": {"max_batch_size": settings.max_batch_size,
                             "max_batch_wait_ms": settings.max_batch_wait_ms}}
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

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def predict(request: Request) -> JSONResponse:
        in_flight[0] += 1
        try:
            response = await answer(request)
        finally:
            in_flight[0] -= 1
        metrics.answered(response.status_code)
        if response.status_code == 200:
            state.requests += 1
        else:
            state.errors += 1
        return response

    async def answer(request: Request) -> JSONResponse:
        if state.classifier is None:
            return error_response(state, 503, "model not loaded yet")
        try:
            with batcher.receiving():
                data = await read_image(request, settings.max_upload_bytes)
        except HTTPException as exc:
            return error_response(state, exc.status_code, exc.detail)
        except ClientDisconnect:  # the client went away mid-upload (e.g. a load test stopping)
            return error_response(state, 400, "client disconnected")
        try:
            done = await submit_unless_gone(request, data)
        except QueueFull as exc:
            return error_response(state, 503, f"replica overloaded: {exc}", {"Retry-After": "1"})
        except ClientGone:
            metrics.dropped.inc()
            return error_response(state, 499, "client disconnected before inference")
        outcome: Outcome = done.outcome
        metrics.queue.observe(done.queue_s)
        timing = {"Server-Timing": server_timing(done.queue_s, outcome, done.batch_size)}
        if isinstance(outcome.error, model.ImageError):
            return error_response(state, outcome.error.status, str(outcome.error), timing)
        if outcome.error is not None:
            log.error("prediction failed: %s: %s", type(outcome.error).__name__, outcome.error)
            return error_response(state, 500, "internal error", timing)
        return JSONResponse({"predictions": outcome.predictions, "replica": state.replica},
                            headers={"X-Replica": state.replica, **timing})

    async def submit_unless_gone(request: Request, data: bytes):
        """Queue `data`; if the client disconnects first, cancel it (the collector then drops it unrun).
        Whether or not the server cancels a handler on disconnect, the watcher sees http.disconnect."""
        if await request.is_disconnected():
            raise ClientGone
        job = asyncio.ensure_future(batcher.submit(data))
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this handler was cancelled (some servers do that on disconnect)
            job.cancel()
            raise
        finally:
            gone.cancel()
        if not job.done():
            job.cancel()  # cancels its queued future: the collector drops it unrun
            with contextlib.suppress(asyncio.CancelledError):
                await job
        if job.cancelled():
            raise ClientGone
        return job.result()

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # 404/405 from routing, as JSON like every other error (405 keeps its Allow header).
        return error_response(state, exc.status_code, exc.detail, exc.headers)

    app = Starlette(
        routes=[Route("/health", health, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"]),
                Route("/predict", predict, methods=["POST"])],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.service = state
    app.state.batcher = batcher
    return app


class ClientGone(Exception):
    """The client disconnected before its request reached the model."""


async def disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body was read already, so only http.disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
