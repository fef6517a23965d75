// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./Test.sol";
import {BackboneExecution} from "../../src/BackboneExecution.sol";
import {EnclaveTransfer} from "../../src/EnclaveTransfer.sol";
import {FeatureShareRegistry} from "../../src/FeatureShareRegistry.sol";
import {ModelRegistry} from "../../src/ModelRegistry.sol";
import {ParameterIndex} from "../../src/ParameterIndex.sol";
import {IBackboneExecution} from "../../src/interfaces/IBackboneExecution.sol";
import {IModelRegistry} from "../../src/interfaces/IModelRegistry.sol";
import {RequestBinding} from "../../src/lib/RequestBinding.sol";

/// @notice The deployed stack (as `splitseal deploy` links it) and builders for what the
///         Python side produces: quotes from the pinned quoting key, enclave signatures of the
///         EIP-712 structs (docs/PROTOCOL.md), requests and signed results.
abstract contract Fixture is Test {
    bytes32 internal constant ENCLAVE_REGISTRATION_TYPEHASH =
        keccak256("EnclaveRegistration(address enclave,bytes32 encryptionKey,bytes32 measurement,bytes32 nonce)");
    bytes32 internal constant HEAD_LOADED_TYPEHASH = keccak256(
        "HeadLoaded(bytes32 modelId,uint32 modelVersion,address enclave,bytes32 headGraphHash,bytes32 headParamsHash,bytes32 packageHash,uint64 stateVersion)"
    );
    bytes32 internal constant INFERENCE_RESULT_TYPEHASH = keccak256(
        "InferenceResult(uint256 requestId,bytes32 modelId,uint32 modelVersion,bytes32 inputCommitment,address requester,bytes32 requesterKey,bytes32 transferHash,bytes32 resultCommitment,uint64 sequence,bool hasLabel,bytes32 label)"
    );
    bytes32 internal constant DECISION_TYPEHASH = keccak256(
        "Decision(uint256 setId,bytes32 sessionId,uint8 kind,bytes32 subjectId,bool accepted,bytes32 probeCommitment)"
    );
    bytes32 internal constant SHARE_COMMITMENT_TYPEHASH =
        keccak256("ShareCommitment(uint256 setId,bytes32 subjectId,uint32 enrolment,bytes32 commitment)");

    uint256 internal constant QUOTING_PK = 0xA11CE;
    bytes32 internal constant MODEL = keccak256("model");
    bytes32 internal constant MEASUREMENT = keccak256("measurement");

    address internal admin = address(0xAD);
    address internal owner = address(0x0E);
    address internal node = address(0xB0DE);
    address internal requester = address(0xCAFE);
    address internal stranger = address(0x5157);

    ModelRegistry internal registry;
    ParameterIndex internal index;
    BackboneExecution internal backbone;
    EnclaveTransfer internal transfer;
    FeatureShareRegistry internal features;
    uint32 internal version;
    /// @dev Domain separators, read once: a view call inside the arguments of a call under
    ///      `vm.expectRevert` would be the call the expectation applies to.
    bytes32 internal registryDomain;
    bytes32 internal transferDomain;
    bytes32 internal featuresDomain;

    uint256 private _nonceCounter;
    uint64 private _sequence;

    function deployStack() internal {
        vm.warp(1_700_000_000);
        registry = new ModelRegistry(admin, vm.addr(QUOTING_PK));
        index = new ParameterIndex(registry);
        backbone = new BackboneExecution(admin, registry);
        transfer = EnclaveTransfer(backbone.enclaveTransfer());
        features = new FeatureShareRegistry(admin);
        registryDomain = registry.domainSeparator();
        transferDomain = transfer.domainSeparator();
        featuresDomain = features.domainSeparator();
        vm.startPrank(admin);
        backbone.grantRole(RequestBinding.NODE_ROLE, node);
        vm.stopPrank();
        vm.prank(owner);
        version = registry.registerModel(MODEL, keccak256("b"), keccak256("g"), keccak256("p"), keccak256("r"));
        vm.prank(owner);
        registry.allowMeasurement(MODEL, MEASUREMENT);
    }

    // ----------------------------------------------------------------------------- attestation

    /// @dev A 457-byte quote: report body (attributes, measurement, signer, isv svn, report data)
    ///      || issued_at (8 bytes, big-endian) || the quoting key's signature.
    function quote(uint256 quotingPk, bytes32 measurement, bytes32 data, uint64 issuedAt, bool debug)
        internal
        pure
        returns (bytes memory q)
    {
        bytes memory body = new bytes(384);
        body[48] = debug ? bytes1(0x02) : bytes1(0x00);
        for (uint256 i = 0; i < 32; ++i) {
            body[64 + i] = measurement[i];
            body[128 + i] = bytes32(keccak256("mrsigner"))[i];
            body[320 + i] = data[i];
        }
        body[258] = 0x07;
        bytes memory signed = abi.encodePacked(body, issuedAt);
        bytes32 digest = keccak256(abi.encodePacked("splitseal.quote.v1", signed));
        q = abi.encodePacked(signed, signDigest(quotingPk, digest));
    }

    function reportData(address enclave, bytes32 encryptionKey, bytes32 nonce) internal view returns (bytes32) {
        return keccak256(abi.encodePacked(enclave, encryptionKey, block.chainid, nonce));
    }

    function freshNonce() internal returns (bytes32) {
        return keccak256(abi.encode("nonce", ++_nonceCounter));
    }

    /// @dev Registers (or renews) the enclave key `pk` with `measurement`, through a valid quote.
    function registerEnclave(uint256 pk, bytes32 measurement) internal {
        address enclave = vm.addr(pk);
        bytes32 encKey = keccak256(abi.encode("x25519", pk));
        bytes32 nonce = freshNonce();
        bytes memory q = quote(QUOTING_PK, measurement, reportData(enclave, encKey, nonce), uint64(block.timestamp), false);
        bytes memory sig = signDigest(pk, typedDigest(registryDomain, keccak256(
            abi.encode(ENCLAVE_REGISTRATION_TYPEHASH, enclave, encKey, measurement, nonce))));
        registry.registerEnclave(q, enclave, encKey, nonce, sig);
    }

    /// @dev Registers `pk`, provisions the head to it and confirms it loaded: it now serves MODEL.
    function serve(uint256 pk) internal returns (address enclave) {
        enclave = vm.addr(pk);
        registerEnclave(pk, MEASUREMENT);
        bytes32 packageHash = keccak256(abi.encode("package", pk));
        vm.prank(owner);
        registry.provisionHead(MODEL, version, enclave, packageHash);
        uint64 stateVersion = registry.stateVersion(enclave) + 1;
        IModelRegistry.ModelVersion memory mv = registry.modelVersion(MODEL, version);
        bytes memory sig = signDigest(pk, typedDigest(registryDomain, keccak256(abi.encode(
            HEAD_LOADED_TYPEHASH, MODEL, version, enclave, mv.headGraphHash, mv.headParamsHash, packageHash, stateVersion))));
        registry.confirmHeadLoaded(MODEL, version, enclave, stateVersion, sig);
    }

    // ----------------------------------------------------------------------------- requests

    function requestAs(address who, bytes32 inputCommitment, bytes32 requesterKey, uint32 ttl)
        internal
        returns (uint256 id)
    {
        vm.prank(who);
        id = backbone.requestInference(MODEL, version, inputCommitment, hex"c0ffee", "", requesterKey, ttl);
    }

    function claimFor(uint256 id, address who, bytes32 inputCommitment, bytes32 requesterKey, address enclave,
                      bytes32 transferHash) internal returns (RequestBinding.ResultClaim memory c) {
        c = RequestBinding.ResultClaim({
            requestId: id,
            modelId: MODEL,
            inputCommitment: inputCommitment,
            requester: who,
            requesterKey: requesterKey,
            enclave: enclave,
            transferHash: transferHash,
            sequence: ++_sequence,
            consumer: address(0),
            callbackGasLimit: 0,
            hasLabel: false,
            label: bytes32(0)
        });
    }

    /// @dev The enclave key `pk`'s signature of the result `claim` + `encryptedResult`.
    function signResult(uint256 pk, RequestBinding.ResultClaim memory c, bytes memory encryptedResult)
        internal
        view
        returns (bytes memory)
    {
        bytes32 structHash = keccak256(abi.encode(
            INFERENCE_RESULT_TYPEHASH, c.requestId, c.modelId, version, c.inputCommitment, c.requester,
            c.requesterKey, c.transferHash, keccak256(encryptedResult), c.sequence, c.hasLabel, c.label));
        return signDigest(pk, typedDigest(transferDomain, structHash));
    }

    function status(uint256 id) internal view returns (IBackboneExecution.Status) {
        return backbone.status(id);
    }
}
