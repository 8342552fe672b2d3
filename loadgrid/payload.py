"""What each request carries: images (a folder or one file) or JSON documents, read once, bodies built once.

Imported by the locustfile inside Locust's gevent world and by the orchestrator to check a payload before a
run, so it imports only the standard library (OpenCV or Pillow only when an image must be re-encoded).

Kinds, from the path:
  a folder of images (.jpg .jpeg .png .bmp .webp)  each request sends one, picked at random
  one image file                                   every request sends it
  a .json file                                     one JSON document, sent as application/json
  a .jsonl / .ndjson file, or a folder of .json    several documents, one picked at random per request
Images are sent as `raw` (the body is the JPEG, Content-Type application/octet-stream; other formats are
re-encoded to JPEG once, at load) or as `multipart` (a form with the file in field `file`, its own type).
"""

from __future__ import annotations

import json
import os
import random
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp",
               ".webp": "image/webp"}
JSON_SUFFIXES = (".json",)
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
SEND_AS = ("raw", "multipart")
EXPECT = ("prediction", "status")
MULTIPART_FIELD = "file"


class PayloadError(ValueError):
    """A payload that cannot be sent: the message says which file and why."""


@dataclass(frozen=True)
class Body:
    name: str  # the file (and line) it came from
    data: bytes
    content_type: str  # the request's Content-Type header


@dataclass(frozen=True)
class Payload:
    kind: str  # "images" (a folder), "image" (one file), "json" (one or more documents)
    source: str  # the file or folder it was read from
    send_as: str  # "raw", "multipart" or "json"
    bodies: tuple[Body, ...]

    def pick(self) -> Body:
        return self.bodies[0] if len(self.bodies) == 1 else random.choice(self.bodies)

    def describe(self) -> dict:
        """What the run record says about its payload."""
        types = sorted({b.content_type.split(";")[0] for b in self.bodies})
        return {"kind": self.kind, "source": self.source, "send_as": self.send_as, "items": len(self.bodies),
                "content_type": types[0] if len(types) == 1 else types}


def sniff_image(data: bytes) -> str | None:
    """The image suffix that `data` starts like, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def to_jpeg(data: bytes, name: str) -> bytes:
    """Re-encode an image to JPEG (quality 95), with OpenCV if installed, else Pillow."""
    if sniff_image(data) == ".jpg":
        return data
    try:
        import cv2
        import numpy as np
    except ImportError:
        cv2 = None
    if cv2 is not None:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise PayloadError(f"{name}: not an image OpenCV can decode")
        ok, encoded = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
        if not ok:
            raise PayloadError(f"{name}: could not re-encode it as JPEG")
        return encoded.tobytes()
    try:
        import io

        from PIL import Image
    except ImportError:
        raise PayloadError(f"{name}: re-encoding to JPEG for send_as raw needs opencv-python-headless or Pillow; "
                           f"install one, send a JPEG, or use send_as multipart") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            out = io.BytesIO()
            img.convert("RGB").save(out, format="JPEG", quality=95)
            return out.getvalue()
    except OSError as exc:
        raise PayloadError(f"{name}: not an image Pillow can decode ({exc})") from None


def multipart(field_name: str, filename: str, content_type: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file, and its Content-Type header (built once, sent many times)."""
    boundary = "loadgrid" + uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def image_body(name: str, data: bytes, suffix: str, send_as: str, field_name: str = MULTIPART_FIELD) -> Body:
    if send_as == "multipart":
        filename = Path(name).name if Path(name).suffix else Path(name).name + suffix
        body, content_type = multipart(field_name, filename, IMAGE_TYPES[suffix], data)
        return Body(name, body, content_type)
    # A .jpg is sent as it is; anything else is re-encoded once, here.
    jpeg = data if suffix in (".jpg", ".jpeg") else to_jpeg(data, name)
    return Body(name, jpeg, "application/octet-stream")


def _json_documents(path: Path, data: bytes) -> list[Body]:
    lines = path.suffix.lower() in JSON_LINES_SUFFIXES
    chunks = [(f"{path.name}:{i}", line) for i, line in enumerate(data.splitlines(), 1) if line.strip()] \
        if lines else [(path.name, data)]
    bodies = []
    for name, chunk in chunks:
        try:
            json.loads(chunk)
        except ValueError as exc:
            raise PayloadError(f"{name}: not valid JSON ({exc})") from None
        bodies.append(Body(name, chunk.strip(), "application/json"))
    if not bodies:
        raise PayloadError(f"{path}: no JSON document in it")
    return bodies


def _file_kind(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_TYPES:
        return "image"
    if suffix in JSON_SUFFIXES + JSON_LINES_SUFFIXES:
        return "json"
    if sniff_image(data):
        return "image"
    try:
        json.loads(data)
        return "json"
    except ValueError:
        pass
    raise PayloadError(f"{path}: neither an image (.jpg .jpeg .png .bmp .webp) nor JSON (.json, .jsonl)")


def load(path: str | Path, send_as: str = "raw", field_name: str = MULTIPART_FIELD) -> Payload:
    """Read a payload folder or file and build every request body once."""
    path = Path(path)
    if send_as not in SEND_AS:
        raise PayloadError(f"send_as {send_as!r}: expected one of {', '.join(SEND_AS)}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_TYPES]
        documents = [p for p in files if p.suffix.lower() in JSON_SUFFIXES + JSON_LINES_SUFFIXES]
        if images and documents:
            raise PayloadError(f"{path}: holds both images and JSON files; keep one kind per folder")
        if images:
            bodies = tuple(image_body(p.name, p.read_bytes(), p.suffix.lower(), send_as, field_name)
                           for p in images)
            return Payload("images", str(path), send_as, bodies)
        if documents:
            bodies = tuple(b for p in documents for b in _json_documents(p, p.read_bytes()))
            return Payload("json", str(path), "json", bodies)
        raise PayloadError(f"{path}: no images (.jpg .jpeg .png .bmp .webp) or JSON files (.json, .jsonl) in it")
    if not path.is_file():
        raise PayloadError(f"{path}: no such file or folder")
    data = path.read_bytes()
    if not data:
        raise PayloadError(f"{path}: the file is empty")
    if _file_kind(path, data) == "json":
        return Payload("json", str(path), "json", tuple(_json_documents(path, data)))
    suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_TYPES else sniff_image(data)
    if suffix is None:
        raise PayloadError(f"{path}: not an image loadgrid recognises (JPEG, PNG, BMP, WebP)")
    return Payload("image", str(path), send_as, (image_body(path.name, data, suffix, send_as, field_name),))


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def fetch(url: str, folder: Path, timeout_s: float = 30, max_bytes: int = 64 << 20) -> Path:
    """Download a payload once, before the run, into `folder`; the file keeps the URL's name."""
    name = Path(url.split("?", 1)[0].rstrip("/")).name or "payload"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"payload-{name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http(s) only, checked above)
            data = resp.read(max_bytes + 1)
    except OSError as exc:  # URLError, HTTPError and timeouts are all OSErrors
        raise PayloadError(f"{url}: could not fetch the payload ({getattr(exc, 'reason', exc)})") from None
    if len(data) > max_bytes:
        raise PayloadError(f"{url}: the payload is larger than {max_bytes >> 20} MiB")
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


# --- what counts as a served request ------------------------------------------------------------------------

def prediction_problem(body: object) -> str | None:
    """None when `body` is a valid prediction, else what is wrong with it."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or not predictions:
        return "no predictions in the answer"
    for p in predictions:
        if not isinstance(p, dict) or not isinstance(p.get("label"), str):
            return "a prediction has no label"
        if not isinstance(p.get("score"), (int, float)) or not 0 <= p["score"] <= 1:
            return "a prediction has no score in [0, 1]"
    return None


def response_problem(status: int, body_json, expect: str) -> str | None:
    """None when the answer counts as served under `expect`, else the failure message.

    `body_json()` is called only when the body must be a prediction (it may raise ValueError).
    """
    if expect == "status":
        return None if 200 <= status < 300 else f"HTTP {status}"
    if status != 200:
        return f"HTTP {status}"
    try:
        problem = prediction_problem(body_json())
    except ValueError:
        problem = "body is not JSON"
    return f"{problem} (expect: status accepts any 2xx)" if problem else None


def default_expect(kind: str) -> str:
    """Images are checked for a prediction; JSON documents go to arbitrary APIs, so any 2xx counts."""
    return "status" if kind == "json" else "prediction"
