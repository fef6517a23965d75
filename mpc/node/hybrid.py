"""A node's part of a hybrid request (splitseal.protocol.hybrid, docs/PROTOCOL.md "Hybrid requests").

The node is sent, by the requester's terminal: its input share with the share's salt, the
request's public manifest, the request id, model id and version, the serving enclave's address
and encryption key, and the chain id and ``EnclaveTransfer`` (the signature's domain). In order:

1. the manifest must name this node's address at this node's position, with the cluster's
   number of parties, and its commitment at that position must equal
   ``keccak256(salt || input share)``: the node computes only on the share the request committed to;
2. the backbone runs on the shares (one MPC session with the other nodes, as for features);
3. the node's output share is sealed to the enclave (ECIES, AAD bound to request, model, version,
   enclave, input commitment, party and shape) and signed (EIP-712 ``HybridShare`` over the sealed
   share's keccak256).

The node answers with the sealed share and its signature: ciphertext for the enclave, nothing the
requester or the relay can open. It keeps nothing of the request.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from mpc.engine.ring import to_bytes_u64
from splitseal.errors import InvalidInputError
from splitseal.protocol import eip712, hybrid
from splitseal.protocol.crypto import keccak256


def _hex_bytes(meta: Mapping[str, Any], name: str, length: int | None = None) -> bytes:
    try:
        value = bytes.fromhex(str(meta[name]).removeprefix("0x"))
    except (KeyError, ValueError):
        raise InvalidInputError(f"hybrid request: {name!r} missing or not hex") from None
    if length is not None and len(value) != length:
        raise InvalidInputError(f"hybrid request: {name!r} must be {length} bytes, got {len(value)}")
    return value


def check_input_share(meta: Mapping[str, Any], party: int, parties: int, address: str | None,
                      share: np.ndarray) -> tuple[hybrid.Manifest, bytes]:
    """Step 1: the manifest and its commitment (the request's input commitment)."""
    if address is None:
        raise InvalidInputError("this node has no signing key (node-<i>/eth.key); it cannot take hybrid requests")
    manifest_bytes = _hex_bytes(meta, "manifest")
    manifest = hybrid.decode_manifest(manifest_bytes)
    if manifest.parties != parties:
        raise InvalidInputError(f"the hybrid manifest names {manifest.parties} nodes, this cluster has {parties}")
    if manifest.nodes[party].lower() != address.lower():
        raise InvalidInputError(f"the hybrid manifest names {manifest.nodes[party]} as party {party}, not this "
                                f"node ({address})")
    salt = _hex_bytes(meta, "salt", 32)
    if hybrid.input_share_commitment(salt, to_bytes_u64(share)) != manifest.input_commitments[party]:
        raise InvalidInputError(f"the input share sent to party {party} does not match the request's commitment "
                                "to it; the terminal must send the share it committed to")
    return manifest, keccak256(manifest_bytes)


def seal_and_sign(meta: Mapping[str, Any], party: int, manifest: hybrid.Manifest, input_commitment: bytes,
                  output_share: np.ndarray, eth_key: bytes) -> dict[str, Any]:
    """Step 3: the reply's metadata (sealed share and signature in hex)."""
    request_id = int(meta["request_id"])
    model_id = _hex_bytes(meta, "model_id", 32)
    version = int(meta["version"])
    enclave = str(meta["enclave"])
    sealed = hybrid.seal_share(_hex_bytes(meta, "encryption_key", 32), output_share, request_id=request_id,
                               model_id=model_id, version=version, enclave=enclave,
                               input_commitment=input_commitment, party=party, parties=manifest.parties,
                               frac_bits=manifest.frac_bits)
    digest = eip712.hybrid_share_digest(int(meta["chain_id"]), str(meta["transfer"]), request_id=request_id,
                                        model_id=model_id, model_version=version, input_commitment=input_commitment,
                                        enclave=enclave, party=party, share_hash=keccak256(sealed))
    return {"party": party, "sealed": sealed.hex(), "signature": eip712.sign(eth_key, digest).hex(),
            "shape": [int(d) for d in output_share.shape]}


def serve(meta: Mapping[str, Any], arrays: list[np.ndarray], *, party: int, parties: int, frac_bits: int,
          address: str | None, eth_key: bytes | None,
          run_backbone: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    """Steps 1-3 for one request; ``run_backbone`` runs the MPC session on the input share."""
    if len(arrays) != 1:
        raise InvalidInputError("a hybrid request carries exactly one input share")
    share = np.asarray(arrays[0], dtype=np.uint64)
    manifest, input_commitment = check_input_share(meta, party, parties, address, share)
    if manifest.frac_bits != frac_bits:
        raise InvalidInputError(f"the hybrid manifest says {manifest.frac_bits} fractional bits, this cluster "
                                f"computes with {frac_bits}")
    output = run_backbone(share)
    assert eth_key is not None  # checked with the address in step 1
    return seal_and_sign(meta, party, manifest, input_commitment, output, eth_key)
