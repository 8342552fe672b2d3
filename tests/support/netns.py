"""Several "hosts" on one machine: Linux network namespaces, each joined to this host by a veth pair.

A test that needs Locust workers on other machines runs them inside these namespaces instead: each namespace has its
own loopback and one interface on a private /30 whose other end (`peer_ip`) is on this host. There is no default
route inside, so a namespace reaches this host's `peer_ip` and nothing else (traffic never leaves the machine).

    problem = netns.available()         # None, or why namespaces cannot be used here (see require())
    with netns.hosts(2) as (a, b):
        subprocess.run(a.command(["python3", "-c", "..."]))

Needs root and iproute2. Every namespace and host-side veth made here is removed on exit, also when the body raises
or is interrupted, after killing what still runs inside; cleanup_stale() removes what a killed test run left.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

PREFIX = "lg"
# A /16 that home routers, clouds and Docker's default pools leave alone; each host gets one /30 of it, and any /30
# already routed or addressed on this machine is passed over.
POOL = ipaddress.ip_network("10.213.0.0/16")
NAME = re.compile(rf"^{PREFIX}(\d+)h(\d+)$")  # lg<pid>h<k>: the pid of the test process that made it
IFNAMSIZ = 15  # the kernel's limit for an interface name
INNER_IFNAME = "eth0"  # the namespace's own end of the pair, named as a real host's interface would be
# Held while choosing names and addresses and creating them, so two test processes never pick the same /30.
LOCK = Path(tempfile.gettempdir()) / "loadgrid-netns.lock"

_next_index = 0  # k in lg<pid>h<k>: never reused within a process, so nested or repeated hosts() never collide


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    ip: str  # its address, inside the namespace
    peer_ip: str  # this host's end: the only address the namespace can reach
    ifname: str  # the host-side veth

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


@lru_cache(maxsize=1)
def available() -> str | None:
    """None when namespaces with veth pairs can be made here, else why not (a reason for pytest.skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "no ip command (apt-get install iproute2)"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add fails: {made.stderr.strip()}"
    try:
        # A container without the veth module, or without CAP_NET_ADMIN, can add a namespace but no pair.
        pair = _ip("link", "add", f"{PREFIX}{os.getpid()}pv", "type", "veth", "peer", "name", INNER_IFNAME,
                   "netns", probe, check=False)
        if pair.returncode != 0:
            return f"ip link add type veth fails: {pair.stderr.strip()}"
        return None
    finally:
        _ip("link", "del", f"{PREFIX}{os.getpid()}pv", check=False)
        _ip("netns", "del", probe, check=False)


def require() -> None:
    """Skip the calling test when namespaces cannot be used here, except in CI (CI set), where that is a failure:
    as the Docker and browser tests, a skipped check there would hide a broken set-up."""
    problem = available()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the network-namespace tests, but: {problem} (run them as root with iproute2)")
    pytest.skip(problem)


def namespaces() -> list[str]:
    listed = _ip("-j", "netns", "list").stdout.strip()
    return [entry["name"] for entry in json.loads(listed or "[]")]


def _links() -> list[str]:
    return [link["ifname"] for link in json.loads(_ip("-j", "link", "show").stdout or "[]")]


def _taken_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine routes (any table) or has an address on; default routes aside, which cover
    everything and mean "elsewhere", not "here"."""
    taken = []
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        if route.get("dst") not in (None, "default"):
            taken.append(ipaddress.ip_network(route["dst"], strict=False))
    for link in json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]"):
        for addr in link.get("addr_info", []):
            taken.append(ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    return taken


def _free_subnets(n: int) -> list[ipaddress.IPv4Network]:
    taken = _taken_networks()
    free = [net for net in POOL.subnets(new_prefix=30) if not any(net.overlaps(t) for t in taken)][:n]
    if len(free) < n:
        raise RuntimeError(f"only {len(free)} free /30 left in {POOL} for {n} namespaces")
    return free


def _kill_inside(name: str, timeout_s: float = 10.0) -> None:
    """SIGKILL what runs in the namespace and wait, bounded, until nothing does (a process still inside keeps the
    namespace, and its veth, alive after `ip netns del`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = [int(p) for p in _ip("netns", "pids", name, check=False).stdout.split()]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} still run in namespace {name} after SIGKILL")
        for pid in pids:
            with suppress(ProcessLookupError):  # it ended on its own meanwhile
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _remove(name: str, ifname: str) -> list[str]:
    """Remove one namespace and its host-side veth; each step is tried whatever the others did. Returns problems."""
    problems = []
    existing = namespaces()
    if name in existing:
        try:
            _kill_inside(name)
        except RuntimeError as e:
            problems.append(str(e))
    # Deleting our end destroys the pair at once; left to `ip netns del`, it would go only when the kernel gets
    # round to freeing the namespace.
    if ifname in _links():
        done = _ip("link", "del", ifname, check=False)
        if done.returncode != 0:
            problems.append(f"ip link del {ifname}: {done.stderr.strip()}")
    if name in existing:
        done = _ip("netns", "del", name, check=False)
        if done.returncode != 0:
            problems.append(f"ip netns del {name}: {done.stderr.strip()}")
    return problems


def _host_ifname(name: str) -> str:
    return f"{name}v"


@contextmanager
def _locked() -> Iterator[None]:
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _create(name: str, subnet: ipaddress.IPv4Network) -> Host:
    outer, inner = list(subnet.hosts())  # a /30 has two: .1 on this host, .2 in the namespace
    host = Host(name=name, ip=str(inner), peer_ip=str(outer), ifname=_host_ifname(name))
    _ip("netns", "add", name)
    _ip("link", "add", host.ifname, "type", "veth", "peer", "name", INNER_IFNAME, "netns", name)
    _ip("addr", "add", f"{host.peer_ip}/{subnet.prefixlen}", "dev", host.ifname)
    _ip("link", "set", host.ifname, "up")
    _ip("-n", name, "addr", "add", f"{host.ip}/{subnet.prefixlen}", "dev", INNER_IFNAME)
    _ip("-n", name, "link", "set", INNER_IFNAME, "up")
    _ip("-n", name, "link", "set", "lo", "up")
    # Only the /30's own route exists inside, and no default: anything but peer_ip is unreachable from there.
    return host


@contextmanager
def hosts(n: int) -> Iterator[list[Host]]:
    """`n` namespaces, each with its own /30 to this host; all removed on exit, whatever happens in the body."""
    global _next_index
    made: list[tuple[str, str]] = []  # (namespace, host-side veth), recorded before each is created
    made_hosts: list[Host] = []
    try:
        with _locked():
            existing = set(namespaces()) | set(_links())
            for subnet in _free_subnets(n):
                while True:
                    name = f"{PREFIX}{os.getpid()}h{_next_index}"
                    _next_index += 1
                    # A namespace of a dead process that had our pid: leave it to cleanup_stale, take the next k.
                    if name not in existing and _host_ifname(name) not in existing:
                        break
                assert len(_host_ifname(name)) <= IFNAMSIZ, name
                made.append((name, _host_ifname(name)))
                made_hosts.append(_create(name, subnet))
        yield made_hosts
    finally:
        problems = [problem for name, ifname in reversed(made) for problem in _remove(name, ifname)]
        if problems:
            raise RuntimeError("network namespace teardown: " + "; ".join(problems))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Remove namespaces (and their host-side veths) named lg<pid>h<k> whose pid no longer runs: what a test run
    killed before its teardown left behind. Returns the namespaces removed."""
    stale = [name for name in namespaces() if (m := NAME.match(name)) and not _alive(int(m.group(1)))]
    problems = [problem for name in stale for problem in _remove(name, _host_ifname(name))]
    if problems:
        raise RuntimeError("removing stale network namespaces: " + "; ".join(problems))
    return stale
