// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./utils/Fixture.sol";
import {Test} from "./utils/Test.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {ParameterIndex} from "../src/ParameterIndex.sol";
import {IModelRegistry} from "../src/interfaces/IModelRegistry.sol";
import {IParameterIndex} from "../src/interfaces/IParameterIndex.sol";

/// @notice Drives ModelRegistry and ParameterIndex at random (model versions, measurements,
///         enclave registrations and revocations, head provisioning and head-loaded
///         confirmations, parameter index publication and confirmations, time) with signatures
///         that are right or spoiled one way or another, and keeps ghost books of what should
///         have happened, for {RegistryInvariantTest}.
contract RegistryHandler is Fixture {
    bytes32 internal constant INDEX_VERIFIED_TYPEHASH = keccak256(
        "IndexVerified(bytes32 modelId,uint32 modelVersion,address enclave,bytes32 encryptedIndexHash,bytes32 merkleRoot,uint32 entryCount)"
    );
    uint32 public constant MAX_VERSIONS = 3;
    /// Enclave keys: the first three get registered, the last never is.
    uint256[4] internal pks = [uint256(0xA1), 0xB2, 0xC3, 0xD4];
    bytes32 internal indexDomain;

    struct IndexGhost {
        bytes32 encryptedIndexHash;
        bytes32 merkleRoot;
        uint32 entryCount;
        uint64 publishedAt;
    }

    struct HeadGhost {
        bytes32 packageHash;
        bool loaded;
    }

    mapping(uint32 version => bytes32 fields) public versionFields;
    uint32 public versions;
    mapping(uint32 version => IndexGhost) internal _indexes;
    mapping(uint32 version => mapping(address enclave => bool)) public indexVerified;
    mapping(uint32 version => mapping(address enclave => HeadGhost)) internal _heads;
    mapping(address enclave => uint64) public stateVersionOf;
    mapping(address enclave => bool) public revoked;

    /// Calls that succeeded although they should have been refused, per kind.
    uint256 public illegitimatePublications;
    uint256 public illegitimateIndexConfirmations;
    uint256 public illegitimateHeadConfirmations;
    uint256 public illegitimateRegistrations;
    uint256 public illegitimateVersions;
    /// Successful legitimate calls per kind (so a run that never reaches a state is visible).
    uint256 public publications;
    uint256 public indexConfirmations;
    uint256 public headConfirmations;
    uint256 public provisions;

    constructor() {
        deployStack();
        indexDomain = index.domainSeparator();
        versions = version;
        versionFields[version] = _fieldsOf(registry.modelVersion(MODEL, version));
        for (uint256 i = 0; i < 3; ++i) registerEnclave(pks[i], MEASUREMENT);
    }

    function deployed() external view returns (ModelRegistry, ParameterIndex) {
        return (registry, index);
    }

    function enclaveAt(uint256 i) external view returns (address) {
        return vm.addr(pks[i]);
    }

    function indexOf(uint32 v) external view returns (IndexGhost memory) {
        return _indexes[v];
    }

    function headOf(uint32 v, address enclave) external view returns (HeadGhost memory) {
        return _heads[v][enclave];
    }

    // ------------------------------------------------------------------------------- actions

    /// A new version of MODEL by its owner, or (asStranger) an attempt by somebody else.
    function registerVersion(bytes32 seed, bool asStranger) external {
        if (versions >= MAX_VERSIONS) return;
        bytes32 h = keccak256(abi.encode("version", seed));
        vm.prank(asStranger ? stranger : owner);
        try registry.registerModel(MODEL, h, bytes32(uint256(h) ^ 1), bytes32(uint256(h) ^ 2), bytes32(uint256(h) ^ 3))
            returns (uint32 v)
        {
            if (asStranger) ++illegitimateVersions;
            versions = v;
            versionFields[v] = _fieldsOf(registry.modelVersion(MODEL, v));
        } catch {}
    }

    /// Publishes an index for a version (possibly one that exists no more than in the seed, a
    /// second time, with empty fields, or by a stranger).
    function publish(uint256 versionSeed, bytes32 h, bytes32 root, uint32 count, bool asStranger) external {
        uint32 v = _version(versionSeed);
        vm.prank(asStranger ? stranger : owner);
        try index.publishIndex(MODEL, v, h, root, count) {
            bool legit = !asStranger && v >= 1 && v <= versions && _indexes[v].publishedAt == 0
                && h != 0 && root != 0 && count != 0;
            if (!legit) ++illegitimatePublications;
            else ++publications;
            if (_indexes[v].publishedAt == 0) _indexes[v] = IndexGhost(h, root, count, uint64(block.timestamp));
        } catch {}
    }

    /// An enclave confirms a version's index, signed by a key from the pool, over the published
    /// fields or (spoil != 0) over a different root or count.
    function confirmIndex(uint256 versionSeed, uint256 enclaveSeed, uint256 signerSeed, uint8 spoil) external {
        uint32 v = _version(versionSeed);
        uint256 pk = pks[enclaveSeed % 4];
        address enclave = vm.addr(pk);
        uint256 signer = signerSeed % 4 == 0 ? pks[signerSeed % 4] : pk; // mostly the right signer
        IndexGhost memory g = _indexes[v];
        uint256 s = spoil % 4;
        bytes32 root = s == 1 ? bytes32(uint256(g.merkleRoot) ^ 1) : g.merkleRoot;
        uint32 count = s == 2 ? g.entryCount + 1 : g.entryCount;
        bytes memory sig = signDigest(signer, typedDigest(indexDomain, keccak256(
            abi.encode(INDEX_VERIFIED_TYPEHASH, MODEL, v, enclave, g.encryptedIndexHash, root, count))));
        if (s == 3) sig = highSTwin(sig);
        bool legit = g.publishedAt != 0 && signer == pk && s == 0 && registry.isEnclaveAuthorized(MODEL, enclave)
            && !indexVerified[v][enclave];
        try index.confirmIndex(MODEL, v, enclave, sig) {
            if (!legit) ++illegitimateIndexConfirmations;
            else ++indexConfirmations;
            indexVerified[v][enclave] = true;
        } catch {}
    }

    /// The owner provisions a head package to an enclave (authorized or not).
    function provision(uint256 versionSeed, uint256 enclaveSeed, bytes32 packageSeed) external {
        uint32 v = _version(versionSeed);
        address enclave = vm.addr(pks[enclaveSeed % 4]);
        bytes32 packageHash = keccak256(abi.encode("package", packageSeed));
        vm.prank(owner);
        try registry.provisionHead(MODEL, v, enclave, packageHash) {
            ++provisions;
            _heads[v][enclave] = HeadGhost(packageHash, false);
        } catch {}
    }

    /// An enclave confirms it loaded its head: signed by a key from the pool, over the
    /// provisioned package or (spoil) another one, with a state version `step` past its last.
    function confirmHead(uint256 versionSeed, uint256 enclaveSeed, uint256 signerSeed, bool spoil, uint8 step)
        external
    {
        uint32 v = _version(versionSeed);
        if (v == 0 || v > versions) return; // the signature needs the version's hashes
        uint256 pk = pks[enclaveSeed % 4];
        address enclave = vm.addr(pk);
        uint256 signer = signerSeed % 4 == 0 ? pks[signerSeed % 4] : pk;
        HeadGhost memory g = _heads[v][enclave];
        bytes32 packageHash = spoil ? keccak256(abi.encode("other", g.packageHash)) : g.packageHash;
        uint64 newStateVersion = stateVersionOf[enclave] + (step % 3); // 0: stale
        IModelRegistry.ModelVersion memory mv = registry.modelVersion(MODEL, v);
        bytes memory sig = signDigest(signer, typedDigest(registryDomain, keccak256(abi.encode(HEAD_LOADED_TYPEHASH,
            MODEL, v, enclave, mv.headGraphHash, mv.headParamsHash, packageHash, newStateVersion))));
        bool legit = g.packageHash != 0 && !spoil && signer == pk && registry.isEnclaveAuthorized(MODEL, enclave)
            && newStateVersion > stateVersionOf[enclave];
        try registry.confirmHeadLoaded(MODEL, v, enclave, newStateVersion, sig) {
            if (!legit) ++illegitimateHeadConfirmations;
            else ++headConfirmations;
            _heads[v][enclave].loaded = true;
            stateVersionOf[enclave] = newStateVersion;
        } catch {}
    }

    /// Renews an enclave's registration with a fresh quote (refused once it is revoked).
    function renew(uint256 enclaveSeed) external {
        uint256 pk = pks[enclaveSeed % 3];
        address enclave = vm.addr(pk);
        bytes32 encKey = keccak256(abi.encode("x25519", pk));
        bytes32 nonce = freshNonce();
        bytes memory q = quote(QUOTING_PK, MEASUREMENT, reportData(enclave, encKey, nonce), uint64(block.timestamp), false);
        bytes memory sig = signDigest(pk, typedDigest(registryDomain, keccak256(
            abi.encode(ENCLAVE_REGISTRATION_TYPEHASH, enclave, encKey, MEASUREMENT, nonce))));
        try registry.registerEnclave(q, enclave, encKey, nonce, sig) {
            if (revoked[enclave]) ++illegitimateRegistrations;
        } catch {}
    }

    function revoke(uint256 enclaveSeed) external {
        address enclave = vm.addr(pks[enclaveSeed % 3]);
        if (revoked[enclave]) return;
        vm.prank(admin);
        registry.revokeEnclave(enclave);
        revoked[enclave] = true;
    }

    function toggleMeasurement() external {
        bool allowed = registry.isMeasurementAllowed(MODEL, MEASUREMENT);
        vm.prank(owner);
        if (allowed) registry.revokeMeasurement(MODEL, MEASUREMENT);
        else registry.allowMeasurement(MODEL, MEASUREMENT);
    }

    /// Time passes: up to two hours a step, so registrations (one day) expire now and then.
    function warp(uint32 dt) external {
        vm.warp(block.timestamp + bound(dt, 0, 2 hours));
    }

    /// Mostly an existing version; one seed in eight names version 0 or one past the latest.
    function _version(uint256 seed) internal view returns (uint32) {
        if (seed % 8 == 0) return (seed >> 3) % 2 == 0 ? 0 : versions + 1;
        return uint32(1 + (seed >> 3) % versions);
    }

    function _fieldsOf(IModelRegistry.ModelVersion memory mv) internal pure returns (bytes32) {
        return keccak256(abi.encode(mv));
    }
}

/// @notice Lifecycle invariants of ModelRegistry and ParameterIndex over random sequences of the
///         {RegistryHandler}'s actions.
contract RegistryInvariantTest is Test {
    RegistryHandler internal handler;
    ModelRegistry internal registry;
    ParameterIndex internal index;
    bytes32 internal constant MODEL = keccak256("model");
    bytes32 internal constant MEASUREMENT = keccak256("measurement");

    function setUp() public {
        handler = new RegistryHandler();
        (registry, index) = handler.deployed();
        targetContract(address(handler));
    }

    /// The handler's legitimate paths succeed, so the invariants below are not vacuous: a
    /// version, an index publication and confirmation, a provisioning and a head confirmation;
    /// and its spoiled ones are refused.
    function test_handler_reaches_every_outcome() public {
        handler.registerVersion(bytes32("v2"), false); // version seed 9 below: version 2
        handler.registerVersion(bytes32("v3"), true); // by a stranger: refused
        handler.publish(9, bytes32("h"), bytes32("r"), 5, false);
        handler.publish(9, bytes32("h2"), bytes32("r2"), 6, false); // a second time: refused
        handler.confirmIndex(9, 1, 1, 0); // enclave B, signed by B
        handler.confirmIndex(9, 2, 2, 1); // enclave C, another root: refused
        handler.provision(9, 0, bytes32("p"));
        handler.confirmHead(9, 0, 1, true, 1); // another package: refused
        handler.confirmHead(9, 0, 1, false, 1); // enclave A, signed by A, state version 1
        handler.revoke(1);
        handler.renew(1); // revoked: refused
        vm.assertEq(handler.versions(), 2, "versions");
        vm.assertEq(handler.publications(), 1, "publications");
        vm.assertEq(handler.indexConfirmations(), 1, "index confirmations");
        vm.assertEq(handler.provisions(), 1, "provisions");
        vm.assertEq(handler.headConfirmations(), 1, "head confirmations");
        invariant_model_versions_are_immutable();
        invariant_parameter_index_entries_are_immutable_once_published();
        invariant_index_confirmations_need_the_enclave_signature_of_that_index();
        invariant_head_provisioning_state();
        invariant_revoked_enclaves_stay_revoked();
    }

    /// Versions are numbered 1, 2, ... by the owner alone, and a version's record never changes.
    function invariant_model_versions_are_immutable() public view {
        vm.assertEq(handler.illegitimateVersions(), 0, "a stranger registered a version");
        uint32 n = handler.versions();
        vm.assertEq(registry.latestVersion(MODEL), n, "latest version");
        for (uint32 v = 1; v <= n; ++v) {
            vm.assertEq(keccak256(abi.encode(registry.modelVersion(MODEL, v))), handler.versionFields(v),
                        "a version's record changed");
        }
    }

    /// An index is published once per existing version, by the model owner, non-empty, and its
    /// entries (hash, Merkle root, count, time) never change afterwards.
    function invariant_parameter_index_entries_are_immutable_once_published() public view {
        vm.assertEq(handler.illegitimatePublications(), 0, "an index published that should have been refused");
        for (uint32 v = 0; v <= handler.MAX_VERSIONS() + 1; ++v) { // 0 and MAX + 1 never exist
            IParameterIndex.IndexRecord memory rec = index.index(MODEL, v);
            RegistryHandler.IndexGhost memory g = handler.indexOf(v);
            vm.assertEq(rec.encryptedIndexHash, g.encryptedIndexHash, "index hash changed");
            vm.assertEq(rec.merkleRoot, g.merkleRoot, "Merkle root changed");
            vm.assertEq(rec.entryCount, g.entryCount, "entry count changed");
            vm.assertEq(rec.publishedAt, g.publishedAt, "publication time changed");
        }
    }

    /// An index is verified for an enclave only by that enclave's own signature over exactly the
    /// published fields while it was authorized, once, and stays verified.
    function invariant_index_confirmations_need_the_enclave_signature_of_that_index() public view {
        vm.assertEq(handler.illegitimateIndexConfirmations(), 0, "an index confirmed without a legitimate signature");
        for (uint32 v = 0; v <= handler.MAX_VERSIONS(); ++v) {
            for (uint256 i = 0; i < 4; ++i) {
                address enclave = handler.enclaveAt(i);
                vm.assertTrue(index.isIndexVerified(MODEL, v, enclave) == handler.indexVerified(v, enclave),
                              "verification differs from the confirmations made");
            }
        }
    }

    /// Provisioning state per (version, enclave): the package is the last one provisioned; it
    /// is loaded only after the enclave's own confirmation of that package with a growing state
    /// version, until provisioned again; serving = loaded and authorized now.
    function invariant_head_provisioning_state() public view {
        vm.assertEq(handler.illegitimateHeadConfirmations(), 0, "a head confirmed without a legitimate signature");
        for (uint256 i = 0; i < 4; ++i) {
            address enclave = handler.enclaveAt(i);
            vm.assertEq(registry.stateVersion(enclave), handler.stateVersionOf(enclave), "state version");
            for (uint32 v = 0; v <= handler.MAX_VERSIONS(); ++v) {
                RegistryHandler.HeadGhost memory g = handler.headOf(v, enclave);
                vm.assertEq(registry.provisionedPackage(MODEL, v, enclave), g.packageHash, "provisioned package");
                vm.assertTrue(registry.isHeadLoaded(MODEL, v, enclave) == g.loaded, "loaded flag");
                vm.assertTrue(registry.isEnclaveServing(MODEL, v, enclave)
                              == (g.loaded && registry.isEnclaveAuthorized(MODEL, enclave)), "serving");
            }
        }
    }

    /// A revoked enclave stays revoked (no renewal), and nothing authorizes it; an enclave is
    /// authorized only while registered, unexpired and allowed.
    function invariant_revoked_enclaves_stay_revoked() public view {
        vm.assertEq(handler.illegitimateRegistrations(), 0, "a revoked enclave registered again");
        bool allowed = registry.isMeasurementAllowed(MODEL, MEASUREMENT);
        for (uint256 i = 0; i < 4; ++i) {
            address enclave = handler.enclaveAt(i);
            IModelRegistry.EnclaveRecord memory rec = registry.enclaveRecord(enclave);
            vm.assertTrue(rec.revoked == handler.revoked(enclave), "revocation flag");
            bool authorized = rec.registeredAt != 0 && !rec.revoked && rec.expiresAt >= block.timestamp && allowed;
            vm.assertTrue(registry.isEnclaveAuthorized(MODEL, enclave) == authorized, "authorization");
        }
    }
}
