// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title ECDSA
/// @notice Recovery of secp256k1 signatures in the splitseal wire format: 65 bytes
///         `r || s || v`, `v` in {27, 28}, `s` in the lower half of the curve order.
/// @dev Malformed or malleable signatures recover to the zero address instead of reverting, so
///      that each caller reports its own custom error carrying the values it checked. Callers
///      must therefore never compare the result with an expected signer that may be zero.
library ECDSA {
    /// @dev secp256k1n / 2: signatures with a larger `s` are the malleable twin and are refused.
    uint256 private constant _HALF_ORDER =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice The signer of `digest`, or the zero address when `signature` is malformed,
    ///         malleable or does not recover.
    /// @param digest The 32-byte message digest that was signed (no prefix added here).
    /// @param signature 65 bytes `r || s || v`.
    /// @return signer The recovered address, or `address(0)`.
    function recover(bytes32 digest, bytes calldata signature) internal pure returns (address signer) {
        if (signature.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 32))
            v := byte(0, calldataload(add(signature.offset, 64)))
        }
        if (uint256(s) > _HALF_ORDER || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
