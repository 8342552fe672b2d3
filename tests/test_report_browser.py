"""The comparison report in a real headless browser (Debian's `chromium`), opened from the file system.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in
NUL on fds 3 and 4), so no websocket library and no port are needed. The test fails on any console error or
uncaught exception, on any request that is not a local file, and when a chart has no drawn line.
Skipped when no chromium is installed, except in CI (CI set), where that is a failure: run ./setup.sh.
"""

from __future__ import annotations

import os

import pytest
from support import report_fixtures as fx
from support.browser import check_page, find_browser, open_report

from loadgrid import report

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser check, but no chromium is installed (apt-get install chromium; "
                        "see setup.sh)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    return path


def test_report_in_headless_chromium(browser, tmp_path):
    folder = fx.write(tmp_path / "out", fx.small_grid(), latency_target_ms=500)
    report.write_all(folder)
    result = open_report(browser, folder / "index.html", tmp_path / "small.png")
    check_page(result, variants=2)
    assert result["rows"] == len(fx.small_grid()) and result["excluded"] == 2
    assert any("GPU cuts p95 latency by 67%" in c for c in result["conclusions"])
    assert all(length > 0 for length in result["charts"][0]["lines"])  # cpu throughput: several users a line
    assert (tmp_path / "small.png").stat().st_size > 10_000


def test_large_grid_in_headless_chromium(browser, tmp_path):
    folder = fx.write(tmp_path / "out", fx.large_grid(), latency_target_ms=500)
    report.write_all(folder)
    result = open_report(browser, folder / "index.html", tmp_path / "large.png")
    check_page(result, variants=2)
    assert result["rows"] == 240 and result["excluded"] == 3
    # one drawn line per replica count in each users chart
    assert all(len(c["lines"]) == 5 and min(c["lines"]) > 100 for c in result["charts"][:-1])


def test_cpu_only_report_in_headless_chromium(browser, tmp_path):
    folder = fx.write(tmp_path / "out", fx.cpu_only())
    report.write_all(folder)
    result = open_report(browser, folder / "index.html", width=900)
    check_page(result, variants=1)
    assert any("no GPU data" in c for c in result["conclusions"])


def test_offered_rate_charts_in_headless_chromium(browser, tmp_path):
    records = fx.open_grid()
    folder = fx.write(tmp_path / "out", records, latency_target_ms=500, searches=fx.open_grid_capacity(records))
    report.write_all(folder)
    result = open_report(browser, folder / "index.html", tmp_path / "offered.png")
    check_page(result, variants=2, offered=2)
    by_title = {c["title"]: c for c in result["charts"]}
    latency, throughput = by_title["CPU: latency vs offered rate"], by_title["CPU: throughput vs offered rate"]
    # p95 and p50 per stack size; 2 replicas measured one rate only (a zero-length line, its marker shows)
    assert len(latency["lines"]) == 4 and min(latency["lines"][:2]) > 100
    assert latency["targets"] == 1 and latency["notes"] == ["capacity 100 req/s", "≥ 10 passed"]
    assert len(latency["fails"]) == 3 and all(latency["fails"]), "a failing marker is not drawn"
    assert len(throughput["lines"]) == 3 and len(throughput["fails"]) == 3 and all(throughput["fails"])
    assert by_title["GPU: latency vs offered rate"]["notes"] == ["≥ 20 passed"]
    assert result["rows"] == len(records)


def test_page_works_without_javascript(browser, tmp_path):
    folder = fx.write(tmp_path / "out", fx.small_grid())
    report.write_all(folder)
    result = open_report(browser, folder / "index.html", javascript=False)
    check_page(result, variants=2, javascript=False)
    assert result["rows"] == 12


def test_the_check_catches_console_errors(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><title>x</title><script>console.error('boom'); notDefined();</script>")
    errors = open_report(browser, page)["errors"]
    assert any("boom" in e for e in errors) and any("notDefined" in e or "Uncaught" in e for e in errors), errors
