"""`orchestrate.py compare A B [--fail-if-slower PCT]`: the table and the exit codes (0 fine, 1 worse, 2 bad input)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import replace

import pytest
from support import report_fixtures as fx

from loadgrid import cli, compare
from loadgrid.store import LoadReport


def slower(records, factor: float, latency: float = 1.0):
    """The same runs with throughput x factor and latency x latency."""
    out = []
    for r in records:
        if r.load is None:
            out.append(r)
            continue
        lat = {k: v * latency for k, v in r.load.latency_ms.items()}
        load = LoadReport(r.load.locust_exit, r.load.requests, r.load.failures, r.load.rps * factor,
                          r.load.duration_s, lat, r.load.failure_messages)
        out.append(replace(r, load=load))
    return out


@pytest.fixture
def folders(tmp_path):
    base = fx.cpu_only()
    return {
        "a": fx.write(tmp_path / "a", base),
        "same": fx.write(tmp_path / "same", base),
        "slow8": fx.write(tmp_path / "slow8", slower(base, 0.92)),
        "slow20": fx.write(tmp_path / "slow20", slower(base, 0.8)),
        "laggy": fx.write(tmp_path / "laggy", slower(base, 1.0, latency=1.3)),
        "mixed": fx.write(tmp_path / "mixed", fx.small_grid()),
    }


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_same_results_pass_the_gate(folders, capsys):
    code, out, err = run(capsys, folders["a"], folders["same"], "--fail-if-slower", 5)
    assert code == 0 and err == ""
    assert "cpu/1_16_4" in out and "+0%" in out
    assert "B is not worse than A beyond 5% on any common point." in out
    # the invalid run in both folders is listed but not compared
    assert "not compared: A's run is invalid" in out


def test_throughput_drop_beyond_tolerance_fails(folders, capsys):
    code, out, _ = run(capsys, folders["a"], folders["slow20"], "--fail-if-slower", 10)
    assert code == 1
    assert "WORSE: throughput -20%" in out and "on 8 point(s)" in out
    code, out, _ = run(capsys, folders["a"], folders["slow8"], "--fail-if-slower", 10)
    assert code == 0 and "-8%" in out


def test_latency_rise_beyond_tolerance_fails(folders, capsys):
    code, out, _ = run(capsys, folders["a"], folders["laggy"], "--fail-if-slower", 25)
    assert code == 1 and "WORSE: p95 +30%" in out
    assert run(capsys, folders["a"], folders["laggy"], "--fail-if-slower", 35)[0] == 0


def test_without_the_option_it_only_reports(folders, capsys):
    code, out, _ = run(capsys, folders["a"], folders["slow20"])
    assert code == 0 and "-20%" in out and "WORSE" not in out
    assert "median change in throughput -20%" in out


def test_two_variants_of_one_folder(folders, capsys):
    code, out, _ = run(capsys, f"{folders['mixed']}:cpu", f"{folders['mixed']}:gpu", "--fail-if-slower", 10)
    # gpu is faster at 1_16_4 and 2_16_4, but its 2_32_4 run failed where cpu's was valid: that is worse
    assert code == 1
    lines = {line.split()[0]: line for line in out.splitlines() if re.match(r"\d+_\d+_\d+ ", line)}
    assert set(lines) == {"1_16_4", "2_16_4", "2_32_4"}
    assert "+100%" in lines["1_16_4"] and "-67%" in lines["1_16_4"] and lines["1_16_4"].endswith("ok")
    assert "WORSE: B's run failed (stack did not become healthy within 300 s)" in lines["2_32_4"]
    # the other way round gpu -> cpu is slower on both compared points; the failed A run is skipped
    code, out, _ = run(capsys, f"{folders['mixed']}:gpu", f"{folders['mixed']}:cpu", "--fail-if-slower", 10)
    assert code == 1 and "WORSE: throughput -50%, p95 +200%" in out and "not compared: A's run failed" in out


def test_folders_match_on_variant_too(folders, capsys):
    code, out, _ = run(capsys, folders["a"], folders["mixed"])
    assert code == 0 and "gpu/" not in out  # a has no gpu runs, so none is common


@pytest.mark.parametrize("argv, words", [
    (["{a}", "{missing}"], "no such output folder"),
    (["{missing}:cpu", "{a}:cpu"], "no such output folder"),
    (["{a}:gpu", "{mixed}:gpu"], "no runs of variant 'gpu'"),
    (["{a}", "{mixed}:cpu"], "give a variant on both sides"),
    (["{a}:cpu", "{empty}:cpu"], "no runs of variant 'cpu'"),
    (["{a}", "{other}"], "no common grid point"),
    (["{a}", "{broken}"], "schema 99 is not supported"),
])
def test_bad_input_exits_2_with_one_line(folders, tmp_path, capsys, argv, words):
    (tmp_path / "empty").mkdir()
    fx.write(tmp_path / "other", [fx.run("cpu", 9, 9, 9, 10.0, 1, 2)])
    broken = fx.write(tmp_path / "broken", fx.cpu_only())
    (broken / "cpu" / "1_4_4.json").write_text('{"schema": 99}')
    paths = {**folders, "missing": tmp_path / "missing", "empty": tmp_path / "empty", "other": tmp_path / "other",
             "broken": broken}
    code, out, err = run(capsys, *(a.format(**{k: str(v) for k, v in paths.items()}) for a in argv))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and words in err, err


def test_no_valid_point_on_both_sides_is_bad_input(tmp_path, capsys):
    a = fx.write(tmp_path / "a", [fx.run("cpu", 1, 4, 1, None, status="failed", error="x")])
    b = fx.write(tmp_path / "b", [fx.run("cpu", 1, 4, 1, 10.0, 1, 2)])
    code, _, err = run(capsys, a, b, "--fail-if-slower", 5)
    assert code == 2 and "has a valid run on both sides" in err


def test_negative_or_bad_percentage_is_refused(folders, project_root):
    for pct in ("-1", "x"):
        proc = subprocess.run([sys.executable, str(project_root / "orchestrate.py"), "compare", str(folders["a"]),
                               str(folders["same"]), "--fail-if-slower", pct], capture_output=True, text=True)
        assert proc.returncode == 2 and "percentage" in proc.stderr


def test_exit_codes_from_the_real_command(folders, project_root):
    def status(*argv):
        return subprocess.run([sys.executable, str(project_root / "orchestrate.py"), "compare", *map(str, argv)],
                              capture_output=True, text=True).returncode

    assert status(folders["a"], folders["same"], "--fail-if-slower", 5) == 0
    assert status(folders["a"], folders["slow20"], "--fail-if-slower", 5) == 1
    assert status(folders["a"], folders["a"].parent / "nope", "--fail-if-slower", 5) == 2


def test_parse_spec_prefers_an_existing_folder_with_a_colon(tmp_path):
    odd = tmp_path / "run:cpu"
    odd.mkdir()
    assert compare.parse_spec(str(odd)) == (odd, None)
    assert compare.parse_spec(f"{tmp_path}:gpu") == (tmp_path, "gpu")


# --- grid points with repeats, open loop and target mode; the noise (Welch's t-test) -----------------------

URL = "http://127.0.0.1:9/predict"


def target(point: str, users: int, spawn: float, rps: float | None, p95: float | None, repeat: int,
           rate: float | None = None, **kw):
    """A target-mode run as the grid names it: `target/r30` (open loop) or `target/2_4`, `_r2` for repeat 2."""
    r = fx.run("target", 1, users, spawn, rps, None if p95 is None else p95 / 2, p95, repeat=repeat, **kw)
    name = point + (f"_r{repeat}" if repeat > 1 else "")
    return replace(r, id=f"target/{name}", arrival_rate=rate, target=URL, files={"html": f"{name}.html"})


def target_set(r30: tuple[float, float], p95_r30: tuple[float, float] = (100.0, 102.0),
               closed: tuple[float, float] = (20.0, 20.2), processes: int = 1):
    """`repeats: 2`, `num_users_list: [1, 2]`, `spawn_rate_list: [1, 4]`-ish and `arrival_rate_list: [30]`.

    The open-loop runs have users = spawn = Locust processes (1), the same as the closed-loop point 1_1: the
    old key (variant, replicas, users, spawn rate) fused them and printed both as `target/1_1_1`.
    """
    return [
        target("r30", processes, processes, r30[0], p95_r30[0], 1, 30.0),
        target("r30", processes, processes, r30[1], p95_r30[1], 2, 30.0),
        target("2_4", 2, 4, closed[0], 50.0, 1),
        target("2_4", 2, 4, closed[1], 51.0, 2),
        target("1_1", 1, 1, 10.0, 40.0, 1),
        target("1_1", 1, 1, 10.0, 40.0, 2),
    ]


def rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if re.match(r"[a-z]+/\S+ ", line)}


def test_points_are_keyed_and_named_as_the_runs_are(tmp_path, capsys):
    a = fx.write(tmp_path / "a", target_set((30.0, 30.4)))
    b = fx.write(tmp_path / "b", target_set((30.0, 30.4), processes=2))  # open loop matches on its rate
    code, out, _ = run(capsys, a, b, "--fail-if-slower", 5)
    assert code == 0
    assert set(rows(out)) == {"target/r30", "target/2_4", "target/1_1"}, out
    assert "target/1_1_1" not in out and "target/1_2_4" not in out
    line = rows(out)["target/r30"]
    # the mean of the two repeats with its 95% CI: 30.2 ± t(0.975, 1) x sd / sqrt(2) = 12.706 x 0.2828 / 1.414
    assert line.split()[1] == "2/2" and "30.2 ±2.5" in line and "101 ±12.7" in line
    assert "10 " in rows(out)["target/1_1"] and "30.2" not in rows(out)["target/1_1"]  # not fused with r30
    assert "A: " in out and "6 runs" in out


def test_capacity_probes_and_open_loop_at_one_rate_are_different_points(tmp_path, capsys):
    def cpu(point, rps, probe=False):
        r = fx.run("cpu", 2, 1, 1, rps, 50.0, 100.0)
        return replace(r, id=f"cpu/{point}", arrival_rate=30.0, capacity_probe=probe)

    closed = fx.run("cpu", 2, 50, 10, 40.0, 50.0, 100.0)
    a = fx.write(tmp_path / "a", [cpu("2_r30", 30.0), cpu("2_cap_r30", 29.0, probe=True), closed])
    b = fx.write(tmp_path / "b", [cpu("2_r30", 30.0), cpu("2_cap_r30", 20.0, probe=True), closed])
    code, out, _ = run(capsys, a, b, "--fail-if-slower", 10)
    assert set(rows(out)) == {"cpu/2_r30", "cpu/2_cap_r30", "cpu/2_50_10"}
    assert code == 1 and rows(out)["cpu/2_cap_r30"].endswith("WORSE: throughput -31% (single run: noise not judged)")
    assert rows(out)["cpu/2_r30"].endswith("ok")


def test_a_change_within_the_noise_is_not_significant(tmp_path, capsys):
    """-7% on the mean (30.2 -> 28) beyond a 5% tolerance, but B's repeats are 25 and 31: within the noise."""
    a = fx.write(tmp_path / "a", target_set((30.0, 30.4)))
    b = fx.write(tmp_path / "b", target_set((25.0, 31.0)))
    code, out, _ = run(capsys, a, b, "--fail-if-slower", 5)
    assert code == 0, out
    assert rows(out)["target/r30"].endswith("not significant: throughput -7% (within the noise)")
    # hand computation: var_A/n = 0.08/2 = 0.04, var_B/n = 18/2 = 9; t = -2.2 / sqrt(9.04) = -0.73;
    # df = 9.04^2 / (0.04^2 + 9^2) = 1.009 -> t(0.975, 1) = 12.71
    assert "target/r30 throughput: throughput -7%, difference -2.2, Welch t -0.73, df 1.0, needs |t| > 12.71: " \
           "not significant" in out
    assert "B is not worse than A beyond 5% on any common point." in out
    assert "within the noise (not significant, not counted as worse): target/r30." in out


def test_a_change_beyond_tolerance_and_noise_is_worse(tmp_path, capsys):
    """27, 27 against 30, 30.4: -10%; t = -3.2 / sqrt(0.04 + 0) = -16, df = 1, beyond 12.71."""
    a = fx.write(tmp_path / "a", target_set((30.0, 30.4)))
    b = fx.write(tmp_path / "b", target_set((27.0, 27.0)))
    code, out, _ = run(capsys, a, b, "--fail-if-slower", 5)
    assert code == 1, out
    assert rows(out)["target/r30"].endswith("WORSE: throughput -11% (beyond the noise)")
    assert "Welch t -16.00, df 1.0, needs |t| > 12.71: significant" in out
    assert "B is worse than A beyond 5% on 1 point(s): target/r30." in out
    # the same change with a 15% tolerance is within the tolerance: not worse however significant
    code, out, _ = run(capsys, a, b, "--fail-if-slower", 15)
    assert code == 0 and rows(out)["target/r30"].endswith("ok")


def test_p95_is_judged_lower_is_better_with_the_noise(tmp_path, capsys):
    a = fx.write(tmp_path / "a", target_set((30.0, 30.4)))
    b = fx.write(tmp_path / "b", target_set((30.0, 30.4), p95_r30=(130.0, 131.0)))
    code, out, _ = run(capsys, a, b, "--fail-if-slower", 10)
    # p95 101 -> 130.5 (+29%): t = 29.5 / sqrt(2/2 + 0.5/2) = 26.4, df = 1.25^2 / (1 + 0.0625) = 1.47 -> 12.71
    assert code == 1 and rows(out)["target/r30"].endswith("WORSE: p95 +29% (beyond the noise)")
    assert "target/r30 p95: p95 +29%, difference +29.5, Welch t +26.39, df 1.5, needs |t| > 12.71: significant" in out
    # lower p95 is better, never worse
    b2 = fx.write(tmp_path / "b2", target_set((30.0, 30.4), p95_r30=(60.0, 61.0)))
    assert run(capsys, a, b2, "--fail-if-slower", 10)[0] == 0


def test_single_valid_repeat_decides_on_the_tolerance_alone(tmp_path, capsys):
    a = fx.write(tmp_path / "a", target_set((30.0, 30.4)))
    recs = target_set((25.0, 31.0))
    recs[1] = target("r30", 1, 1, 31.0, 102.0, 2, 30.0, failures=3, reasons=["3 of 1860 requests failed"])
    b = fx.write(tmp_path / "b", recs)
    code, out, _ = run(capsys, a, b, "--fail-if-slower", 5)
    line = rows(out)["target/r30"]
    # only repeat 1 (25 req/s) is valid on B: -17% against A's mean, decided without the noise
    assert code == 1 and line.split()[1] == "2/1"
    assert "WORSE: throughput -17% (single run: noise not judged); B 1 of 2 repeats valid" in line
    assert "target/r30 throughput: single run: noise not judged (n 2/1)" in out
    assert "A single valid run on a side (target/r30)" in out


def test_no_valid_repeat_on_b_is_worse_naming_each(tmp_path, capsys):
    a = fx.write(tmp_path / "a", target_set((30.0, 30.4)))
    recs = target_set((30.0, 30.4))
    recs[0] = target("r30", 1, 1, None, None, 1, 30.0, status="failed", error="connection refused")
    recs[1] = target("r30", 1, 1, None, None, 2, 30.0, status="failed", error="connection refused")
    b = fx.write(tmp_path / "b", recs)
    code, out, _ = run(capsys, a, b, "--fail-if-slower", 5)
    assert code == 1
    assert ("WORSE: none of B's 2 repeats is valid: target/r30 failed (connection refused); "
            "target/r30_r2 failed (connection refused)") in rows(out)["target/r30"]


def test_welch_against_a_hand_computation():
    # A 100, 110, 90: mean 100, variance 100; B 80, 84: mean 82, variance 8.
    # var/n: 100/3 = 33.333 and 8/2 = 4; se = sqrt(37.333) = 6.1101; t = -18 / 6.1101 = -2.9459
    # df = 37.333^2 / (33.333^2 / 2 + 4^2 / 1) = 1393.78 / 571.56 = 2.4386 -> t(0.975, 2) = 4.303: not significant
    w = compare.welch([100.0, 110.0, 90.0], [80.0, 84.0])
    assert w.diff == pytest.approx(-18.0)
    assert w.se == pytest.approx(6.1101, abs=1e-4)
    assert w.t == pytest.approx(-2.9459, abs=1e-4)
    assert w.df == pytest.approx(2.4386, abs=1e-4)
    assert w.critical == 4.303 and not w.significant
    # equal variances and sizes: Welch's df is n_A + n_B - 2, as the pooled Student test's
    w = compare.welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert w.df == pytest.approx(4.0) and w.t == pytest.approx(3 / math.sqrt(2 / 3)) and w.critical == 2.776
    assert w.significant
    # no spread on either side: any difference is beyond the noise, none is not
    assert compare.welch([5.0, 5.0], [4.0, 4.0]).significant
    assert not compare.welch([5.0, 5.0], [5.0, 5.0]).significant
    assert compare.welch([5.0], [4.0, 4.0]) is None
