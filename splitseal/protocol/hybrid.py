"""The hybrid mode's protocol facts (docs/PROTOCOL.md, "Hybrid requests"): MPC nodes run the
backbone on secret shares, each seals its share of the backbone output to the enclave, the
enclave reconstructs it and runs the head.

Shared by the requester (builds the manifest), the MPC nodes (seal and sign their output share),
the enclave (opens, checks and reconstructs) and the auditor (checks the contributions record):

* **Manifest** — the request's inline input, public, on-chain, packed (it is calldata and event
  data, paid per byte): ``MANIFEST_MAGIC || uint64 setId || uint8 fracBits || uint8 N ||
  N x (address node || bytes32 inputCommitment)``; ``inputCommitment = keccak256(manifest)``. ``nodes[i]`` is the address of the node that holds
  input share i; ``input_commitments[i] = keccak256(salt_i || share_i as little-endian uint64)``
  (the salt travels with the share to node i only). Commitments and addresses, no data.
* **Sealed output share** — ECIES to the enclave's key (:func:`splitseal.protocol.crypto.ecies_encrypt`)
  with :func:`share_aad` (request, model, version, enclave, input commitment, party, parties,
  fractional bits, shape): a share moved to another request, party, enclave or shape does not open.
* **Node signature** — EIP-712 ``HybridShare`` (:func:`splitseal.protocol.eip712.hybrid_share_digest`)
  over the sealed share's keccak256, domain = the model's ``EnclaveTransfer``: the enclave accepts a
  share only from the manifest's node at that position.
* **Contributions record** — canonical JSON of who contributed which sealed share with which
  signature; the chain's ``transferHash`` is its keccak256 and ``outputCommitment`` the keccak256
  of the share hashes in party order. The enclave builds it from the shares it verified and signs
  the result over it; the relay stores it in the blob store under ``blob:0x<transferHash>``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Sequence

from splitseal.errors import InvalidInputError

from . import eip712
from .crypto import _address, _b32, _u32, _u256, keccak256

MANIFEST_MAGIC = b"splitseal.hybrid.v1\n"
RECORD_FORMAT = "splitseal.hybrid-transfer.v1"
AAD_SHARE = b"splitseal.hybrid-share.v1"
#: the ring of the shares: Z_2^64, two's complement
RING_BITS = 64
MAX_PARTIES = 8
MAX_SHARE_DIMS = 8


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _checksum(address: str) -> str:
    return eip712.checksum_address(_address(address))


@dataclass(frozen=True)
class Manifest:
    """What a hybrid request commits to: the node set, each node's input share commitment."""

    set_id: int
    nodes: tuple[str, ...]
    input_commitments: tuple[bytes, ...]
    frac_bits: int = 16

    def __post_init__(self) -> None:
        if not 2 <= len(self.nodes) <= MAX_PARTIES:
            raise InvalidInputError(f"a hybrid manifest names 2 to {MAX_PARTIES} nodes, not {len(self.nodes)}")
        if len(self.input_commitments) != len(self.nodes):
            raise InvalidInputError(f"a hybrid manifest needs one input commitment per node: "
                                    f"{len(self.nodes)} nodes, {len(self.input_commitments)} commitments")
        if len({n.lower() for n in self.nodes}) != len(self.nodes):
            raise InvalidInputError("a hybrid manifest names a node twice")
        if not 0 <= int(self.set_id) < 2**64:
            raise InvalidInputError(f"node set id {self.set_id} does not fit uint64")
        if not 1 <= int(self.frac_bits) <= 32:
            raise InvalidInputError(f"fractional bits must be 1..32, got {self.frac_bits}")

    @property
    def parties(self) -> int:
        return len(self.nodes)

    def encode(self) -> bytes:
        out = [MANIFEST_MAGIC, struct.pack(">QBB", int(self.set_id), int(self.frac_bits), self.parties)]
        for node, commitment in zip(self.nodes, self.input_commitments):
            out.append(_address(node) + _b32(commitment, "input commitment"))
        return b"".join(out)

    def commitment(self) -> bytes:
        """The request's ``inputCommitment``."""
        return keccak256(self.encode())


def is_manifest(inline_input: bytes) -> bool:
    """True for a hybrid request's inline input (an inference node leaves such requests alone)."""
    return bytes(inline_input).startswith(MANIFEST_MAGIC)


def decode_manifest(data: bytes) -> Manifest:
    """Parse a manifest; raises :class:`InvalidInputError` saying what is wrong."""
    data = bytes(data)
    if not is_manifest(data):
        raise InvalidInputError("not a hybrid manifest (it does not start with the splitseal.hybrid.v1 magic)")
    head = len(MANIFEST_MAGIC)
    if len(data) < head + 10:
        raise InvalidInputError(f"the hybrid manifest is truncated ({len(data)} bytes)")
    set_id, frac_bits, n = struct.unpack(">QBB", data[head:head + 10])
    body = data[head + 10:]
    if len(body) != n * 52:
        raise InvalidInputError(f"the hybrid manifest names {n} nodes but carries {len(body)} bytes for them, "
                                f"not {n * 52}")
    entries = [body[i * 52:(i + 1) * 52] for i in range(n)]
    return Manifest(set_id, tuple(_checksum("0x" + e[:20].hex()) for e in entries), tuple(e[20:] for e in entries),
                    frac_bits)


def input_share_commitment(salt: bytes, share_bytes: bytes) -> bytes:
    """``keccak256(salt || share as little-endian uint64)``: the same as a feature-share commitment."""
    return keccak256(_b32(salt, "salt") + bytes(share_bytes))


def share_aad(*, request_id: int, model_id: bytes, version: int, enclave: bytes | str, input_commitment: bytes,
              party: int, parties: int, frac_bits: int, shape: Sequence[int]) -> bytes:
    """Additional data of one node's output share sealed to the enclave (never transmitted)."""
    shape = tuple(int(d) for d in shape)
    if not 0 <= party < parties <= MAX_PARTIES:
        raise InvalidInputError(f"party {party} of {parties} is out of range")
    if not 1 <= len(shape) <= MAX_SHARE_DIMS or any(not 0 < d < 2**32 for d in shape):
        raise InvalidInputError(f"share shape {shape} is empty or out of range")
    return (AAD_SHARE + _u256(request_id, "request id") + _b32(model_id, "model id") + _u32(version, "model version")
            + _address(enclave) + _b32(input_commitment, "input commitment")
            + bytes([party, parties, int(frac_bits), len(shape)]) + b"".join(struct.pack(">I", d) for d in shape))


def seal_share(enclave_public: bytes, share: Any, *, request_id: int, model_id: bytes, version: int,
               enclave: bytes | str, input_commitment: bytes, party: int, parties: int, frac_bits: int) -> bytes:
    """ECIES-seal a node's uint64 output share to the enclave, bound to the request and party."""
    import numpy as np  # local: the module stays importable without numpy

    from .crypto import ecies_encrypt

    arr = np.ascontiguousarray(share, dtype="<u8")
    aad = share_aad(request_id=request_id, model_id=model_id, version=version, enclave=enclave,
                    input_commitment=input_commitment, party=party, parties=parties, frac_bits=frac_bits,
                    shape=arr.shape)
    return ecies_encrypt(enclave_public, arr.tobytes(), aad)


def reconstruct(shares: Sequence[Any], frac_bits: int) -> Any:
    """Sum the uint64 shares mod 2^64 and decode the fixed point (two's complement) to float32."""
    import numpy as np

    total = np.zeros_like(np.asarray(shares[0], dtype=np.uint64))
    for s in shares:
        total += np.asarray(s, dtype=np.uint64)  # wraps mod 2^64, as the ring does
    return (total.view(np.int64).astype(np.float64) / float(1 << int(frac_bits))).astype(np.float32)


@dataclass(frozen=True)
class Contribution:
    """One node's part of a hybrid transfer, as the enclave verified it."""

    party: int
    node: str
    share_hash: bytes
    signature: bytes


def encode_record(request_id: int, contributions: Sequence[Contribution]) -> bytes:
    """The contributions record; ``transferHash = keccak256(record)``."""
    doc = {"format": RECORD_FORMAT, "request_id": int(request_id),
           "shares": [{"party": c.party, "node": _checksum(c.node), "share_hash": "0x" + c.share_hash.hex(),
                       "signature": "0x" + bytes(c.signature).hex()} for c in sorted(contributions, key=lambda c: c.party)]}
    return _canonical(doc)


def decode_record(data: bytes) -> tuple[int, list[Contribution]]:
    try:
        doc = json.loads(bytes(data))
        if doc.get("format") != RECORD_FORMAT:
            raise InvalidInputError(f"contributions record format {doc.get('format')!r}, expected {RECORD_FORMAT!r}")
        shares = [Contribution(int(s["party"]), str(s["node"]), bytes.fromhex(s["share_hash"][2:]),
                               bytes.fromhex(s["signature"][2:])) for s in doc["shares"]]
        return int(doc["request_id"]), shares
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"the contributions record is malformed: {exc}") from None


def output_commitment(share_hashes: Sequence[bytes]) -> bytes:
    """The on-chain ``outputCommitment`` of a hybrid request: keccak256 of the sealed shares' hashes
    in party order (nobody outside the enclave holds the backbone output to commit to)."""
    return keccak256(b"".join(_b32(h, "share hash") for h in share_hashes))
