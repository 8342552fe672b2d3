"""The planner: order that reuses stacks, names, counts; pure, no Docker."""

from __future__ import annotations

from pathlib import Path

from loadgrid import plan
from loadgrid.config import Config


def make_config(**changes) -> Config:
    values = dict(num_models_list=(1, 2), num_users_list=(10, 50), spawn_rate_list=(1.0, 10.0), run_time_s=60,
                  host="http://localhost:8080", variants=("cpu", "gpu"), compose_files=(Path("/s/dc.yml"),),
                  gpu_compose_files=(Path("/s/dc.gpu.yml"),), output_dir=Path("/out"))
    values.update(changes)
    return Config(**values)


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
