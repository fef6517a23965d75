// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./utils/Fixture.sol";
import {ResultConsumer} from "../src/ResultConsumer.sol";
import {IBackboneExecution} from "../src/interfaces/IBackboneExecution.sol";
import {IEnclaveTransfer} from "../src/interfaces/IEnclaveTransfer.sol";
import {IInferenceConsumer} from "../src/interfaces/IInferenceConsumer.sol";
import {RequestBinding} from "../src/lib/RequestBinding.sol";

/// @dev Consumers that misbehave in every way a callback can.
contract RevertingConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes32, bytes calldata) external pure {
        revert("no thanks");
    }
}

contract GasBurningConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes32, bytes calldata) external pure {
        while (true) {}
    }
}

contract ReturnBombConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes32, bytes calldata) external pure {
        assembly {
            revert(0, 1000000) // a megabyte of revert data: the caller must not copy it
        }
    }
}

/// @dev Records the gas it was given in transient storage (100 gas a write, so even the
///      smallest limit suffices; a forge test is one transaction, so the test can read it).
contract GasMeterConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes32, bytes calldata) external {
        uint256 g = gasleft();
        assembly {
            tstore(0, g)
            tstore(1, add(tload(1), 1))
        }
    }

    function gasAtEntry() external view returns (uint256 g) {
        assembly {
            g := tload(0)
        }
    }

    function calls() external view returns (uint256 n) {
        assembly {
            n := tload(1)
        }
    }
}

/// @dev Tries to deliver the same request again from inside its callback.
contract ReenteringConsumer is IInferenceConsumer {
    IEnclaveTransfer internal immutable _transfer;
    bytes internal _replay;
    bool public reentryFailed;

    constructor(IEnclaveTransfer transfer_) {
        _transfer = transfer_;
    }

    function arm(bytes memory replay) external {
        _replay = replay;
    }

    function onInferenceResult(uint256, bytes32, bytes calldata) external {
        (bool ok,) = address(_transfer).call(_replay);
        reentryFailed = !ok;
    }
}

/// @notice Consumer callbacks (a hostile consumer never blocks or reverts a delivery; a node
///         cannot starve a callback of gas) and batched delivery (a bad item is skipped alone).
contract CallbacksTest is Fixture {
    uint256 internal constant ENCLAVE_PK = 0xE1;
    address internal enclave;
    bytes32 internal constant KEY = bytes32("requester key");

    event ConsumerCalled(
        uint256 indexed requestId, address indexed consumer, bool succeeded, uint256 gasUsed, bytes returnHead
    );
    event DeliverySkipped(uint256 indexed requestId, bytes reason);

    function setUp() public {
        deployStack();
        enclave = serve(ENCLAVE_PK);
    }

    function _request(address consumer, uint32 gasLimit, bytes32 commitment) internal returns (uint256 id) {
        vm.prank(requester);
        id = consumer == address(0)
            ? backbone.requestInference(MODEL, version, commitment, hex"c0ffee", "", KEY, 600)
            : backbone.requestInferenceWithCallback(MODEL, version, commitment, hex"c0ffee", "", KEY, 600, consumer, gasLimit);
    }

    function _delivery(uint256 id, address consumer, uint32 gasLimit, bytes32 commitment)
        internal
        returns (IBackboneExecution.Delivery memory d)
    {
        RequestBinding.ResultClaim memory c = claimFor(id, requester, commitment, KEY, enclave, keccak256(abi.encode("t", id)));
        c.consumer = consumer;
        c.callbackGasLimit = gasLimit;
        bytes memory result = abi.encodePacked("encrypted result ", id);
        d = IBackboneExecution.Delivery(c, keccak256("out"), result, "", bytes32(0), signResult(ENCLAVE_PK, c, result));
    }

    function _deliver(IBackboneExecution.Delivery memory d) internal {
        vm.prank(node);
        backbone.deliverResult(d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature);
    }

    // ------------------------------------------------------------------------------ requests

    function testFuzz_request_refuses_a_bad_callback(uint32 gasLimit, bool eoa) public {
        address consumer = eoa ? address(0xBEEF) : address(new GasMeterConsumer());
        if (!eoa) vm.assume(gasLimit < backbone.MIN_CALLBACK_GAS() || gasLimit > backbone.MAX_CALLBACK_GAS());
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionBadCallback.selector, consumer, gasLimit));
        backbone.requestInferenceWithCallback(MODEL, version, bytes32("c"), hex"01", "", KEY, 600, consumer, gasLimit);
    }

    function test_the_claim_must_name_the_requested_consumer() public {
        GasMeterConsumer meter = new GasMeterConsumer();
        uint256 id = _request(address(meter), 50_000, bytes32("c"));
        IBackboneExecution.Delivery memory d = _delivery(id, address(0), 0, bytes32("c")); // callback dropped
        vm.prank(node);
        vm.expectRevert();
        backbone.deliverResult(d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature);
        d = _delivery(id, address(meter), 60_000, bytes32("c")); // more gas than asked
        vm.prank(node);
        vm.expectRevert();
        backbone.deliverResult(d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature);
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Requested), "still open");
    }

    // ------------------------------------------------------------------------------ callbacks

    function test_example_consumer_receives_the_result() public {
        ResultConsumer consumer = new ResultConsumer(address(transfer));
        uint256 id = _request(address(consumer), 100_000, bytes32("c"));
        IBackboneExecution.Delivery memory d = _delivery(id, address(consumer), 100_000, bytes32("c"));
        _deliver(d);
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Completed), "completed");
        vm.assertEq(consumer.received(id).resultCommitment, keccak256(d.encryptedResult), "commitment");
        vm.assertEq(consumer.received(id).ciphertextHash, keccak256(d.encryptedResult), "ciphertext");
        vm.expectRevert(abi.encodeWithSelector(ResultConsumer.ResultConsumerNotEnclaveTransfer.selector, stranger));
        vm.prank(stranger);
        consumer.onInferenceResult(id, bytes32("forged"), "");
    }

    function test_hostile_consumers_never_block_the_delivery() public {
        address[3] memory hostile =
            [address(new RevertingConsumer()), address(new GasBurningConsumer()), address(new ReturnBombConsumer())];
        for (uint256 i = 0; i < hostile.length; ++i) {
            bytes32 commitment = keccak256(abi.encode("c", i));
            uint256 id = _request(hostile[i], 200_000, commitment);
            _deliver(_delivery(id, hostile[i], 200_000, commitment));
            vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Completed), "completed despite the consumer");
        }
    }

    function test_a_failed_callback_is_recorded_with_a_bounded_return_head() public {
        address bomb = address(new ReturnBombConsumer());
        uint256 id = _request(bomb, 200_000, bytes32("c"));
        IBackboneExecution.Delivery memory d = _delivery(id, bomb, 200_000, bytes32("c"));
        vm.expectEmit(true, true, false, false, address(transfer));
        emit ConsumerCalled(id, bomb, false, 0, "");
        _deliver(d);
    }

    function test_a_consumer_without_code_is_recorded_failed() public {
        GasMeterConsumer meter = new GasMeterConsumer();
        uint256 id = _request(address(meter), 50_000, bytes32("c"));
        vm.etch(address(meter), ""); // its code went away after the request
        vm.expectEmit(true, true, false, true, address(transfer));
        emit ConsumerCalled(id, address(meter), false, 0, "");
        _deliver(_delivery(id, address(meter), 50_000, bytes32("c")));
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Completed), "completed");
    }

    /// @dev Whatever gas the node sends, either the delivery reverts (and the request stays open)
    ///      or the consumer got its whole limit: under-supplying gas cannot make a callback fail.
    function testFuzz_a_node_cannot_starve_the_callback(uint32 gasLimit, uint32 txGas) public {
        gasLimit = uint32(bound(gasLimit, backbone.MIN_CALLBACK_GAS(), backbone.MAX_CALLBACK_GAS()));
        txGas = uint32(bound(txGas, 50_000, 1_500_000));
        GasMeterConsumer meter = new GasMeterConsumer();
        uint256 id = _request(address(meter), gasLimit, bytes32("c"));
        IBackboneExecution.Delivery memory d = _delivery(id, address(meter), gasLimit, bytes32("c"));
        vm.prank(node);
        (bool ok,) = address(backbone).call{gas: txGas}(abi.encodeCall(
            IBackboneExecution.deliverResult,
            (d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature)));
        if (ok) {
            vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Completed), "completed");
            vm.assertEq(meter.calls(), 1, "called once");
            // the consumer's own code before gasleft() takes a few hundred gas of its limit
            vm.assertTrue(meter.gasAtEntry() + 1_000 >= gasLimit, "the callback got its whole limit");
        } else {
            vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Requested), "reverted: still open");
        }
    }

    function test_a_reentering_consumer_cannot_deliver_twice() public {
        ReenteringConsumer consumer = new ReenteringConsumer(transfer);
        uint256 id = _request(address(consumer), 300_000, bytes32("c"));
        IBackboneExecution.Delivery memory d = _delivery(id, address(consumer), 300_000, bytes32("c"));
        consumer.arm(abi.encodeCall(IEnclaveTransfer.submitResult,
            (d.claim, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature)));
        _deliver(d);
        vm.assertTrue(consumer.reentryFailed(), "the replay inside the callback reverted");
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Completed), "completed once");
    }

    // ------------------------------------------------------------------------------ batches

    function test_a_batch_skips_bad_items_and_delivers_the_rest() public {
        IBackboneExecution.Delivery[] memory batch = new IBackboneExecution.Delivery[](4);
        uint256[4] memory ids;
        for (uint256 i = 0; i < 4; ++i) {
            bytes32 commitment = keccak256(abi.encode("c", i));
            ids[i] = _request(address(0), 0, commitment);
            batch[i] = _delivery(ids[i], address(0), 0, commitment);
        }
        batch[1].signature = signResult(0xBAD, batch[1].claim, batch[1].encryptedResult); // bad signature
        _deliver(batch[2]); // already completed
        vm.expectEmit(true, false, false, false, address(backbone));
        emit DeliverySkipped(ids[1], "");
        vm.expectEmit(true, false, false, false, address(backbone));
        emit DeliverySkipped(ids[2], "");
        vm.prank(node);
        uint256 delivered = backbone.deliverResults(batch);
        vm.assertEq(delivered, 2, "two applied");
        vm.assertEq(uint8(status(ids[0])), uint8(IBackboneExecution.Status.Completed), "first");
        vm.assertEq(uint8(status(ids[1])), uint8(IBackboneExecution.Status.Requested), "bad one left open");
        vm.assertEq(uint8(status(ids[3])), uint8(IBackboneExecution.Status.Completed), "last");
    }

    function test_a_batch_skips_an_expired_item() public {
        IBackboneExecution.Delivery[] memory batch = new IBackboneExecution.Delivery[](2);
        vm.prank(requester);
        uint256 shortId = backbone.requestInference(MODEL, version, bytes32("s"), hex"01", "", KEY, 10);
        uint256 longId = _request(address(0), 0, bytes32("l"));
        batch[0] = _delivery(shortId, address(0), 0, bytes32("s"));
        batch[1] = _delivery(longId, address(0), 0, bytes32("l"));
        vm.warp(block.timestamp + 11);
        vm.prank(node);
        vm.assertEq(backbone.deliverResults(batch), 1, "one applied");
        vm.assertEq(uint8(status(shortId)), uint8(IBackboneExecution.Status.Requested), "expired: open for timeout");
        vm.assertEq(uint8(status(longId)), uint8(IBackboneExecution.Status.Completed), "in time");
    }

    function testFuzz_batch_length_is_bounded(uint8 extra) public {
        uint256 n = backbone.MAX_BATCH() + 1 + uint256(extra) % 4;
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionBadBatchLength.selector, n, 64));
        backbone.deliverResults(new IBackboneExecution.Delivery[](n));
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionBadBatchLength.selector, 0, 64));
        backbone.deliverResults(new IBackboneExecution.Delivery[](0));
    }

    function test_only_the_contract_runs_one_item_and_only_nodes_batch() public {
        IBackboneExecution.Delivery memory d = _delivery(_request(address(0), 0, bytes32("c")), address(0), 0, bytes32("c"));
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(IBackboneExecution.BackboneExecutionNotSelf.selector, node));
        backbone.deliverOne(d);
        IBackboneExecution.Delivery[] memory batch = new IBackboneExecution.Delivery[](1);
        batch[0] = d;
        vm.prank(stranger);
        vm.expectRevert();
        backbone.deliverResults(batch);
    }

    function test_a_starved_callback_reverts_the_whole_batch() public {
        GasMeterConsumer meter = new GasMeterConsumer();
        IBackboneExecution.Delivery[] memory batch = new IBackboneExecution.Delivery[](2);
        batch[0] = _delivery(_request(address(0), 0, bytes32("a")), address(0), 0, bytes32("a"));
        uint256 id = _request(address(meter), 900_000, bytes32("b"));
        batch[1] = _delivery(id, address(meter), 900_000, bytes32("b"));
        vm.prank(node);
        (bool ok,) = address(backbone).call{gas: 400_000}(abi.encodeCall(IBackboneExecution.deliverResults, (batch)));
        vm.assertFalse(ok, "reverted as a whole");
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Requested), "callback request still open");
        vm.assertEq(uint8(status(batch[0].claim.requestId)), uint8(IBackboneExecution.Status.Requested), "first too");
    }
}
