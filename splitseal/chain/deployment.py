"""The deployment record of one chain: the five contracts' addresses, block, transactions and
artifact hashes (``deployments/<chain_id>.json`` under the configured home), and loading it back.

Loading checks that every contract has code and was built from the committed artifact; deploying
lives with the operator tools (``orchestrator.deploy``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3.contract import Contract

from splitseal.errors import DeploymentError

from .artifacts import load_artifact
from .client import Chain

log = logging.getLogger(__name__)

#: Deployment records, relative to the configured home.
DEPLOYMENTS_DIR = Path("deployments")
CONTRACTS = ("ModelRegistry", "ParameterIndex", "BackboneExecution", "EnclaveTransfer", "FeatureShareRegistry")
ZERO_ADDRESS = "0x" + "00" * 20


@dataclass
class Deployment:
    """The deployed system on one chain."""

    chain_id: int
    block: int
    admin: str
    model_registry: Contract
    parameter_index: Contract
    backbone_execution: Contract
    enclave_transfer: Contract
    feature_share_registry: Contract
    tx_hashes: dict[str, str] = field(default_factory=dict)
    reused: bool = False

    def contracts(self) -> dict[str, Contract]:
        return {"ModelRegistry": self.model_registry, "ParameterIndex": self.parameter_index,
                "BackboneExecution": self.backbone_execution, "EnclaveTransfer": self.enclave_transfer,
                "FeatureShareRegistry": self.feature_share_registry}

    def to_json(self) -> dict[str, Any]:
        return {
            "chainId": self.chain_id,
            "block": self.block,
            "admin": self.admin,
            "contracts": {name: c.address for name, c in self.contracts().items()},
            "txHashes": self.tx_hashes,
            "artifacts": {name: artifact_sha256(name) for name in CONTRACTS},
        }


def artifact_sha256(name: str) -> str:
    artifact = load_artifact(name)
    return hashlib.sha256((artifact["bytecode"] + json.dumps(artifact["abi"], sort_keys=True)).encode()).hexdigest()


def deployment_path(chain_id: int, home: Path) -> Path:
    return Path(home) / DEPLOYMENTS_DIR / f"{chain_id}.json"


def load_deployment(chain: Chain, home: Path) -> Deployment:
    """The deployment recorded for this chain under ``home``; :class:`DeploymentError` if absent
    or stale."""
    path = deployment_path(chain.chain_id, home)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeploymentError(f"no deployment recorded for chain {chain.chain_id} ({path}); "
                              f"run `splitseal deploy --chain {chain.name}` first") from None
    problems = []
    for name in CONTRACTS:
        address = record["contracts"].get(name)
        if not address or not chain.code(address):
            problems.append(f"{name} has no code at {address}")
        elif record.get("artifacts", {}).get(name) != artifact_sha256(name):
            problems.append(f"{name} at {address} was built from an older artifact")
    if problems:
        raise DeploymentError(f"deployment in {path} is not live on chain {chain.chain_id}: "
                              + "; ".join(problems) + ". Deploy again.")
    c = {name: chain.contract(name, record["contracts"][name]) for name in CONTRACTS}
    return Deployment(chain_id=record["chainId"], block=record["block"], admin=record["admin"],
                      model_registry=c["ModelRegistry"], parameter_index=c["ParameterIndex"],
                      backbone_execution=c["BackboneExecution"], enclave_transfer=c["EnclaveTransfer"],
                      feature_share_registry=c["FeatureShareRegistry"],
                      tx_hashes=record.get("txHashes", {}), reused=True)
