"""MPC node signatures: the digests of splitseal/protocol/eip712.py match an independent EIP-712 encoder
(eth-account's typed data), and signatures recover to the node."""

from __future__ import annotations

import os

import numpy as np
from eth_account import Account
from eth_account.messages import encode_typed_data

from mpc.node.node import share_commitment
from mpc.node.signing import (
    decision_digest,
    recover,
    share_commitment_digest,
    sign_decision,
    sign_share_commitment,
    subject_id,
)

CHAIN = {"chain_id": 31337, "registry": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "set_id": 3}
DOMAIN_TYPES = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]
DOMAIN = {"name": "splitseal", "version": "1", "chainId": 31337, "verifyingContract": CHAIN["registry"]}


def _eth_account_digest(primary, fields, message):
    signable = encode_typed_data(full_message={"types": {"EIP712Domain": DOMAIN_TYPES, primary: fields},
                                               "primaryType": primary, "domain": DOMAIN, "message": message})
    from eth_utils import keccak
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def test_share_commitment_digest_and_signature():
    c = os.urandom(32)
    ours = share_commitment_digest(CHAIN, "alice", 2, c)
    theirs = _eth_account_digest("ShareCommitment", [{"name": "setId", "type": "uint256"},
                                                     {"name": "subjectId", "type": "bytes32"},
                                                     {"name": "enrolment", "type": "uint32"},
                                                     {"name": "commitment", "type": "bytes32"}],
                                 {"setId": 3, "subjectId": subject_id("alice"), "enrolment": 2, "commitment": c})
    assert ours == theirs
    acct = Account.create()
    sig = sign_share_commitment(bytes(acct.key), CHAIN, "alice", 2, c)
    assert recover(ours, sig) == acct.address
    assert recover(share_commitment_digest(CHAIN, "bob", 2, c), sig) != acct.address
    assert recover(share_commitment_digest(CHAIN, "alice", 3, c), sig) != acct.address  # one enrolment only


def test_decision_digest_and_signature():
    session, probe = os.urandom(32), os.urandom(32)
    ours = decision_digest(CHAIN, session.hex(), "identify", None, False, probe)
    theirs = _eth_account_digest("Decision", [{"name": "setId", "type": "uint256"},
                                              {"name": "sessionId", "type": "bytes32"},
                                              {"name": "kind", "type": "uint8"},
                                              {"name": "subjectId", "type": "bytes32"},
                                              {"name": "accepted", "type": "bool"},
                                              {"name": "probeCommitment", "type": "bytes32"}],
                                 {"setId": 3, "sessionId": session, "kind": 2, "subjectId": b"\0" * 32,
                                  "accepted": False, "probeCommitment": probe})
    assert ours == theirs
    acct = Account.create()
    sig = sign_decision(bytes(acct.key), CHAIN, session.hex(), "identify", None, False, probe)
    assert recover(ours, sig) == acct.address


def test_share_commitment_is_salted():
    share = np.arange(5, dtype=np.uint64)
    a, b = share_commitment(os.urandom(32), share), share_commitment(os.urandom(32), share)
    assert a != b and len(a) == 32
