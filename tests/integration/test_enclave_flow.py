"""The enclave as a real OS process over its socket, against the real contracts on the embedded
chain: attestation and registration, provisioning, signed encrypted inference accepted by
EnclaveTransfer, and the security properties of issue 4 part 8."""

from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from enclave.identity import load_identity
from enclave.keys import KeyDeriver
from enclave.platform import SimulatedPlatform
from enclave.sealing import Sealer
from splitseal.enclave_client import EnclaveClient, EnclaveRefusedError
from splitseal.protocol import crypto, eip712, wire
from tests.support import enclave_support as es

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def world(request, tmp_path_factory):
    """One provisioned enclave per chain: the embedded eth-tester chain and a real anvil node."""
    session = "embedded_chain" if request.param == "embedded" else "anvil_session"
    chain = request.getfixturevalue(session)
    deployment = request.getfixturevalue(
        "embedded_deployment" if request.param == "embedded" else "anvil_session_deployment")
    snapshot = chain.snapshot()
    base = Path(tmp_path_factory.mktemp("encl"))
    w = es.build_world(chain, deployment, base)
    try:
        yield w
    finally:
        w.client.close()
        w.process.stop()
        chain.revert(snapshot)


@pytest.fixture
def isolated(world):
    """The module's world. The chain is not reverted between these tests: the enclave remembers
    answered request ids (as it must), and a reverted chain would hand out the same ids again."""
    return world


def _enclave_secrets(w: es.World) -> dict[str, bytes]:
    """Unseal the enclave's keys from its files, as only the enclave could (test oracle)."""
    platform = SimulatedPlatform(w.base / "platform")
    sealer = Sealer(KeyDeriver(platform.root_secret(), load_identity()))
    plain, _ = sealer.unseal((w.state_dir / "sealed" / "identity.sealed").read_bytes(),
                             aad=b"splitseal.identity.v1", label="identity")
    keys = wire.decode(plain)
    return {"signing": keys["signing_key"], "x25519": keys["encryption_key"],
            "root": platform.root_secret(), "quoting": (w.base / "platform" / "quoting_key").read_bytes()}


# --- registration and the happy path ------------------------------------------------------------

def test_registered_address_and_key_are_the_enclaves(world):
    reg = world.deployment.model_registry
    record = world.chain.call(reg.functions.enclaveRecord(world.enclave))
    status = world.client.status()
    secrets = _enclave_secrets(world)
    assert eip712.address_of(secrets["signing"]) == world.enclave == status.enclave
    assert crypto.X25519KeyPair.from_private(secrets["x25519"]).public == bytes(record[2]) == status.encryption_key
    assert bytes(record[0]) == status.measurement and bytes(record[1]) == status.signer
    assert world.chain.call(reg.functions.isEnclaveServing(world.model_id, world.version, world.enclave))
    assert world.chain.call(world.deployment.parameter_index.functions.isIndexVerified(
        world.model_id, world.version, world.enclave))
    assert [m["serving"] for m in status.models] == [True]


def test_signed_encrypted_inference_is_accepted_by_enclave_transfer(isolated):
    w = isolated
    x = es.sample_inputs(3, seed=1)
    run = es.open_request(w, x)
    reply = es.infer(w, run)
    receipt = es.submit(w, run, reply)
    event = w.chain.events(receipt, w.deployment.enclave_transfer, "ResultSubmitted")[0]
    assert event["requestId"] == run.request_id and event["enclave"] == w.enclave
    assert bytes(event["resultCommitment"]) == crypto.keccak256(reply.encrypted_result)
    assert w.chain.call(w.deployment.backbone_execution.functions.status(run.request_id)) == 3  # Completed
    outcome = es.requester_opens(w, run, reply)
    want = w.run_full_model(x)
    assert list(outcome.labels) == np.argmax(want, axis=1).tolist()
    np.testing.assert_allclose(np.array(outcome.scores), want, atol=1e-5)
    # the signature recovers to the enclave under the EnclaveTransfer domain
    digest = eip712.inference_result_digest(
        w.chain.chain_id, w.deployment.enclave_transfer.address, request_id=run.request_id,
        model_id=w.model_id, model_version=w.version, input_commitment=run.input_commitment,
        requester=w.requester.address, requester_key=run.requester_key.public,
        transfer_hash=crypto.keccak256(run.transfer), result_commitment=reply.result_commitment,
        sequence=reply.sequence)
    assert eip712.recover(digest, reply.signature) == w.enclave
    w.replies.append((run, reply, outcome))


# --- tampering, replays, malformed input ----------------------------------------------------------

def _refused(w, run, **overrides):
    with pytest.raises(EnclaveRefusedError) as info:
        es.infer(w, run, **overrides)
    message = str(info.value)
    assert not es.find_leaks([run.features.tobytes()[:16]] + es.canary_chunks(), message.encode())
    return info.value


def test_bit_flips_swaps_and_replays_are_refused_without_plaintext(isolated):
    w = isolated
    run = es.open_request(w, es.sample_inputs(1, seed=2))
    ct = run.transfer
    for pos in (0, 5, 40, 50, len(ct) - 20, len(ct) - 1):  # version, eph key, nonce, body, tag
        flipped = bytearray(ct)
        flipped[pos] ^= 0x01
        err = _refused(w, run, transfer_ciphertext=bytes(flipped))
        assert err.reason == 5
    # additional data: another request id, version, shape, dtype, enclave address
    _refused(w, run, request_id=run.request_id + 1)
    other_version, _, _ = crypto.encrypt_transfer(w.encryption_key, w.enclave, run.request_id, w.model_id,
                                                  w.version + 1, run.features)
    _refused(w, run, transfer_ciphertext=other_version)
    err = _refused(w, run, version=w.version + 1)
    assert err.kind == "NotProvisionedError"
    _refused(w, run, shape=(run.shape[0], run.shape[1] - 1))
    _refused(w, run, dtype="<f8")
    other_enclave, _, _ = crypto.encrypt_transfer(w.encryption_key, "0x" + "12" * 20, run.request_id,
                                                  w.model_id, w.version, run.features)
    _refused(w, run, transfer_ciphertext=other_enclave)
    # ciphertext moved from another request
    run2 = es.open_request(w, es.sample_inputs(1, seed=3))
    _refused(w, run2, transfer_ciphertext=run.transfer)
    # the genuine call works; asked again, the enclave hands out the same answer (no second
    # evaluation), and for another input commitment or key it refuses the replay
    reply = es.infer(w, run)
    es.submit(w, run, reply)
    again = es.infer(w, run)
    assert again.repeated and (again.signature, again.sequence) == (reply.signature, reply.sequence)
    err = _refused(w, run, input_commitment=b"\x07" * 32)
    assert err.kind == "ReplayError"
    err = _refused(w, run, requester_key=crypto.X25519KeyPair.generate().public)
    assert err.kind == "ReplayError"
    # a shape that disagrees with the head's input is a ShapeMismatch (reason 2)
    wide, shape, dtype = crypto.encrypt_transfer(w.encryption_key, w.enclave, run2.request_id, w.model_id,
                                                 w.version, np.zeros((1, es.HIDDEN + 1), np.float32))
    err = _refused(w, run2, transfer_ciphertext=wide, shape=shape, dtype=dtype)
    assert err.reason == 2


def test_malformed_and_oversized_frames_do_not_crash_the_process(world):
    def raw_exchange(data: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(world.socket_path))
            s.sendall(data)
            return wire.read_frame(s, 1 << 20) or b""

    huge = raw_exchange(struct.pack(">I", 2**31) + b"x" * 10)
    assert wire.decode(huge)["error"]["type"] == "FrameTooLarge"
    for payload in (b"\xff\x00", b"\x07\x00\x00\x00\x01", wire.encode([1, 2]), wire.encode({"call": 5}),
                    wire.encode({"call": "status", "id": 1, "args": [1]})):
        reply = wire.decode(raw_exchange(struct.pack(">I", len(payload)) + payload))
        assert reply["ok"] is False
    assert raw_exchange(struct.pack(">I", 0))  # empty frame: error reply, no crash
    assert world.process.proc.poll() is None
    assert world.client.status().enclave == world.enclave


# --- leaks ------------------------------------------------------------------------------------------

def test_canary_weights_appear_nowhere_outside_the_enclave(isolated, caplog):
    w = isolated
    caplog.set_level(logging.DEBUG)
    node_client = EnclaveClient(w.socket_path, trace=True)
    runs = []
    for seed in range(3):
        run = es.open_request(w, es.sample_inputs(2, seed=10 + seed))
        reply = es.infer(w, run, client=node_client)
        es.submit(w, run, reply)
        runs.append((run, reply))
    node_client.seal_state()
    needles = es.canary_chunks()
    owner_package = (w.split_dir / "head.pkg").read_bytes()
    # positive controls: the scanners do find the canary where it legitimately is
    assert es.find_leaks(needles, owner_package) and es.find_leaks(needles, es.object_bytes({"p": owner_package}))
    assert es.find_leaks(needles, owner_package.hex().encode())
    assert es.find_leaks(needles, es.files_bytes(w.base, skip_suffixes=(".sealed",)))  # owner's split dir
    haystacks = {
        "backbone file": (w.base / "node" / "backbone.onnx").read_bytes(),
        "socket traffic": b"".join(w.client.traffic + node_client.traffic),
        "chain data": es.chain_bytes(w.chain, w.start_block),
        "enclave log": w.log_path.read_bytes(),
        "host log": caplog.text.encode(),
        "node objects": es.object_bytes([node_client, runs]),
        # every file of this machine but the owner's own split directory and the sealed blobs
        "files on disk (not sealed)": es.files_bytes(w.base, skip_suffixes=(".sealed",), skip_dirs=(w.split_dir,)),
        "sealed files (encrypted)": es.files_bytes(w.state_dir / "sealed"),
    }
    node_client.close()
    assert {k: es.find_leaks(needles, v) for k, v in haystacks.items()} == {k: [] for k in haystacks}


def test_no_entry_call_returns_key_material_and_prediction_only_at_requester(isolated):
    w = isolated
    run = es.open_request(w, es.sample_inputs(1, seed=20))
    reply = es.infer(w, run)
    es.submit(w, run, reply)
    outcome_plain = crypto.ecies_decrypt(run.requester_key, reply.encrypted_result,
                                         crypto.result_aad(run.request_id, w.model_id, w.version))
    salt = __import__("json").loads(outcome_plain)["salt"]
    w.client.attest(b"\x05" * 32, w.chain.chain_id, w.deployment.model_registry.address)
    w.client.status()
    w.client.seal_state()
    secrets = _enclave_secrets(w)
    traffic = b"".join(w.client.traffic)
    assert es.find_leaks(secrets.values(), traffic) == []
    # the plaintext result (identified by its random salt) is nowhere but at the requester
    for name, hay in {"traffic": traffic, "chain": es.chain_bytes(w.chain, w.start_block),
                      "enclave log": w.log_path.read_bytes()}.items():
        assert salt.encode() not in hay and outcome_plain not in hay, name
        assert bytes.fromhex(salt) not in hay, name
    assert es.requester_opens(w, run, reply).labels


def test_result_ciphertexts_to_distinct_requester_keys_use_distinct_ephemeral_keys(world):
    # every run names a requester key of its own, so each result opens a result session of its
    # own (docs/PROTOCOL.md, "Result sessions"): no two share an ephemeral key
    eph = {crypto.ecies_ephemeral_and_nonce(r.encrypted_result)[0] for r in
           [m[1] for m in world.replies]} if world.replies else set()
    run_eph = set()
    for frame in world.client.traffic:
        msg = wire.decode(frame)
        result = msg.get("result") if isinstance(msg, dict) else None
        if isinstance(result, dict) and "encrypted_result" in result:
            run_eph.add(crypto.ecies_ephemeral_and_nonce(result["encrypted_result"]))
    assert len(run_eph) >= 2 and len({e for e, _ in run_eph}) == len(run_eph)
    assert eph <= {e for e, _ in run_eph}
