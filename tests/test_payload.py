"""Payload kinds and request bodies, built once: pure, no Locust (a local server only for fetching by URL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.engine import ROOT
from support.sink_server import SinkServer

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


# --- fetched payloads: no fixed temporary name, no credentials in messages ---------------------------------

def test_a_fetched_payload_never_follows_a_symlink_planted_at_its_temporary_name(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    folder = tmp_path / "out"
    folder.mkdir()
    # The names a download used to be written through: <target>.part (and a .tmp, for good measure).
    for planted in ("payload-cat.jpg.part", "payload-cat.jpg.tmp"):
        (folder / planted).symlink_to(victim)
    data = JPEG.read_bytes()
    with SinkServer(files={"cat.jpg": data}) as server:
        path = payload.fetch(f"{server.url}/files/cat.jpg", folder)
    assert path == folder / "payload-cat.jpg" and path.read_bytes() == data and not path.is_symlink()
    assert victim.read_text() == "keep me\n"
    assert (folder / "payload-cat.jpg.part").is_symlink()  # left as it was, not written through
    assert sorted(p.name for p in folder.iterdir()) == ["payload-cat.jpg", "payload-cat.jpg.part",
                                                        "payload-cat.jpg.tmp"]  # no temporary file left


def test_a_symlink_at_the_target_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / "payload-cat.jpg").symlink_to(victim)
    with SinkServer(files={"cat.jpg": b"\xff\xd8\xffnew"}) as server:
        path = payload.fetch(f"{server.url}/files/cat.jpg", tmp_path)
    assert not path.is_symlink() and path.read_bytes() == b"\xff\xd8\xffnew"
    assert victim.read_text() == "keep me\n"


def test_a_fetched_payload_gets_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        with SinkServer(files={"cat.jpg": b"\xff\xd8\xffx"}) as server:
            path = payload.fetch(f"{server.url}/files/cat.jpg", tmp_path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_fetch_errors_mask_the_urls_credentials(tmp_path):
    with SinkServer() as server:
        port = server.url.rsplit(":", 1)[1]
    # The server is gone: the connection is refused, and the message names the URL.
    with pytest.raises(payload.PayloadError) as caught:
        payload.fetch(f"http://alice:hunter2-secret@127.0.0.1:{port}/cat.jpg?token=tok-42", tmp_path, timeout_s=5)
    message = str(caught.value)
    assert "hunter2-secret" not in message and "tok-42" not in message
    assert message.startswith(f"http://alice:***@127.0.0.1:{port}/cat.jpg?token=***: could not fetch the payload")


def test_a_non_ascii_file_name_is_sent_under_the_c_locale(tmp_path):
    """LC_ALL=C with UTF-8 mode off: file names come back from the OS as surrogate escapes, and the multipart
    header must carry the name's bytes as they are on disk (it used to raise UnicodeEncodeError)."""
    folder = tmp_path / "répertoire"
    folder.mkdir()
    (folder / "chat-é.jpg").write_bytes(JPEG.read_bytes())
    code = ("import sys; from loadgrid import payload; p = payload.load(sys.argv[1], 'multipart'); "
            "sys.stdout.buffer.write(p.bodies[0].data[:300])")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    done = subprocess.run([sys.executable, "-c", code, os.fsencode(folder)], capture_output=True, cwd=ROOT, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert 'filename="chat-é.jpg"'.encode() in done.stdout
