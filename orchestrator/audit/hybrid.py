"""The audit of a hybrid request (splitseal.protocol.hybrid): which nodes contributed, and proof.

On top of the normal request checks (the enclave's signature covers the input commitment and the
transfer hash), for a request whose inline input is a manifest:

1. the manifest parses, and its nodes are exactly the members of its node set in
   ``FeatureShareRegistry`` (in set order);
2. completed requests: the contributions record is the one the transfer hash names (fetched from
   the blob store, ``blob:0x<transferHash>``), for this request, one share per manifest node in
   party order, each node's EIP-712 ``HybridShare`` signature recovering to that node;
3. the backbone output commitment recorded on-chain is keccak256 of the record's share hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitseal.chain import Chain, Deployment
from splitseal.errors import InvalidInputError
from splitseal.protocol import eip712, hybrid
from splitseal.protocol.crypto import keccak256


@dataclass
class HybridAudit:
    set_id: int
    nodes: list[str]
    input_commitments: list[str]
    set_members_match: bool = False
    #: per party: node, share hash, whether its signature recovers to it (completed requests)
    contributions: list[dict[str, Any]] = field(default_factory=list)
    signatures_verified: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"setId": self.set_id, "nodes": self.nodes, "inputCommitments": self.input_commitments,
                "setMembersMatch": self.set_members_match, "contributions": self.contributions,
                "signaturesVerified": self.signatures_verified}


def audit_hybrid(chain: Chain, deployment: Deployment, *, request_id: int, request: dict[str, Any],
                 backbone: dict[str, Any] | None, transfer: dict[str, Any] | None,
                 blob_dir: Path | None) -> tuple[HybridAudit | None, list[tuple[str, bool, str]]]:
    """Steps 1-3; returns the findings as (check name, ok, detail)."""
    from chain_node.hybrid import read_record
    from chain_node.inputs import BlobStore

    checks: list[tuple[str, bool, str]] = []
    inline, commitment = _b(request["inlineInput"]), _b(request["inputCommitment"])
    try:
        manifest = hybrid.decode_manifest(inline)
    except InvalidInputError as exc:
        checks.append(("hybrid manifest parses", False, str(exc)))
        return None, checks
    audit = HybridAudit(manifest.set_id, list(manifest.nodes), ["0x" + c.hex() for c in manifest.input_commitments])
    members = list(chain.call(deployment.feature_share_registry.functions.nodeSet(manifest.set_id)))
    audit.set_members_match = [m.lower() for m in members] == [n.lower() for n in manifest.nodes]
    checks.append((f"hybrid manifest names node set {manifest.set_id} of FeatureShareRegistry",
                   audit.set_members_match, f"manifest {list(manifest.nodes)}, on-chain {members}"))
    if transfer is None or backbone is None:
        return audit, checks
    transfer_hash = _b(transfer["transferHash"])
    if blob_dir is None:
        checks.append(("contributions record available", False,
                       f"the record named by transfer hash 0x{transfer_hash.hex()} is kept off-chain in the "
                       "relay's blob store; give its directory (--blobs)"))
        return audit, checks
    try:
        record = read_record(BlobStore(Path(blob_dir)), transfer_hash)
        rid, contributions = hybrid.decode_record(record)
    except InvalidInputError as exc:
        checks.append(("contributions record available", False, str(exc)))
        return audit, checks
    checks.append(("contributions record hashes to the transfer hash", keccak256(record) == transfer_hash,
                   f"0x{transfer_hash.hex()}"))
    parties = [c.party for c in contributions]
    nodes = [c.node.lower() for c in contributions]
    complete = rid == request_id and parties == list(range(manifest.parties)) and \
        nodes == [n.lower() for n in manifest.nodes]
    checks.append(("every node of the manifest contributed one share", complete,
                   f"record for request {rid}, parties {parties}, nodes {[c.node for c in contributions]}"))
    enclave = str(transfer["enclave"])
    ok_all = complete
    for c in contributions:
        digest = eip712.hybrid_share_digest(
            chain.chain_id, deployment.enclave_transfer.address, request_id=request_id,
            model_id=_b(request["modelId"]), model_version=int(request["version"]), input_commitment=commitment,
            enclave=enclave, party=c.party, share_hash=c.share_hash)
        try:
            signer = eip712.recover(digest, c.signature)
        except InvalidInputError as exc:
            signer = f"unrecoverable ({exc})"
        ok = signer.lower() == c.node.lower()
        ok_all = ok_all and ok
        audit.contributions.append({"party": c.party, "node": c.node, "shareHash": "0x" + c.share_hash.hex(),
                                    "signatureRecovers": ok})
    audit.signatures_verified = ok_all
    checks.append(("each node's HybridShare signature recovers to it", ok_all,
                   ", ".join(f"party {c['party']} {c['node']}: {'ok' if c['signatureRecovers'] else 'FAIL'}"
                             for c in audit.contributions)))
    expected = hybrid.output_commitment([c.share_hash for c in contributions])
    checks.append(("backbone output commitment is the hash of the sealed shares' hashes",
                   _b(backbone["outputCommitment"]) == expected, "0x" + expected.hex()))
    return audit, checks


def _b(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    return bytes(value)
