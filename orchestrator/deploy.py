"""Deploy the five contracts in order, link them, and record the deployment.

``deployments/<chain_id>.json`` holds addresses, the block, transaction hashes and the sha256 of
each artifact. Deploying again finds a live deployment (code present at every address, artifacts
unchanged) and returns it instead of deploying twice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from splitseal.chain import ZERO_ADDRESS, Chain, Deployment, deployment_path, load_deployment
from splitseal.errors import DeploymentError

log = logging.getLogger(__name__)


def deploy_all(chain: Chain, admin: LocalAccount, *, quoting_key: str = ZERO_ADDRESS,
               progress: Callable[[str], None] | None = None) -> Deployment:
    """Deploy and link the five contracts; ``admin`` holds every admin role. ``progress`` hears
    of each transaction before it is sent (each waits for its block)."""
    start_block = chain.block_number()
    txs: dict[str, str] = {}
    say = progress or (lambda message: None)
    numbers = iter(range(1, 6))

    def deploy(name: str, *args: Any) -> Contract:
        say(f"deploying {name} ({next(numbers)}/5) on chain {chain.chain_id}")
        contract, receipt = chain.deploy_with_receipt(name, *args, sender=admin)
        txs[name] = receipt["transactionHash"].to_0x_hex()
        log.info("deployed %s at %s tx=%s", name, contract.address, txs[name])
        return contract

    registry = deploy("ModelRegistry", admin.address, quoting_key)
    index = deploy("ParameterIndex", registry.address)
    backbone = deploy("BackboneExecution", admin.address, registry.address)
    # BackboneExecution deploys and links its EnclaveTransfer in its constructor (an immutable
    # link: no delivery pays for reading it)
    transfer = chain.contract("EnclaveTransfer", chain.call(backbone.functions.enclaveTransfer()))
    txs["EnclaveTransfer"] = txs["BackboneExecution"]
    say(f"EnclaveTransfer at {transfer.address}, deployed and linked by BackboneExecution")
    features = deploy("FeatureShareRegistry", admin.address)
    return Deployment(chain_id=chain.chain_id, block=start_block + 1, admin=admin.address,
                      model_registry=registry, parameter_index=index, backbone_execution=backbone,
                      enclave_transfer=transfer, feature_share_registry=features, tx_hashes=txs)


def ensure_deployed(chain: Chain, admin: LocalAccount, *, home: Path, quoting_key: str = ZERO_ADDRESS,
                    record: bool = True, progress: Callable[[str], None] | None = None) -> Deployment:
    """Reuse the live deployment recorded for this chain under ``home``, else deploy and record it."""
    path = deployment_path(chain.chain_id, home)
    if path.exists():
        try:
            deployment = load_deployment(chain, home)
            log.info("found live deployment on chain %d in %s", chain.chain_id, path)
            return deployment
        except DeploymentError as exc:
            log.info("redeploying: %s", exc)
    deployment = deploy_all(chain, admin, quoting_key=quoting_key, progress=progress)
    if record:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(deployment.to_json(), indent=2) + "\n")
    return deployment
