// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {IParameterIndex} from "./interfaces/IParameterIndex.sol";
import {SplitsealEIP712} from "./lib/Signatures.sol";

/// @title ParameterIndex (the "fourth smart contract")
/// @notice See {IParameterIndex}: published parameter indexes and enclave confirmations.
contract ParameterIndex is IParameterIndex, SplitsealEIP712 {
    // ============================================================================================
    //                                         CONSTANTS
    // ============================================================================================

    bytes32 private constant _INDEX_VERIFIED_TYPEHASH = keccak256(
        "IndexVerified(bytes32 modelId,uint32 modelVersion,address enclave,bytes32 encryptedIndexHash,bytes32 merkleRoot,uint32 entryCount)"
    );

    // ============================================================================================
    //                                          STORAGE
    // ============================================================================================

    IModelRegistry private immutable _registry;
    mapping(bytes32 modelId => mapping(uint32 version => IndexRecord)) private _indexes;
    mapping(bytes32 modelId => mapping(uint32 version => mapping(address enclave => bool))) private _verified;

    // ============================================================================================
    //                                        CONSTRUCTOR
    // ============================================================================================

    /// @param registry The ModelRegistry.
    constructor(IModelRegistry registry) {
        _registry = registry;
    }

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IParameterIndex
    function publishIndex(
        bytes32 modelId,
        uint32 version,
        bytes32 encryptedIndexHash,
        bytes32 merkleRoot,
        uint32 entryCount
    ) external {
        if (!_registry.versionExists(modelId, version)) revert ParameterIndexUnknownModelVersion(modelId, version);
        address owner = _registry.modelOwner(modelId);
        if (owner != msg.sender) revert ParameterIndexNotModelOwner(modelId, msg.sender, owner);
        IndexRecord storage record = _indexes[modelId][version];
        if (record.publishedAt != 0) revert ParameterIndexAlreadyPublished(modelId, version);
        if (encryptedIndexHash == 0 || merkleRoot == 0 || entryCount == 0) {
            revert ParameterIndexEmptyIndex(modelId, version);
        }
        record.encryptedIndexHash = encryptedIndexHash;
        record.merkleRoot = merkleRoot;
        record.entryCount = entryCount;
        record.publishedAt = uint64(block.timestamp);
        emit IndexPublished(modelId, version, encryptedIndexHash, merkleRoot, entryCount);
    }

    /// @inheritdoc IParameterIndex
    function confirmIndex(bytes32 modelId, uint32 version, address enclave, bytes calldata signature) external {
        IndexRecord storage record = _indexes[modelId][version];
        if (record.publishedAt == 0) revert ParameterIndexNotPublished(modelId, version);
        if (!_registry.isEnclaveAuthorized(modelId, enclave)) revert ParameterIndexEnclaveNotAuthorized(modelId, enclave);
        if (_verified[modelId][version][enclave]) revert ParameterIndexAlreadyVerified(modelId, version, enclave);
        bytes32 structHash = keccak256(
            abi.encode(
                _INDEX_VERIFIED_TYPEHASH,
                modelId,
                version,
                enclave,
                record.encryptedIndexHash,
                record.merkleRoot,
                record.entryCount
            )
        );
        address recovered = _typedSigner(structHash, signature);
        if (recovered != enclave) revert ParameterIndexBadSignature(enclave, recovered);
        _verified[modelId][version][enclave] = true;
        emit IndexVerified(modelId, version, enclave, record.merkleRoot);
    }

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @inheritdoc IParameterIndex
    function index(bytes32 modelId, uint32 version) external view returns (IndexRecord memory) {
        return _indexes[modelId][version];
    }

    /// @inheritdoc IParameterIndex
    function isIndexVerified(bytes32 modelId, uint32 version, address enclave) external view returns (bool) {
        return _verified[modelId][version][enclave];
    }

    /// @inheritdoc IParameterIndex
    function modelRegistry() external view returns (address) {
        return address(_registry);
    }
}
