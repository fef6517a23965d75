"""FeatureShareRegistry: node sets, enrolment of salted share commitments signed by each node,
revocation, and decisions co-signed by every node. Every event and custom error with its
arguments."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from splitseal.protocol import DEFAULT_ADMIN_ROLE, eip712
from tests.support.contract_kit import ZERO32, ZERO_ADDRESS, Kit, make_kit_fixture, rand32, reverts

kit = make_kit_fixture("chain", "deployment")
VERIFY, IDENTIFY = 1, 2


class NodeSet:
    def __init__(self, kit: Kit, n: int = 3) -> None:
        self.kit = kit
        self.keys = [rand32() for _ in range(n)]
        self.addresses = [eip712.address_of(k) for k in self.keys]
        self.receipt = kit.tx(kit.features.functions.createNodeSet(self.addresses), kit.admin,
                              label="FeatureShareRegistry.createNodeSet")
        self.set_id = int(kit.one_event(self.receipt, kit.features, "NodeSetCreated")["setId"])

    def share_sigs(self, subject: bytes, commitments: list[bytes], set_id: int | None = None,
                   enrolment: int | None = None) -> list[bytes]:
        """Each node's signature for its commitment in the subject's next (or the given) enrolment."""
        k = self.kit
        if enrolment is None:
            enrolment = int(k.call(k.features.functions.subject(set_id or self.set_id, subject))[2]) + 1
        return [eip712.sign(key, eip712.share_commitment_digest(
            k.chain.chain_id, k.features.address, set_id=set_id or self.set_id, subject_id=subject,
            enrolment=enrolment, commitment=c)) for key, c in zip(self.keys, commitments)]

    def decision_sigs(self, session: bytes, kind: int, subject: bytes, accepted: bool, probe: bytes) -> list[bytes]:
        k = self.kit
        digest = eip712.decision_digest(k.chain.chain_id, k.features.address, set_id=self.set_id, session_id=session,
                                        kind=kind, subject_id=subject, accepted=accepted, probe_commitment=probe)
        return [eip712.sign(key, digest) for key in self.keys]

    def enroll(self, subject: bytes | None = None) -> tuple[bytes, list[bytes], object]:
        subject = subject or rand32()
        commitments = [rand32() for _ in self.keys]
        receipt = self.kit.tx(self.kit.features.functions.enrollSubject(
            self.set_id, subject, commitments, self.share_sigs(subject, commitments)), self.kit.stranger,
            label="FeatureShareRegistry.enrollSubject")
        return subject, commitments, receipt


@pytest.fixture
def nodes(kit: Kit) -> NodeSet:
    return NodeSet(kit)


def test_create_node_set(kit: Kit, nodes: NodeSet) -> None:
    ev = kit.one_event(nodes.receipt, kit.features, "NodeSetCreated")
    assert dict(ev) == {"setId": nodes.set_id, "nodes": nodes.addresses}
    assert kit.call(kit.features.functions.nodeSet(nodes.set_id)) == nodes.addresses
    assert kit.call(kit.features.functions.nodeSetCount()) == nodes.set_id
    assert NodeSet(kit).set_id == nodes.set_id + 1


def test_create_node_set_checks(kit: Kit) -> None:
    fn = kit.features.functions.createNodeSet
    a = [eip712.address_of(rand32()) for _ in range(17)]
    with reverts("AccessControlUnauthorizedAccount", account=kit.stranger.address, neededRole=DEFAULT_ADMIN_ROLE):
        kit.tx(fn(a[:2]), kit.stranger)
    with reverts("FeatureShareRegistryBadNodeCount", count=0, max=16):
        kit.tx(fn([]), kit.admin)
    with reverts("FeatureShareRegistryBadNodeCount", count=17, max=16):
        kit.tx(fn(a), kit.admin)
    with reverts("FeatureShareRegistryBadNode", index=1, node=ZERO_ADDRESS):
        kit.tx(fn([a[0], ZERO_ADDRESS]), kit.admin)
    with reverts("FeatureShareRegistryBadNode", index=2, node=a[0]):
        kit.tx(fn([a[0], a[1], a[0]]), kit.admin)


def test_enroll_revoke_and_reenroll(kit: Kit, nodes: NodeSet) -> None:
    subject, commitments, receipt = nodes.enroll()
    ev = kit.one_event(receipt, kit.features, "SubjectEnrolled")
    assert dict(ev) == {"setId": nodes.set_id, "subjectId": subject, "commitments": commitments, "enrolment": 1}
    record = kit.call(kit.features.functions.subject(nodes.set_id, subject))
    assert record[0] == keccak(b"".join(commitments)) and record[2] == 1 and record[3] is True
    assert kit.call(kit.features.functions.isEnrolled(nodes.set_id, subject))

    with reverts("FeatureShareRegistrySubjectAlreadyEnrolled", setId=nodes.set_id, subjectId=subject):
        nodes.enroll(subject)
    with reverts("AccessControlUnauthorizedAccount", account=kit.stranger.address, neededRole=DEFAULT_ADMIN_ROLE):
        kit.tx(kit.features.functions.revokeSubject(nodes.set_id, subject), kit.stranger)
    receipt = kit.tx(kit.features.functions.revokeSubject(nodes.set_id, subject), kit.admin)
    ev = kit.one_event(receipt, kit.features, "SubjectRevoked")
    assert dict(ev) == {"setId": nodes.set_id, "subjectId": subject, "by": kit.admin.address}
    assert not kit.call(kit.features.functions.isEnrolled(nodes.set_id, subject))
    with reverts("FeatureShareRegistrySubjectNotEnrolled", setId=nodes.set_id, subjectId=subject):
        kit.tx(kit.features.functions.revokeSubject(nodes.set_id, subject), kit.admin)

    # Replaying the old enrolment's signatures after revocation is refused (they name enrolment 1)...
    with reverts("FeatureShareRegistryBadSignature", setId=nodes.set_id, index=0, node=nodes.addresses[0]):
        kit.tx(kit.features.functions.enrollSubject(nodes.set_id, subject, commitments,
                                                    nodes.share_sigs(subject, commitments, enrolment=1)), kit.stranger)
    # ...a fresh enrolment with new salted commitments is accepted.
    _, _, receipt = nodes.enroll(subject)
    assert kit.one_event(receipt, kit.features, "SubjectEnrolled")["enrolment"] == 2


def test_enroll_checks(kit: Kit, nodes: NodeSet) -> None:
    fn = kit.features.functions.enrollSubject
    subject, commitments = rand32(), [rand32() for _ in range(3)]
    sigs = nodes.share_sigs(subject, commitments)
    with reverts("FeatureShareRegistryUnknownNodeSet", setId=999):
        kit.tx(fn(999, subject, commitments, sigs), kit.stranger)
    with reverts("FeatureShareRegistryZeroSubject"):
        kit.tx(fn(nodes.set_id, ZERO32, commitments, sigs), kit.stranger)
    with reverts("FeatureShareRegistryCommitmentCount", expected=3, given=2):
        kit.tx(fn(nodes.set_id, subject, commitments[:2], sigs), kit.stranger)
    with reverts("FeatureShareRegistrySignatureCount", expected=3, given=2):  # a missing co-signature
        kit.tx(fn(nodes.set_id, subject, commitments, sigs[:2]), kit.stranger)
    zero = [commitments[0], ZERO32, commitments[2]]
    with reverts("FeatureShareRegistryZeroCommitment", index=1):
        kit.tx(fn(nodes.set_id, subject, zero, nodes.share_sigs(subject, zero)), kit.stranger)
    swapped = [sigs[1], sigs[0], sigs[2]]  # right signatures, wrong order
    with reverts("FeatureShareRegistryBadSignature", setId=nodes.set_id, index=0, node=nodes.addresses[0]):
        kit.tx(fn(nodes.set_id, subject, commitments, swapped), kit.stranger)
    forger = rand32()
    forged = list(sigs)
    forged[2] = eip712.sign(forger, eip712.share_commitment_digest(
        kit.chain.chain_id, kit.features.address, set_id=nodes.set_id, subject_id=subject, enrolment=1,
        commitment=commitments[2]))
    with reverts("FeatureShareRegistryBadSignature", setId=nodes.set_id, index=2, node=nodes.addresses[2],
                 recovered=eip712.address_of(forger)):
        kit.tx(fn(nodes.set_id, subject, commitments, forged), kit.stranger)
    other_set = NodeSet(kit)  # signatures for one set are not valid for another
    with reverts("FeatureShareRegistryBadSignature", setId=other_set.set_id, index=0):
        kit.tx(fn(other_set.set_id, subject, commitments, other_set.share_sigs(subject, commitments, nodes.set_id)),
               kit.stranger)


def test_record_decisions(kit: Kit, nodes: NodeSet) -> None:
    subject, _, _ = nodes.enroll()
    fn = kit.features.functions.recordDecision
    cases = [(VERIFY, subject, True), (VERIFY, subject, False), (IDENTIFY, subject, True), (IDENTIFY, ZERO32, False)]
    for kind, subj, accepted in cases:
        session, probe = rand32(), rand32()
        receipt = kit.tx(fn(nodes.set_id, session, kind, subj, accepted, probe,
                            nodes.decision_sigs(session, kind, subj, accepted, probe)), kit.stranger,
                         label="FeatureShareRegistry.recordDecision")
        ev = kit.one_event(receipt, kit.features, "DecisionRecorded")
        assert dict(ev) == {"setId": nodes.set_id, "sessionId": session, "subjectId": subj, "kind": kind,
                            "accepted": accepted, "probeCommitment": probe}
        block_time = int(kit.chain.get_block(receipt["blockNumber"])["timestamp"])
        assert tuple(kit.call(kit.features.functions.decision(session))) == (
            nodes.set_id, kind, accepted, block_time, subj, probe)
        with reverts("FeatureShareRegistrySessionUsed", sessionId=session):
            kit.tx(fn(nodes.set_id, session, kind, subj, accepted, probe,
                      nodes.decision_sigs(session, kind, subj, accepted, probe)), kit.stranger)


def test_decision_checks(kit: Kit, nodes: NodeSet) -> None:
    subject, _, _ = nodes.enroll()
    fn = kit.features.functions.recordDecision
    session, probe = rand32(), rand32()
    sigs = nodes.decision_sigs(session, VERIFY, subject, True, probe)
    with reverts("FeatureShareRegistryUnknownNodeSet", setId=999):
        kit.tx(fn(999, session, VERIFY, subject, True, probe, sigs), kit.stranger)
    for kind in (0, 3):
        with reverts("FeatureShareRegistryUnknownKind", kind=kind):
            kit.tx(fn(nodes.set_id, session, kind, subject, True, probe, sigs), kit.stranger)
    with reverts("FeatureShareRegistryZeroSession"):
        kit.tx(fn(nodes.set_id, ZERO32, VERIFY, subject, True, probe, sigs), kit.stranger)
    stranger_subject = rand32()
    with reverts("FeatureShareRegistrySubjectNotEnrolled", setId=nodes.set_id, subjectId=stranger_subject):
        kit.tx(fn(nodes.set_id, session, VERIFY, stranger_subject, True, probe, sigs), kit.stranger)
    with reverts("FeatureShareRegistryUnexpectedSubject", sessionId=session, subjectId=subject):
        kit.tx(fn(nodes.set_id, session, IDENTIFY, subject, False, probe, sigs), kit.stranger)
    with reverts("FeatureShareRegistrySignatureCount", expected=3, given=2):  # a node did not co-sign
        kit.tx(fn(nodes.set_id, session, VERIFY, subject, True, probe, sigs[:2]), kit.stranger)
    flipped = nodes.decision_sigs(session, VERIFY, subject, False, probe)  # signed "rejected", submitted "accepted"
    with reverts("FeatureShareRegistryBadSignature", setId=nodes.set_id, index=0, node=nodes.addresses[0]):
        kit.tx(fn(nodes.set_id, session, VERIFY, subject, True, probe, flipped), kit.stranger)
    mixed = [sigs[0], sigs[1], flipped[2]]  # one node disagrees
    with reverts("FeatureShareRegistryBadSignature", setId=nodes.set_id, index=2, node=nodes.addresses[2]):
        kit.tx(fn(nodes.set_id, session, VERIFY, subject, True, probe, mixed), kit.stranger)
    kit.tx(kit.features.functions.revokeSubject(nodes.set_id, subject), kit.admin)
    with reverts("FeatureShareRegistrySubjectNotEnrolled", setId=nodes.set_id, subjectId=subject):
        kit.tx(fn(nodes.set_id, session, VERIFY, subject, True, probe, sigs), kit.stranger)


def test_signatures_of_two_earlier_enrolments_cannot_be_combined(kit: Kit, nodes: NodeSet) -> None:
    """The attack: after the admin revoked a subject, a stranger combines node signatures of two
    earlier enrolments into a "new" one. Each signature names its enrolment number, so only
    fresh signatures of every node for the next number enrol the subject again."""
    fn = kit.features.functions.enrollSubject
    subject, first, _ = nodes.enroll()
    first_sigs = nodes.share_sigs(subject, first, enrolment=1)
    kit.tx(kit.features.functions.revokeSubject(nodes.set_id, subject), kit.admin)
    _, second, _ = nodes.enroll(subject)
    second_sigs = nodes.share_sigs(subject, second, enrolment=2)
    kit.tx(kit.features.functions.revokeSubject(nodes.set_id, subject), kit.admin)
    mixed = [first[0], second[1], first[2]]
    mixed_sigs = [first_sigs[0], second_sigs[1], first_sigs[2]]
    with reverts("FeatureShareRegistryBadSignature", setId=nodes.set_id, index=0, node=nodes.addresses[0]):
        kit.tx(fn(nodes.set_id, subject, mixed, mixed_sigs), kit.stranger)
    with reverts("FeatureShareRegistryBadSignature", setId=nodes.set_id, index=0, node=nodes.addresses[0]):
        kit.tx(fn(nodes.set_id, subject, second, second_sigs), kit.stranger)  # a whole old enrolment
    assert not kit.call(kit.features.functions.isEnrolled(nodes.set_id, subject))
