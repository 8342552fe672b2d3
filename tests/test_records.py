"""Schema 2 run records: golden schema-1 records from the release migrate and render, a results folder is
untrusted input (types, file names, ids, encodings), and atomic writes keep the umask's mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadgrid import store
from loadgrid.errors import UserError
from loadgrid.store import (
    Bottleneck,
    Generator,
    GeneratorLag,
    LoadReport,
    OpenLoop,
    Payload,
    Quiesce,
    Readiness,
    ReplicaReport,
    RunRecord,
    StackReport,
    Stop,
    Telemetry,
    Validity,
    WholeRun,
    Window,
)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "fixtures" / "schema1"
GOLDEN_RECORDS = sorted(p for p in GOLDEN.glob("*/*/*.json") if not p.name.endswith(store.COMPANION_SUFFIXES))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def full_record() -> RunRecord:
    """A schema-2 record with every sub-record filled."""
    return RunRecord(
        id="cpu/2_16_4_r2", variant="cpu", models=2, users=16, spawn_rate=4.0, run_time_s=20,
        host="http://localhost:8080", status="completed", started_at="t0", ended_at="t1",
        stack=StackReport("loadgrid-cpu", ["/x/docker-compose.yml"], 2, 2, {"m1": "sha256:1"},
                          [ReplicaReport("abc", "m1", "running", "healthy", cpu_threads=2)]),
        load=LoadReport(
            0, 100, 0, 10.0, 10.0, {"p50": 10.0, "p95": 20.0}, {},
            window=Window(start_at=1.0, end_at=11.0, duration_s=10.0, bounds="stats reset to test_stop",
                          latency_from="exact"),
            whole_run=WholeRun(requests=120, failures=0, rps=9.5, latency_ms={"p95": 21.0},
                               failures_before_window={}),
            generator=Generator(processes=1, cores=1, cpu_pct_mean=7.5, cpu_series=[[1.0, 7.0]],
                                lag_ms=GeneratorLag(p50=0.5, p99=3.0, samples=500, per_process=[{"pid": 1}],
                                                    series=[[1.0, 3.0]])),
            open_loop=OpenLoop(arrival="constant", intended_rate=20.0, sent=200, latency_intended_ms={"p95": 30.0}),
            stop=Stop(requests_per_user=5, users=2, users_finished=2, requests_sent=10, by="requests"),
            window_thirds=[{"requests": 30, "p50": 10.0, "p95": 20.0, "rps": 9.0}] * 3),
        validity=Validity(True, []), files={"html": "2_16_4_r2.html", "telemetry": "2_16_4_r2.telemetry.json"},
        telemetry=Telemetry(containers={"m1": {"cpu_pct_mean": 80.0, "service": "model"}}, host={"cores": 2}),
        payload=Payload(kind="images", source="/x/images", items=5),
        quiesce=Quiesce(method="requests", waited_s=0.1, idle=True, detail="ok"),
        readiness=Readiness(method="healthcheck", ready=True, waited_s=0.5),
        bottleneck=Bottleneck(kind="host", detail="host CPU 97%", checked=["a", "b"]),
    )


def write_raw(folder: Path, name: str, data) -> Path:
    path = folder / "cpu" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


# ---- golden schema-1 records -------------------------------------------------------------------------------


def test_there_are_golden_records_of_every_kind():
    ids = {json.loads(p.read_text(encoding="utf-8"))["id"] for p in GOLDEN_RECORDS}
    assert {"cpu/1_4_4", "target/2_2", "target/r20", "target/cap_r10", "cpu/1_2_2"} <= ids
    assert all(json.loads(p.read_text(encoding="utf-8"))["schema"] == 1 for p in GOLDEN_RECORDS)


@pytest.mark.parametrize("path", GOLDEN_RECORDS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_golden_schema1_record_loads_migrated_and_typed(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    record = store.load(path)
    assert record.schema == store.SCHEMA_VERSION == 2 and record.id == raw["id"]
    if raw["load"] is None:
        assert record.status == "failed" and record.load is None
    else:
        assert isinstance(record.load.window, Window) and record.load.window.start_at == raw["load"]["window"][
            "start_at"]
        assert record.load.whole_run.requests == raw["load"]["whole_run"]["requests"]
        assert isinstance(record.load.generator.lag_ms, GeneratorLag)
        assert record.load.generator.lag_ms.p99 == raw["load"]["generator"]["lag_ms"]["p99"]
        if record.arrival_rate:
            assert record.load.open_loop.achieved_rate == raw["load"]["open_loop"]["achieved_rate"]
        else:
            assert record.load.open_loop is None and raw["load"]["open_loop"] == {}
    assert record.bottleneck.kind == raw["bottleneck"]["kind"]
    assert record.payload.kind == raw["payload"]["kind"]
    # migrated, written as schema 2 and read back: the same record
    again = RunRecord.from_dict(json.loads(json.dumps(record.to_dict())), "again")
    assert again == record


def test_update_to_2_turns_empty_sub_records_into_null():
    raw = json.loads((GOLDEN / "grid" / "cpu" / "1_4_4.json").read_text(encoding="utf-8"))
    assert raw["load"]["open_loop"] == {} and raw["load"]["stop"] == {}
    moved = store.update_to_2(raw)
    assert moved["schema"] == 2 and moved["load"]["open_loop"] is None and moved["load"]["stop"] is None
    assert moved["load"]["window"] == raw["load"]["window"]
    assert raw["schema"] == 1  # the input is not changed


@pytest.mark.parametrize("folder", ["grid", "target", "failed"])
def test_report_renders_a_golden_schema1_folder(folder, tmp_path):
    shutil.copytree(GOLDEN / folder, tmp_path / folder)
    proc = cli("report", str(tmp_path / folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    page = (tmp_path / folder / "index.html").read_text(encoding="utf-8")
    summary = (tmp_path / folder / "summary.csv").read_text(encoding="utf-8")
    for path in (GOLDEN / folder).glob("*/*.json"):
        if not path.name.endswith(store.COMPANION_SUFFIXES):
            run_id = json.loads(path.read_text(encoding="utf-8"))["id"]
            assert run_id in summary and run_id in page


# ---- schema 2 ------------------------------------------------------------------------------------------------


def test_round_trip_of_a_full_schema2_record_is_identity(tmp_path):
    path = tmp_path / "cpu" / "2_16_4_r2.json"
    store.write(full_record(), path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema"] == 2 and data["load"]["generator"]["lag_ms"]["p99"] == 3.0
    assert store.load(path) == full_record()
    store.write(store.load(path), path)
    assert json.loads(path.read_text(encoding="utf-8")) == data


def test_keys_a_sub_record_does_not_name_are_kept(tmp_path):
    data = full_record().to_dict()
    data["load"]["window"]["made_by_a_later_minor"] = 5
    record = RunRecord.from_dict(data, "x")
    assert record.load.window.extra == {"made_by_a_later_minor": 5}
    assert record.to_dict()["load"]["window"]["made_by_a_later_minor"] == 5


def test_a_dict_given_for_a_sub_record_becomes_its_type():
    load = LoadReport(0, window={"start_at": None, "duration_s": None})
    assert isinstance(load.window, Window) and load.window.start_at is None  # present: "no window measured"
    assert LoadReport(0, window={}).window is None
    load.open_loop = {"dropped": 3}
    assert load.open_loop.dropped == 3


def test_a_newer_schema_is_refused_with_its_own_message(tmp_path):
    path = write_raw(tmp_path, "1_1_1.json", {**full_record().to_dict(), "schema": 3})
    with pytest.raises(UserError) as caught:
        store.load(path)
    assert str(caught.value).startswith(f"{path}: made by a newer loadgrid (schema 3): upgrade loadgrid to read it")
    proc = cli("report", str(tmp_path))
    assert proc.returncode == 2 and "made by a newer loadgrid (schema 3)" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- untrusted input ----------------------------------------------------------------------------------------


def test_a_file_name_outside_the_folder_is_refused_and_the_outside_file_untouched(tmp_path):
    outside = tmp_path / "home" / "u" / ".ssh" / "authorized_keys"
    outside.parent.mkdir(parents=True)
    outside.write_text("ssh-ed25519 AAAA me\n")
    folder = tmp_path / "shared" / "reports"
    good = full_record()
    store.write(good, folder / "cpu" / "2_16_4_r2.json")
    (folder / "cpu" / "2_16_4_r2.html").write_text("<html><body></body></html>")
    evil = full_record().to_dict()
    evil["id"], evil["files"] = "cpu/1_4_4", {"html": "../../../home/u/.ssh/authorized_keys"}
    write_raw(folder, "1_4_4.json", evil)
    with pytest.raises(UserError, match=r"files\.html: expected a plain file name inside the run's folder"):
        store.load(folder / "cpu" / "1_4_4.json")
    proc = cli("report", str(folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outside.read_text() == "ssh-ed25519 AAAA me\n"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "1_4_4.json" in lines[0] and "files.html" in lines[0]
    assert lines[0].startswith("loadgrid: warning: skipped ")
    assert "cpu/2_16_4_r2" in (folder / "summary.csv").read_text(encoding="utf-8")  # the rest is rendered


@pytest.mark.parametrize("name", ["../x.html", "/etc/passwd", "a/b.html", "a\\b.html", "..", ".", "x\x00.html",
                                  "x\n.html", "", "..x.html"])
def test_only_plain_file_names_pass(name):
    assert not store.plain_file_name(name)


@pytest.mark.parametrize("name", ["2_16_4.html", "cap_r10.stats.json", "1_r2.5_r3.telemetry.json"])
def test_loadgrid_file_names_pass(name):
    assert store.plain_file_name(name)


@pytest.mark.parametrize("run_id, variant", [
    ("cpu/1_4_4", "cpu"), ("cpu/1_4_4_r2", "cpu"), ("gpu/2_r30", "gpu"), ("cpu/2_cap_r30", "cpu"),
    ("cpu/1_16_0.5", "cpu"), ("target/16_16", "target"), ("target/r50", "target"), ("target/cap_r12.5_r3", "target"),
])
def test_planner_ids_are_accepted(run_id, variant):
    RunRecord.from_dict({**full_record().to_dict(), "id": run_id, "variant": variant}, "x")


@pytest.mark.parametrize("run_id, variant", [
    ("javascript:alert(1)", "cpu"), ("cpu/javascript:alert(1)", "cpu"), ("cpu/1_4_4\nx", "cpu"),
    ("gpu/1_4_4", "cpu"), ("cpu/../1_4_4", "cpu"), ("target/1_4_4", "target"), ("x/1_4_4", "x"),
    ("javascript:x/1_4_4", "javascript:x"),
])
def test_ids_and_variants_not_of_the_planner_are_refused(run_id, variant):
    with pytest.raises(UserError, match=r": (id|variant): expected"):
        RunRecord.from_dict({**full_record().to_dict(), "id": run_id, "variant": variant}, "x")


def bad_records() -> dict[str, bytes]:
    good = full_record().to_dict()

    def changed(path: str, value) -> bytes:
        data = json.loads(json.dumps(good))
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        return json.dumps(data).encode()

    return {
        "load.rps": changed("load.rps", "<script>alert(1)</script>"),
        "users": changed("users", "16"),
        "load.window.start_at": changed("load.window.start_at", {"x": 1}),
        "load.generator.lag_ms.p99": changed("load.generator.lag_ms.p99", "<b>"),
        "validity.valid": changed("validity.valid", "yes"),
        "telemetry.containers": changed("telemetry.containers", ["m1"]),
        "stack": changed("stack", KeyError),
        "incidents": changed("incidents", [{"container": "c"}]),
        "unknown key": changed("surprise", 1),
        "a list": json.dumps([1, 2]).encode(),
        "non-UTF-8": json.dumps(good).encode().replace(b'"t0"', b'"t\xff\xfe0"'),
        "bad JSON": b'{"schema": 2, "id": ',
        "NaN": json.dumps(good).encode().replace(b'"rps": 10.0', b'"rps": NaN'),
        "schema a string": changed("schema", "2"),
    }


@pytest.mark.parametrize("why", list(bad_records()))
def test_a_bad_record_is_one_line_naming_the_field(why, tmp_path):
    path = write_raw(tmp_path, "2_16_4_r2.json", bad_records()[why])
    with pytest.raises(UserError) as caught:
        store.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    field = why.split(" ")[0]
    if "." in why or why in ("users", "stack", "incidents"):
        assert f" {why}" in message or f"{why}:" in message or f".{field.split('.')[-1]}" in message, message


def test_report_over_bad_records_skips_each_with_one_line_and_never_a_traceback(tmp_path):
    folder = tmp_path / "reports"
    store.write(full_record(), folder / "cpu" / "2_16_4_r2.json")
    bad = bad_records()
    for i, why in enumerate(bad):
        write_raw(folder, f"1_{i + 1}_1.json", bad[why])
    proc = cli("report", str(folder))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == len(bad), proc.stderr
    assert all(line.startswith("loadgrid: warning: skipped ") for line in lines)
    assert "Traceback" not in proc.stderr
    assert "alert(1)" not in (folder / "index.html").read_text(encoding="utf-8")


def test_a_folder_where_nothing_loads_exits_2_one_line_each(tmp_path):
    folder = tmp_path / "reports"
    write_raw(folder, "1_1_1.json", b"\xff\xfe not json")
    write_raw(folder, "1_2_1.json", b"[]")
    proc = cli("report", str(folder))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 3 and "1_1_1.json" in lines[0] and "not UTF-8" in lines[0]
    assert "1_2_1.json" in lines[1] and "nothing to report" in lines[2]


def test_resume_treats_a_bad_record_as_not_done(tmp_path):
    store.write(full_record(), tmp_path / "cpu" / "2_16_4_r2.json")
    evil = {**full_record().to_dict(), "id": "cpu/1_4_4", "files": {"html": "/etc/passwd"}}
    write_raw(tmp_path, "1_4_4.json", evil)
    fingerprints = {"cpu/2_16_4_r2": "", "cpu/1_4_4": ""}
    assert store.finished_points(tmp_path, fingerprints, retry_failed=False) == {"cpu/2_16_4_r2"}


def test_credentials_in_urls_are_not_stored(tmp_path):
    record = full_record()
    record.host = "https://user:hunter2@example.com:8443"
    record.target = "https://example.com/predict?api_key=s3cr3t&x=1"
    record.payload = Payload(kind="images", source="https://u:pw@files.example.com/cat.jpg",
                             url="https://u:pw@files.example.com/cat.jpg")
    record.error = "GET https://u:pw@files.example.com/cat.jpg failed"
    path = tmp_path / "cpu" / "2_16_4_r2.json"
    store.write(record, path)
    text = path.read_text(encoding="utf-8")
    assert "hunter2" not in text and "s3cr3t" not in text and ":pw@" not in text
    loaded = store.load(path)
    assert loaded.host == "https://user:***@example.com:8443" and loaded.target.endswith("api_key=***&x=1")
    assert record.host == "https://user:hunter2@example.com:8443"  # the run itself keeps what it needs


def test_records_are_utf8_whatever_the_locale(tmp_path):
    record = full_record()
    record.error = "r\u00e9plica muerta \u2014 \u2603"
    source, path = tmp_path / "in.json", tmp_path / "cpu" / "2_16_4_r2.json"
    source.write_text(json.dumps(record.to_dict()), encoding="ascii")  # escaped: readable in any locale
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from loadgrid import store; "
            f"r = store.RunRecord.from_dict(json.loads(Path(sys.argv[1]).read_text(encoding='ascii')), 'x'); "
            f"store.write(r, Path(sys.argv[2])); print(store.load(Path(sys.argv[2])).error == r.error)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8", "PYTHONIOENC"))}
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0")  # an ASCII locale: open() without an encoding would fail
    proc = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code, str(source), str(path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr
    assert record.error in path.read_bytes().decode("utf-8")


# ---- atomic writes keep the umask's mode ---------------------------------------------------------------------


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_gives_the_mode_open_would(mask, mode, tmp_path):
    old = os.umask(mask)
    try:
        store.write_atomic(tmp_path / "index.html", "x")
        with open(tmp_path / "plain.html", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "index.html").stat().st_mode & 0o777 == mode
    assert (tmp_path / "plain.html").stat().st_mode & 0o777 == mode


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text("old")
    path.chmod(0o640)
    store.write_atomic(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_atomic_write_replaces_a_planted_symlink_not_its_target(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    outside.chmod(0o600)
    (tmp_path / "out").mkdir()
    link = tmp_path / "out" / "index.html"
    link.symlink_to(outside)
    store.write_atomic(link, "page")
    assert outside.read_text() == "keep" and not link.is_symlink() and link.read_text() == "page"
    assert link.stat().st_mode & 0o777 == 0o666 & ~_current_umask()  # the symlink's target lends no mode


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_every_record_a_real_target_run_writes_reads_back_with_no_warning(tmp_path):
    from support.sink_server import SinkServer

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADGRID_") and k not in ("ENDPOINT", "PAYLOAD")}
    with SinkServer() as sink:
        (tmp_path / "config.yaml").write_text(
            f"target: {{url: 'http://user:s3cr3t@{sink.url.removeprefix('http://')}/predict?token=abc'}}\n"
            f"payload: {ROOT / 'images'}\nnum_users_list: [1]\nrequests_per_user: 5\narrival_rate_list: [10]\n"
            "run_time: 2s\nclient_cpu_limit_pct: 100\n", encoding="utf-8")
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", "config.yaml"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    paths = store.record_paths(tmp_path / "reports")
    assert {p.name for p in paths} == {"1_1.json", "r10.json"}
    for path in paths:
        record = store.load(path)
        assert record.schema == 2 and record.target.startswith("http://user:***@")
        assert "s3cr3t" not in path.read_text(encoding="utf-8") and "token=abc" not in path.read_text(encoding="utf-8")
        assert isinstance(record.load.window, Window) and isinstance(record.load.generator, Generator)
    assert store.load(tmp_path / "reports" / "target" / "1_1.json").load.stop.by == "requests"
    assert store.load(tmp_path / "reports" / "target" / "r10.json").load.open_loop.intended_rate == 10
    assert (tmp_path / "reports" / "index.html").stat().st_mode & 0o044  # readable by others, as open() makes it


def test_compare_reads_golden_schema1_folders(tmp_path):
    shutil.copytree(GOLDEN / "grid", tmp_path / "a")
    shutil.copytree(GOLDEN / "grid", tmp_path / "b")
    proc = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 common grid points, 4 with a valid run on both sides" in proc.stdout


def test_a_sub_record_compared_with_a_dict_fails_loudly():
    # schema 1 readers compared dicts; `window != {...}` on a typed record would always pass without this
    with pytest.raises(TypeError, match="compared with a dict"):
        _ = store.Window.of({"start_at": 1.0}) == {"start_at": 1.0}
    with pytest.raises(TypeError):
        _ = store.Window.of({"start_at": 1.0}) != {}
