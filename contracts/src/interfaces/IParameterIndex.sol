// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title IParameterIndex (the "fourth smart contract")
/// @notice Per model version: the hash of the encrypted parameter index table, the Merkle root
///         of its entries and their count, published once by the model's owner; and each
///         enclave's signed confirmation that it decrypted the index and its root matched.
/// @dev The confirmation is the EIP-712 `IndexVerified(modelId, modelVersion, enclave,
///      encryptedIndexHash, merkleRoot, entryCount)` built from the published values, signed by
///      an enclave authorized for the model in the ModelRegistry.
interface IParameterIndex {
    // ============================================================================================
    //                                          TYPES
    // ============================================================================================

    /// @notice A published index.
    /// @param encryptedIndexHash keccak256 of the encrypted index ciphertext.
    /// @param merkleRoot Merkle root of the index entries.
    /// @param entryCount Number of entries.
    /// @param publishedAt Block timestamp of publication (0: not published).
    struct IndexRecord {
        bytes32 encryptedIndexHash;
        bytes32 merkleRoot;
        uint32 entryCount;
        uint64 publishedAt;
    }

    // ============================================================================================
    //                                          ERRORS
    // ============================================================================================

    /// @notice The model has no such version in the ModelRegistry.
    /// @param modelId The model.
    /// @param version The version.
    error ParameterIndexUnknownModelVersion(bytes32 modelId, uint32 version);
    /// @notice Only the model's owner may publish its index.
    /// @param modelId The model.
    /// @param caller The caller.
    /// @param owner The model's owner.
    error ParameterIndexNotModelOwner(bytes32 modelId, address caller, address owner);
    /// @notice The index of this model version was already published (once per version).
    /// @param modelId The model.
    /// @param version The version.
    error ParameterIndexAlreadyPublished(bytes32 modelId, uint32 version);
    /// @notice The index is empty or a hash is zero.
    /// @param modelId The model.
    /// @param version The version.
    error ParameterIndexEmptyIndex(bytes32 modelId, uint32 version);
    /// @notice No index was published for this model version.
    /// @param modelId The model.
    /// @param version The version.
    error ParameterIndexNotPublished(bytes32 modelId, uint32 version);
    /// @notice The enclave is not authorized for the model in the ModelRegistry.
    /// @param modelId The model.
    /// @param enclave The enclave.
    error ParameterIndexEnclaveNotAuthorized(bytes32 modelId, address enclave);
    /// @notice The signature does not recover to the enclave.
    /// @param enclave The enclave expected to sign.
    /// @param recovered The address recovered (zero when malformed).
    error ParameterIndexBadSignature(address enclave, address recovered);
    /// @notice This enclave already confirmed this index.
    /// @param modelId The model.
    /// @param version The version.
    /// @param enclave The enclave.
    error ParameterIndexAlreadyVerified(bytes32 modelId, uint32 version, address enclave);

    // ============================================================================================
    //                                          EVENTS
    // ============================================================================================

    /// @notice The owner published the parameter index of a model version.
    /// @param modelId The model.
    /// @param version The version.
    /// @param encryptedIndexHash keccak256 of the encrypted index.
    /// @param merkleRoot Merkle root of the entries.
    /// @param entryCount Number of entries.
    event IndexPublished(
        bytes32 indexed modelId, uint32 indexed version, bytes32 encryptedIndexHash, bytes32 merkleRoot, uint32 entryCount
    );

    /// @notice An enclave confirmed that it decrypted the index and its Merkle root matched.
    /// @param modelId The model.
    /// @param version The version.
    /// @param enclave The enclave.
    /// @param merkleRoot The root it verified.
    event IndexVerified(bytes32 indexed modelId, uint32 indexed version, address indexed enclave, bytes32 merkleRoot);

    // ============================================================================================
    //                                     EXTERNAL FUNCTIONS
    // ============================================================================================

    /// @notice Publish the parameter index of a model version, once.
    /// @dev Model owner (per ModelRegistry) only. Emits {IndexPublished}. Reverts
    ///      {ParameterIndexUnknownModelVersion}, {ParameterIndexNotModelOwner},
    ///      {ParameterIndexAlreadyPublished}, {ParameterIndexEmptyIndex}.
    /// @param modelId The model.
    /// @param version The version.
    /// @param encryptedIndexHash keccak256 of the encrypted index.
    /// @param merkleRoot Merkle root of the entries.
    /// @param entryCount Number of entries (positive).
    function publishIndex(
        bytes32 modelId,
        uint32 version,
        bytes32 encryptedIndexHash,
        bytes32 merkleRoot,
        uint32 entryCount
    ) external;

    /// @notice Record an enclave's signed confirmation of the index. Anyone may submit.
    /// @dev Emits {IndexVerified}. Reverts {ParameterIndexNotPublished},
    ///      {ParameterIndexEnclaveNotAuthorized}, {ParameterIndexBadSignature},
    ///      {ParameterIndexAlreadyVerified}.
    /// @param modelId The model.
    /// @param version The version.
    /// @param enclave The enclave.
    /// @param signature EIP-712 `IndexVerified` signed by the enclave key.
    function confirmIndex(bytes32 modelId, uint32 version, address enclave, bytes calldata signature) external;

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @notice The published index of a model version (all zero when none).
    /// @param modelId The model.
    /// @param version The version.
    function index(bytes32 modelId, uint32 version) external view returns (IndexRecord memory);
    /// @notice Whether `enclave` confirmed the index of a model version.
    /// @param modelId The model.
    /// @param version The version.
    /// @param enclave The enclave.
    function isIndexVerified(bytes32 modelId, uint32 version, address enclave) external view returns (bool);
    /// @notice The ModelRegistry consulted for owners and enclave authorization.
    function modelRegistry() external view returns (address);
}
