"""What limited a run: each kind, the precedence between them, and where it shows (record, csv, conclusions)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from support.report_fixtures import run

from loadgrid import analysis, bottleneck, report, run_page, store
from loadgrid.store import GeneratorLag, Incident, RunRecord

# A 2-core machine: replicas m1, m2 (no CPU limit: the host's 2 cores each), gateway (no limit), Locust 1 core.


def telemetry(host: float | None = 40.0, replicas=(50.0, 50.0), gateway: float | None = 20.0,
              replica_limit: float | None = 2.0, gateway_limit: float | None = 2.0, cores: int = 2) -> dict:
    containers = {f"m{i}": {"samples": 10, "cpu_pct_mean": cpu, "cpu_limit_cores": replica_limit,
                            "service": "model", "cpu_interval": "measurement window"}
                  for i, cpu in enumerate(replicas, start=1)}
    if gateway is not None:
        containers["loadgrid-cpu-gateway-1"] = {"samples": 10, "cpu_pct_mean": gateway, "service": "gateway",
                                                "cpu_limit_cores": gateway_limit, "cpu_interval": "measurement window"}
    out = {"containers": containers, "gpus": {}}
    if host is not None:
        out["host"] = {"cores": cores, "cpu_pct_mean": host, "cpu_pct_max": host, "samples": 10,
                       "interval": "measurement window"}
    return out


def record(models: int = 2, rps: float = 60.0, *, tel: dict | None = None, locust_cpu: float = 30.0,
           **kwargs) -> RunRecord:
    r = run("cpu", models, 16, 4, rps, 70.0, 120.0,
            generator={"processes": 1, "cores": 1, "cpu_pct_mean": locust_cpu, "samples": 10}, **kwargs)
    r.telemetry = telemetry(replicas=(50.0,) * models) if tel is None else tel
    return r


def kind(r: RunRecord) -> str:
    return bottleneck.diagnose(r).kind


def test_nothing_near_a_limit_is_none_found_and_lists_every_check():
    d = bottleneck.diagnose(record())
    assert d.kind == "none found"
    assert "replicas 100%, gateway 20%, Locust 30%" in d.detail
    checked = " | ".join(d.checked)
    for word in ("replicas whole", "generator", "host CPU 40% of 2 cores", "replicas' CPU 100%", "gateway"):
        assert word in checked


def test_host_all_cores_busy():
    r = record(tel=telemetry(host=97.0, replicas=(60.0, 60.0), gateway=30.0), locust_cpu=45.0)
    d = bottleneck.diagnose(r)
    assert d.kind == "host"
    assert d.detail == ("host CPU 97% of 2 cores over the measurement window (replicas 120%, gateway 30%, "
                           "Locust 45%; 100% = one core)")


def test_replicas_at_their_cpu_limit():
    r = record(tel=telemetry(host=60.0, replicas=(95.0, 92.0), replica_limit=1.0, cores=4))
    d = bottleneck.diagnose(r)
    assert d.kind == "replicas"
    assert "187% (95%, 92%), 93.5% of the 2 cores they may use (limits 1+1)" in d.detail


def test_replicas_without_a_limit_are_judged_against_the_hosts_cores():
    # two replicas without a limit may use 2+2 cores, but together no more than the host's 4
    r = record(tel=telemetry(host=70.0, replicas=(170.0, 170.0), replica_limit=4.0, cores=4))
    assert kind(r) == "replicas"
    r = record(tel=telemetry(host=70.0, replicas=(100.0, 100.0), replica_limit=4.0, cores=4))
    assert kind(r) == "none found"


def test_a_replica_is_at_its_limit_at_its_inference_threads():
    # The bundled service reports cpu_threads (its inference threads) in /health: one thread at 95% of a core
    # is that replica's limit even with no container limit on a 2-core host.
    r = record(models=1, tel=telemetry(host=60.0, replicas=(95.0,), replica_limit=2.0))
    assert kind(r) == "none found"
    r.stack.replicas = [store.ReplicaReport("c1", "m1", "running", "healthy", cpu_threads=1)]
    d = bottleneck.diagnose(r)
    assert d.kind == "replicas"
    assert "95% of the 1 cores they may use (limits 1, inference threads included)" in d.detail


def test_gateway_at_its_cpu_limit():
    r = record(tel=telemetry(host=60.0, replicas=(30.0, 30.0), gateway=92.0, gateway_limit=1.0, cores=4))
    d = bottleneck.diagnose(r)
    assert d.kind == "gateway" and "92%, 92% of the 1 cores it may use" in d.detail
    # just under a threshold reads as under it, not rounded up to it
    d = bottleneck.diagnose(record(tel=telemetry(host=84.9)))
    assert d.kind == "none found" and "host CPU 84.9% of 2 cores over the measurement window (busy at 85%)" in \
        d.checked


def test_generator_client_bound_and_lag():
    r = record(client_bound=True, reasons=["client-bound: Locust used 85% of its 1 core(s) (limit 60%), ..."],
               locust_cpu=85.0)
    d = bottleneck.diagnose(r)
    assert d.kind == "generator" and "Locust CPU 85% of its 1 core(s)" in d.detail
    assert "client-bound: Locust used 85%" in d.detail
    # lag recorded (by the generator's lag sampler): named in the detail, and material lag alone is enough
    r = record()
    r.load.generator.lag_ms = GeneratorLag(p50=1.0, p99=12.0, max=30.0, samples=500, interval_ms=20)
    d = bottleneck.diagnose(r)
    assert d.kind == "generator" and "lag p99 12 ms against a p50 of 70 ms" in d.detail
    r.load.generator.lag_ms.p99 = 0.5  # under the floor and 5% of the p50: not the limit
    assert kind(r) == "none found"
    assert any("lag p99 0.5 ms" in c for c in bottleneck.diagnose(r).checked)


def test_generator_without_lag_recorded_reads_defensively():
    r = record()
    r.load.generator = {}
    d = bottleneck.diagnose(r)
    assert d.kind == "none found" and any("lag not recorded" in c for c in d.checked)


def test_failing_replica_from_incidents_and_from_verdict_reasons():
    r = record(reasons=["replica m2 died during the run (exit code 137, OOM-killed)"])
    r.incidents = [Incident("c2", "m2", "died", 1.0, 137, True)]
    d = bottleneck.diagnose(r)
    assert d.kind == "failing replica"
    assert d.detail == "replica m2 died during the run (exit code 137, OOM-killed)"
    r = record(reasons=["1 of 2 replicas running and healthy at the end of the run"])
    assert kind(r) == "failing replica"
    # about replicas, but not a failing one
    r = record(reasons=["the stack served 900 requests loadgrid did not send: another client is loading it "
                        "(replicas' counters 4500, Locust sent 3600 over the whole run; tolerance 5% + 10)",
                        "replica m1 ran on CPUExecutionProvider, not on the GPU"])
    assert kind(r) == "none found"


def test_precedence_failing_replica_then_generator_then_host_then_replicas_then_gateway():
    busy = telemetry(host=97.0, replicas=(190.0, 190.0), gateway=195.0)
    everything = record(tel=busy, client_bound=True, reasons=["client-bound: ...",
                                                               "replica m1 restarted during the run (exit code 1)"])
    assert kind(everything) == "failing replica"
    assert kind(record(tel=busy, client_bound=True, reasons=["client-bound: ..."])) == "generator"
    assert kind(record(tel=busy)) == "host"
    assert kind(record(tel=telemetry(host=80.0, replicas=(95.0, 95.0), gateway=95.0, replica_limit=1.0,
                                     gateway_limit=1.0, cores=4))) == "replicas"
    assert kind(record(tel=telemetry(host=80.0, replicas=(50.0, 50.0), gateway=95.0, replica_limit=1.0,
                                     gateway_limit=1.0, cores=4))) == "gateway"
    assert bottleneck.KINDS[:5] == ("failing replica", "generator", "host", "replicas", "gateway")


def test_unknown_says_what_is_missing():
    # a record from before host CPU and CPU limits were recorded
    old = record(tel={"containers": {"m1": {"cpu_pct_mean": 90.0}, "m2": {"cpu_pct_mean": 90.0}}, "gpus": {}})
    d = bottleneck.diagnose(old)
    assert d.kind == "unknown"
    assert "host CPU (not recorded)" in d.detail and "replicas' CPU limit" in d.detail
    # target mode: no stack watched
    target = record(tel={})
    target.stack.replicas, target.target = [], "http://10.0.0.5:8000/predict"
    d = bottleneck.diagnose(target)
    assert d.kind == "unknown" and "target mode: the endpoint's machine is not watched" in d.detail
    # no measurement at all
    failed = run("cpu", 2, 16, 4, None, status="failed", error="stack not ready: port taken")
    d = bottleneck.diagnose(failed)
    assert d.kind == "unknown" and "stack not ready: port taken" in d.detail
    # what was found still wins over what is missing
    busy = record(tel=telemetry(host=99.0, replica_limit=None))
    assert kind(busy) == "host"


def test_stored_in_the_record_and_an_old_record_without_it_still_loads(tmp_path):
    r = record(tel=telemetry(host=97.0))
    r.bottleneck = bottleneck.diagnose(r)
    path = tmp_path / "cpu" / "2_16_4.json"
    store.write(r, path)
    assert store.load(path).bottleneck.kind == "host"
    data = json.loads(path.read_text())
    del data["bottleneck"]
    path.write_text(json.dumps(data))
    old = store.load(path)
    assert old.bottleneck is None  # schema 2: an absent sub-record is None (schema 1 wrote {})
    assert bottleneck.of(old).kind == "host"  # diagnosed from its stored telemetry


def host_limited_grid() -> list[RunRecord]:
    """1 replica: 40 req/s, host 70%; 2 replicas: 60.8 req/s (1.52x) with all of the 2 cores busy."""
    one = record(models=1, rps=40.0, tel=telemetry(host=70.0, replicas=(100.0,), gateway=15.0))
    two = record(models=2, rps=60.8, tel=telemetry(host=97.0, replicas=(60.0, 60.0), gateway=30.0), locust_cpu=45.0)
    return [one, two]


def test_conclusions_say_when_the_scaling_figure_is_a_host_limit():
    texts = [c.text for c in analysis.conclusions(host_limited_grid(), 500.0)]
    scaling = next(t for t in texts if "the throughput of 1" in t)
    assert "2 replicas give 1.52x the throughput of 1" in scaling
    assert ("but the host's cores were the limit at 2 replicas (host CPU 97% of 2 cores over the measurement "
            "window, cpu/2_16_4): this is the machine's ceiling, not the stack's scaling") in scaling


def test_conclusions_say_nothing_extra_without_a_host_limit():
    grid = host_limited_grid()
    grid[1].telemetry = telemetry(host=60.0, replicas=(60.0, 60.0))
    scaling = next(c.text for c in analysis.conclusions(grid, 500.0) if "the throughput of 1" in c.text)
    assert "ceiling" not in scaling


def test_summary_csv_has_the_bottleneck_columns():
    rows = list(csv.DictReader(io.StringIO(report.summary_csv(host_limited_grid()))))
    assert [r["bottleneck"] for r in rows] == ["none found", "host"]
    assert rows[1]["bottleneck_detail"].startswith("host CPU 97% of 2 cores")


def test_run_table_and_run_page_show_it():
    grid = host_limited_grid()
    page = report.index_html(grid)
    assert "<th>bottleneck</th>" in page or ">bottleneck</th>" in page
    assert 'title="host CPU 97% of 2 cores' in page
    section = run_page.section(grid[1], None)
    assert "Bottleneck: host" in section and "host CPU 97% of 2 cores" in section
    assert "the machine's ceiling, not the stack's" in section
    # the host's CPU beside the containers', in the same unit (100% = one core), and each container's limit
    series = {"containers": {"m1": [(1.0, 60.0, 2**20), (2.0, 60.0, 2**20)]},
              "host": [(0.0, 1.0, 96.0), (1.0, 2.0, 98.0)]}
    section = run_page.section(grid[1], series)
    assert "host, all 2 cores" in section and "CPU limit, cores</th>" in section
    assert "97% of its 2 cores on average, 97% at most, over the measurement window" in section


@pytest.mark.parametrize("kind_name", bottleneck.KINDS)
def test_every_kind_is_explained_in_the_readme(project_root, kind_name):
    text = (project_root / "README.md").read_text()
    assert f"**{kind_name}**" in text


@pytest.mark.docker
def test_a_real_run_records_host_cpu_container_limits_and_its_bottleneck(tmp_path):
    """One 10 s point on the bundled stack (1 replica): the record holds what the diagnosis was made from."""
    import os
    import subprocess
    import sys
    import uuid

    from support.engine import ROOT, free_port, project_resources, write_config

    project = f"lgtest-bn-{uuid.uuid4().hex[:8]}"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, num_models_list="[1]")
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v", "--remove-orphans"],
                       capture_output=True, timeout=180)
    assert project_resources(f"{project}-cpu") == ([], [])
    data = json.loads((output / "cpu" / "1_4_2.json").read_text())
    host = data["telemetry"]["host"]
    assert host["cores"] == os.cpu_count() and host["samples"] >= 3 and host["interval"] == "measurement window"
    assert 0 < host["cpu_pct_mean"] <= 100
    containers = data["telemetry"]["containers"]
    assert {c["service"] for c in containers.values()} == {"model", "gateway"}
    assert all(c["cpu_limit_cores"] == host["cores"] for c in containers.values())  # the bundled stack sets none
    assert all(c["cpu_interval"] == "measurement window" for c in containers.values())
    # the bundled replica reports its one inference thread, so its limit is one core, not the host's
    assert [r["cpu_threads"] for r in data["stack"]["replicas"]] == [1]
    limit = data["bottleneck"]
    assert limit["kind"] in bottleneck.KINDS and limit["kind"] != "unknown", limit
    assert any(c.startswith("host CPU") for c in limit["checked"]), limit
    rows = list(csv.DictReader(io.StringIO((output / "summary.csv").read_text())))
    assert rows[0]["bottleneck"] == limit["kind"] and rows[0]["bottleneck_detail"] == limit["detail"]
    assert ">bottleneck</th>" in (output / "index.html").read_text()
    assert f"Bottleneck: {limit['kind']}" in (output / "cpu" / "1_4_2.html").read_text()
