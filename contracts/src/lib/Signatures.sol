// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title Signatures
/// @notice Recovery of secp256k1 signatures in the splitseal wire format (65 bytes
///         `r || s || v`, `v` in {27, 28}, `s` in the lower half of the curve order) on top of
///         OpenZeppelin's {ECDSA.tryRecoverCalldata}.
/// @dev Malformed, malleable (high-s) or unrecoverable signatures give the zero address instead
///      of reverting, so that each caller reports its own custom error carrying the values it
///      checked. Callers must therefore never compare the result with an expected signer that
///      may be zero.
library Signatures {
    /// @notice The signer of `digest`, or the zero address when `signature` is malformed,
    ///         malleable or does not recover.
    function signerOf(bytes32 digest, bytes calldata signature) internal pure returns (address) {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        return err == ECDSA.RecoverError.NoError ? signer : address(0);
    }
}

/// @title SplitsealEIP712
/// @notice The splitseal EIP-712 domain on OpenZeppelin's {EIP712}: `name = "splitseal"`,
///         `version = "1"`, the chain id and the verifying contract, no salt (docs/PROTOCOL.md;
///         Python twin: splitseal/protocol/eip712.py). EIP-5267 `eip712Domain()` comes with it.
/// @dev OpenZeppelin caches the separator at deployment and rebuilds it if the chain id changes
///      (a fork), so a signature made for one chain never verifies on another.
abstract contract SplitsealEIP712 is EIP712 {
    constructor() EIP712("splitseal", "1") {}

    /// @notice The EIP-712 domain separator this contract verifies signatures against.
    /// @return The separator for the current chain.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @dev The signer of the typed `structHash` in this domain, or zero (see {Signatures}).
    function _typedSigner(bytes32 structHash, bytes calldata signature) internal view returns (address) {
        return Signatures.signerOf(_hashTypedDataV4(structHash), signature);
    }
}
