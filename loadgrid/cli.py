"""Command line: a thin layer over config -> plan -> grid -> report.

    orchestrate.py --config config.yaml [--dry-run]   run the grid (or just print the plan)
    orchestrate.py --target URL --payload FILE ...    benchmark an endpoint that is already deployed
    orchestrate.py report [OUTPUT]                    rebuild summary.csv and index.html from stored records
    orchestrate.py compare A B [--fail-if-slower PCT] compare two output folders, or FOLDER:cpu FOLDER:gpu
    orchestrate.py init [COMPOSE_FILE...] [--force]   write a starter config.yaml for a compose project

A `UserError` is printed as one line per mistake (exit 2 for bad input, 1 otherwise); tracebacks only with -v.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import traceback
from pathlib import Path

from . import __version__, grid, hold, redact, report, stack, starter, store
from . import answer as answer_mod
from . import compare as compare_mod
from . import config as config_mod
from . import payload as payload_mod
from . import plan as plan_mod
from .errors import UserError

COMMANDS = ("run", "report", "compare", "init")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"loadgrid {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the grid (the default command)")
    run.add_argument("--config", "-c", default=None, help="grid config (default: config.yaml)")
    run.add_argument("--dry-run", action="store_true", help="print every planned run; start nothing")
    run.add_argument("--resume", action="store_true",
                     help="skip points that already have a finished record made with the same settings")
    run.add_argument("--retry-failed", action="store_true",
                     help="like --resume, but run failed and invalid points again (only valid ones are kept)")
    run.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    load = run.add_argument_group("load settings (each overrides its config key; lists as 10,50)")
    for flag, key, metavar, text in LOAD_FLAGS:
        load.add_argument(flag, dest=_dest(flag), metavar=metavar, help=f"{text} (config: {key})")
    rep = sub.add_parser("report", help="rebuild summary.csv and index.html from stored records")
    rep.add_argument("output", nargs="?", default="reports", help="output folder (default: reports)")
    rep.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    cmp = sub.add_parser("compare", help="compare two output folders, or two variants of one (OUT:cpu OUT:gpu)",
                         description=compare_mod.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp.add_argument("a", metavar="A", help="baseline: an output folder, or FOLDER:VARIANT such as reports:cpu")
    cmp.add_argument("b", metavar="B", help="candidate, in the same form as A")
    cmp.add_argument("--fail-if-slower", type=_percent, metavar="PCT",
                     help="exit 1 when B's mean throughput is lower, or its mean p95 higher, than A's by more "
                          "than PCT percent and beyond the noise (Welch's t-test at 95%% where both sides have 2 or "
                          "more valid repeats) on any common point, or B has no valid run where A has one")
    cmp.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    ini = sub.add_parser("init", help="write a starter config.yaml for an existing compose project",
                         description=starter.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ini.add_argument("compose_files", nargs="*", metavar="COMPOSE_FILE",
                     help="the project's compose files (default: compose.yaml or docker-compose.yml here)")
    ini.add_argument("--output", "-o", default="config.yaml", help="the config to write (default: config.yaml)")
    ini.add_argument("--force", action="store_true", help="overwrite an existing config")
    ini.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    return parser


# --flag, config key, metavar, help. Values are read like YAML, so the config's checks and messages apply.
LOAD_FLAGS = (
    ("--target", "target", "URL", "benchmark this endpoint as it is: no compose stack, no replica axis "
                                  "(default without --config: $ENDPOINT)"),
    ("--payload", "payload", "PATH|URL", "a folder of images, an image, a .json or .jsonl file, or an http(s) URL "
                                         "fetched once (default: $PAYLOAD, then images_dir)"),
    ("--send-as", "send_as", "raw|multipart", "images as a raw JPEG body (application/octet-stream) or multipart"),
    ("--expect", "expect", "prediction|status|{...}", "served means a valid prediction body, any 2xx, or a JSON "
                                                     "check such as '{status: 200, json: {success: true}}'"),
    ("--users", "num_users_list", "N[,N..]", "closed-loop users"),
    ("--spawn-rate", "spawn_rate_list", "R[,R..]", "users started per second"),
    ("--run-time", "run_time", "DURATION", "per run, e.g. 30s, 1m (with --requests-per-user: the cap)"),
    ("--processes", "processes", "N", "Locust processes"),
    ("--threads", "threads", "N[,N..]", "users per Locust process: users = processes x threads"),
    ("--requests-per-user", "requests_per_user", "N", "each user stops after N requests"),
    ("--arrival-rate", "arrival_rate_list", "R[,R..]", "open loop: requests per second, instead of users"),
    ("--arrival", "arrival", "constant|poisson", "open-loop arrivals"),
    ("--max-in-flight", "max_in_flight", "N", "open loop: requests in flight per Locust process"),
    ("--output", "output_dir", "DIR", "output folder"),
    ("--latency-target", "latency_target_ms", "MS", "p95 target for capacity"),
    ("--expected-rps", "expected_rps", "RPS", "the load to plan for: the answer names the smallest size that holds "
                                             "it with p95 under the target"),
    ("--cost-per-replica", "cost_per_replica", "{cpu: C, gpu: C}", "the cost of one replica per variant (any unit), "
                                                                  "for the cheapest answer"),
)
LIST_KEYS = ("num_users_list", "spawn_rate_list", "threads", "arrival_rate_list")
PATH_KEYS = ("payload", "output_dir")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def overrides(args: argparse.Namespace) -> dict:
    """The load flags given, as config keys and values (paths made absolute against the current folder)."""
    import yaml

    out = {}
    for flag, key, _, _ in LOAD_FLAGS:
        text = getattr(args, _dest(flag), None)
        if text is None:
            continue
        if key in PATH_KEYS and not payload_mod.is_url(text):
            out[key] = str(Path(text).resolve())
            continue
        if key in ("target",):
            out[key] = text
            continue
        try:
            value = yaml.safe_load(f"[{text}]" if key in LIST_KEYS else text)
        except yaml.YAMLError:
            value = text
        out[key] = value
    return out


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The config file (config.yaml unless --config) with the flags applied; errors name the flag."""
    given = overrides(args)
    try:
        return config_mod.load(args.config or "config.yaml", given, allow_missing=args.config is None)
    except UserError as exc:
        raise UserError.of([_name_flag(line, given) for line in exc.messages], exc.exit_code) from None


def _name_flag(line: str, given: dict) -> str:
    """A config error about a key set by a flag names the flag instead."""
    for flag, key, _, _ in LOAD_FLAGS:
        if key in given and line.startswith(f"config: {key}: "):
            return f"{flag}: {line.split(': ', 2)[2]}"
        if key in given and line.startswith(f"config: {key}."):  # a part of the value: name the part too
            return f"{flag}: {line.removeprefix(f'config: {key}.')}"
    return line


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
    args = parse_args(sys.argv[1:] if argv is None else argv)
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
    plan = plan_mod.build(config)
    if args.resume or args.retry_failed:
        fingerprints = {spec.id: plan_mod.fingerprint(config, spec) for spec in plan.runs}
        done = store.finished_points(config.output_dir, fingerprints, retry_failed=args.retry_failed)
        plan = plan_mod.remaining(plan, done, keep_empty=config.capacity_search is not None)
        print(f"resuming: {len(done)} finished runs kept, {len(plan.runs)} to run"
              + (" (the capacity search runs again)" if config.capacity_search else ""))
    if args.dry_run:
        print(plan_mod.describe(plan, config))
        return 0
    if not plan.runs and not config.capacity_search:
        report.write_all(config.output_dir, latency_target_ms=config.latency_target_ms, plan_for=_plan_for(config))
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
    for path in report.write_all(output):
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
