"""tests/support/netns: namespaces as separate hosts on one machine. Each reaches this host's end of its veth and
nothing else, gets its own address, and is gone (namespace, veth, processes inside) when the context exits, however
it exits. Skipped without root or iproute2, except in CI (CI set), where that is a failure."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from support import netns
from support.engine import wait_for

# Run inside a namespace: connect, send b"ping", print the reply, or the errno's name when the connection fails.
CLIENT = """
import errno, json, socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
        s.sendall(b"ping")
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(100):
            reply += chunk
    print(json.dumps({"reply": reply.decode()}))
except OSError as e:
    print(json.dumps({"error": errno.errorcode.get(e.errno, str(e))}))
"""


@pytest.fixture(autouse=True)
def _namespaces_usable():
    netns.require()


@dataclass
class EchoServer:
    """A TCP server in a thread of the test process: answers b"pong:" + what it got, and records who connected."""

    bind: str
    peers: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.sock = socket.socket()
        self.sock.bind((self.bind, 0))
        self.sock.listen()
        self.sock.settimeout(0.2)  # so the thread sees `stopped` within that bound
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, (peer, _) = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                data = b""
                while chunk := conn.recv(100):
                    data += chunk
                self.peers.append(peer)
                conn.sendall(b"pong:" + data)


@contextmanager
def echo_server(bind: str) -> Iterator[EchoServer]:
    server = EchoServer(bind)
    server.thread.start()
    try:
        yield server
    finally:
        server.stopped.set()
        server.thread.join(timeout=5)
        server.sock.close()


def connect_from(host: netns.Host, address: str, port: int) -> dict:
    done = subprocess.run(host.command([sys.executable, "-c", CLIENT, address, str(port)]), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def host_addresses() -> list[str]:
    """This machine's own IPv4 addresses outside loopback (eth0's, docker0's, ...)."""
    links = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True).stdout)
    return [a["local"] for link in links for a in link.get("addr_info", []) if not a["local"].startswith("127.")]


def test_a_namespace_reaches_a_server_on_its_peer_address():
    with netns.hosts(1) as [host], echo_server(host.peer_ip) as server:
        assert connect_from(host, host.peer_ip, server.port) == {"reply": "pong:ping"}
        # The server saw the namespace's own address: traffic came over the veth, not some other way.
        assert server.peers == [host.ip]


def test_a_namespace_reaches_nothing_else():
    with netns.hosts(2) as [host, other], echo_server("0.0.0.0") as server:
        # Its loopback is its own: nothing listens there, although this host's server does on 127.0.0.1.
        assert connect_from(host, "127.0.0.1", server.port) == {"error": "ECONNREFUSED"}
        # No default route: this host's other addresses, and another namespace, are unreachable from inside.
        outside = [a for a in host_addresses() if a not in (host.peer_ip, other.peer_ip)]
        assert outside, "the machine has an address besides the namespaces' peers"
        for address in [*outside, other.ip, "192.0.2.123"]:
            assert connect_from(host, address, server.port) == {"error": "ENETUNREACH"}, address
        routes = subprocess.run(["ip", "-n", host.name, "route"], capture_output=True, text=True).stdout
        assert "default" not in routes and len(routes.splitlines()) == 1, routes
        assert connect_from(host, host.peer_ip, server.port) == {"reply": "pong:ping"}
        assert server.peers == [host.ip]  # none of the failed attempts reached this host


def test_hosts_get_distinct_names_addresses_and_veths():
    with netns.hosts(3) as hosts:
        for field_name in ("name", "ip", "peer_ip", "ifname"):
            assert len({getattr(h, field_name) for h in hosts}) == 3, hosts
        assert not {h.ip for h in hosts} & {h.peer_ip for h in hosts}
        assert all(len(h.ifname) <= netns.IFNAMSIZ for h in hosts)
        with netns.hosts(1) as [nested]:  # a second call in the same process: its own names and /30
            assert nested.name not in {h.name for h in hosts}
            assert nested.ip not in {h.ip for h in hosts} | {h.peer_ip for h in hosts}
        for host in hosts:
            assert connect_inside(host) == host.ip


def connect_inside(host: netns.Host) -> str:
    """The namespace's address, as the namespace itself reports it on its eth0."""
    shown = subprocess.run(host.command(["ip", "-j", "-4", "addr", "show", "dev", netns.INNER_IFNAME]),
                           capture_output=True, text=True, check=True).stdout
    [addr] = json.loads(shown)[0]["addr_info"]
    return addr["local"]


def assert_gone(hosts: list[netns.Host]) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
    for host in hosts:
        assert host.name not in listed, listed
        assert f" {host.ifname}@" not in links and f" {host.ifname}:" not in links, links


def test_teardown_removes_namespaces_veths_and_processes_inside():
    with netns.hosts(2) as hosts:
        made = list(hosts)
        assert {h.name for h in made} <= set(netns.namespaces())
        sleeper = subprocess.Popen(made[0].command(["sleep", "600"]))
        wait_for(lambda: subprocess.run(["ip", "netns", "pids", made[0].name], capture_output=True,
                                        text=True).stdout.split(), 10, "the sleeper inside the namespace")
    assert sleeper.wait(timeout=10) == -9  # killed by the teardown, not left running
    assert_gone(made)


@pytest.mark.parametrize("error", [RuntimeError("the body failed"), KeyboardInterrupt()])
def test_teardown_happens_when_the_body_raises(error):
    made = []
    with pytest.raises(type(error)), netns.hosts(2) as hosts:
        made.extend(hosts)
        raise error
    assert len(made) == 2
    assert_gone(made)


def test_cleanup_stale_removes_only_namespaces_of_dead_processes():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.PREFIX}{dead.pid}h0"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        subprocess.run(["ip", "link", "add", f"{stale}v", "type", "veth", "peer", "name", "eth0", "netns", stale],
                       check=True)
        with netns.hosts(1) as [live]:
            assert netns.cleanup_stale() == [stale]
            assert stale not in netns.namespaces() and live.name in netns.namespaces()
            links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
            assert f" {stale}v@" not in links and f" {live.ifname}@" in links
    finally:
        subprocess.run(["ip", "link", "del", f"{stale}v"], capture_output=True)
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
