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
import random
import re
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import redact, safefile

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
    # surrogateescape: a file name read under a non-UTF-8 locale (LC_ALL=C) goes out as the bytes on disk.
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode("utf-8", "surrogateescape")
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
    """Download a payload once, before the run, into `folder`; the file keeps the URL's name.

    Messages name the URL with its credentials masked (redact.url). The download is written under a fresh
    temporary name and renamed (safefile), so a symlink planted at a predictable name is never followed.
    """
    name = Path(url.split("?", 1)[0].rstrip("/")).name or "payload"
    shown = redact.url(url)
    target = Path(folder) / f"payload-{name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http(s) only, checked above)
            data = resp.read(max_bytes + 1)
    except OSError as exc:  # URLError, HTTPError and timeouts are all OSErrors
        reason = redact.text(str(getattr(exc, "reason", exc)))
        raise PayloadError(f"{shown}: could not fetch the payload ({reason})") from None
    if len(data) > max_bytes:
        raise PayloadError(f"{shown}: the payload is larger than {max_bytes >> 20} MiB")
    return safefile.replace(target, data)


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


def response_problem(status: int, body_json, expect: str | JsonExpect) -> str | None:
    """None when the answer counts as served under `expect`, else the failure message.

    `body_json()` is called only when the body must be checked (it may raise ValueError). `expect` is
    prediction, status, a `JsonExpect` or its text (as LOADGRID_EXPECT carries it).
    """
    if isinstance(expect, str) and expect.startswith("{"):
        expect = JsonExpect.from_text(expect)
    if isinstance(expect, JsonExpect):
        return expect.problem(status, body_json)
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


# --- expect: {status: ..., json: {path: check}}: "served" as any JSON API means it ---------------------------

CHECK_KEYS = ("equals", "pattern", "exists")
EXPECT_KEYS = ("status", "json")
_MISSING = object()


class ExpectError(ValueError):
    """A malformed expect check: one message per mistake, each `<key>: <what is wrong>; <the fix>`."""

    def __init__(self, messages: list[str]):
        super().__init__(messages[0])
        self.messages = messages


@dataclass(frozen=True)
class FieldCheck:
    """One field of the answer: `path` is dotted (`result.label`, `predictions.0.label`: a number indexes a
    list); the field must equal `value` (JSON equality: true is not 1), contain a match of the regular
    expression `value` (pattern), or be present / absent (exists)."""

    path: str
    kind: str  # equals, pattern or exists
    value: Any

    def wanted(self) -> str:
        if self.kind == "pattern":
            return f"a string matching {_show(self.value)}"
        if self.kind == "exists":
            return "it present" if self.value else "it absent"
        return _show(self.value)

    def problem(self, body: Any) -> str | None:
        found = _lookup(body, self.path)
        if self.kind == "exists":
            if (found is not _MISSING) == self.value:
                return None
            state = "missing" if found is _MISSING else "present"
            return f"expect: json {self.path} is {state}, wanted {self.wanted()}"
        if found is _MISSING:
            return f"expect: json {self.path} is missing, wanted {self.wanted()}"
        if self.kind == "pattern":
            if isinstance(found, str) and re.search(self.value, found):
                return None
        elif _same(found, self.value):
            return None
        return f"expect: json {self.path} is {_show(found)}, wanted {self.wanted()}"


@dataclass(frozen=True)
class JsonExpect:
    """Served means: the status is one of `statuses` (none given: any 2xx) and every field check holds."""

    statuses: tuple[int, ...] = ()
    fields: tuple[FieldCheck, ...] = ()

    def describe(self) -> dict:
        """The check as the record and LOADGRID_EXPECT carry it (JSON, paths flattened)."""
        out: dict = {}
        if self.statuses:
            out["status"] = list(self.statuses)
        if self.fields:
            out["json"] = {f.path: f.value if f.kind == "equals" and not isinstance(f.value, dict)
                           else {f.kind: f.value} for f in self.fields}
        return out

    def to_text(self) -> str:
        return json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> JsonExpect:
        return parse_expect(json.loads(text))

    def problem(self, status: int, body_json) -> str | None:
        if self.statuses and status not in self.statuses:
            wanted = " or ".join(str(s) for s in self.statuses)
            return f"expect: status {status}, wanted {wanted}"
        if not self.statuses and not 200 <= status < 300:
            return f"expect: status {status}, wanted a 2xx"
        if not self.fields:
            return None
        try:
            body = body_json()
        except ValueError:
            return "expect: json body is not JSON"
        for check in self.fields:
            problem = check.problem(body)
            if problem:
                return problem
        return None


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) or value == value else "NaN"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _same(found: Any, wanted: Any) -> bool:
    """JSON equality: true is not 1 and 1 is not "1"; 1 and 1.0 are the same number."""
    if isinstance(found, bool) or isinstance(wanted, bool):
        return isinstance(found, bool) and isinstance(wanted, bool) and found == wanted
    if isinstance(found, (int, float)) and isinstance(wanted, (int, float)):
        return found == wanted
    if type(found) is not type(wanted):
        return False
    if isinstance(wanted, dict):
        return found.keys() == wanted.keys() and all(_same(found[k], wanted[k]) for k in wanted)
    if isinstance(wanted, list):
        return len(found) == len(wanted) and all(_same(a, b) for a, b in zip(found, wanted, strict=True))
    return found == wanted


def _lookup(body: Any, path: str) -> Any:
    """The field at a dotted path, or _MISSING; a number indexes a list (negative from its end)."""
    for part in path.split("."):
        if isinstance(body, dict) and part in body:
            body = body[part]
        elif isinstance(body, list) and re.fullmatch(r"-?\d+", part) and -len(body) <= int(part) < len(body):
            body = body[int(part)]
        else:
            return _MISSING
    return body


_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


def parse_expect(value: Any, key: str = "expect") -> JsonExpect:
    """A mapping {status: 200 | [200, 201], json: {path: check}} as a `JsonExpect`; `ExpectError` lists every
    mistake, each naming its key (expect.status, expect.json.<path>). A check is a value (equal to it), or
    {pattern: REGEX}, {exists: true|false} or {equals: VALUE}; any other mapping nests field names."""
    if not isinstance(value, dict) or not value:
        raise ExpectError([f"{key}: got {value!r}; expected prediction, status or a mapping such as "
                           f"{{status: 200, json: {{success: true}}}}"])
    errors: list[str] = []
    for name in value:
        if name not in EXPECT_KEYS:
            errors.append(f"{key}: unknown key {name!r}; expect takes status (codes) and json (field checks)")
    statuses: tuple[int, ...] = ()
    if "status" in value:
        raw = value["status"]
        codes = raw if isinstance(raw, list) else [raw]
        if not codes or not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
            errors.append(f"{key}.status: got {raw!r}; expected an HTTP status code from 100 to 599 or a list of "
                          f"them, e.g. 200 or [200, 201]")
        else:
            statuses = tuple(dict.fromkeys(codes))
    fields: list[FieldCheck] = []
    if "json" in value:
        raw = value["json"]
        if not isinstance(raw, dict) or not raw:
            errors.append(f"{key}.json: got {raw!r}; expected a mapping of field paths to wanted values, e.g. "
                          f"{{success: true}} or {{predictions.0.label: {{pattern: '^tabby'}}}}")
        else:
            _field_checks(raw, f"{key}.json", "", fields, errors)
    if errors:
        raise ExpectError(errors)
    return JsonExpect(statuses, tuple(fields))


def _field_checks(raw: dict, key: str, prefix: str, out: list[FieldCheck], errors: list[str]) -> None:
    for name, wanted in raw.items():
        path = f"{prefix}{name}"
        here = f"{key}.{name}"
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not _PATH.match(str(name)):
            errors.append(f"{key}: field path {name!r} is not a dotted path such as result.label or "
                          f"predictions.0.label; fix it")
            continue
        if isinstance(wanted, dict) and wanted and set(wanted) & set(CHECK_KEYS):
            checks = [k for k in wanted if k in CHECK_KEYS]
            if len(wanted) != 1:
                errors.append(f"{here}: got {wanted!r}; give one of {', '.join(CHECK_KEYS)} alone "
                              f"(e.g. {{pattern: '^cat'}})")
                continue
            kind = checks[0]
            argument = wanted[kind]
            if kind == "pattern":
                if not isinstance(argument, str):
                    errors.append(f"{here}.pattern: got {argument!r}; expected a regular expression as a string, "
                                  f"e.g. '^tabby'")
                    continue
                try:
                    re.compile(argument)
                except re.error as exc:
                    errors.append(f"{here}.pattern: {argument!r} is not a valid regular expression ({exc}); fix it")
                    continue
            if kind == "exists" and not isinstance(argument, bool):
                errors.append(f"{here}.exists: got {argument!r}; expected true or false")
                continue
            out.append(FieldCheck(path, kind, argument))
        elif isinstance(wanted, dict) and wanted:
            _field_checks(wanted, here, f"{path}.", out, errors)  # nested field names: {result: {label: cat}}
        elif isinstance(wanted, (str, int, float, bool, list, dict)) or wanted is None:
            out.append(FieldCheck(path, "equals", wanted))
        else:
            errors.append(f"{here}: got {wanted!r}; expected a JSON value, {{pattern: REGEX}} or {{exists: true}}")


def expect_from_text(text: str) -> str | JsonExpect:
    """LOADGRID_EXPECT as the locustfile reads it: prediction, status, "" or a JsonExpect's text."""
    return JsonExpect.from_text(text) if text.startswith("{") else text


def describe_expect(expect: str) -> str | dict:
    """What the record says for Config.expect: the word, or the JSON check as a mapping."""
    return json.loads(expect) if expect.startswith("{") else expect
