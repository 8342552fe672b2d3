"""Dynamic batching, /metrics and Server-Timing of the model service, in-process (no Docker)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from support.engine import ROOT

from model_service import model
from model_service.app import Settings, create_app
from model_service.batching import Batcher

PHOTO = (ROOT / "images" / "chelsea.jpg").read_bytes()
TIMING = re.compile(r'queue;dur=([\d.]+), decode;dur=([\d.]+)(?:, infer;dur=([\d.]+);desc="batch of (\d+)")?$')


# --- the Batcher alone -------------------------------------------------------------------------------

class Recorder:
    """A `process` that records each batch; it can hold the worker until released."""

    def __init__(self, hold: bool = False):
        self.batches: list[list] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, items):
        self.batches.append(list(items))
        self.entered.set()
        assert self.release.wait(10)
        return [item * 10 for item in items]


def run_batcher(scenario, process, max_size=8, max_wait_s=0.002):
    """Run `scenario(batcher)` on a fresh event loop with a started Batcher and one worker thread."""
    async def main():
        with ThreadPoolExecutor(1) as worker:
            batcher = Batcher(process, worker, max_size, max_wait_s)
            batcher.start()
            try:
                return await scenario(batcher)
            finally:
                process.release.set()
                await batcher.stop()

    return asyncio.run(main())


def test_requests_queued_together_share_one_batch():
    rec = Recorder()

    async def scenario(b):
        return await asyncio.gather(*(b.submit(i) for i in range(5)))

    done = run_batcher(scenario, rec)
    assert rec.batches == [[0, 1, 2, 3, 4]]
    assert [d.outcome for d in done] == [0, 10, 20, 30, 40]
    assert {d.batch_size for d in done} == {5}


def test_batches_never_exceed_the_maximum_size():
    rec = Recorder()

    async def scenario(b):
        return await asyncio.gather(*(b.submit(i) for i in range(20)))

    run_batcher(scenario, rec, max_size=8)
    assert [len(batch) for batch in rec.batches] == [8, 8, 4]
    assert [i for batch in rec.batches for i in batch] == list(range(20))  # arrival order kept


def test_batching_off_runs_every_request_alone():
    rec = Recorder()

    async def scenario(b):
        return await asyncio.gather(*(b.submit(i) for i in range(4)))

    done = run_batcher(scenario, rec, max_size=1, max_wait_s=1.0)
    assert rec.batches == [[0], [1], [2], [3]]
    assert {d.batch_size for d in done} == {1}


def test_requests_arriving_while_the_worker_is_busy_form_the_next_batch():
    rec = Recorder(hold=True)

    async def scenario(b):
        first = asyncio.ensure_future(b.submit("a"))
        # the worker has taken "a" alone
        assert await asyncio.get_running_loop().run_in_executor(None, rec.entered.wait, 10)
        rest = [asyncio.ensure_future(b.submit(x)) for x in "bcd"]
        await asyncio.sleep(0.05)  # they queue behind the busy worker
        assert b.depth == 3
        rec.release.set()
        return await asyncio.gather(first, *rest)

    done = run_batcher(scenario, rec, max_wait_s=0)
    assert rec.batches == [["a"], ["b", "c", "d"]]
    assert done[1].queue_s >= 0.04  # their wait behind the busy worker is reported as queue time


def test_a_lone_request_on_an_idle_replica_is_not_held():
    rec = Recorder()

    async def scenario(b):
        t0 = time.perf_counter()
        done = await b.submit(1)
        return time.perf_counter() - t0, done

    elapsed, done = run_batcher(scenario, rec, max_wait_s=1.0)
    assert elapsed < 0.2, "an idle replica with nothing else arriving must dispatch at once"
    assert done.queue_s < 0.2


def test_an_idle_batch_waits_for_a_request_still_arriving():
    rec = Recorder()

    async def scenario(b):
        with b.receiving():  # the second request's body is still being read
            first = asyncio.ensure_future(b.submit(1))
            await asyncio.sleep(0.05)
        second = await b.submit(2)
        return await first, second

    run_batcher(scenario, rec, max_wait_s=1.0)
    assert rec.batches == [[1, 2]]


def test_the_wait_never_exceeds_the_maximum():
    rec = Recorder()

    async def scenario(b):
        with b.receiving():  # announced, but this request never arrives (e.g. its upload is refused)
            t0 = time.perf_counter()
            done = await b.submit(1)
            return time.perf_counter() - t0, done

    elapsed, done = run_batcher(scenario, rec, max_wait_s=0.1)
    assert 0.09 <= elapsed < 0.6, elapsed
    assert rec.batches == [[1]]
    assert 0.09 <= done.queue_s < 0.6


def test_a_failing_batch_fails_each_of_its_requests():
    class Boom(Recorder):
        def __call__(self, items):
            raise RuntimeError("CUDA out of memory")

    async def scenario(b):
        return await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)

    results = run_batcher(scenario, Boom())
    assert [str(r) for r in results] == ["CUDA out of memory"] * 2


def test_batcher_settings_are_checked():
    with pytest.raises(ValueError):
        Batcher(lambda items: items, None, max_size=0)
    with pytest.raises(ValueError):
        Batcher(lambda items: items, None, max_wait_s=-1)


# --- through the app ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier() -> model.Classifier:
    settings = Settings()
    return model.load_classifier(settings.model_path, settings.labels_path)


class Held:
    """The real classifier, whose first inference waits until released: requests pile up behind it."""

    def __init__(self, classifier):
        self.real = classifier
        self.provider, self.sha256, self.session = classifier.provider, classifier.sha256, classifier.session
        self.entered, self.release = threading.Event(), threading.Event()
        self.batch_sizes: list[int] = []

    def warm_up(self, max_batch_size=1):
        pass

    def infer(self, batch):
        self.batch_sizes.append(len(batch))
        self.entered.set()
        assert self.release.wait(30)
        return self.real.infer(batch)


def started_client(app):
    client = TestClient(app)
    client.__enter__()
    assert app.state.service.finished.wait(60)
    return client


def post(client, body, content_type="image/jpeg"):
    return client.post("/predict", content=body, headers={"Content-Type": content_type})


def pile_up(app, client, held, bodies):
    """One request holds the worker; `bodies` queue behind it; then release. Returns their responses."""
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        first = pool.submit(post, client, PHOTO)
        assert held.entered.wait(30)
        rest = [pool.submit(post, client, body) for body in bodies]
        deadline = time.monotonic() + 30
        while app.state.batcher.depth < len(bodies):  # bounded wait until all are queued
            assert time.monotonic() < deadline, "requests did not queue"
            time.sleep(0.01)
        held.release.set()
        return first.result(), [f.result() for f in rest]


def test_concurrent_requests_are_answered_from_one_batch(classifier):
    held = Held(classifier)
    app = create_app(Settings(max_batch_size=8), loader=lambda s: held)
    client = started_client(app)
    try:
        first, rest = pile_up(app, client, held, [PHOTO] * 4)
        assert held.batch_sizes == [1, 4]
        alone = classifier.classify(model.decode_image(PHOTO, 10**8))
        for r in [first, *rest]:
            assert r.status_code == 200, r.text
            assert [p["label"] for p in r.json()["predictions"]] == [p["label"] for p in alone]
        assert {TIMING.match(r.headers["Server-Timing"]).group(4) for r in rest} == {"4"}
    finally:
        client.__exit__(None, None, None)


def test_a_bad_image_in_a_batch_fails_alone(classifier):
    held = Held(classifier)
    app = create_app(Settings(max_batch_size=8), loader=lambda s: held)
    client = started_client(app)
    try:
        _, (good, bad, good2) = pile_up(app, client, held, [PHOTO, b"not an image", PHOTO])
        assert (good.status_code, bad.status_code, good2.status_code) == (200, 400, 200)
        assert "error" in bad.json() and held.batch_sizes == [1, 2]
        assert client.get("/health").json()["errors"] == 1
    finally:
        client.__exit__(None, None, None)


def test_batching_switched_off_in_the_settings(classifier):
    held = Held(classifier)
    app = create_app(Settings(max_batch_size=1), loader=lambda s: held)
    client = started_client(app)
    try:
        _, rest = pile_up(app, client, held, [PHOTO] * 3)
        assert held.batch_sizes == [1, 1, 1, 1]
        assert {TIMING.match(r.headers["Server-Timing"]).group(4) for r in rest} == {"1"}
    finally:
        client.__exit__(None, None, None)


@pytest.fixture
def client(classifier):
    app = create_app(Settings(), loader=lambda s: classifier)
    with TestClient(app) as c:
        assert app.state.service.finished.wait(60)
        yield c


def test_server_timing_splits_queue_decode_and_inference(client):
    r = post(client, PHOTO)
    assert r.status_code == 200
    m = TIMING.match(r.headers["Server-Timing"])
    assert m, r.headers["Server-Timing"]
    queue, decode, infer, batch = float(m[1]), float(m[2]), float(m[3]), int(m[4])
    assert queue >= 0 and decode > 0 and infer > 0 and batch == 1
    assert infer < 5000 and decode < 5000  # milliseconds, not seconds or microseconds
    bad = post(client, b"\xff\xd8 truncated")
    assert bad.status_code == 400
    m = TIMING.match(bad.headers["Server-Timing"])
    assert m and m[3] is None, "an image that failed to decode never reached inference"


def metric_samples(client) -> dict[tuple, float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_in_prometheus_text_format(client):
    for body in (PHOTO, PHOTO, PHOTO, b"junk"):
        post(client, body)
    post(client, PHOTO, "text/plain")  # refused before the queue
    m = metric_samples(client)
    assert m[("model_requests_total", (("status", "200"),))] == 3
    assert m[("model_requests_total", (("status", "400"),))] == 1
    assert m[("model_requests_total", (("status", "415"),))] == 1
    assert m[("model_errors_total", (("status", "400"),))] == 1
    assert m[("model_errors_total", (("status", "415"),))] == 1
    assert ("model_errors_total", (("status", "200"),)) not in m
    assert m[("model_queue_seconds_count", ())] == 4  # every request that reached the queue
    assert m[("model_decode_seconds_count", ())] == 4
    assert m[("model_batch_size_count", ())] == m[("model_inference_seconds_count", ())] == 3
    assert m[("model_batch_size_sum", ())] == 3
    assert m[("model_batch_size_bucket", (("le", "1.0"),))] == 3
    assert m[("model_inference_seconds_sum", ())] > 0
    assert m[("model_queue_depth", ())] == 0
    info = [k for k in m if k[0] == "model_info"]
    assert info and dict(info[0][1])["provider"] == "CPUExecutionProvider" and m[info[0]] == 1
    assert client.get("/health").json()["requests"] == 3  # /health counts agree
    assert m[("process_resident_memory_bytes", ())] > 0  # the replica's own memory, for bounded-memory checks


def test_settings_for_batching_from_the_environment():
    s = Settings.from_env({"MAX_BATCH_SIZE": "1", "MAX_BATCH_WAIT_MS": "0.5", "GPU_MEM_LIMIT_MB": "2048"})
    assert (s.max_batch_size, s.max_batch_wait_ms, s.gpu_mem_limit_mb) == (1, 0.5, 2048)
    assert (Settings().max_batch_size, Settings().max_batch_wait_ms) == (8, 2.0)


def test_health_reports_the_batching_settings(client):
    h = client.get("/health").json()
    assert h["batching"] == {"max_batch_size": 8, "max_batch_wait_ms": 2.0}
    assert {"provider", "device", "device_name", "requests", "errors", "replica"} <= set(h)


# --- bounded queue and clients that went away ------------------------------------------------------------

def test_the_queue_is_bounded():
    from model_service.batching import QueueFull

    rec = Recorder(hold=True)

    async def scenario(b):
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.get_running_loop().run_in_executor(None, rec.entered.wait, 10)
        queued = [asyncio.ensure_future(b.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)  # let both reach the queue (one loop turn, not a wait for time)
        with pytest.raises(QueueFull, match="max queue 2"):
            await b.submit(4)
        rec.release.set()
        return [d.outcome for d in await asyncio.gather(first, *queued)]

    assert asyncio.run(_bounded(rec, 2)(scenario)) == [10, 20, 30]
    with pytest.raises(ValueError):
        Batcher(lambda items: items, None, max_queue=-1)


def _bounded(process, max_queue):
    async def main(scenario):
        with ThreadPoolExecutor(1) as worker:
            batcher = Batcher(process, worker, 8, 0, max_queue)
            batcher.start()
            try:
                return await scenario(batcher)
            finally:
                process.release.set()
                await batcher.stop()
    return main


def test_a_request_whose_caller_gave_up_is_dropped_before_inference():
    rec = Recorder(hold=True)

    async def scenario(b):
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.get_running_loop().run_in_executor(None, rec.entered.wait, 10)
        gone = asyncio.ensure_future(b.submit(2))
        kept = asyncio.ensure_future(b.submit(3))
        await asyncio.sleep(0)
        gone.cancel()  # what a cancelled handler (client disconnected) does to its submit
        rec.release.set()
        await asyncio.gather(first, kept)
        return b.dropped

    assert asyncio.run(_bounded(rec, 0)(scenario)) == 1
    assert rec.batches == [[1], [3]]  # 2 never reached the model


def gauge(client, name):
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


def test_over_the_queue_bound_answers_503_with_retry_after_and_gauges_show_the_backlog(classifier):
    held = Held(classifier)
    app = create_app(Settings(max_batch_size=8, max_queue=2), loader=lambda s: held)
    client = started_client(app)
    try:
        assert gauge(client, "loadgrid_queue_depth") == 0 and gauge(client, "loadgrid_in_flight_requests") == 0
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(post, client, PHOTO)
            assert held.entered.wait(30)
            queued = [pool.submit(post, client, PHOTO) for _ in range(2)]
            deadline = time.monotonic() + 30
            while app.state.batcher.depth < 2:  # bounded wait until both are queued
                assert time.monotonic() < deadline, "requests did not queue"
                time.sleep(0.01)
            refused = post(client, PHOTO)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert "max queue 2" in refused.json()["error"]
            assert gauge(client, "loadgrid_queue_depth") == 2 and gauge(client, "loadgrid_in_flight_requests") == 3
            held.release.set()
            assert [f.result().status_code for f in [first, *queued]] == [200, 200, 200]
        assert gauge(client, "loadgrid_queue_depth") == 0 and gauge(client, "loadgrid_in_flight_requests") == 0
    finally:
        held.release.set()
        client.__exit__(None, None, None)


def test_a_client_that_disconnects_while_queued_costs_no_inference(classifier):
    held = Held(classifier)
    app = create_app(Settings(max_batch_size=8), loader=lambda s: held)
    client = started_client(app)

    async def disconnecting_request():
        """A raw ASGI request: its body, then http.disconnect once it is queued (the client gave up)."""
        sent = []
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": PHOTO, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"image/jpeg"),
                                              (b"content-length", str(len(PHOTO)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        call = asyncio.ensure_future(app(scope, receive, send))
        for _ in range(1000):  # bounded: until it is queued behind the held batch
            if app.state.batcher.depth == 1:
                break
            await asyncio.sleep(0.01)
        assert app.state.batcher.depth == 1
        gone.set()
        await asyncio.wait_for(call, 10)
        return sent

    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, client, PHOTO)
            assert held.entered.wait(30)
            sent = client.portal.call(disconnecting_request)
            assert sent[0]["status"] == 499
            held.release.set()
            assert first.result().status_code == 200
        assert held.batch_sizes == [1]  # the disconnected request never reached the model
        assert gauge(client, "model_dropped_total") == 1 and gauge(client, "loadgrid_in_flight_requests") == 0
    finally:
        held.release.set()
        client.__exit__(None, None, None)
