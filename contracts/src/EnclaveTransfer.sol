// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IBackboneExecution} from "./interfaces/IBackboneExecution.sol";
import {IEnclaveTransfer} from "./interfaces/IEnclaveTransfer.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {ECDSA} from "./lib/ECDSA.sol";
import {EIP712} from "./lib/EIP712.sol";
import {RequestBinding} from "./lib/RequestBinding.sol";

/// @title EnclaveTransfer (the "second smart contract")
/// @notice See {IEnclaveTransfer}: transfers into enclaves, signed results, failures.
/// @dev Holds no per-request storage: the request's status and binding live in
///      BackboneExecution, which this contract alone may move to Completed or Failed.
contract EnclaveTransfer is IEnclaveTransfer, EIP712 {
    // ============================================================================================
    //                                         CONSTANTS
    // ============================================================================================

    /// @notice Largest encrypted result, bytes.
    uint256 public constant MAX_RESULT = 16 * 1024;

    /// @notice Largest failure reason text, bytes.
    uint256 public constant MAX_REASON = 256;

    /// @notice Highest defined failure reason code (7 Internal).
    uint8 public constant MAX_REASON_CODE = 7;

    bytes32 private constant _INFERENCE_RESULT_TYPEHASH = keccak256(
        "InferenceResult(uint256 requestId,bytes32 modelId,uint32 modelVersion,bytes32 inputCommitment,bytes32 transferHash,bytes32 resultCommitment)"
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
    /// @param backbone The BackboneExecution (which must then link this contract with
    ///        `setEnclaveTransfer`).
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
        uint256 requestId,
        bytes32 modelId,
        bytes32 inputCommitment,
        address enclave,
        bytes32 transferHash,
        bytes calldata encryptedResult,
        bytes calldata signature
    ) external {
        uint256 resultLength = encryptedResult.length;
        if (resultLength == 0 || resultLength > MAX_RESULT) revert EnclaveTransferBadResultLength(requestId, resultLength);

        // Completes the request if it was Transferred and in time; reverting below undoes it.
        IBackboneExecution.Request memory r = _backbone.markCompleted(requestId);
        if (r.status != IBackboneExecution.Status.Transferred) {
            revert EnclaveTransferInvalidStatus(requestId, uint8(r.status));
        }
        if (block.timestamp > r.deadline) revert EnclaveTransferDeadlinePassed(requestId, r.deadline, block.timestamp);
        bytes22 computed = RequestBinding.transfer(RequestBinding.request(modelId, inputCommitment), enclave, transferHash);
        if (computed != r.binding) revert EnclaveTransferBindingMismatch(requestId, r.binding, computed);

        bytes32 resultCommitment = keccak256(encryptedResult);
        bytes32 structHash = keccak256(
            abi.encode(
                _INFERENCE_RESULT_TYPEHASH, requestId, modelId, r.version, inputCommitment, transferHash, resultCommitment
            )
        );
        address recovered = ECDSA.recover(_hashTypedData(structHash), signature);
        if (recovered != enclave) revert EnclaveTransferBadSignature(requestId, enclave, recovered);
        if (!_registry.isEnclaveServing(modelId, r.version, enclave)) {
            revert EnclaveTransferEnclaveNotServing(modelId, r.version, enclave);
        }
        emit ResultSubmitted(requestId, enclave, resultCommitment, encryptedResult, signature);
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
}
