"""A requester's inputs to the node's input key in a session (docs/PROTOCOL.md, "Transfer
sessions"): the node opens each with its session keys or with its key pair alone, and the AAD still
binds each input to its model, version and requester key."""

from __future__ import annotations

import numpy as np
import pytest

from chain_node.inputs import InputProblem, open_input, seal_input
from splitseal.protocol import FailureCode, crypto

MODEL = b"\x07" * 32


def test_a_requesters_inputs_share_a_session_and_each_opens_alone_at_the_node():
    node_key, requester = crypto.X25519KeyPair.generate(), crypto.X25519KeyPair.generate()
    session, node_keys = crypto.TransferSession(), crypto.SessionKeys(node_key)
    xs = [np.full((1, 4), i, dtype=np.float32) for i in range(3)]
    sealed = [seal_input(node_key.public, MODEL, 1, requester.public, x, session=session) for x in xs]
    parts = [crypto.ecies_ephemeral_and_nonce(ct) for ct in sealed]
    assert len({e for e, _ in parts}) == 1 and len({n for _, n in parts}) == 3 and session.sessions == 1
    for x, ct in zip(xs, sealed):
        np.testing.assert_array_equal(open_input(node_keys, MODEL, 1, requester.public, ct), x)
        np.testing.assert_array_equal(open_input(node_key, MODEL, 1, requester.public, ct), x)
    assert len(node_keys) == 1  # one exchange for the session
    alone = seal_input(node_key.public, MODEL, 1, requester.public, xs[0])  # no session: ECIES of its own
    assert crypto.ecies_ephemeral_and_nonce(alone)[0] != parts[0][0]
    np.testing.assert_array_equal(open_input(node_keys, MODEL, 1, requester.public, alone), xs[0])
    for model, version, key in ((b"\x08" * 32, 1, requester.public), (MODEL, 2, requester.public),
                                (MODEL, 1, crypto.X25519KeyPair.generate().public)):
        with pytest.raises(InputProblem) as refused:
            open_input(node_keys, model, version, key, sealed[1])
        assert refused.value.code == FailureCode.BAD_INPUT and "BackboneExecution.inputKey()" in str(refused.value)
    assert len(node_keys) == 2  # the session's and the lone input's; what did not open left nothing
