"""The one Python implementation of the splitseal EIP-712 structs (docs/PROTOCOL.md).

The enclave signs with it; the requester, the auditor and the tests verify with it; the
contracts check the same bytes (``contracts/src/lib/Signatures.sol``, on OpenZeppelin's EIP712,
and each contract's ``_*_TYPEHASH``). Only ``keccak256`` of :mod:`splitseal.protocol.crypto` and
``coincurve`` are used: the enclave package stays free of chain libraries (web3, eth_account).
The EIP-55 checksum is written here on that keccak rather than taken from ``eth_utils``, whose
``to_checksum_address`` (pure-Python keccak behind ``eth_hash``) cost 0.13-0.22 ms per address in
the enclave's ``infer`` under load; this one costs a few microseconds and caches the addresses it
has seen (a node's few requesters and contracts).

Protocol:
1. domain separator = keccak256(abi.encode(keccak256("EIP712Domain(string name,string
   version,uint256 chainId,address verifyingContract)"), keccak256("splitseal"),
   keccak256("1"), chainId, verifyingContract));
2. struct hash = keccak256(abi.encode(typeHash, field...)) with every field a static type
   (address, bytes32, uintN, bool), each encoded as one 32-byte word;
3. digest = keccak256("\\x19\\x01" || domain separator || struct hash);
4. signature = secp256k1 ``r || s || v`` with low ``s`` and ``v`` in {27, 28}.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Union

from coincurve import PrivateKey, PublicKey
from splitseal.errors import InvalidInputError

from .crypto import keccak256

log = logging.getLogger(__name__)

Address = Union[str, bytes]

NAME = "splitseal"
VERSION = "1"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"

#: The type strings, exactly as in docs/PROTOCOL.md and the contracts.
TYPES: dict[str, str] = {
    "EnclaveRegistration": "EnclaveRegistration(address enclave,bytes32 encryptionKey,bytes32 measurement,bytes32 nonce)",
    "HeadLoaded": ("HeadLoaded(bytes32 modelId,uint32 modelVersion,address enclave,bytes32 headGraphHash,"
                   "bytes32 headParamsHash,bytes32 packageHash,uint64 stateVersion)"),
    "IndexVerified": ("IndexVerified(bytes32 modelId,uint32 modelVersion,address enclave,bytes32 encryptedIndexHash,"
                      "bytes32 merkleRoot,uint32 entryCount)"),
    "InferenceResult": ("InferenceResult(uint256 requestId,bytes32 modelId,uint32 modelVersion,bytes32 inputCommitment,"
                        "address requester,bytes32 requesterKey,bytes32 transferHash,bytes32 resultCommitment,"
                        "uint64 sequence,bool hasLabel,bytes32 label)"),
    "ShareCommitment": "ShareCommitment(uint256 setId,bytes32 subjectId,uint32 enrolment,bytes32 commitment)",
    "Decision": ("Decision(uint256 setId,bytes32 sessionId,uint8 kind,bytes32 subjectId,bool accepted,"
                 "bytes32 probeCommitment)"),
}
#: Types signed for a party off-chain, not for a contract (the enclave checks them; the domain's
#: ``verifyingContract`` still names the contract whose request they belong to).
OFFCHAIN_TYPES: dict[str, str] = {
    "HybridShare": ("HybridShare(uint256 requestId,bytes32 modelId,uint32 modelVersion,bytes32 inputCommitment,"
                    "address enclave,uint8 party,bytes32 shareHash)"),
}

#: secp256k1 group order, and half of it (the low-s bound).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2


def _fields(type_string: str) -> list[tuple[str, str]]:
    """[(solidity type, name), ...] of a flat type string ``Name(t1 n1,t2 n2)``."""
    inner = type_string[type_string.index("(") + 1:-1]
    return [tuple(part.split(" ")) for part in inner.split(",")]  # type: ignore[misc]


_ALL_TYPES = {**TYPES, **OFFCHAIN_TYPES}
_FIELDS: dict[str, list[tuple[str, str]]] = {name: _fields(t) for name, t in _ALL_TYPES.items()}
TYPE_HASHES: dict[str, bytes] = {name: keccak256(t.encode()) for name, t in _ALL_TYPES.items()}
DOMAIN_TYPE_HASH = keccak256(DOMAIN_TYPE.encode())
_NAME_HASH, _VERSION_HASH = keccak256(NAME.encode()), keccak256(VERSION.encode())


# --- encoding ------------------------------------------------------------------------------

def address_bytes(value: Address) -> bytes:
    """20 bytes of an address given as 0x hex (any case) or raw bytes."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        text = value[2:] if value[:2].lower() == "0x" else value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise InvalidInputError(f"address {value!r} is not hex") from None
    else:
        raise InvalidInputError(f"address must be hex text or 20 bytes, not {type(value).__name__}")
    if len(raw) != 20:
        raise InvalidInputError(f"address must be 20 bytes, got {len(raw)}")
    return raw


def checksum_address(value: Address) -> str:
    """The EIP-55 mixed-case spelling of an address given as 0x hex (any case) or 20 bytes."""
    return _checksum_of(address_bytes(value))


@functools.lru_cache(maxsize=4096)
def _checksum_of(raw: bytes) -> str:
    text = raw.hex()
    nibbles = keccak256(text.encode("ascii")).hex()
    # EIP-55: a hex letter is upper case where the keccak of the lower-case text has a nibble >= 8
    return "0x" + "".join(c.upper() if c > "9" and n >= "8" else c for c, n in zip(text, nibbles))


def encode_word(sol_type: str, value: Any, name: str = "value") -> bytes:
    """ABI encoding of one static value as a 32-byte word."""
    return _word_encoder(sol_type)(value, name)


def _address_word(value: Any, name: str) -> bytes:
    return address_bytes(value).rjust(32, b"\0")


def _bytes32_word(value: Any, name: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise InvalidInputError(f"{name} must be 32 bytes")
    return bytes(value)


def _bool_word(value: Any, name: str) -> bytes:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a bool")
    return int(value).to_bytes(32, "big")


@functools.lru_cache(maxsize=None)
def _word_encoder(sol_type: str) -> Any:
    """The encoder of one static type, made once per type (every answer signs and every check
    verifies an 11-field struct)."""
    if sol_type == "address":
        return _address_word
    if sol_type == "bytes32":
        return _bytes32_word
    if sol_type == "bool":
        return _bool_word
    if sol_type.startswith("uint"):
        bits = int(sol_type[4:] or 256)
        bound = 2 ** bits

        def uint_word(value: Any, name: str) -> bytes:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < bound:
                raise InvalidInputError(f"{name} must be an integer in [0, 2**{bits})")
            return value.to_bytes(32, "big")

        return uint_word
    raise InvalidInputError(f"unsupported EIP-712 field type {sol_type}")


def domain_separator(chain_id: int, verifying_contract: Address) -> bytes:
    """The splitseal domain separator for one chain and verifying contract."""
    return _domain_separator(encode_word("uint256", chain_id, "chainId"), encode_word("address", verifying_contract))


@functools.lru_cache(maxsize=256)
def _domain_separator(chain_word: bytes, contract_word: bytes) -> bytes:
    # every answer is signed and checked for the same few contracts: three keccaks saved each time
    return keccak256(DOMAIN_TYPE_HASH + _NAME_HASH + _VERSION_HASH + chain_word + contract_word)


def struct_hash(type_name: str, values: Mapping[str, Any]) -> bytes:
    """keccak256(typeHash || fields) of ``type_name`` with ``values`` keyed by the Solidity names."""
    try:
        fields, names = _ENCODERS[type_name], _NAMES[type_name]
    except KeyError:
        raise InvalidInputError(f"unknown EIP-712 type {type_name}; known: {', '.join(TYPES)}") from None
    if values.keys() != names:
        missing = [n for _, n in _FIELDS[type_name] if n not in values]
        extra = sorted(set(values) - names)
        raise InvalidInputError(f"{type_name}: missing fields {missing}, unexpected fields {extra}")
    return keccak256(TYPE_HASHES[type_name] + b"".join([encode(values[n], n) for n, encode in fields]))


#: per type, (field name, its word encoder) in order, and the set of field names
_ENCODERS = {t: tuple((n, _word_encoder(sol)) for sol, n in fields) for t, fields in _FIELDS.items()}
_NAMES = {t: frozenset(n for _, n in fields) for t, fields in _FIELDS.items()}


def typed_digest(chain_id: int, verifying_contract: Address, type_name: str, values: Mapping[str, Any]) -> bytes:
    """The EIP-712 digest keccak256("\\x19\\x01" || domain || structHash)."""
    return keccak256(b"\x19\x01" + domain_separator(chain_id, verifying_contract) + struct_hash(type_name, values))


@dataclass(frozen=True)
class Domain:
    """A signing domain: the chain and the contract that checks the signature."""

    chain_id: int
    verifying_contract: str

    def separator(self) -> bytes:
        return domain_separator(self.chain_id, self.verifying_contract)

    def digest(self, type_name: str, values: Mapping[str, Any]) -> bytes:
        return typed_digest(self.chain_id, self.verifying_contract, type_name, values)


# --- the six structs -----------------------------------------------------------------------
# Keyword arguments in Python spelling; ``verifying_contract`` is the checking contract named in
# docs/PROTOCOL.md (ModelRegistry, ParameterIndex, EnclaveTransfer, FeatureShareRegistry).

def enclave_registration_digest(chain_id: int, verifying_contract: Address, *, enclave: Address,
                                encryption_key: bytes, measurement: bytes, nonce: bytes) -> bytes:
    """Signed by the enclave key, checked by ``ModelRegistry.registerEnclave``."""
    return typed_digest(chain_id, verifying_contract, "EnclaveRegistration", {
        "enclave": enclave, "encryptionKey": encryption_key, "measurement": measurement, "nonce": nonce})


def head_loaded_digest(chain_id: int, verifying_contract: Address, *, model_id: bytes, model_version: int,
                       enclave: Address, head_graph_hash: bytes, head_params_hash: bytes, package_hash: bytes,
                       state_version: int) -> bytes:
    """Signed by the enclave key, checked by ``ModelRegistry.confirmHeadLoaded``."""
    return typed_digest(chain_id, verifying_contract, "HeadLoaded", {
        "modelId": model_id, "modelVersion": model_version, "enclave": enclave, "headGraphHash": head_graph_hash,
        "headParamsHash": head_params_hash, "packageHash": package_hash, "stateVersion": state_version})


def index_verified_digest(chain_id: int, verifying_contract: Address, *, model_id: bytes, model_version: int,
                          enclave: Address, encrypted_index_hash: bytes, merkle_root: bytes,
                          entry_count: int) -> bytes:
    """Signed by the enclave key, checked by ``ParameterIndex.confirmIndex``."""
    return typed_digest(chain_id, verifying_contract, "IndexVerified", {
        "modelId": model_id, "modelVersion": model_version, "enclave": enclave,
        "encryptedIndexHash": encrypted_index_hash, "merkleRoot": merkle_root, "entryCount": entry_count})


def inference_result_digest(chain_id: int, verifying_contract: Address, *, request_id: int, model_id: bytes,
                            model_version: int, input_commitment: bytes, requester: Address, requester_key: bytes,
                            transfer_hash: bytes, result_commitment: bytes, sequence: int,
                            has_label: bool = False, label: bytes = bytes(32)) -> bytes:
    """Signed by the enclave key, checked by ``EnclaveTransfer.submitResult``: the result is for
    this requester and this key only, is the enclave's ``sequence``-th answer, and carries the
    public ``label`` (``public_label`` output policy) or none (``has_label`` false, zero label)."""
    return typed_digest(chain_id, verifying_contract, "InferenceResult", {
        "requestId": request_id, "modelId": model_id, "modelVersion": model_version,
        "inputCommitment": input_commitment, "requester": requester, "requesterKey": requester_key,
        "transferHash": transfer_hash, "resultCommitment": result_commitment, "sequence": sequence,
        "hasLabel": has_label, "label": label})


def share_commitment_digest(chain_id: int, verifying_contract: Address, *, set_id: int, subject_id: bytes,
                            enrolment: int, commitment: bytes) -> bytes:
    """Signed by an MPC node for its own share of the subject's ``enrolment``-th enrolment."""
    return typed_digest(chain_id, verifying_contract, "ShareCommitment", {
        "setId": set_id, "subjectId": subject_id, "enrolment": enrolment, "commitment": commitment})


def decision_digest(chain_id: int, verifying_contract: Address, *, set_id: int, session_id: bytes, kind: int,
                    subject_id: bytes, accepted: bool, probe_commitment: bytes) -> bytes:
    """Signed by every MPC node of a set, checked by ``FeatureShareRegistry.recordDecision``."""
    return typed_digest(chain_id, verifying_contract, "Decision", {
        "setId": set_id, "sessionId": session_id, "kind": kind, "subjectId": subject_id,
        "accepted": accepted, "probeCommitment": probe_commitment})


def hybrid_share_digest(chain_id: int, verifying_contract: Address, *, request_id: int, model_id: bytes,
                        model_version: int, input_commitment: bytes, enclave: Address, party: int,
                        share_hash: bytes) -> bytes:
    """Signed by an MPC node for its sealed backbone-output share of a hybrid request
    (``verifying_contract`` = the model's EnclaveTransfer), checked by the enclave and the auditor."""
    return typed_digest(chain_id, verifying_contract, "HybridShare", {
        "requestId": request_id, "modelId": model_id, "modelVersion": model_version,
        "inputCommitment": input_commitment, "enclave": enclave, "party": party, "shareHash": share_hash})


# --- keys and signatures -------------------------------------------------------------------

def signing_key(private_key: bytes) -> PrivateKey:
    """A key to pass to :func:`sign` again and again: building it from the 32 bytes derives the
    public key (~0.1 ms), which a signer of every answer need do once only."""
    return _private_key(private_key)


def _private_key(private_key: "bytes | PrivateKey") -> PrivateKey:
    if isinstance(private_key, PrivateKey):
        return private_key
    if not isinstance(private_key, (bytes, bytearray)) or len(private_key) != 32:
        raise InvalidInputError("a secp256k1 private key must be 32 bytes")
    try:
        return PrivateKey(bytes(private_key))
    except ValueError:
        raise InvalidInputError("the private key is not a valid secp256k1 scalar") from None


def address_of(private_key: bytes) -> str:
    """Checksummed Ethereum address of a secp256k1 private key."""
    return public_key_address(_private_key(private_key).public_key.format(compressed=False))


def public_key_address(uncompressed: bytes) -> str:
    """Checksummed address of a 65-byte uncompressed public key (0x04 || x || y)."""
    return checksum_address(keccak256(uncompressed[1:])[-20:])


def sign(private_key: "bytes | PrivateKey", digest: bytes) -> bytes:
    """65-byte signature ``r || s || v`` (low s, v in {27, 28}) of a 32-byte digest; the key as 32
    bytes or as :func:`signing_key` made it."""
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
        raise InvalidInputError("the digest to sign must be 32 bytes")
    raw = _private_key(private_key).sign_recoverable(bytes(digest), hasher=None)  # r || s || recid
    r, s, recid = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
    if s > _HALF_N:  # libsecp256k1 already normalizes; kept so the guarantee does not depend on it
        s, recid = SECP256K1_N - s, recid ^ 1
    return r + s.to_bytes(32, "big") + bytes([27 + recid])


def recover(digest: bytes, signature: bytes) -> str:
    """The checksummed address that signed ``digest``.

    Rejects what the contracts reject (``contracts/src/lib/Signatures.sol``, on OpenZeppelin's
    ``ECDSA.tryRecoverCalldata``): a length other than 65, ``v`` outside {27, 28}, a high ``s``
    (the malleable twin). Raises :class:`InvalidInputError`.
    """
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
        raise InvalidInputError("the signed digest must be 32 bytes")
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != 65:
        length = len(signature) if isinstance(signature, (bytes, bytearray)) else type(signature).__name__
        raise InvalidInputError(f"a signature is 65 bytes r || s || v, got {length}")
    r, s, v = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
    if v not in (27, 28):
        raise InvalidInputError(f"signature v must be 27 or 28, got {v}")
    if not 0 < r < SECP256K1_N or not 0 < s <= _HALF_N:
        raise InvalidInputError("signature r or s is out of range (s must be in the lower half of the order)")
    try:
        public = PublicKey.from_signature_and_message(bytes(signature[:64]) + bytes([v - 27]), bytes(digest),
                                                      hasher=None)
    except Exception:  # coincurve raises a bare Exception when no key recovers
        raise InvalidInputError("signature does not recover to any public key") from None
    return public_key_address(public.format(compressed=False))
