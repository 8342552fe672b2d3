"""Bad input at a running replica, through the gateway: over a thousand mutated images and malformed requests.

Every answer must be a 2xx or a 4xx with a JSON error, never a 5xx; the replica must not restart, must stay
healthy, and its memory must stay under MEMORY_LIMIT. Traffic goes only to the gateway on 127.0.0.1, from a
bounded list of requests with an overall deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.engine import ROOT, one_replica_stack

pytestmark = pytest.mark.docker

MEMORY_LIMIT = 1024 * 2**20  # the replica's peak memory (cgroup, page cache included) must stay below this
UPLOAD_LIMIT = 10 * 2**20  # the service's MAX_UPLOAD_BYTES, which the gateway enforces too
DEADLINE_S = 150  # the whole barrage; it takes ~20-40 s on 2 cores
CONCURRENCY = 8
SEED = 20240604


@dataclass
class Case:
    kind: str
    body: bytes | None
    content_type: str | None = "image/jpeg"
    method: str = "POST"
    path: str = "/predict"
    chunked: bool = False
    expect: frozenset[int] = field(default_factory=lambda: frozenset({200, 400, 413}))


# --- building bad input ------------------------------------------------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A valid PNG of side x side black pixels: a few hundred kB that decode to side*side*3 bytes."""
    rows = (b"\x00" + b"\x00" * (3 * side)) * side
    return png(side, side, zlib.compress(rows, 9))


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with the dimensions in its frame header replaced (the pixels stay as they were)."""
    pos = 2
    while pos + 9 < len(data):
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return data[:pos + 5] + struct.pack(">HH", height, width) + data[pos + 9:]
        pos += 2 + length
    raise AssertionError("no frame header")


def flip_bits(rng: random.Random, data: bytes, count: int, within: int | None = None) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(min(within or len(out), len(out)))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def multipart(body: bytes, field_name: str = "file", filename: str = "x.jpg") -> tuple[bytes, str]:
    boundary = "fuzzboundary7MA4YWxk"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{filename}\"\r\n"
               f"Content-Type: image/jpeg\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    return payload, f"multipart/form-data; boundary={boundary}"


def build_cases() -> list[Case]:
    rng = random.Random(SEED)
    photos = [p.read_bytes() for p in sorted((ROOT / "images").glob("*.jpg"))]
    small = cv2.resize(cv2.imdecode(np.frombuffer(photos[1], np.uint8), cv2.IMREAD_COLOR), (96, 96))
    seeds = photos + [cv2.imencode(".jpg", small)[1].tobytes(), cv2.imencode(".png", small)[1].tobytes()]
    cases: list[Case] = []

    def add(n: int, make) -> None:
        for _ in range(n):
            cases.append(make())

    def seed() -> bytes:
        return rng.choice(seeds)

    def ctype(data: bytes) -> str:
        return "image/png" if data.startswith(b"\x89PNG") else rng.choice(["image/jpeg", "application/octet-stream"])

    def bitflip() -> Case:
        data = flip_bits(rng, seed(), rng.randint(1, 30))
        return Case("bit flips", data, ctype(data))

    def header_flip() -> Case:
        data = flip_bits(rng, seed(), rng.randint(1, 8), within=640)
        return Case("header bit flips", data, ctype(data))

    def truncate() -> Case:
        data = seed()
        return Case("truncated", data[:rng.randrange(1, len(data))], ctype(data))

    def huge() -> Case:
        w, h = rng.choice([(60000, 60000), (65535, 65535), (1, 2**31 - 1), (50001, 1001), (8000, 7000)])
        if rng.random() < 0.5:
            return Case("declared huge (png)", png(w, h, zlib.compress(b"\x00" * 64)), "image/png",
                        expect=frozenset({413}))
        w, h = min(w, 65535), min(h, 65535)
        data = jpeg_with_size(rng.choice(photos), w, h)
        return Case("declared huge (jpeg)", data, "image/jpeg", expect=frozenset({413} if w * h > 50_000_000 else
                                                                           {200, 400, 413}))

    def random_bytes() -> Case:
        data = rng.randbytes(rng.randrange(1, 8000))
        prefix = rng.choice([b"", b"\xff\xd8", b"\xff\xd8\xff\xc0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF"])
        return Case("random bytes", prefix + data, rng.choice(["image/jpeg", "image/png", "application/octet-stream"]),
                    expect=frozenset({400, 413}))

    def wrong_type() -> Case:
        data = seed()
        kind = rng.choice(["text/plain", "application/json", "image/gif", "application/x-www-form-urlencoded",
                           "text/html; charset=utf-8", None, "", "image/", "multipart/mixed"])
        return Case("wrong content type", data, kind, expect=frozenset({415}))

    def empty() -> Case:
        return Case("empty body", b"", rng.choice(["image/jpeg", "image/png", "application/octet-stream"]),
                    expect=frozenset({400}))

    def wrong_method() -> Case:
        method, path = rng.choice([("GET", "/predict"), ("PUT", "/predict"), ("DELETE", "/predict"),
                                   ("PATCH", "/predict"), ("POST", "/health"), ("POST", "/metrics")])
        return Case("wrong method", seed() if method != "GET" else None, "image/jpeg", method, path,
                    expect=frozenset({405}))

    def bad_multipart() -> Case:
        data = flip_bits(rng, seed(), rng.randint(0, 20))
        if rng.random() < 0.3:
            data = data[:rng.randrange(1, len(data))]
        payload, content_type = multipart(data, rng.choice(["file", "image", "x"]))
        if rng.random() < 0.2:  # the multipart framing itself broken
            payload = payload[:rng.randrange(1, len(payload))]
        return Case("multipart", payload, content_type, expect=frozenset({200, 400, 413}))

    def chunked() -> Case:
        data = rng.choice([seed(), rng.randbytes(3000), flip_bits(rng, seed(), 10)])
        return Case("chunked", data, ctype(data), chunked=True)

    def valid() -> Case:
        data = seed()
        return Case("valid", data, ctype(data), expect=frozenset({200}))

    add(260, bitflip)
    add(150, header_flip)
    add(150, truncate)
    add(80, huge)
    add(100, random_bytes)
    add(60, wrong_type)
    add(40, empty)
    add(40, wrong_method)
    add(80, bad_multipart)
    add(30, chunked)
    add(40, valid)
    # Decompression bombs under the pixel limit (decoded for real, ~75 MB each) and over it (refused unread).
    for side in (5000, 5000, 5000):
        cases.append(Case("bomb under the limit", png_bomb(side), "image/png", expect=frozenset({200})))
    for side in (30000, 40000):
        cases.append(Case("bomb over the limit", png(side, side, zlib.compress(b"\x00" * 4096, 9)), "image/png",
                          expect=frozenset({413})))
    # Over the size limit, declared or chunked, just over it and far over it: 413 (from the gateway, which
    # enforces the same limit; the replica's own 413 is tested in-process). Never a 502: a replica that got
    # such a body would answer before reading it, and nginx, still sending, would report a dead upstream.
    big = rng.randbytes(UPLOAD_LIMIT + 2 * 2**20)
    for size in (UPLOAD_LIMIT + 1, UPLOAD_LIMIT + 100_000, UPLOAD_LIMIT + 2 * 2**20):
        cases += [Case("over the size limit", big[:size], "image/jpeg", expect=frozenset({413})),
                  Case("over the size limit", big[:size], "image/jpeg", chunked=True, expect=frozenset({413}))]
    cases.append(Case("at the size limit", big[:UPLOAD_LIMIT], "image/jpeg", expect=frozenset({400})))
    rng.shuffle(cases)
    return cases


# --- sending -----------------------------------------------------------------------------------------

@dataclass
class Answer:
    case: Case
    status: int
    body: bytes


class Client:
    """One keep-alive connection per thread to the gateway."""

    def __init__(self, port: int):
        self.port = port
        self.local = threading.local()

    def connection(self) -> http.client.HTTPConnection:
        if getattr(self.local, "conn", None) is None:
            self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return self.local.conn

    def send(self, case: Case) -> Answer:
        conn = self.connection()
        headers = {"Content-Type": case.content_type} if case.content_type is not None else {}
        body = case.body
        if case.chunked and body is not None:
            step = 64 * 1024
            body = iter([case.body[i:i + step] for i in range(0, len(case.body), step)] or [b""])
        # The gateway may refuse a body part-way (413) and close: its answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(case.method, case.path, body=body, headers=headers, encode_chunked=case.chunked)
        try:
            response = conn.getresponse()
            answer = Answer(case, response.status, response.read())
            if response.will_close:
                self.reset()
            return answer
        except (http.client.HTTPException, OSError) as exc:
            self.reset()
            return Answer(case, -1, f"{type(exc).__name__}: {exc}".encode())

    def reset(self) -> None:
        conn, self.local.conn = getattr(self.local, "conn", None), None
        if conn is not None:
            conn.close()


# --- the stack ---------------------------------------------------------------------------------------

def inspect(container: str) -> dict:
    out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def memory_peak(container_id: str) -> int | None:
    """The container's peak memory from its cgroup (v1 or v2), page cache included; None if not readable."""
    for path in (f"/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes",
                 f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak",
                 f"/sys/fs/cgroup/docker/{container_id}/memory.peak"):
        try:
            return int(Path(path).read_text())
        except (OSError, ValueError):
            continue
    return None


def memory_now(container_id: str) -> int:
    """`docker stats` memory (page cache excluded), in bytes."""
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container_id],
                         capture_output=True, text=True, timeout=60).stdout
    value = out.split("/")[0].strip()
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    for unit in sorted(units, key=len, reverse=True):
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * units[unit])
    raise AssertionError(f"cannot read docker stats memory {out!r}")


PREFIX = "lgtest-fuzz"


@pytest.fixture(scope="module")
def stack():
    with one_replica_stack(PREFIX) as (compose, port, replica):
        yield compose, port, replica


def test_a_thousand_bad_requests_leave_the_replica_healthy(stack):
    compose, port, replica = stack
    before = inspect(replica)
    cases = build_cases()
    assert len(cases) >= 1000
    client = Client(port)

    samples: list[int] = []
    stop = threading.Event()

    def sample_memory() -> None:  # docker stats takes about a second per answer: that is the pace
        while not stop.is_set():
            samples.append(memory_now(replica))

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    started = time.monotonic()
    deadline = started + DEADLINE_S

    def send(case: Case) -> Answer | None:
        return client.send(case) if time.monotonic() < deadline else None

    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            answers = list(pool.map(send, cases))
    finally:
        stop.set()
        sampler.join(timeout=90)
    elapsed = time.monotonic() - started
    assert all(a is not None for a in answers), f"the barrage did not finish within {DEADLINE_S} s"

    by_status = Counter(a.status for a in answers)
    print(f"\n{len(answers)} requests in {elapsed:.1f} s: {dict(sorted(by_status.items()))}")
    server_errors = [a for a in answers if a.status >= 500 or a.status < 0]
    assert not server_errors, [(a.case.kind, a.status, a.body[:200]) for a in server_errors[:10]]
    unexpected = [(a.case.kind, a.status, a.body[:120]) for a in answers if a.status not in a.case.expect]
    assert not unexpected, unexpected[:10]
    for a in answers:
        body = json.loads(a.body)
        if a.status == 200:
            assert len(body["predictions"]) == 5, (a.case.kind, body)
        else:
            assert isinstance(body.get("error"), str) and body["error"], (a.case.kind, a.status, body)

    after = inspect(replica)
    assert after["RestartCount"] == before["RestartCount"] == 0
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"], "the replica restarted"
    assert after["State"]["Running"] and not after["State"]["OOMKilled"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health")
    health = conn.getresponse()
    assert health.status == 200 and json.loads(health.read())["ready"] is True
    conn.request("POST", "/predict", body=(ROOT / "images" / "chelsea.jpg").read_bytes(),
                 headers={"Content-Type": "image/jpeg"})
    assert conn.getresponse().status == 200
    conn.close()

    peak = memory_peak(replica)
    highest = max(samples + [memory_now(replica)])
    print(f"replica memory: docker stats max {highest / 2**20:.0f} MiB over {len(samples)} samples, "
          f"cgroup peak {'n/a' if peak is None else f'{peak / 2**20:.0f} MiB'} (limit {MEMORY_LIMIT / 2**20:.0f} MiB)")
    assert highest < MEMORY_LIMIT
    if peak is not None:
        assert peak < MEMORY_LIMIT
    logs = compose("logs", "--no-color", "model", timeout=60).stdout
    assert "prediction failed" not in logs and "Traceback" not in logs, logs[-3000:]
