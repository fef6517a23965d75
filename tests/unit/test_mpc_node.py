"""The node service in-process: setup, poll_once driven by the test, two-phase enrolment through
the client, stop. (Separate processes: tests/integration/test_mpc_processes.py.)"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mpc.client.cluster import MpcClient, write_cluster
from mpc.client.owner import SMALL_SPEC, node_models, random_model
from mpc.node.dealer import DealerService
from mpc.node.node import ClusterInfo, MpcNode
from splitseal.errors import ProtocolError


@pytest.fixture
def services(tmp_path):
    write_cluster(tmp_path, (1, 28, 28), 2, timeout=5.0)
    info = ClusterInfo.load(tmp_path)
    dealer = DealerService(info)
    dealer.setup()
    nodes = [MpcNode(info, p) for p in range(2)]
    for n in nodes:  # in party order: each dials the ones below it, already listening
        n.setup(connect_timeout=5)
    yield info, nodes
    for n in nodes:
        n.close()
    dealer.close()


def _serve(nodes, count=1):
    """Each node serves ``count`` requests (poll_once) in its own thread, as its process would."""
    served = [0] * len(nodes)

    def loop(i):
        for _ in range(count):
            served[i] += nodes[i].poll_once(timeout=10)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(nodes))]
    for t in threads:
        t.start()
    return threads, served


def _call(nodes, fn, requests=1):
    threads, served = _serve(nodes, requests)
    try:
        return fn()
    finally:
        for t in threads:
            t.join(15)
        assert served == [requests] * len(nodes)


def test_poll_once_serves_one_request_at_a_time(services):
    info, nodes = services
    assert nodes[0].poll_once() is False  # nothing queued: returns at once
    client = MpcClient(info)
    status = _call(nodes, client.status)
    assert [s["party"] for s in status] == [0, 1] and not status[0]["model"]
    model = random_model(SMALL_SPEC, (1, 28, 28), seed=9)
    _call(nodes, lambda: client.install(node_models(model, 2, shared=True)), requests=2)
    img = np.random.default_rng(1).random((28, 28))
    r = _call(nodes, lambda: client.enroll("alice", img), requests=2)  # enroll + commit
    assert len(r.commitments) == 2 and r.commitments[0] != r.commitments[1]
    v = _call(nodes, lambda: client.verify("alice", img, threshold=0.99))
    assert v.accepted and v.score > 0.999
    # a refused enrolment (already enrolled) is aborted on both nodes and leaves nothing pending
    with pytest.raises(ProtocolError, match="already enrolled"):
        _call(nodes, lambda: client.enroll("alice", img), requests=2)  # enroll + abort
    assert all(s["pending"] == 0 and s["enrolled"] == 1 for s in _call(nodes, client.status))
    client.close()


def test_stop_ends_run(services):
    _, nodes = services
    t = threading.Thread(target=nodes[0].run)
    t.start()
    nodes[0].stop()
    t.join(5)
    assert not t.is_alive()
