"""Command line: a thin layer over config -> plan -> grid -> report.

The help text (`DESCRIPTION`, `EPILOG`) speaks to a user; this docstring to whoever reads the code. A
`UserError` is printed as one line per mistake (exit 2 for bad input, 1 otherwise), naming the flag when a flag
set the key (`UserError.keys`); tracebacks only with -v. `orchestrate.py` calls `main` too, under the same name.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import traceback
from pathlib import Path

from . import __version__, grid, hold, redact, report, settings, stack, starter, store
from . import answer as answer_mod
from . import compare as compare_mod
from . import config as config_mod
from . import payload as payload_mod
from . import plan as plan_mod
from .errors import UserError

COMMANDS = ("run", "report", "compare", "init", "worker")
PROG = "loadgrid"
DESCRIPTION = """\
loadgrid benchmarks a model-serving stack: it brings the stack up with Docker Compose at each size you list
(replicas of one service), drives it with Locust at each load you list (users, or requests per second), and
writes one report per run, a summary.csv and an index.html that answers how many replicas the load needs.
It can also load an endpoint that is already deployed (--target), without a stack."""
EPILOG = """\
examples:
  loadgrid init                                   # a config.yaml for the compose project here
  loadgrid --config config.yaml --dry-run         # every planned run and the time it will take
  loadgrid --config config.yaml                   # run it; results in reports/
  loadgrid --target http://127.0.0.1:9000/predict --payload images --users 1,10 --run-time 30s
  loadgrid compare baseline/ reports/ --fail-if-slower 10

Run `loadgrid run --help` for every flag of a run."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"loadgrid {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="{run,report,compare,init,worker}")
    run = sub.add_parser("run", help="run the grid of a config (the default: loadgrid --config config.yaml)",
                         description="Run every point of the config's grid (or, with --dry-run, list them). "
                                     "A load flag overrides its config key.")
    run.add_argument("--config", "-c", default=None, help="grid config (default: config.yaml)")
    run.add_argument("--dry-run", action="store_true", help="print every planned run; start nothing")
    run.add_argument("--resume", action="store_true",
                     help="skip points that already have a finished record made with the same settings")
    run.add_argument("--retry-failed", action="store_true",
                     help="like --resume, but run failed and invalid points again (only valid ones are kept)")
    run.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    load = run.add_argument_group("load settings (each overrides its config key; lists as 10,50)")
    for setting in LOAD_FLAGS:
        load.add_argument(setting.flag, dest=_dest(setting.flag), metavar=setting.metavar,
                          help=f"{setting.help} (config: {setting.key})".replace("%", "%%"))
    rep = sub.add_parser("report", help="rebuild summary.csv and index.html from the records in a results folder")
    rep.add_argument("output", nargs="?", default=str(settings.default("output_dir")),
                     help=f"results folder (default: {settings.default('output_dir')})")
    rep.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    cmp = sub.add_parser("compare",
                         help="compare two results folders, or two variants of one (reports:cpu reports:gpu)",
                         description=compare_mod.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp.add_argument("a", metavar="A", help="baseline: an output folder, or FOLDER:VARIANT such as reports:cpu")
    cmp.add_argument("b", metavar="B", help="candidate, in the same form as A")
    cmp.add_argument("--fail-if-slower", type=_percent, metavar="PCT",
                     help="exit 1 when B's mean throughput is lower, or its mean p95 higher, than A's by more "
                          "than PCT percent and beyond the noise (Welch's t-test at 95%% where both sides have 2 or "
                          "more valid repeats) on any common point, or B has no valid run where A has one")
    cmp.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    # Handled in main before parsing (it runs loadgrid.worker in a process of its own); listed for --help.
    sub.add_parser("worker", help="join a loadgrid master as a Locust worker: loadgrid worker --master HOST[:PORT] "
                                  "(loadgrid worker --help)", add_help=False)
    ini = sub.add_parser("init", help="write a starter config.yaml for an existing compose project",
                         description=starter.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ini.add_argument("compose_files", nargs="*", metavar="COMPOSE_FILE",
                     help="the project's compose files (default: compose.yaml or docker-compose.yml here)")
    ini.add_argument("--output", "-o", default="config.yaml", help="the config to write (default: config.yaml)")
    ini.add_argument("--force", action="store_true", help="overwrite an existing config")
    ini.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    return parser


# The load flags: each config key's flag, metavar and help line come from the settings table. Values are read
# like YAML, so the config's checks and messages apply.
LOAD_FLAGS = settings.FLAGS


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def overrides(args: argparse.Namespace) -> dict:
    """The load flags given, as config keys and values (paths made absolute against the current folder)."""
    import yaml

    out = {}
    for setting in LOAD_FLAGS:
        text = getattr(args, _dest(setting.flag), None)
        if text is None:
            continue
        if setting.flag_value == "path" and not payload_mod.is_url(text):
            out[setting.key] = str(Path(text).resolve())
            continue
        if setting.flag_value == "text":
            out[setting.key] = text
            continue
        try:
            value = yaml.safe_load(f"[{text}]" if setting.flag_value == "list" else text)
        except yaml.YAMLError:
            value = text
        out[setting.key] = value
    return out


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The config file (config.yaml unless --config) with the flags applied; errors name the flag."""
    given = overrides(args)
    try:
        return config_mod.load(args.config or "config.yaml", given, allow_missing=args.config is None)
    except UserError as exc:
        raise UserError.of([(_name_flag(line, key, given), key) for line, key in exc.items],
                           exc.exit_code) from None


def _name_flag(line: str, key: str | None, given: dict) -> str:
    """A config error about a key set by a flag names the flag instead ("--users: ..."); a part of the value
    ("expect.json.x") is named after the flag."""
    top, _, part = (key or "").partition(".")
    setting = settings.BY_KEY.get(top)
    if setting is None or not setting.flag or top not in given:
        return line
    detail = line.removeprefix(f"config: {key}: ") if line.startswith(f"config: {key}: ") \
        else line.removeprefix("config: ")
    return f"{setting.flag}: {part + ': ' if part else ''}{detail}"


def fetch_payload(config: config_mod.Config) -> config_mod.Config:
    """A payload URL is fetched once, before the runs, into the output folder; the runs read that file."""
    url = config.payload
    try:
        path = payload_mod.fetch(url, config.output_dir)
    except payload_mod.PayloadError as exc:
        raise UserError(f"payload: {exc}", exit_code=1) from None
    try:
        payload_mod.load(path, config.send_as)
    except payload_mod.PayloadError as exc:
        raise UserError(f"payload: {redact.url(url)}: {exc}") from None
    print(f"payload: fetched {redact.url(url)} -> {path}")  # a URL's password never reaches the console
    return dataclasses.replace(config, payload=str(path), payload_url=url)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a percentage of 0 or more, got {text!r}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    # `orchestrate.py --config x.yaml` is the main job: it means `run` when no command is named.
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv = ["run", *argv]
    return _parser().parse_args(argv)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (tear down, keep completed runs) but reported as 143."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        # A process of its own: the worker imports Locust (gevent's monkey patching), which must happen before
        # anything else is imported, and never in the orchestrator.
        os.execv(sys.executable, [sys.executable, "-m", "loadgrid.worker", *argv[1:]])
    args = parse_args(argv)
    try:
        if args.command == "report":
            return cmd_report(Path(args.output))
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "init":
            return cmd_init(args)
        return cmd_run(args)
    except UserError as exc:
        if args.verbose:
            traceback.print_exc()
        for line in exc.messages:  # several config mistakes: one line each
            print(f"loadgrid: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("loadgrid: interrupted; the stack was torn down and completed runs are kept", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130


def _say(line: str) -> None:
    # Flushed line by line: progress must reach a pipe or a CI log as it happens, not at exit.
    print(line, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args)
    for line in config.warnings:  # the compose lint's (dry run included): said once, the run goes on
        print(f"loadgrid: warning: {line}", file=sys.stderr, flush=True)
    if payload_mod.is_url(config.payload) and not args.dry_run:
        config = fetch_payload(config)
    plan = plan_mod.build(config, cpus=plan_mod.machine_cpus())
    if args.resume or args.retry_failed:
        fingerprints = plan_mod.fingerprints(config, plan.runs)
        done = store.finished_points(config.output_dir, fingerprints, retry_failed=args.retry_failed)
        plan = plan_mod.remaining(plan, done, keep_empty=config.capacity_search is not None)
        print(f"resuming: {len(done)} finished runs kept, {len(plan.runs)} to run"
              + (" (the capacity search runs again)" if config.capacity_search else ""))
    if args.dry_run:
        print(plan_mod.describe(plan, config))
        return 0
    if not plan.runs and not config.capacity_search:
        with store.skipping_bad_records():
            report.write_all(config.output_dir, latency_target_ms=config.latency_target_ms,
                             plan_for=_plan_for(config))
        _say_answer(config.output_dir)
        return 0
    projects = [] if config.target_mode else sorted({f"{config.project}-{spec.variant}" for spec in plan.runs}
                                                    | {f"{config.project}-{v}" for v in config.variants})
    if not config.target_mode:
        stack.check_engine()  # before the hold, which creates the output folder
    held = hold.acquire(config.output_dir, projects, str(config.source))
    try:
        return _run_held(config, plan)
    finally:
        held.release()


def _run_held(config, plan) -> int:
    skipped = grid.preflight(config, plan)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        outcome = grid.run_grid(config, plan, say=_say, skip=skipped)
    finally:
        signal.signal(signal.SIGTERM, previous)
    session = grid.write_session(config, outcome)
    with store.skipping_bad_records():  # a bad record left in the folder is skipped with a warning line
        written = report.write_all(config.output_dir, latency_target_ms=config.latency_target_ms,
                                   plan_for=_plan_for(config))
    invalid = [r for r in outcome.records if r.status == "completed" and not r.validity.valid]
    print(f"{len(outcome.records)} runs: {len(outcome.records) - len(outcome.failed) - len(invalid)} valid, "
          f"{len(invalid)} invalid, {len(outcome.failed)} failed")
    print(outcome.timings.line())
    print(f"results: {written[1]} and {written[0]} (timings: {session})")
    _say_answer(config.output_dir)
    return 1 if outcome.failed else 0


def _plan_for(config: config_mod.Config) -> tuple[float | None, dict[str, float]]:
    return config.expected_rps, dict(config.cost_per_replica)


def _say_answer(output: Path) -> None:
    # Last, so the answer is what a reader of the console sees first when the run ends.
    for line in answer_mod.stored_lines(output):
        _say(line)


def cmd_report(output: Path) -> int:
    """Pages from the folder's records: a record that does not load is skipped with one warning line naming
    the file and the field; a folder where none loads exits 2."""
    with store.skipping_bad_records():
        written = report.write_all(output)
    for path in written:
        print(f"wrote {path}")
    _say_answer(output)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    text, code = compare_mod.run(args.a, args.b, args.fail_if_slower)
    print(text)
    return code


def cmd_init(args: argparse.Namespace) -> int:
    path, found = starter.init(args.compose_files, Path(args.output), args.force)
    for note in found.notes:  # what could not be guessed: one line each, marked TODO in the file
        print(f"loadgrid init: TODO {note}")
    parts = [f"service {found.service}" if found.service else "service TODO",
             f"host {found.host} (published by {found.host_from})" if found.host else "host TODO",
             f"payload {found.payload} ({found.images} images)" if found.payload else "payload TODO"]
    print(f"wrote {path}: {', '.join(parts)}; check it with: loadgrid --config {path} --dry-run")
    return 0
