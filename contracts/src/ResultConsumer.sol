// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IInferenceConsumer} from "./interfaces/IInferenceConsumer.sol";

/// @title ResultConsumer
/// @notice An example consumer: keeps each delivered result's commitment, the hash of its
///         ciphertext and its public label when the model publishes one (a request names it in
///         `requestInferenceWithCallback`).
/// @dev Only the EnclaveTransfer it was built for may call {onInferenceResult}; everything else
///      a consumer does with a result is its own business (this one stores 2 slots, 4 with a
///      label, about 45,000 gas (90,000): ask for at least 60,000 (110,000) callback gas).
contract ResultConsumer is IInferenceConsumer {
    /// @notice The caller is not the EnclaveTransfer this consumer trusts.
    /// @param caller The caller.
    error ResultConsumerNotEnclaveTransfer(address caller);
    /// @notice A result for this request was already received.
    /// @param requestId The request.
    error ResultConsumerAlreadyReceived(uint256 requestId);

    /// @notice A result was received.
    /// @param requestId The request.
    /// @param resultCommitment Its commitment.
    /// @param ciphertextLength Length of the encrypted result passed in (0 when by pointer).
    /// @param hasLabel Whether a public label came with it.
    /// @param label The public label (zero without one).
    event ResultReceived(
        uint256 indexed requestId, bytes32 resultCommitment, uint256 ciphertextLength, bool hasLabel, bytes32 label
    );

    /// @notice What this consumer keeps per request.
    /// @param resultCommitment The commitment delivered.
    /// @param ciphertextHash keccak256 of the ciphertext passed in (of empty bytes when by pointer).
    /// @param hasLabel Whether a public label came with it.
    /// @param label The public label (zero without one).
    struct Received {
        bytes32 resultCommitment;
        bytes32 ciphertextHash;
        bool hasLabel;
        bytes32 label;
    }

    address private immutable _enclaveTransfer;
    mapping(uint256 requestId => Received) private _received;

    /// @param enclaveTransfer_ The EnclaveTransfer whose callbacks this consumer accepts.
    constructor(address enclaveTransfer_) {
        _enclaveTransfer = enclaveTransfer_;
    }

    /// @inheritdoc IInferenceConsumer
    /// @dev Reverts {ResultConsumerNotEnclaveTransfer}, {ResultConsumerAlreadyReceived}. Emits
    ///      {ResultReceived}.
    function onInferenceResult(
        uint256 requestId,
        bytes32 resultCommitment,
        bytes calldata encryptedResult,
        bool hasLabel,
        bytes32 label
    ) external {
        if (msg.sender != _enclaveTransfer) revert ResultConsumerNotEnclaveTransfer(msg.sender);
        if (_received[requestId].resultCommitment != bytes32(0)) revert ResultConsumerAlreadyReceived(requestId);
        _received[requestId] = Received(resultCommitment, keccak256(encryptedResult), hasLabel, label);
        emit ResultReceived(requestId, resultCommitment, encryptedResult.length, hasLabel, label);
    }

    /// @notice What was received for a request (all zero when nothing was).
    /// @param requestId The request.
    function received(uint256 requestId) external view returns (Received memory) {
        return _received[requestId];
    }

    /// @notice The EnclaveTransfer this consumer accepts callbacks from.
    function enclaveTransfer() external view returns (address) {
        return _enclaveTransfer;
    }
}
