// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./utils/Fixture.sol";
import {Test} from "./utils/Test.sol";
import {FeatureShareRegistry} from "../src/FeatureShareRegistry.sol";
import {IFeatureShareRegistry} from "../src/interfaces/IFeatureShareRegistry.sol";

/// @notice Drives the enrolment lifecycle of FeatureShareRegistry at random (enrol with the node
///         set's signatures, right or spoiled, replay an earlier enrolment's signatures, revoke)
///         and keeps ghost books, for {FeatureShareInvariantTest}. Decisions have their own
///         invariants in Invariants.t.sol.
contract EnrolmentHandler is Fixture {
    uint256 internal constant NODES = 3;
    uint256[3] internal nodePks = [uint256(0x11), 0x22, 0x33];
    bytes32[3] internal subjects = [bytes32("alice"), bytes32("bob"), bytes32("carol")];
    uint256 public setId;

    struct SubjectGhost {
        bool active;
        uint32 enrolments;
        bytes32 commitmentsHash;
    }

    mapping(bytes32 subjectId => SubjectGhost) internal _subjects;
    /// The signatures of each subject's last enrolment, to replay.
    mapping(bytes32 subjectId => bytes32 seed) internal _lastSeed;
    uint256 public illegitimateEnrolments;
    uint256 public enrolments;
    uint256 public revocations;

    constructor() {
        deployStack();
        address[] memory nodes = new address[](NODES);
        for (uint256 i = 0; i < NODES; ++i) nodes[i] = vm.addr(nodePks[i]);
        vm.prank(admin);
        setId = features.createNodeSet(nodes);
    }

    function deployed() external view returns (FeatureShareRegistry) {
        return features;
    }

    function subjectAt(uint256 i) external view returns (bytes32) {
        return subjects[i];
    }

    function ghostOf(bytes32 subjectId) external view returns (SubjectGhost memory) {
        return _subjects[subjectId];
    }

    // ------------------------------------------------------------------------------- actions

    /// Enrols a subject with fresh share commitments, every node signing its own share for the
    /// next enrolment number, spoiled as `spoil` says: 0 none, 1 node i's signature by an
    /// outsider, 2 node i signs another share, 3 node i signs for the previous enrolment number
    /// (a replay), 4 nodes i and i+1 swapped.
    function enroll(uint256 subjectSeed, bytes32 seed, uint8 spoil, uint8 which) external {
        bytes32 subjectId = subjects[subjectSeed % 3];
        SubjectGhost storage g = _subjects[subjectId];
        uint32 enrolment = g.enrolments + 1;
        bytes32[] memory c = new bytes32[](NODES);
        for (uint256 i = 0; i < NODES; ++i) c[i] = keccak256(abi.encode(seed, subjectId, i));
        uint256 s = spoil % 5;
        bytes[] memory sigs = _signatures(subjectId, enrolment, c, s, which % NODES);
        bool legit = s == 0 && !g.active;
        try features.enrollSubject(setId, subjectId, c, sigs) {
            if (!legit) ++illegitimateEnrolments;
            else ++enrolments;
            (g.active, g.enrolments, g.commitmentsHash) = (true, enrolment, keccak256(abi.encodePacked(c)));
            _lastSeed[subjectId] = seed;
        } catch {}
    }

    function _signatures(bytes32 subjectId, uint32 enrolment, bytes32[] memory c, uint256 s, uint256 k)
        internal
        view
        returns (bytes[] memory sigs)
    {
        sigs = new bytes[](NODES);
        for (uint256 i = 0; i < NODES; ++i) {
            uint256 pk = s == 1 && i == k ? 0x99 : nodePks[i];
            bytes32 share = s == 2 && i == k ? keccak256(abi.encode("other", c[i])) : c[i];
            uint32 number = s == 3 && i == k ? enrolment - 1 : enrolment;
            sigs[i] = signDigest(pk, typedDigest(featuresDomain, keccak256(
                abi.encode(SHARE_COMMITMENT_TYPEHASH, setId, subjectId, number, share))));
        }
        if (s == 4) (sigs[k], sigs[(k + 1) % NODES]) = (sigs[(k + 1) % NODES], sigs[k]);
    }

    /// Replays a subject's last enrolment (same shares, same signatures) after it was revoked.
    function replay(uint256 subjectSeed) external {
        bytes32 subjectId = subjects[subjectSeed % 3];
        SubjectGhost storage g = _subjects[subjectId];
        if (g.enrolments == 0) return;
        bytes32 seed = _lastSeed[subjectId];
        bytes32[] memory c = new bytes32[](NODES);
        bytes[] memory sigs = new bytes[](NODES);
        for (uint256 i = 0; i < NODES; ++i) {
            c[i] = keccak256(abi.encode(seed, subjectId, i));
            sigs[i] = signDigest(nodePks[i], typedDigest(featuresDomain, keccak256(
                abi.encode(SHARE_COMMITMENT_TYPEHASH, setId, subjectId, g.enrolments, c[i]))));
        }
        try features.enrollSubject(setId, subjectId, c, sigs) {
            ++illegitimateEnrolments;
            (g.active, g.enrolments) = (true, g.enrolments + 1);
        } catch {}
    }

    function revoke(uint256 subjectSeed) external {
        bytes32 subjectId = subjects[subjectSeed % 3];
        vm.prank(admin);
        try features.revokeSubject(setId, subjectId) {
            ++revocations;
            _subjects[subjectId].active = false;
        } catch {}
    }
}

/// @notice Enrolment invariants of FeatureShareRegistry over random sequences of the
///         {EnrolmentHandler}'s actions.
contract FeatureShareInvariantTest is Test {
    EnrolmentHandler internal handler;
    FeatureShareRegistry internal features;

    function setUp() public {
        handler = new EnrolmentHandler();
        features = handler.deployed();
        targetContract(address(handler));
    }

    /// The handler's legitimate paths succeed and its spoiled ones are refused (the invariants
    /// are not vacuous): an enrolment, a revocation, a replay after it, a re-enrolment.
    function test_handler_reaches_every_outcome() public {
        handler.enroll(0, bytes32("s1"), 0, 0);
        handler.enroll(1, bytes32("s2"), 1, 0); // an outsider's signature: refused
        handler.enroll(1, bytes32("s2"), 4, 1); // two signatures swapped: refused
        handler.revoke(0);
        handler.replay(0); // the first enrolment's signatures: refused
        handler.enroll(0, bytes32("s3"), 0, 0);
        vm.assertEq(handler.enrolments(), 2, "enrolments");
        vm.assertEq(handler.revocations(), 1, "revocations");
        vm.assertEq(features.subject(handler.setId(), bytes32("alice")).enrolments, 2, "alice's enrolments");
        invariant_subjects_enrolled_only_with_every_nodes_signature_for_that_enrolment();
    }

    /// A subject is enrolled only with every node's signature of its own share for that very
    /// enrolment number (so no earlier enrolment's signatures re-enrol a revoked subject), the
    /// registry records the signed commitments and counts each enrolment once, and a revoked
    /// subject is inactive until enrolled again.
    function invariant_subjects_enrolled_only_with_every_nodes_signature_for_that_enrolment() public view {
        vm.assertEq(handler.illegitimateEnrolments(), 0, "a subject enrolled without the node set's signatures");
        for (uint256 i = 0; i < 3; ++i) {
            bytes32 subjectId = handler.subjectAt(i);
            IFeatureShareRegistry.SubjectRecord memory rec = features.subject(handler.setId(), subjectId);
            EnrolmentHandler.SubjectGhost memory g = handler.ghostOf(subjectId);
            vm.assertTrue(rec.active == g.active, "active flag");
            vm.assertEq(rec.enrolments, g.enrolments, "enrolment count");
            vm.assertEq(rec.commitmentsHash, g.commitmentsHash, "commitments");
        }
    }
}
