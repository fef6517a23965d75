// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title RoundTripFloor
/// @notice The cheapest request / response a chain allows: one stored request and one answer by
///         another account that saw its event. Benchmarks only (`scripts/bench_inference`): the
///         floor that splitseal's inference latency and throughput are compared with.
contract RoundTripFloor {
    // ============================================================================================
    //                                          ERRORS
    // ============================================================================================

    /// @notice `requestId` was never requested.
    error RoundTripFloorUnknownRequest(uint256 requestId);

    /// @notice `requestId` was answered already.
    error RoundTripFloorAlreadyAnswered(uint256 requestId);

    // ============================================================================================
    //                                          EVENTS
    // ============================================================================================

    /// @notice A request was stored.
    /// @param requestId Its id (1, 2, ...).
    /// @param requester The sender.
    /// @param payload A 32-byte payload (a commitment in a real protocol).
    event Requested(uint256 indexed requestId, address indexed requester, bytes32 payload);

    /// @notice A request was answered.
    /// @param requestId The request answered.
    /// @param responder The sender of the answer.
    /// @param payload The 32-byte answer.
    event Responded(uint256 indexed requestId, address indexed responder, bytes32 payload);

    // ============================================================================================
    //                                          STORAGE
    // ============================================================================================

    uint256 private _nextId = 1;
    /// @dev 1 = requested, 2 = answered.
    mapping(uint256 requestId => uint256 state) private _state;

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @notice Store a request. Emits {Requested}.
    /// @param payload Any 32 bytes.
    /// @return requestId The new request's id.
    function request(bytes32 payload) external returns (uint256 requestId) {
        requestId = _nextId++;
        _state[requestId] = 1;
        emit Requested(requestId, msg.sender, payload);
    }

    /// @notice Answer a stored request once. Emits {Responded}.
    /// @dev Reverts with {RoundTripFloorUnknownRequest} or {RoundTripFloorAlreadyAnswered}.
    /// @param requestId The request to answer.
    /// @param payload Any 32 bytes.
    function respond(uint256 requestId, bytes32 payload) external {
        uint256 state = _state[requestId];
        if (state == 0) revert RoundTripFloorUnknownRequest(requestId);
        if (state == 2) revert RoundTripFloorAlreadyAnswered(requestId);
        _state[requestId] = 2;
        emit Responded(requestId, msg.sender, payload);
    }

    /// @notice Whether `requestId` was answered.
    /// @param requestId The request.
    /// @return True once answered.
    function answered(uint256 requestId) external view returns (bool) {
        return _state[requestId] == 2;
    }
}
