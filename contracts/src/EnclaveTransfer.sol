// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IBackboneExecution} from "./interfaces/IBackboneExecution.sol";
import {IEnclaveTransfer} from "./interfaces/IEnclaveTransfer.sol";
import {IInferenceConsumer} from "./interfaces/IInferenceConsumer.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {SplitsealEIP712} from "./lib/Signatures.sol";
import {RequestBinding} from "./lib/RequestBinding.sol";

/// @title EnclaveTransfer (the "second smart contract")
/// @notice See {IEnclaveTransfer}: transfers into enclaves, signed results, failures.
/// @dev Holds no per-request storage: the request's status and binding live in
///      BackboneExecution, which this contract alone may move to Completed or Failed.
contract EnclaveTransfer is IEnclaveTransfer, SplitsealEIP712 {
    // ============================================================================================
    //                                         CONSTANTS
    // ============================================================================================

    /// @notice Largest inline encrypted result, bytes (bigger results go off-chain by pointer).
    uint256 public constant MAX_RESULT = 16 * 1024;

    /// @notice Largest result pointer, bytes.
    uint256 public constant MAX_POINTER = 512;

    /// @notice Largest failure reason text, bytes.
    uint256 public constant MAX_REASON = 256;

    /// @notice Highest defined failure reason code (7 Internal).
    uint8 public constant MAX_REASON_CODE = 7;

    /// @notice Most bytes of a consumer's return or revert data copied into {ConsumerCalled}.
    uint256 public constant MAX_CALLBACK_RETURN = 64;

    /// @dev Gas kept back for the code between the gas check and the callback's CALL (memory,
    ///      the warm call itself) and for the code after it (the event).
    uint256 private constant _CALLBACK_OVERHEAD = 10_000;

    bytes32 private constant _INFERENCE_RESULT_TYPEHASH = keccak256(
        "InferenceResult(uint256 requestId,bytes32 modelId,uint32 modelVersion,bytes32 inputCommitment,address requester,bytes32 requesterKey,bytes32 transferHash,bytes32 resultCommitment,uint64 sequence,bool hasLabel,bytes32 label)"
    );

    // ============================================================================================
    //                                          STORAGE
    // ============================================================================================

    IModelRegistry private immutable _registry;
    IBackboneExecution private immutable _backbone;

    // ============================================================================================
    //                                        CONSTRUCTOR
    // ============================================================================================

    /// @param registry The ModelRegistry.
    /// @param backbone The BackboneExecution (which deploys this contract in its constructor).
    constructor(IModelRegistry registry, IBackboneExecution backbone) {
        _registry = registry;
        _backbone = backbone;
    }

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IEnclaveTransfer
    function recordTransfer(uint256 requestId, address enclave, bytes32 transferHash) external {
        if (msg.sender != address(_backbone)) revert EnclaveTransferNotBackbone(msg.sender);
        emit TransferRecorded(requestId, enclave, transferHash);
    }

    /// @inheritdoc IEnclaveTransfer
    function submitResult(
        RequestBinding.ResultClaim calldata claim,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment,
        bytes calldata signature
    ) external {
        // Completes the request if it was Transferred and in time; reverting in _submit undoes it.
        IBackboneExecution.Request memory r = _backbone.markCompleted(claim.requestId);
        _submit(claim, r, encryptedResult, resultPointer, resultCommitment, signature);
    }

    /// @inheritdoc IEnclaveTransfer
    function recordTransferAndSubmit(
        RequestBinding.ResultClaim calldata claim,
        IBackboneExecution.Request calldata request,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment,
        bytes calldata signature
    ) external {
        if (msg.sender != address(_backbone)) revert EnclaveTransferNotBackbone(msg.sender);
        _submit(claim, request, encryptedResult, resultPointer, resultCommitment, signature);
    }

    /// @inheritdoc IEnclaveTransfer
    function reportFailure(uint256 requestId, uint8 code, string calldata reason) external {
        if (!_backbone.hasRole(RequestBinding.NODE_ROLE, msg.sender)) revert EnclaveTransferNotNode(msg.sender);
        if (code == 0 || code > MAX_REASON_CODE) revert EnclaveTransferUnknownReasonCode(code);
        if (bytes(reason).length > MAX_REASON) revert EnclaveTransferReasonTooLong(bytes(reason).length, MAX_REASON);
        IBackboneExecution.Status previous = _backbone.markFailed(requestId);
        if (previous != IBackboneExecution.Status.Requested && previous != IBackboneExecution.Status.Transferred) {
            revert EnclaveTransferInvalidStatus(requestId, uint8(previous));
        }
        emit RequestFailed(requestId, msg.sender, code, reason);
    }

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @inheritdoc IEnclaveTransfer
    function modelRegistry() external view returns (address) {
        return address(_registry);
    }

    /// @inheritdoc IEnclaveTransfer
    function backboneExecution() external view returns (address) {
        return address(_backbone);
    }

    // ============================================================================================
    //                                     INTERNAL FUNCTIONS
    // ============================================================================================

    /// @dev The checks and the effect of {submitResult}.
    /// @dev `r` is the request as it stood Transferred, already marked Completed by the caller.
    function _submit(
        RequestBinding.ResultClaim calldata claim,
        IBackboneExecution.Request memory r,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment,
        bytes calldata signature
    ) private {
        uint256 requestId = claim.requestId;
        resultCommitment = _resultCommitment(requestId, encryptedResult, resultPointer, resultCommitment);
        if (claim.sequence == 0) revert EnclaveTransferZeroSequence(requestId);
        if (r.status != IBackboneExecution.Status.Transferred) {
            revert EnclaveTransferInvalidStatus(requestId, uint8(r.status));
        }
        if (block.timestamp > r.deadline) revert EnclaveTransferDeadlinePassed(requestId, r.deadline, block.timestamp);
        bytes22 computed = RequestBinding.ofClaim(claim);
        if (computed != r.binding) revert EnclaveTransferBindingMismatch(requestId, r.binding, computed);

        address enclave = claim.enclave;
        _checkSigned(claim, r.version, resultCommitment, signature);
        // The label is signed (a node cannot invent one) and forwarded only for a version its
        // owner registered with the public_label policy (a model without it never leaks one).
        if (claim.hasLabel ? !_registry.allowsPublicLabel(claim.modelId, r.version) : claim.label != bytes32(0)) {
            revert EnclaveTransferLabelNotAllowed(requestId, claim.modelId, r.version);
        }
        if (!_registry.isEnclaveServing(claim.modelId, r.version, enclave)) {
            revert EnclaveTransferEnclaveNotServing(claim.modelId, r.version, enclave);
        }
        emit ResultSubmitted(requestId, enclave, claim.sequence, resultCommitment);
        if (claim.consumer != address(0)) _callConsumer(claim, resultCommitment, encryptedResult);
    }

    /// @dev Calls the request's consumer with exactly its callback gas limit, after every effect
    ///      of the delivery (so a re-entering consumer finds the request Completed). The call is
    ///      low-level with no return data copied but the first `MAX_CALLBACK_RETURN` bytes, so
    ///      neither a revert, nor burnt gas, nor a return bomb undoes the delivery. Reverts
    ///      {EnclaveTransferCallbackGasTooLow} when less than the limit would reach the consumer
    ///      (EIP-150 passes on at most 63/64 of the gas left): otherwise a node could make a
    ///      callback fail by sending too little gas, and the request would still complete.
    function _callConsumer(
        RequestBinding.ResultClaim calldata claim,
        bytes32 resultCommitment,
        bytes calldata encryptedResult
    ) private {
        address consumer = claim.consumer;
        uint256 gasLimit = claim.callbackGasLimit;
        if (consumer.code.length == 0) {
            emit ConsumerCalled(claim.requestId, consumer, false, 0, "");
            return;
        }
        bytes memory data = abi.encodeCall(
            IInferenceConsumer.onInferenceResult,
            (claim.requestId, resultCommitment, encryptedResult, claim.hasLabel, claim.label)
        );
        uint256 needed = gasLimit + gasLimit / 63 + _CALLBACK_OVERHEAD;
        uint256 available = gasleft();
        if (available < needed) revert EnclaveTransferCallbackGasTooLow(claim.requestId, available, needed);
        bool succeeded;
        bytes memory returnHead;
        uint256 gasBefore = gasleft();
        assembly ("memory-safe") {
            succeeded := call(gasLimit, consumer, 0, add(data, 0x20), mload(data), 0, 0)
            let size := returndatasize()
            if gt(size, MAX_CALLBACK_RETURN) { size := MAX_CALLBACK_RETURN }
            returnHead := mload(0x40)
            mstore(returnHead, size)
            returndatacopy(add(returnHead, 0x20), 0, size)
            mstore(0x40, add(returnHead, add(0x20, and(add(size, 31), not(31)))))
        }
        uint256 gasUsed = gasBefore - gasleft();
        emit ConsumerCalled(claim.requestId, consumer, succeeded, gasUsed, returnHead);
    }

    /// @dev The result commitment: computed from an inline result (then no pointer and a zero
    ///      commitment), or the given one with a pointer (then no inline result).
    function _resultCommitment(
        uint256 requestId,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment
    ) private pure returns (bytes32) {
        uint256 resultLength = encryptedResult.length;
        uint256 pointerLength = bytes(resultPointer).length;
        if (resultLength != 0) {
            if (resultLength > MAX_RESULT) revert EnclaveTransferBadResultLength(requestId, resultLength);
            if (pointerLength != 0 || resultCommitment != bytes32(0)) {
                revert EnclaveTransferBadResultPointer(requestId, pointerLength);
            }
            return keccak256(encryptedResult);
        }
        if (pointerLength == 0 || pointerLength > MAX_POINTER || resultCommitment == bytes32(0)) {
            revert EnclaveTransferBadResultPointer(requestId, pointerLength);
        }
        return resultCommitment;
    }

    /// @dev Reverts {EnclaveTransferBadSignature} unless the claim's enclave signed it.
    function _checkSigned(
        RequestBinding.ResultClaim calldata claim,
        uint32 version,
        bytes32 resultCommitment,
        bytes calldata signature
    ) private view {
        address recovered = _typedSigner(_resultStructHash(claim, version, resultCommitment), signature);
        if (recovered != claim.enclave) revert EnclaveTransferBadSignature(claim.requestId, claim.enclave, recovered);
    }

    /// @dev EIP-712 struct hash of `InferenceResult` for a claim (docs/PROTOCOL.md).
    function _resultStructHash(RequestBinding.ResultClaim calldata claim, uint32 version, bytes32 resultCommitment)
        private
        pure
        returns (bytes32)
    {
        return keccak256(
            abi.encode(
                _INFERENCE_RESULT_TYPEHASH,
                claim.requestId,
                claim.modelId,
                version,
                claim.inputCommitment,
                claim.requester,
                claim.requesterKey,
                claim.transferHash,
                resultCommitment,
                claim.sequence,
                claim.hasLabel,
                claim.label
            )
        );
    }
}
