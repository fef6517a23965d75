// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title IModelRegistry (the "third smart contract")
/// @notice Models (owner, hashes of backbone, head graph, head parameters and protection rule,
///         per version), the enclave measurements each model allows, the pinned attestation
///         (quoting) key, enclave registrations from quotes, head provisioning and the enclave's
///         signed confirmation that it loaded exactly the registered head, with a sealed-state
///         version counter that only moves forward.
/// @dev Wire formats (quote layout, EIP-712 structs) are in docs/PROTOCOL.md. An enclave's
///      measurement need not be allowed by any model when it registers: authorization is
///      decided per model at use ({isEnclaveAuthorized}), so one enclave may serve several
///      models and a model owner may allow a measurement after the enclave registered.
interface IModelRegistry {
    // ============================================================================================
    //                                          TYPES
    // ============================================================================================

    /// @notice The hashes registered for one version of a model (keccak256 of the exact files).
    /// @param backboneHash The public backbone model file.
    /// @param headGraphHash The protected head's graph file.
    /// @param headParamsHash The protected head's parameter blob (plaintext, before encryption).
    /// @param ruleHash The protection rule file that produced the split.
    /// @param registeredAt Block timestamp of the registration.
    /// @param publicLabel Whether the owner declared, at registration, that the head's output
    ///        policy is `public_label`: only then may a delivery hand a consumer the plaintext
    ///        label the enclave signed (fixed for the version; packed with `registeredAt`).
    struct ModelVersion {
        bytes32 backboneHash;
        bytes32 headGraphHash;
        bytes32 headParamsHash;
        bytes32 ruleHash;
        uint64 registeredAt;
        bool publicLabel;
    }

    /// @notice What the registry knows of an enclave key.
    /// @param measurement MRENCLAVE-like measurement from the quote.
    /// @param signer MRSIGNER-like signer id from the quote.
    /// @param encryptionKey The enclave's X25519 public key (inputs to it are encrypted to it).
    /// @param registeredAt Block timestamp of the first registration.
    /// @param expiresAt Block timestamp after which the registration is no longer valid.
    /// @param stateVersion The last sealed-state version anchored by the enclave (0: none yet).
    /// @param isvSvn The enclave's security version from the quote.
    /// @param revoked True once revoked by the attestation admin (permanent for this key).
    struct EnclaveRecord {
        bytes32 measurement;
        bytes32 signer;
        bytes32 encryptionKey;
        uint64 registeredAt;
        uint64 expiresAt;
        uint64 stateVersion;
        uint16 isvSvn;
        bool revoked;
    }

    // ============================================================================================
    //                                          ERRORS
    // ============================================================================================

    /// @notice The zero model id is reserved.
    error ModelRegistryZeroModelId();
    /// @notice A hash that must name a file or ciphertext was zero.
    /// @param modelId The model concerned.
    error ModelRegistryZeroHash(bytes32 modelId);
    /// @notice No model is registered under `modelId`.
    /// @param modelId The unknown id.
    error ModelRegistryUnknownModel(bytes32 modelId);
    /// @notice `modelId` has no version `version`.
    /// @param modelId The model.
    /// @param version The unknown version.
    error ModelRegistryUnknownVersion(bytes32 modelId, uint32 version);
    /// @notice Only the model's owner may do this.
    /// @param modelId The model.
    /// @param caller The caller.
    /// @param owner The model's owner.
    error ModelRegistryNotModelOwner(bytes32 modelId, address caller, address owner);
    /// @notice The measurement is already allowed for the model.
    /// @param modelId The model.
    /// @param measurement The measurement.
    error ModelRegistryMeasurementAlreadyAllowed(bytes32 modelId, bytes32 measurement);
    /// @notice The measurement is not allowed for the model.
    /// @param modelId The model.
    /// @param measurement The measurement.
    error ModelRegistryMeasurementNotAllowed(bytes32 modelId, bytes32 measurement);
    /// @notice The quoting key must not be the zero address.
    error ModelRegistryZeroQuotingKey();
    /// @notice A duration (registration TTL or quote validity) must be positive.
    /// @param value The rejected value, seconds.
    error ModelRegistryInvalidDuration(uint64 value);
    /// @notice No quoting key is pinned yet, so no quote can be checked; pin one with
    ///         {setQuotingKey}.
    error ModelRegistryNoQuotingKey();
    /// @notice The quote is not 457 bytes.
    /// @param length The length received.
    error ModelRegistryMalformedQuote(uint256 length);
    /// @notice The enclave address must not be zero.
    error ModelRegistryZeroEnclave();
    /// @notice The quote is not signed by the pinned quoting key.
    /// @param recovered The address the quote's signature recovers to (zero if malformed).
    /// @param quotingKey The pinned quoting key.
    error ModelRegistryBadQuoteSignature(address recovered, address quotingKey);
    /// @notice The quote's issue time lies in the future (beyond the allowed clock skew).
    /// @param issuedAt The quote's issue time.
    /// @param blockTime The current block timestamp.
    error ModelRegistryQuoteFromFuture(uint64 issuedAt, uint256 blockTime);
    /// @notice The quote is older than the quote validity.
    /// @param issuedAt The quote's issue time.
    /// @param validity The quote validity, seconds.
    /// @param blockTime The current block timestamp.
    error ModelRegistryQuoteExpired(uint64 issuedAt, uint64 validity, uint256 blockTime);
    /// @notice The quote reports a debug enclave (attribute flag bit 1), which is never trusted.
    /// @param measurement The debug enclave's measurement.
    error ModelRegistryDebugEnclave(bytes32 measurement);
    /// @notice The report data does not bind (enclave, encryption key, chain id, nonce).
    /// @param expected keccak256(abi.encodePacked(enclave, encryptionKey, chainid, nonce)).
    /// @param reportDataLow The quote's report_data[0:32].
    /// @param reportDataHigh The quote's report_data[32:64] (must be zero).
    error ModelRegistryReportDataMismatch(bytes32 expected, bytes32 reportDataLow, bytes32 reportDataHigh);
    /// @notice The nonce has been used by an earlier registration (a replayed quote).
    /// @param nonce The nonce.
    error ModelRegistryNonceReused(bytes32 nonce);
    /// @notice An EIP-712 signature that the enclave key must have made recovers to another address.
    /// @param enclave The enclave key expected to sign.
    /// @param recovered The address recovered (zero if the signature is malformed).
    error ModelRegistryBadEnclaveSignature(address enclave, address recovered);
    /// @notice The enclave's registration was revoked; a revoked key cannot come back.
    /// @param enclave The enclave.
    error ModelRegistryEnclaveRevoked(address enclave);
    /// @notice No enclave is registered under this address.
    /// @param enclave The address.
    error ModelRegistryUnknownEnclave(address enclave);
    /// @notice A renewal quote carries a measurement other than the registered one.
    /// @param enclave The enclave.
    /// @param registered The registered measurement.
    /// @param quoted The measurement in the new quote.
    error ModelRegistryMeasurementChanged(address enclave, bytes32 registered, bytes32 quoted);
    /// @notice The enclave is not authorized for the model (unregistered, revoked, expired, or
    ///         its measurement is not allowed).
    /// @param modelId The model.
    /// @param enclave The enclave.
    error ModelRegistryEnclaveNotAuthorized(bytes32 modelId, address enclave);
    /// @notice No head package was provisioned for (model, version, enclave).
    /// @param modelId The model.
    /// @param version The model version.
    /// @param enclave The enclave.
    error ModelRegistryHeadNotProvisioned(bytes32 modelId, uint32 version, address enclave);
    /// @notice The sealed-state version must move forward.
    /// @param enclave The enclave.
    /// @param current The anchored version.
    /// @param given The version in the confirmation.
    error ModelRegistryStaleStateVersion(address enclave, uint64 current, uint64 given);

    // ============================================================================================
    //                                          EVENTS
    // ============================================================================================

    /// @notice A model version was registered.
    /// @param modelId The model.
    /// @param version The new version (1 for a new model).
    /// @param owner The model's owner.
    /// @param backboneHash keccak256 of the backbone model file.
    /// @param headGraphHash keccak256 of the head graph file.
    /// @param headParamsHash keccak256 of the head parameter blob.
    /// @param ruleHash keccak256 of the protection rule file.
    event ModelRegistered(
        bytes32 indexed modelId,
        uint32 indexed version,
        address indexed owner,
        bytes32 backboneHash,
        bytes32 headGraphHash,
        bytes32 headParamsHash,
        bytes32 ruleHash
    );

    /// @notice A model version was registered with the `public_label` output policy: deliveries
    ///         of its results may pass the enclave-signed plaintext label to consumers.
    /// @param modelId The model.
    /// @param version The version.
    event PublicLabelAllowed(bytes32 indexed modelId, uint32 indexed version);

    /// @notice The model's owner allowed enclaves of `measurement` to serve the model.
    /// @param modelId The model.
    /// @param measurement The measurement.
    event MeasurementAllowed(bytes32 indexed modelId, bytes32 indexed measurement);

    /// @notice The model's owner withdrew the allowance of `measurement`.
    /// @param modelId The model.
    /// @param measurement The measurement.
    event MeasurementRevoked(bytes32 indexed modelId, bytes32 indexed measurement);

    /// @notice The pinned quoting key changed.
    /// @param previousKey The previous key (zero at deployment).
    /// @param newKey The new key.
    event QuotingKeyChanged(address indexed previousKey, address indexed newKey);

    /// @notice The lifetime of enclave registrations changed (applies to later registrations).
    /// @param previousTtl The previous lifetime, seconds.
    /// @param newTtl The new lifetime, seconds.
    event RegistrationTtlChanged(uint64 previousTtl, uint64 newTtl);

    /// @notice The maximum age of an accepted quote changed.
    /// @param previousValidity The previous validity, seconds.
    /// @param newValidity The new validity, seconds.
    event QuoteValidityChanged(uint64 previousValidity, uint64 newValidity);

    /// @notice An enclave key was registered (or its registration renewed) from a quote.
    /// @param enclave The enclave's signing address.
    /// @param measurement Its measurement.
    /// @param signer Its signer id.
    /// @param isvSvn Its security version.
    /// @param encryptionKey Its X25519 public key.
    /// @param nonce The nonce bound in the quote's report data (now used up).
    /// @param expiresAt When the registration expires.
    /// @param renewed False for a first registration, true for a renewal.
    event EnclaveRegistered(
        address indexed enclave,
        bytes32 indexed measurement,
        bytes32 signer,
        uint16 isvSvn,
        bytes32 encryptionKey,
        bytes32 nonce,
        uint64 expiresAt,
        bool renewed
    );

    /// @notice An enclave's registration was revoked.
    /// @param enclave The enclave.
    /// @param by The attestation admin who revoked it.
    event EnclaveRevoked(address indexed enclave, address indexed by);

    /// @notice The model owner provisioned an encrypted head package to an enclave.
    /// @param modelId The model.
    /// @param version The model version.
    /// @param enclave The enclave.
    /// @param packageHash keccak256 of the head package ciphertext.
    event HeadProvisioned(bytes32 indexed modelId, uint32 version, address indexed enclave, bytes32 packageHash);

    /// @notice The enclave confirmed (by signature) that it loaded exactly the registered head.
    /// @param modelId The model.
    /// @param version The model version.
    /// @param enclave The enclave.
    /// @param packageHash The provisioned package it loaded.
    /// @param stateVersion The sealed-state version now anchored for the enclave.
    event HeadLoaded(
        bytes32 indexed modelId, uint32 version, address indexed enclave, bytes32 packageHash, uint64 stateVersion
    );

    // ============================================================================================
    //                                  MODEL OWNER FUNCTIONS
    // ============================================================================================

    /// @notice Register a new version of `modelId`. The first caller for an id becomes its
    ///         owner; later versions only by the owner.
    /// @dev Emits {ModelRegistered}. Reverts {ModelRegistryZeroModelId}, {ModelRegistryZeroHash},
    ///      {ModelRegistryNotModelOwner}.
    /// @param modelId The model id (non-zero; e.g. keccak256 of a name).
    /// @param backboneHash keccak256 of the backbone model file.
    /// @param headGraphHash keccak256 of the head graph file.
    /// @param headParamsHash keccak256 of the head parameter blob.
    /// @param ruleHash keccak256 of the protection rule file.
    /// @return version The new version, starting at 1.
    function registerModel(
        bytes32 modelId,
        bytes32 backboneHash,
        bytes32 headGraphHash,
        bytes32 headParamsHash,
        bytes32 ruleHash
    ) external returns (uint32 version);

    /// @notice Register a new version of `modelId` like {registerModel}, declaring whether its
    ///         head's output policy publishes a plaintext label (`public_label`, docs/FORMATS.md).
    /// @dev Emits {ModelRegistered}, then {PublicLabelAllowed} when `publicLabel`. Reverts as
    ///      {registerModel}. The flag cannot change later: a consumer relies on it per version.
    /// @param modelId The model id (non-zero; e.g. keccak256 of a name).
    /// @param backboneHash keccak256 of the backbone model file.
    /// @param headGraphHash keccak256 of the head graph file.
    /// @param headParamsHash keccak256 of the head parameter blob.
    /// @param ruleHash keccak256 of the protection rule file.
    /// @param publicLabel Whether deliveries may pass the enclave-signed label to consumers.
    /// @return version The new version, starting at 1.
    function registerModelWithPolicy(
        bytes32 modelId,
        bytes32 backboneHash,
        bytes32 headGraphHash,
        bytes32 headParamsHash,
        bytes32 ruleHash,
        bool publicLabel
    ) external returns (uint32 version);

    /// @notice Allow enclaves of `measurement` to serve `modelId`.
    /// @dev Model owner only. Emits {MeasurementAllowed}. Reverts {ModelRegistryUnknownModel},
    ///      {ModelRegistryNotModelOwner}, {ModelRegistryMeasurementAlreadyAllowed}.
    /// @param modelId The model.
    /// @param measurement The measurement (MRENCLAVE-like).
    function allowMeasurement(bytes32 modelId, bytes32 measurement) external;

    /// @notice Withdraw the allowance of `measurement` for `modelId`; its enclaves stop serving.
    /// @dev Model owner only. Emits {MeasurementRevoked}. Reverts {ModelRegistryUnknownModel},
    ///      {ModelRegistryNotModelOwner}, {ModelRegistryMeasurementNotAllowed}.
    /// @param modelId The model.
    /// @param measurement The measurement.
    function revokeMeasurement(bytes32 modelId, bytes32 measurement) external;

    /// @notice Record that the owner provisioned the encrypted head package of a model version
    ///         to an enclave. Re-provisioning replaces the package and clears "loaded" until the
    ///         enclave confirms again.
    /// @dev Model owner only; the enclave must be authorized for the model. Emits
    ///      {HeadProvisioned}. Reverts {ModelRegistryUnknownModel}, {ModelRegistryUnknownVersion},
    ///      {ModelRegistryNotModelOwner}, {ModelRegistryZeroHash},
    ///      {ModelRegistryEnclaveNotAuthorized}.
    /// @param modelId The model.
    /// @param version The model version.
    /// @param enclave The enclave.
    /// @param packageHash keccak256 of the head package ciphertext.
    function provisionHead(bytes32 modelId, uint32 version, address enclave, bytes32 packageHash) external;

    // ============================================================================================
    //                                 ATTESTATION ADMIN FUNCTIONS
    // ============================================================================================

    /// @notice Pin a new quoting key (the address whose signature makes a quote genuine).
    /// @dev `ATTESTATION_ADMIN_ROLE`. Emits {QuotingKeyChanged}. Reverts {ModelRegistryZeroQuotingKey}.
    /// @param newKey The new quoting key address.
    function setQuotingKey(address newKey) external;

    /// @notice Set the lifetime of enclave registrations (and renewals) made from now on.
    /// @dev `ATTESTATION_ADMIN_ROLE`. Emits {RegistrationTtlChanged}. Reverts {ModelRegistryInvalidDuration}.
    /// @param ttl Seconds, positive.
    function setRegistrationTtl(uint64 ttl) external;

    /// @notice Set the maximum age of a quote accepted by {registerEnclave}.
    /// @dev `ATTESTATION_ADMIN_ROLE`. Emits {QuoteValidityChanged}. Reverts {ModelRegistryInvalidDuration}.
    /// @param validity Seconds, positive.
    function setQuoteValidity(uint64 validity) external;

    /// @notice Revoke an enclave's registration, permanently for this key.
    /// @dev `ATTESTATION_ADMIN_ROLE`. Emits {EnclaveRevoked}. Reverts
    ///      {ModelRegistryUnknownEnclave}, {ModelRegistryEnclaveRevoked}.
    /// @param enclave The enclave.
    function revokeEnclave(address enclave) external;

    // ============================================================================================
    //                                    ENCLAVE FUNCTIONS
    // ============================================================================================

    /// @notice Register (or renew) an enclave key from an attestation quote. Anyone may submit;
    ///         the quote and the enclave's co-signature are the authorization.
    /// @dev Checks, in order: quote length 457; quote signed by the pinned quoting key over
    ///      keccak256("splitseal.quote.v1" || body || issued_at); issued_at at most
    ///      `QUOTE_CLOCK_SKEW` (2 minutes) ahead of the block and not older than the quote
    ///      validity; DEBUG flag off; report_data binds (enclave, encryptionKey, chainid, nonce);
    ///      nonce unused; the enclave key co-signs the
    ///      EIP-712 `EnclaveRegistration`; not revoked; a renewal keeps its measurement.
    ///      Emits {EnclaveRegistered}.
    /// @param quote The 457-byte quote (docs/PROTOCOL.md).
    /// @param enclave The enclave's signing address.
    /// @param encryptionKey The enclave's X25519 public key.
    /// @param nonce A fresh nonce (bound in the report data, used once).
    /// @param enclaveSignature EIP-712 `EnclaveRegistration` signed by the enclave key.
    function registerEnclave(
        bytes calldata quote,
        address enclave,
        bytes32 encryptionKey,
        bytes32 nonce,
        bytes calldata enclaveSignature
    ) external;

    /// @notice Record the enclave's signed confirmation that it decrypted the provisioned head
    ///         package and loaded exactly the registered head graph and parameters, anchoring its
    ///         sealed-state version. Anyone may submit; the signature is the authorization.
    /// @dev The EIP-712 `HeadLoaded` struct is built from the registered hashes and the
    ///      provisioned package hash, so a confirmation of anything else does not recover to the
    ///      enclave. `stateVersion` must exceed the anchored one (which also stops replays).
    ///      Emits {HeadLoaded}. Reverts {ModelRegistryUnknownVersion},
    ///      {ModelRegistryHeadNotProvisioned}, {ModelRegistryEnclaveNotAuthorized},
    ///      {ModelRegistryBadEnclaveSignature}, {ModelRegistryStaleStateVersion}.
    /// @param modelId The model.
    /// @param version The model version.
    /// @param enclave The enclave.
    /// @param newStateVersion The enclave's new sealed-state version.
    /// @param signature EIP-712 `HeadLoaded` signed by the enclave key.
    function confirmHeadLoaded(
        bytes32 modelId,
        uint32 version,
        address enclave,
        uint64 newStateVersion,
        bytes calldata signature
    ) external;

    // ============================================================================================
    //                                          VIEWS
    // ============================================================================================

    /// @notice The pinned quoting key.
    function quotingKey() external view returns (address);
    /// @notice Lifetime of a registration, seconds.
    function registrationTtl() external view returns (uint64);
    /// @notice Maximum quote age, seconds.
    function quoteValidity() external view returns (uint64);
    /// @notice Owner of `modelId` (zero when unknown).
    /// @param modelId The model.
    function modelOwner(bytes32 modelId) external view returns (address);
    /// @notice Latest version of `modelId` (0 when unknown).
    /// @param modelId The model.
    function latestVersion(bytes32 modelId) external view returns (uint32);
    /// @notice Whether `modelId` has version `version`.
    /// @param modelId The model.
    /// @param version The version.
    function versionExists(bytes32 modelId, uint32 version) external view returns (bool);
    /// @notice The hashes of a model version; reverts {ModelRegistryUnknownVersion} when absent.
    /// @param modelId The model.
    /// @param version The version.
    function modelVersion(bytes32 modelId, uint32 version) external view returns (ModelVersion memory);
    /// @notice Whether version `version` of `modelId` was registered with the `public_label`
    ///         output policy (false for an unknown version).
    /// @param modelId The model.
    /// @param version The version.
    function allowsPublicLabel(bytes32 modelId, uint32 version) external view returns (bool);
    /// @notice Whether `measurement` is allowed for `modelId`.
    /// @param modelId The model.
    /// @param measurement The measurement.
    function isMeasurementAllowed(bytes32 modelId, bytes32 measurement) external view returns (bool);
    /// @notice The registration record of `enclave` (all zero when unknown).
    /// @param enclave The enclave.
    function enclaveRecord(address enclave) external view returns (EnclaveRecord memory);
    /// @notice The sealed-state version anchored for `enclave`.
    /// @param enclave The enclave.
    function stateVersion(address enclave) external view returns (uint64);
    /// @notice Whether a registration nonce has been used.
    /// @param nonce The nonce.
    function isNonceUsed(bytes32 nonce) external view returns (bool);
    /// @notice Registered, not revoked, not expired, and its measurement allowed for the model.
    /// @param modelId The model.
    /// @param enclave The enclave.
    function isEnclaveAuthorized(bytes32 modelId, address enclave) external view returns (bool);
    /// @notice The head package hash provisioned to `enclave` for a model version (zero if none).
    /// @param modelId The model.
    /// @param version The version.
    /// @param enclave The enclave.
    function provisionedPackage(bytes32 modelId, uint32 version, address enclave) external view returns (bytes32);
    /// @notice Whether the enclave confirmed loading the provisioned head of a model version.
    /// @param modelId The model.
    /// @param version The version.
    /// @param enclave The enclave.
    function isHeadLoaded(bytes32 modelId, uint32 version, address enclave) external view returns (bool);
    /// @notice {isEnclaveAuthorized} and {isHeadLoaded}: the enclave may sign results for this
    ///         model version.
    /// @param modelId The model.
    /// @param version The version.
    /// @param enclave The enclave.
    function isEnclaveServing(bytes32 modelId, uint32 version, address enclave) external view returns (bool);
}
