"""The hybrid part of `splitseal demo`: the MPC nodes run the backbone on shares, the enclave the head.

``run(stack, state_dir, say)`` on the demo's running stack (chain, enclave process): split the
digits classifier by ``rules/digits_hybrid.toml`` and provision its head, start two MPC node
processes (and the dealer) holding the backbone as shares, register them as a node set, send a
few hybrid requests, compare with the plaintext model, audit one, stop the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from splitseal.config import PROJECT_ROOT
from splitseal.errors import SplitsealError

if TYPE_CHECKING:
    from .stack import Stack

HYBRID_RULE = PROJECT_ROOT / "rules" / "digits_hybrid.toml"
#: the development account the relay delivers with (NODE_ROLE); the inference node uses account 2
RELAY_ACCOUNT = 4


def run(stack: "Stack", state_dir: Path, say: Callable[[str], None], requests: int = 3) -> list[int]:
    """Returns the hybrid requests' ids."""
    from chain_node.hybrid import HybridRelay
    from mpc.client import cluster as cl
    from mpc.client.owner import load_onnx
    from splitseal.enclave_client import EnclaveClient

    from .audit import Auditor
    from .hybrid import HybridRequester
    from .models.backbone import Backbone
    from .training import load_split, reference_model_path

    chain, deployment = stack.chain, stack.deployment
    _, _, x_test, y_test = load_split()
    served = stack.add_model("digits_classifier-hybrid", reference_model_path("digits_classifier"), HYBRID_RULE,
                             x_test[:128], sample_source="digits test split",
                             say=lambda line: say(f"[hybrid] {line.strip()}"))
    model_id, version = served.model_id, served.version
    cl.up(state_dir / "mpc", load_onnx(served.split_dir / "node" / "backbone.onnx"), parties=2, shared=True)
    mpc = cl.MpcClient(cl.ClusterInfo.load(state_dir / "mpc"))
    requester = stack.requester()
    ids = []
    try:
        set_id = cl.register_node_set(chain, deployment.feature_share_registry, mpc.addresses(), chain.account(0))
        say(f"[hybrid] 2 MPC node processes hold the backbone's weights in shares; node set {set_id}")
        relay_account = chain.account(RELAY_ACCOUNT)
        be = deployment.backbone_execution
        role = chain.call(be.functions.NODE_ROLE())
        if not chain.call(be.functions.hasRole(role, relay_account.address)):
            chain.transact(be.functions.grantRole(role, relay_account.address), sender=chain.account(0))
        plain = Backbone(reference_model_path("digits_classifier").read_bytes())
        with EnclaveClient(stack.state_dir / "enclave" / "enclave.sock") as enclave:
            relay = HybridRelay(chain, deployment, relay_account, enclave, blob_dir=stack.state_dir / "blobs")
            hybrid = HybridRequester(requester, mpc, set_id, relay, enclave.status().enclave)
            for i in range(requests):
                result = hybrid.infer(model_id, version, x_test[i], timeout=60)
                outcome = result.outcome
                if not outcome.ok:
                    raise SplitsealError(f"hybrid request {outcome.request_id} ended {outcome.status.name}: "
                                         f"{outcome.failure_reason}")
                expected = plain.run({plain.input_specs[0][0]: x_test[i:i + 1]})[plain.output_names[0]][0]
                diff = float(np.max(np.abs(np.asarray(outcome.scores) - expected)))
                say(f"[hybrid] request {outcome.request_id}: predicted {outcome.label} (true {y_test[i]}, plaintext "
                    f"{int(np.argmax(expected))}, scores within {diff:.1e}); shares from "
                    f"{len(result.delivery.contributions)} nodes; {result.seconds['total'] * 1e3:.0f} ms")
                ids.append(outcome.request_id)
        audit = Auditor(chain, deployment, blob_dir=stack.state_dir / "blobs").request(ids[-1])
        h = audit.hybrid
        say(f"[hybrid] audit of request {ids[-1]}: {'VERIFIED' if audit.verified else 'NOT VERIFIED'}; node set "
            f"{h.set_id} matches on-chain: {h.set_members_match}; every node's signed share: {h.signatures_verified}")
        if not audit.verified:
            raise SplitsealError(f"the audit of hybrid request {ids[-1]} does not verify: "
                                 + "; ".join(c.detail for c in audit.checks if not c.ok))
    finally:
        requester.close()
        mpc.close()
        cl.down(state_dir / "mpc")
    return ids
