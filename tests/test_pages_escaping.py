"""Pages from an untrusted results folder: every value is escaped or cast, no record value becomes markup or a link
it should not be, and no module of the package holds markup (it lives in loadgrid/templates)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest
from support import report_fixtures as fx

from loadgrid import capacity, report, run_page, templating
from loadgrid.store import Incident

EVIL = "<script>alert(1)</script>"
JS = "javascript:alert(1)"
PACKAGE = Path(report.__file__).parent


def assert_inert(page: str) -> None:
    assert "<script>alert" not in page and "alert(1)</script>" not in page
    assert 'href="javascript:' not in page.lower() and "href='javascript:" not in page.lower()
    assert not re.search(r'href="(/|\.\./|[a-z]+:)', page)  # links only to plain relative names or anchors


def hostile_grid():
    good = fx.run("cpu", 1, 4, 4, 20.0, 40.0, 60.0)
    # numeric fields only shown (not computed on) holding script; ids and the report's file name a javascript: URL
    bad = fx.run("cpu", 2, 4, 4, 30.0, 40.0, 60.0, window={"start_at": 1.0, "duration_s": EVIL, "warmup_s": EVIL},
                 generator={"cpu_pct_mean": 40.0, "cpu_pct_max": EVIL, "cores": 2, "samples": EVIL})
    bad.load.latency_ms.update(p90=EVIL, p99=EVIL, max=EVIL)
    bad.id, bad.files = JS, {"html": JS}
    failed = fx.run("cpu", 1, 8, 4, None, status="failed", error=EVIL)
    failed.id, failed.files = EVIL, {"html": "../../home/u/.ssh/authorized_keys"}
    variant = fx.run(JS, 1, 4, 4, 10.0, 40.0, 60.0)
    variant.files = {"html": EVIL}
    return [good, bad, failed, variant]


def test_index_page_of_hostile_records_is_inert():
    page = report.index_html(hostile_grid())
    assert_inert(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert f'href="cpu/{good_name()}"' in page  # a plain name still links


def good_name() -> str:
    return fx.run("cpu", 1, 4, 4, 20.0, 40.0, 60.0).files["html"]


def test_whole_folder_with_hostile_capacity_search_is_inert(tmp_path):
    records = [fx.run("cpu", 1, 4, 4, 20.0, 40.0, 60.0)]
    folder = fx.write(tmp_path / "out", records, latency_target_ms=500)
    (folder / "capacity.json").write_text(json.dumps({"schema": 1, "stacks": [{
        "variant": EVIL, "models": EVIL, "capacity_rps": EVIL, "run_id": JS, "p95_ms": EVIL, "latency_target_ms": EVIL,
        "lowest_failing_rps": EVIL, "limited_by": EVIL,
        "probes": [{"run_id": "../../x", "rate": EVIL, "passed": True}, {"run_id": "cpu/1_cap_r10", "rate": 10,
                                                                          "passed": False}]}]}))
    section = capacity.section_html(folder)
    assert_inert(section)
    assert 'href="cpu/1_cap_r10.html"' in section and "&lt;script&gt;" in section
    assert_inert(report.index_html(records, capacity_search=capacity.section_view(folder)))


def test_run_section_of_hostile_record_is_inert():
    r = hostile_grid()[1]
    r.telemetry = {"containers": {EVIL: {"samples": EVIL, "cpu_pct_mean": EVIL, "mem_mb_max": EVIL}},
                   "host": {"cpu_pct_mean": 5.0, "cores": EVIL, "samples": EVIL, "interval": EVIL},
                   "gpus": {EVIL: {"name": EVIL, "util_pct_mean": EVIL}}}
    r.incidents = [Incident(EVIL, EVIL, EVIL, EVIL, EVIL, True, [EVIL])]
    r.validity.reasons = [EVIL]
    series = {"containers": {EVIL: [[0.0, EVIL, EVIL], [1.0, 5.0, 2.0**20], "junk"]},
              "events": [{"time": 0.5, "name": EVIL, "action": EVIL, "exit_code": EVIL}],
              "gpus": {EVIL: [{"t": 0.0, "name": EVIL, "util_pct": EVIL}, {"t": 1.0, "util_pct": 50.0}]}}
    section = run_page.section(r, series)
    assert_inert(section)
    assert section.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5


def test_file_links_only_to_plain_relative_names():
    assert templating.file_href("cpu/1_4_4.html") == "cpu/1_4_4.html"
    assert templating.file_href("cpu/a b#c.html") == "cpu/a%20b%23c.html"
    for bad in (JS, "JavaScript:x", "/etc/passwd", "../x.html", "cpu/../x", "cpu//x", "http://h/x", "a\nb", "",
                None, 3, "cpu/./x", "\\\\host\\x"):
        assert templating.file_href(bad) is None, bad


# HTML elements as tags; SVG ones with an attribute (`<path>` alone is a placeholder in a help text)
MARKUP = re.compile(r"<(div|table|svg|span|style|script|html|p|b|a|td|tr|th|li|ul|code|br|pre|h[1-6]|section)[\s>/]"
                    r"|<(circle|path|rect|line|text|g) [a-z-]+=", re.I)


def test_no_markup_in_the_package_python():
    found = [f"{path.name}:{n}: {line.strip()}" for path in sorted(PACKAGE.glob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if MARKUP.search(line)]
    assert found == []
    # the pages' markup, CSS and JS are files of the package
    for name in ("index.html.j2", "run_section.html.j2", "charts.svg.j2", "report.css", "report.js",
                 "run_section.css"):
        assert (PACKAGE / "templates" / name).is_file()


def test_templates_escape_by_default_and_fail_loudly_on_a_missing_value():
    env = templating.env()
    assert all(env.autoescape(name) for name in ("index.html.j2", "charts.svg.j2", None))
    assert env.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        templating.render("index.html.j2")
