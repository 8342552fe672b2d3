"""Queue example worker: takes jobs from the Redis list `jobs`, classifies each image with the bundled model
(model_service.model) and pushes the answer to `result:<id>`. GET /health on :8000 says how many jobs this
worker processed: loadgrid reads it before and after each run (the record's per-replica requests_served)."""

import json
import os
import socket
import threading
import time
from base64 import b64decode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

from model_service.model import ImageError, load_classifier, prepare

REPLICA = socket.gethostname()  # the container's short id: how loadgrid tells replicas apart
MAX_PIXELS = 50_000_000
processed = 0
loaded = False


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        data = json.dumps({"replica": REPLICA, "ready": loaded, "requests": processed}).encode()
        self.send_response(200 if loaded else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def answer(classifier, job: dict) -> dict:
    try:
        return {"predictions": classifier.infer(prepare(b64decode(job["image"]), MAX_PIXELS))[0], "replica": REPLICA}
    except ImageError as exc:
        return {"status": 400, "error": str(exc), "replica": REPLICA}
    except Exception as exc:  # a worker answers every job it took, also when inference fails
        return {"status": 500, "error": f"inference failed: {exc}", "replica": REPLICA}


def main() -> None:
    global processed, loaded
    threading.Thread(target=ThreadingHTTPServer(("", 8000), Health).serve_forever, daemon=True).start()
    classifier = load_classifier(os.environ["MODEL_PATH"], os.environ["LABELS_PATH"],
                                 intra_op_threads=int(os.environ.get("INTRA_OP_THREADS", "1")))
    loaded = True
    queue = redis.Redis(host=os.environ.get("REDIS_HOST", "redis"))
    while True:
        try:
            _, raw = queue.blpop(["jobs"])
        except redis.ConnectionError:  # Redis still starting (or restarting): try again shortly
            time.sleep(0.2)
            continue
        job = json.loads(raw)
        queue.rpush(f"result:{job['id']}", json.dumps(answer(classifier, job)))
        queue.expire(f"result:{job['id']}", 60)  # an answer nobody waits for any more does not pile up
        processed += 1


if __name__ == "__main__":
    main()
