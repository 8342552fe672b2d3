"""Kept so `locust -f locustfile.py` and `from locustfile import ModelUser` go on working: loadgrid's default
user and locustfile live in the package, loadgrid/locustfile.py, so they are found wherever a config lives."""

from loadgrid.locustfile import EXPECT, PAYLOAD, PREDICT_PATH, ModelUser  # noqa: F401  Locust finds ModelUser
