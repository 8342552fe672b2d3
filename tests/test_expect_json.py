"""Issue 13.4: `expect: {status: ..., json: {path: check}}`, served as any JSON API means it.

Pure: the checks and their one-line config errors. Real: Locust runs against a local server (no Docker)
answering {"success": false} (every request failed, with the message) and {"success": true} (all served)."""

from __future__ import annotations

import json

import pytest
from support.engine import ROOT
from support.sink_server import SinkServer
from support.target import orchestrate, run_locust

from loadgrid import config, payload
from loadgrid.errors import UserError
from loadgrid.plan import RunSpec

TARGET = {"target": "http://127.0.0.1:9/predict", "num_users_list": [1], "run_time": "5s",
          "payload": str(ROOT / "images")}


def cfg(**changes) -> config.Config:
    return config.from_mapping({**TARGET, **changes}, base=ROOT)


def check(spec: dict, status: int, body) -> str | None:
    def body_json():
        if isinstance(body, Exception):
            raise body
        return body

    return payload.parse_expect(spec).problem(status, body_json)


def test_the_config_keeps_the_check_as_canonical_text_and_the_record_as_a_mapping():
    c = cfg(expect={"status": 200, "json": {"success": True, "result": {"label": {"pattern": "^cat"}}}})
    assert json.loads(c.expect) == {"status": [200], "json": {"success": True, "result.label": {"pattern": "^cat"}}}
    assert payload.describe_expect(c.expect) == json.loads(c.expect)
    again = payload.JsonExpect.from_text(c.expect)  # what the locustfile reads from LOADGRID_EXPECT
    assert again == payload.parse_expect(json.loads(c.expect)) and again.to_text() == c.expect
    assert cfg(expect="status").expect == "status" and cfg().expect == ""


@pytest.mark.parametrize("spec, status, body, problem", [
    ({"json": {"success": True}}, 200, {"success": True, "score": 0.9}, None),
    ({"json": {"success": True}}, 200, {"success": False}, "expect: json success is false, wanted true"),
    ({"json": {"success": True}}, 200, {"success": 1}, "expect: json success is 1, wanted true"),
    ({"json": {"success": True}}, 200, {}, "expect: json success is missing, wanted true"),
    ({"json": {"success": True}}, 200, ValueError("no"), "expect: json body is not JSON"),
    ({"json": {"success": True}}, 500, {"success": True}, "expect: status 500, wanted a 2xx"),
    ({"status": 200}, 201, None, "expect: status 201, wanted 200"),
    ({"status": [200, 201]}, 201, None, None),
    ({"status": [200, 201]}, 404, None, "expect: status 404, wanted 200 or 201"),
    ({"json": {"predictions.0.label": "tabby"}}, 200, {"predictions": [{"label": "tabby"}]}, None),
    ({"json": {"predictions.1.label": "tabby"}}, 200, {"predictions": [{"label": "tabby"}]},
     "expect: json predictions.1.label is missing, wanted \"tabby\""),
    ({"json": {"prediction": {"pattern": "_dog$"}}}, 200, {"prediction": "Eskimo_dog"}, None),
    ({"json": {"prediction": {"pattern": "_dog$"}}}, 200, {"prediction": "tabby"},
     "expect: json prediction is \"tabby\", wanted a string matching \"_dog$\""),
    ({"json": {"prediction": {"pattern": "."}}}, 200, {"prediction": 3},
     "expect: json prediction is 3, wanted a string matching \".\""),
    ({"json": {"score": {"exists": True}}}, 200, {"score": None}, None),
    ({"json": {"error": {"exists": False}}}, 200, {"error": "boom"},
     "expect: json error is present, wanted it absent"),
    ({"json": {"score": 1}}, 200, {"score": 1.0}, None),
    ({"json": {"id": "1"}}, 200, {"id": 1}, "expect: json id is 1, wanted \"1\""),
    ({"json": {"meta": {"equals": {"v": 2}}}}, 200, {"meta": {"v": 2}}, None),
    ({"json": {"result": {"label": "cat"}}}, 200, {"result": {"label": "dog"}},
     "expect: json result.label is \"dog\", wanted \"cat\""),
])
def test_checks(spec, status, body, problem):
    assert check(spec, status, body) == problem


def test_the_check_goes_through_response_problem_as_text_too():
    text = payload.parse_expect({"json": {"success": True}}).to_text()
    assert payload.response_problem(200, lambda: {"success": False}, text) == \
        "expect: json success is false, wanted true"
    assert payload.response_problem(200, lambda: {"success": True}, payload.expect_from_text(text)) is None


@pytest.mark.parametrize("value, line", [
    ({"json": {"success": {"pattern": 3}}},
     "config: expect.json.success.pattern: got 3; expected a regular expression as a string, e.g. '^tabby'"),
    ({"json": {"label": {"pattern": "a("}}}, "config: expect.json.label.pattern: 'a(' is not a valid regular "
                                            "expression (missing ), unterminated subpattern at position 1); fix it"),
    ({"json": {"x": {"exists": "yes"}}}, "config: expect.json.x.exists: got 'yes'; expected true or false"),
    ({"json": {"x": {"exists": True, "pattern": "a"}}},
     "config: expect.json.x: got {'exists': True, 'pattern': 'a'}; give one of equals, pattern, exists alone "
     "(e.g. {pattern: '^cat'})"),
    ({"status": "ok"}, "config: expect.status: got 'ok'; expected an HTTP status code from 100 to 599 or a list "
                       "of them, e.g. 200 or [200, 201]"),
    ({"status": [200, 999]}, "config: expect.status: got [200, 999]; expected an HTTP status code from 100 to 599 "
                             "or a list of them, e.g. 200 or [200, 201]"),
    ({"json": [1]}, "config: expect.json: got [1]; expected a mapping of field paths to wanted values, e.g. "
                    "{success: true} or {predictions.0.label: {pattern: '^tabby'}}"),
    ({"json": {"a..b": 1}}, "config: expect.json: field path 'a..b' is not a dotted path such as result.label or "
                            "predictions.0.label; fix it"),
    ({"jsn": {}}, "config: expect: unknown key 'jsn'; expect takes status (codes) and json (field checks)"),
    ({}, "config: expect: got {}; expected prediction, status or a mapping such as {status: 200, json: "
         "{success: true}}"),
    ("json", "config: expect: got 'json'; expected prediction or status, or a check such as {status: 200, json: "
             "{success: true}}"),
])
def test_a_malformed_check_is_one_line_naming_the_key(value, line):
    with pytest.raises(UserError) as err:
        cfg(expect=value)
    assert err.value.messages == (line,) and err.value.exit_code == 2


def test_every_mistake_of_a_check_is_listed():
    with pytest.raises(UserError) as err:
        cfg(expect={"status": "x", "json": {"a": {"exists": 1}, "b": {"pattern": "("}}})
    assert [m.split(":")[1].strip() for m in err.value.messages] == \
        ["expect.status", "expect.json.a.exists", "expect.json.b.pattern"]


def test_the_flag_takes_the_same_check_and_names_the_flag(tmp_path):
    proc = orchestrate(["--target", "http://127.0.0.1:9/p", "--payload", str(ROOT / "images"), "--users", "1",
                        "--run-time", "2s", "--expect", "{json: {success: {exists: maybe}}}", "--dry-run"], tmp_path)
    assert proc.returncode == 2 and proc.stderr == \
        "loadgrid: error: --expect: json.success.exists: got 'maybe'; expected true or false\n"


SPEC = {"status": 200, "json": {"success": True}}


def test_locust_counts_an_answer_the_check_refuses_as_failed(tmp_path):
    text = payload.parse_expect(SPEC).to_text()
    with SinkServer(answer=b'{"success": false, "error": "model not loaded"}') as sink:
        refused = run_locust(tmp_path / "a", sink.url, RunSpec("target", 1, 1, 1.0, 30), ROOT / "images",
                             requests_per_user=6, expect=text)
        sink.answer = b'{"success": true, "prediction": "Eskimo_dog", "score": 0.93}'
        served = run_locust(tmp_path / "b", sink.url, RunSpec("target", 1, 1, 1.0, 30), ROOT / "images",
                            requests_per_user=6, expect=text)
    assert refused.requests == 6 and refused.failures == 6
    assert any("expect: json success is false, wanted true" in m for m in refused.failure_messages)
    assert served.requests == 6 and served.failures == 0


def test_a_target_run_records_the_check(tmp_path):
    with SinkServer(answer=b'{"success": true, "prediction": "Eskimo_dog", "score": 0.93}') as sink:
        (tmp_path / "config.yaml").write_text(
            f"target: {sink.url}/predict\npayload: {ROOT / 'images'}\nnum_users_list: [1]\nrequests_per_user: 25\n"
            "expect: {status: 200, json: {success: true, prediction: {pattern: '_dog$'}}}\n"
            "client_cpu_limit_pct: 100\n")
        proc = orchestrate(["--config", "config.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "reports" / "target" / "1_1.json").read_text())
    assert record["validity"]["valid"], record["validity"]
    assert record["load"]["requests"] == 25 and record["load"]["failures"] == 0
    assert record["payload"]["expect"] == {"status": [200], "json": {"success": True,
                                                                     "prediction": {"pattern": "_dog$"}}}
