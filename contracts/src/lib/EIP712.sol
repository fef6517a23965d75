// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title EIP712
/// @notice The splitseal EIP-712 domain: `name = "splitseal"`, `version = "1"`, the chain id
///         and the verifying contract, no salt (docs/PROTOCOL.md). Python twin: enclave/eip712.py.
/// @dev The separator is cached at deployment and recomputed only if the chain id changes
///      (a fork), so a signature made for one chain never verifies on another.
abstract contract EIP712 {
    // ============================================================================================
    //                                         CONSTANTS
    // ============================================================================================

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("splitseal");
    bytes32 private constant _VERSION_HASH = keccak256("1");

    // ============================================================================================
    //                                          STORAGE
    // ============================================================================================

    bytes32 private immutable _cachedSeparator;
    uint256 private immutable _cachedChainId;

    constructor() {
        _cachedChainId = block.chainid;
        _cachedSeparator = _buildSeparator();
    }

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @notice The EIP-712 domain separator this contract verifies signatures against.
    /// @return The separator for the current chain.
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedSeparator : _buildSeparator();
    }

    // ============================================================================================
    //                                     INTERNAL FUNCTIONS
    // ============================================================================================

    /// @dev The EIP-712 digest `keccak256("\x19\x01" || domainSeparator || structHash)`.
    function _hashTypedData(bytes32 structHash) internal view returns (bytes32 digest) {
        bytes32 separator = domainSeparator();
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, hex"1901")
            mstore(add(ptr, 0x02), separator)
            mstore(add(ptr, 0x22), structHash)
            digest := keccak256(ptr, 0x42)
        }
    }

    function _buildSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
    }
}
