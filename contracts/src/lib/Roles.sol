// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Roles
/// @notice OpenZeppelin {AccessControl} as the splitseal contracts use it: every role is
///         administered by `DEFAULT_ADMIN_ROLE` (no contract calls `_setRoleAdmin`), and a role
///         is never granted to the zero address.
abstract contract Roles is AccessControl {
    /// @notice A role was to be granted to the zero address (a slip: nobody can act as it).
    /// @param role The role.
    error AccessControlZeroAccount(bytes32 role);

    /// @dev OpenZeppelin's grant, refusing the zero address first (constructor grants included).
    function _grantRole(bytes32 role, address account) internal override returns (bool) {
        if (account == address(0)) revert AccessControlZeroAccount(role);
        return super._grantRole(role, account);
    }
}
