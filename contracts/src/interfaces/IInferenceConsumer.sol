// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title IInferenceConsumer
/// @notice What a contract implements to be called back with a request's result (the request
///         names it and a callback gas limit in `BackboneExecution.requestInferenceWithCallback`).
/// @dev Called by the EnclaveTransfer right after the result was accepted (`ResultSubmitted`),
///      with exactly the request's callback gas limit. A consumer must check that the caller is
///      that EnclaveTransfer. Whatever the callback does (revert, run out of gas, return huge
///      data) the delivery stands; the outcome is recorded in `ConsumerCalled`. The result is
///      encrypted to the requester's key: a consumer holds a commitment and a ciphertext, and a
///      party holding the key (e.g. a requester acting through the consumer) decrypts it. A model
///      version registered with the `public_label` output policy also hands the consumer the
///      plaintext label the enclave signed (`hasLabel`); any other passes `hasLabel = false`.
interface IInferenceConsumer {
    /// @notice The result of `requestId` was delivered and checked.
    /// @param requestId The request.
    /// @param resultCommitment keccak256 of the encrypted result (inline or at its pointer).
    /// @param encryptedResult The result encrypted to the requester's key (empty when the result
    ///        went off-chain by pointer; its commitment is `resultCommitment`).
    /// @param hasLabel Whether a public label came with the result (the model version allows it
    ///        and the enclave signed it).
    /// @param label The public label: the predicted class index as a big-endian uint256 (zero
    ///        when `hasLabel` is false).
    function onInferenceResult(
        uint256 requestId,
        bytes32 resultCommitment,
        bytes calldata encryptedResult,
        bool hasLabel,
        bytes32 label
    ) external;
}
