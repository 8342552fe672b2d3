"""backend: swarm without Docker: the v3 stack file rendered from what Compose resolved, what Swarm cannot run
refused in one line each before anything starts, the swarm-manager check, and the monitor on Swarm's labels."""

from __future__ import annotations

import copy
import json
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.fake_docker import FakeContainer, FakeStream, frames_v2, wait_until

from loadgrid import backend, config, swarm
from loadgrid.errors import UserError
from loadgrid.monitor import Monitor
from loadgrid.swarm import SwarmStack

ROOT = Path(__file__).resolve().parents[1]

# `docker compose config --format json` of the bundled docker-compose.yml (Compose v2, gateway on port 18099)
MODEL = {
    "name": "lgsw-x",
    "networks": {"default": {"name": "lgsw-x_default", "ipam": {}}},
    "services": {
        "gateway": {
            "build": {"context": "/p/gateway", "dockerfile": "Dockerfile", "args": {"BASE_IMAGE": "python:3.11-slim"}},
            "command": None,
            "depends_on": {"model": {"condition": "service_started", "required": True}},
            "entrypoint": None,
            "healthcheck": {"interval": "5s"},
            "image": "loadgrid-gateway:latest",
            "networks": {"default": None},
            "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 8080, "published": "18099",
                       "protocol": "tcp"}],
        },
        "model": {
            "build": {"context": "/p/model_service", "dockerfile": "Dockerfile"},
            "command": None,
            "entrypoint": None,
            "environment": {"DEVICE": "cpu", "INTRA_OP_THREADS": "1"},
            "healthcheck": {"timeout": "3s", "interval": "5s", "retries": 3, "start_period": "1m0s",
                            "start_interval": "1s"},
            "image": "loadgrid-model:cpu",
            "networks": {"default": None},
            "cpus": 1.5,
            "mem_limit": "512m",
        },
    },
}


def with_service(**changes) -> dict:
    model = copy.deepcopy(MODEL)
    model["services"]["model"].update(changes)
    return model


# --- rendering ---------------------------------------------------------------------------------------------

def test_render_makes_a_v3_stack_file_swarm_can_deploy():
    out = swarm.render(MODEL, "model", 2)
    assert out["version"] == "3.8" and "name" not in out
    gateway, model = out["services"]["gateway"], out["services"]["model"]
    for service in (gateway, model):
        # stack deploy refuses long-form depends_on and ignores build: loadgrid builds with compose first
        assert not {"build", "depends_on", "command", "entrypoint"} & set(service)
        # the service's DNS name answers every task (a VIP does not route on every engine)
        assert service["deploy"]["endpoint_mode"] == "dnsrr"
    assert model["deploy"]["replicas"] == 2 and "replicas" not in gateway["deploy"]
    # host-mode long form (no ingress mesh), and the loopback address Swarm cannot bind dropped
    assert gateway["ports"] == [{"target": 8080, "protocol": "tcp", "mode": "host", "published": 18099}]
    # the local images just built, by name
    assert (gateway["image"], model["image"]) == ("loadgrid-gateway:latest", "loadgrid-model:cpu")
    # a v3 healthcheck: what it knows, as Compose resolved it
    assert model["healthcheck"] == {"timeout": "3s", "interval": "5s", "retries": 3, "start_period": "1m0s"}
    assert gateway["healthcheck"] == {"interval": "5s"}  # the image's test stays (Docker merges it)
    # a replica's share of the machine is the same as on Compose
    assert model["deploy"]["resources"] == {"limits": {"cpus": "1.5", "memory": "512m"}}
    assert "cpus" not in model and "mem_limit" not in model
    # Swarm names the network <stack>_default itself
    assert out["networks"] == {"default": {}}
    assert MODEL["services"]["gateway"]["ports"][0]["host_ip"] == "127.0.0.1"  # the model is not changed


def test_render_with_a_registry_deploys_by_the_registry_name():
    out = swarm.render(MODEL, "model", 1, registry="registry.example.com:5000")
    assert out["services"]["model"]["image"] == "registry.example.com:5000/loadgrid-model:cpu"
    assert out["services"]["gateway"]["image"] == "registry.example.com:5000/loadgrid-gateway:latest"
    assert swarm.registry_image("reg:5000/", "other.io:443/team/img:1") == "reg:5000/team/img:1"
    assert swarm.registry_image("reg:5000", "team/img:1") == "reg:5000/team/img:1"


def test_rendered_file_is_yaml_that_stack_deploy_reads(tmp_path):
    import yaml

    text = yaml.safe_dump(swarm.render(MODEL, "model", 3), sort_keys=False)
    assert yaml.safe_load(text)["services"]["model"]["deploy"]["replicas"] == 3


def test_bind_volume_keeps_only_what_v3_knows():
    volume = {"type": "bind", "source": "/data", "target": "/data", "bind": {"create_host_path": True}}
    out = swarm.render(with_service(volumes=[volume]), "model", 1)
    assert out["services"]["model"]["volumes"] == [{"type": "bind", "source": "/data", "target": "/data"}]


# --- refusals ----------------------------------------------------------------------------------------------

def test_the_bundled_stack_is_not_refused():
    assert swarm.refusals(MODEL, "docker-compose.yml") == []


def test_gpu_device_reservations_are_refused_with_generic_resources_as_the_fix():
    gpu = {"resources": {"reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}}}
    [line] = swarm.refusals(with_service(deploy=gpu), "docker-compose.gpu.yml")
    assert line.startswith("docker-compose.gpu.yml: service model: GPU device reservations")
    assert "generic_resources" in line and "\n" not in line


def test_container_name_is_refused():
    [line] = swarm.refusals(with_service(container_name="m1"), "c.yml")
    assert "container_name 'm1'" in line and "remove container_name" in line


def test_a_host_address_binding_is_refused_but_loopback_is_dropped():
    port = {"mode": "ingress", "host_ip": "10.1.2.3", "target": 8000, "published": "9000", "protocol": "tcp"}
    [line] = swarm.refusals(with_service(ports=[port]), "c.yml")
    assert "10.1.2.3:9000 binds a host address" in line and '"9000:8000"' in line
    for loopback in ("127.0.0.1", "::1", "localhost"):
        assert swarm.refusals(with_service(ports=[{**port, "host_ip": loopback}]), "c.yml") == []
    # ... and said: the port is then on every interface
    [warning] = swarm.dropped_addresses(MODEL)
    assert "gateway publishes 127.0.0.1:18099" in warning and "every interface" in warning


def test_keys_stack_deploy_would_ignore_are_refused():
    [line] = swarm.refusals(with_service(cpuset="0-1", privileged=True), "c.yml")
    assert "cpuset, privileged are not read by docker stack deploy" in line


def test_not_a_manager_says_docker_swarm_init():
    assert swarm.manager_problem("active true\n") is None
    inactive = swarm.manager_problem("inactive false\n")
    assert "docker swarm init" in inactive and "not in a swarm" in inactive
    assert "docker node promote" in swarm.manager_problem("active false")


class FakeDockerCLI:
    """`_run` as SwarmStack calls it, answering from a table; records every command."""

    def __init__(self, answers: dict[tuple[str, ...], str]):
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, cmd, *, timeout, env=None, check=True, log_path=None):
        self.calls.append(cmd)
        for prefix, out in self.answers.items():
            if tuple(cmd[:len(prefix)]) == prefix:
                return subprocess.CompletedProcess(cmd, 0, out, "")
        if cmd[:2] == ["docker", "compose"] and "config" in cmd:
            return subprocess.CompletedProcess(cmd, 0, json.dumps(self.model), "")
        raise AssertionError(f"unexpected command {cmd}")

    model = MODEL


def fake_stack(monkeypatch, answers, model=MODEL) -> tuple[SwarmStack, FakeDockerCLI]:
    cli = FakeDockerCLI(answers)
    cli.model = model
    monkeypatch.setattr(swarm, "_run", cli)
    monkeypatch.setattr("loadgrid.stack._run", cli)
    return SwarmStack("lg-cpu", (ROOT / "docker-compose.yml",), "model"), cli


def test_validate_refuses_before_anything_starts_when_not_a_manager(monkeypatch):
    stack, cli = fake_stack(monkeypatch, {("docker", "info"): "inactive false\n"})
    with pytest.raises(UserError) as err:
        stack.validate()
    assert len(err.value.messages) == 1 and "docker swarm init" in str(err.value)
    assert not any(c[1] in ("stack", "service", "build") or "build" in c for c in cli.calls)


def test_validate_refuses_every_problem_one_line_each(monkeypatch):
    model = with_service(container_name="m", ports=[{"host_ip": "10.0.0.1", "target": 1, "published": "2"}])
    stack, cli = fake_stack(monkeypatch, {("docker", "info"): "active true\n"}, model)
    with pytest.raises(UserError) as err:
        stack.validate()
    assert len(err.value.messages) == 2
    assert not any(c[:2] == ["docker", "stack"] or "build" in c for c in cli.calls)


def test_a_swarm_of_several_nodes_needs_a_registry(monkeypatch):
    answers = {("docker", "info"): "active true\n", ("docker", "node", "ls"): "n1\nn2\n"}
    stack, _ = fake_stack(monkeypatch, answers)
    with pytest.raises(UserError, match="set registry:"):
        stack.validate()
    stack.registry = "reg:5000"
    assert stack.validate() == ["gateway", "model"]
    assert stack.deploy_registry == "reg:5000"


def test_one_node_deploys_local_images_even_with_a_registry(monkeypatch, tmp_path):
    answers = {("docker", "info"): "active true\n", ("docker", "node", "ls"): "n1\n", ("docker", "stack"): ""}
    stack, cli = fake_stack(monkeypatch, answers)
    stack.registry, stack.work_dir = "reg:5000", tmp_path
    stack.validate()
    stack.deploy(1)
    [deploy] = [c for c in cli.calls if c[:3] == ["docker", "stack", "deploy"]]
    assert "never" in deploy and deploy[-1] == "lg-cpu"
    assert "image: loadgrid-model:cpu" in stack.stack_file.read_text()


def test_replicas_are_the_running_tasks_with_their_node(monkeypatch):
    tasks = [{"ID": "t1", "DesiredState": "running", "NodeID": "n1", "Slot": 1,
              "Status": {"State": "running", "ContainerStatus": {"ContainerID": "c1" * 32}}},
             {"ID": "t0", "DesiredState": "shutdown", "NodeID": "n1", "Slot": 1,
              "Status": {"State": "failed", "ContainerStatus": {"ContainerID": "c0" * 32}}},
             {"ID": "t2", "DesiredState": "running", "NodeID": "n2", "Slot": 2,
              "Status": {"State": "running", "ContainerStatus": {"ContainerID": "c2" * 32}}}]
    local = {"Id": "c1" * 32, "Name": "/lg-cpu_model.1.t1", "State": {"Status": "running",
             "Health": {"Status": "healthy"}}, "Image": "sha256:x"}

    def run(cmd, *, timeout, env=None, check=True, log_path=None):
        if cmd[:3] == ["docker", "service", "ps"]:
            return subprocess.CompletedProcess(cmd, 0, "t1\nt0\nt2\n", "")
        if cmd[:4] == ["docker", "inspect", "--type", "task"]:
            return subprocess.CompletedProcess(cmd, 0, json.dumps(tasks), "")
        if cmd[:4] == ["docker", "inspect", "--type", "container"]:
            found = cmd[4] == local["Id"]  # the other node's container is not inspectable from here
            return subprocess.CompletedProcess(cmd, 0 if found else 1, json.dumps([local]) if found else "[]", "")
        if cmd[:3] == ["docker", "node", "ls"]:
            return subprocess.CompletedProcess(cmd, 0, "n1 alpha\nn2 beta\n", "")
        raise AssertionError(cmd)

    monkeypatch.setattr(swarm, "_run", run)
    found = SwarmStack("lg-cpu", (ROOT / "docker-compose.yml",), "model").replicas()
    assert [(r.name, r.node, r.health, r.ready) for r in found] == [
        ("lg-cpu_model.1.t1", "alpha", "healthy", True), ("lg-cpu_model.2", "beta", None, True)]
    assert found[1].container_id == "c2" * 32


def test_backend_swarm_makes_a_swarm_stack():
    cfg = config.from_mapping({"num_models_list": [1], "num_users_list": [1], "run_time": "5s",
                               "host": "http://127.0.0.1:18099", "backend": "swarm", "registry": "reg:5000",
                               "compose_files": [str(ROOT / "docker-compose.yml")]}, base=ROOT, environ={})
    stack = backend.make_stack(cfg, "cpu")
    assert isinstance(stack, SwarmStack) and isinstance(stack, backend.Stack)
    assert (stack.project, stack.swarm_service, stack.registry) == ("loadgrid-cpu", "loadgrid-cpu_model", "reg:5000")
    assert stack.env["LOADGRID_GATEWAY_PORT"] == "18099"
    assert isinstance(backend.make_stack(config.from_mapping(
        {"num_models_list": [1], "num_users_list": [1], "run_time": "5s", "host": "http://127.0.0.1:18099",
         "compose_files": [str(ROOT / "docker-compose.yml")]}, base=ROOT, environ={}), "cpu"),
        backend.ComposeStack)


def test_registry_key_is_checked():
    with pytest.raises(UserError, match="config: registry: got 'http://r/'"):
        config.from_mapping({"num_models_list": [1], "num_users_list": [1], "run_time": "5s",
                             "host": "http://127.0.0.1:1", "registry": "http://r/"}, base=ROOT, environ={})


# --- the monitor on Swarm's labels ---------------------------------------------------------------------------

class SwarmDocker:
    def __init__(self, containers, events):
        self._containers, self._events = containers, events
        self.containers = SimpleNamespace(list=self._list)
        self.filters: list = []

    def _list(self, filters=None):
        self.filters.append(filters)
        return self._containers

    def events(self, since=None, decode=True, filters=None):
        self.filters.append(filters)
        return FakeStream(self._events, hold=threading.Event())


def test_monitor_watches_a_stacks_task_containers_by_swarms_labels(monkeypatch):
    labels = {"com.docker.stack.namespace": "lg-cpu", "com.docker.swarm.service.name": "lg-cpu_model"}
    died = {"Type": "container", "Action": "die", "id": "abc123abc123ff", "timeNano": 1_767_261_610_500_000_000,
            "Actor": {"Attributes": {"name": "lg-cpu_model.1.x", "exitCode": "137", **labels}}}
    task = FakeContainer("lg-cpu_model.1.x", frames_v2(3), attrs={"Config": {"Labels": labels}, "HostConfig": {}})
    client = SwarmDocker([task], [died])
    monkeypatch.setattr("docker.from_env", lambda **kwargs: client)
    failed_elsewhere = {"ID": "t9", "Slot": 2, "DesiredState": "shutdown", "NodeID": "n2",
                        "Status": {"State": "failed", "Timestamp": "2999-01-01T00:00:00.5Z",
                                   "ContainerStatus": {"ContainerID": "ffee" * 16, "ExitCode": 139}}}
    monkeypatch.setattr(swarm, "_run", swarm_cli({
        ("docker", "info"): "n1\n", ("docker", "node", "ls"): "n1 alpha\nn2 beta\n",
        ("docker", "stack", "ps"): "lg-cpu_model.1 alpha\nlg-cpu_model.2 beta\nlg-cpu_gateway.1 alpha\n",
        ("docker", "service", "ps"): "t9\n", ("docker", "inspect", "--type", "task"): json.dumps([failed_elsewhere])}))
    mon = SwarmStack("lg-cpu", (ROOT / "docker-compose.yml",), "model").monitor()
    with mon:
        assert wait_until(lambda: len(mon.telemetry.containers.get("lg-cpu_model.1.x", [])) == 3 and mon.events)
    assert client.filters == [{"type": "container", "label": "com.docker.stack.namespace=lg-cpu"},
                              {"label": "com.docker.stack.namespace=lg-cpu"}]
    # the engine's event here, and the task that failed on the other node from Swarm's task state
    assert [(e.action, e.exit_code, e.service, e.name) for e in mon.replica_events()] == [
        ("die", 137, "model", "lg-cpu_model.1.x"), ("die", 139, "model", "lg-cpu_model.2")]
    summary = mon.telemetry.summary()
    assert summary["containers"]["lg-cpu_model.1.x"]["service"] == "model"
    # what runs on another node is said, not left out
    assert list(summary["containers_unreached"]) == ["lg-cpu_model.2"]
    assert "runs on node beta" in summary["containers_unreached"]["lg-cpu_model.2"]


def swarm_cli(answers: dict[tuple[str, ...], str]):
    def run(cmd, *, timeout, env=None, check=True, log_path=None):
        for prefix, out in answers.items():
            if tuple(cmd[:len(prefix)]) == prefix:
                return subprocess.CompletedProcess(cmd, 0, out, "")
        raise AssertionError(cmd)
    return run


def test_task_events_are_the_tasks_that_failed_during_the_run():
    def task(state, stamp, code=1):
        return {"ID": "t" + stamp[-4:], "Slot": 1, "Status": {"State": state, "Timestamp": stamp,
                "ContainerStatus": {"ContainerID": "c" + stamp[-4:-1] * 10, "ExitCode": code}}}

    since = swarm._epoch("2026-12-02T20:00:00Z")
    assert since == 1796241600.0 and swarm._epoch("2026-12-02T20:00:00.250000000Z") == since + 0.25
    tasks = [task("failed", "2026-12-02T19:59:59.9Z"), task("failed", "2026-12-02T20:00:01.123Z", 137),
             task("shutdown", "2026-12-02T20:00:02.000Z"), task("rejected", "2026-12-02T20:00:03.000Z", None),
             task("running", "2026-12-02T20:00:04.000Z")]
    found = swarm.task_events(tasks, since, "model", "lg_model")
    assert [(e.exit_code, e.name, round(e.time - since, 3)) for e in found] == [(137, "lg_model.1", 1.123),
                                                                                (None, "lg_model.1", 3.0)]
    assert swarm._epoch("not a time") is None


def test_compose_monitor_is_unchanged():
    assert Monitor.__init__.__defaults__[-2:] == ("com.docker.compose.project", "com.docker.compose.service")


def test_a_task_that_fails_while_a_size_starts_fails_it_with_swarms_reason(monkeypatch):
    failed = {"ID": "tnew", "DesiredState": "shutdown", "Slot": 1,
              "Status": {"State": "failed", "Err": "task: non-zero exit (1)"}}
    calls = []

    def run(cmd, *, timeout, env=None, check=True, log_path=None):
        calls.append(cmd)
        if cmd[:3] == ["docker", "service", "ls"]:
            return subprocess.CompletedProcess(cmd, 0, "lg-cpu_model\n", "")
        if cmd[:3] == ["docker", "service", "ps"]:
            return subprocess.CompletedProcess(cmd, 0, "tnew\n" if any(c[:3] == ["docker", "service", "scale"]
                                                                       for c in calls) else "", "")
        if cmd[:4] == ["docker", "inspect", "--type", "task"]:
            return subprocess.CompletedProcess(cmd, 0, json.dumps([failed]), "")
        if cmd[:3] in (["docker", "service", "scale"], ["docker", "node", "ls"]):
            return subprocess.CompletedProcess(cmd, 0, "", "")
        raise AssertionError(cmd)

    monkeypatch.setattr(swarm, "_run", run)
    stack = SwarmStack("lg-cpu", (ROOT / "docker-compose.yml",), "model")
    with pytest.raises(swarm.StackError, match=r"expected 1 healthy model tasks, found 0 \(none\); failed tasks: "
                                                r"tnew failed: task: non-zero exit \(1\)"):
        stack.scale(1, timeout_s=30)
    assert ["docker", "service", "scale", "--detach", "lg-cpu_model=1"] in calls


def test_down_waits_until_nothing_of_the_stack_is_left(monkeypatch):
    left = {"n": 3}  # polls that still find a network
    calls = []

    def run(cmd, *, timeout, env=None, check=True, log_path=None):
        calls.append(cmd)
        if cmd[:3] == ["docker", "network", "ls"] and left["n"] > 0:
            left["n"] -= 1
            return subprocess.CompletedProcess(cmd, 0, "abcdef123456\n", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(swarm, "_run", run)
    SwarmStack("lg-cpu", (ROOT / "docker-compose.yml",), "model").down()
    assert calls[0] == ["docker", "stack", "rm", "lg-cpu"] and left["n"] == 0
    assert calls[-3:] == [[*c, "--quiet", "--filter", "label=com.docker.stack.namespace=lg-cpu"] for c in
                          (["docker", "service", "ls"], ["docker", "network", "ls"], ["docker", "ps", "--all"])]


def test_down_says_what_is_still_there_after_its_bound(monkeypatch):
    monkeypatch.setattr(swarm, "DOWN_TIMEOUT_S", 0)
    monkeypatch.setattr(swarm, "_run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0, "c0ffee000000\n" if cmd[:3] == ["docker", "ps", "--all"] else "", ""))
    with pytest.raises(swarm.StackError, match="still there after 0s: container c0ffee000000"):
        SwarmStack("lg-cpu", (ROOT / "docker-compose.yml",), "model").down()
