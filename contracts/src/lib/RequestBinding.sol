// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title RequestBinding
/// @notice The one definition of a request's running binding, of the claim an enclave signs
///         with its result, and of the node role, shared by BackboneExecution (which stores the
///         binding) and EnclaveTransfer (which checks it).
/// @dev The binding is 22 bytes so that it packs with the request's status, version and deadline
///      in one storage slot (docs/PROTOCOL.md, "Request lifecycle"). It binds the requester and
///      the requester's key from the start, so a result signed for any other key cannot complete
///      the request.
library RequestBinding {
    /// @notice keccak256("splitseal.role.node"): the role of the REE inference nodes.
    bytes32 internal constant NODE_ROLE = keccak256("splitseal.role.node");

    /// @notice What an enclave's signed result names besides the result itself: the EIP-712
    ///         `InferenceResult` fields that the calldata carries (the model version is read from
    ///         storage, the result commitment computed from the ciphertext).
    /// @param requestId The request.
    /// @param modelId The request's model (from `InferenceRequested`).
    /// @param inputCommitment The request's input commitment (from `InferenceRequested`).
    /// @param requester The account that asked (from `InferenceRequested`).
    /// @param requesterKey The X25519 key the result is encrypted to (from `InferenceRequested`).
    /// @param enclave The enclave the backbone output was passed to, which signed the result.
    /// @param transferHash keccak256 of the transfer ciphertext.
    /// @param sequence The enclave's answer counter (from its sealed state; 1, 2, ...).
    /// @param consumer The contract the request named to be called back with the result (zero:
    ///        none; from `InferenceRequested`).
    /// @param callbackGasLimit The gas the consumer's callback gets (zero without a consumer).
    /// @param hasLabel Whether the enclave released a public label (only under the model's
    ///        `public_label` output policy; signed).
    /// @param label The public label (a class index as a big-endian uint256; zero without one; signed).
    struct ResultClaim {
        uint256 requestId;
        bytes32 modelId;
        bytes32 inputCommitment;
        address requester;
        bytes32 requesterKey;
        address enclave;
        bytes32 transferHash;
        uint64 sequence;
        address consumer;
        uint32 callbackGasLimit;
        bool hasLabel;
        bytes32 label;
    }

    /// @notice Binding of a new request: its model, input commitment, requester and result key.
    function request(bytes32 modelId, bytes32 inputCommitment, address requester, bytes32 requesterKey)
        internal
        pure
        returns (bytes22)
    {
        return bytes22(keccak256(abi.encode(modelId, inputCommitment, requester, requesterKey)));
    }

    /// @notice Binding of a new request that names a consumer to call back: the request's binding
    ///         extended by the consumer and its callback gas limit (requests without a consumer
    ///         keep {request}'s binding, so the callback costs only the requests that use it).
    function withCallback(bytes22 requestBinding, address consumer, uint32 callbackGasLimit)
        internal
        pure
        returns (bytes22)
    {
        return bytes22(keccak256(abi.encode(requestBinding, consumer, callbackGasLimit)));
    }

    /// @notice Binding after the backbone stage: the previous binding, the enclave and the
    ///         commitment of the transfer passed into it.
    function transfer(bytes22 previousBinding, address enclave, bytes32 transferHash) internal pure returns (bytes22) {
        return bytes22(keccak256(abi.encode(previousBinding, enclave, transferHash)));
    }

    /// @notice The binding a Transferred request must hold for `claim` to complete it.
    function ofClaim(ResultClaim calldata claim) internal pure returns (bytes22) {
        bytes22 binding = request(claim.modelId, claim.inputCommitment, claim.requester, claim.requesterKey);
        if (claim.consumer != address(0)) binding = withCallback(binding, claim.consumer, claim.callbackGasLimit);
        return transfer(binding, claim.enclave, claim.transferHash);
    }
}
