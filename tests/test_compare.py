"""`orchestrate.py compare A B [--fail-if-slower PCT]`: the table and the exit codes (0 fine, 1 worse, 2 bad input)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace

import pytest
import report_fixtures as fx

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
