"""Audit of a subject's history in ``FeatureShareRegistry``, rebuilt from events alone.

For a subject id, :func:`subject_history` collects its ``SubjectEnrolled``, ``SubjectRevoked``
and ``DecisionRecorded`` events and verifies each one independently of the contract's own
checks: it reads the transaction that emitted the event, decodes its call data with the ABI and
recovers every node's EIP-712 signature (``ShareCommitment`` / ``Decision``) against the node
set recorded in ``NodeSetCreated``. A node can additionally prove its enrolled share matches its
commitment with :func:`verify_share_opening` (salt and share stay with the node otherwise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpc.node.node import share_commitment
from mpc.node.signing import decision_digest, recover, share_commitment_digest
from mpc.node.signing import subject_id as subject_bytes
from splitseal.errors import InvalidInputError

log = logging.getLogger(__name__)

KIND_NAMES = {1: "verify", 2: "identify"}


@dataclass
class AuditedEnrolment:
    set_id: int
    enrolment: int
    commitments: list[bytes]
    block: int
    tx: str
    signers_ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class AuditedDecision:
    set_id: int
    session: bytes
    kind: str
    accepted: bool
    probe_commitment: bytes
    block: int
    tx: str
    signers_ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class SubjectHistory:
    subject_id: bytes
    node_sets: dict[int, list[str]]
    enrolments: list[AuditedEnrolment]
    revocations: list[dict[str, Any]]
    decisions: list[AuditedDecision]

    @property
    def verified(self) -> bool:
        return all(e.signers_ok for e in self.enrolments) and all(d.signers_ok for d in self.decisions)


def _subject(subject: str | bytes) -> bytes:
    if isinstance(subject, bytes):
        if len(subject) != 32:
            raise ValueError("a subject id in bytes must be 32 bytes")
        return subject
    return subject_bytes(subject)


def _hex(h: Any) -> str:
    return h.hex() if hasattr(h, "hex") else str(h)


def _call_args(chain: Any, registry: Any, tx_hash: Any) -> tuple[str, dict[str, Any]]:
    tx = chain.transaction(tx_hash)
    fn, args = registry.decode_function_input(tx["input"])
    return fn.fn_name, dict(args)


def subject_history(chain: Any, registry: Any, subject_id: str | bytes, from_block: int = 0) -> SubjectHistory:
    """Rebuild and verify everything the registry recorded about one subject."""
    sid = _subject(subject_id)
    domain = {"chain_id": chain.chain_id, "registry": registry.address}
    sets = {int(ev["args"]["setId"]): list(ev["args"]["nodes"])
            for ev in chain.get_logs(registry, "NodeSetCreated", from_block)}
    enrolments: list[AuditedEnrolment] = []
    for ev in chain.get_logs(registry, "SubjectEnrolled", from_block, argument_filters={"subjectId": sid}):
        a = ev["args"]
        set_id = int(a["setId"])
        problems: list[str] = []
        nodes = sets.get(set_id, [])
        name, call = _call_args(chain, registry, ev["transactionHash"])
        if name != "enrollSubject" or bytes(call["subjectId"]) != sid:
            problems.append("the transaction is not the enrolSubject call of this event")
        commitments = [bytes(c) for c in a["commitments"]]
        if [bytes(c) for c in call.get("commitments", [])] != commitments:
            problems.append("event commitments differ from the call data")
        if len(nodes) != len(commitments):
            problems.append(f"{len(commitments)} commitments for a set of {len(nodes)} nodes")
        for i, (node, c, sig) in enumerate(zip(nodes, commitments, call.get("signatures", []))):
            got = _recover(share_commitment_digest({**domain, "set_id": set_id}, sid, int(a["enrolment"]), c),
                           bytes(sig))
            if got.lower() != node.lower():
                problems.append(f"commitment {i} signed by {got}, not node {node}")
        enrolments.append(AuditedEnrolment(set_id, int(a["enrolment"]), commitments, int(ev["blockNumber"]),
                                           _hex(ev["transactionHash"]), not problems, problems))
    revocations = [{"set_id": int(ev["args"]["setId"]), "by": ev["args"]["by"], "block": int(ev["blockNumber"])}
                   for ev in chain.get_logs(registry, "SubjectRevoked", from_block, argument_filters={"subjectId": sid})]
    decisions: list[AuditedDecision] = []
    for ev in chain.get_logs(registry, "DecisionRecorded", from_block, argument_filters={"subjectId": sid}):
        a = ev["args"]
        set_id = int(a["setId"])
        nodes = sets.get(set_id, [])
        problems = []
        name, call = _call_args(chain, registry, ev["transactionHash"])
        if name != "recordDecision" or bytes(call["sessionId"]) != bytes(a["sessionId"]):
            problems.append("the transaction is not the recordDecision call of this event")
        digest = decision_digest({**domain, "set_id": set_id}, bytes(a["sessionId"]), int(a["kind"]), sid,
                                 bool(a["accepted"]), bytes(a["probeCommitment"]))
        sigs = call.get("signatures", [])
        if len(sigs) != len(nodes):
            problems.append(f"{len(sigs)} signatures for a set of {len(nodes)} nodes")
        for i, (node, sig) in enumerate(zip(nodes, sigs)):
            got = _recover(digest, bytes(sig))
            if got.lower() != node.lower():
                problems.append(f"decision signature {i} by {got}, not node {node}")
        decisions.append(AuditedDecision(set_id, bytes(a["sessionId"]), KIND_NAMES.get(int(a["kind"]), "?"),
                                         bool(a["accepted"]), bytes(a["probeCommitment"]), int(ev["blockNumber"]),
                                         _hex(ev["transactionHash"]), not problems, problems))
    return SubjectHistory(sid, sets, enrolments, revocations, decisions)


def _recover(digest: bytes, signature: bytes) -> str:
    try:
        return recover(digest, signature)
    except InvalidInputError:
        return "malformed signature"


def verify_share_opening(commitment: bytes, salt: bytes, share: np.ndarray) -> bool:
    """Does (salt, share) open the on-chain commitment? (A node proving its enrolled share.)"""
    return share_commitment(salt, share) == bytes(commitment)
