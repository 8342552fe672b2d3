"""The load loadgrid sends: each request posts one of the images, picked at random, to the model.

A 200 whose body is not a valid prediction counts as a failure: a gateway error page or an empty
answer must never pass for a served request. Settings come from the environment (set by loadgrid):
  LOADGRID_IMAGES_DIR    folder of .jpg/.jpeg/.png files (default: images/ beside this file)
  LOADGRID_PREDICT_PATH  endpoint path (default: /predict)
"""

import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task

IMAGES_DIR = Path(os.environ.get("LOADGRID_IMAGES_DIR", Path(__file__).parent / "images"))
PREDICT_PATH = os.environ.get("LOADGRID_PREDICT_PATH", "/predict")
SUFFIXES = (".jpg", ".jpeg", ".png")

# Read once: the load generator must not spend its CPU on disk reads.
PAYLOADS = [
    (p.name, p.read_bytes(), "image/png" if p.suffix.lower() == ".png" else "image/jpeg")
    for p in sorted(IMAGES_DIR.iterdir())
    if p.suffix.lower() in SUFFIXES
]
if not PAYLOADS:
    raise SystemExit(f"loadgrid locustfile: no images in {IMAGES_DIR}")


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


class ModelUser(FastHttpUser):
    # No think time: each user is one client sending back to back (concurrency = users).
    wait_time = constant(0)

    @task
    def predict(self):
        name, data, content_type = random.choice(PAYLOADS)
        with self.client.post(PREDICT_PATH, data=data, headers={"Content-Type": content_type},
                              name=PREDICT_PATH, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            try:
                problem = prediction_problem(resp.json())
            except ValueError:
                problem = "body is not JSON"
            if problem:
                resp.failure(problem)
