"""The planner: order that reuses stacks, names, counts; pure, no Docker."""

from __future__ import annotations

from pathlib import Path

from support.records import make_config

from loadgrid import plan
from loadgrid.config import Config


def test_counts_and_grouping():
    p = plan.build(make_config())
    assert len(p.runs) == 2 * 2 * 2 * 2
    assert [(g.variant, g.models) for g in p.groups] == [("cpu", 1), ("cpu", 2), ("gpu", 1), ("gpu", 2)]
    assert all(len(g.runs) == 4 for g in p.groups)
    assert p.load_time_s == 16 * 60


def test_each_stack_is_brought_up_once_and_runs_all_its_points():
    p = plan.build(make_config())
    stacks = [(r.variant, r.models) for r in p.runs]
    # consecutive runs share a stack: the stack key changes exactly (number of groups - 1) times
    changes = sum(1 for a, b in zip(stacks[:-1], stacks[1:], strict=True) if a != b)
    assert changes == len(p.groups) - 1


def test_names_follow_models_users_spawn():
    p = plan.build(make_config(spawn_rate_list=(10.0, 0.5)))
    names = [r.name for r in p.runs if r.variant == "cpu" and r.models == 2]
    assert names == ["2_10_10", "2_10_0.5", "2_50_10", "2_50_0.5"]
    assert p.runs[0].id == "cpu/1_10_10"
    assert p.runs[0].html_path(Path("/out")) == Path("/out/cpu/1_10_10.html")


def test_gpu_groups_carry_the_gpu_override():
    p = plan.build(make_config())
    assert p.groups[0].compose_files == (Path("/s/dc.yml"),)
    assert p.groups[-1].compose_files == (Path("/s/dc.yml"), Path("/s/dc.gpu.yml"))


def test_describe_lists_every_run_and_the_total():
    cfg = make_config(variants=("cpu",))
    text = plan.describe(plan.build(cfg), cfg)
    assert text.count("run ") == 8
    assert "/out/cpu/2_50_10.html" in text
    assert "8 runs" in text and "8m00s" in text


def test_open_loop_processes_follow_the_cpus_passed_in_not_the_machine(monkeypatch):
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the planner must not ask the machine when told
    cfg = make_config(variants=("cpu",), arrival_rate_list=(20.0,))
    runs = [r for r in plan.build(cfg, cpus=6).runs if r.open_loop]
    assert runs and all(r.users == 3 and r.spawn_rate == 3.0 for r in runs)  # one core of two
    assert all(r.users == 1 for r in plan.build(cfg, cpus=1).runs if r.open_loop)
    assert plan.generator_processes(make_config(locust_processes=5), cpus=2) == 5  # a set count wins


def test_describe_is_the_same_for_the_same_cpus():
    cfg = make_config(variants=("cpu",), arrival_rate_list=(20.0,))
    assert plan.describe(plan.build(cfg, cpus=4), cfg) == plan.describe(plan.build(cfg, cpus=4), cfg)
    assert "2 Locust process(es)" in plan.describe(plan.build(cfg, cpus=4), cfg)


def inputs_config(tmp_path: Path, **changes) -> Config:
    for name in ("dc.yml", "dc.gpu.yml", "locustfile.py"):
        (tmp_path / name).write_text(name)
    payload = tmp_path / "images"
    payload.mkdir(exist_ok=True)
    for name in ("a.jpg", "b.jpg"):
        (payload / name).write_bytes(name.encode())
    return make_config(compose_files=(tmp_path / "dc.yml",), gpu_compose_files=(tmp_path / "dc.gpu.yml",),
                       locustfile=tmp_path / "locustfile.py", images_dir=payload, **changes)


def test_fingerprints_read_each_input_file_once_per_variant(tmp_path, monkeypatch):
    cfg = inputs_config(tmp_path)
    runs = plan.build(cfg, cpus=2).runs
    reads: list[str] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    found = plan.fingerprints(cfg, runs)
    assert sorted(found) == sorted(r.id for r in runs) and len(set(found.values())) == len(runs)
    # cpu: dc.yml, locustfile, 2 images; gpu: the same plus dc.gpu.yml; 16 points
    assert sorted(reads) == sorted(["dc.yml", "locustfile.py", "a.jpg", "b.jpg"] * 2 + ["dc.gpu.yml"])
    assert found == {r.id: plan.fingerprint(cfg, r) for r in runs}  # the same as one point at a time


def test_fingerprint_is_pure_given_the_inputs_and_follows_every_input_file(tmp_path):
    cfg = inputs_config(tmp_path)
    spec = plan.build(cfg, cpus=2).runs[0]
    inputs = plan.inputs_digest(cfg, "cpu")
    assert plan.fingerprint(cfg, spec, inputs) == plan.fingerprint(cfg, spec)
    assert plan.fingerprint(cfg, spec, inputs) != plan.fingerprint(cfg, spec, plan.inputs_digest(cfg, "gpu"))
    for changed in (tmp_path / "dc.yml", tmp_path / "locustfile.py", tmp_path / "images" / "b.jpg"):
        before = plan.fingerprint(cfg, spec)
        changed.write_text("changed")
        assert plan.fingerprint(cfg, spec) != before, changed.name
    (tmp_path / "dc.gpu.yml").write_text("changed")  # not an input of the cpu variant
    assert plan.fingerprint(cfg, spec) == plan.fingerprint(cfg, spec, plan.inputs_digest(cfg, "cpu"))
