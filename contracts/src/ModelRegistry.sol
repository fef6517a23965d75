// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {Roles} from "./lib/Roles.sol";
import {Signatures, SplitsealEIP712} from "./lib/Signatures.sol";

/// @title ModelRegistry (the "third smart contract")
/// @notice See {IModelRegistry}. Models, allowed measurements, the pinned quoting key, enclave
///         registrations from quotes, head provisioning and head-loaded confirmations.
contract ModelRegistry is IModelRegistry, Roles, SplitsealEIP712 {
    // ============================================================================================
    //                                         CONSTANTS
    // ============================================================================================

    /// @notice Role that pins the quoting key, sets durations and revokes enclaves.
    bytes32 public constant ATTESTATION_ADMIN_ROLE = keccak256("splitseal.role.attestation-admin");

    /// @notice Length of a quote: report body 384 || issued_at 8 || signature 65.
    uint256 public constant QUOTE_LENGTH = 457;

    /// @notice Default lifetime of an enclave registration (1 day).
    uint64 public constant DEFAULT_REGISTRATION_TTL = 1 days;

    /// @notice Default maximum quote age (1 hour).
    uint64 public constant DEFAULT_QUOTE_VALIDITY = 1 hours;

    /// @notice How far a quote's issue time may lie ahead of the block timestamp. The quoting
    ///         key stamps quotes with its own clock, and a block's timestamp trails the wall clock
    ///         by up to a block interval (12 s on Ethereum), so a fresh quote can look slightly
    ///         "in the future" to the block that includes it.
    uint64 public constant QUOTE_CLOCK_SKEW = 2 minutes;

    bytes32 private constant _ENCLAVE_REGISTRATION_TYPEHASH =
        keccak256("EnclaveRegistration(address enclave,bytes32 encryptionKey,bytes32 measurement,bytes32 nonce)");
    bytes32 private constant _HEAD_LOADED_TYPEHASH = keccak256(
        "HeadLoaded(bytes32 modelId,uint32 modelVersion,address enclave,bytes32 headGraphHash,bytes32 headParamsHash,bytes32 packageHash,uint64 stateVersion)"
    );

    // Quote layout (docs/PROTOCOL.md): offsets into the 457-byte quote.
    uint256 private constant _ATTRIBUTES_OFFSET = 48;
    uint256 private constant _MR_ENCLAVE_OFFSET = 64;
    uint256 private constant _MR_SIGNER_OFFSET = 128;
    uint256 private constant _ISV_SVN_OFFSET = 258;
    uint256 private constant _REPORT_DATA_OFFSET = 320;
    uint256 private constant _ISSUED_AT_OFFSET = 384;
    uint256 private constant _SIGNATURE_OFFSET = 392;
    uint8 private constant _DEBUG_FLAG = 0x02;

    // ============================================================================================
    //                                          STORAGE
    // ============================================================================================

    /// @dev Owner and latest version of a model, one slot.
    struct ModelInfo {
        address owner;
        uint32 latestVersion;
    }

    /// @dev What was provisioned to an enclave for a model version, and whether it confirmed.
    struct HeadRecord {
        bytes32 packageHash;
        bool loaded;
    }

    address private _quotingKey;
    uint64 private _registrationTtl;
    uint64 private _quoteValidity;

    mapping(bytes32 modelId => ModelInfo) private _models;
    mapping(bytes32 modelId => mapping(uint32 version => ModelVersion)) private _versions;
    mapping(bytes32 modelId => mapping(bytes32 measurement => bool)) private _allowed;
    mapping(address enclave => EnclaveRecord) private _enclaves;
    mapping(bytes32 nonce => bool) private _usedNonces;
    mapping(bytes32 modelId => mapping(uint32 version => mapping(address enclave => HeadRecord))) private _heads;

    // ============================================================================================
    //                                        CONSTRUCTOR
    // ============================================================================================

    /// @param admin Receives `DEFAULT_ADMIN_ROLE` and `ATTESTATION_ADMIN_ROLE`.
    /// @param initialQuotingKey The quoting key to pin, or zero to pin one later with
    ///        {setQuotingKey} (until then every {registerEnclave} reverts).
    constructor(address admin, address initialQuotingKey) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ATTESTATION_ADMIN_ROLE, admin);
        if (initialQuotingKey != address(0)) _setQuotingKey(initialQuotingKey);
        _registrationTtl = DEFAULT_REGISTRATION_TTL;
        _quoteValidity = DEFAULT_QUOTE_VALIDITY;
        emit RegistrationTtlChanged(0, DEFAULT_REGISTRATION_TTL);
        emit QuoteValidityChanged(0, DEFAULT_QUOTE_VALIDITY);
    }

    // ============================================================================================
    //                                  MODEL OWNER FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IModelRegistry
    function registerModel(
        bytes32 modelId,
        bytes32 backboneHash,
        bytes32 headGraphHash,
        bytes32 headParamsHash,
        bytes32 ruleHash
    ) external returns (uint32 version) {
        return _registerModel(modelId, backboneHash, headGraphHash, headParamsHash, ruleHash, false);
    }

    /// @inheritdoc IModelRegistry
    function registerModelWithPolicy(
        bytes32 modelId,
        bytes32 backboneHash,
        bytes32 headGraphHash,
        bytes32 headParamsHash,
        bytes32 ruleHash,
        bool publicLabel
    ) external returns (uint32 version) {
        return _registerModel(modelId, backboneHash, headGraphHash, headParamsHash, ruleHash, publicLabel);
    }

    /// @inheritdoc IModelRegistry
    function allowMeasurement(bytes32 modelId, bytes32 measurement) external {
        _checkModelOwner(modelId);
        if (_allowed[modelId][measurement]) revert ModelRegistryMeasurementAlreadyAllowed(modelId, measurement);
        _allowed[modelId][measurement] = true;
        emit MeasurementAllowed(modelId, measurement);
    }

    /// @inheritdoc IModelRegistry
    function revokeMeasurement(bytes32 modelId, bytes32 measurement) external {
        _checkModelOwner(modelId);
        if (!_allowed[modelId][measurement]) revert ModelRegistryMeasurementNotAllowed(modelId, measurement);
        _allowed[modelId][measurement] = false;
        emit MeasurementRevoked(modelId, measurement);
    }

    /// @inheritdoc IModelRegistry
    function provisionHead(bytes32 modelId, uint32 version, address enclave, bytes32 packageHash) external {
        _checkModelOwner(modelId);
        _checkVersion(modelId, version);
        if (packageHash == bytes32(0)) revert ModelRegistryZeroHash(modelId);
        if (!_isAuthorized(modelId, enclave)) revert ModelRegistryEnclaveNotAuthorized(modelId, enclave);
        _heads[modelId][version][enclave] = HeadRecord({packageHash: packageHash, loaded: false});
        emit HeadProvisioned(modelId, version, enclave, packageHash);
    }

    // ============================================================================================
    //                                 ATTESTATION ADMIN FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IModelRegistry
    function setQuotingKey(address newKey) external onlyRole(ATTESTATION_ADMIN_ROLE) {
        _setQuotingKey(newKey);
    }

    /// @inheritdoc IModelRegistry
    function setRegistrationTtl(uint64 ttl) external onlyRole(ATTESTATION_ADMIN_ROLE) {
        if (ttl == 0) revert ModelRegistryInvalidDuration(ttl);
        uint64 previous = _registrationTtl;
        _registrationTtl = ttl;
        emit RegistrationTtlChanged(previous, ttl);
    }

    /// @inheritdoc IModelRegistry
    function setQuoteValidity(uint64 validity) external onlyRole(ATTESTATION_ADMIN_ROLE) {
        if (validity == 0) revert ModelRegistryInvalidDuration(validity);
        uint64 previous = _quoteValidity;
        _quoteValidity = validity;
        emit QuoteValidityChanged(previous, validity);
    }

    /// @inheritdoc IModelRegistry
    function revokeEnclave(address enclave) external onlyRole(ATTESTATION_ADMIN_ROLE) {
        EnclaveRecord storage record = _enclaves[enclave];
        if (record.registeredAt == 0) revert ModelRegistryUnknownEnclave(enclave);
        if (record.revoked) revert ModelRegistryEnclaveRevoked(enclave);
        record.revoked = true;
        emit EnclaveRevoked(enclave, msg.sender);
    }

    // ============================================================================================
    //                                    ENCLAVE FUNCTIONS
    // ============================================================================================

    /// @inheritdoc IModelRegistry
    function registerEnclave(
        bytes calldata quote,
        address enclave,
        bytes32 encryptionKey,
        bytes32 nonce,
        bytes calldata enclaveSignature
    ) external {
        if (quote.length != QUOTE_LENGTH) revert ModelRegistryMalformedQuote(quote.length);
        if (enclave == address(0)) revert ModelRegistryZeroEnclave();
        _checkQuoteSignatureAndAge(quote);

        bytes32 measurement = bytes32(quote[_MR_ENCLAVE_OFFSET:_MR_ENCLAVE_OFFSET + 32]);
        if (uint8(quote[_ATTRIBUTES_OFFSET]) & _DEBUG_FLAG != 0) revert ModelRegistryDebugEnclave(measurement);
        _checkReportData(quote, enclave, encryptionKey, nonce);
        if (_usedNonces[nonce]) revert ModelRegistryNonceReused(nonce);

        bytes32 structHash =
            keccak256(abi.encode(_ENCLAVE_REGISTRATION_TYPEHASH, enclave, encryptionKey, measurement, nonce));
        address recovered = _typedSigner(structHash, enclaveSignature);
        if (recovered != enclave) revert ModelRegistryBadEnclaveSignature(enclave, recovered);

        _storeRegistration(quote, enclave, encryptionKey, nonce, measurement);
    }

    /// @inheritdoc IModelRegistry
    function confirmHeadLoaded(
        bytes32 modelId,
        uint32 version,
        address enclave,
        uint64 newStateVersion,
        bytes calldata signature
    ) external {
        _checkVersion(modelId, version);
        HeadRecord storage head = _heads[modelId][version][enclave];
        bytes32 packageHash = head.packageHash;
        if (packageHash == bytes32(0)) revert ModelRegistryHeadNotProvisioned(modelId, version, enclave);
        if (!_isAuthorized(modelId, enclave)) revert ModelRegistryEnclaveNotAuthorized(modelId, enclave);

        ModelVersion storage mv = _versions[modelId][version];
        bytes32 structHash = keccak256(
            abi.encode(
                _HEAD_LOADED_TYPEHASH,
                modelId,
                version,
                enclave,
                mv.headGraphHash,
                mv.headParamsHash,
                packageHash,
                newStateVersion
            )
        );
        address recovered = _typedSigner(structHash, signature);
        if (recovered != enclave) revert ModelRegistryBadEnclaveSignature(enclave, recovered);

        EnclaveRecord storage record = _enclaves[enclave];
        if (newStateVersion <= record.stateVersion) {
            revert ModelRegistryStaleStateVersion(enclave, record.stateVersion, newStateVersion);
        }
        record.stateVersion = newStateVersion;
        head.loaded = true;
        emit HeadLoaded(modelId, version, enclave, packageHash, newStateVersion);
    }

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @inheritdoc IModelRegistry
    function quotingKey() external view returns (address) {
        return _quotingKey;
    }

    /// @inheritdoc IModelRegistry
    function registrationTtl() external view returns (uint64) {
        return _registrationTtl;
    }

    /// @inheritdoc IModelRegistry
    function quoteValidity() external view returns (uint64) {
        return _quoteValidity;
    }

    /// @inheritdoc IModelRegistry
    function modelOwner(bytes32 modelId) external view returns (address) {
        return _models[modelId].owner;
    }

    /// @inheritdoc IModelRegistry
    function latestVersion(bytes32 modelId) external view returns (uint32) {
        return _models[modelId].latestVersion;
    }

    /// @inheritdoc IModelRegistry
    function versionExists(bytes32 modelId, uint32 version) external view returns (bool) {
        return version != 0 && version <= _models[modelId].latestVersion;
    }

    /// @inheritdoc IModelRegistry
    function modelVersion(bytes32 modelId, uint32 version) external view returns (ModelVersion memory) {
        _checkVersion(modelId, version);
        return _versions[modelId][version];
    }

    /// @inheritdoc IModelRegistry
    function allowsPublicLabel(bytes32 modelId, uint32 version) external view returns (bool) {
        return _versions[modelId][version].publicLabel;
    }

    /// @inheritdoc IModelRegistry
    function isMeasurementAllowed(bytes32 modelId, bytes32 measurement) external view returns (bool) {
        return _allowed[modelId][measurement];
    }

    /// @inheritdoc IModelRegistry
    function enclaveRecord(address enclave) external view returns (EnclaveRecord memory) {
        return _enclaves[enclave];
    }

    /// @inheritdoc IModelRegistry
    function stateVersion(address enclave) external view returns (uint64) {
        return _enclaves[enclave].stateVersion;
    }

    /// @inheritdoc IModelRegistry
    function isNonceUsed(bytes32 nonce) external view returns (bool) {
        return _usedNonces[nonce];
    }

    /// @inheritdoc IModelRegistry
    function isEnclaveAuthorized(bytes32 modelId, address enclave) external view returns (bool) {
        return _isAuthorized(modelId, enclave);
    }

    /// @inheritdoc IModelRegistry
    function provisionedPackage(bytes32 modelId, uint32 version, address enclave) external view returns (bytes32) {
        return _heads[modelId][version][enclave].packageHash;
    }

    /// @inheritdoc IModelRegistry
    function isHeadLoaded(bytes32 modelId, uint32 version, address enclave) external view returns (bool) {
        return _heads[modelId][version][enclave].loaded;
    }

    /// @inheritdoc IModelRegistry
    function isEnclaveServing(bytes32 modelId, uint32 version, address enclave) external view returns (bool) {
        return _heads[modelId][version][enclave].loaded && _isAuthorized(modelId, enclave);
    }

    // ============================================================================================
    //                                     INTERNAL FUNCTIONS
    // ============================================================================================

    /// @dev The checks and effects of {registerModel} and {registerModelWithPolicy}.
    function _registerModel(
        bytes32 modelId,
        bytes32 backboneHash,
        bytes32 headGraphHash,
        bytes32 headParamsHash,
        bytes32 ruleHash,
        bool publicLabel
    ) private returns (uint32 version) {
        if (modelId == bytes32(0)) revert ModelRegistryZeroModelId();
        if (backboneHash == 0 || headGraphHash == 0 || headParamsHash == 0 || ruleHash == 0) {
            revert ModelRegistryZeroHash(modelId);
        }
        ModelInfo storage info = _models[modelId];
        if (info.owner == address(0)) {
            info.owner = msg.sender;
        } else if (info.owner != msg.sender) {
            revert ModelRegistryNotModelOwner(modelId, msg.sender, info.owner);
        }
        version = info.latestVersion + 1;
        info.latestVersion = version;
        _versions[modelId][version] = ModelVersion({
            backboneHash: backboneHash,
            headGraphHash: headGraphHash,
            headParamsHash: headParamsHash,
            ruleHash: ruleHash,
            registeredAt: uint64(block.timestamp),
            publicLabel: publicLabel
        });
        emit ModelRegistered(modelId, version, msg.sender, backboneHash, headGraphHash, headParamsHash, ruleHash);
        if (publicLabel) emit PublicLabelAllowed(modelId, version);
    }

    /// @dev Reverts unless the model exists and the caller owns it.
    function _checkModelOwner(bytes32 modelId) private view {
        address owner = _models[modelId].owner;
        if (owner == address(0)) revert ModelRegistryUnknownModel(modelId);
        if (owner != msg.sender) revert ModelRegistryNotModelOwner(modelId, msg.sender, owner);
    }

    /// @dev Reverts unless `modelId` has version `version`.
    function _checkVersion(bytes32 modelId, uint32 version) private view {
        if (version == 0 || version > _models[modelId].latestVersion) {
            revert ModelRegistryUnknownVersion(modelId, version);
        }
    }

    /// @dev Registered, not revoked, not expired, measurement allowed for the model.
    function _isAuthorized(bytes32 modelId, address enclave) private view returns (bool) {
        EnclaveRecord storage record = _enclaves[enclave];
        return record.expiresAt >= block.timestamp && !record.revoked && _allowed[modelId][record.measurement];
    }

    /// @dev Checks the quoting key's signature over keccak256("splitseal.quote.v1" || body ||
    ///      issued_at) and the quote's age.
    function _checkQuoteSignatureAndAge(bytes calldata quote) private view {
        bytes32 digest = keccak256(bytes.concat("splitseal.quote.v1", quote[0:_SIGNATURE_OFFSET]));
        address key = _quotingKey;
        if (key == address(0)) revert ModelRegistryNoQuotingKey();
        address recovered = Signatures.signerOf(digest, quote[_SIGNATURE_OFFSET:QUOTE_LENGTH]);
        if (recovered != key) revert ModelRegistryBadQuoteSignature(recovered, key);
        uint64 issuedAt = uint64(bytes8(quote[_ISSUED_AT_OFFSET:_SIGNATURE_OFFSET]));
        if (issuedAt > block.timestamp + QUOTE_CLOCK_SKEW) revert ModelRegistryQuoteFromFuture(issuedAt, block.timestamp);
        uint64 validity = _quoteValidity;
        if (block.timestamp > issuedAt && block.timestamp - issuedAt > validity) {
            revert ModelRegistryQuoteExpired(issuedAt, validity, block.timestamp);
        }
    }

    /// @dev report_data must be keccak256(enclave, encryptionKey, chainid, nonce) || 32 zero bytes.
    function _checkReportData(bytes calldata quote, address enclave, bytes32 encryptionKey, bytes32 nonce)
        private
        view
    {
        bytes32 expected = keccak256(abi.encodePacked(enclave, encryptionKey, block.chainid, nonce));
        bytes32 low = bytes32(quote[_REPORT_DATA_OFFSET:_REPORT_DATA_OFFSET + 32]);
        bytes32 high = bytes32(quote[_REPORT_DATA_OFFSET + 32:_REPORT_DATA_OFFSET + 64]);
        if (low != expected || high != bytes32(0)) revert ModelRegistryReportDataMismatch(expected, low, high);
    }

    /// @dev Stores a checked registration (or renewal) and emits {EnclaveRegistered}.
    function _storeRegistration(
        bytes calldata quote,
        address enclave,
        bytes32 encryptionKey,
        bytes32 nonce,
        bytes32 measurement
    ) private {
        EnclaveRecord storage record = _enclaves[enclave];
        if (record.revoked) revert ModelRegistryEnclaveRevoked(enclave);
        bool renewed = record.registeredAt != 0;
        if (renewed && record.measurement != measurement) {
            revert ModelRegistryMeasurementChanged(enclave, record.measurement, measurement);
        }
        _usedNonces[nonce] = true;
        bytes32 signer = bytes32(quote[_MR_SIGNER_OFFSET:_MR_SIGNER_OFFSET + 32]);
        uint16 isvSvn = uint16(uint8(quote[_ISV_SVN_OFFSET])) | (uint16(uint8(quote[_ISV_SVN_OFFSET + 1])) << 8);
        uint64 expiresAt = uint64(block.timestamp) + _registrationTtl;
        record.measurement = measurement;
        record.signer = signer;
        record.encryptionKey = encryptionKey;
        if (!renewed) record.registeredAt = uint64(block.timestamp);
        record.expiresAt = expiresAt;
        record.isvSvn = isvSvn;
        emit EnclaveRegistered(enclave, measurement, signer, isvSvn, encryptionKey, nonce, expiresAt, renewed);
    }

    function _setQuotingKey(address newKey) private {
        if (newKey == address(0)) revert ModelRegistryZeroQuotingKey();
        address previous = _quotingKey;
        _quotingKey = newKey;
        emit QuotingKeyChanged(previous, newKey);
    }
}
