"""Distributed load (issue 15, section 2): a Locust master run by loadgrid and `loadgrid worker` processes, real
Locust against a local server (no Docker); and the pure parts (worker summaries, reconciliation, verdicts, config)."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest
from support.engine import wait_for
from support.sink_server import SinkServer
from support.target import JPEG, run_locust
from support.workers import free_port, log_text, worker_command, workers

from loadgrid import config as config_mod
from loadgrid import load, plan, validity, worker
from loadgrid.errors import UserError
from loadgrid.plan import RunSpec
from loadgrid.store import Generator, GeneratorWorker, Workers


def _distributed(tmp_path, sink, spec, n_workers, *, started=None, **options):
    port = free_port()
    commands = [worker_command(f"127.0.0.1:{port}", f"w{i}") for i in range(started if started is not None
                                                                            else n_workers)]
    with workers(commands, tmp_path / "logs") as procs:
        result = run_locust(tmp_path, sink.url, spec, JPEG, workers=n_workers, master_port=port, **options)
        codes = [p.wait(timeout=40) for p in procs]
    return result, codes


def test_two_workers_share_the_users_and_the_master_reconciles_with_their_sum(tmp_path):
    with SinkServer(delay_s=0.005) as sink:
        result, codes = _distributed(tmp_path, sink, RunSpec("target", 1, 8, 8.0, 6, 1), 2, worker_wait_s=30)
    assert result.error is None, (result.error, log_text(tmp_path / "logs"))
    assert codes == [0, 0]
    gen = result.generator
    assert gen.mode == "distributed"
    assert sorted(w.name for w in gen.workers) == ["w0", "w1"]
    assert [w.users for w in gen.workers] == [4, 4]  # Locust's dispatcher: 8 users over 2 workers
    assert all(w.requests > 100 and w.cpu_pct_mean is not None and w.lag_samples for w in gen.workers)
    # One machine, one clock: the offset the master measured is within half the round trip (plus a margin).
    assert all(w.round_trip_ms is not None and abs(w.clock_offset_ms) <= w.round_trip_ms / 2 + 2
               for w in gen.workers), [(w.clock_offset_ms, w.round_trip_ms) for w in gen.workers]
    dist = gen.distributed
    assert (dist.expected, dist.joined, dist.reported, dist.missing) == (2, 2, 2, [])
    # Both count the same requests over the same window: the master's total is the sum of the workers' counts.
    assert dist.master_requests == result.requests == sum(w.requests for w in gen.workers) == dist.workers_requests
    assert dist.reconciled
    # The ramp-up's requests are outside the window, and counted in the whole run: what the server saw.
    assert sink.count >= result.requests
    assert result.whole_run.requests == sink.count
    verdict = validity.distributed_problems(gen)
    assert verdict == []


def test_open_loop_rate_is_split_across_workers_and_counted_from_sends(tmp_path):
    # One open-loop user per worker (plan.generator_processes): each sends half the rate.
    spec = RunSpec("target", 1, 2, 2.0, 8, 1, arrival_rate=40.0)
    with SinkServer(delay_s=0.005) as sink:
        result, codes = _distributed(tmp_path, sink, spec, 2, worker_wait_s=30)
    assert result.error is None, (result.error, log_text(tmp_path / "logs"))
    ol = result.open_loop
    assert ol.processes == 2 and ol.achieved_from == "send times"
    assert ol.achieved_rate == pytest.approx(40.0, rel=0.1)
    counts = sorted(w.requests for w in result.generator.workers)
    assert len(counts) == 2 and counts[0] == pytest.approx(counts[1], rel=0.2)  # about half each


def test_too_few_workers_fail_the_run_saying_how_many_joined(tmp_path):
    with SinkServer() as sink:
        result, _ = _distributed(tmp_path, sink, RunSpec("target", 1, 2, 2.0, 3, 1), 2, started=1, worker_wait_s=3)
    assert result.error is not None
    assert result.error.startswith("1 of 2 Locust workers joined within 3s (worker_wait)")
    assert sink.count == 0  # the master never started the test


def test_a_worker_killed_mid_run_makes_the_run_invalid(tmp_path):
    """The killed worker's counts never reach the master: the totals no longer reconcile (or its parts are
    missing), so the run is not reported as valid."""
    port = free_port()
    spec = RunSpec("target", 1, 4, 4.0, 8, 1)
    with SinkServer(delay_s=0.005) as sink, \
            workers([worker_command(f"127.0.0.1:{port}", f"w{i}") for i in range(2)], tmp_path / "logs") as procs:
        out = {}
        thread = threading.Thread(target=lambda: out.update(result=run_locust(
            tmp_path, sink.url, spec, JPEG, workers=2, master_port=port, worker_wait_s=30)))
        thread.start()
        wait_for(lambda: sink.count > 300, 40, "the run's requests")
        locust_child = wait_for(lambda: psutil.Process(procs[0].pid).children(), 10, "the Locust worker")[0]
        locust_child.kill()
        thread.join(timeout=90)
    result = out["result"]
    reasons = validity.distributed_problems(result.generator)
    assert reasons, result.generator.distributed
    assert any("statistics were lost" in r or "sent no final counts" in r for r in reasons)


def test_locust_command_for_a_master_runs_no_processes_of_its_own():
    opts = load.LoadOptions(processes=3, workers=2, master_bind="*", master_port=5600, worker_wait_s=12)
    files = load.RunFiles(Path("/tmp/x"), "1_8_8")
    cmd = load.locust_command(RunSpec("cpu", 1, 8, 8.0, 10, 1), "http://h:1", Path("locustfile.py"), files, opts)
    assert "--processes" not in cmd
    for flag, value in (("--master-bind-host", "*"), ("--master-bind-port", "5600"), ("--expect-workers", "2"),
                        ("--expect-workers-max-wait", "12")):
        assert cmd[cmd.index(flag) + 1] == value
    assert "--master" in cmd and str(load.DIST_PLUGIN) in cmd[cmd.index("-f") + 1]


def _part(worker_id, count, cpu_s=1.0, wall=10.0, lag_hist=None, lag_count=500, start=100.0):
    return {"worker_id": worker_id, "count": count, "failures": 0, "window_start_at": start, "stopped_at": start + wall,
            "where": {"hostname": "h", "name": worker_id, "pid": 7, "cores": 2, "container": ""},
            "cpu": {"seconds": cpu_s, "wall_s": wall, "per_s": {str(int(start) + i): 0.1 * i for i in range(12)}},
            "lag": {"count": lag_count, "max_ms": 30.0, "hist": lag_hist or {str(load.EXACT_STEP and 0): lag_count}}}


def test_worker_summaries_cpu_over_the_window_and_lag_over_the_limit():
    import math

    late = round(math.log(20.0) / math.log(load.EXACT_STEP))  # 20 ms wake-ups
    on_time = round(math.log(1.0) / math.log(load.EXACT_STEP))
    parts = [_part("a", 1000, cpu_s=2.0), _part("b", 900, lag_hist={str(late): 50, str(on_time): 450})]
    summary = load.worker_summaries(parts, [{"worker_id": "a", "users_started": 3}], lag_limit=8.0)
    a, b = summary
    assert (a.name, a.users, a.requests, a.cpu_pct_mean) == ("a", 3, 1000, 20.0)
    assert a.cpu_pct_max == 90.0  # the busiest whole second inside [100, 110]: per_s[109] = 0.9
    assert b.lag_over_limit == 50 and b.lag_p99_ms == pytest.approx(20.0, rel=0.001)
    assert load.worker_summaries([{"count": 5}], [], 8.0) == []  # a single local process is not a worker


def test_each_worker_is_judged_on_its_own():
    calm = GeneratorWorker(name="calm", cpu_pct_mean=20.0, lag_p99_ms=1.0, lag_samples=500, lag_over_limit=0)
    busy = GeneratorWorker(name="busy", pid=9, cpu_pct_mean=75.0, lag_p99_ms=1.0, lag_samples=500, lag_over_limit=0)
    starved = GeneratorWorker(name="starved", cpu_pct_mean=5.0, lag_p99_ms=40.0, lag_max_ms=60.0, lag_samples=500,
                              lag_over_limit=30)
    gen = Generator(mode="distributed", cpu_pct_mean=3.0, cores=1, workers=[calm, busy])
    bound, why = validity.generator_bound(gen, 60.0, 50.0)
    assert bound and "worker busy (pid 9) used 75%" in why
    bound, why = validity.generator_bound(Generator(mode="distributed", workers=[calm, starved]), 60.0, 50.0)
    assert bound and "worker starved" in why and "30 of 500" in why
    assert validity.generator_bound(Generator(mode="distributed", workers=[calm]), 60.0, 50.0) == (False, "")
    # Two workers pinned to one core, 50% each: neither is over the limit alone, the core is full.
    pinned = [GeneratorWorker(name=f"p{i}", hostname="vm", cores=1, cpu_pct_mean=50.0) for i in range(2)]
    bound, why = validity.generator_bound(Generator(mode="distributed", workers=pinned), 60.0, 50.0)
    assert bound and "the 2 Locust workers on vm together used 100% of the 1 core(s)" in why
    spread = [GeneratorWorker(name=f"s{i}", hostname=f"m{i}", cores=1, cpu_pct_mean=50.0) for i in range(2)]
    assert validity.generator_bound(Generator(mode="distributed", workers=spread), 60.0, 50.0) == (False, "")
    master = Generator(mode="distributed", cpu_pct_mean=80.0, cores=1, workers=[calm])
    assert "master used 80%" in validity.generator_bound(master, 60.0, 50.0)[1]


def test_reconciliation_tolerance_and_the_reasons_it_gives():
    assert load.reconcile_tolerance(100) == 5 and load.reconcile_tolerance(10_000) == 20
    lost = Generator(distributed=Workers(master_requests=1000, workers_requests=1100, tolerance=5, reconciled=False))
    assert validity.distributed_problems(lost) == [
        "the master counted 1000 requests in the window, its workers 1100 (tolerance 5): statistics were lost on "
        "the way"]
    missing = Generator(distributed=Workers(missing=["vm_1"], reconciled=True))
    assert "1 Locust worker(s) sent no final counts" in validity.distributed_problems(missing)[0]
    assert validity.distributed_problems(Generator()) == []


def test_master_address_parsing():
    assert worker.parse_master("10.0.0.5") == worker.Master("10.0.0.5", 5557)
    assert worker.parse_master("host:6000") == worker.Master("host", 6000)
    assert worker.parse_master("[::1]:7000") == worker.Master("::1", 7000)
    for bad in ("", "h:0", "h:x", "h:70000"):
        with pytest.raises(worker.WorkerError, match="--master"):
            worker.parse_master(bad)


def test_worker_refuses_another_loadgrid_or_locust():
    import importlib.metadata

    mine = importlib.metadata.version("locust")
    with pytest.raises(worker.WorkerError, match="loadgrid .* the master 9.9"):
        worker.check_versions({"loadgrid_version": "9.9", "locust_version": mine})
    with pytest.raises(worker.WorkerError, match="pip install locust==0.1"):
        worker.check_versions({"loadgrid_version": worker.__version__, "locust_version": "0.1"})
    worker.check_versions({"loadgrid_version": worker.__version__, "locust_version": mine})


def test_payload_from_the_master_is_written_under_plain_names_only(tmp_path):
    folder = worker.unpack_payload({"name": "imgs", "folder": True, "files": {"a.jpg": b"1", "b.jpg": b"22"}},
                                   tmp_path)
    assert sorted(p.name for p in Path(folder).iterdir()) == ["a.jpg", "b.jpg"]
    (tmp_path / "two").mkdir()
    one = worker.unpack_payload({"name": "x.json", "folder": False, "files": {"x.json": b"{}"}}, tmp_path / "two")
    assert Path(one).read_bytes() == b"{}"
    assert worker.unpack_payload({"url": "http://h/p.json"}, tmp_path) == "http://h/p.json"
    for bad in ({"name": "..", "folder": True, "files": {"a": b""}}, {"name": "p", "files": {"../evil": b""}}):
        (tmp_path / "bad").mkdir(exist_ok=True)
        with pytest.raises(worker.WorkerError, match="plain name"):
            worker.unpack_payload(bad, tmp_path / "bad")
    assert not (tmp_path / "evil").exists()


def test_worker_env_takes_the_masters_settings_but_not_its_file_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGRID_LATENCY_FILE", "/elsewhere/x")
    env = worker.worker_env({"env": {"LOADGRID_USERS": "8", "PATH": "/evil"}, "payload": {"url": "http://h/p"}},
                            tmp_path, name="n1", target="http://10.0.0.1:80")
    assert env["LOADGRID_USERS"] == "8" and env["PATH"] != "/evil"
    assert "LOADGRID_LATENCY_FILE" not in env
    assert (env["TMPDIR"], env["LOADGRID_WORKER_NAME"], env["LOADGRID_WORKER_TARGET"]) == (
        str(tmp_path), "n1", "http://10.0.0.1:80")


def _config(tmp_path, **extra):
    raw = {"target": "http://127.0.0.1:9/p", "num_users_list": [4], "run_time": "5s", "payload": str(JPEG), **extra}
    return config_mod.from_mapping(raw, tmp_path)


def test_config_keys_for_workers(tmp_path):
    cfg = _config(tmp_path, expect_workers=3, worker_wait="20s", master_port=6001)
    assert (cfg.expect_workers, cfg.worker_wait_s, cfg.master_port, cfg.load_workers) == (3, 20, 6001, 0)
    assert plan.generator_processes(cfg, cpus=16) == 3  # one open-loop user per worker
    with pytest.raises(UserError, match="load_workers: needs a compose stack"):
        _config(tmp_path, load_workers=2)
    with pytest.raises(UserError, match="processes: not used with load_workers/expect_workers"):
        _config(tmp_path, expect_workers=2, processes=2)
    with pytest.raises(UserError, match="expect_workers: .*0 or more"):
        _config(tmp_path, expect_workers=-1)
    with pytest.raises(UserError, match="master_port: .*1 to 65535"):
        _config(tmp_path, master_port=0)


def test_the_run_page_lists_every_worker_and_the_reconciliation(tmp_path):
    from support.records import record

    from loadgrid import run_page, store

    gen = Generator(mode="distributed", cpu_pct_mean=0.5, cpu_pct_max=3.0, cores=1, processes=1, samples=10,
                    cpu_series=[[100.0, 0.5], [101.0, 3.0]],
                    workers=[GeneratorWorker(name="rack<2>", hostname="m2", container="abcdef123456789", users=4,
                                             requests=1280, failures=0, cpu_pct_mean=1.7, cpu_pct_max=1.8,
                                             lag_p99_ms=1.32, lag_over_limit=0)],
                    distributed=Workers(expected=1, joined=1, reported=1, master_requests=1280, workers_requests=1280,
                                        tolerance=5, reconciled=True))
    rec = record()
    rec.load.generator = gen
    text = run_page.section(rec, None)
    assert "a master here (it runs no users) with 1 worker" in text
    assert "rack&lt;2&gt;" in text and "abcdef123456" in text and "1280" in text  # escaped, container id cut
    assert "the workers 1280 (tolerance 5): reconciled." in text
    assert "Locust master CPU" in text  # the chart says whose CPU it is: the master's, not the workers'
    # And the record keeps them through a write and a read (the untrusted reader checks their types).
    path = tmp_path / "cpu" / "2_50_10.json"
    path.parent.mkdir()
    store.write(rec, path)
    back = store.load(path).load.generator
    assert back.workers[0].name == "rack<2>" and back.distributed.reconciled is True


def test_dry_run_says_where_the_load_comes_from_and_a_taken_master_port_stops_before_anything(tmp_path):
    import socket

    from loadgrid import preflight

    cfg = _config(tmp_path, expect_workers=2, master_port=free_port())
    text = plan.describe(plan.build(cfg, cpus=2), cfg)
    assert f"2 joined by hand (loadgrid worker --master HOST:{cfg.master_port})" in text
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", cfg.master_port))
        taken.listen()
        with pytest.raises(UserError, match=f"master_port: port {cfg.master_port} is already in use"):
            preflight.preflight(cfg, plan.build(cfg, cpus=2))


def test_a_workers_times_are_moved_onto_the_masters_clock():
    part = {"worker_id": "w", "window_start_at": 102.0, "stopped_at": 112.0, "bin_s": 0.25, "bins": {"440": {"1": 3}},
            "lag": {"per_s": {"105": 1.0}}, "cpu": {"per_s": {"105": 0.5}, "seconds": 1.0}}
    moved, = load.to_master_clock([part], {"w": {"offset_s": 2.0, "round_trip_s": 0.001}})
    assert (moved["window_start_at"], moved["stopped_at"]) == (100.0, 110.0)
    assert moved["bins"] == {"432": {"1": 3}} and moved["lag"]["per_s"] == {"103": 1.0}
    assert moved["cpu"] == {"per_s": {"103": 0.5}, "seconds": 1.0}
    assert part["stopped_at"] == 112.0  # the part read is left as it was
    untouched = {"worker_id": "x", "stopped_at": 5.0}
    assert load.to_master_clock([untouched], {"w": {"offset_s": 2.0}}) == [untouched]


def test_requests_per_user_with_workers_sends_exactly_users_times_n(tmp_path):
    with SinkServer(delay_s=0.002) as sink:
        result, codes = _distributed(tmp_path, sink, RunSpec("target", 1, 4, 4.0, 30, 1), 2, worker_wait_s=30,
                                     requests_per_user=25)
    assert result.error is None, (result.error, log_text(tmp_path / "logs"))
    assert result.stop.by == "requests" and result.stop.requests_sent == 100
    assert result.requests == 100 == sink.count
    assert sorted(w.requests for w in result.generator.workers) == [50, 50]
    assert all(w.round_trip_ms is not None for w in result.generator.workers)  # clocks measured, nothing reset
