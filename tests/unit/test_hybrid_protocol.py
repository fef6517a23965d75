"""Hybrid mode without a chain: the manifest, sealing a share bound to its request and party, the
node's signature, the enclave's checks (enclave/hybrid.py) and the reconstruction."""

from __future__ import annotations

import os

import numpy as np
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from enclave.hybrid import open_hybrid_transfer
from mpc.engine.ring import decode, encode, share, to_bytes_u64
from mpc.node.hybrid import check_input_share, seal_and_sign
from mpc.node.node import share_commitment
from splitseal.errors import InvalidInputError
from splitseal.protocol import FailureCode, eip712, hybrid
from splitseal.protocol.crypto import DecryptionError, X25519KeyPair, ecies_decrypt, keccak256

CHAIN_ID = 31337
TRANSFER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
MODEL = keccak256(b"model")
SEED = 20261202  # fixed: a failure replays


class Refused(Exception):
    def __init__(self, message: str, code: FailureCode) -> None:
        super().__init__(message)
        self.code = code


@pytest.fixture
def world():
    """An enclave key, two node accounts, a capture in shares and the request's manifest."""
    rng = np.random.default_rng(SEED)
    enclave_key = X25519KeyPair.generate()
    enclave = Account.create().address
    nodes = [Account.create() for _ in range(2)]
    x = rng.uniform(-3, 3, size=(1, 64))
    input_shares = share(encode(rng.uniform(0, 1, size=(1, 1, 4, 4))), 2)
    salts = [os.urandom(32) for _ in nodes]
    manifest = hybrid.Manifest(7, tuple(n.address for n in nodes),
                               tuple(share_commitment(s, sh) for s, sh in zip(salts, input_shares)))
    return {"enclave_key": enclave_key, "enclave": enclave, "nodes": nodes, "x": x, "output_shares": share(encode(x), 2),
            "input_shares": input_shares, "salts": salts, "manifest": manifest}


def _meta(w, request_id=5, party=0):
    return {"request_id": request_id, "model_id": MODEL.hex(), "version": 1, "enclave": w["enclave"],
            "encryption_key": w["enclave_key"].public.hex(), "manifest": w["manifest"].encode().hex(),
            "chain_id": CHAIN_ID, "transfer": TRANSFER, "salt": w["salts"][party].hex()}


def _sealed(w, request_id=5):
    """Each node's reply, as mpc.node.hybrid builds it."""
    out = []
    for party, node in enumerate(w["nodes"]):
        reply = seal_and_sign(_meta(w, request_id, party), party, w["manifest"], w["manifest"].commitment(),
                              w["output_shares"][party], bytes(node.key))
        out.append({"party": party, "sealed": bytes.fromhex(reply["sealed"]),
                    "signature": bytes.fromhex(reply["signature"])})
    return out


def _open(w, shares, request_id=5, manifest_bytes=None, shape=(1, 64)):
    manifest_bytes = w["manifest"].encode() if manifest_bytes is None else manifest_bytes
    return open_hybrid_transfer(refuse=Refused, x25519=w["enclave_key"], enclave=w["enclave"], chain_id=CHAIN_ID,
                                transfer_contract=TRANSFER, request_id=request_id, model_id=MODEL, version=1,
                                input_commitment=w["manifest"].commitment(), manifest_bytes=manifest_bytes,
                                shares=shares, shape=shape)


# --- manifest -----------------------------------------------------------------------------------

def test_the_manifest_round_trips_canonically(world):
    m = world["manifest"]
    data = m.encode()
    assert hybrid.is_manifest(data) and hybrid.decode_manifest(data) == m
    assert m.commitment() == keccak256(data)
    assert len(data) == len(hybrid.MANIFEST_MAGIC) + 10 + 2 * 52  # packed: paid per byte on-chain
    # an ECIES input is not a manifest; a manifest with bytes missing or extra is refused
    assert not hybrid.is_manifest(b"\x01" + os.urandom(40))
    for bad in (data[:-1], data + b"\0", data[:len(hybrid.MANIFEST_MAGIC) + 4]):
        with pytest.raises(InvalidInputError, match="carries|truncated"):
            hybrid.decode_manifest(bad)


@pytest.mark.parametrize("nodes, commitments, problem", [
    (("0x" + "11" * 20,), (b"\0" * 32,), "2 to 8 nodes"),
    (("0x" + "11" * 20, "0x" + "22" * 20), (b"\0" * 32,), "one input commitment per node"),
    (("0x" + "11" * 20, "0x" + "11" * 20), (b"\0" * 32, b"\1" * 32), "names a node twice"),
])
def test_a_malformed_manifest_says_what_is_wrong(nodes, commitments, problem):
    with pytest.raises(InvalidInputError, match=problem):
        hybrid.Manifest(1, nodes, commitments)


def test_the_input_share_commitment_is_the_feature_share_commitment():
    salt, s = os.urandom(32), share(encode(np.ones((2, 3))), 2)[0]
    assert hybrid.input_share_commitment(salt, to_bytes_u64(s)) == share_commitment(salt, s)


# --- the node's side ----------------------------------------------------------------------------

def test_a_node_checks_its_input_share_against_the_manifest(world):
    w = world
    node0 = w["nodes"][0].address
    manifest, commitment = check_input_share(_meta(w), 0, 2, node0, w["input_shares"][0])
    assert manifest == w["manifest"] and commitment == manifest.commitment()
    with pytest.raises(InvalidInputError, match="does not match the request's commitment"):
        check_input_share(_meta(w), 0, 2, node0, w["input_shares"][0] + np.uint64(1))
    with pytest.raises(InvalidInputError, match="not this node"):
        check_input_share(_meta(w), 0, 2, w["nodes"][1].address, w["input_shares"][0])
    with pytest.raises(InvalidInputError, match="this cluster has 3"):
        check_input_share(_meta(w), 0, 3, node0, w["input_shares"][0])
    with pytest.raises(InvalidInputError, match="no signing key"):
        check_input_share(_meta(w), 0, 2, None, w["input_shares"][0])


def test_the_share_signature_is_standard_eip712(world):
    w = world
    h = os.urandom(32)
    ours = eip712.hybrid_share_digest(CHAIN_ID, TRANSFER, request_id=5, model_id=MODEL, model_version=1,
                                      input_commitment=w["manifest"].commitment(), enclave=w["enclave"], party=1,
                                      share_hash=h)
    fields = [{"name": n, "type": t} for t, n in eip712._fields(eip712.OFFCHAIN_TYPES["HybridShare"])]
    signable = encode_typed_data(full_message={
        "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                   {"name": "chainId", "type": "uint256"},
                                   {"name": "verifyingContract", "type": "address"}], "HybridShare": fields},
        "primaryType": "HybridShare",
        "domain": {"name": "splitseal", "version": "1", "chainId": CHAIN_ID, "verifyingContract": TRANSFER},
        "message": {"requestId": 5, "modelId": MODEL, "modelVersion": 1,
                    "inputCommitment": w["manifest"].commitment(), "enclave": w["enclave"], "party": 1,
                    "shareHash": h}})
    assert ours == keccak256(b"\x19" + signable.version + signable.header + signable.body)


@pytest.mark.parametrize("field, value", [("request_id", 6), ("model_id", keccak256(b"other")), ("version", 2),
                                          ("enclave", "0x" + "33" * 20), ("input_commitment", b"\7" * 32),
                                          ("party", 1), ("parties", 3), ("frac_bits", 20), ("shape", (64, 1))])
def test_a_sealed_share_opens_only_with_its_own_binding(world, field, value):
    w = world
    binding = {"request_id": 5, "model_id": MODEL, "version": 1, "enclave": w["enclave"],
               "input_commitment": w["manifest"].commitment(), "party": 0, "parties": 2, "frac_bits": 16,
               "shape": (1, 64)}
    sealed = hybrid.seal_share(w["enclave_key"].public, w["output_shares"][0],
                               **{k: v for k, v in binding.items() if k != "shape"})
    assert ecies_decrypt(w["enclave_key"], sealed, hybrid.share_aad(**binding)) == to_bytes_u64(w["output_shares"][0])
    with pytest.raises(DecryptionError):
        ecies_decrypt(w["enclave_key"], sealed, hybrid.share_aad(**{**binding, field: value}))


# --- the enclave's side -------------------------------------------------------------------------

@pytest.mark.parametrize("parties", [2, 3])
def test_reconstruction_equals_the_plaintext_within_the_encoding(parties):
    rng = np.random.default_rng(SEED + parties)
    x = rng.uniform(-1000, 1000, size=(2, 33))
    y = hybrid.reconstruct(share(encode(x), parties), 16)
    assert y.dtype == np.float32
    # 2^-17 from the encoding, float32 rounding of values up to 1000 (2^-14 relative)
    assert np.max(np.abs(y - x)) <= 2.0 ** -17 + 1000 * 2.0 ** -23
    assert np.allclose(decode(encode(x)), y, atol=1e-4)


def test_the_enclave_reconstructs_the_backbone_output_and_names_the_contributors(world):
    w = world
    shares = _sealed(w)
    opened = _open(w, shares)
    assert np.max(np.abs(opened.output - w["x"])) <= 2.0 ** -16
    assert [c.node for c in opened.contributions] == [n.address for n in w["nodes"]]
    assert opened.transfer_hash == keccak256(opened.record)
    rid, contributions = hybrid.decode_record(opened.record)
    assert rid == 5 and list(contributions) == list(opened.contributions)
    assert opened.output_commitment == hybrid.output_commitment([keccak256(s["sealed"]) for s in shares])
    assert _open(w, list(reversed(shares))).record == opened.record  # order of arrival does not matter


def test_a_share_of_another_request_is_a_replay(world):
    w = world
    old = _sealed(w, request_id=4)
    with pytest.raises(Refused, match="party 1's share does not open") as refused:
        _open(w, [_sealed(w)[0], old[1]])
    assert refused.value.code is FailureCode.ENCLAVE_REFUSED


def test_a_missing_or_doubled_share_is_refused(world):
    w = world
    shares = _sealed(w)
    with pytest.raises(Refused, match="no share from party 1") as refused:
        _open(w, shares[:1])
    assert refused.value.code is FailureCode.INPUT_UNAVAILABLE
    with pytest.raises(Refused, match="party 0 sent two shares"):
        _open(w, [shares[0], shares[0]])
    with pytest.raises(Refused, match="names party 2"):
        _open(w, [shares[0], {**shares[1], "party": 2}])


def test_a_share_signed_by_a_non_member_is_refused(world):
    w = world
    shares = _sealed(w)
    outsider = Account.create()
    digest = eip712.hybrid_share_digest(CHAIN_ID, TRANSFER, request_id=5, model_id=MODEL, model_version=1,
                                        input_commitment=w["manifest"].commitment(), enclave=w["enclave"], party=1,
                                        share_hash=keccak256(shares[1]["sealed"]))
    forged = {**shares[1], "signature": eip712.sign(bytes(outsider.key), digest)}
    with pytest.raises(Refused, match=f"signed by {outsider.address}, a non-member"):
        _open(w, [shares[0], forged])
    # node 0 signing node 1's share does not make it node 1's
    own = {**shares[1], "signature": eip712.sign(bytes(w["nodes"][0].key), digest)}
    with pytest.raises(Refused, match="non-member"):
        _open(w, [shares[0], own])


def test_a_manifest_other_than_the_requests_is_refused(world):
    w = world
    other = hybrid.Manifest(8, w["manifest"].nodes, w["manifest"].input_commitments).encode()
    with pytest.raises(Refused, match="does not hash to the request's input commitment") as refused:
        _open(w, _sealed(w), manifest_bytes=other)
    assert refused.value.code is FailureCode.INPUT_HASH_MISMATCH


def test_a_share_presented_with_another_shape_does_not_open(world):
    with pytest.raises(Refused, match="does not open"):
        _open(world, _sealed(world), shape=(1, 32, 2))


def test_a_flattened_backbone_output_is_given_to_the_head_in_its_shape():
    from enclave.core import _unflattened

    assert _unflattened((1, 50176), (None, 1024, 7, 7)) == (1, 1024, 7, 7)
    assert _unflattened((1, 64), (None, 64)) == (1, 64)
    # a different element count is left as it is, for the head's shape check to refuse
    assert _unflattened((1, 50000), (None, 1024, 7, 7)) == (1, 50000)
