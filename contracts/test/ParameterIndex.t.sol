// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./utils/Fixture.sol";
import {IParameterIndex} from "../src/interfaces/IParameterIndex.sol";

/// @notice Fuzz tests of the checks of every external function of ParameterIndex.
contract ParameterIndexFuzzTest is Fixture {
    uint256 internal constant ENCLAVE_PK = 0xE1;
    bytes32 internal constant INDEX_VERIFIED_TYPEHASH = keccak256(
        "IndexVerified(bytes32 modelId,uint32 modelVersion,address enclave,bytes32 encryptedIndexHash,bytes32 merkleRoot,uint32 entryCount)"
    );
    bytes32 internal indexDomain;
    address internal enclave;

    function setUp() public {
        deployStack();
        indexDomain = index.domainSeparator();
        enclave = vm.addr(ENCLAVE_PK);
        registerEnclave(ENCLAVE_PK, MEASUREMENT);
    }

    function _publish(bytes32 h, bytes32 root, uint32 count) internal {
        vm.prank(owner);
        index.publishIndex(MODEL, version, h, root, count);
    }

    /// @dev Key `pk`'s signature that `who` verified the index (h, root, count) of MODEL.
    function _signature(uint256 pk, address who, bytes32 h, bytes32 root, uint32 count)
        internal
        view
        returns (bytes memory)
    {
        return signDigest(pk, typedDigest(indexDomain, keccak256(
            abi.encode(INDEX_VERIFIED_TYPEHASH, MODEL, version, who, h, root, count))));
    }

    // ----------------------------------------------------------------------------- publishIndex

    function testFuzz_publishIndex_records_once(bytes32 h, bytes32 root, uint32 count, bytes32 h2) public {
        vm.assume(h != 0 && root != 0 && count != 0 && h2 != 0);
        _publish(h, root, count);
        IParameterIndex.IndexRecord memory rec = index.index(MODEL, version);
        vm.assertEq(rec.encryptedIndexHash, h, "hash");
        vm.assertEq(rec.merkleRoot, root, "root");
        vm.assertEq(rec.entryCount, count, "count");
        vm.assertEq(rec.publishedAt, block.timestamp, "publishedAt");
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IParameterIndex.ParameterIndexAlreadyPublished.selector, MODEL, version));
        index.publishIndex(MODEL, version, h2, root, count);
        vm.assertEq(index.index(MODEL, version).encryptedIndexHash, h, "unchanged");
    }

    function testFuzz_publishIndex_checks_version_owner_contents(uint32 v, address caller, uint8 zeroAt) public {
        vm.assume((v == 0 || v > version) && caller != owner);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IParameterIndex.ParameterIndexUnknownModelVersion.selector, MODEL, v));
        index.publishIndex(MODEL, v, bytes32("h"), bytes32("r"), 1);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(IParameterIndex.ParameterIndexNotModelOwner.selector, MODEL, caller, owner));
        index.publishIndex(MODEL, version, bytes32("h"), bytes32("r"), 1);
        bytes32 h = zeroAt % 3 == 0 ? bytes32(0) : bytes32("h");
        bytes32 root = zeroAt % 3 == 1 ? bytes32(0) : bytes32("r");
        uint32 count = zeroAt % 3 == 2 ? 0 : 1;
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IParameterIndex.ParameterIndexEmptyIndex.selector, MODEL, version));
        index.publishIndex(MODEL, version, h, root, count);
    }

    // ----------------------------------------------------------------------------- confirmIndex

    function testFuzz_confirmIndex_records_the_enclave_once(bytes32 h, bytes32 root, uint32 count) public {
        vm.assume(h != 0 && root != 0 && count != 0);
        bytes memory sig = _signature(ENCLAVE_PK, enclave, h, root, count);
        vm.expectRevert(abi.encodeWithSelector(IParameterIndex.ParameterIndexNotPublished.selector, MODEL, version));
        index.confirmIndex(MODEL, version, enclave, sig);
        _publish(h, root, count);
        index.confirmIndex(MODEL, version, enclave, sig);
        vm.assertTrue(index.isIndexVerified(MODEL, version, enclave), "verified");
        vm.expectRevert(abi.encodeWithSelector(
            IParameterIndex.ParameterIndexAlreadyVerified.selector, MODEL, version, enclave));
        index.confirmIndex(MODEL, version, enclave, sig);
    }

    function testFuzz_confirmIndex_needs_the_enclave_signature_of_that_index(uint256 otherPk, bytes32 otherRoot)
        public
    {
        otherPk = boundKey(otherPk);
        vm.assume(otherPk != ENCLAVE_PK && otherRoot != bytes32("r"));
        _publish(bytes32("h"), bytes32("r"), 3);
        bytes memory byOther = _signature(otherPk, enclave, bytes32("h"), bytes32("r"), 3);
        vm.expectRevert(abi.encodeWithSelector(
            IParameterIndex.ParameterIndexBadSignature.selector, enclave, vm.addr(otherPk)));
        index.confirmIndex(MODEL, version, enclave, byOther);
        bytes memory good = _signature(ENCLAVE_PK, enclave, bytes32("h"), bytes32("r"), 3);
        vm.expectRevert(abi.encodeWithSelector(IParameterIndex.ParameterIndexBadSignature.selector, enclave, address(0)));
        index.confirmIndex(MODEL, version, enclave, highSTwin(good));
        // the right key, but for another Merkle root: recovers some other address, never the enclave
        bytes memory wrongRoot = _signature(ENCLAVE_PK, enclave, bytes32("h"), otherRoot, 3);
        try index.confirmIndex(MODEL, version, enclave, wrongRoot) {
            revert("a signature of another index verified");
        } catch (bytes memory reason) {
            vm.assertEq(bytes32(bytes4(reason)), bytes32(IParameterIndex.ParameterIndexBadSignature.selector), "error");
        }
        vm.assertFalse(index.isIndexVerified(MODEL, version, enclave), "not verified");
    }

    function testFuzz_confirmIndex_needs_an_authorized_enclave(uint8 why, uint32 extra, uint256 unregisteredPk) public {
        unregisteredPk = boundKey(unregisteredPk);
        vm.assume(unregisteredPk != ENCLAVE_PK);
        _publish(bytes32("h"), bytes32("r"), 3);
        address unregistered = vm.addr(unregisteredPk);
        bytes memory own = _signature(unregisteredPk, unregistered, bytes32("h"), bytes32("r"), 3);
        vm.expectRevert(abi.encodeWithSelector(
            IParameterIndex.ParameterIndexEnclaveNotAuthorized.selector, MODEL, unregistered));
        index.confirmIndex(MODEL, version, unregistered, own);
        uint256 w = why % 3;
        if (w == 0) { vm.prank(admin); registry.revokeEnclave(enclave); }
        if (w == 1) { vm.prank(owner); registry.revokeMeasurement(MODEL, MEASUREMENT); }
        if (w == 2) vm.warp(registry.enclaveRecord(enclave).expiresAt + 1 + bound(extra, 0, 30 days));
        bytes memory sig = _signature(ENCLAVE_PK, enclave, bytes32("h"), bytes32("r"), 3);
        vm.expectRevert(abi.encodeWithSelector(
            IParameterIndex.ParameterIndexEnclaveNotAuthorized.selector, MODEL, enclave));
        index.confirmIndex(MODEL, version, enclave, sig);
    }

    function test_modelRegistry_is_the_linked_registry() public view {
        vm.assertEq(index.modelRegistry(), address(registry), "registry");
    }
}
