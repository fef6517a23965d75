"""ModelRegistry: models, measurements, quoting key, enclave registration from quotes, head
provisioning and head-loaded confirmations, roles. Every event and custom error with its
arguments. Embedded chain; the end-to-end attestation path also on anvil (integration)."""

from __future__ import annotations

import pytest

from enclave import quote as quote_mod
from splitseal.protocol import ATTESTATION_ADMIN_ROLE, DEFAULT_ADMIN_ROLE, eip712
from tests.support.contract_kit import ZERO32, ZERO_ADDRESS, EnclaveKey, Kit, make_kit_fixture, rand32, reverts

kit = make_kit_fixture("chain", "deployment")


@pytest.fixture
def any_kit(any_chain, any_deployment) -> Kit:
    return Kit(any_chain, any_deployment)


def _block_time(k: Kit, receipt) -> int:
    return int(k.chain.get_block(receipt["blockNumber"])["timestamp"])


# --- models ------------------------------------------------------------------------------

def test_register_model_first_caller_owns_versions_count_up(kit: Kit) -> None:
    model_id, hashes = rand32(), [rand32() for _ in range(4)]
    receipt = kit.tx(kit.registry.functions.registerModel(model_id, *hashes), kit.owner)
    ev = kit.one_event(receipt, kit.registry, "ModelRegistered")
    assert (ev["modelId"], ev["version"], ev["owner"]) == (model_id, 1, kit.owner.address)
    assert [ev["backboneHash"], ev["headGraphHash"], ev["headParamsHash"], ev["ruleHash"]] == hashes
    assert kit.call(kit.registry.functions.modelOwner(model_id)) == kit.owner.address
    mv = kit.call(kit.registry.functions.modelVersion(model_id, 1))
    assert list(mv[:4]) == hashes and mv[4] == _block_time(kit, receipt)

    hashes2 = [rand32() for _ in range(4)]
    receipt = kit.tx(kit.registry.functions.registerModel(model_id, *hashes2), kit.owner)
    assert kit.one_event(receipt, kit.registry, "ModelRegistered")["version"] == 2
    assert kit.call(kit.registry.functions.latestVersion(model_id)) == 2
    assert kit.call(kit.registry.functions.versionExists(model_id, 2))
    assert not kit.call(kit.registry.functions.versionExists(model_id, 3))
    assert not kit.call(kit.registry.functions.versionExists(model_id, 0))
    assert list(kit.call(kit.registry.functions.modelVersion(model_id, 1))[:4]) == hashes  # v1 unchanged

    with reverts("ModelRegistryNotModelOwner", modelId=model_id, caller=kit.stranger.address, owner=kit.owner.address):
        kit.tx(kit.registry.functions.registerModel(model_id, *hashes), kit.stranger)
    with reverts("ModelRegistryUnknownVersion", modelId=model_id, version=3):
        kit.call(kit.registry.functions.modelVersion(model_id, 3))


def test_register_model_with_the_public_label_policy_records_it_per_version(kit: Kit) -> None:
    model_id, hashes = rand32(), [rand32() for _ in range(4)]
    receipt = kit.tx(kit.registry.functions.registerModelWithPolicy(model_id, *hashes, True), kit.owner)
    assert kit.one_event(receipt, kit.registry, "ModelRegistered")["version"] == 1
    allowed = kit.one_event(receipt, kit.registry, "PublicLabelAllowed")
    assert (allowed["modelId"], allowed["version"]) == (model_id, 1)
    assert kit.call(kit.registry.functions.allowsPublicLabel(model_id, 1))
    assert kit.call(kit.registry.functions.modelVersion(model_id, 1))[5] is True
    receipt = kit.tx(kit.registry.functions.registerModelWithPolicy(model_id, *hashes, False), kit.owner)
    assert len(receipt["logs"]) == 1, "ModelRegistered only: no PublicLabelAllowed"
    assert not kit.call(kit.registry.functions.allowsPublicLabel(model_id, 2))
    receipt = kit.tx(kit.registry.functions.registerModel(model_id, *hashes), kit.owner)
    assert not kit.call(kit.registry.functions.allowsPublicLabel(model_id, 3))  # the plain entry: never
    assert kit.call(kit.registry.functions.allowsPublicLabel(model_id, 1)), "v1 keeps its policy"
    with reverts("ModelRegistryNotModelOwner", modelId=model_id, caller=kit.stranger.address, owner=kit.owner.address):
        kit.tx(kit.registry.functions.registerModelWithPolicy(model_id, *hashes, True), kit.stranger)
    with reverts("ModelRegistryZeroModelId"):
        kit.tx(kit.registry.functions.registerModelWithPolicy(bytes(32), *hashes, True), kit.owner)


def test_register_model_rejects_zero_id_and_zero_hashes(kit: Kit) -> None:
    with reverts("ModelRegistryZeroModelId"):
        kit.tx(kit.registry.functions.registerModel(ZERO32, rand32(), rand32(), rand32(), rand32()), kit.owner)
    model_id = rand32()
    for i in range(4):
        hashes = [rand32() for _ in range(4)]
        hashes[i] = ZERO32
        with reverts("ModelRegistryZeroHash", modelId=model_id):
            kit.tx(kit.registry.functions.registerModel(model_id, *hashes), kit.owner)


def test_allow_and_revoke_measurement(kit: Kit) -> None:
    model_id, _ = kit.register_model()
    m = rand32()
    receipt = kit.tx(kit.registry.functions.allowMeasurement(model_id, m), kit.owner)
    ev = kit.one_event(receipt, kit.registry, "MeasurementAllowed")
    assert (ev["modelId"], ev["measurement"]) == (model_id, m)
    assert kit.call(kit.registry.functions.isMeasurementAllowed(model_id, m))
    with reverts("ModelRegistryMeasurementAlreadyAllowed", modelId=model_id, measurement=m):
        kit.tx(kit.registry.functions.allowMeasurement(model_id, m), kit.owner)
    with reverts("ModelRegistryNotModelOwner", modelId=model_id, caller=kit.stranger.address, owner=kit.owner.address):
        kit.tx(kit.registry.functions.revokeMeasurement(model_id, m), kit.stranger)

    receipt = kit.tx(kit.registry.functions.revokeMeasurement(model_id, m), kit.owner)
    ev = kit.one_event(receipt, kit.registry, "MeasurementRevoked")
    assert (ev["modelId"], ev["measurement"]) == (model_id, m)
    assert not kit.call(kit.registry.functions.isMeasurementAllowed(model_id, m))
    with reverts("ModelRegistryMeasurementNotAllowed", modelId=model_id, measurement=m):
        kit.tx(kit.registry.functions.revokeMeasurement(model_id, m), kit.owner)
    unknown = rand32()
    with reverts("ModelRegistryUnknownModel", modelId=unknown):
        kit.tx(kit.registry.functions.allowMeasurement(unknown, m), kit.owner)


# --- attestation admin -------------------------------------------------------------------

def test_attestation_admin_settings(kit: Kit) -> None:
    new_key = eip712.address_of(rand32())
    receipt = kit.tx(kit.registry.functions.setQuotingKey(new_key), kit.admin)
    ev = kit.one_event(receipt, kit.registry, "QuotingKeyChanged")
    assert (ev["previousKey"], ev["newKey"]) == (kit.quoting_address, new_key)
    assert kit.call(kit.registry.functions.quotingKey()) == new_key
    with reverts("ModelRegistryZeroQuotingKey"):
        kit.tx(kit.registry.functions.setQuotingKey(ZERO_ADDRESS), kit.admin)

    assert kit.call(kit.registry.functions.registrationTtl()) == 86400
    receipt = kit.tx(kit.registry.functions.setRegistrationTtl(600), kit.admin)
    ev = kit.one_event(receipt, kit.registry, "RegistrationTtlChanged")
    assert (ev["previousTtl"], ev["newTtl"]) == (86400, 600)
    assert kit.call(kit.registry.functions.registrationTtl()) == 600

    assert kit.call(kit.registry.functions.quoteValidity()) == 3600
    receipt = kit.tx(kit.registry.functions.setQuoteValidity(60), kit.admin)
    ev = kit.one_event(receipt, kit.registry, "QuoteValidityChanged")
    assert (ev["previousValidity"], ev["newValidity"]) == (3600, 60)
    for fn in (kit.registry.functions.setRegistrationTtl, kit.registry.functions.setQuoteValidity):
        with reverts("ModelRegistryInvalidDuration", value=0):
            kit.tx(fn(0), kit.admin)


@pytest.mark.parametrize("call", ["setQuotingKey", "setRegistrationTtl", "setQuoteValidity", "revokeEnclave"])
def test_attestation_admin_functions_need_the_role(kit: Kit, call: str) -> None:
    arg = {"setQuotingKey": kit.stranger.address, "setRegistrationTtl": 5, "setQuoteValidity": 5,
           "revokeEnclave": kit.stranger.address}[call]
    with reverts("AccessControlUnauthorizedAccount", account=kit.stranger.address, neededRole=ATTESTATION_ADMIN_ROLE):
        kit.tx(getattr(kit.registry.functions, call)(arg), kit.stranger)


def test_roles_grant_revoke_renounce(kit: Kit) -> None:
    role = ATTESTATION_ADMIN_ROLE
    receipt = kit.tx(kit.registry.functions.grantRole(role, kit.stranger.address), kit.admin)
    ev = kit.one_event(receipt, kit.registry, "RoleGranted")
    assert (ev["role"], ev["account"], ev["sender"]) == (role, kit.stranger.address, kit.admin.address)
    assert kit.call(kit.registry.functions.hasRole(role, kit.stranger.address))
    kit.tx(kit.registry.functions.setQuoteValidity(99), kit.stranger)  # now allowed
    with reverts("AccessControlBadConfirmation"):  # OpenZeppelin's: no arguments
        kit.tx(kit.registry.functions.renounceRole(role, kit.admin.address), kit.stranger)
    receipt = kit.tx(kit.registry.functions.renounceRole(role, kit.stranger.address), kit.stranger)
    ev = kit.one_event(receipt, kit.registry, "RoleRevoked")
    assert (ev["role"], ev["account"], ev["sender"]) == (role, kit.stranger.address, kit.stranger.address)
    kit.tx(kit.registry.functions.grantRole(role, kit.stranger.address), kit.admin)
    receipt = kit.tx(kit.registry.functions.revokeRole(role, kit.stranger.address), kit.admin)
    assert kit.one_event(receipt, kit.registry, "RoleRevoked")["sender"] == kit.admin.address
    assert not kit.call(kit.registry.functions.hasRole(role, kit.stranger.address))
    with reverts("AccessControlUnauthorizedAccount", account=kit.stranger.address, neededRole=DEFAULT_ADMIN_ROLE):
        kit.tx(kit.registry.functions.grantRole(role, kit.stranger.address), kit.stranger)
    with reverts("AccessControlZeroAccount", role=role):
        kit.tx(kit.registry.functions.grantRole(role, ZERO_ADDRESS), kit.admin)


# --- enclave registration ----------------------------------------------------------------

def test_register_enclave_records_and_renews(kit: Kit) -> None:
    e, nonce = EnclaveKey.new(), rand32()
    receipt = kit.register_enclave(e, nonce)
    t = _block_time(kit, receipt)
    ev = kit.one_event(receipt, kit.registry, "EnclaveRegistered")
    assert dict(ev) == {"enclave": e.address, "measurement": e.measurement, "signer": e.signer, "isvSvn": e.isv_svn,
                        "encryptionKey": e.encryption_key, "nonce": nonce, "expiresAt": t + 86400, "renewed": False}
    record = kit.call(kit.registry.functions.enclaveRecord(e.address))
    assert tuple(record) == (e.measurement, e.signer, e.encryption_key, t, t + 86400, 0, e.isv_svn, False)
    assert kit.call(kit.registry.functions.isNonceUsed(nonce))

    kit.chain.increase_time(1000)
    e.encryption_key = rand32()  # a renewal may rotate the encryption key
    receipt = kit.register_enclave(e)
    t2 = _block_time(kit, receipt)
    ev = kit.one_event(receipt, kit.registry, "EnclaveRegistered")
    assert ev["renewed"] is True and ev["expiresAt"] == t2 + 86400
    record = kit.call(kit.registry.functions.enclaveRecord(e.address))
    assert record[2] == e.encryption_key and record[3] == t and record[4] == t2 + 86400


def _register_args(k: Kit, e: EnclaveKey, nonce: bytes, **quote_kw):
    return [k.make_quote(e, nonce, **quote_kw), e.address, e.encryption_key, nonce, k.registration_signature(e, nonce)]


def test_register_enclave_quote_checks(kit: Kit) -> None:
    e, nonce = EnclaveKey.new(), rand32()
    fn = kit.registry.functions.registerEnclave
    now = kit.now()

    args = _register_args(kit, e, nonce)
    args[0] = args[0][:-1]
    with reverts("ModelRegistryMalformedQuote", length=456):
        kit.tx(fn(*args), kit.stranger)

    args = _register_args(kit, e, nonce)
    args[1] = ZERO_ADDRESS
    with reverts("ModelRegistryZeroEnclave"):
        kit.tx(fn(*args), kit.stranger)

    rogue = rand32()
    with reverts("ModelRegistryBadQuoteSignature", recovered=eip712.address_of(rogue), quotingKey=kit.quoting_address):
        kit.tx(fn(*_register_args(kit, e, nonce, quoting_key=rogue)), kit.stranger)

    args = _register_args(kit, e, nonce)
    tampered = bytearray(args[0])
    tampered[64] ^= 0xFF  # measurement changed after signing
    args[0] = bytes(tampered)
    with reverts("ModelRegistryBadQuoteSignature", quotingKey=kit.quoting_address) as r:
        kit.tx(fn(*args), kit.stranger)
    assert r.error.error_args["recovered"] != kit.quoting_address

    args = _register_args(kit, e, nonce)
    args[0] = args[0][:-1] + b"\x00"  # v = 0: malformed signature recovers to nobody
    with reverts("ModelRegistryBadQuoteSignature", recovered=ZERO_ADDRESS, quotingKey=kit.quoting_address):
        kit.tx(fn(*args), kit.stranger)

    skew = kit.call(kit.registry.functions.QUOTE_CLOCK_SKEW())
    assert skew == 120
    with reverts("ModelRegistryQuoteFromFuture", issuedAt=now + 1000):
        kit.tx(fn(*_register_args(kit, e, nonce, issued_at=now + 1000)), kit.stranger)

    with reverts("ModelRegistryQuoteExpired", issuedAt=now - 3700, validity=3600):
        kit.tx(fn(*_register_args(kit, e, nonce, issued_at=now - 3700)), kit.stranger)

    with reverts("ModelRegistryDebugEnclave", measurement=e.measurement):
        kit.tx(fn(*_register_args(kit, e, nonce, debug=True)), kit.stranger)
    assert kit.call(kit.registry.functions.enclaveRecord(e.address))[3] == 0  # nothing registered

    # A quote stamped slightly ahead of the block (the quoting clock vs a trailing block
    # timestamp) is accepted within the skew.
    kit.tx(fn(*_register_args(kit, e, nonce, issued_at=now + 60)), kit.stranger)
    assert kit.call(kit.registry.functions.enclaveRecord(e.address))[0] == e.measurement


def test_register_enclave_report_data_must_bind_keys_chain_and_nonce(kit: Kit) -> None:
    e, nonce = EnclaveKey.new(), rand32()
    fn = kit.registry.functions.registerEnclave
    expected = quote_mod.report_data_for(e.address, e.encryption_key, kit.chain.chain_id, nonce)[:32]

    other_chain = quote_mod.report_data_for(e.address, e.encryption_key, kit.chain.chain_id + 1, nonce)
    with reverts("ModelRegistryReportDataMismatch", expected=expected, reportDataLow=other_chain[:32],
                 reportDataHigh=ZERO32):
        kit.tx(fn(*_register_args(kit, e, nonce, report_data=other_chain)), kit.stranger)

    args = _register_args(kit, e, nonce)
    args[2] = rand32()  # a different encryption key than the quote binds
    with reverts("ModelRegistryReportDataMismatch", reportDataLow=expected):
        kit.tx(fn(*args), kit.stranger)

    high = expected + b"\x01" * 32
    with reverts("ModelRegistryReportDataMismatch", expected=expected, reportDataLow=expected,
                 reportDataHigh=b"\x01" * 32):
        kit.tx(fn(*_register_args(kit, e, nonce, report_data=high)), kit.stranger)


def test_register_enclave_co_signature_and_replay(kit: Kit) -> None:
    e, nonce = EnclaveKey.new(), rand32()
    fn = kit.registry.functions.registerEnclave
    quote = kit.make_quote(e, nonce)

    with reverts("ModelRegistryBadEnclaveSignature", enclave=e.address, recovered=ZERO_ADDRESS):
        kit.tx(fn(quote, e.address, e.encryption_key, nonce, b""), kit.stranger)  # missing co-signature
    forger = rand32()
    forged = kit.registration_signature(e, nonce, signing_key=forger)
    with reverts("ModelRegistryBadEnclaveSignature", enclave=e.address, recovered=eip712.address_of(forger)):
        kit.tx(fn(quote, e.address, e.encryption_key, nonce, forged), kit.stranger)
    other_measurement = kit.registration_signature(e, nonce, measurement=rand32())
    with reverts("ModelRegistryBadEnclaveSignature", enclave=e.address):
        kit.tx(fn(quote, e.address, e.encryption_key, nonce, other_measurement), kit.stranger)

    good = kit.registration_signature(e, nonce)
    kit.tx(fn(quote, e.address, e.encryption_key, nonce, good), kit.stranger)
    with reverts("ModelRegistryNonceReused", nonce=nonce):
        kit.tx(fn(quote, e.address, e.encryption_key, nonce, good), kit.stranger)


def test_renewal_cannot_change_measurement_and_revoked_cannot_return(kit: Kit) -> None:
    e = EnclaveKey.new()
    kit.register_enclave(e)
    nonce = rand32()
    changed = EnclaveKey(e.private_key, e.address, e.encryption_key, rand32())
    with reverts("ModelRegistryMeasurementChanged", enclave=e.address, registered=e.measurement,
                 quoted=changed.measurement):
        kit.tx(kit.registry.functions.registerEnclave(*_register_args(kit, changed, nonce)), kit.stranger)

    receipt = kit.tx(kit.registry.functions.revokeEnclave(e.address), kit.admin)
    ev = kit.one_event(receipt, kit.registry, "EnclaveRevoked")
    assert (ev["enclave"], ev["by"]) == (e.address, kit.admin.address)
    assert kit.call(kit.registry.functions.enclaveRecord(e.address))[7] is True
    with reverts("ModelRegistryEnclaveRevoked", enclave=e.address):
        kit.register_enclave(e)
    with reverts("ModelRegistryEnclaveRevoked", enclave=e.address):
        kit.tx(kit.registry.functions.revokeEnclave(e.address), kit.admin)
    stranger_enclave = eip712.address_of(rand32())
    with reverts("ModelRegistryUnknownEnclave", enclave=stranger_enclave):
        kit.tx(kit.registry.functions.revokeEnclave(stranger_enclave), kit.admin)


def test_registration_needs_a_pinned_quoting_key(kit: Kit) -> None:
    fresh = kit.chain.deploy("ModelRegistry", kit.admin.address, ZERO_ADDRESS, sender=kit.admin)
    assert kit.call(fresh.functions.quotingKey()) == ZERO_ADDRESS
    e, nonce = EnclaveKey.new(), rand32()
    sig = eip712.sign(e.private_key, eip712.enclave_registration_digest(
        kit.chain.chain_id, fresh.address, enclave=e.address, encryption_key=e.encryption_key,
        measurement=e.measurement, nonce=nonce))
    with reverts("ModelRegistryNoQuotingKey"):
        kit.tx(fresh.functions.registerEnclave(kit.make_quote(e, nonce), e.address, e.encryption_key, nonce, sig),
               kit.stranger)


def test_authorization_follows_measurement_expiry_and_revocation(kit: Kit) -> None:
    model_id, _ = kit.register_model()
    e = EnclaveKey.new()
    kit.register_enclave(e)
    authorized = lambda: kit.call(kit.registry.functions.isEnclaveAuthorized(model_id, e.address))  # noqa: E731
    assert not authorized()  # registered, but the model does not allow its measurement (wrong measurement)
    kit.tx(kit.registry.functions.allowMeasurement(model_id, e.measurement), kit.owner)
    assert authorized()
    kit.tx(kit.registry.functions.revokeMeasurement(model_id, e.measurement), kit.owner)
    assert not authorized()
    kit.tx(kit.registry.functions.allowMeasurement(model_id, e.measurement), kit.owner)
    kit.chain.increase_time(86400 + 1)
    assert not authorized()  # expired
    kit.register_enclave(e)  # renewed with a fresh quote
    assert authorized()
    kit.tx(kit.registry.functions.revokeEnclave(e.address), kit.admin)
    assert not authorized()


# --- head provisioning -------------------------------------------------------------------

def _provisioned(kit: Kit):
    model_id, version = kit.register_model()
    e = EnclaveKey.new()
    kit.register_enclave(e)
    kit.tx(kit.registry.functions.allowMeasurement(model_id, e.measurement), kit.owner)
    package = rand32()
    receipt = kit.tx(kit.registry.functions.provisionHead(model_id, version, e.address, package), kit.owner)
    return model_id, version, e, package, receipt


def test_provision_and_confirm_head(kit: Kit) -> None:
    model_id, version, e, package, receipt = _provisioned(kit)
    ev = kit.one_event(receipt, kit.registry, "HeadProvisioned")
    assert dict(ev) == {"modelId": model_id, "version": version, "enclave": e.address, "packageHash": package}
    assert kit.call(kit.registry.functions.provisionedPackage(model_id, version, e.address)) == package
    assert not kit.call(kit.registry.functions.isHeadLoaded(model_id, version, e.address))
    assert not kit.call(kit.registry.functions.isEnclaveServing(model_id, version, e.address))

    sig = kit.head_loaded_signature(e, model_id, version, package, 5)
    receipt = kit.tx(kit.registry.functions.confirmHeadLoaded(model_id, version, e.address, 5, sig), kit.stranger)
    ev = kit.one_event(receipt, kit.registry, "HeadLoaded")
    assert dict(ev) == {"modelId": model_id, "version": version, "enclave": e.address, "packageHash": package,
                        "stateVersion": 5}
    assert kit.call(kit.registry.functions.stateVersion(e.address)) == 5
    assert kit.call(kit.registry.functions.isHeadLoaded(model_id, version, e.address))
    assert kit.call(kit.registry.functions.isEnclaveServing(model_id, version, e.address))

    # The counter only moves forward: a replay and an older version are refused.
    with reverts("ModelRegistryStaleStateVersion", enclave=e.address, current=5, given=5):
        kit.tx(kit.registry.functions.confirmHeadLoaded(model_id, version, e.address, 5, sig), kit.stranger)
    old = kit.head_loaded_signature(e, model_id, version, package, 4)
    with reverts("ModelRegistryStaleStateVersion", enclave=e.address, current=5, given=4):
        kit.tx(kit.registry.functions.confirmHeadLoaded(model_id, version, e.address, 4, old), kit.stranger)
    newer = kit.head_loaded_signature(e, model_id, version, package, 6)
    kit.tx(kit.registry.functions.confirmHeadLoaded(model_id, version, e.address, 6, newer), kit.stranger)
    assert kit.call(kit.registry.functions.stateVersion(e.address)) == 6

    # Re-provisioning replaces the package and clears "loaded" until confirmed again.
    package2 = rand32()
    kit.tx(kit.registry.functions.provisionHead(model_id, version, e.address, package2), kit.owner)
    assert not kit.call(kit.registry.functions.isEnclaveServing(model_id, version, e.address))
    with reverts("ModelRegistryBadEnclaveSignature", enclave=e.address):  # confirmation of the old package
        kit.tx(kit.registry.functions.confirmHeadLoaded(
            model_id, version, e.address, 7, kit.head_loaded_signature(e, model_id, version, package, 7)), kit.stranger)


def test_confirm_head_must_sign_the_registered_hashes(kit: Kit) -> None:
    model_id, version, e, package, _ = _provisioned(kit)
    fn = kit.registry.functions.confirmHeadLoaded
    wrong_graph = kit.head_loaded_signature(e, model_id, version, package, 1, graph_hash=rand32())
    with reverts("ModelRegistryBadEnclaveSignature", enclave=e.address) as r:
        kit.tx(fn(model_id, version, e.address, 1, wrong_graph), kit.stranger)
    assert r.error.error_args["recovered"] not in (e.address, ZERO_ADDRESS)
    wrong_params = kit.head_loaded_signature(e, model_id, version, package, 1, params_hash=rand32())
    with reverts("ModelRegistryBadEnclaveSignature", enclave=e.address):
        kit.tx(fn(model_id, version, e.address, 1, wrong_params), kit.stranger)
    forger = rand32()
    forged = kit.head_loaded_signature(e, model_id, version, package, 1, signing_key=forger)
    with reverts("ModelRegistryBadEnclaveSignature", enclave=e.address, recovered=eip712.address_of(forger)):
        kit.tx(fn(model_id, version, e.address, 1, forged), kit.stranger)
    with reverts("ModelRegistryBadEnclaveSignature", enclave=e.address, recovered=ZERO_ADDRESS):
        kit.tx(fn(model_id, version, e.address, 1, b""), kit.stranger)


def test_provision_and_confirm_preconditions(kit: Kit) -> None:
    model_id, version, e, package, _ = _provisioned(kit)
    unauthorized = EnclaveKey.new()
    kit.register_enclave(unauthorized)  # measurement not allowed for the model
    with reverts("ModelRegistryEnclaveNotAuthorized", modelId=model_id, enclave=unauthorized.address):
        kit.tx(kit.registry.functions.provisionHead(model_id, version, unauthorized.address, package), kit.owner)
    with reverts("ModelRegistryUnknownVersion", modelId=model_id, version=version + 1):
        kit.tx(kit.registry.functions.provisionHead(model_id, version + 1, e.address, package), kit.owner)
    with reverts("ModelRegistryZeroHash", modelId=model_id):
        kit.tx(kit.registry.functions.provisionHead(model_id, version, e.address, ZERO32), kit.owner)
    with reverts("ModelRegistryNotModelOwner", modelId=model_id, caller=kit.stranger.address, owner=kit.owner.address):
        kit.tx(kit.registry.functions.provisionHead(model_id, version, e.address, package), kit.stranger)

    sig = kit.head_loaded_signature(unauthorized, model_id, version, package, 1)
    with reverts("ModelRegistryHeadNotProvisioned", modelId=model_id, version=version, enclave=unauthorized.address):
        kit.tx(kit.registry.functions.confirmHeadLoaded(model_id, version, unauthorized.address, 1, sig), kit.stranger)
    with reverts("ModelRegistryUnknownVersion", modelId=model_id, version=version + 1):
        kit.tx(kit.registry.functions.confirmHeadLoaded(model_id, version + 1, e.address, 1, sig), kit.stranger)
    kit.tx(kit.registry.functions.revokeEnclave(e.address), kit.admin)
    with reverts("ModelRegistryEnclaveNotAuthorized", modelId=model_id, enclave=e.address):
        kit.tx(kit.registry.functions.confirmHeadLoaded(
            model_id, version, e.address, 1, kit.head_loaded_signature(e, model_id, version, package, 1)), kit.stranger)


def test_serving_stops_when_the_enclave_expires(kit: Kit) -> None:
    model_id, version = kit.register_model()
    e = kit.serving_enclave(model_id, version)
    assert kit.call(kit.registry.functions.isEnclaveServing(model_id, version, e.address))
    kit.chain.increase_time(86400 + 1)
    assert not kit.call(kit.registry.functions.isEnclaveServing(model_id, version, e.address))
    assert kit.call(kit.registry.functions.isHeadLoaded(model_id, version, e.address))


def test_attestation_path_on_every_chain(any_kit: Kit) -> None:
    """Quote, co-signature, provisioning, confirmation and replay refusal: embedded and anvil."""
    k = any_kit
    model_id, version = k.register_model()
    e, nonce = EnclaveKey.new(), rand32()
    k.register_enclave(e, nonce)
    with reverts("ModelRegistryNonceReused", nonce=nonce):
        k.register_enclave(e, nonce)
    k.tx(k.registry.functions.allowMeasurement(model_id, e.measurement), k.owner)
    package = rand32()
    k.tx(k.registry.functions.provisionHead(model_id, version, e.address, package), k.owner)
    sig = k.head_loaded_signature(e, model_id, version, package, 1)
    k.tx(k.registry.functions.confirmHeadLoaded(model_id, version, e.address, 1, sig), k.stranger)
    assert k.call(k.registry.functions.isEnclaveServing(model_id, version, e.address))
    with reverts("ModelRegistryStaleStateVersion", enclave=e.address, current=1, given=1):
        k.tx(k.registry.functions.confirmHeadLoaded(model_id, version, e.address, 1, sig), k.stranger)
