// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Fixture} from "./utils/Fixture.sol";
import {IBackboneExecution} from "../src/interfaces/IBackboneExecution.sol";
import {IEnclaveTransfer} from "../src/interfaces/IEnclaveTransfer.sol";
import {RequestBinding} from "../src/lib/RequestBinding.sol";

/// @notice Fuzz tests of the checks of every external function of BackboneExecution and
///         EnclaveTransfer (bounded inputs; each test names the check it exercises).
contract LifecycleFuzzTest is Fixture {
    uint256 internal constant ENCLAVE_PK = 0xE1;
    address internal enclave;

    function setUp() public {
        deployStack();
        enclave = serve(ENCLAVE_PK);
    }

    // ------------------------------------------------------------------------ requestInference

    function testFuzz_requestInference_accepts_valid_and_binds(bytes32 commitment, bytes32 key, uint32 ttl, uint16 len)
        public
    {
        vm.assume(commitment != 0 && key != 0);
        ttl = uint32(bound(ttl, backbone.MIN_TTL(), backbone.MAX_TTL()));
        bytes memory input = new bytes(bound(len, 1, backbone.MAX_INLINE_INPUT()));
        vm.prank(requester);
        uint256 id = backbone.requestInference(MODEL, version, commitment, input, "", key, ttl);
        IBackboneExecution.Request memory r = backbone.request(id);
        vm.assertEq(uint8(r.status), uint8(IBackboneExecution.Status.Requested), "status");
        vm.assertEq(r.deadline, block.timestamp + ttl, "deadline");
        vm.assertEq(bytes32(r.binding), bytes32(RequestBinding.request(MODEL, commitment, requester, key)), "binding");
        vm.assertEq(backbone.requestCount(), id, "count");
    }

    function testFuzz_requestInference_refuses_bad_ttl(uint32 ttl) public {
        vm.assume(ttl < backbone.MIN_TTL() || ttl > backbone.MAX_TTL());
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionBadTtl.selector, ttl, 1, 30 days));
        backbone.requestInference(MODEL, version, bytes32("c"), hex"01", "", bytes32("k"), ttl);
    }

    function testFuzz_requestInference_refuses_oversized_inputs(uint256 inlineLen, uint256 pointerLen) public {
        inlineLen = bound(inlineLen, backbone.MAX_INLINE_INPUT() + 1, backbone.MAX_INLINE_INPUT() + 64);
        vm.expectRevert(abi.encodeWithSelector(
            IBackboneExecution.BackboneExecutionInputTooLarge.selector, inlineLen, backbone.MAX_INLINE_INPUT()));
        backbone.requestInference(MODEL, version, bytes32("c"), new bytes(inlineLen), "", bytes32("k"), 60);
        pointerLen = bound(pointerLen, backbone.MAX_POINTER() + 1, backbone.MAX_POINTER() + 64);
        vm.expectRevert(abi.encodeWithSelector(
            IBackboneExecution.BackboneExecutionInputTooLarge.selector, pointerLen, backbone.MAX_POINTER()));
        backbone.requestInference(MODEL, version, bytes32("c"), "", string(new bytes(pointerLen)), bytes32("k"), 60);
    }

    function testFuzz_requestInference_needs_exactly_one_input(bool both, uint8 len) public {
        uint256 n = both ? bound(len, 1, 64) : 0;
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionBadInput.selector, n, n));
        backbone.requestInference(MODEL, version, bytes32("c"), new bytes(n), string(new bytes(n)), bytes32("k"), 60);
    }

    function testFuzz_requestInference_refuses_zero_values_and_unknown_versions(bytes32 model, uint32 v) public {
        vm.expectRevert(IBackboneExecution.BackboneExecutionZeroCommitment.selector);
        backbone.requestInference(MODEL, version, 0, hex"01", "", bytes32("k"), 60);
        vm.expectRevert(IBackboneExecution.BackboneExecutionZeroRequesterKey.selector);
        backbone.requestInference(MODEL, version, bytes32("c"), hex"01", "", 0, 60);
        vm.assume(model != MODEL || v == 0 || v > version);
        vm.expectRevert(abi.encodeWithSelector(
            IBackboneExecution.BackboneExecutionUnknownModelVersion.selector, model, v));
        backbone.requestInference(model, v, bytes32("c"), hex"01", "", bytes32("k"), 60);
    }

    // ------------------------------------------------------------------- node-only functions

    function testFuzz_node_functions_need_the_node_role(address caller, uint256 id) public {
        vm.assume(caller != node);
        bytes32 role = RequestBinding.NODE_ROLE;
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role));
        vm.prank(caller);
        backbone.recordBackboneOutput(id, bytes32("o"), enclave, bytes32("t"));
        RequestBinding.ResultClaim memory c;
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role));
        vm.prank(caller);
        backbone.deliverResult(c, bytes32("o"), hex"01", "", bytes32(0), hex"01");
        vm.expectRevert(abi.encodeWithSelector(IEnclaveTransfer.EnclaveTransferNotNode.selector, caller));
        vm.prank(caller);
        transfer.reportFailure(id, 1, "");
    }

    function testFuzz_admin_functions_need_the_admin_role(address caller, bytes32 key) public {
        vm.assume(caller != admin && key != 0);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, bytes32(0)));
        vm.prank(caller);
        backbone.setInputKey(key);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, bytes32(0)));
        vm.prank(caller);
        backbone.grantRole(RequestBinding.NODE_ROLE, caller);
    }

    function testFuzz_state_changers_only_from_the_linked_contracts(address caller, uint256 id) public {
        vm.assume(caller != address(transfer) && caller != address(backbone));
        vm.startPrank(caller);
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionNotEnclaveTransfer.selector, caller));
        backbone.markCompleted(id);
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionNotEnclaveTransfer.selector, caller));
        backbone.markFailed(id);
        vm.expectRevert(abi.encodeWithSelector(IEnclaveTransfer.EnclaveTransferNotBackbone.selector, caller));
        transfer.recordTransfer(id, enclave, bytes32("t"));
        vm.stopPrank();
    }

    function testFuzz_recordBackboneOutput_checks_status_deadline_enclave(uint32 ttl, uint32 late, uint256 unknown)
        public
    {
        ttl = uint32(bound(ttl, 1, 1 days));
        uint256 id = requestAs(requester, bytes32("c"), bytes32("k"), ttl);
        unknown = bound(unknown, id + 1, type(uint128).max);
        vm.startPrank(node);
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionUnknownRequest.selector, unknown));
        backbone.recordBackboneOutput(unknown, bytes32("o"), enclave, bytes32("t"));
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionZeroEnclave.selector, id));
        backbone.recordBackboneOutput(id, bytes32("o"), address(0), bytes32("t"));
        uint256 deadline = block.timestamp + ttl;
        vm.warp(deadline + bound(late, 1, 365 days));
        vm.expectRevert(abi.encodeWithSelector(
            IBackboneExecution.BackboneExecutionDeadlinePassed.selector, id, deadline, block.timestamp));
        backbone.recordBackboneOutput(id, bytes32("o"), enclave, bytes32("t"));
        vm.stopPrank();
    }

    // ---------------------------------------------------------------------------- submitResult

    function _transferred(bytes32 commitment, bytes32 key) internal returns (RequestBinding.ResultClaim memory c) {
        uint256 id = requestAs(requester, commitment, key, 1 hours);
        c = claimFor(id, requester, commitment, key, enclave, keccak256(abi.encode("transfer", id)));
        vm.prank(node);
        backbone.recordBackboneOutput(id, bytes32("o"), enclave, c.transferHash);
    }

    function testFuzz_submitResult_completes_once_with_the_enclave_signature(bytes32 commitment, bytes32 key,
                                                                             uint16 len) public {
        vm.assume(commitment != 0 && key != 0);
        RequestBinding.ResultClaim memory c = _transferred(commitment, key);
        bytes memory result = new bytes(bound(len, 1, transfer.MAX_RESULT()));
        result[0] = 0x42;
        bytes memory sig = signResult(ENCLAVE_PK, c, result);
        vm.prank(stranger); // anyone may relay a signed result
        transfer.submitResult(c, result, "", bytes32(0), sig);
        vm.assertEq(uint8(status(c.requestId)), uint8(IBackboneExecution.Status.Completed), "completed");
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferInvalidStatus.selector, c.requestId, uint8(IBackboneExecution.Status.Completed)));
        transfer.submitResult(c, result, "", bytes32(0), sig);
    }

    function testFuzz_submitResult_refuses_any_other_signer(uint256 pk) public {
        pk = boundKey(pk);
        vm.assume(pk != ENCLAVE_PK);
        RequestBinding.ResultClaim memory c = _transferred(bytes32("c"), bytes32("k"));
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferBadSignature.selector, c.requestId, enclave, vm.addr(pk)));
        transfer.submitResult(c, hex"aa", "", bytes32(0), signResult(pk, c, hex"aa"));
    }

    function testFuzz_submitResult_malformed_or_high_s_signatures_recover_zero(bytes memory garbage) public {
        RequestBinding.ResultClaim memory c = _transferred(bytes32("c"), bytes32("k"));
        bytes memory twin = highSTwin(signResult(ENCLAVE_PK, c, hex"aa"));
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferBadSignature.selector, c.requestId, enclave, address(0)));
        transfer.submitResult(c, hex"aa", "", bytes32(0), twin);
        vm.assume(garbage.length != 65);
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferBadSignature.selector, c.requestId, enclave, address(0)));
        transfer.submitResult(c, hex"aa", "", bytes32(0), garbage);
    }

    /// A result signed for another requester key (or any other claim field) does not match the
    /// binding stored with the request.
    function testFuzz_submitResult_binds_the_claim(uint8 field, bytes32 other) public {
        RequestBinding.ResultClaim memory c = _transferred(bytes32("c"), bytes32("k"));
        field = uint8(bound(field, 0, 4));
        if (field == 0) { vm.assume(other != c.requesterKey); c.requesterKey = other; }
        if (field == 1) { vm.assume(other != c.inputCommitment); c.inputCommitment = other; }
        if (field == 2) { vm.assume(address(uint160(uint256(other))) != requester); c.requester = address(uint160(uint256(other))); }
        if (field == 3) { vm.assume(other != c.transferHash); c.transferHash = other; }
        if (field == 4) { vm.assume(other != MODEL); c.modelId = other; }
        vm.expectRevert(); // EnclaveTransferBindingMismatch(requestId, stored, computed)
        transfer.submitResult(c, hex"aa", "", bytes32(0), signResult(ENCLAVE_PK, c, hex"aa"));
        vm.assertEq(uint8(status(c.requestId)), uint8(IBackboneExecution.Status.Transferred), "unchanged");
    }

    function testFuzz_submitResult_checks_length_sequence_deadline(uint256 len, uint32 late) public {
        RequestBinding.ResultClaim memory c = _transferred(bytes32("c"), bytes32("k"));
        len = bound(len, transfer.MAX_RESULT() + 1, transfer.MAX_RESULT() + 100);
        vm.expectRevert(abi.encodeWithSelector(IEnclaveTransfer.EnclaveTransferBadResultLength.selector, c.requestId, len));
        transfer.submitResult(c, new bytes(len), "", bytes32(0), hex"");
        // neither an inline result nor a pointer with its commitment
        vm.expectRevert(abi.encodeWithSelector(IEnclaveTransfer.EnclaveTransferBadResultPointer.selector, c.requestId, 0));
        transfer.submitResult(c, "", "", bytes32(0), hex"");
        uint64 seq = c.sequence;
        c.sequence = 0;
        vm.expectRevert(abi.encodeWithSelector(IEnclaveTransfer.EnclaveTransferZeroSequence.selector, c.requestId));
        transfer.submitResult(c, hex"aa", "", bytes32(0), signResult(ENCLAVE_PK, c, hex"aa"));
        c.sequence = seq;
        uint40 deadline = backbone.request(c.requestId).deadline;
        vm.warp(uint256(deadline) + bound(late, 1, 365 days));
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferDeadlinePassed.selector, c.requestId, deadline, block.timestamp));
        transfer.submitResult(c, hex"aa", "", bytes32(0), signResult(ENCLAVE_PK, c, hex"aa"));
    }

    /// An enclave that signs correctly but no longer serves (revoked, expired, measurement
    /// revoked) cannot complete a request.
    function testFuzz_submitResult_needs_a_serving_enclave(uint8 why, uint32 extra) public {
        RequestBinding.ResultClaim memory c = _transferred(bytes32("c"), bytes32("k"));
        why = uint8(bound(why, 0, 2));
        if (why == 0) { vm.prank(admin); registry.revokeEnclave(enclave); }
        if (why == 1) { vm.prank(owner); registry.revokeMeasurement(MODEL, MEASUREMENT); }
        if (why == 2) {
            // the registration (1 day) expires while the request (1 hour) is alive: re-request
            vm.warp(registry.enclaveRecord(enclave).expiresAt + 1 + bound(extra, 0, 1 days));
            c = _transferred(bytes32("c"), bytes32("k"));
        }
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferEnclaveNotServing.selector, MODEL, version, enclave));
        transfer.submitResult(c, hex"aa", "", bytes32(0), signResult(ENCLAVE_PK, c, hex"aa"));
    }

    // ------------------------------------------------------------------ reportFailure, timeout

    function testFuzz_reportFailure_checks_code_reason_status(uint8 code, uint16 reasonLen) public {
        uint256 id = requestAs(requester, bytes32("c"), bytes32("k"), 60);
        vm.startPrank(node);
        if (code == 0 || code > transfer.MAX_REASON_CODE()) {
            vm.expectRevert(abi.encodeWithSelector(IEnclaveTransfer.EnclaveTransferUnknownReasonCode.selector, code));
            transfer.reportFailure(id, code, "");
            code = 1;
        }
        uint256 tooLong = bound(reasonLen, transfer.MAX_REASON() + 1, transfer.MAX_REASON() + 64);
        vm.expectRevert(abi.encodeWithSelector(IEnclaveTransfer.EnclaveTransferReasonTooLong.selector, tooLong, 256));
        transfer.reportFailure(id, code, string(new bytes(tooLong)));
        transfer.reportFailure(id, code, string(new bytes(bound(reasonLen, 0, transfer.MAX_REASON()))));
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Failed), "failed");
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferInvalidStatus.selector, id, uint8(IBackboneExecution.Status.Failed)));
        transfer.reportFailure(id, code, "");
        vm.stopPrank();
    }

    function testFuzz_timeout_only_after_the_deadline(uint32 ttl, uint32 wait) public {
        ttl = uint32(bound(ttl, 1, 30 days));
        uint256 id = requestAs(requester, bytes32("c"), bytes32("k"), ttl);
        uint40 deadline = uint40(block.timestamp + ttl);
        uint256 early = bound(wait, 0, ttl);
        vm.warp(block.timestamp + early);
        vm.expectRevert(abi.encodeWithSelector(
            IBackboneExecution.BackboneExecutionDeadlineNotReached.selector, id, deadline, block.timestamp));
        backbone.timeout(id);
        vm.warp(uint256(deadline) + 1 + bound(wait, 0, 365 days));
        vm.prank(stranger);
        backbone.timeout(id);
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.TimedOut), "timed out");
        vm.expectRevert(abi.encodeWithSelector(
            IBackboneExecution.BackboneExecutionInvalidStatus.selector, id, IBackboneExecution.Status.TimedOut));
        backbone.timeout(id);
    }
}
