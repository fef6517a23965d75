"""Inside the enclave: open the MPC nodes' sealed backbone-output shares of a hybrid request,
check each came from the node the request names, and reconstruct the backbone output.

Steps (the order matters: nothing is decrypted before the request's node set is known):

1. the manifest must hash to the request's input commitment (the chain binds that commitment to
   the request, and the result signature covers it) and parse (splitseal.protocol.hybrid);
2. exactly one share per manifest node, parties 0..N-1, none twice, none missing;
3. per share: it must open with the enclave's key and the AAD of this request, model, version,
   enclave, input commitment, party and shape (a share of another request, a replay, does not
   open), and the node's EIP-712 ``HybridShare`` signature over keccak256(sealed share) must
   recover to ``manifest.nodes[party]`` (a share from any other key is refused);
4. the shares are summed mod 2^64 and decoded with the manifest's fractional bits.

Returns the float32 backbone output and the contributions record whose keccak256 is the
transfer hash the enclave signs. Every refusal is a :class:`~enclave.core.EntryCallError` with
an on-chain failure code and a reason that names the party, never a share value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from splitseal.errors import InvalidInputError
from splitseal.protocol import FailureCode, crypto, eip712, hybrid

#: the largest sealed share accepted (a backbone output of 1 M elements)
MAX_SHARE_BYTES = 8 * 2**20 + crypto.ECIES_OVERHEAD


@dataclass(frozen=True)
class OpenedTransfer:
    """What the enclave reconstructed: the backbone output and the record it signs over."""

    output: np.ndarray
    record: bytes
    transfer_hash: bytes
    output_commitment: bytes
    contributions: tuple[hybrid.Contribution, ...]


def open_hybrid_transfer(*, refuse: Callable[[str, FailureCode], Exception], x25519: crypto.X25519KeyPair,
                         enclave: str, chain_id: int, transfer_contract: str, request_id: int, model_id: bytes,
                         version: int, input_commitment: bytes, manifest_bytes: bytes,
                         shares: Sequence[Any], shape: Sequence[int]) -> OpenedTransfer:
    """Steps 1-4 of the module doc; ``refuse(message, code)`` builds the exception to raise."""
    if crypto.keccak256(manifest_bytes) != input_commitment:
        raise refuse(f"hybrid request {request_id}: the manifest does not hash to the request's input "
                     "commitment; send the manifest the request was made with", FailureCode.INPUT_HASH_MISMATCH)
    try:
        manifest = hybrid.decode_manifest(manifest_bytes)
    except InvalidInputError as exc:
        raise refuse(f"hybrid request {request_id}: {exc}", FailureCode.BAD_INPUT) from None
    n = manifest.parties
    by_party: dict[int, dict[str, Any]] = {}
    for entry in shares:
        if not isinstance(entry, dict) or not isinstance(entry.get("party"), int) \
                or not isinstance(entry.get("sealed"), bytes) or not isinstance(entry.get("signature"), bytes):
            raise refuse("a share entry must be a map of party (int), sealed "
                         "(bytes) and signature (bytes)", FailureCode.BAD_INPUT)
        party = entry["party"]
        if not 0 <= party < n:
            raise refuse(f"a share names party {party}; the request's node set has parties 0..{n - 1}",
                         FailureCode.ENCLAVE_REFUSED)
        if party in by_party:
            raise refuse(f"party {party} sent two shares", FailureCode.ENCLAVE_REFUSED)
        if len(entry["sealed"]) > MAX_SHARE_BYTES:
            raise refuse(f"party {party}'s share is larger than "
                         f"{MAX_SHARE_BYTES} bytes", FailureCode.BAD_INPUT)
        by_party[party] = entry
    missing = [p for p in range(n) if p not in by_party]
    if missing:
        raise refuse(f"no share from part{'y' if len(missing) == 1 else 'ies'} {', '.join(map(str, missing))} "
                     f"({', '.join(manifest.nodes[p] for p in missing)}); every node of the set must contribute",
                     FailureCode.INPUT_UNAVAILABLE)
    size = 8
    for d in shape:
        size *= int(d)
    opened, contributions = [], []
    for party in range(n):
        entry = by_party[party]
        share_hash = crypto.keccak256(entry["sealed"])
        aad = hybrid.share_aad(request_id=request_id, model_id=model_id, version=version, enclave=enclave,
                               input_commitment=input_commitment, party=party, parties=n,
                               frac_bits=manifest.frac_bits, shape=shape)
        try:
            plain = crypto.ecies_decrypt(x25519, entry["sealed"], aad)
        except crypto.DecryptionError:
            raise refuse(f"party {party}'s share does not open: sealed for another request, party, enclave or "
                         "shape (a replay), or tampered",
                         FailureCode.ENCLAVE_REFUSED) from None
        if len(plain) != size:
            raise refuse(f"party {party}'s share holds {len(plain)} bytes, shape "
                         f"{list(shape)} needs {size}", FailureCode.SHAPE_MISMATCH)
        digest = eip712.hybrid_share_digest(
            chain_id, transfer_contract, request_id=request_id, model_id=model_id, model_version=version,
            input_commitment=input_commitment, enclave=enclave, party=party, share_hash=share_hash)
        try:
            signer = eip712.recover(digest, entry["signature"])
        except InvalidInputError:
            signer = "no key"
        member = manifest.nodes[party]
        if signer.lower() != member.lower():
            raise refuse(f"party {party}'s share is signed by {signer}, a non-member: the request names "
                         f"{member}", FailureCode.ENCLAVE_REFUSED)
        opened.append(np.frombuffer(plain, dtype="<u8").reshape(tuple(shape)))
        contributions.append(hybrid.Contribution(party, member, share_hash, entry["signature"]))
    record = hybrid.encode_record(request_id, contributions)
    return OpenedTransfer(hybrid.reconstruct(opened, manifest.frac_bits), record, crypto.keccak256(record),
                          hybrid.output_commitment([c.share_hash for c in contributions]), tuple(contributions))
