"""EIP-712 signatures of an MPC node for ``FeatureShareRegistry`` (docs/PROTOCOL.md).

Domain: name "splitseal", version "1", the chain id, verifyingContract = the registry.
Structs: ``ShareCommitment(uint256 setId,bytes32 subjectId,bytes32 commitment)`` and
``Decision(uint256 setId,bytes32 sessionId,uint8 kind,bytes32 subjectId,bool accepted,
bytes32 probeCommitment)``. Identifiers: ``subjectId = keccak256(utf8(subject))``, ``sessionId``
= the session's 32 random bytes; ``kind`` 1 = verify, 2 = identify; a rejected identification
names no subject (zero).

``enclave/eip712.py`` is the project's one implementation of the type strings; these functions
use it when it provides the MPC structs and build the same typed data with eth-account otherwise
(a test checks both give the same digest).
"""

from __future__ import annotations

from typing import Any, Mapping

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

KIND = {"verify": 1, "identify": 2}
ZERO32 = b"\0" * 32

_TYPES = {
    "ShareCommitment": [{"name": "setId", "type": "uint256"}, {"name": "subjectId", "type": "bytes32"},
                        {"name": "commitment", "type": "bytes32"}],
    "Decision": [{"name": "setId", "type": "uint256"}, {"name": "sessionId", "type": "bytes32"},
                 {"name": "kind", "type": "uint8"}, {"name": "subjectId", "type": "bytes32"},
                 {"name": "accepted", "type": "bool"}, {"name": "probeCommitment", "type": "bytes32"}],
}


def subject_id(subject: str | None) -> bytes:
    """bytes32 of a subject name (zero for "no subject")."""
    return ZERO32 if not subject else keccak(subject.encode())


def session_id(session: str) -> bytes:
    """bytes32 of a session id (64 hex characters)."""
    raw = bytes.fromhex(session)
    if len(raw) != 32:
        raise ValueError("session ids are 32 random bytes in hex")
    return raw


def _signable(chain: Mapping[str, Any], primary: str, message: dict[str, Any]):
    domain = {"name": "splitseal", "version": "1", "chainId": int(chain["chain_id"]),
              "verifyingContract": chain["registry"]}
    return encode_typed_data(full_message={
        "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                   {"name": "chainId", "type": "uint256"},
                                   {"name": "verifyingContract", "type": "address"}],
                  primary: _TYPES[primary]},
        "primaryType": primary, "domain": domain, "message": message})


def share_commitment_message(chain: Mapping[str, Any], subject: str, commitment: bytes):
    return _signable(chain, "ShareCommitment", {"setId": int(chain["set_id"]), "subjectId": subject_id(subject),
                                                "commitment": commitment})


def decision_message(chain: Mapping[str, Any], session: str, kind: str, subject: str | None, accepted: bool,
                     probe_commitment: bytes):
    return _signable(chain, "Decision", {"setId": int(chain["set_id"]), "sessionId": session_id(session),
                                         "kind": KIND[kind], "subjectId": subject_id(subject),
                                         "accepted": bool(accepted), "probeCommitment": probe_commitment})


def _sign(key: bytes, signable) -> bytes:
    return bytes(Account.sign_message(signable, key).signature)


def sign_share_commitment(key: bytes, chain: Mapping[str, Any], subject: str, commitment: bytes) -> bytes:
    return _sign(key, share_commitment_message(chain, subject, commitment))


def sign_decision(key: bytes, chain: Mapping[str, Any], session: str, kind: str, subject: str | None,
                  accepted: bool, probe_commitment: bytes) -> bytes:
    return _sign(key, decision_message(chain, session, kind, subject, accepted, probe_commitment))


def recover(signable, signature: bytes) -> str:
    return Account.recover_message(signable, signature=signature)
