"""Transports: framing, counting, authentication of the TCP channel."""

from __future__ import annotations

import numpy as np
import pytest

from mpc.engine.channel import Listener, Roster, connect, generate_identity, load_identity
from mpc.engine.transport import Frame, decode_frame, encode_frame
from splitseal.errors import ProtocolError
from tests.support.mpc_local import run_parties
from tests.support.mpc_transports import TRANSPORT_KINDS, make_transports


def test_frame_roundtrip_and_malformed():
    f = Frame("s", "t", "data", [np.arange(6, dtype=np.uint64).reshape(2, 3), np.ones(2)], {"a": 1})
    g = decode_frame(encode_frame(f))
    assert g.session == "s" and g.tag == "t" and g.meta == {"a": 1}
    assert np.array_equal(g.arrays[0], f.arrays[0]) and g.arrays[0].dtype == np.uint64
    with pytest.raises(ProtocolError):
        decode_frame(encode_frame(f)[:-3])


@pytest.mark.parametrize("kind", TRANSPORT_KINDS)
def test_rounds_and_bytes_are_counted(kind, tmp_path):
    ts = make_transports(kind, 3, tmp_path)
    payload = np.zeros(1000, dtype=np.uint64)

    def body(p, t):
        t.begin("s")
        got = t.exchange("x", {q: [payload] for q in t.peers}, t.peers)
        t.end("s")
        return len(got)

    assert run_parties(ts, body) == [2, 2, 2]
    for t in ts:
        assert t.stats.rounds == 1
        assert t.stats.bytes_sent >= 2 * 8000 and t.stats.bytes_received >= 2 * 8000
        t.close()


def test_out_of_step_peer_is_a_protocol_error(tmp_path):
    ts = make_transports("inprocess", 2, tmp_path)

    def body(p, t):
        t.begin("s")
        t.exchange("a" if p == 0 else "b", {1 - p: [np.zeros(1, dtype=np.uint64)]}, [1 - p])

    with pytest.raises(ProtocolError, match="out of step"):
        run_parties(ts, body)


def _keys(tmp_path, names):
    roster = Roster({n: bytes.fromhex(generate_identity(tmp_path / f"{n}.key")) for n in names})
    return roster, {n: load_identity(tmp_path / f"{n}.key") for n in names}


def test_channel_authenticates_both_sides(tmp_path):
    roster, ids = _keys(tmp_path, ["node-0", "node-1", "client"])
    got = []
    lst = Listener("127.0.0.1", 0, "node-0", ids["node-0"], roster, allowed=lambda n: n == "node-1",
                   on_channel=got.append)
    ch = connect("127.0.0.1", lst.port, "node-1", ids["node-1"], roster, "node-0")
    ch.send(b"hello")
    import time
    for _ in range(200):
        if got:
            break
        time.sleep(0.01)
    assert got[0].recv()[0] == b"hello" and got[0].pair_key == ch.pair_key
    # a party the listener does not allow is refused
    with pytest.raises(ProtocolError, match="refused"):
        connect("127.0.0.1", lst.port, "client", ids["client"], roster, "node-0")
    # a key not in the roster cannot impersonate node-1: the responder drops the handshake
    _, rogue_ids = _keys(tmp_path / "rogue", ["node-1"])
    rogue = connect("127.0.0.1", lst.port, "node-1", rogue_ids["node-1"], roster, "node-0")
    with pytest.raises((ConnectionError, ProtocolError)):
        rogue.recv()
    assert len(got) == 1
    # dialling the wrong name fails
    with pytest.raises(ProtocolError, match="expected"):
        connect("127.0.0.1", lst.port, "node-1", ids["node-1"], roster, "dealer")
    ch.close()
    lst.close()
