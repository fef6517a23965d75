// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title RequestBinding
/// @notice The one definition of a request's running binding and of the node role, shared by
///         BackboneExecution (which stores the binding) and EnclaveTransfer (which checks it).
/// @dev The binding is 22 bytes so that it packs with the request's status, version and deadline
///      in one storage slot (docs/PROTOCOL.md, "Request lifecycle").
library RequestBinding {
    /// @notice keccak256("splitseal.role.node"): the role of the REE inference nodes.
    bytes32 internal constant NODE_ROLE = keccak256("splitseal.role.node");

    /// @notice Binding of a new request: its model and input commitment.
    function request(bytes32 modelId, bytes32 inputCommitment) internal pure returns (bytes22) {
        return bytes22(keccak256(abi.encode(modelId, inputCommitment)));
    }

    /// @notice Binding after the backbone stage: the previous binding, the enclave and the
    ///         commitment of the transfer passed into it.
    function transfer(bytes22 previousBinding, address enclave, bytes32 transferHash) internal pure returns (bytes22) {
        return bytes22(keccak256(abi.encode(previousBinding, enclave, transferHash)));
    }
}
