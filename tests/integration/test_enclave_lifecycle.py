"""Enclave processes against the real ModelRegistry / ParameterIndex: registry rejections,
provisioning refusals, restart with sealed state, rollback refusal, another measurement."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from enclave.platform import SimulatedPlatform
from orchestrator.provision import (
    attest_enclave,
    provision_model,
    register_model_version,
    restore_enclave,
    verify_quote,
)
from splitseal.enclave_client import EnclaveClient, EnclaveRefusedError, EnclaveSealingError, EnclaveUnavailableError
from splitseal.errors import AttestationError, ContractRevertError
from splitseal.protocol import NODE_ROLE, crypto, eip712
from tests.support import enclave_support as es

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(embedded_chain, embedded_deployment, tmp_path_factory):
    """A platform, a split, and an enclave process (not yet registered) sharing the platform."""
    base = Path(tmp_path_factory.mktemp("life"))
    split_dir = base / "split"
    summary = es.write_split(split_dir)
    platform_dir = base / "platform"
    quoting = SimulatedPlatform(platform_dir).quoting_address()
    proc, state, sock = es.start_enclave(base, "main", platform_dir=platform_dir)
    yield {"base": base, "split_dir": split_dir, "summary": summary, "platform_dir": platform_dir,
           "quoting": quoting, "proc": proc, "state": state, "sock": sock}
    proc.stop()


@pytest.fixture
def ctx(setup, chain, deployment):
    admin = chain.accounts[0]
    chain.transact(deployment.model_registry.functions.setQuotingKey(setup["quoting"]), sender=admin)
    chain.transact(deployment.backbone_execution.functions.grantRole(NODE_ROLE, chain.accounts[2].address),
                   sender=admin)
    client = EnclaveClient(setup["sock"])
    yield dict(setup, chain=chain, deployment=deployment, admin=admin, owner=chain.accounts[1], client=client)
    client.close()


def _revert_name(fn) -> str:
    with pytest.raises(ContractRevertError) as info:
        fn()
    return info.value.error_name


def _register(c, att, nonce, *, quote=None, key=None, signature=None):
    reg = c["deployment"].model_registry
    return c["chain"].transact(reg.functions.registerEnclave(
        quote if quote is not None else att.quote, att.enclave,
        key if key is not None else att.encryption_key, nonce,
        signature if signature is not None else att.registration_signature), sender=c["admin"])


def _package(c):
    return (c["split_dir"] / "head.pkg").read_bytes(), (c["split_dir"] / "head.index").read_bytes()


def _new_model(c, name: bytes) -> tuple[bytes, int]:
    model_id = crypto.keccak256(name)
    version = register_model_version(c["chain"], c["deployment"], c["owner"], model_id, c["split_dir"], c["summary"])
    return model_id, version


# --- registry rejections --------------------------------------------------------------------------

def test_registry_rejects_bad_quotes_and_missing_cosignature(ctx):
    c, chain, reg = ctx, ctx["chain"], ctx["deployment"].model_registry
    nonce = b"\x11" * 32
    att = c["client"].attest(nonce, chain.chain_id, reg.address)
    # bad quoting signature: a body byte changed after signing
    tampered = bytearray(att.quote)
    tampered[70] ^= 0x01
    assert _revert_name(lambda: _register(c, att, nonce, quote=bytes(tampered))) == "ModelRegistryBadQuoteSignature"
    # report data mismatch: another encryption key or nonce than the quote binds
    assert _revert_name(lambda: _register(c, att, nonce, key=b"\x22" * 32)) == "ModelRegistryReportDataMismatch"
    assert _revert_name(lambda: _register(c, att, b"\x12" * 32)) == "ModelRegistryReportDataMismatch"
    # missing or foreign co-signature
    assert _revert_name(lambda: _register(c, att, nonce, signature=b"")) == "ModelRegistryBadEnclaveSignature"
    foreign = eip712.sign(b"\x07" * 32, eip712.enclave_registration_digest(
        chain.chain_id, reg.address, enclave=att.enclave, encryption_key=att.encryption_key,
        measurement=att.measurement, nonce=nonce))
    assert _revert_name(lambda: _register(c, att, nonce, signature=foreign)) == "ModelRegistryBadEnclaveSignature"
    # expired quote
    validity = chain.call(reg.functions.quoteValidity())
    snap = chain.snapshot()
    chain.increase_time(validity + 60)
    chain.mine()
    assert _revert_name(lambda: _register(c, att, nonce)) == "ModelRegistryQuoteExpired"
    chain.revert(snap)
    # quoting key not the pinned one
    chain.transact(reg.functions.setQuotingKey("0x" + "33" * 20), sender=c["admin"])
    assert _revert_name(lambda: _register(c, att, nonce)) == "ModelRegistryBadQuoteSignature"
    with pytest.raises(AttestationError, match="pinned quoting key"):
        attest_enclave(chain, c["deployment"], c["client"], sender=c["admin"])


def test_off_chain_verification_refuses_what_the_registry_refuses(ctx):
    c, chain, reg = ctx, ctx["chain"], ctx["deployment"].model_registry
    nonce = b"\x44" * 32
    att = c["client"].attest(nonce, chain.chain_id, reg.address)
    now = int(chain.get_block("latest")["timestamp"])
    kw = dict(quoting_key=c["quoting"], chain_id=chain.chain_id, registry=reg.address, validity=3600)
    assert verify_quote(att, nonce=nonce, now=now, **kw).mr_enclave == att.measurement
    with pytest.raises(AttestationError, match="older"):
        verify_quote(att, nonce=nonce, now=now + 7200, **kw)
    with pytest.raises(AttestationError, match="report data"):
        verify_quote(att, nonce=b"\x45" * 32, now=now, **kw)
    with pytest.raises(AttestationError, match="expected"):
        verify_quote(att, nonce=nonce, now=now, expected_measurement=b"\x01" * 32, **kw)


def test_debug_enclave_is_refused(ctx):
    c, chain = ctx, ctx["chain"]
    proc, _, sock = es.start_enclave(c["base"], "debug", "--debug-enclave", platform_dir=c["platform_dir"])
    try:
        with EnclaveClient(sock) as client:
            nonce = b"\x55" * 32
            att = client.attest(nonce, chain.chain_id, c["deployment"].model_registry.address)
            assert _revert_name(lambda: _register(c, att, nonce)) == "ModelRegistryDebugEnclave"
            with pytest.raises(AttestationError, match="DEBUG"):
                attest_enclave(chain, c["deployment"], client, sender=c["admin"])
    finally:
        proc.stop()


def test_wrong_measurement_is_not_authorized(ctx):
    c, chain, reg = ctx, ctx["chain"], ctx["deployment"].model_registry
    model_id, version = _new_model(c, b"measured-model")
    allowed = c["client"].status().measurement
    chain.transact(reg.functions.allowMeasurement(model_id, allowed), sender=c["owner"])
    proc, _, sock = es.start_enclave(c["base"], "other-build", "--max-frame-bytes", str(32 * 1024 * 1024),
                                     platform_dir=c["platform_dir"])
    try:
        with EnclaveClient(sock) as other:
            status = other.status()
            assert status.measurement != allowed
            registration = attest_enclave(chain, c["deployment"], other, sender=c["admin"])
            assert not chain.call(reg.functions.isEnclaveAuthorized(model_id, registration.enclave))
            assert _revert_name(lambda: chain.transact(reg.functions.provisionHead(
                model_id, version, registration.enclave, b"\x01" * 32), sender=c["owner"])) \
                == "ModelRegistryEnclaveNotAuthorized"
            package, index = _package(c)
            with pytest.raises(AttestationError, match="not authorized"):
                provision_model(chain, c["deployment"], other, c["owner"], model_id=model_id, version=version,
                                package_bytes=package, index_bytes=index)
    finally:
        proc.stop()


# --- provisioning refusals ---------------------------------------------------------------------------

def test_package_to_unregistered_key_tampered_index_or_other_hash_is_refused(ctx):
    c, chain = ctx, ctx["chain"]
    client = c["client"]
    package, index = _package(c)
    pkg_plain_hash = crypto.keccak256(package)
    from enclave.package import decode_head_package
    pkg = decode_head_package(package)
    model_id, version = crypto.keccak256(b"refusals"), 1
    common = dict(model_id=model_id, version=version, chain_id=chain.chain_id,
                  registry=c["deployment"].model_registry.address, transfer=c["deployment"].enclave_transfer.address,
                  package_plain_hash=pkg_plain_hash, head_graph_hash=pkg.graph_hash, head_params_hash=pkg.params_hash)
    aad = crypto.head_aad(model_id, version, pkg_plain_hash)
    stranger = crypto.X25519KeyPair.generate()
    to_stranger = crypto.ecies_encrypt(stranger.public, package, aad)
    with pytest.raises(EnclaveRefusedError, match="not encrypted to this enclave") as info:
        client.provision_head(package_ciphertext=to_stranger, package_hash=crypto.keccak256(to_stranger), **common)
    assert not es.find_leaks(es.canary_chunks(), str(info.value).encode())
    key = client.status().encryption_key
    good = crypto.ecies_encrypt(key, package, aad)
    with pytest.raises(EnclaveRefusedError, match="registry recorded"):
        client.provision_head(package_ciphertext=good, package_hash=b"\x09" * 32, **common)
    with pytest.raises(EnclaveRefusedError, match="graph hash differs"):
        client.provision_head(package_ciphertext=good, package_hash=crypto.keccak256(good),
                              **dict(common, head_graph_hash=b"\x08" * 32))
    # an index with one byte changed (inside an entry's sha256) no longer matches its Merkle root
    from enclave.package import decode_index
    table = decode_index(index)
    tampered = bytearray(index)
    tampered[len(index) // 2] ^= 0x01
    for bad_index, root in ((bytes(tampered), table.merkle_root()), (index, b"\x07" * 32)):
        plain_hash = crypto.keccak256(bad_index)
        ct = crypto.ecies_encrypt(key, bad_index, crypto.index_aad(model_id, version, plain_hash))
        with pytest.raises(EnclaveRefusedError, match="index"):
            client.provision_index(model_id=model_id, version=version, chain_id=chain.chain_id,
                                   parameter_index=c["deployment"].parameter_index.address, index_ciphertext=ct,
                                   index_plain_hash=plain_hash, encrypted_index_hash=crypto.keccak256(ct),
                                   merkle_root=root, entry_count=table.entry_count)
    assert all(m["model_id"] != model_id for m in client.status().models)


def test_provisioning_refuses_an_unregistered_enclave(ctx):
    c = ctx
    model_id, version = _new_model(c, b"unregistered")
    package, index = _package(c)
    with pytest.raises(AttestationError, match="not registered"):
        provision_model(c["chain"], c["deployment"], c["client"], c["owner"], model_id=model_id,
                        version=version, package_bytes=package, index_bytes=index, allow_measurement=True)


# --- restart, rollback, measurement change -------------------------------------------------------------

def test_restart_restores_sealed_state_and_refuses_rollback(ctx):
    c, chain = ctx, ctx["chain"]
    base = c["base"]
    proc, state, sock = es.start_enclave(base, "restart", platform_dir=c["platform_dir"])
    try:
        client = EnclaveClient(sock)
        reg = attest_enclave(chain, c["deployment"], client, sender=c["admin"])
        model_id, version = _new_model(c, b"restart-model")
        package, index = _package(c)
        first = provision_model(chain, c["deployment"], client, c["owner"], model_id=model_id, version=version,
                                package_bytes=package, index_bytes=index, allow_measurement=True)
        old_sealed = base / "restart-old-sealed"
        shutil.copytree(state / "sealed", old_sealed)
        # an update: the head is provisioned again; the chain anchors a newer state version
        second = provision_model(chain, c["deployment"], client, c["owner"], model_id=model_id, version=version,
                                 package_bytes=package, index_bytes=index)
        assert second.state_version > first.state_version and second.serving
        anchored = chain.call(c["deployment"].model_registry.functions.stateVersion(reg.enclave))
        assert anchored == second.state_version
        client.close()
        assert proc.stop() == 0 and not sock.exists()  # clean SIGTERM shutdown removes the socket

        # restart: same keys (unsealed), nothing loaded until the state is restored against the chain
        proc, _, _ = es.start_enclave(base, "restart", platform_dir=c["platform_dir"])
        client = EnclaveClient(sock)
        status = client.status()
        assert status.enclave == reg.enclave and status.models == () and not status.restored
        restored = restore_enclave(chain, c["deployment"], client)
        assert restored["models"] == 1 and restored["state_version"] >= anchored
        w = es.World(chain=chain, deployment=c["deployment"], base=base, split_dir=c["split_dir"], state_dir=state,
                     socket_path=sock, log_path=base / "restart.log", process=proc, client=client,
                     model_id=model_id, version=version, enclave=reg.enclave, encryption_key=reg.encryption_key,
                     admin=c["admin"], owner=c["owner"], node=chain.accounts[2], requester=chain.accounts[3],
                     start_block=0, full_model=es.canary_model().SerializeToString(),
                     backbone=(c["split_dir"] / "backbone.onnx").read_bytes())
        run = es.open_request(w, es.sample_inputs(1, seed=30))
        reply = es.infer(w, run)
        es.submit(w, run, reply)
        assert list(es.requester_opens(w, run, reply).labels) == \
            w.run_full_model(run.x).argmax(axis=1).tolist()
        client.close()
        proc.stop()

        # rollback: the pre-update sealed files put back; the chain's anchor refuses them
        shutil.rmtree(state / "sealed")
        shutil.copytree(old_sealed, state / "sealed")
        proc, _, _ = es.start_enclave(base, "restart", platform_dir=c["platform_dir"])
        client = EnclaveClient(sock)
        with pytest.raises(EnclaveSealingError, match="rollback"):
            restore_enclave(chain, c["deployment"], client)
        with pytest.raises(EnclaveRefusedError, match="not loaded"):
            es.infer(w, run, client=client)
        client.close()
    finally:
        proc.stop()


def test_a_changed_measurement_cannot_unseal(ctx):
    c = ctx
    copy = c["base"] / "copied-state"
    shutil.copytree(c["state"] / "sealed", copy / "sealed")
    # same platform, same sealed files, a different build configuration
    with pytest.raises(EnclaveUnavailableError, match="status 2"):
        es.start_enclave(c["base"], "copied-state", "--max-frame-bytes", "1048576", platform_dir=c["platform_dir"])
    assert "another enclave measurement" in (c["base"] / "copied-state.log").read_text()
    # the same build opens it (control)
    proc, _, sock = es.start_enclave(c["base"], "copied-state", platform_dir=c["platform_dir"])
    try:
        with EnclaveClient(sock) as client, EnclaveClient(c["sock"]) as original:
            assert client.status().enclave == original.status().enclave
    finally:
        proc.stop()
