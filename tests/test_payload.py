"""Payload kinds and request bodies, built once: pure, no server, no Locust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT

from loadgrid import payload

JPEG = ROOT / "images" / "chelsea.jpg"


def png_file(tmp_path: Path, name: str = "cat.png") -> Path:
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(JPEG))
    ok, data = cv2.imencode(".png", image)
    assert ok
    path = tmp_path / name
    path.write_bytes(data.tobytes())
    return path


def test_a_folder_of_images_is_picked_at_random_and_sent_raw():
    p = payload.load(ROOT / "images")
    assert p.kind == "images" and p.send_as == "raw" and len(p.bodies) == 5
    assert {b.content_type for b in p.bodies} == {"application/octet-stream"}
    assert all(b.data[:3] == b"\xff\xd8\xff" for b in p.bodies)
    assert len({p.pick().name for _ in range(200)}) > 1


def test_a_png_is_re_encoded_to_jpeg_for_raw_and_kept_for_multipart(tmp_path):
    png = png_file(tmp_path)
    raw = payload.load(png, "raw")
    assert raw.kind == "image" and raw.pick().data[:3] == b"\xff\xd8\xff"
    assert raw.pick().content_type == "application/octet-stream"
    form = payload.load(png, "multipart").pick()
    assert form.content_type.startswith("multipart/form-data; boundary=")
    boundary = form.content_type.split("boundary=")[1]
    assert form.data.startswith(f"--{boundary}\r\n".encode()) and form.data.endswith(f"--{boundary}--\r\n".encode())
    assert b'name="file"; filename="cat.png"' in form.data and b"Content-Type: image/png" in form.data
    assert png.read_bytes() in form.data


def test_a_file_without_suffix_is_sniffed(tmp_path):
    (tmp_path / "blob").write_bytes(JPEG.read_bytes())
    assert payload.load(tmp_path / "blob").kind == "image"
    (tmp_path / "doc").write_text('{"x": 1}')
    assert payload.load(tmp_path / "doc").kind == "json"


def test_json_documents(tmp_path):
    (tmp_path / "one.json").write_text('{"inputs": [1, 2, 3]}\n')
    one = payload.load(tmp_path / "one.json", "raw")
    assert one.kind == "json" and one.send_as == "json"
    assert json.loads(one.pick().data) == {"inputs": [1, 2, 3]} and one.pick().content_type == "application/json"
    (tmp_path / "many.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3}\n')
    many = payload.load(tmp_path / "many.jsonl")
    assert [json.loads(b.data)["a"] for b in many.bodies] == [1, 2, 3]
    assert many.describe() == {"kind": "json", "source": str(tmp_path / "many.jsonl"), "send_as": "json",
                               "items": 3, "content_type": "application/json"}


@pytest.mark.parametrize("setup, words", [
    (lambda d: (d / "x.json").write_text("{nope"), ["x.json", "not valid JSON"]),
    (lambda d: (d / "x.txt").write_text("hello"), ["neither an image", "JSON"]),
    (lambda d: (d / "x.jpg").write_bytes(b""), ["empty"]),
])
def test_bad_payload_files(tmp_path, setup, words):
    setup(tmp_path)
    target = next(tmp_path.iterdir())
    with pytest.raises(payload.PayloadError) as err:
        payload.load(target)
    for word in words:
        assert word in str(err.value)


def test_a_folder_must_hold_one_kind(tmp_path):
    (tmp_path / "a.jpg").write_bytes(JPEG.read_bytes())
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(payload.PayloadError, match="both images and JSON"):
        payload.load(tmp_path)
    with pytest.raises(payload.PayloadError, match="no such file"):
        payload.load(tmp_path / "missing")


def test_what_counts_as_served():
    good = {"predictions": [{"label": "cat", "score": 0.9}]}
    assert payload.response_problem(200, lambda: good, "prediction") is None
    assert payload.response_problem(503, lambda: good, "prediction") == "HTTP 503"
    assert "no predictions" in payload.response_problem(200, lambda: {}, "prediction")
    assert payload.response_problem(201, lambda: {}, "status") is None
    assert payload.response_problem(404, lambda: {}, "status") == "HTTP 404"

    def not_json():
        raise ValueError("no")

    assert "not JSON" in payload.response_problem(200, not_json, "prediction")
    assert payload.default_expect("json") == "status" and payload.default_expect("images") == "prediction"
