// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IFeatureShareRegistry} from "./interfaces/IFeatureShareRegistry.sol";
import {Roles} from "./lib/Roles.sol";
import {SplitsealEIP712} from "./lib/Signatures.sol";

/// @title FeatureShareRegistry
/// @notice See {IFeatureShareRegistry}: node sets, enrolled share commitments, decisions.
contract FeatureShareRegistry is IFeatureShareRegistry, Roles, SplitsealEIP712 {
    // ============================================================================================
    //                                         CONSTANTS
    // ============================================================================================

    /// @notice Largest node set.
    uint256 public constant MAX_NODES = 16;

    /// @notice Decision kind: 1:1 verification of a claimed subject.
    uint8 public constant KIND_VERIFY = 1;

    /// @notice Decision kind: 1:N identification among the enrolled subjects.
    uint8 public constant KIND_IDENTIFY = 2;

    bytes32 private constant _SHARE_COMMITMENT_TYPEHASH =
        keccak256("ShareCommitment(uint256 setId,bytes32 subjectId,uint32 enrolment,bytes32 commitment)");
    bytes32 private constant _DECISION_TYPEHASH = keccak256(
        "Decision(uint256 setId,bytes32 sessionId,uint8 kind,bytes32 subjectId,bool accepted,bytes32 probeCommitment)"
    );

    // ============================================================================================
    //                                          STORAGE
    // ============================================================================================

    struct NodeSet {
        address[] nodes;
    }

    uint256 private _nodeSetCount;
    mapping(uint256 setId => NodeSet) private _sets;
    mapping(uint256 setId => mapping(bytes32 subjectId => SubjectRecord)) private _subjects;
    mapping(bytes32 sessionId => DecisionRecord) private _decisions;

    // ============================================================================================
    //                                        CONSTRUCTOR
    // ============================================================================================

    /// @param admin Receives `DEFAULT_ADMIN_ROLE` (creates node sets, revokes subjects).
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IFeatureShareRegistry
    function createNodeSet(address[] calldata nodes) external onlyRole(DEFAULT_ADMIN_ROLE) returns (uint256 setId) {
        uint256 n = nodes.length;
        if (n == 0 || n > MAX_NODES) revert FeatureShareRegistryBadNodeCount(n, MAX_NODES);
        for (uint256 i = 0; i < n; ++i) {
            address node = nodes[i];
            if (node == address(0)) revert FeatureShareRegistryBadNode(i, node);
            for (uint256 j = 0; j < i; ++j) {
                if (nodes[j] == node) revert FeatureShareRegistryBadNode(i, node);
            }
        }
        setId = ++_nodeSetCount;
        NodeSet storage set = _sets[setId];
        set.nodes = nodes;
        emit NodeSetCreated(setId, nodes);
    }

    /// @inheritdoc IFeatureShareRegistry
    function enrollSubject(
        uint256 setId,
        bytes32 subjectId,
        bytes32[] calldata commitments,
        bytes[] calldata signatures
    ) external {
        address[] storage nodes = _nodesOf(setId);
        if (subjectId == bytes32(0)) revert FeatureShareRegistryZeroSubject();
        uint256 n = nodes.length;
        if (commitments.length != n) revert FeatureShareRegistryCommitmentCount(n, commitments.length);
        if (signatures.length != n) revert FeatureShareRegistrySignatureCount(n, signatures.length);
        SubjectRecord storage record = _subjects[setId][subjectId];
        if (record.active) revert FeatureShareRegistrySubjectAlreadyEnrolled(setId, subjectId);

        // every signature names this enrolment's number: none from an earlier one verifies
        uint32 enrolment = record.enrolments + 1;
        for (uint256 i = 0; i < n; ++i) {
            if (commitments[i] == bytes32(0)) revert FeatureShareRegistryZeroCommitment(i);
            bytes32 structHash =
                keccak256(abi.encode(_SHARE_COMMITMENT_TYPEHASH, setId, subjectId, enrolment, commitments[i]));
            _checkSignature(setId, i, nodes[i], structHash, signatures[i]);
        }
        record.commitmentsHash = keccak256(abi.encodePacked(commitments));
        record.enrolledAt = uint64(block.timestamp);
        record.enrolments = enrolment;
        record.active = true;
        emit SubjectEnrolled(setId, subjectId, commitments, enrolment);
    }

    /// @inheritdoc IFeatureShareRegistry
    function revokeSubject(uint256 setId, bytes32 subjectId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        SubjectRecord storage record = _subjects[setId][subjectId];
        if (!record.active) revert FeatureShareRegistrySubjectNotEnrolled(setId, subjectId);
        record.active = false;
        emit SubjectRevoked(setId, subjectId, msg.sender);
    }

    /// @inheritdoc IFeatureShareRegistry
    function recordDecision(
        uint256 setId,
        bytes32 sessionId,
        uint8 kind,
        bytes32 subjectId,
        bool accepted,
        bytes32 probeCommitment,
        bytes[] calldata signatures
    ) external {
        address[] storage nodes = _nodesOf(setId);
        if (kind != KIND_VERIFY && kind != KIND_IDENTIFY) revert FeatureShareRegistryUnknownKind(kind);
        if (sessionId == bytes32(0)) revert FeatureShareRegistryZeroSession();
        if (_decisions[sessionId].recordedAt != 0) revert FeatureShareRegistrySessionUsed(sessionId);
        if (kind == KIND_IDENTIFY && !accepted) {
            if (subjectId != bytes32(0)) revert FeatureShareRegistryUnexpectedSubject(sessionId, subjectId);
        } else if (!_subjects[setId][subjectId].active) {
            revert FeatureShareRegistrySubjectNotEnrolled(setId, subjectId);
        }
        uint256 n = nodes.length;
        if (signatures.length != n) revert FeatureShareRegistrySignatureCount(n, signatures.length);
        bytes32 structHash =
            keccak256(abi.encode(_DECISION_TYPEHASH, setId, sessionId, kind, subjectId, accepted, probeCommitment));
        for (uint256 i = 0; i < n; ++i) {
            _checkSignature(setId, i, nodes[i], structHash, signatures[i]);
        }
        _decisions[sessionId] = DecisionRecord({
            setId: uint64(setId),
            kind: kind,
            accepted: accepted,
            recordedAt: uint64(block.timestamp),
            subjectId: subjectId,
            probeCommitment: probeCommitment
        });
        emit DecisionRecorded(setId, sessionId, subjectId, kind, accepted, probeCommitment);
    }

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @inheritdoc IFeatureShareRegistry
    function nodeSet(uint256 setId) external view returns (address[] memory nodes) {
        return _sets[setId].nodes;
    }

    /// @inheritdoc IFeatureShareRegistry
    function nodeSetCount() external view returns (uint256) {
        return _nodeSetCount;
    }

    /// @inheritdoc IFeatureShareRegistry
    function subject(uint256 setId, bytes32 subjectId) external view returns (SubjectRecord memory) {
        return _subjects[setId][subjectId];
    }

    /// @inheritdoc IFeatureShareRegistry
    function isEnrolled(uint256 setId, bytes32 subjectId) external view returns (bool) {
        return _subjects[setId][subjectId].active;
    }

    /// @inheritdoc IFeatureShareRegistry
    function decision(bytes32 sessionId) external view returns (DecisionRecord memory) {
        return _decisions[sessionId];
    }

    // ============================================================================================
    //                                     INTERNAL FUNCTIONS
    // ============================================================================================

    /// @dev The nodes of an existing set; reverts {FeatureShareRegistryUnknownNodeSet}.
    function _nodesOf(uint256 setId) private view returns (address[] storage nodes) {
        nodes = _sets[setId].nodes;
        if (nodes.length == 0) revert FeatureShareRegistryUnknownNodeSet(setId);
    }

    /// @dev Reverts {FeatureShareRegistryBadSignature} unless `signature` over the typed
    ///      `structHash` recovers to `node`.
    function _checkSignature(uint256 setId, uint256 i, address node, bytes32 structHash, bytes calldata signature)
        private
        view
    {
        address recovered = _typedSigner(structHash, signature);
        if (recovered != node) revert FeatureShareRegistryBadSignature(setId, i, node, recovered);
    }
}
