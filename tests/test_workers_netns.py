"""Workers on other "hosts" (issue 15, section 3): `loadgrid worker` joined by hand from network namespaces (each
its own network stack, reaching this host over a veth pair only), against a master on this host's side.
Skipped without root or iproute2, except in CI, where that is a failure."""

from __future__ import annotations

import sys

import pytest
from support import netns
from support.sink_server import SinkServer
from support.target import JPEG, run_locust
from support.workers import free_port, log_text, workers

from loadgrid.plan import RunSpec


@pytest.fixture(autouse=True)
def _namespaces_usable():
    netns.require()


def test_workers_in_network_namespaces_join_by_hand_and_send_from_their_own_addresses(tmp_path):
    port = free_port()
    with SinkServer(delay_s=0.005, bind="0.0.0.0") as sink, netns.hosts(2) as hosts:
        sink_port = sink.url.rsplit(":", 1)[1]
        # Each namespace reaches this host only at its own veth's far end: the master and the target are there.
        commands = [h.command([sys.executable, "-m", "loadgrid.worker", "--master", f"{h.peer_ip}:{port}", "--once",
                               "--name", f"ns{i}", "--target", f"http://{h.peer_ip}:{sink_port}"])
                    for i, h in enumerate(hosts)]
        with workers(commands, tmp_path / "logs") as procs:
            result = run_locust(tmp_path, sink.url, RunSpec("target", 1, 6, 6.0, 6, 1), JPEG, workers=2,
                                master_port=port, master_bind="*", worker_wait_s=40)
            codes = [p.wait(timeout=40) for p in procs]
        clients = {seen.client for seen in sink.seen}
        addresses = {h.ip for h in hosts}
    assert result.error is None, (result.error, log_text(tmp_path / "logs"))
    assert codes == [0, 0]
    gen = result.generator
    assert sorted(w.name for w in gen.workers) == ["ns0", "ns1"]
    assert gen.distributed.joined == 2 and gen.distributed.reconciled
    # Every request came from inside a namespace (the master here runs no users), from both of them.
    assert clients == addresses
    assert all(w.requests > 50 for w in gen.workers)
