// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {RequestBinding} from "../lib/RequestBinding.sol";

/// @title IBackboneExecution (the "first smart contract")
/// @notice Inference requests and the REE backbone stage: a requester asks for an inference
///         (model version, input commitment, the input encrypted inline or an off-chain pointer,
///         the requester's public key, a time to live that becomes the deadline); a node holding `NODE_ROLE` runs the public
///         backbone, records the output commitment and, in the same transaction, the commitment
///         of the encrypted output it passed into a named enclave (on {IEnclaveTransfer});
///         after the deadline anyone may time the request out.
/// @dev Lifecycle (docs/PROTOCOL.md): Requested -> Transferred -> Completed, Requested or
///      Transferred -> Failed (reported on EnclaveTransfer), Requested or Transferred ->
///      TimedOut after the deadline. Each request ends exactly once.
///
///      Storage is the gas budget (request + backbone/transfer + result <= 200,000 gas): a
///      request keeps ONE slot, packing status, model version, deadline and a 176-bit running
///      `binding` hash: `requestBinding(modelId, inputCommitment, requester, requesterKey)` while Requested, then
///      `transferBinding(thatBinding, enclave, transferHash)` once Transferred. Later stages pass
///      the values in calldata and the contract checks them against the binding (finding other
///      values with the same binding is a 2^176 second-preimage problem); the values themselves,
///      and the requester, are in the events, which are the audit log.
interface IBackboneExecution is IAccessControl {
    // ============================================================================================
    //                                          TYPES
    // ============================================================================================

    /// @notice Where a request is in its lifecycle.
    enum Status {
        None,
        Requested,
        Transferred,
        Completed,
        Failed,
        TimedOut
    }

    /// @notice What is stored for a request: one storage slot.
    /// @param binding Running 176-bit hash of the request's values (see the notes above).
    /// @param deadline Unix time after which no stage may run and {timeout} becomes possible.
    /// @param version The model version.
    /// @param status The lifecycle state.
    struct Request {
        bytes22 binding;
        uint40 deadline;
        uint32 version;
        Status status;
    }

    /// @notice One result of a batch for {deliverResults}: the arguments of {deliverResult}.
    /// @param claim What the enclave signed besides the result.
    /// @param outputCommitment Commitment to the backbone output.
    /// @param encryptedResult The result encrypted to the requester's key (empty: by pointer).
    /// @param resultPointer Where a result too large to go inline is stored (empty: inline).
    /// @param resultCommitment keccak256 of the stored result (zero: inline).
    /// @param signature The enclave's EIP-712 `InferenceResult` signature.
    struct Delivery {
        RequestBinding.ResultClaim claim;
        bytes32 outputCommitment;
        bytes encryptedResult;
        string resultPointer;
        bytes32 resultCommitment;
        bytes signature;
    }

    // ============================================================================================
    //                                          ERRORS
    // ============================================================================================

    /// @notice The model has no such version in the ModelRegistry.
    /// @param modelId The model.
    /// @param version The version asked for.
    error BackboneExecutionUnknownModelVersion(bytes32 modelId, uint32 version);
    /// @notice Exactly one of the inline input and the input pointer must be non-empty.
    /// @param inlineLength Length of the inline encrypted input.
    /// @param pointerLength Length of the input pointer.
    error BackboneExecutionBadInput(uint256 inlineLength, uint256 pointerLength);
    /// @notice The inline input or the pointer is longer than allowed.
    /// @param length The length given.
    /// @param max The maximum.
    error BackboneExecutionInputTooLarge(uint256 length, uint256 max);
    /// @notice The input commitment must not be zero.
    error BackboneExecutionZeroCommitment();
    /// @notice The requester's public key must not be zero.
    error BackboneExecutionZeroRequesterKey();
    /// @notice The time to live must lie in [MIN_TTL, MAX_TTL] seconds.
    /// @param ttl The time to live given.
    /// @param min The shortest allowed.
    /// @param max The longest allowed.
    error BackboneExecutionBadTtl(uint32 ttl, uint32 min, uint32 max);
    /// @notice No request has this id.
    /// @param requestId The id.
    error BackboneExecutionUnknownRequest(uint256 requestId);
    /// @notice The request is not in a state that allows this (e.g. a second delivery).
    /// @param requestId The request.
    /// @param status Its current status.
    error BackboneExecutionInvalidStatus(uint256 requestId, Status status);
    /// @notice The request's deadline has passed.
    /// @param requestId The request.
    /// @param deadline Its deadline.
    /// @param blockTime The current block timestamp.
    error BackboneExecutionDeadlinePassed(uint256 requestId, uint40 deadline, uint256 blockTime);
    /// @notice {timeout} before the deadline.
    /// @param requestId The request.
    /// @param deadline Its deadline.
    /// @param blockTime The current block timestamp.
    error BackboneExecutionDeadlineNotReached(uint256 requestId, uint40 deadline, uint256 blockTime);
    /// @notice The enclave named for a transfer must not be the zero address.
    /// @param requestId The request.
    error BackboneExecutionZeroEnclave(uint256 requestId);
    /// @notice Only the linked EnclaveTransfer may change a request's final status.
    /// @param caller The caller.
    error BackboneExecutionNotEnclaveTransfer(address caller);
    /// @notice An address argument must not be zero.
    error BackboneExecutionZeroAddress();
    /// @notice The input key must not be zero.
    error BackboneExecutionZeroInputKey();
    /// @notice A consumer to call back must be a contract, its callback gas limit in
    ///         [MIN_CALLBACK_GAS, MAX_CALLBACK_GAS].
    /// @param consumer The consumer given.
    /// @param callbackGasLimit The gas limit given.
    error BackboneExecutionBadCallback(address consumer, uint32 callbackGasLimit);
    /// @notice A batch holds 1 to MAX_BATCH deliveries.
    /// @param length The batch's length.
    /// @param max The maximum.
    error BackboneExecutionBadBatchLength(uint256 length, uint256 max);
    /// @notice Only this contract itself calls {deliverOne} (one isolated item of a batch).
    /// @param caller The caller.
    error BackboneExecutionNotSelf(address caller);

    // ============================================================================================
    //                                          EVENTS
    // ============================================================================================

    /// @notice The X25519 key that nodes decrypt request inputs with changed.
    /// @param previousKey The previous key (zero at first).
    /// @param newKey The new key.
    event InputKeyChanged(bytes32 previousKey, bytes32 newKey);

    /// @notice The EnclaveTransfer contract was deployed and linked (in the constructor).
    /// @param enclaveTransfer Its address.
    event EnclaveTransferLinked(address indexed enclaveTransfer);

    /// @notice An inference was requested.
    /// @dev An inline input is not repeated here: it is the `inlineInput` argument of the
    ///      request's transaction, where the node and the auditor read it and check it against
    ///      `inputCommitment` (so a contract that asks must pass a pointer; docs/PROTOCOL.md).
    /// @param requestId The new request id (a counter, so it survives reorgs).
    /// @param modelId The model.
    /// @param requester The account that asked.
    /// @param version The model version.
    /// @param inputCommitment keccak256 of the encrypted input (inline, or at the pointer).
    /// @param inputPointer Where the encrypted input is stored off-chain (empty when inline).
    /// @param requesterKey The requester's X25519 key; the result is encrypted to it.
    /// @param deadline Unix time after which the request can only time out.
    /// @param consumer The contract to call back with the result (zero: none).
    /// @param callbackGasLimit The gas its callback gets (zero without a consumer).
    event InferenceRequested(
        uint256 indexed requestId,
        bytes32 indexed modelId,
        address indexed requester,
        uint32 version,
        bytes32 inputCommitment,
        string inputPointer,
        bytes32 requesterKey,
        uint64 deadline,
        address consumer,
        uint32 callbackGasLimit
    );

    /// @notice A node ran the backbone for a request (and thereby claimed it).
    /// @param requestId The request.
    /// @param node The node.
    /// @param outputCommitment Commitment to the backbone output.
    event BackboneExecuted(uint256 indexed requestId, address indexed node, bytes32 outputCommitment);

    /// @notice One delivery of a batch was not applied (nothing of it was recorded); the others
    ///         were. The node then ends the request as its reason calls for.
    /// @param requestId The request.
    /// @param reason The custom error the delivery reverted with (ABI-encoded).
    event DeliverySkipped(uint256 indexed requestId, bytes reason);

    /// @notice A request ended without a result because its deadline passed.
    /// @param requestId The request.
    /// @param caller Who called {timeout}.
    /// @param previousStatus Its status before (Requested or Transferred).
    event RequestTimedOut(uint256 indexed requestId, address indexed caller, Status previousStatus);

    // ============================================================================================
    //                                     ADMIN FUNCTIONS
    // ============================================================================================

    /// @notice Set the X25519 key that request inputs are encrypted to.
    /// @dev `DEFAULT_ADMIN_ROLE`. Emits {InputKeyChanged}. Reverts {BackboneExecutionZeroInputKey}.
    /// @param newKey The nodes' input key.
    function setInputKey(bytes32 newKey) external;

    // ============================================================================================
    //                                   REQUESTER FUNCTIONS
    // ============================================================================================

    /// @notice Ask for an inference.
    /// @dev Emits {InferenceRequested}. Reverts {BackboneExecutionUnknownModelVersion},
    ///      {BackboneExecutionBadInput}, {BackboneExecutionInputTooLarge},
    ///      {BackboneExecutionZeroCommitment}, {BackboneExecutionZeroRequesterKey},
    ///      {BackboneExecutionBadTtl}.
    /// @param modelId The model.
    /// @param version The model version (must exist in the ModelRegistry).
    /// @param inputCommitment keccak256 of the encrypted input, inline or at the pointer (non-zero).
    /// @param inlineInput The input encrypted to `inputKey()`, or empty.
    /// @param inputPointer An off-chain pointer to the encrypted input, or empty.
    /// @param requesterKey The requester's X25519 public key (non-zero).
    /// @param ttl Seconds the request may take, from the block that includes it: the deadline
    ///        is that block's time plus `ttl`, so a chain that sat idle does not shorten it.
    /// @return requestId The new request's id (1, 2, ...).
    function requestInference(
        bytes32 modelId,
        uint32 version,
        bytes32 inputCommitment,
        bytes calldata inlineInput,
        string calldata inputPointer,
        bytes32 requesterKey,
        uint32 ttl
    ) external returns (uint256 requestId);

    /// @notice Ask for an inference whose result also calls back a consumer contract
    ///         ({IInferenceConsumer}) with exactly `callbackGasLimit` gas.
    /// @dev As {requestInference}; the consumer and the limit are bound into the request's
    ///      binding (no extra storage). Also reverts {BackboneExecutionBadCallback}.
    /// @param modelId The model.
    /// @param version The model version.
    /// @param inputCommitment keccak256 of the encrypted input (non-zero).
    /// @param inlineInput The input encrypted to `inputKey()`, or empty.
    /// @param inputPointer An off-chain pointer to the encrypted input, or empty.
    /// @param requesterKey The requester's X25519 public key (non-zero).
    /// @param ttl Seconds the request may take (as {requestInference}).
    /// @param consumer A contract implementing {IInferenceConsumer}.
    /// @param callbackGasLimit Gas for its callback, in [MIN_CALLBACK_GAS, MAX_CALLBACK_GAS].
    /// @return requestId The new request's id.
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
    ) external returns (uint256 requestId);

    /// @notice Anyone may end a request whose deadline passed without a result or failure.
    /// @dev Emits {RequestTimedOut}. Reverts {BackboneExecutionUnknownRequest},
    ///      {BackboneExecutionInvalidStatus}, {BackboneExecutionDeadlineNotReached}.
    /// @param requestId The request.
    function timeout(uint256 requestId) external;

    // ============================================================================================
    //                                      NODE FUNCTIONS
    // ============================================================================================

    /// @notice Record the backbone output commitment and the transfer of the encrypted output
    ///         into `enclave`, claiming the request for the calling node.
    /// @dev `NODE_ROLE`; status Requested; not after the deadline. Emits {BackboneExecuted} here
    ///      and `TransferRecorded` on the EnclaveTransfer. Reverts
    ///      {BackboneExecutionUnknownRequest}, {BackboneExecutionInvalidStatus},
    ///      {BackboneExecutionDeadlinePassed}, {BackboneExecutionZeroEnclave}.
    /// @param requestId The request.
    /// @param outputCommitment Commitment to the backbone output.
    /// @param enclave The enclave the encrypted output was passed to.
    /// @param transferHash keccak256 of the transfer ciphertext.
    function recordBackboneOutput(uint256 requestId, bytes32 outputCommitment, address enclave, bytes32 transferHash)
        external;

    /// @notice Record the backbone output and the transfer and deliver the enclave's signed result,
    ///         in one transaction: the node asked the enclave first, and the enclave answers a
    ///         request id once, so the enclave's answer is the claim.
    /// @dev `NODE_ROLE`; status Requested; not after the deadline. Emits `ResultSubmitted` on the
    ///      EnclaveTransfer (then `ConsumerCalled` when the request names a consumer) and nothing
    ///      else: the output commitment, the enclave and the transfer hash are this call's
    ///      arguments, the node its sender (docs/PROTOCOL.md, "Reading inputs and results").
    ///      Reverts as {recordBackboneOutput} and as `EnclaveTransfer.submitResult`.
    /// @param claim What the enclave signed besides the result (request, model, input commitment,
    ///        requester and key, enclave, transfer hash, the enclave's answer sequence).
    /// @param outputCommitment Commitment to the backbone output.
    /// @param encryptedResult The result encrypted to the requester's key (empty: by pointer).
    /// @param resultPointer Where a result too large to go inline is stored (empty: inline).
    /// @param resultCommitment keccak256 of the stored result (zero: inline).
    /// @param signature The enclave's EIP-712 `InferenceResult` signature.
    function deliverResult(
        RequestBinding.ResultClaim calldata claim,
        bytes32 outputCommitment,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment,
        bytes calldata signature
    ) external;

    /// @notice Deliver several results in one transaction, each as {deliverResult} and isolated
    ///         from the others: an item that would revert (bad signature, already ended, past its
    ///         deadline, ...) is skipped with {DeliverySkipped} and leaves no trace.
    /// @dev `NODE_ROLE`; 1 to MAX_BATCH items. An item that ran out of gas or whose callback
    ///      would get less than its limit reverts the whole batch instead (the sender supplied
    ///      too little gas: that must never cost a request or its callback). Reverts
    ///      {BackboneExecutionBadBatchLength}.
    /// @param deliveries The results, each signed by its enclave and bound to its own request.
    /// @return delivered How many were applied.
    function deliverResults(Delivery[] calldata deliveries) external returns (uint256 delivered);

    /// @notice One item of {deliverResults}, run as its own call so that its revert undoes it
    ///         alone.
    /// @dev Only this contract. Reverts {BackboneExecutionNotSelf} and as {deliverResult}.
    /// @param delivery The item.
    function deliverOne(Delivery calldata delivery) external;

    // ============================================================================================
    //                               ENCLAVE TRANSFER FUNCTIONS
    // ============================================================================================

    /// @notice Mark a Transferred request Completed (its slot is cleared, see {status}), if it is
    ///         Transferred and not past its deadline; returns the request as it was before.
    /// @dev Only the linked EnclaveTransfer, which reverts with its own error when the returned
    ///      status or deadline did not allow completion (nothing was written then).
    /// @param requestId The request.
    /// @return previous The stored request before the call.
    function markCompleted(uint256 requestId) external returns (Request memory previous);

    /// @notice Mark a Requested or Transferred request Failed; returns its previous status.
    /// @dev Only the linked EnclaveTransfer, which reverts with its own error when the returned
    ///      status did not allow failure (nothing was written then).
    /// @param requestId The request.
    /// @return previous The status before the call.
    function markFailed(uint256 requestId) external returns (Status previous);

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @notice The stored request (all zero for an unknown id).
    /// @param requestId The request.
    function request(uint256 requestId) external view returns (Request memory);
    /// @notice The request's status (a Completed request's slot is cleared: an empty slot of an id
    ///         that was handed out reads Completed).
    /// @param requestId The request.
    function status(uint256 requestId) external view returns (Status);
    /// @notice Number of requests so far (= the last id).
    function requestCount() external view returns (uint256);
    /// @notice The nodes' X25519 input key.
    function inputKey() external view returns (bytes32);
    /// @notice The ModelRegistry this contract asks about models.
    function modelRegistry() external view returns (address);
    /// @notice The linked EnclaveTransfer.
    function enclaveTransfer() external view returns (address);
    /// @notice The binding stored while Requested.
    /// @param modelId The model.
    /// @param inputCommitment The input commitment.
    /// @param requester The account that asked.
    /// @param requesterKey The key the result is to be encrypted to.
    /// @return bytes22(keccak256(abi.encode(modelId, inputCommitment, requester, requesterKey))).
    function requestBinding(bytes32 modelId, bytes32 inputCommitment, address requester, bytes32 requesterKey)
        external
        pure
        returns (bytes22);
    /// @notice The binding stored once Transferred.
    /// @param previousBinding The request binding.
    /// @param enclave The enclave named in the transfer.
    /// @param transferHash keccak256 of the transfer ciphertext.
    /// @return bytes22(keccak256(abi.encode(previousBinding, enclave, transferHash))).
    function transferBinding(bytes22 previousBinding, address enclave, bytes32 transferHash)
        external
        pure
        returns (bytes22);
}
