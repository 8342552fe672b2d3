"""The answer (answer.py) and the one capacity (sizing.py), from stored records: the page, answer.json, the console."""

from __future__ import annotations

import json
import math
import re

import pytest
from support import answer_fixtures as afx
from support import report_fixtures as fx

from loadgrid import analysis, answer, cli, compare, report, sizing, store, usl


def stored_folder(tmp_path, records, expected_rps=None, cost=None, target=500):
    folder = fx.write(tmp_path / "out", records)
    session = {"latency_target_ms": target, "expected_rps": expected_rps, "cost_per_replica": cost}
    (folder / "session.json").write_text(json.dumps(session))
    return folder


def render(folder):
    assert cli.main(["report", str(folder)]) == 0  # the command that re-renders from stored records only
    return (folder / "index.html").read_text(), json.loads((folder / "answer.json").read_text())


def section(page: str, ident: str) -> str:
    start = page.index(f'id="{ident}"')
    return page[start:page.index("</section>", start)] if ident == "answer" else page[start:start + 6000]


# --- the one capacity ----------------------------------------------------------------------------------------

def test_open_loop_capacity_wins_over_the_closed_loop_peak(tmp_path):
    records = store.load_all(fx.write(tmp_path / "out", afx.issue_grid()))
    (cap,) = sizing.stack_capacities(records, 500)
    # 139 req/s closed loop is not the capacity; 132 (the highest probe that held) is, with its kind
    assert (cap.rps, cap.kind, cap.run_ids, cap.p95_ms) == (132, sizing.OPEN, ("cpu/1_cap_r132",), 310)
    assert not cap.at_least  # higher rates failed
    assert "132 req/s (open loop: offered 132 req/s, p95 310 ms)" in cap.text()


def test_open_loop_rules_intended_p95_throughput_share_validity(tmp_path):
    base = [afx.probe("cpu", 1, 100, 300.0)]
    cases = {  # the run at 120 req/s must not raise the capacity above 100
        "intended p95 over target": afx.probe("cpu", 1, 120, 620.0, locust_p95=450.0),
        "under 98% answered": afx.probe("cpu", 1, 120, 300.0, 117.0),
        "invalid": afx.probe("cpu", 1, 120, 300.0, failures=5, reasons=["5 requests failed"]),
    }
    for why, run in cases.items():
        records = store.load_all(fx.write(tmp_path / why.replace(" ", "_"), [*base, run]))
        (cap,) = sizing.stack_capacities(records, 500)
        assert cap.rps == 100 and cap.kind == sizing.OPEN, why
    records = store.load_all(fx.write(tmp_path / "ok", [*base, afx.probe("cpu", 1, 120, 300.0, 118.0)]))
    assert sizing.stack_capacities(records, 500)[0].rps == 120  # 118 >= 98% of 120: held


def test_closed_loop_only_is_labelled_lower_confidence_with_a_repeat_interval(tmp_path):
    records = store.load_all(fx.write(tmp_path / "out", fx.repeated_grid()))
    caps = sizing.by_stack(records, 500)
    one = caps[("cpu", 1)]
    assert one.kind == sizing.CLOSED and one.label == "closed loop, lower confidence"
    assert one.rps == 40 and one.run_ids == ("cpu/1_16_4", "cpu/1_16_4_r2", "cpu/1_16_4_r3")
    assert one.interval.low == one.interval.high == 40  # three identical repeats
    repeats = [afx.probe("cpu", 1, 130, 300.0, 129.0), afx.probe("cpu", 1, 130, 300.0, 131.0, repeat=2)]
    cap = sizing.stack_capacities(store.load_all(fx.write(tmp_path / "rep", repeats)), 500)[0]
    est = analysis.estimate([129.0, 131.0])
    assert cap.rps == 130 and (cap.interval.low, cap.interval.high) == (est.low, est.high)
    assert "95% CI" in cap.text() and cap.at_least  # no higher rate was tried


def test_conclusions_capacity_table_and_answer_give_one_figure(tmp_path):
    page, ans = render(stored_folder(tmp_path, afx.issue_grid(), expected_rps=100))
    conclusions = page[page.index('id="conclusions"'):page.index('id="throughput"')]
    assert "The highest capacity with p95 under 500 ms: cpu 1 replica, 132 req/s (open loop" in conclusions
    assert "139 req/s" not in conclusions  # the closed-loop peak is no longer a second capacity
    table = page[page.index('<h2 id="capacity">'):page.index('id="runs"')]
    assert re.search(r"<td data-v=\"132\.0\">132</td><td class=\"l\">open loop</td>", table)
    assert ans["variants"][0]["holds"]["capacity_rps"] == 132


# --- the page from stored records: one and two variants, with and without expected load and costs ------------

def test_one_variant_grid_and_search_with_expected_load(tmp_path):
    page, ans = render(stored_folder(tmp_path, afx.issue_grid(), expected_rps=100))
    assert page.index('id="answer"') < page.index('id="conclusions"')  # the first section
    (cpu,) = ans["variants"]
    assert cpu["holds"]["replicas"] == 1 and cpu["holds"]["run_ids"] == ["cpu/1_cap_r132"]
    assert cpu["holds"]["kind"] == "open loop" and cpu["extrapolation"] is None and ans["cheapest"] is None
    text = section(page, "answer")
    assert "100 req/s with p95 under 500 ms: 1 CPU replica" in text
    assert 'href="#run-cpu-1_cap_r132"' in text


def test_two_variants_with_costs_pick_the_smallest_size_and_the_cheapest(tmp_path):
    folder = stored_folder(tmp_path, afx.sized(), expected_rps=300, cost={"cpu": 0.10, "gpu": 1.20})
    page, ans = render(folder)
    cpu, gpu = ans["variants"]
    # cpu: 1 and 2 replicas hold 132 and 250 (< 300), 3 holds 340; the closed-loop 262 at 2 does not count
    assert [s["capacity_rps"] for s in cpu["sizes"]] == [132, 250, 340]
    assert cpu["holds"]["replicas"] == 3 and cpu["holds"]["run_ids"] == ["cpu/3_cap_r340"]
    assert gpu["holds"]["replicas"] == 1 and gpu["holds"]["run_ids"] == ["gpu/1_cap_r400"]
    assert cpu["cost"] == pytest.approx(0.30) and gpu["cost"] == pytest.approx(1.20)
    assert ans["cheapest"] == {"variant": "cpu", "replicas": 3, "cost": pytest.approx(0.30), "measured": True,
                               "of": 2}
    text = section(page, "answer")
    assert "300 req/s with p95 under 500 ms: 3 CPU replicas or 1 GPU replica; cheapest: cpu (0.30 vs 1.20)" in text
    # CPU against GPU at the one size run in both: 400 / 132 capacity, p95 at equal users 300 / 300
    (row,) = ans["cpu_vs_gpu"]
    assert row["replicas"] == 1 and row["capacity_ratio"] == pytest.approx(400 / 132, abs=1e-4)
    assert row["p95_ratio"] == pytest.approx(1.0) and row["p95_basis"] == "closed loop, equal users and spawn rate"
    costly_cpu = answer.build(store.load_all(folder), 500, 300, {"cpu": 0.5, "gpu": 1.2})
    assert costly_cpu["cheapest"]["variant"] == "gpu"  # 3 x 0.5 = 1.5 > 1.2


def test_no_measured_size_holds_it_usl_and_linear_marked_not_measured(tmp_path):
    page, ans = render(stored_folder(tmp_path, afx.sized(), expected_rps=1000, cost={"cpu": 0.10, "gpu": 1.20}))
    cpu, gpu = ans["variants"]
    assert cpu["holds"] is None and cpu["largest"]["capacity_rps"] == 340 and cpu["largest"]["replicas"] == 3
    x = cpu["extrapolation"]
    assert x["measured"] is False and x["model"] == "usl" and x["sizes_fitted"] == 3
    f = usl.Fit(x["lam"], x["sigma"], x["kappa"], 0, 3)
    if x["replicas_needed"] is not None:  # the smallest whole size the fit says reaches 1000 req/s
        assert f.x(x["replicas_needed"]) >= 1000 > f.x(x["replicas_needed"] - 1)
        assert x["next_to_measure"] == x["replicas_needed"]
    else:  # the fit peaks below 1000 req/s (at about 6 replicas): measure there to confirm the ceiling
        assert f.peak_x < 1000 and x["next_to_measure"] == round(f.peak_n) > 3
    g = gpu["extrapolation"]  # one gpu size: linear from it, 400 req/s per replica -> 3 replicas
    assert g["model"] == "linear" and g["replicas_needed"] == 3 and g["next_to_measure"] == 3
    assert g["cost"] == pytest.approx(3.6)
    text = section(page, "answer")
    assert text.count("Not measured:") == 2 and "linear from the largest measured size" in text
    assert "Measure 3 replicas next" in text


def test_without_expected_load_the_answer_lists_capacity_and_what_expected_rps_adds(tmp_path):
    page, ans = render(stored_folder(tmp_path, afx.sized()))
    assert ans["expected_rps"] is None and all(e["holds"] is None for e in ans["variants"])
    text = section(page, "answer")
    assert "Set <code>expected_rps</code>" in text and "--expected-rps 300" in text
    assert ans["lines"][0] == ("answer: cpu capacity with p95 under 500 ms: 1 replica 132 req/s (open loop); "
                               "2 replicas 250 req/s (open loop); 3 replicas 340 req/s (open loop) (set expected_rps "
                               "for the size that holds your load)")


def test_answer_json_schema_and_report_rebuilds_it(tmp_path, capsys):
    folder = stored_folder(tmp_path, afx.sized(), expected_rps=300, cost={"cpu": 0.1, "gpu": 1.2})
    _, ans = render(folder)
    assert ans["schema"] == answer.SCHEMA == 1
    assert set(ans) == {"schema", "latency_target_ms", "expected_rps", "cost_per_replica", "variants", "cheapest",
                        "cpu_vs_gpu", "lines"}
    assert set(ans["variants"][0]) == {"variant", "sizes", "largest", "holds", "extrapolation", "cost"}
    out = capsys.readouterr().out.splitlines()
    assert out[-len(ans["lines"]):] == ans["lines"]  # the report command ends with the answer too
    (folder / "answer.json").unlink()
    (folder / "index.html").unlink()
    assert cli.main(["report", str(folder)]) == 0
    assert json.loads((folder / "answer.json").read_text()) == ans


# --- console lines -------------------------------------------------------------------------------------------

def test_console_lines(tmp_path):
    records = store.load_all(fx.write(tmp_path / "out", afx.sized()))
    lines = answer.build(records, 500, 300, {"cpu": 0.1, "gpu": 1.2})["lines"]
    assert lines[0] == ("answer: cpu: 300 req/s with p95 under 500 ms: 3 replicas (cpu/3_cap_r340, capacity 340 req/s "
                        "(open loop)); cost 0.30")
    assert lines[1].startswith("answer: gpu: 300 req/s with p95 under 500 ms: 1 replica (gpu/1_cap_r400")
    assert lines[2] == ("answer: 300 req/s with p95 under 500 ms: 3 CPU replicas or 1 GPU replica; cheapest: cpu "
                        "(0.30 vs 1.20)")
    far = answer.build(records, 500, 1000)["lines"]
    assert "no measured size holds it; largest measured capacity: 3 replicas, 340 req/s (open loop); not measured:" \
        in far[0]
    assert "not measured: linear from the largest size predicts 3 replicas; measure 3 replicas next" in far[1]


# --- the USL fit ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[1, 2, 4, 8, 16], [1, 2, 3], [2, 4, 6, 12]])
def test_usl_fit_recovers_contention_and_coherency(sizes):
    lam, sigma, kappa = 100.0, 0.05, 0.002
    points = [(n, lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))) for n in sizes]
    f = usl.fit(points)
    assert f.lam == pytest.approx(lam, rel=1e-4)
    assert f.sigma == pytest.approx(sigma, rel=1e-3) and f.kappa == pytest.approx(kappa, rel=1e-3)
    assert f.peak_n == pytest.approx(math.sqrt((1 - sigma) / kappa), rel=1e-3)


def test_usl_fit_keeps_sigma_and_kappa_non_negative_and_needs_three_sizes():
    f = usl.fit([(1, 100), (2, 210), (3, 330)])  # better than linear: the law cannot, so σ = κ = 0
    assert f.sigma >= 0 and f.kappa >= 0 and f.sigma + f.kappa < 1e-6
    with pytest.raises(ValueError):
        usl.fit([(1, 100), (2, 180)])


def test_linear_fallback_is_labelled():
    caps = [sizing.StackCapacity("cpu", 2, 500, 180.0, sizing.OPEN, ("cpu/2_cap_r180",), 300, "offered 180")]
    x = answer.extrapolate(caps, 500)
    assert x["model"] == "linear" and x["replicas_needed"] == 6 and x["predicted_rps"] == 540
    assert x["text"].startswith("linear from the largest measured size (2 replicas, 180 req/s, 90 req/s per "
                                "replica; fewer than 3 sizes measured, so no scalability fit, and linear is "
                                "optimistic)")


# --- compare ---------------------------------------------------------------------------------------------

def test_compare_states_the_same_capacity(tmp_path):
    a = stored_folder(tmp_path / "a", afx.issue_grid())
    b = stored_folder(tmp_path / "b", [*afx.issue_grid(), afx.probe("cpu", 1, 140, 320.0)])
    text, code = compare.run(str(a), str(b))
    assert code == 0
    assert ("capacity cpu 1 replica (p95 < 500 ms): A 132 req/s (open loop, cpu/1_cap_r132) → B 140 req/s "
            "(open loop, cpu/1_cap_r140), +6%") in text
    assert report.latency_target(a)[0] == 500
    both = stored_folder(tmp_path / "both", afx.sized())
    text, _ = compare.run(f"{both}:cpu", f"{both}:gpu")  # two variants of one folder: matched by replicas
    assert ("capacity 1 replica (p95 < 500 ms): A 132 req/s (open loop, cpu/1_cap_r132) → B 400 req/s (open loop, "
            "gpu/1_cap_r400), +203%") in text


# --- end to end: a grid and a capacity search against a local server, the answer said last ------------------

def test_orchestrate_ends_with_the_answer_and_it_matches_the_capacity_search(tmp_path):
    from support.sink_server import SinkServer
    from support.target import JPEG, orchestrate

    # one request at a time in 20 ms: 50 req/s at most
    with SinkServer(delay_s=0.02, serial=True) as server:
        (tmp_path / "config.yaml").write_text(
            f"target: {server.url}/predict\npayload: {JPEG}\nrun_time: 2s\nnum_users_list: [2]\n"
            f"latency_target_ms: 250\ncapacity_search: {{start: 10, max: 40, steps: 3, run_time: 4s}}\n"
            f"client_cpu_limit_pct: 100\nexpected_rps: 5\n")
        proc = orchestrate(["--config", "config.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "reports"
    ans = json.loads((out / "answer.json").read_text())
    searched = json.loads((out / "capacity.json").read_text())["stacks"][0]
    (target,) = ans["variants"]
    assert target["holds"]["capacity_rps"] == searched["capacity_rps"] and target["holds"]["kind"] == "open loop"
    assert target["holds"]["run_ids"] == [searched["run_id"]]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == ans["lines"][-1] and last.startswith("answer: target: 5 req/s with p95 under 250 ms: the "
                                                        f"endpoint holds it ({searched['run_id']}, capacity ")
    page = (out / "index.html").read_text()
    assert page.index('id="answer"') < page.index('id="conclusions"')


# --- config ------------------------------------------------------------------------------------------------

CONFIG = ("num_models_list: [1]\nnum_users_list: [4]\nspawn_rate_list: [4]\nrun_time: 20s\noutput_dir: out\n"
          "host: http://localhost:8080\nvariants: [cpu, gpu]\n")


@pytest.fixture
def project(tmp_path):
    for name in ("docker-compose.yml", "docker-compose.gpu.yml"):
        (tmp_path / name).write_text("services: {model: {}, gateway: {}}\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8")
    return tmp_path


def dry_run(project, text, capsys, *flags):
    (project / "config.yaml").write_text(CONFIG + text)
    code = cli.main(["--config", str(project / "config.yaml"), "--dry-run", *flags])
    captured = capsys.readouterr()
    return code, captured.err.splitlines()


def test_expected_load_and_costs_are_read_from_config_and_flags(project, capsys):
    from loadgrid import config

    (project / "config.yaml").write_text(CONFIG + "expected_rps: 300\ncost_per_replica: {cpu: 0.10, gpu: 1.20}\n")
    cfg = config.load(project / "config.yaml")
    assert cfg.expected_rps == 300 and cfg.cost_per_replica == {"cpu": 0.10, "gpu": 1.20}
    args = cli.parse_args(["--config", str(project / "config.yaml"), "--expected-rps", "50",
                           "--cost-per-replica", "{cpu: 1, gpu: 2}"])
    cfg = cli.load_config(args)
    assert cfg.expected_rps == 50 and cfg.cost_per_replica == {"cpu": 1.0, "gpu": 2.0}


@pytest.mark.parametrize("text, error", [
    ("expected_rps: 0\n", "config: expected_rps: got 0; expected a number above zero"),
    ("expected_rps: lots\n", "config: expected_rps: got 'lots'; expected a number above zero"),
    ("cost_per_replica: 3\n", "config: cost_per_replica: got 3; expected a mapping of variant to the cost of one "
                              "replica, e.g. {cpu: 0.10, gpu: 1.20}"),
    ("cost_per_replica: {tpu: 1}\n", "config: cost_per_replica: 'tpu' is not a variant that is run; use one of "
                                     "cpu, gpu"),
    ("cost_per_replica: {gpu: -1}\n", "config: cost_per_replica.gpu: got -1; expected a cost of 0 or more (any "
                                      "unit), e.g. 0.10"),
    ("cost_per_replica: {gpu: cheap}\n", "config: cost_per_replica.gpu: got 'cheap'; expected a cost of 0 or more "
                                         "(any unit), e.g. 0.10"),
])
def test_bad_expected_load_or_costs_are_one_line_naming_the_key(project, capsys, text, error):
    code, lines = dry_run(project, text, capsys)
    assert code == 2 and lines == [f"loadgrid: error: {error}"]
    assert not (project / "out").exists()


def test_a_bad_flag_names_the_flag(project, capsys):
    code, lines = dry_run(project, "", capsys, "--expected-rps", "-5")
    assert code == 2 and lines == ["loadgrid: error: --expected-rps: got -5; expected a number above zero"]


def test_costs_for_a_variant_not_run_and_in_target_mode_are_refused(project, capsys):
    (project / "config.yaml").write_text(CONFIG.replace("variants: [cpu, gpu]\n", "") + "cost_per_replica: {gpu: 1}\n")
    assert cli.main(["--config", str(project / "config.yaml"), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == ("loadgrid: error: config: cost_per_replica: 'gpu' is not a variant "
                                               "that is run; use one of cpu")
    (project / "config.yaml").write_text(f"target: http://127.0.0.1:9/predict\npayload: {project / 'images'}\n"
                                         "num_users_list: [1]\nrun_time: 5s\ncost_per_replica: {cpu: 1}\n")
    assert cli.main(["--config", str(project / "config.yaml"), "--dry-run"]) == 2
    assert "config: cost_per_replica: not used with target" in capsys.readouterr().err
