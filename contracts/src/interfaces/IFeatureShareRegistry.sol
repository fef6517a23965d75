// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title IFeatureShareRegistry
/// @notice Results of the MPC feature-share nodes: node sets (their addresses), per
///         subject the salted commitments of each node's feature-vector share, and verification
///         (1:1) and identification (1:N) decisions co-signed by every node of the set. Only
///         commitments and decisions are stored: never shares, features or images.
/// @dev Signatures are EIP-712 (docs/PROTOCOL.md): `ShareCommitment(setId, subjectId, enrolment,
///      commitment)` by each node for its own share of that very enrolment (the subject's next
///      enrolment number), `Decision(setId, sessionId, kind, subjectId, accepted,
///      probeCommitment)` by every node for one session. So no signature outlives the enrolment or
///      decision it was made for, and signatures of different enrolments cannot be combined.
///      Every node of a set must sign: shares are additive, so all of them are needed (there is no
///      threshold). Revocation is an administrator act ({revokeSubject}), e.g. on a data subject's
///      erasure request; a revoked subject may be enrolled again only with fresh signatures of
///      every node for the next enrolment number.
interface IFeatureShareRegistry {
    // ============================================================================================
    //                                          TYPES
    // ============================================================================================

    /// @notice An enrolled subject.
    /// @param commitmentsHash keccak256(abi.encodePacked(commitments)) in set order.
    /// @param enrolledAt Block timestamp of the current enrolment.
    /// @param enrolments How many times the subject was enrolled in this set.
    /// @param active Enrolled and not revoked.
    struct SubjectRecord {
        bytes32 commitmentsHash;
        uint64 enrolledAt;
        uint32 enrolments;
        bool active;
    }

    /// @notice A recorded decision.
    /// @param setId The node set that decided.
    /// @param kind 1 verify, 2 identify.
    /// @param accepted The decision.
    /// @param recordedAt Block timestamp (0: no such session).
    /// @param subjectId The claimed (verify) or matched (identify) subject; zero for a rejected identification.
    /// @param probeCommitment Commitment to the probe's feature shares.
    struct DecisionRecord {
        uint64 setId;
        uint8 kind;
        bool accepted;
        uint64 recordedAt;
        bytes32 subjectId;
        bytes32 probeCommitment;
    }

    // ============================================================================================
    //                                          ERRORS
    // ============================================================================================

    /// @notice A node set has between 1 and `MAX_NODES` nodes.
    /// @param count The number given.
    /// @param max The maximum.
    error FeatureShareRegistryBadNodeCount(uint256 count, uint256 max);
    /// @notice A node address is zero or repeated.
    /// @param index Its position.
    /// @param node The address.
    error FeatureShareRegistryBadNode(uint256 index, address node);
    /// @notice No node set has this id.
    /// @param setId The id.
    error FeatureShareRegistryUnknownNodeSet(uint256 setId);
    /// @notice The zero subject id is reserved.
    error FeatureShareRegistryZeroSubject();
    /// @notice One commitment per node, in set order, is required.
    /// @param expected The number of nodes.
    /// @param given The number of commitments.
    error FeatureShareRegistryCommitmentCount(uint256 expected, uint256 given);
    /// @notice One signature per node, in set order, is required.
    /// @param expected The number of nodes.
    /// @param given The number of signatures.
    error FeatureShareRegistrySignatureCount(uint256 expected, uint256 given);
    /// @notice A commitment is zero.
    /// @param index Its position.
    error FeatureShareRegistryZeroCommitment(uint256 index);
    /// @notice The signature at `index` does not recover to the node at `index`.
    /// @param setId The node set.
    /// @param index The position.
    /// @param node The node expected to sign.
    /// @param recovered The address recovered (zero when malformed).
    error FeatureShareRegistryBadSignature(uint256 setId, uint256 index, address node, address recovered);
    /// @notice The subject is already enrolled (revoke it first to re-enrol).
    /// @param setId The node set.
    /// @param subjectId The subject.
    error FeatureShareRegistrySubjectAlreadyEnrolled(uint256 setId, bytes32 subjectId);
    /// @notice The subject is not enrolled (or was revoked).
    /// @param setId The node set.
    /// @param subjectId The subject.
    error FeatureShareRegistrySubjectNotEnrolled(uint256 setId, bytes32 subjectId);
    /// @notice Decision kinds are 1 (verify) and 2 (identify).
    /// @param kind The kind given.
    error FeatureShareRegistryUnknownKind(uint8 kind);
    /// @notice A rejected identification names no subject.
    /// @param sessionId The session.
    /// @param subjectId The subject given.
    error FeatureShareRegistryUnexpectedSubject(bytes32 sessionId, bytes32 subjectId);
    /// @notice The session id was used by an earlier decision.
    /// @param sessionId The session.
    error FeatureShareRegistrySessionUsed(bytes32 sessionId);
    /// @notice The zero session id is reserved.
    error FeatureShareRegistryZeroSession();

    // ============================================================================================
    //                                          EVENTS
    // ============================================================================================

    /// @notice A node set was created.
    /// @param setId The new set id (1, 2, ...).
    /// @param nodes The nodes, in share order.
    event NodeSetCreated(uint256 indexed setId, address[] nodes);

    /// @notice A subject's feature-share commitments were enrolled.
    /// @param setId The node set.
    /// @param subjectId The subject.
    /// @param commitments One salted commitment per node, in set order.
    /// @param enrolment The enrolment number (1 for the first).
    event SubjectEnrolled(uint256 indexed setId, bytes32 indexed subjectId, bytes32[] commitments, uint32 enrolment);

    /// @notice A subject's enrolment was revoked.
    /// @param setId The node set.
    /// @param subjectId The subject.
    /// @param by The administrator.
    event SubjectRevoked(uint256 indexed setId, bytes32 indexed subjectId, address indexed by);

    /// @notice A verification or identification decision, co-signed by every node, was recorded.
    /// @param setId The node set.
    /// @param sessionId The session (used once).
    /// @param subjectId The claimed or matched subject (zero for a rejected identification).
    /// @param kind 1 verify, 2 identify.
    /// @param accepted The decision.
    /// @param probeCommitment Commitment to the probe's feature shares.
    event DecisionRecorded(
        uint256 indexed setId,
        bytes32 indexed sessionId,
        bytes32 indexed subjectId,
        uint8 kind,
        bool accepted,
        bytes32 probeCommitment
    );

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @notice Create a node set.
    /// @dev `DEFAULT_ADMIN_ROLE`. Emits {NodeSetCreated}. Reverts {FeatureShareRegistryBadNodeCount},
    ///      {FeatureShareRegistryBadNode}.
    /// @param nodes The nodes' signing addresses, in share order, distinct and non-zero.
    /// @return setId The new set id.
    function createNodeSet(address[] calldata nodes) external returns (uint256 setId);

    /// @notice Enrol a subject: one salted share commitment per node, each signed by its node.
    ///         Anyone may submit; the signatures are the authorization.
    /// @dev Emits {SubjectEnrolled}. Reverts {FeatureShareRegistryUnknownNodeSet},
    ///      {FeatureShareRegistryZeroSubject}, {FeatureShareRegistryCommitmentCount},
    ///      {FeatureShareRegistrySignatureCount}, {FeatureShareRegistryZeroCommitment},
    ///      {FeatureShareRegistryBadSignature}, {FeatureShareRegistrySubjectAlreadyEnrolled}.
    /// @param setId The node set.
    /// @param subjectId The subject (non-zero, e.g. a salted hash of an identifier).
    /// @param commitments One commitment per node, in set order.
    /// @param signatures One EIP-712 `ShareCommitment` signature per node, in set order, for the
    ///        subject's next enrolment number (`subject(setId, subjectId).enrolments + 1`).
    function enrollSubject(
        uint256 setId,
        bytes32 subjectId,
        bytes32[] calldata commitments,
        bytes[] calldata signatures
    ) external;

    /// @notice Revoke a subject's enrolment.
    /// @dev `DEFAULT_ADMIN_ROLE`. Emits {SubjectRevoked}. Reverts
    ///      {FeatureShareRegistrySubjectNotEnrolled}.
    /// @param setId The node set.
    /// @param subjectId The subject.
    function revokeSubject(uint256 setId, bytes32 subjectId) external;

    /// @notice Record a decision co-signed by every node of the set. Anyone may submit.
    /// @dev A verification names an enrolled subject; an accepted identification names the
    ///      enrolled match, a rejected one names none (zero). Emits {DecisionRecorded}. Reverts
    ///      {FeatureShareRegistryUnknownNodeSet}, {FeatureShareRegistryUnknownKind},
    ///      {FeatureShareRegistryZeroSession}, {FeatureShareRegistrySessionUsed},
    ///      {FeatureShareRegistrySubjectNotEnrolled}, {FeatureShareRegistryUnexpectedSubject},
    ///      {FeatureShareRegistrySignatureCount}, {FeatureShareRegistryBadSignature}.
    /// @param setId The node set.
    /// @param sessionId The session id (non-zero, used once).
    /// @param kind 1 verify, 2 identify.
    /// @param subjectId The claimed or matched subject, or zero.
    /// @param accepted The decision.
    /// @param probeCommitment Commitment to the probe's feature shares.
    /// @param signatures One EIP-712 `Decision` signature per node, in set order.
    function recordDecision(
        uint256 setId,
        bytes32 sessionId,
        uint8 kind,
        bytes32 subjectId,
        bool accepted,
        bytes32 probeCommitment,
        bytes[] calldata signatures
    ) external;

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @notice The nodes of a set (empty when unknown).
    /// @param setId The set.
    function nodeSet(uint256 setId) external view returns (address[] memory nodes);
    /// @notice Number of node sets (= the last id).
    function nodeSetCount() external view returns (uint256);
    /// @notice A subject's enrolment record (all zero when never enrolled).
    /// @param setId The set.
    /// @param subjectId The subject.
    function subject(uint256 setId, bytes32 subjectId) external view returns (SubjectRecord memory);
    /// @notice Whether the subject is enrolled and not revoked.
    /// @param setId The set.
    /// @param subjectId The subject.
    function isEnrolled(uint256 setId, bytes32 subjectId) external view returns (bool);
    /// @notice The decision recorded for a session (all zero when none).
    /// @param sessionId The session.
    function decision(bytes32 sessionId) external view returns (DecisionRecord memory);
}
