"""The settings table: each config key once, and config loading, the CLI's flags, the Locust environment and
the README all derive from it; UserError carries the key so the CLI names the flag."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadgrid import cli, config, load, settings
from loadgrid.errors import UserError
from loadgrid.plan import RunSpec

ROOT = Path(__file__).resolve().parents[1]


def test_each_key_once_with_a_help_line():
    keys = [s.key for s in settings.SETTINGS]
    assert len(keys) == len(set(keys))
    flags = [s.flag for s in settings.SETTINGS if s.flag]
    assert len(flags) == len(set(flags))
    assert all(s.help.strip() for s in settings.SETTINGS)
    assert settings.REQUIRED_KEYS == ("num_models_list", "run_time", "host")


def test_config_knows_exactly_the_table_keys(tmp_path):
    # Every table key is accepted (no "unknown key"), and a key not in the table is refused, with the table's
    # keys listed.
    for key in settings.KEYS:
        with pytest.raises(UserError) as err:
            config.from_mapping({key: object()}, base=tmp_path, environ={})
        assert not any(m.startswith("config: unknown key") for m in err.value.messages), key
    with pytest.raises(UserError) as err:
        config.from_mapping({"zzz_not_a_key": 1}, base=tmp_path, environ={})
    assert f"known keys: {', '.join(settings.KEYS)}" in err.value.messages[0]


def test_a_config_without_num_models_list_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "config.yaml").write_text("num_users_list: [1]\nrun_time: 5s\nhost: http://localhost:1\n")
    proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", "config.yaml", "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "loadgrid: error: config: missing key num_models_list; add it" in proc.stderr


def test_config_defaults_are_the_table_defaults():
    fields = {f.name: f for f in dataclasses.fields(config.Config)}
    checked = 0
    for s in settings.SETTINGS:
        if s.default is settings.REQUIRED or s.key in ("threads", "processes"):  # they share another key's field
            continue
        field = fields[s.name]
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            # The load axis is always filled by from_mapping (from num_users_list, threads or neither).
            assert s.key in ("num_users_list", "spawn_rate_list"), s.key
            continue
        value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert value == s.default, s.key
        checked += 1
    assert checked >= 30
    load_defaults = load.LoadOptions()
    for key, attr in (("warmup", "warmup_s"), ("send_as", "send_as"), ("expect", "expect"),
                      ("requests_per_user", "requests_per_user"), ("arrival", "arrival"),
                      ("max_in_flight", "max_in_flight")):
        assert getattr(load_defaults, attr) == settings.default(key)


def test_a_default_comes_from_the_table_when_the_key_is_absent(project_root, monkeypatch):
    monkeypatch.setitem(settings.BY_KEY, "replica_port",
                        dataclasses.replace(settings.BY_KEY["replica_port"], default=8123))
    cfg = config.load(project_root / "config.yaml", environ={})
    assert cfg.replica_port == 8123


def test_the_cli_flags_are_the_table_flags():
    parser = cli._parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    group = next(g for g in run._action_groups if g.title.startswith("load settings"))
    actions = {a.option_strings[0]: a for a in group._group_actions}
    assert list(actions) == [s.flag for s in settings.FLAGS]
    for s in settings.FLAGS:
        assert actions[s.flag].metavar == s.metavar
        assert actions[s.flag].help.replace("%%", "%") == f"{s.help} (config: {s.key})"


def test_flags_are_read_as_the_table_says(tmp_path):
    args = cli.parse_args(["--users", "1,2", "--run-time", "30s", "--output", "out", "--target", "http://h:1/p",
                           "--expect", "{status: 200}"])
    given = cli.overrides(args)
    assert given["num_users_list"] == [1, 2] and given["run_time"] == "30s"
    assert given["output_dir"] == str(Path("out").resolve()) and given["target"] == "http://h:1/p"
    assert given["expect"] == {"status": 200}


def test_the_locust_environment_uses_the_table_names(tmp_path):
    files = load.RunFiles(tmp_path, "run")
    options = load.LoadOptions(warmup_s=5, send_as="multipart", expect="status", requests_per_user=7,
                               arrival="poisson", max_in_flight=3)
    env = load.locust_env(tmp_path, "/p", files, options, RunSpec("target", 1, 3, 3.0, 60))
    expected = {"payload": str(tmp_path.resolve()), "predict_path": "/p", "warmup": "5", "send_as": "multipart",
                "expect": "status", "requests_per_user": "7", "arrival": "poisson", "max_in_flight": "3"}
    assert set(expected) == set(settings.LOCUST_KEYS)
    for key, text in expected.items():
        assert env[settings.BY_KEY[key].locust] == text, key
    # ... and the locust side reads each of those names.
    locust_side = "".join((ROOT / "loadgrid" / name).read_text() for name in
                          ("locustfile.py", "locust_users.py", "locust_window.py", "locust_latency.py"))
    for key in settings.LOCUST_KEYS:
        assert f'"{settings.BY_KEY[key].locust}"' in locust_side, key
    with pytest.raises(ValueError):
        settings.locust_vars({"payload": "x"})  # a key the table hands to Locust cannot be forgotten


def test_readme_lists_every_key_as_the_table_does():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings:begin -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert block, "README.md lost its settings markers"
    assert block.group(1) == settings.reference()
    for key in settings.KEYS:
        assert f"| `{key}` |" in block.group(1)


# --- UserError.key --------------------------------------------------------------------------------------------

def test_user_error_carries_its_key():
    assert UserError("config: replica_port: got 0; expected x", key="replica_port").key == "replica_port"
    assert UserError("config: capacity_search.max: got 1; expected x").key == "capacity_search.max"
    assert UserError("no key here", exit_code=1).key is None
    both = UserError.of([("config: a: one", "a"), "config: b.c: two", ("config: a: one", "a")])
    assert both.messages == ("config: a: one", "config: b.c: two") and both.keys == ("a", "b.c")
    with pytest.raises(UserError) as err:
        settings.positive_int({"replica_port": 0}, "replica_port")
    assert err.value.key == "replica_port"


def test_config_errors_carry_each_key(project_root):
    with pytest.raises(UserError) as err:
        config.load(project_root / "config.yaml", {"replica_port": 0, "arrival": "burst"}, environ={})
    assert dict(zip(err.value.keys, err.value.messages, strict=True)).keys() >= {"replica_port", "arrival"}


def test_cli_names_the_flag_from_the_key_not_the_message(monkeypatch, capsys):
    def fails(*a, **k):  # a message whose wording does not start with the key: only `key` can name the flag
        raise UserError("config: too many users for this machine; lower them", key="num_users_list")

    monkeypatch.setattr(config, "load", fails)
    assert cli.main(["--users", "5000", "--dry-run"]) == 2
    assert capsys.readouterr().err == "loadgrid: error: --users: too many users for this machine; lower them\n"


def test_cli_keeps_the_key_when_the_file_set_it(monkeypatch, capsys):
    def fails(*a, **k):
        raise UserError("config: num_users_list: got 'x'; expected a list", key="num_users_list")

    monkeypatch.setattr(config, "load", fails)
    assert cli.main(["--run-time", "5s", "--dry-run"]) == 2
    assert capsys.readouterr().err == "loadgrid: error: config: num_users_list: got 'x'; expected a list\n"


def test_a_bad_flag_value_is_one_line_naming_the_flag(tmp_path):
    (tmp_path / "doc.json").write_text('{"a": 1}')
    proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--target", "http://127.0.0.1:9/p",
                           "--payload", "doc.json", "--users", "1", "--run-time", "5s", "--max-in-flight", "0",
                           "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("loadgrid: error: --max-in-flight: got 0; expected a whole number above zero\n")


def test_the_installed_command_is_loadgrid():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'loadgrid = "loadgrid.cli:main"' in text
    assert re.search(r'"rich>=[\d.]+,<\d+"', text)
