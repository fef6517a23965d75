// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title IAccessControl
/// @notice Role-based access control shared by the splitseal contracts: roles are
///         `bytes32` constants, and every role is administered by `DEFAULT_ADMIN_ROLE`.
/// @dev A deliberately flat scheme (no per-role admin hierarchy): the contracts have at most
///      three roles, and one administrator that grants and revokes them is easier to audit.
interface IAccessControl {
    // ============================================================================================
    //                                          ERRORS
    // ============================================================================================

    /// @notice `account` called a function that needs `neededRole`, which it does not hold.
    /// @param account The caller.
    /// @param neededRole The role the function requires.
    error AccessControlUnauthorizedAccount(address account, bytes32 neededRole);

    /// @notice `renounceRole` was called for an account other than the caller.
    /// @param caller The caller.
    /// @param account The account named in the call.
    error AccessControlBadConfirmation(address caller, address account);

    /// @notice A role was to be granted to the zero address.
    /// @param role The role.
    error AccessControlZeroAccount(bytes32 role);

    // ============================================================================================
    //                                          EVENTS
    // ============================================================================================

    /// @notice `account` was granted `role`.
    /// @param role The role granted.
    /// @param account The account that now holds it.
    /// @param sender The administrator who granted it (the contract's deployer for the
    ///        constructor's grants).
    event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);

    /// @notice `account` lost `role`.
    /// @param role The role revoked.
    /// @param account The account that no longer holds it.
    /// @param sender The administrator who revoked it, or `account` itself when renounced.
    event RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender);

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @notice Whether `account` holds `role`.
    /// @param role The role.
    /// @param account The account.
    /// @return True when the account holds the role.
    function hasRole(bytes32 role, address account) external view returns (bool);

    /// @notice Grant `role` to `account`. No effect (and no event) when already held.
    /// @dev Requires `DEFAULT_ADMIN_ROLE`. Emits {RoleGranted}.
    /// @param role The role.
    /// @param account The account; must not be the zero address.
    function grantRole(bytes32 role, address account) external;

    /// @notice Revoke `role` from `account`. No effect (and no event) when not held.
    /// @dev Requires `DEFAULT_ADMIN_ROLE`. Emits {RoleRevoked}.
    /// @param role The role.
    /// @param account The account.
    function revokeRole(bytes32 role, address account) external;

    /// @notice Give up `role` held by the caller.
    /// @dev `account` must be the caller (a confirmation against slips). Emits {RoleRevoked}.
    /// @param role The role.
    /// @param account The caller's address.
    function renounceRole(bytes32 role, address account) external;
}
