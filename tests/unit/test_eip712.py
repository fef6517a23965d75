"""splitseal.protocol.eip712 against an independent implementation (eth_account) and against the type
strings compiled into the contracts."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from splitseal.errors import InvalidInputError
from splitseal.protocol import eip712

CHAIN_ID = 31337
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
SRC = Path(__file__).resolve().parents[2] / "contracts" / "src"

_SOL_TYPES = {"EnclaveRegistration": "ModelRegistry.sol", "HeadLoaded": "ModelRegistry.sol",
              "IndexVerified": "ParameterIndex.sol", "InferenceResult": "EnclaveTransfer.sol",
              "ShareCommitment": "FeatureShareRegistry.sol", "Decision": "FeatureShareRegistry.sol"}


def _sample(type_name: str) -> dict:
    """Random values for every field of a type, keyed by Solidity name."""
    out = {}
    for sol_type, name in eip712._fields(eip712.TYPES[type_name]):
        if sol_type == "address":
            out[name] = Account.create().address
        elif sol_type == "bytes32":
            out[name] = os.urandom(32)
        elif sol_type == "bool":
            out[name] = bool(os.urandom(1)[0] & 1)
        else:
            out[name] = int.from_bytes(os.urandom(32), "big") % 2 ** int(sol_type[4:])
    return out


def _eth_account_message(type_name: str, values: dict) -> object:
    fields = [{"name": n, "type": t} for t, n in eip712._fields(eip712.TYPES[type_name])]
    return encode_typed_data(full_message={
        "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                   {"name": "chainId", "type": "uint256"},
                                   {"name": "verifyingContract", "type": "address"}],
                  type_name: fields},
        "primaryType": type_name,
        "domain": {"name": "splitseal", "version": "1", "chainId": CHAIN_ID, "verifyingContract": CONTRACT},
        "message": values})


@pytest.mark.parametrize("type_name", sorted(eip712.TYPES))
def test_signature_matches_eth_account(type_name: str) -> None:
    key = os.urandom(32)
    values = _sample(type_name)
    digest = eip712.typed_digest(CHAIN_ID, CONTRACT, type_name, values)
    expected = Account.sign_message(_eth_account_message(type_name, values), key)
    assert digest == bytes(expected.message_hash)
    signature = eip712.sign(key, digest)
    assert signature == bytes(expected.signature)  # both RFC 6979, low s
    assert eip712.recover(digest, signature) == Account.from_key(key).address


@pytest.mark.parametrize("type_name", sorted(eip712.TYPES))
def test_type_strings_are_those_compiled_into_the_contracts(type_name: str) -> None:
    source = (SRC / _SOL_TYPES[type_name]).read_text()
    strings = re.findall(r'keccak256\(\s*"([^"]+)"\s*\)', source)
    assert eip712.TYPES[type_name] in strings


def test_domain_separator_is_the_contracts_formula() -> None:
    expected = keccak(keccak(text=eip712.DOMAIN_TYPE) + keccak(text="splitseal") + keccak(text="1")
                      + CHAIN_ID.to_bytes(32, "big") + bytes(12) + bytes.fromhex(CONTRACT[2:]))
    assert eip712.domain_separator(CHAIN_ID, CONTRACT) == expected
    assert eip712.Domain(CHAIN_ID, CONTRACT).separator() == expected
    assert eip712.domain_separator(CHAIN_ID + 1, CONTRACT) != expected


def test_named_helpers_equal_the_generic_digest() -> None:
    key = os.urandom(32)
    enclave = eip712.address_of(key)
    h = [os.urandom(32) for _ in range(6)]
    assert eip712.inference_result_digest(CHAIN_ID, CONTRACT, request_id=7, model_id=h[0], model_version=2,
                                          input_commitment=h[1], requester=enclave, requester_key=h[4],
                                          transfer_hash=h[2], result_commitment=h[3], sequence=9) == \
        eip712.typed_digest(CHAIN_ID, CONTRACT, "InferenceResult", {
            "requestId": 7, "modelId": h[0], "modelVersion": 2, "inputCommitment": h[1], "requester": enclave,
            "requesterKey": h[4], "transferHash": h[2], "resultCommitment": h[3], "sequence": 9,
            "hasLabel": False, "label": bytes(32)})
    labelled = eip712.inference_result_digest(CHAIN_ID, CONTRACT, request_id=7, model_id=h[0], model_version=2,
                                              input_commitment=h[1], requester=enclave, requester_key=h[4],
                                              transfer_hash=h[2], result_commitment=h[3], sequence=9,
                                              has_label=True, label=(3).to_bytes(32, "big"))
    assert labelled == eip712.typed_digest(CHAIN_ID, CONTRACT, "InferenceResult", {
        "requestId": 7, "modelId": h[0], "modelVersion": 2, "inputCommitment": h[1], "requester": enclave,
        "requesterKey": h[4], "transferHash": h[2], "resultCommitment": h[3], "sequence": 9,
        "hasLabel": True, "label": (3).to_bytes(32, "big")})
    # the label is signed: another label (or none) is another digest
    assert labelled != eip712.inference_result_digest(
        CHAIN_ID, CONTRACT, request_id=7, model_id=h[0], model_version=2, input_commitment=h[1], requester=enclave,
        requester_key=h[4], transfer_hash=h[2], result_commitment=h[3], sequence=9, has_label=True,
        label=(4).to_bytes(32, "big"))
    assert eip712.enclave_registration_digest(CHAIN_ID, CONTRACT, enclave=enclave, encryption_key=h[0],
                                              measurement=h[1], nonce=h[2]) == \
        eip712.typed_digest(CHAIN_ID, CONTRACT, "EnclaveRegistration", {
            "enclave": enclave, "encryptionKey": h[0], "measurement": h[1], "nonce": h[2]})
    assert eip712.head_loaded_digest(CHAIN_ID, CONTRACT, model_id=h[0], model_version=1, enclave=enclave,
                                     head_graph_hash=h[1], head_params_hash=h[2], package_hash=h[3],
                                     state_version=9) == \
        eip712.typed_digest(CHAIN_ID, CONTRACT, "HeadLoaded", {
            "modelId": h[0], "modelVersion": 1, "enclave": enclave, "headGraphHash": h[1], "headParamsHash": h[2],
            "packageHash": h[3], "stateVersion": 9})
    assert eip712.index_verified_digest(CHAIN_ID, CONTRACT, model_id=h[0], model_version=1, enclave=enclave,
                                        encrypted_index_hash=h[1], merkle_root=h[2], entry_count=5) == \
        eip712.typed_digest(CHAIN_ID, CONTRACT, "IndexVerified", {
            "modelId": h[0], "modelVersion": 1, "enclave": enclave, "encryptedIndexHash": h[1],
            "merkleRoot": h[2], "entryCount": 5})
    assert eip712.share_commitment_digest(CHAIN_ID, CONTRACT, set_id=3, subject_id=h[0], enrolment=4,
                                          commitment=h[1]) == \
        eip712.typed_digest(CHAIN_ID, CONTRACT, "ShareCommitment", {"setId": 3, "subjectId": h[0], "enrolment": 4,
                                                                    "commitment": h[1]})
    assert eip712.decision_digest(CHAIN_ID, CONTRACT, set_id=3, session_id=h[0], kind=2, subject_id=h[1],
                                  accepted=True, probe_commitment=h[2]) == \
        eip712.typed_digest(CHAIN_ID, CONTRACT, "Decision", {
            "setId": 3, "sessionId": h[0], "kind": 2, "subjectId": h[1], "accepted": True, "probeCommitment": h[2]})


def test_address_of_matches_eth_account() -> None:
    key = os.urandom(32)
    assert eip712.address_of(key) == Account.from_key(key).address


# EIP-55's own examples (all caps, all lower, mixed)
EIP55_EXAMPLES = ("0x52908400098527886E0F7030069857D2E4169EE7", "0xde709f2102306220921060314715629080e2fb77",
                  "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
                  "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb")


@pytest.mark.parametrize("address", EIP55_EXAMPLES)
def test_checksum_address_spells_the_eip55_examples(address: str) -> None:
    assert eip712.checksum_address(address.lower()) == address
    assert eip712.checksum_address("0x" + address[2:].upper()) == address
    assert eip712.checksum_address(bytes.fromhex(address[2:])) == address


def test_checksum_address_matches_eth_utils_on_random_addresses() -> None:
    from eth_utils import to_checksum_address

    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    for _ in range(2000):
        raw = rng.randbytes(20)
        assert eip712.checksum_address(raw) == to_checksum_address(raw), f"seed {seed}"


@pytest.mark.parametrize("bad", ["0x1234", "0x" + "zz" * 20, b"\x01" * 19, 12])
def test_checksum_address_refuses_what_is_not_an_address(bad) -> None:
    with pytest.raises(InvalidInputError):
        eip712.checksum_address(bad)


def test_signatures_are_low_s_and_recover_refuses_the_malleable_twin() -> None:
    key, digest = os.urandom(32), os.urandom(32)
    sig = eip712.sign(key, digest)
    s = int.from_bytes(sig[32:64], "big")
    assert s <= eip712.SECP256K1_N // 2 and sig[64] in (27, 28)
    twin = sig[:32] + (eip712.SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(InvalidInputError, match="lower half"):
        eip712.recover(digest, twin)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s[:64], "65 bytes"),
    (lambda s: s + b"\0", "65 bytes"),
    (lambda s: s[:64] + bytes([0]), "v must be 27 or 28"),
    (lambda s: s[:64] + bytes([1]), "v must be 27 or 28"),
    (lambda s: bytes(32) + s[32:], "out of range"),
])
def test_recover_rejects_malformed_signatures(mutate, message: str) -> None:
    digest = os.urandom(32)
    sig = eip712.sign(os.urandom(32), digest)
    with pytest.raises(InvalidInputError, match=message):
        eip712.recover(digest, mutate(sig))


def test_recover_of_another_digest_is_another_address() -> None:
    key = os.urandom(32)
    sig = eip712.sign(key, b"\x01" * 32)
    assert eip712.recover(b"\x02" * 32, sig) != eip712.address_of(key)


@pytest.mark.parametrize("values, message", [
    ({"setId": 1, "subjectId": b"\0" * 31, "enrolment": 1, "commitment": b"\0" * 32}, "subjectId must be 32 bytes"),
    ({"setId": -1, "subjectId": b"\0" * 32, "enrolment": 1, "commitment": b"\0" * 32}, "setId must be an integer"),
    ({"setId": 1, "subjectId": b"\0" * 32, "enrolment": 1}, "missing fields"),
    ({"setId": 1, "subjectId": b"\0" * 32, "enrolment": 1, "commitment": b"\0" * 32, "extra": 1},
     "unexpected fields"),
])
def test_bad_field_values_are_refused(values: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        eip712.struct_hash("ShareCommitment", values)


def test_uint_width_bool_and_address_are_checked() -> None:
    with pytest.raises(InvalidInputError, match=r"2\*\*32"):
        eip712.encode_word("uint32", 2 ** 32, "modelVersion")
    with pytest.raises(InvalidInputError, match="bool"):
        eip712.encode_word("bool", 1, "accepted")
    with pytest.raises(InvalidInputError, match="20 bytes"):
        eip712.encode_word("address", "0x1234")
    with pytest.raises(InvalidInputError, match="unknown EIP-712 type"):
        eip712.struct_hash("Nope", {})
    with pytest.raises(InvalidInputError, match="32 bytes"):
        eip712.sign(b"\x01" * 31, bytes(32))
