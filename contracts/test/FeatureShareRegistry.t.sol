// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Fixture} from "./utils/Fixture.sol";
import {IFeatureShareRegistry} from "../src/interfaces/IFeatureShareRegistry.sol";

/// @notice Fuzz tests of the checks of every external function of FeatureShareRegistry: node
///         sets, enrolments co-signed by every node, decisions co-signed by every node.
contract FeatureShareRegistryFuzzTest is Fixture {
    uint256 internal constant NODES = 3;
    uint256[3] internal nodePks = [uint256(0x11), 0x22, 0x33];
    uint256 internal setId;
    bytes32 internal constant SUBJECT = bytes32("alice");

    function setUp() public {
        deployStack();
        address[] memory nodes = new address[](NODES);
        for (uint256 i = 0; i < NODES; ++i) nodes[i] = vm.addr(nodePks[i]);
        vm.prank(admin);
        setId = features.createNodeSet(nodes);
    }

    function _commitments(bytes32 seed) internal pure returns (bytes32[] memory c) {
        c = new bytes32[](NODES);
        for (uint256 i = 0; i < NODES; ++i) c[i] = keccak256(abi.encode(seed, i));
    }

    function _enrolmentSignatures(bytes32 subjectId, uint32 enrolment, bytes32[] memory commitments)
        internal
        view
        returns (bytes[] memory sigs)
    {
        sigs = new bytes[](NODES);
        for (uint256 i = 0; i < NODES; ++i) {
            sigs[i] = signDigest(nodePks[i], typedDigest(featuresDomain, keccak256(
                abi.encode(SHARE_COMMITMENT_TYPEHASH, setId, subjectId, enrolment, commitments[i]))));
        }
    }

    function _enroll(bytes32 subjectId, uint32 enrolment) internal {
        bytes32[] memory c = _commitments(subjectId);
        features.enrollSubject(setId, subjectId, c, _enrolmentSignatures(subjectId, enrolment, c));
    }

    function _decisionDigest(bytes32 session, uint8 kind, bytes32 subjectId, bool accepted, bytes32 probe)
        internal
        view
        returns (bytes32)
    {
        return typedDigest(featuresDomain, keccak256(
            abi.encode(DECISION_TYPEHASH, setId, session, kind, subjectId, accepted, probe)));
    }

    function _decisionSignatures(bytes32 digest) internal view returns (bytes[] memory sigs) {
        sigs = new bytes[](NODES);
        for (uint256 i = 0; i < NODES; ++i) sigs[i] = signDigest(nodePks[i], digest);
    }

    // ---------------------------------------------------------------------------- createNodeSet

    function testFuzz_createNodeSet_needs_the_admin(address caller) public {
        vm.assume(caller != admin);
        address[] memory nodes = new address[](1);
        nodes[0] = address(0x1);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(
            IAccessControl.AccessControlUnauthorizedAccount.selector, caller, bytes32(0)));
        features.createNodeSet(nodes);
    }

    function testFuzz_createNodeSet_checks_count_zero_and_duplicates(uint256 count, uint256 position, uint256 dupOf)
        public
    {
        uint256 max = features.MAX_NODES();
        uint256 bad = count % 2 == 0 ? 0 : bound(count, max + 1, max + 8);
        vm.startPrank(admin);
        vm.expectRevert(abi.encodeWithSelector(IFeatureShareRegistry.FeatureShareRegistryBadNodeCount.selector, bad, max));
        features.createNodeSet(new address[](bad));
        uint256 n = bound(count, 2, max);
        address[] memory nodes = new address[](n);
        for (uint256 i = 0; i < n; ++i) nodes[i] = address(uint160(0x1000 + i));
        position = bound(position, 1, n - 1);
        address kept = nodes[position];
        nodes[position] = nodes[bound(dupOf, 0, position - 1)];
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistryBadNode.selector, position, nodes[position]));
        features.createNodeSet(nodes);
        nodes[position] = address(0);
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistryBadNode.selector, position, address(0)));
        features.createNodeSet(nodes);
        nodes[position] = kept;
        uint256 id = features.createNodeSet(nodes);
        vm.stopPrank();
        vm.assertEq(id, setId + 1, "set id");
        vm.assertEq(features.nodeSetCount(), id, "count");
        vm.assertEq(features.nodeSet(id).length, n, "stored nodes");
        vm.assertEq(features.nodeSet(id)[position], kept, "node order");
    }

    // ---------------------------------------------------------------------------- enrollSubject

    function testFuzz_enrollSubject_records_the_signed_commitments(bytes32 subjectId) public {
        vm.assume(subjectId != 0);
        bytes32[] memory c = _commitments(subjectId);
        features.enrollSubject(setId, subjectId, c, _enrolmentSignatures(subjectId, 1, c));
        IFeatureShareRegistry.SubjectRecord memory rec = features.subject(setId, subjectId);
        vm.assertEq(rec.commitmentsHash, keccak256(abi.encodePacked(c)), "commitments hash");
        vm.assertEq(rec.enrolments, 1, "enrolments");
        vm.assertTrue(rec.active && features.isEnrolled(setId, subjectId), "active");
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistrySubjectAlreadyEnrolled.selector, setId, subjectId));
        features.enrollSubject(setId, subjectId, c, _enrolmentSignatures(subjectId, 2, c));
    }

    function testFuzz_enrollSubject_checks_set_subject_counts(uint256 unknownSet, uint8 commitmentCount,
                                                             uint8 signatureCount) public {
        vm.assume(unknownSet != setId);
        bytes32[] memory c = _commitments(SUBJECT);
        bytes[] memory sigs = _enrolmentSignatures(SUBJECT, 1, c);
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistryUnknownNodeSet.selector, unknownSet));
        features.enrollSubject(unknownSet, SUBJECT, c, sigs);
        vm.expectRevert(IFeatureShareRegistry.FeatureShareRegistryZeroSubject.selector);
        features.enrollSubject(setId, bytes32(0), c, sigs);
        uint256 nc = bound(commitmentCount, 0, 8);
        vm.assume(nc != NODES);
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistryCommitmentCount.selector, NODES, nc));
        features.enrollSubject(setId, SUBJECT, new bytes32[](nc), sigs);
        uint256 ns = bound(signatureCount, 0, 8);
        vm.assume(ns != NODES);
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistrySignatureCount.selector, NODES, ns));
        features.enrollSubject(setId, SUBJECT, c, new bytes[](ns));
    }

    function testFuzz_enrollSubject_needs_every_node_signature_of_its_own_share(uint8 which, uint256 otherPk,
                                                                                uint8 how) public {
        uint256 i = which % NODES;
        otherPk = boundKey(otherPk);
        vm.assume(otherPk != nodePks[i]);
        bytes32[] memory c = _commitments(SUBJECT);
        bytes[] memory sigs = _enrolmentSignatures(SUBJECT, 1, c);
        address expected = address(0);
        uint256 h = how % 3;
        if (h == 0) { // an outsider signs node i's share
            sigs[i] = signDigest(otherPk, typedDigest(featuresDomain, keccak256(
                abi.encode(SHARE_COMMITMENT_TYPEHASH, setId, SUBJECT, uint32(1), c[i]))));
            expected = vm.addr(otherPk);
        } else if (h == 1) { // node i's malleable twin
            sigs[i] = highSTwin(sigs[i]);
        } else { // node i's share replaced by zero
            c[i] = bytes32(0);
        }
        if (h == 2) {
            vm.expectRevert(abi.encodeWithSelector(IFeatureShareRegistry.FeatureShareRegistryZeroCommitment.selector, i));
        } else {
            vm.expectRevert(abi.encodeWithSelector(
                IFeatureShareRegistry.FeatureShareRegistryBadSignature.selector, setId, i, vm.addr(nodePks[i]), expected));
        }
        features.enrollSubject(setId, SUBJECT, c, sigs);
        vm.assertFalse(features.isEnrolled(setId, SUBJECT), "not enrolled");
    }

    // ---------------------------------------------------------------------------- revokeSubject

    function testFuzz_revokeSubject_admin_only_and_old_signatures_never_reenrol(address caller) public {
        vm.assume(caller != admin);
        bytes32[] memory c = _commitments(SUBJECT);
        bytes[] memory first = _enrolmentSignatures(SUBJECT, 1, c);
        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistrySubjectNotEnrolled.selector, setId, SUBJECT));
        features.revokeSubject(setId, SUBJECT);
        features.enrollSubject(setId, SUBJECT, c, first);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(
            IAccessControl.AccessControlUnauthorizedAccount.selector, caller, bytes32(0)));
        features.revokeSubject(setId, SUBJECT);
        vm.prank(admin);
        features.revokeSubject(setId, SUBJECT);
        vm.assertFalse(features.isEnrolled(setId, SUBJECT), "revoked");
        // replaying the first enrolment's signatures fails: they name enrolment 1, this is the 2nd
        try features.enrollSubject(setId, SUBJECT, c, first) {
            revert("an earlier enrolment's signatures re-enrolled the subject");
        } catch (bytes memory reason) {
            vm.assertEq(bytes32(bytes4(reason)),
                        bytes32(IFeatureShareRegistry.FeatureShareRegistryBadSignature.selector), "error");
        }
        features.enrollSubject(setId, SUBJECT, c, _enrolmentSignatures(SUBJECT, 2, c));
        vm.assertEq(features.subject(setId, SUBJECT).enrolments, 2, "second enrolment");
    }

    // ---------------------------------------------------------------------------- recordDecision

    function testFuzz_recordDecision_records_what_the_nodes_signed(bytes32 session, bool identify, bool accepted,
                                                                   bytes32 probe) public {
        vm.assume(session != 0);
        _enroll(SUBJECT, 1);
        uint8 kind = identify ? 2 : 1;
        bytes32 subjectId = identify && !accepted ? bytes32(0) : SUBJECT;
        bytes[] memory sigs = _decisionSignatures(_decisionDigest(session, kind, subjectId, accepted, probe));
        features.recordDecision(setId, session, kind, subjectId, accepted, probe, sigs);
        IFeatureShareRegistry.DecisionRecord memory d = features.decision(session);
        vm.assertEq(d.setId, setId, "set");
        vm.assertEq(d.kind, kind, "kind");
        vm.assertTrue(d.accepted == accepted, "accepted");
        vm.assertEq(d.subjectId, subjectId, "subject");
        vm.assertEq(d.probeCommitment, probe, "probe");
        vm.assertEq(d.recordedAt, block.timestamp, "recordedAt");
        vm.expectRevert(abi.encodeWithSelector(IFeatureShareRegistry.FeatureShareRegistrySessionUsed.selector, session));
        features.recordDecision(setId, session, kind, subjectId, accepted, probe, sigs);
    }

    function testFuzz_recordDecision_checks_set_kind_session_subject_count(uint256 unknownSet, uint8 kind,
                                                                          bytes32 stranger_, uint8 count) public {
        vm.assume(unknownSet != setId && kind != 1 && kind != 2 && stranger_ != SUBJECT && stranger_ != 0);
        _enroll(SUBJECT, 1);
        bytes[] memory none = new bytes[](NODES);
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistryUnknownNodeSet.selector, unknownSet));
        features.recordDecision(unknownSet, bytes32("s"), 1, SUBJECT, true, bytes32("p"), none);
        vm.expectRevert(abi.encodeWithSelector(IFeatureShareRegistry.FeatureShareRegistryUnknownKind.selector, kind));
        features.recordDecision(setId, bytes32("s"), kind, SUBJECT, true, bytes32("p"), none);
        vm.expectRevert(IFeatureShareRegistry.FeatureShareRegistryZeroSession.selector);
        features.recordDecision(setId, bytes32(0), 1, SUBJECT, true, bytes32("p"), none);
        // a verification, or an accepted identification, names an enrolled subject
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistrySubjectNotEnrolled.selector, setId, stranger_));
        features.recordDecision(setId, bytes32("s"), 1, stranger_, false, bytes32("p"), none);
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistrySubjectNotEnrolled.selector, setId, stranger_));
        features.recordDecision(setId, bytes32("s"), 2, stranger_, true, bytes32("p"), none);
        // a rejected identification names nobody
        vm.expectRevert(abi.encodeWithSelector(
            IFeatureShareRegistry.FeatureShareRegistryUnexpectedSubject.selector, bytes32("s"), SUBJECT));
        features.recordDecision(setId, bytes32("s"), 2, SUBJECT, false, bytes32("p"), none);
        uint256 n = bound(count, 0, 8);
        vm.assume(n != NODES);
        vm.expectRevert(abi.encodeWithSelector(IFeatureShareRegistry.FeatureShareRegistrySignatureCount.selector, NODES, n));
        features.recordDecision(setId, bytes32("s"), 1, SUBJECT, true, bytes32("p"), new bytes[](n));
    }

    function testFuzz_recordDecision_needs_every_node_signature_of_that_decision(uint8 which, uint8 field,
                                                                                bytes32 other) public {
        _enroll(SUBJECT, 1);
        bytes32 session = bytes32("s");
        bytes32 probe = bytes32("p");
        vm.assume(other != session && other != probe);
        bytes[] memory sigs = _decisionSignatures(_decisionDigest(session, 1, SUBJECT, true, probe));
        // node i signed a decision that differs in one field: the session, the outcome or the probe
        uint256 i = which % NODES;
        uint256 f = field % 3;
        bytes32 digest = f == 0 ? _decisionDigest(other, 1, SUBJECT, true, probe)
            : f == 1 ? _decisionDigest(session, 1, SUBJECT, false, probe)
            : _decisionDigest(session, 1, SUBJECT, true, other);
        sigs[i] = signDigest(nodePks[i], digest);
        try features.recordDecision(setId, session, 1, SUBJECT, true, probe, sigs) {
            revert("a decision recorded with a signature of another decision");
        } catch (bytes memory reason) {
            vm.assertEq(bytes32(bytes4(reason)),
                        bytes32(IFeatureShareRegistry.FeatureShareRegistryBadSignature.selector), "error");
        }
        vm.assertEq(features.decision(session).recordedAt, 0, "not recorded");
    }
}
