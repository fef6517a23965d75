// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title IEnclaveTransfer (the "second smart contract")
/// @notice The enclave stage of a request: the commitment of the encrypted backbone output
///         passed into a named enclave (recorded by BackboneExecution in the node's single
///         transaction), the enclave-signed result encrypted to the requester, and failures
///         with reason codes.
/// @dev A result is accepted when an EIP-712 `InferenceResult(requestId, modelId, modelVersion,
///      inputCommitment, requester, requesterKey, transferHash, resultCommitment, sequence,
///      hasLabel, label)`
///      recovers to the enclave named at transfer, the request's binding names that requester,
///      key, enclave and transfer, `resultCommitment = keccak256(encryptedResult)` is computed here from the
///      ciphertext given, and `ModelRegistry.isEnclaveServing(modelId, version, enclave)` holds
///      (registered, unrevoked, unexpired, allowed measurement, head loaded).
///      Failure reason codes: 1 BadInput, 2 ShapeMismatch, 3 InputHashMismatch,
///      4 InputUnavailable, 5 EnclaveRefused, 6 DeadlinePassed, 7 Internal.
import {IBackboneExecution} from "./IBackboneExecution.sol";
import {RequestBinding} from "../lib/RequestBinding.sol";

interface IEnclaveTransfer {
    // ============================================================================================
    //                                          ERRORS
    // ============================================================================================

    /// @notice An enclave answer carries a sequence number from 1 on.
    /// @param requestId The request.
    error EnclaveTransferZeroSequence(uint256 requestId);
    /// @notice Only the linked BackboneExecution may record transfers.
    /// @param caller The caller.
    error EnclaveTransferNotBackbone(address caller);
    /// @notice Only accounts holding `NODE_ROLE` on BackboneExecution may report failures.
    /// @param caller The caller.
    error EnclaveTransferNotNode(address caller);
    /// @notice The request is not in a state that allows this (e.g. a second delivery).
    /// @param requestId The request.
    /// @param status Its current status (IBackboneExecution.Status as uint8).
    error EnclaveTransferInvalidStatus(uint256 requestId, uint8 status);
    /// @notice The request's deadline passed before the result arrived.
    /// @param requestId The request.
    /// @param deadline Its deadline.
    /// @param blockTime The current block timestamp.
    error EnclaveTransferDeadlinePassed(uint256 requestId, uint40 deadline, uint256 blockTime);
    /// @notice The (model, input commitment, enclave, transfer hash) given do not match the
    ///         request's stored binding.
    /// @param requestId The request.
    /// @param stored The stored binding.
    /// @param computed The binding computed from the arguments.
    error EnclaveTransferBindingMismatch(uint256 requestId, bytes22 stored, bytes22 computed);
    /// @notice The result signature does not recover to the enclave named at transfer.
    /// @param requestId The request.
    /// @param enclave The enclave named at transfer.
    /// @param recovered The address recovered (zero when the signature is malformed).
    error EnclaveTransferBadSignature(uint256 requestId, address enclave, address recovered);
    /// @notice The claim carries a public label (or a label without `hasLabel`) for a model
    ///         version not registered with the `public_label` output policy.
    /// @param requestId The request.
    /// @param modelId The model.
    /// @param version The version.
    error EnclaveTransferLabelNotAllowed(uint256 requestId, bytes32 modelId, uint32 version);
    /// @notice The enclave may not serve this model version (not authorized or head not loaded).
    /// @param modelId The model.
    /// @param version The version.
    /// @param enclave The enclave.
    error EnclaveTransferEnclaveNotServing(bytes32 modelId, uint32 version, address enclave);
    /// @notice The encrypted result is empty or longer than allowed.
    /// @param requestId The request.
    /// @param length Its length.
    error EnclaveTransferBadResultLength(uint256 requestId, uint256 length);
    /// @notice Neither or both of an inline result and a (pointer, commitment) were given, or the
    ///         pointer is longer than allowed.
    /// @param requestId The request.
    /// @param pointerLength The pointer's length.
    error EnclaveTransferBadResultPointer(uint256 requestId, uint256 pointerLength);
    /// @notice The delivery was sent with too little gas for the consumer's callback to get its
    ///         whole limit (a call passes on at most 63/64 of the gas left): resend with more.
    /// @param requestId The request.
    /// @param available The gas left before the callback.
    /// @param needed The gas needed there.
    error EnclaveTransferCallbackGasTooLow(uint256 requestId, uint256 available, uint256 needed);
    /// @notice The failure reason code is not one of the documented codes (1..7).
    /// @param code The code.
    error EnclaveTransferUnknownReasonCode(uint8 code);
    /// @notice The failure reason text is longer than allowed.
    /// @param length Its length.
    /// @param max The maximum.
    error EnclaveTransferReasonTooLong(uint256 length, uint256 max);

    // ============================================================================================
    //                                          EVENTS
    // ============================================================================================

    /// @notice The encrypted backbone output of a request was passed into `enclave`.
    /// @param requestId The request.
    /// @param enclave The enclave.
    /// @param transferHash keccak256 of the transfer ciphertext.
    event TransferRecorded(uint256 indexed requestId, address indexed enclave, bytes32 transferHash);

    /// @notice The enclave's result was accepted; the request is Completed.
    /// @dev The encrypted result (or its pointer) and the enclave's signature are not repeated
    ///      here: they are the calldata of the delivering call (`deliverResult`,
    ///      `deliverResults` or `submitResult`), where the requester and the auditor read them
    ///      and check them against `resultCommitment` (docs/PROTOCOL.md, "Reading results").
    /// @param requestId The request.
    /// @param enclave The enclave that signed it.
    /// @param sequence The enclave's answer number: the audit counts answers given off the record
    ///        as gaps between the sequences delivered.
    /// @param resultCommitment keccak256 of the encrypted result (inline or at the pointer).
    event ResultSubmitted(uint256 indexed requestId, address indexed enclave, uint64 sequence, bytes32 resultCommitment);

    /// @notice The request's consumer was called back with its result (see {IInferenceConsumer}).
    /// @param requestId The request.
    /// @param consumer The consumer contract.
    /// @param succeeded False when the callback reverted, ran out of gas or the consumer has no
    ///        code; the delivery stands either way.
    /// @param gasUsed Gas the callback took: the request's callback gas limit at most, plus the
    ///        call's own cost.
    /// @param returnHead The first bytes of what the callback returned or reverted with (at most
    ///        `MAX_CALLBACK_RETURN`: a consumer cannot make the delivery copy more).
    event ConsumerCalled(
        uint256 indexed requestId, address indexed consumer, bool succeeded, uint256 gasUsed, bytes returnHead
    );

    /// @notice A node reported that a request failed; the request is Failed.
    /// @param requestId The request.
    /// @param node The reporting node.
    /// @param code The reason code (1..7, docs/PROTOCOL.md).
    /// @param reason A short message for people (never data).
    event RequestFailed(uint256 indexed requestId, address indexed node, uint8 code, string reason);

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @notice Record the transfer of a request's encrypted backbone output into an enclave.
    /// @dev Only the linked BackboneExecution (inside `recordBackboneOutput`). Emits
    ///      {TransferRecorded}. Reverts {EnclaveTransferNotBackbone}.
    /// @param requestId The request.
    /// @param enclave The enclave.
    /// @param transferHash keccak256 of the transfer ciphertext.
    function recordTransfer(uint256 requestId, address enclave, bytes32 transferHash) external;

    /// @notice Deliver the enclave's signed, encrypted result; completes the request. Anyone may
    ///         submit: the enclave's signature is the authorization.
    /// @dev The claim's model id, input commitment, requester, requester key, enclave and
    ///      transfer hash are those of the request's `InferenceRequested` and `TransferRecorded`
    ///      events; they are checked against the stored binding. Emits {ResultSubmitted}, then,
    ///      when the request names a consumer, calls it back and emits {ConsumerCalled}. Reverts
    ///      {EnclaveTransferInvalidStatus}, {EnclaveTransferDeadlinePassed},
    ///      {EnclaveTransferBindingMismatch}, {EnclaveTransferBadResultLength},
    ///      {EnclaveTransferZeroSequence}, {EnclaveTransferBadSignature},
    ///      {EnclaveTransferEnclaveNotServing}, {EnclaveTransferLabelNotAllowed},
    ///      {EnclaveTransferCallbackGasTooLow}.
    /// @param claim What the enclave signed besides the result.
    /// @param encryptedResult The prediction encrypted to the requester's key, inline (at most
    ///        `MAX_RESULT` bytes); empty when it travels by pointer.
    /// @param resultPointer With an empty `encryptedResult`: where the encrypted result is stored
    ///        (at most `MAX_POINTER` bytes); empty otherwise.
    /// @param resultCommitment With a pointer: keccak256 of the stored encrypted result, which
    ///        the signature covers; zero with an inline result (computed here).
    /// @param signature EIP-712 `InferenceResult` signed by the enclave key.
    function submitResult(
        RequestBinding.ResultClaim calldata claim,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment,
        bytes calldata signature
    ) external;

    /// @notice Record the transfer and deliver the result in one call: BackboneExecution's
    ///         `deliverResult` path. Emits {TransferRecorded}, then as {submitResult}.
    /// @dev Only the linked BackboneExecution, which has already marked the request Completed
    ///      and passes it as it stood Transferred (so no call back is needed); a revert here
    ///      undoes that. Reverts {EnclaveTransferNotBackbone} and as {submitResult}.
    /// @param claim What the enclave signed besides the result.
    /// @param request The request as it stood Transferred (binding, deadline, version, status).
    /// @param encryptedResult The result encrypted to the requester's key, or empty with a pointer.
    /// @param resultPointer Where the encrypted result is stored off-chain, or empty.
    /// @param resultCommitment keccak256 of the off-chain encrypted result (zero when inline).
    /// @param signature EIP-712 `InferenceResult` signed by the enclave key.
    function recordTransferAndSubmit(
        RequestBinding.ResultClaim calldata claim,
        IBackboneExecution.Request calldata request,
        bytes calldata encryptedResult,
        string calldata resultPointer,
        bytes32 resultCommitment,
        bytes calldata signature
    ) external;

    /// @notice Report that a Requested or Transferred request failed.
    /// @dev `NODE_ROLE` on BackboneExecution. Emits {RequestFailed}. Reverts
    ///      {EnclaveTransferNotNode}, {EnclaveTransferUnknownReasonCode},
    ///      {EnclaveTransferReasonTooLong}, {EnclaveTransferInvalidStatus}.
    /// @param requestId The request.
    /// @param code The reason code (1..7).
    /// @param reason A short message (at most 256 bytes; never data).
    function reportFailure(uint256 requestId, uint8 code, string calldata reason) external;

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @notice The ModelRegistry consulted for enclave authorization.
    function modelRegistry() external view returns (address);
    /// @notice The linked BackboneExecution, which holds the requests.
    function backboneExecution() external view returns (address);
}
