// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IAccessControl} from "../interfaces/IAccessControl.sol";

/// @title AccessControl
/// @notice Minimal role-based access control (see {IAccessControl}); written here rather than
///         imported so that the project compiles offline and the audited surface stays small.
abstract contract AccessControl is IAccessControl {
    // ============================================================================================
    //                                         CONSTANTS
    // ============================================================================================

    /// @notice The administrator role: grants and revokes every role, including itself.
    bytes32 public constant DEFAULT_ADMIN_ROLE = 0x00;

    // ============================================================================================
    //                                          STORAGE
    // ============================================================================================

    mapping(bytes32 role => mapping(address account => bool)) private _roles;

    // ============================================================================================
    //                                         MODIFIERS
    // ============================================================================================

    /// @dev Reverts with {AccessControlUnauthorizedAccount} unless the caller holds `role`.
    modifier onlyRole(bytes32 role) {
        _checkRole(role, msg.sender);
        _;
    }

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IAccessControl
    function hasRole(bytes32 role, address account) public view returns (bool) {
        return _roles[role][account];
    }

    /// @inheritdoc IAccessControl
    function grantRole(bytes32 role, address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _grantRole(role, account);
    }

    /// @inheritdoc IAccessControl
    function revokeRole(bytes32 role, address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _revokeRole(role, account);
    }

    /// @inheritdoc IAccessControl
    function renounceRole(bytes32 role, address account) external {
        if (account != msg.sender) revert AccessControlBadConfirmation(msg.sender, account);
        _revokeRole(role, account);
    }

    // ============================================================================================
    //                                     INTERNAL FUNCTIONS
    // ============================================================================================

    /// @dev Reverts with {AccessControlUnauthorizedAccount} unless `account` holds `role`.
    function _checkRole(bytes32 role, address account) internal view {
        if (!_roles[role][account]) revert AccessControlUnauthorizedAccount(account, role);
    }

    /// @dev Grants `role` to `account`; emits {RoleGranted} when it was not held.
    function _grantRole(bytes32 role, address account) internal {
        if (account == address(0)) revert AccessControlZeroAccount(role);
        if (!_roles[role][account]) {
            _roles[role][account] = true;
            emit RoleGranted(role, account, msg.sender);
        }
    }

    /// @dev Revokes `role` from `account`; emits {RoleRevoked} when it was held.
    function _revokeRole(bytes32 role, address account) internal {
        if (_roles[role][account]) {
            _roles[role][account] = false;
            emit RoleRevoked(role, account, msg.sender);
        }
    }
}
