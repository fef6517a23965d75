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

from splitseal.errors import DeploymentError, InvalidInputError

from .artifacts import load_artifact
from .client import Chain
from .logs import event_topic

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


def runtime_code_matches(chain: Chain, name: str, address: str) -> tuple[bool, str]:
    """Whether the runtime code at ``address`` is the committed artifact of ``name``, with the
    byte ranges the constructor fills (immutables) masked on both sides; and what was found."""
    artifact = load_artifact(name)
    expected = bytes.fromhex(artifact["deployedBytecode"][2:])
    found = bytes(chain.code(address))
    if not found:
        return False, f"no code at {address}"
    if len(found) != len(expected):
        return False, f"{len(found)} bytes of code at {address}, the artifact has {len(expected)}"
    a, b = bytearray(found), bytearray(expected)
    for start, length in artifact.get("immutableReferences", []):
        a[start:start + length] = b[start:start + length] = bytes(length)
    if a != b:
        first = next(i for i in range(len(a)) if a[i] != b[i])
        return False, f"code at {address} differs from contracts/build/{name}.json from byte {first}"
    return True, f"{len(found)} bytes equal to contracts/build/{name}.json (immutables masked)"


def load_deployment(chain: Chain, home: Path, *, path: Path | None = None) -> Deployment:
    """The deployment recorded for this chain under ``home`` (or in the record file ``path``, as
    an operator publishes it); :class:`DeploymentError` if absent, for another chain, or stale."""
    explicit = path is not None
    path = Path(path) if explicit else deployment_path(chain.chain_id, home)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        if explicit:  # the operator's file given on the command line: an input error
            raise InvalidInputError(f"deployment record {path} does not exist") from None
        raise DeploymentError(f"no deployment recorded for chain {chain.chain_id} ({path}); "
                              f"run `splitseal deploy --chain {chain.name}` first, or give the operator's "
                              "record with --deployment FILE or the registry with --registry ADDRESS") from None
    except (json.JSONDecodeError, OSError) as exc:
        error = InvalidInputError if explicit else DeploymentError
        raise error(f"deployment record {path} is unreadable: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("contracts"), dict):
        raise (InvalidInputError if explicit else DeploymentError)(
            f"deployment record {path} is not a deployment record (no \"contracts\" map); give the file "
            "`splitseal deploy` wrote (deployments/<chain id>.json)")
    if int(record.get("chainId", -1)) != chain.chain_id:
        raise DeploymentError(f"deployment record {path} is for chain {record.get('chainId')}, "
                              f"this chain is {chain.chain_id}")
    problems = []
    for name in CONTRACTS:
        address = record["contracts"].get(name)
        if not address or not chain.code(address):
            problems.append(f"{name} has no code at {address}")
        elif not explicit and record.get("artifacts", {}).get(name) != artifact_sha256(name):
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


def discover_deployment(chain: Chain, registry: str, *, from_block: int = 0) -> Deployment:
    """The deployment around ``ModelRegistry`` at ``registry``, found on-chain alone (an auditor
    with an RPC URL and one address): the BackboneExecution whose ``EnclaveTransferLinked`` names
    an EnclaveTransfer of this registry, the ParameterIndex of this registry (found by its
    ``IndexPublished`` events; a deployment that never published an index has none to audit), and
    the FeatureShareRegistry only from a record (it holds no link to the registry)."""
    from eth_utils import is_address

    if not isinstance(registry, str) or not is_address(registry):
        raise InvalidInputError(f"registry address {registry!r} is not an address (0x + 40 hex digits)")
    registry = chain.contract("ModelRegistry", registry).address
    if not chain.code(registry):
        raise InvalidInputError(f"no contract at {registry} on chain {chain.chain_id}: give the ModelRegistry's "
                                "address (the operator's deployment record lists it)")
    backbone = chain.contract("BackboneExecution", registry)  # for its event ABI only
    linked = chain.logs(None, [event_topic(backbone, "EnclaveTransferLinked")], from_block, None)
    found: dict[str, Any] = {}
    for raw in linked:
        candidate = chain.contract("BackboneExecution", raw["address"])
        try:
            if chain.call(candidate.functions.modelRegistry()).lower() == registry.lower():
                found["BackboneExecution"] = candidate
                found["EnclaveTransfer"] = chain.contract(
                    "EnclaveTransfer", chain.call(candidate.functions.enclaveTransfer()))
                found["block"] = int(raw["blockNumber"])
        except Exception:  # noqa: BLE001 - another contract with a look-alike event
            continue
    if "BackboneExecution" not in found:
        raise DeploymentError(f"no BackboneExecution linked to the ModelRegistry at {registry} was found "
                              "in the chain's logs; give the operator's record with --deployment FILE")
    index = chain.contract("ParameterIndex", registry)
    for raw in chain.logs(None, [event_topic(index, "IndexPublished")], from_block, None):
        candidate = chain.contract("ParameterIndex", raw["address"])
        try:
            if chain.call(candidate.functions.modelRegistry()).lower() == registry.lower():
                found["ParameterIndex"] = candidate
                break
        except Exception:  # noqa: BLE001
            continue
    zero = chain.contract("FeatureShareRegistry", ZERO_ADDRESS)
    first = min(found["block"], from_block) if from_block else max(0, found["block"] - 10)
    return Deployment(chain_id=chain.chain_id, block=first, admin="",
                      model_registry=chain.contract("ModelRegistry", registry),
                      parameter_index=found.get("ParameterIndex", chain.contract("ParameterIndex", ZERO_ADDRESS)),
                      backbone_execution=found["BackboneExecution"], enclave_transfer=found["EnclaveTransfer"],
                      feature_share_registry=zero, reused=True)
