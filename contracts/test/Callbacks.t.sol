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
    function onInferenceResult(uint256, bytes32, bytes calldata, bool, bytes32) external pure {
        revert("no thanks");
    }
}

contract GasBurningConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes32, bytes calldata, bool, bytes32) external pure {
        while (true) {}
    }
}

contract ReturnBombConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes32, bytes calldata, bool, bytes32) external pure {
        assembly {
            revert(0, 1000000) // a megabyte of revert data: the caller must not copy it
        }
    }
}

/// @dev Records the gas it was given in transient storage (100 gas a write, so even the
///      smallest limit suffices; a forge test is one transaction, so the test can read it).
contract GasMeterConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes32, bytes calldata, bool, bytes32) external {
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

    function onInferenceResult(uint256, bytes32, bytes calldata, bool, bytes32) external {
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
        vm.assertFalse(consumer.received(id).hasLabel, "no label from a model without the public_label policy");
        vm.expectRevert(abi.encodeWithSelector(ResultConsumer.ResultConsumerNotEnclaveTransfer.selector, stranger));
        vm.prank(stranger);
        consumer.onInferenceResult(id, bytes32("forged"), "", true, bytes32(uint256(7)));
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

/// @notice Public labels: forwarded to the consumer only when the enclave signed one and the
///         model version was registered with the `public_label` output policy.
contract PublicLabelTest is Fixture {
    uint256 internal constant ENCLAVE_PK = 0xE1;
    bytes32 internal constant KEY = bytes32("requester key");
    address internal enclave;
    uint32 internal plainVersion;
    uint32 internal labelledVersion;
    ResultConsumer internal consumer;

    function setUp() public {
        deployStack();
        plainVersion = version;
        enclave = serve(ENCLAVE_PK);
        vm.prank(owner);
        labelledVersion = registry.registerModelWithPolicy(
            MODEL, keccak256("b"), keccak256("g2"), keccak256("p2"), keccak256("r"), true
        );
        version = labelledVersion;
        serve(ENCLAVE_PK);
        consumer = new ResultConsumer(address(transfer));
    }

    function _request(uint32 v, bytes32 commitment) internal returns (uint256 id) {
        vm.prank(requester);
        id = backbone.requestInferenceWithCallback(
            MODEL, v, commitment, hex"c0ffee", "", KEY, 600, address(consumer), 150_000
        );
    }

    /// @dev A delivery for request `id` of version `v`, the claim carrying (`hasLabel`, `label`),
    ///      signed by `pk` over exactly that claim.
    function _delivery(uint256 id, uint32 v, bytes32 commitment, bool hasLabel, bytes32 label, uint256 pk)
        internal
        returns (IBackboneExecution.Delivery memory d)
    {
        RequestBinding.ResultClaim memory c =
            claimFor(id, requester, commitment, KEY, enclave, keccak256(abi.encode("t", id)));
        c.consumer = address(consumer);
        c.callbackGasLimit = 150_000;
        c.hasLabel = hasLabel;
        c.label = label;
        bytes memory result = abi.encodePacked("encrypted result ", id);
        uint32 saved = version;
        version = v; // signResult signs over the fixture's `version`
        bytes memory sig = signResult(pk, c, result);
        version = saved;
        d = IBackboneExecution.Delivery(c, keccak256("out"), result, "", bytes32(0), sig);
    }

    function _deliver(IBackboneExecution.Delivery memory d) internal {
        vm.prank(node);
        backbone.deliverResult(d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature);
    }

    function test_the_registry_records_the_policy_per_version() public view {
        vm.assertFalse(registry.allowsPublicLabel(MODEL, plainVersion), "plain version");
        vm.assertTrue(registry.allowsPublicLabel(MODEL, labelledVersion), "labelled version");
        vm.assertTrue(registry.modelVersion(MODEL, labelledVersion).publicLabel, "in the version record");
        vm.assertFalse(registry.allowsPublicLabel(MODEL, 99), "unknown version");
    }

    function testFuzz_the_example_consumer_records_a_signed_allowed_label(uint8 cls) public {
        uint256 id = _request(labelledVersion, bytes32("c"));
        _deliver(_delivery(id, labelledVersion, bytes32("c"), true, bytes32(uint256(cls)), ENCLAVE_PK));
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Completed), "completed");
        vm.assertTrue(consumer.received(id).hasLabel, "label flag");
        vm.assertEq(consumer.received(id).label, bytes32(uint256(cls)), "the label the enclave signed");
    }

    function test_a_labelled_version_may_still_deliver_without_a_label() public {
        uint256 id = _request(labelledVersion, bytes32("c"));
        _deliver(_delivery(id, labelledVersion, bytes32("c"), false, bytes32(0), ENCLAVE_PK));
        vm.assertFalse(consumer.received(id).hasLabel, "none");
    }

    function test_a_version_without_the_policy_never_forwards_a_label() public {
        uint256 id = _request(plainVersion, bytes32("c"));
        // even signed by the serving enclave: the registry does not allow it for this version
        IBackboneExecution.Delivery memory d = _delivery(id, plainVersion, bytes32("c"), true, bytes32(uint256(3)), ENCLAVE_PK);
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferLabelNotAllowed.selector, id, MODEL, plainVersion));
        backbone.deliverResult(d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature);
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Requested), "still open");
        // a label value without the flag is refused too (it could not be forwarded honestly)
        d = _delivery(id, plainVersion, bytes32("c"), false, bytes32(uint256(3)), ENCLAVE_PK);
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(
            IEnclaveTransfer.EnclaveTransferLabelNotAllowed.selector, id, MODEL, plainVersion));
        backbone.deliverResult(d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature);
        _deliver(_delivery(id, plainVersion, bytes32("c"), false, bytes32(0), ENCLAVE_PK));
        vm.assertFalse(consumer.received(id).hasLabel, "delivered without one");
    }

    function testFuzz_a_node_cannot_invent_or_change_a_label(uint8 signedCls, uint8 sentCls, bool dropFlag) public {
        vm.assume(signedCls != sentCls || dropFlag);
        uint256 id = _request(labelledVersion, bytes32("c"));
        IBackboneExecution.Delivery memory d =
            _delivery(id, labelledVersion, bytes32("c"), true, bytes32(uint256(signedCls)), ENCLAVE_PK);
        d.claim.label = bytes32(uint256(sentCls));
        if (dropFlag) d.claim.hasLabel = false;
        vm.prank(node);
        (bool ok, bytes memory err) = address(backbone).call(abi.encodeCall(
            IBackboneExecution.deliverResult,
            (d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature)));
        vm.assertFalse(ok, "refused");
        // the label is part of the signed struct: any change makes the signature recover elsewhere
        vm.assertEq(bytes4(err), IEnclaveTransfer.EnclaveTransferBadSignature.selector, "bad signature");
        vm.assertEq(uint8(status(id)), uint8(IBackboneExecution.Status.Requested), "still open");
    }

    function test_an_unsigned_label_is_refused() public {
        uint256 id = _request(labelledVersion, bytes32("c"));
        IBackboneExecution.Delivery memory d =
            _delivery(id, labelledVersion, bytes32("c"), true, bytes32(uint256(1)), 0xBAD); // not the enclave
        vm.prank(node);
        vm.expectRevert();
        backbone.deliverResult(d.claim, d.outputCommitment, d.encryptedResult, d.resultPointer, d.resultCommitment, d.signature);
        vm.assertFalse(consumer.received(id).hasLabel, "nothing forwarded");
    }
}
