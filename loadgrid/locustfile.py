"""loadgrid's default locustfile, used when the config names none (shipped in the package, so it is found
wherever the config lives): each request posts the payload (an image picked at random, or a JSON document).

Replace it with your own: subclass `LoadgridUser` and define `request(self)` to keep loadgrid's pacing
(closed loop, N requests per user, open-loop arrival rate); a plain Locust user works for timed runs.

What counts as served (LOADGRID_EXPECT): `prediction`, a 200 whose body is a valid prediction, so a
gateway error page or an empty answer never passes for a served request (the default for images);
`status`, any 2xx (the default for JSON documents); or a JSON check, {"status": [200], "json": {"success":
true}} (status codes, and field paths with a wanted value, {"pattern": REGEX} or {"exists": true}).
Settings come from the environment (set by loadgrid):
  LOADGRID_PAYLOAD        a folder of images, an image, a .json or .jsonl file
                          (default: $PAYLOAD, then LOADGRID_IMAGES_DIR, then images/ in the current
                          folder, then the project's images/)
  LOADGRID_SEND_AS        raw (the JPEG as application/octet-stream) or multipart (field `file`)
  LOADGRID_PREDICT_PATH   endpoint path (default: /predict); the host is Locust's --host, or $ENDPOINT
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

if not __package__:  # loaded by Locust as a file (-f .../loadgrid/locustfile.py): use the loadgrid it ships in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgrid import payload  # noqa: E402
from loadgrid.locust_users import LoadgridUser  # noqa: E402

ENDPOINT = urlparse(os.environ.get("ENDPOINT", ""))
SOURCE = (os.environ.get("LOADGRID_PAYLOAD") or os.environ.get("PAYLOAD") or os.environ.get("LOADGRID_IMAGES_DIR")
          or next((str(p) for p in (Path.cwd() / "images", Path(__file__).resolve().parent.parent / "images")
                   if p.is_dir()), "images"))
PREDICT_PATH = os.environ.get("LOADGRID_PREDICT_PATH") or ENDPOINT.path or "/predict"

# Read and encoded once: the load generator must not spend its CPU on disk reads or encoding.
try:
    if payload.is_url(SOURCE):  # loadgrid fetches URLs itself before the run; this is for locust -f alone
        SOURCE = str(payload.fetch(SOURCE, Path(os.environ.get("TMPDIR", "/tmp"))))
    PAYLOAD = payload.load(SOURCE, os.environ.get("LOADGRID_SEND_AS", "raw"))
except payload.PayloadError as exc:
    raise SystemExit(f"loadgrid locustfile: {exc}") from None
try:  # a JSON check is parsed once here, not per request
    EXPECT = payload.expect_from_text(os.environ.get("LOADGRID_EXPECT") or payload.default_expect(PAYLOAD.kind))
except ValueError as exc:  # not JSON, or an ExpectError
    raise SystemExit(f"loadgrid locustfile: LOADGRID_EXPECT: {exc}") from None


class ModelUser(LoadgridUser):
    host = f"{ENDPOINT.scheme}://{ENDPOINT.netloc}" if ENDPOINT.netloc else None  # --host wins

    def request(self):
        body = PAYLOAD.pick()
        with self.client.post(PREDICT_PATH, data=body.data, headers={"Content-Type": body.content_type},
                              name=PREDICT_PATH, catch_response=True) as resp:
            problem = payload.response_problem(resp.status_code, resp.json, EXPECT)
            if problem:
                resp.failure(problem)

