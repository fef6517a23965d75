// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Fixture} from "./utils/Fixture.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {IModelRegistry} from "../src/interfaces/IModelRegistry.sol";
import {Roles} from "../src/lib/Roles.sol";

/// @notice Fuzz tests of the checks of every external function of ModelRegistry (bounded
///         inputs; each test names the check it exercises, and every revert is matched down to
///         its custom error and arguments).
contract ModelRegistryFuzzTest is Fixture {
    uint256 internal constant ENCLAVE_PK = 0xE1;

    /// @dev What a registration call takes, built from a valid quote that tests then spoil.
    struct Registration {
        bytes quote;
        address enclave;
        bytes32 encryptionKey;
        bytes32 nonce;
        bytes signature;
    }

    function setUp() public {
        deployStack();
    }

    function _registration(uint256 pk, bytes32 measurement, uint64 issuedAt, bool debug)
        internal
        returns (Registration memory r)
    {
        r.enclave = vm.addr(pk);
        r.encryptionKey = keccak256(abi.encode("x25519", pk));
        r.nonce = freshNonce();
        r.quote = quote(QUOTING_PK, measurement, reportData(r.enclave, r.encryptionKey, r.nonce), issuedAt, debug);
        r.signature = _registrationSignature(pk, r, measurement);
    }

    function _registrationSignature(uint256 pk, Registration memory r, bytes32 measurement)
        internal
        view
        returns (bytes memory)
    {
        return signDigest(pk, typedDigest(registryDomain, keccak256(
            abi.encode(ENCLAVE_REGISTRATION_TYPEHASH, r.enclave, r.encryptionKey, measurement, r.nonce))));
    }

    function _register(Registration memory r) internal {
        registry.registerEnclave(r.quote, r.enclave, r.encryptionKey, r.nonce, r.signature);
    }

    /// @dev Key `pk`'s signature that enclave `vm.addr(ENCLAVE_PK)` loaded `packageHash`.
    function _headLoadedSignature(uint256 pk, uint32 v, bytes32 packageHash, uint64 stateVersion)
        internal
        view
        returns (bytes memory)
    {
        IModelRegistry.ModelVersion memory mv = registry.modelVersion(MODEL, v);
        return signDigest(pk, typedDigest(registryDomain, keccak256(abi.encode(HEAD_LOADED_TYPEHASH, MODEL, v,
            vm.addr(ENCLAVE_PK), mv.headGraphHash, mv.headParamsHash, packageHash, stateVersion))));
    }

    /// @dev Plain ecrecover of a 65-byte signature: what the contract recovers from a signature
    ///      made over some other digest.
    function _recover(bytes32 digest, bytes memory signature) internal pure returns (address) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(signature, 0x20))
            s := mload(add(signature, 0x40))
            v := byte(0, mload(add(signature, 0x60)))
        }
        return ecrecover(digest, v, r, s);
    }

    // --------------------------------------------------------------------------- constructor

    /// forge-config: default.fuzz.runs = 64
    /// @dev 64 runs: each deploys a registry (2.6M gas), the rest of the input space is small.
    function testFuzz_constructor_refuses_a_zero_admin_and_pins_a_nonzero_key(address key) public {
        vm.expectRevert(abi.encodeWithSelector(Roles.AccessControlZeroAccount.selector, bytes32(0)));
        new ModelRegistry(address(0), key);
        ModelRegistry fresh = new ModelRegistry(admin, key);
        vm.assertEq(fresh.quotingKey(), key, "quoting key");
        vm.assertTrue(fresh.hasRole(fresh.ATTESTATION_ADMIN_ROLE(), admin), "attestation admin");
        vm.assertEq(fresh.registrationTtl(), fresh.DEFAULT_REGISTRATION_TTL(), "ttl");
        vm.assertEq(fresh.quoteValidity(), fresh.DEFAULT_QUOTE_VALIDITY(), "validity");
    }

    // --------------------------------------------------------------------------- registerModel

    function testFuzz_registerModel_numbers_versions_per_owner(bytes32 model, bytes32 h, address who, address other,
                                                               uint8 count) public {
        vm.assume(model != 0 && model != MODEL && uint256(h) > 4 && who != address(0) && other != who);
        uint256 n = bound(count, 1, 6);
        for (uint256 i = 1; i <= n; ++i) {
            vm.prank(who);
            uint32 v = registry.registerModel(model, bytes32(uint256(h) - 1), bytes32(uint256(h) - 2),
                                              bytes32(uint256(h) - 3), bytes32(uint256(h) - i));
            vm.assertEq(v, i, "version");
        }
        vm.assertEq(registry.modelOwner(model), who, "owner");
        vm.assertEq(registry.latestVersion(model), n, "latest");
        vm.assertTrue(registry.versionExists(model, uint32(n)) && !registry.versionExists(model, uint32(n + 1))
                      && !registry.versionExists(model, 0), "versionExists");
        vm.assertEq(registry.modelVersion(model, uint32(n)).ruleHash, bytes32(uint256(h) - n), "version record");
        vm.assertEq(registry.modelVersion(model, 1).registeredAt, block.timestamp, "registeredAt");
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryNotModelOwner.selector, model, other, who));
        registry.registerModel(model, h, h, h, h);
    }

    function testFuzz_registerModel_refuses_zero_id_and_zero_hashes(bytes32 h, uint8 zeroAt) public {
        vm.assume(h != 0);
        vm.expectRevert(IModelRegistry.ModelRegistryZeroModelId.selector);
        registry.registerModel(bytes32(0), h, h, h, h);
        bytes32[4] memory hashes = [h, h, h, h];
        hashes[zeroAt % 4] = 0;
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryZeroHash.selector, bytes32("m")));
        registry.registerModel(bytes32("m"), hashes[0], hashes[1], hashes[2], hashes[3]);
    }

    function testFuzz_modelVersion_refuses_unknown_versions(uint32 v) public {
        vm.assume(v == 0 || v > version);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryUnknownVersion.selector, MODEL, v));
        registry.modelVersion(MODEL, v);
    }

    // ---------------------------------------------------------------- allow/revokeMeasurement

    function testFuzz_measurements_only_by_the_owner(address caller, bytes32 measurement, bytes32 unknownModel)
        public
    {
        vm.assume(caller != owner && unknownModel != MODEL);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryNotModelOwner.selector, MODEL, caller, owner));
        registry.allowMeasurement(MODEL, measurement);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryNotModelOwner.selector, MODEL, caller, owner));
        registry.revokeMeasurement(MODEL, MEASUREMENT);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryUnknownModel.selector, unknownModel));
        registry.allowMeasurement(unknownModel, measurement);
    }

    function testFuzz_measurements_toggle_once_each_way(bytes32 measurement) public {
        vm.assume(measurement != MEASUREMENT);
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryMeasurementNotAllowed.selector, MODEL, measurement));
        registry.revokeMeasurement(MODEL, measurement);
        registry.allowMeasurement(MODEL, measurement);
        vm.assertTrue(registry.isMeasurementAllowed(MODEL, measurement), "allowed");
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryMeasurementAlreadyAllowed.selector, MODEL, measurement));
        registry.allowMeasurement(MODEL, measurement);
        registry.revokeMeasurement(MODEL, measurement);
        vm.assertFalse(registry.isMeasurementAllowed(MODEL, measurement), "revoked");
        vm.stopPrank();
    }

    // ---------------------------------------------------------------------------- provisionHead

    function testFuzz_provisionHead_checks_owner_version_hash_enclave(address caller, uint32 v, bytes32 packageHash,
                                                                     address stranger_) public {
        vm.assume(caller != owner && (v == 0 || v > version) && packageHash != 0);
        address enclave = vm.addr(ENCLAVE_PK);
        vm.assume(stranger_ != enclave);
        registerEnclave(ENCLAVE_PK, MEASUREMENT);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryNotModelOwner.selector, MODEL, caller, owner));
        registry.provisionHead(MODEL, version, enclave, packageHash);
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryUnknownVersion.selector, MODEL, v));
        registry.provisionHead(MODEL, v, enclave, packageHash);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryZeroHash.selector, MODEL));
        registry.provisionHead(MODEL, version, enclave, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryEnclaveNotAuthorized.selector, MODEL, stranger_));
        registry.provisionHead(MODEL, version, stranger_, packageHash);
        registry.provisionHead(MODEL, version, enclave, packageHash);
        vm.stopPrank();
        vm.assertEq(registry.provisionedPackage(MODEL, version, enclave), packageHash, "package");
        vm.assertFalse(registry.isHeadLoaded(MODEL, version, enclave), "not loaded yet");
    }

    function testFuzz_provisionHead_needs_an_authorized_enclave_now(uint8 why, uint32 extra) public {
        address enclave = vm.addr(ENCLAVE_PK);
        registerEnclave(ENCLAVE_PK, MEASUREMENT);
        uint256 w = why % 3;
        if (w == 0) { vm.prank(admin); registry.revokeEnclave(enclave); }
        if (w == 1) { vm.prank(owner); registry.revokeMeasurement(MODEL, MEASUREMENT); }
        if (w == 2) vm.warp(registry.enclaveRecord(enclave).expiresAt + 1 + bound(extra, 0, 30 days));
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryEnclaveNotAuthorized.selector, MODEL, enclave));
        registry.provisionHead(MODEL, version, enclave, bytes32("pkg"));
    }

    // --------------------------------------------------------------- attestation admin functions

    function testFuzz_attestation_admin_functions_need_the_role(address caller, address key, uint64 duration) public {
        vm.assume(caller != admin);
        bytes32 role = registry.ATTESTATION_ADMIN_ROLE();
        bytes memory denied =
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role);
        vm.startPrank(caller);
        vm.expectRevert(denied);
        registry.setQuotingKey(key);
        vm.expectRevert(denied);
        registry.setRegistrationTtl(duration);
        vm.expectRevert(denied);
        registry.setQuoteValidity(duration);
        vm.expectRevert(denied);
        registry.revokeEnclave(key);
        vm.stopPrank();
    }

    function testFuzz_attestation_settings_refuse_zero_and_apply(address key, uint64 ttl, uint64 validity) public {
        vm.assume(key != address(0) && ttl != 0 && validity != 0);
        vm.startPrank(admin);
        vm.expectRevert(IModelRegistry.ModelRegistryZeroQuotingKey.selector);
        registry.setQuotingKey(address(0));
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryInvalidDuration.selector, uint64(0)));
        registry.setRegistrationTtl(0);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryInvalidDuration.selector, uint64(0)));
        registry.setQuoteValidity(0);
        registry.setQuotingKey(key);
        registry.setRegistrationTtl(ttl);
        registry.setQuoteValidity(validity);
        vm.stopPrank();
        vm.assertEq(registry.quotingKey(), key, "key");
        vm.assertEq(registry.registrationTtl(), ttl, "ttl");
        vm.assertEq(registry.quoteValidity(), validity, "validity");
    }

    function testFuzz_revokeEnclave_only_a_registered_one_once(address unknown) public {
        address enclave = vm.addr(ENCLAVE_PK);
        vm.assume(unknown != enclave);
        registerEnclave(ENCLAVE_PK, MEASUREMENT);
        vm.startPrank(admin);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryUnknownEnclave.selector, unknown));
        registry.revokeEnclave(unknown);
        registry.revokeEnclave(enclave);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryEnclaveRevoked.selector, enclave));
        registry.revokeEnclave(enclave);
        vm.stopPrank();
        vm.assertTrue(registry.enclaveRecord(enclave).revoked, "revoked");
        vm.assertFalse(registry.isEnclaveAuthorized(MODEL, enclave), "not authorized");
    }

    // ------------------------------------------------------------------------- registerEnclave

    function testFuzz_registerEnclave_accepts_a_valid_quote_and_expires(uint256 pk, uint32 age) public {
        pk = boundKey(pk);
        uint64 issuedAt = uint64(block.timestamp - bound(age, 0, registry.quoteValidity()));
        Registration memory r = _registration(pk, MEASUREMENT, issuedAt, false);
        _register(r);
        IModelRegistry.EnclaveRecord memory rec = registry.enclaveRecord(r.enclave);
        vm.assertEq(rec.measurement, MEASUREMENT, "measurement");
        vm.assertEq(rec.signer, keccak256("mrsigner"), "signer");
        vm.assertEq(rec.encryptionKey, r.encryptionKey, "encryption key");
        vm.assertEq(rec.isvSvn, 7, "isv svn");
        vm.assertEq(rec.expiresAt, block.timestamp + registry.registrationTtl(), "expiry");
        vm.assertTrue(registry.isNonceUsed(r.nonce), "nonce used");
        vm.assertTrue(registry.isEnclaveAuthorized(MODEL, r.enclave), "authorized");
        vm.warp(rec.expiresAt + 1);
        vm.assertFalse(registry.isEnclaveAuthorized(MODEL, r.enclave), "expired");
    }

    function testFuzz_registerEnclave_refuses_malformed_quotes(uint256 len, address enclave) public {
        len = bound(len, 0, 1024);
        vm.assume(len != registry.QUOTE_LENGTH());
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryMalformedQuote.selector, len));
        registry.registerEnclave(new bytes(len), enclave, bytes32("k"), bytes32("n"), "");
        Registration memory r = _registration(ENCLAVE_PK, MEASUREMENT, uint64(block.timestamp), false);
        vm.expectRevert(IModelRegistry.ModelRegistryZeroEnclave.selector);
        registry.registerEnclave(r.quote, address(0), r.encryptionKey, r.nonce, r.signature);
    }

    /// forge-config: default.fuzz.runs = 64
    /// @dev 64 runs: each deploys a registry (2.6M gas), the rest of the input space is small.
    function testFuzz_registerEnclave_needs_the_pinned_quoting_key(uint256 otherPk, uint256 flip) public {
        otherPk = boundKey(otherPk);
        vm.assume(otherPk != QUOTING_PK);
        Registration memory r = _registration(ENCLAVE_PK, MEASUREMENT, uint64(block.timestamp), false);
        bytes memory forged = quote(otherPk, MEASUREMENT, reportData(r.enclave, r.encryptionKey, r.nonce),
                                    uint64(block.timestamp), false);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryBadQuoteSignature.selector, vm.addr(otherPk), vm.addr(QUOTING_PK)));
        registry.registerEnclave(forged, r.enclave, r.encryptionKey, r.nonce, r.signature);
        // any byte of the signed body changed: the quoting key's signature no longer matches
        bytes memory tampered = r.quote;
        uint256 position = bound(flip, 0, 391);
        tampered[position] = bytes1(uint8(tampered[position]) ^ 0x01);
        bytes memory body = new bytes(392);
        bytes memory quoteSig = new bytes(65);
        for (uint256 i = 0; i < 392; ++i) body[i] = tampered[i];
        for (uint256 i = 0; i < 65; ++i) quoteSig[i] = tampered[392 + i];
        address recovered = _recover(keccak256(abi.encodePacked("splitseal.quote.v1", body)), quoteSig);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryBadQuoteSignature.selector, recovered, vm.addr(QUOTING_PK)));
        registry.registerEnclave(tampered, r.enclave, r.encryptionKey, r.nonce, r.signature);
        // a registry without a pinned key refuses every quote
        ModelRegistry unpinned = new ModelRegistry(admin, address(0));
        vm.expectRevert(IModelRegistry.ModelRegistryNoQuotingKey.selector);
        unpinned.registerEnclave(r.quote, r.enclave, r.encryptionKey, r.nonce, r.signature);
    }

    function testFuzz_registerEnclave_checks_the_quote_age(uint32 late, bool future) public {
        uint64 validity = registry.quoteValidity();
        uint64 skew = registry.QUOTE_CLOCK_SKEW();
        uint64 issuedAt = future
            ? uint64(block.timestamp + skew + 1 + bound(late, 0, 365 days))
            : uint64(block.timestamp - validity - 1 - bound(late, 0, 365 days));
        Registration memory r = _registration(ENCLAVE_PK, MEASUREMENT, issuedAt, false);
        if (future) {
            vm.expectRevert(abi.encodeWithSelector(
                IModelRegistry.ModelRegistryQuoteFromFuture.selector, issuedAt, block.timestamp));
        } else {
            vm.expectRevert(abi.encodeWithSelector(
                IModelRegistry.ModelRegistryQuoteExpired.selector, issuedAt, validity, block.timestamp));
        }
        _register(r);
        // within the clock skew a quote "from the future" is fine
        _register(_registration(ENCLAVE_PK, MEASUREMENT, uint64(block.timestamp + bound(late, 0, skew)), false));
    }

    function testFuzz_registerEnclave_refuses_debug_enclaves_and_foreign_report_data(bytes32 measurement,
                                                                                   bytes32 otherKey) public {
        Registration memory r = _registration(ENCLAVE_PK, measurement, uint64(block.timestamp), true);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryDebugEnclave.selector, measurement));
        _register(r);
        r = _registration(ENCLAVE_PK, measurement, uint64(block.timestamp), false);
        vm.assume(otherKey != r.encryptionKey);
        // the quote binds (enclave, encryption key, chain id, nonce): another key does not match it
        bytes32 expected = reportData(r.enclave, otherKey, r.nonce);
        bytes32 quoted = reportData(r.enclave, r.encryptionKey, r.nonce);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryReportDataMismatch.selector, expected, quoted, bytes32(0)));
        registry.registerEnclave(r.quote, r.enclave, otherKey, r.nonce, r.signature);
    }

    function testFuzz_registerEnclave_needs_the_enclave_key_signature(uint256 otherPk) public {
        otherPk = boundKey(otherPk);
        vm.assume(otherPk != ENCLAVE_PK);
        Registration memory r = _registration(ENCLAVE_PK, MEASUREMENT, uint64(block.timestamp), false);
        bytes memory good = r.signature;
        r.signature = _registrationSignature(otherPk, r, MEASUREMENT);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryBadEnclaveSignature.selector, r.enclave, vm.addr(otherPk)));
        _register(r);
        r.signature = highSTwin(good);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryBadEnclaveSignature.selector, r.enclave, address(0)));
        _register(r);
        r.signature = good;
        _register(r);
    }

    function testFuzz_registerEnclave_nonce_once_revoked_forever_measurement_fixed(bytes32 otherMeasurement)
        public
    {
        vm.assume(otherMeasurement != MEASUREMENT);
        Registration memory r = _registration(ENCLAVE_PK, MEASUREMENT, uint64(block.timestamp), false);
        _register(r);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryNonceReused.selector, r.nonce));
        _register(r);
        // renewal: a fresh quote extends the registration, keeping the first registration time
        uint64 first = registry.enclaveRecord(r.enclave).registeredAt;
        vm.warp(block.timestamp + 1 hours);
        _register(_registration(ENCLAVE_PK, MEASUREMENT, uint64(block.timestamp), false));
        vm.assertEq(registry.enclaveRecord(r.enclave).registeredAt, first, "registeredAt kept");
        vm.assertEq(registry.enclaveRecord(r.enclave).expiresAt, block.timestamp + registry.registrationTtl(), "renewed");
        Registration memory changed = _registration(ENCLAVE_PK, otherMeasurement, uint64(block.timestamp), false);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryMeasurementChanged.selector, r.enclave, MEASUREMENT, otherMeasurement));
        _register(changed);
        vm.prank(admin);
        registry.revokeEnclave(r.enclave);
        Registration memory again = _registration(ENCLAVE_PK, MEASUREMENT, uint64(block.timestamp), false);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryEnclaveRevoked.selector, r.enclave));
        _register(again);
    }

    // ----------------------------------------------------------------------- confirmHeadLoaded

    function testFuzz_confirmHeadLoaded_checks_version_provisioning_authorization(uint32 v, address unprovisioned)
        public
    {
        vm.assume(v == 0 || v > version);
        address enclave = vm.addr(ENCLAVE_PK);
        vm.assume(unprovisioned != enclave);
        registerEnclave(ENCLAVE_PK, MEASUREMENT);
        bytes32 packageHash = bytes32("pkg");
        vm.prank(owner);
        registry.provisionHead(MODEL, version, enclave, packageHash);
        bytes memory sig = _headLoadedSignature(ENCLAVE_PK, version, packageHash, 1);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryUnknownVersion.selector, MODEL, v));
        registry.confirmHeadLoaded(MODEL, v, enclave, 1, sig);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryHeadNotProvisioned.selector, MODEL, version, unprovisioned));
        registry.confirmHeadLoaded(MODEL, version, unprovisioned, 1, sig);
        vm.prank(owner);
        registry.revokeMeasurement(MODEL, MEASUREMENT);
        vm.expectRevert(abi.encodeWithSelector(IModelRegistry.ModelRegistryEnclaveNotAuthorized.selector, MODEL, enclave));
        registry.confirmHeadLoaded(MODEL, version, enclave, 1, sig);
    }

    function testFuzz_confirmHeadLoaded_needs_the_enclave_signature_of_that_package(uint256 otherPk, bytes32 otherPkg,
                                                                                  uint64 stateVersion) public {
        otherPk = boundKey(otherPk);
        vm.assume(otherPk != ENCLAVE_PK && otherPkg != bytes32("pkg"));
        stateVersion = uint64(bound(stateVersion, 1, type(uint64).max));
        address enclave = vm.addr(ENCLAVE_PK);
        registerEnclave(ENCLAVE_PK, MEASUREMENT);
        vm.prank(owner);
        registry.provisionHead(MODEL, version, enclave, bytes32("pkg"));
        bytes memory byOther = _headLoadedSignature(otherPk, version, bytes32("pkg"), stateVersion);
        // signed by the right key, but for a package the owner did not provision
        bytes memory otherPackage = _headLoadedSignature(ENCLAVE_PK, version, otherPkg, stateVersion);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryBadEnclaveSignature.selector, enclave, vm.addr(otherPk)));
        registry.confirmHeadLoaded(MODEL, version, enclave, stateVersion, byOther);
        IModelRegistry.ModelVersion memory mv = registry.modelVersion(MODEL, version);
        address recovered = _recover(typedDigest(registryDomain, keccak256(abi.encode(HEAD_LOADED_TYPEHASH, MODEL,
            version, enclave, mv.headGraphHash, mv.headParamsHash, bytes32("pkg"), stateVersion))), otherPackage);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryBadEnclaveSignature.selector, enclave, recovered));
        registry.confirmHeadLoaded(MODEL, version, enclave, stateVersion, otherPackage);
        registry.confirmHeadLoaded(MODEL, version, enclave, stateVersion,
                                   _headLoadedSignature(ENCLAVE_PK, version, bytes32("pkg"), stateVersion));
        vm.assertTrue(registry.isHeadLoaded(MODEL, version, enclave), "loaded");
        vm.assertTrue(registry.isEnclaveServing(MODEL, version, enclave), "serving");
        vm.assertEq(registry.stateVersion(enclave), stateVersion, "state version");
    }

    function testFuzz_confirmHeadLoaded_state_version_only_grows(uint64 first, uint64 next) public {
        first = uint64(bound(first, 1, type(uint64).max));
        next = uint64(bound(next, 0, first));
        address enclave = vm.addr(ENCLAVE_PK);
        registerEnclave(ENCLAVE_PK, MEASUREMENT);
        vm.prank(owner);
        registry.provisionHead(MODEL, version, enclave, bytes32("pkg"));
        registry.confirmHeadLoaded(MODEL, version, enclave, first,
                                   _headLoadedSignature(ENCLAVE_PK, version, bytes32("pkg"), first));
        bytes memory stale = _headLoadedSignature(ENCLAVE_PK, version, bytes32("pkg"), next);
        vm.expectRevert(abi.encodeWithSelector(
            IModelRegistry.ModelRegistryStaleStateVersion.selector, enclave, first, next));
        registry.confirmHeadLoaded(MODEL, version, enclave, next, stale);
        // provisioning again (a new package) resets the head to not loaded until confirmed
        vm.prank(owner);
        registry.provisionHead(MODEL, version, enclave, bytes32("pkg2"));
        vm.assertFalse(registry.isHeadLoaded(MODEL, version, enclave), "re-provisioned: not loaded");
        vm.assertFalse(registry.isEnclaveServing(MODEL, version, enclave), "re-provisioned: not serving");
    }
}
