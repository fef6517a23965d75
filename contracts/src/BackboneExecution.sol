// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {EnclaveTransfer} from "./EnclaveTransfer.sol";
import {IBackboneExecution} from "./interfaces/IBackboneExecution.sol";
import {IEnclaveTransfer} from "./interfaces/IEnclaveTransfer.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {Roles} from "./lib/Roles.sol";
import {RequestBinding} from "./lib/RequestBinding.sol";

/// @title BackboneExecution (the "first smart contract")
/// @notice See {IBackboneExecution}: inference requests, the backbone stage, timeouts.
contract BackboneExecution is IBackboneExecution, Roles {
    // ============================================================================================
    //                                         CONSTANTS
    // ============================================================================================

    /// @notice Role of the REE inference nodes.
    bytes32 public constant NODE_ROLE = RequestBinding.NODE_ROLE;

    /// @notice Largest inline encrypted input, bytes (bigger inputs go off-chain by pointer).
    uint256 public constant MAX_INLINE_INPUT = 16 * 1024;

    /// @notice Largest input pointer, bytes.
    uint256 public constant MAX_POINTER = 512;

    /// @notice Shortest and longest time to live of a request, seconds.
    uint32 public constant MIN_TTL = 1;
    uint32 public constant MAX_TTL = 30 days;

    /// @notice Least and most gas a consumer's callback may ask for.
    uint32 public constant MIN_CALLBACK_GAS = 5_000;
    uint32 public constant MAX_CALLBACK_GAS = 1_000_000;

    /// @notice Most deliveries in one {deliverResults} batch.
    uint256 public constant MAX_BATCH = 64;

    // ============================================================================================
    //                                          STORAGE
    // ============================================================================================

    IModelRegistry private immutable _registry;
    /// @dev Deployed by the constructor: immutable, so that no delivery pays for reading the link.
    address private immutable _enclaveTransfer;
    bytes32 private _inputKey;
    /// @dev The next request id. Starts at 1 (set in the constructor) so that no request pays
    ///      for turning a zero slot non-zero.
    uint256 private _nextRequestId;
    mapping(uint256 requestId => Request) private _requests;

    // ============================================================================================
    //                                        CONSTRUCTOR
    // ============================================================================================

    /// @param admin Receives `DEFAULT_ADMIN_ROLE` (grants `NODE_ROLE`, sets the input key).
    /// @param registry The ModelRegistry.
    /// @dev Deploys its EnclaveTransfer (emits {EnclaveTransferLinked}), so the two are linked
    ///      from the first block, once and for all.
    constructor(address admin, IModelRegistry registry) {
        if (address(registry) == address(0)) revert BackboneExecutionZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _registry = registry;
        _nextRequestId = 1;
        address transfer = address(new EnclaveTransfer(registry, this));
        _enclaveTransfer = transfer;
        emit EnclaveTransferLinked(transfer);
    }

    // ============================================================================================
    //                                     ADMIN FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IBackboneExecution
    function setInputKey(bytes32 newKey) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newKey == bytes32(0)) revert BackboneExecutionZeroInputKey();
        bytes32 previous = _inputKey;
        _inputKey = newKey;
        emit InputKeyChanged(previous, newKey);
    }

    // ============================================================================================
    //                                   REQUESTER FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IBackboneExecution
    function requestInference(
        bytes32 modelId,
        uint32 version,
        bytes32 inputCommitment,
        bytes calldata inlineInput,
        string calldata inputPointer,
        bytes32 requesterKey,
        uint32 ttl
    ) external returns (uint256 requestId) {
        return _request(modelId, version, inputCommitment, inlineInput.length, inputPointer, requesterKey, ttl, address(0), 0);
    }

    /// @inheritdoc IBackboneExecution
    function requestInferenceWithCallback(
        bytes32 modelId,
        uint32 version,
        bytes32 inputCommitment,
        bytes calldata inlineInput,
        string calldata inputPointer,
        bytes32 requesterKey,
        uint32 ttl,
        address consumer,
        uint32 callbackGasLimit
    ) external returns (uint256 requestId) {
        if (
            consumer.code.length == 0 || callbackGasLimit < MIN_CALLBACK_GAS || callbackGasLimit > MAX_CALLBACK_GAS
        ) revert BackboneExecutionBadCallback(consumer, callbackGasLimit);
        return _request(
            modelId, version, inputCommitment, inlineInput.length, inputPointer, requesterKey, ttl, consumer, callbackGasLimit
        );
    }

    /// @inheritdoc IBackboneExecution
    function timeout(uint256 requestId) external {
        Request storage r = _requests[requestId];
        Status previous = _statusOf(requestId, r.status);
        if (previous == Status.None) revert BackboneExecutionUnknownRequest(requestId);
        if (previous != Status.Requested && previous != Status.Transferred) {
            revert BackboneExecutionInvalidStatus(requestId, previous);
        }
        if (block.timestamp <= r.deadline) {
            revert BackboneExecutionDeadlineNotReached(requestId, r.deadline, block.timestamp);
        }
        r.status = Status.TimedOut;
        emit RequestTimedOut(requestId, msg.sender, previous);
    }

    // ============================================================================================
    //                                      NODE FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IBackboneExecution
    function recordBackboneOutput(uint256 requestId, bytes32 outputCommitment, address enclave, bytes32 transferHash)
        external
        onlyRole(NODE_ROLE)
    {
        _recordBackboneOutput(requestId, outputCommitment, enclave, transferHash);
    }

    /// @inheritdoc IBackboneExecution
    function deliverResult(
        RequestBinding.ResultClaim calldata claim,
        bytes32 outputCommitment,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment,
        bytes calldata signature
    ) external onlyRole(NODE_ROLE) {
        _deliver(claim, outputCommitment, encryptedResult, resultPointer, resultCommitment, signature);
    }

    /// @inheritdoc IBackboneExecution
    function deliverResults(Delivery[] calldata deliveries) external onlyRole(NODE_ROLE) returns (uint256 delivered) {
        uint256 count = deliveries.length;
        if (count == 0 || count > MAX_BATCH) revert BackboneExecutionBadBatchLength(count, MAX_BATCH);
        for (uint256 i = 0; i < count; ++i) {
            try this.deliverOne(deliveries[i]) {
                ++delivered;
            } catch (bytes memory reason) {
                // Our own contracts' custom errors, so bounded. Too little gas is the sender's
                // fault, never the request's: undo the whole batch so that it is sent again.
                if (reason.length < 4 || bytes4(reason) == IEnclaveTransfer.EnclaveTransferCallbackGasTooLow.selector) {
                    assembly ("memory-safe") {
                        revert(add(reason, 0x20), mload(reason))
                    }
                }
                emit DeliverySkipped(deliveries[i].claim.requestId, reason);
            }
        }
    }

    /// @inheritdoc IBackboneExecution
    function deliverOne(Delivery calldata delivery) external {
        if (msg.sender != address(this)) revert BackboneExecutionNotSelf(msg.sender);
        _deliver(
            delivery.claim,
            delivery.outputCommitment,
            delivery.encryptedResult,
            delivery.resultPointer,
            delivery.resultCommitment,
            delivery.signature
        );
    }

    // ============================================================================================
    //                               ENCLAVE TRANSFER FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IBackboneExecution
    function markCompleted(uint256 requestId) external returns (Request memory previous) {
        if (msg.sender != _enclaveTransfer) revert BackboneExecutionNotEnclaveTransfer(msg.sender);
        previous = _requests[requestId];
        previous.status = _statusOf(requestId, previous.status);
        if (previous.status == Status.Transferred && block.timestamp <= previous.deadline) {
            delete _requests[requestId]; // Completed (see {_statusOf})
        }
    }

    /// @inheritdoc IBackboneExecution
    function markFailed(uint256 requestId) external returns (Status previous) {
        if (msg.sender != _enclaveTransfer) revert BackboneExecutionNotEnclaveTransfer(msg.sender);
        Request storage r = _requests[requestId];
        previous = _statusOf(requestId, r.status);
        if (previous == Status.Requested || previous == Status.Transferred) {
            r.status = Status.Failed;
        }
    }

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @inheritdoc IBackboneExecution
    function request(uint256 requestId) external view returns (Request memory r) {
        r = _requests[requestId];
        r.status = _statusOf(requestId, r.status);
    }

    /// @inheritdoc IBackboneExecution
    function status(uint256 requestId) external view returns (Status) {
        return _statusOf(requestId, _requests[requestId].status);
    }

    /// @inheritdoc IBackboneExecution
    function requestCount() external view returns (uint256) {
        return _nextRequestId - 1;
    }

    /// @inheritdoc IBackboneExecution
    function inputKey() external view returns (bytes32) {
        return _inputKey;
    }

    /// @inheritdoc IBackboneExecution
    function modelRegistry() external view returns (address) {
        return address(_registry);
    }

    /// @inheritdoc IBackboneExecution
    function enclaveTransfer() external view returns (address) {
        return _enclaveTransfer;
    }

    /// @inheritdoc IBackboneExecution
    function requestBinding(bytes32 modelId, bytes32 inputCommitment, address requester, bytes32 requesterKey)
        external
        pure
        returns (bytes22)
    {
        return RequestBinding.request(modelId, inputCommitment, requester, requesterKey);
    }

    /// @inheritdoc IBackboneExecution
    function transferBinding(bytes22 previousBinding, address enclave, bytes32 transferHash)
        external
        pure
        returns (bytes22)
    {
        return RequestBinding.transfer(previousBinding, enclave, transferHash);
    }

    // ============================================================================================
    //                                     INTERNAL FUNCTIONS
    // ============================================================================================

    /// @dev The checks and effects of a new request (with or without a consumer to call back).
    ///      The inline input itself stays in calldata: only its length is checked here.
    function _request(
        bytes32 modelId,
        uint32 version,
        bytes32 inputCommitment,
        uint256 inlineLength,
        string calldata inputPointer,
        bytes32 requesterKey,
        uint32 ttl,
        address consumer,
        uint32 callbackGasLimit
    ) private returns (uint256 requestId) {
        _checkInput(inlineLength, bytes(inputPointer).length);
        if (inputCommitment == bytes32(0)) revert BackboneExecutionZeroCommitment();
        if (requesterKey == bytes32(0)) revert BackboneExecutionZeroRequesterKey();
        if (ttl < MIN_TTL || ttl > MAX_TTL) revert BackboneExecutionBadTtl(ttl, MIN_TTL, MAX_TTL);
        uint64 deadline = uint64(block.timestamp) + ttl;
        if (!_registry.versionExists(modelId, version)) revert BackboneExecutionUnknownModelVersion(modelId, version);

        bytes22 binding = RequestBinding.request(modelId, inputCommitment, msg.sender, requesterKey);
        if (consumer != address(0)) binding = RequestBinding.withCallback(binding, consumer, callbackGasLimit);
        requestId = _nextRequestId++;
        _requests[requestId] =
            Request({binding: binding, deadline: uint40(deadline), version: version, status: Status.Requested});
        emit InferenceRequested(
            requestId,
            modelId,
            msg.sender,
            version,
            inputCommitment,
            inputPointer,
            requesterKey,
            deadline,
            consumer,
            callbackGasLimit
        );
    }

    /// @dev Exactly one of an inline input and a pointer, each within its bound.
    function _checkInput(uint256 inlineLength, uint256 pointerLength) private pure {
        if ((inlineLength == 0) == (pointerLength == 0)) revert BackboneExecutionBadInput(inlineLength, pointerLength);
        if (inlineLength > MAX_INLINE_INPUT) revert BackboneExecutionInputTooLarge(inlineLength, MAX_INLINE_INPUT);
        if (pointerLength > MAX_POINTER) revert BackboneExecutionInputTooLarge(pointerLength, MAX_POINTER);
    }

    /// @dev {deliverResult}'s work: the backbone stage, then the transfer and the result on the
    ///      EnclaveTransfer, all or nothing.
    function _deliver(
        RequestBinding.ResultClaim calldata claim,
        bytes32 outputCommitment,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment,
        bytes calldata signature
    ) private {
        uint256 requestId = claim.requestId;
        Request memory r = _requests[requestId];
        address transfer = _checkBackboneStage(requestId, r, claim.enclave);
        r.binding = RequestBinding.transfer(r.binding, claim.enclave, claim.transferHash);
        r.status = Status.Transferred;
        // Completed at once, before the EnclaveTransfer checks the result (and calls a consumer
        // back): its revert undoes this. Clearing the slot refunds most of what it cost to fill.
        delete _requests[requestId];
        // No BackboneExecuted or TransferRecorded here: the output commitment, the enclave and the
        // transfer hash are this call's arguments, the node its sender; ResultSubmitted marks it.
        outputCommitment;
        IEnclaveTransfer(transfer).recordTransferAndSubmit(
            claim, r, encryptedResult, resultPointer, resultCommitment, signature
        );
    }

    /// @dev Requested -> Transferred; emits {BackboneExecuted} and has the EnclaveTransfer emit
    ///      `TransferRecorded`. Returns the EnclaveTransfer's address.
    function _recordBackboneOutput(uint256 requestId, bytes32 outputCommitment, address enclave, bytes32 transferHash)
        private
    {
        Request storage r = _requests[requestId];
        address transfer = _checkBackboneStage(requestId, r, enclave);
        r.status = Status.Transferred;
        r.binding = RequestBinding.transfer(r.binding, enclave, transferHash);
        emit BackboneExecuted(requestId, msg.sender, outputCommitment);
        IEnclaveTransfer(transfer).recordTransfer(requestId, enclave, transferHash);
    }

    /// @dev The backbone stage's checks: Requested, in time, an enclave named; returns the
    ///      EnclaveTransfer.
    function _checkBackboneStage(uint256 requestId, Request memory r, address enclave)
        private
        view
        returns (address transfer)
    {
        Status current = _statusOf(requestId, r.status);
        if (current == Status.None) revert BackboneExecutionUnknownRequest(requestId);
        if (current != Status.Requested) revert BackboneExecutionInvalidStatus(requestId, current);
        if (block.timestamp > r.deadline) revert BackboneExecutionDeadlinePassed(requestId, r.deadline, block.timestamp);
        if (enclave == address(0)) revert BackboneExecutionZeroEnclave(requestId);
        transfer = _enclaveTransfer;
    }

    /// @dev A request's status from its stored one: a Completed request's slot is cleared (the
    ///      refund pays for a good part of the delivery), so an empty slot of an id that was
    ///      handed out is Completed; of any other id, None.
    function _statusOf(uint256 requestId, Status stored) private view returns (Status) {
        if (stored != Status.None) return stored;
        return requestId != 0 && requestId < _nextRequestId ? Status.Completed : Status.None;
    }
}
