"""Queue example API: POST /predict puts the request body on the Redis list `jobs` and waits for a worker's
answer on `result:<id>`; GET /health answers when Redis does. Standard library and python3-redis only."""

import json
import os
import uuid
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

REDIS = redis.Redis(host=os.environ.get("REDIS_HOST", "redis"))
TIMEOUT_S = int(os.environ.get("RESULT_TIMEOUT_S", "30"))


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a load generator expects

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/predict":
            return self.reply(404, {"error": "POST /predict"})
        job = uuid.uuid4().hex
        REDIS.rpush("jobs", json.dumps({"id": job, "image": b64encode(body).decode()}))
        found = REDIS.blpop([f"result:{job}"], timeout=TIMEOUT_S)
        if found is None:
            return self.reply(504, {"error": f"no worker answered within {TIMEOUT_S} s"})
        answer = json.loads(found[1])
        self.reply(answer.pop("status", 200), answer)

    def do_GET(self):
        self.reply(200, {"ready": bool(REDIS.ping()), "queued": REDIS.llen("jobs")})

    def reply(self, status, answer):
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # one line per request would cost the benchmark CPU
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("", 8080), Api).serve_forever()
