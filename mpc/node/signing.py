"""EIP-712 signatures an MPC node makes for ``FeatureShareRegistry`` (docs/PROTOCOL.md).

``splitseal/protocol/eip712.py`` is the project's one implementation of the type strings and digests; this
module only maps the MPC node's identifiers onto it:

* ``subjectId = keccak256(utf8(subject))`` (zero for "no subject": a rejected identification);
* ``sessionId`` = the session's 32 random bytes (the session id is their hex);
* ``kind`` 1 = verify, 2 = identify;
* ``enrolment``: the subject's next enrolment number on the registry (read by the client, sent
  with the enrolment), so a share signature is valid for that one enrolment only;
* ``commitment = keccak256(salt || share as little-endian uint64)``, salt 32 random bytes kept
  by the node; ``probeCommitment = keccak256(c_0 || ... || c_{N-1})`` of the nodes' salted
  commitments of their probe feature shares, in party order.

``chain`` mappings carry ``chain_id``, ``registry`` (the verifying contract) and ``set_id``.
"""

from __future__ import annotations

from typing import Any, Mapping

from splitseal.protocol import eip712
from splitseal.protocol.crypto import keccak256

KIND = {"verify": 1, "identify": 2}
ZERO32 = b"\0" * 32


def subject_id(subject: str | None) -> bytes:
    """bytes32 of a subject name (zero for "no subject")."""
    return ZERO32 if not subject else keccak256(subject.encode())


def session_id(session: str) -> bytes:
    """bytes32 of a session id (64 hex characters)."""
    raw = bytes.fromhex(session)
    if len(raw) != 32:
        raise ValueError("session ids are 32 random bytes in hex")
    return raw


def share_commitment_digest(chain: Mapping[str, Any], subject: str | bytes, enrolment: int,
                            commitment: bytes) -> bytes:
    sid = subject if isinstance(subject, bytes) else subject_id(subject)
    return eip712.share_commitment_digest(int(chain["chain_id"]), chain["registry"], set_id=int(chain["set_id"]),
                                          subject_id=sid, enrolment=int(enrolment), commitment=commitment)


def decision_digest(chain: Mapping[str, Any], session: str | bytes, kind: str | int, subject: str | bytes | None,
                    accepted: bool, probe_commitment: bytes) -> bytes:
    sess = session if isinstance(session, bytes) else session_id(session)
    sid = subject if isinstance(subject, bytes) else subject_id(subject)
    return eip712.decision_digest(int(chain["chain_id"]), chain["registry"], set_id=int(chain["set_id"]),
                                  session_id=sess, kind=KIND[kind] if isinstance(kind, str) else int(kind),
                                  subject_id=sid, accepted=bool(accepted), probe_commitment=probe_commitment)


def sign_share_commitment(key: bytes, chain: Mapping[str, Any], subject: str, enrolment: int,
                          commitment: bytes) -> bytes:
    return eip712.sign(key, share_commitment_digest(chain, subject, enrolment, commitment))


def sign_decision(key: bytes, chain: Mapping[str, Any], session: str, kind: str, subject: str | None,
                  accepted: bool, probe_commitment: bytes) -> bytes:
    return eip712.sign(key, decision_digest(chain, session, kind, subject, accepted, probe_commitment))


def recover(digest: bytes, signature: bytes) -> str:
    """Signer address of a digest; raises InvalidInputError for malformed signatures."""
    return eip712.recover(digest, signature)
