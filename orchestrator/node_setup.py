"""Wiring of the inference node: keys, roles, backbones, enclave. One place, explicit.

- The node operator's X25519 **input key** decrypts request inputs. It is generated once into
  ``<node state>/input.key`` (mode 0600) and published with ``BackboneExecution.setInputKey``.
- Backbones are found by content: the node is given backbone files (or split directories) and
  serves a model version only when keccak256 of a local file equals the ``backboneHash`` the
  model owner registered on-chain.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from eth_account.signers.local import LocalAccount

from chain_node.inference_node import BackboneUnavailable, EnclaveTarget, InferenceNode
from splitseal.chain import Chain, Deployment
from splitseal.config import Config
from splitseal.enclave_client import EnclaveClient, EnclaveStatus, EnclaveUnavailableError
from splitseal.errors import ConfigError, InvalidInputError, ModelError
from splitseal.protocol import bundle
from splitseal.protocol.crypto import X25519KeyPair, keccak256

from .models.backbone import Backbone
from .models.split import NODE_DIR

log = logging.getLogger(__name__)

def load_or_create_x25519_key(path: Path) -> X25519KeyPair:
    """An X25519 key pair kept in ``path`` (the node's input key, a requester's result key);
    created with mode 0600 on first use."""
    if path.exists():
        raw = path.read_bytes()
        if len(raw) != 32:
            raise ConfigError(f"{path} is not a 32-byte X25519 private key; delete it to create a new one "
                              "(requests encrypted to the old key can then no longer be served)")
        return X25519KeyPair.from_private(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = X25519KeyPair.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private)
    return key


def authorize_node(chain: Chain, deployment: Deployment, admin: LocalAccount, node: LocalAccount,
                   input_key: X25519KeyPair, *, rotate: bool = False) -> None:
    """Grant NODE_ROLE to ``node`` and publish the input key when none is published yet.

    Every node of a deployment decrypts with the one published input key, so a key other nodes
    use is replaced only with ``rotate`` (requests already encrypted to it can then no longer be
    served); otherwise a different key is refused with what to do.
    """
    be = deployment.backbone_execution
    published = bytes(chain.call(be.functions.inputKey()))
    if published not in (bytes(32), input_key.public) and not rotate:
        raise ConfigError(f"BackboneExecution already publishes input key 0x{published.hex()[:16]}…, which other "
                          "nodes use, and this node's key differs: give this node the same key file with "
                          "--input-key PATH (the first node's <state-dir>/input.key), or replace the key for all "
                          "nodes with --rotate-input-key")
    role = chain.call(be.functions.NODE_ROLE())
    if not chain.call(be.functions.hasRole(role, node.address)):
        chain.transact(be.functions.grantRole(role, node.address), sender=admin)
    if published != input_key.public:
        chain.transact(be.functions.setInputKey(input_key.public), sender=admin)


def require_node_role(chain: Chain, deployment: Deployment, account: LocalAccount) -> None:
    """Refuse an account without NODE_ROLE before it touches anything."""
    be = deployment.backbone_execution
    if not chain.call(be.functions.hasRole(chain.call(be.functions.NODE_ROLE()), account.address)):
        raise ConfigError(f"account {account.address} does not hold NODE_ROLE on BackboneExecution {be.address}: "
                          "it could not deliver or report any request. The admin grants it "
                          "(`splitseal node run --authorize` run with the admin key available)")


def connect_enclave(client: EnclaveClient, *, stop: threading.Event | None = None,
                    interval: float = 1.0) -> EnclaveStatus:
    """The enclave's status, waiting for it while it is down (``stop`` ends the wait)."""
    waited = False
    while True:
        try:
            return client.status()
        except EnclaveUnavailableError as exc:
            if stop is None:
                raise
            if not waited:
                log.warning("waiting for the enclave: %s", exc)
                print(f"waiting for the enclave at {client.socket_path} (start it with `splitseal enclave serve`)",
                      flush=True)
                waited = True
            if stop.wait(interval):
                raise


class SplitBackbone:
    """A backbone with one input and the tensors that cross into the enclave as its outputs.

    One crossing tensor is sent as itself; several (a cut inside a residual block) are packed
    into one transfer tensor in output order (:mod:`splitseal.protocol.bundle`), which is the
    order of the head graph's inputs."""

    def __init__(self, onnx_bytes: bytes) -> None:
        self._backbone = Backbone(onnx_bytes)
        specs = self._backbone.input_specs
        if len(specs) != 1 or not self._backbone.output_names:
            raise ModelError(f"backbone has {len(specs)} inputs and {len(self._backbone.output_names)} outputs; "
                             "a split's backbone takes the request's one input and gives the crossing tensors")
        self.input_name, shape, _ = specs[0]
        self.input_shape: tuple[int | None, ...] = tuple(shape)
        self.output_names = list(self._backbone.output_names)
        self.metadata = self._backbone.metadata

    def run(self, x: np.ndarray) -> np.ndarray:
        outputs = self._backbone.run({self.input_name: x})
        if len(self.output_names) == 1:
            return outputs[self.output_names[0]]
        return bundle.pack([outputs[n] for n in self.output_names])


class BackboneLibrary:
    """Local backbone files indexed by keccak256, resolved through the on-chain registration."""

    def __init__(self, chain: Chain, deployment: Deployment, paths: Iterable[Path]) -> None:
        self.chain = chain
        self.deployment = deployment
        self._files: dict[bytes, Path] = {}
        self._loaded: dict[tuple[bytes, int], SplitBackbone] = {}
        for path in paths:
            self.add(Path(path))

    def add(self, path: Path) -> None:
        """A backbone file, or a directory of them (a split's ``node/`` directory)."""
        if path.is_dir():
            if (path / "head.pkg").exists() or (path / "head.index").exists():
                raise ConfigError(f"{path} holds the model owner's plaintext head (head.pkg); a node must not "
                                  f"be given it: give the split's node directory ({path / NODE_DIR}) instead")
            files = sorted(path.glob("*.onnx"))
            if not files:
                raise ConfigError(f"{path} holds no .onnx backbone; give backbone.onnx files or a split's "
                                  "node directory")
            for file in files:
                self.add(file)
            return
        if not path.exists():
            raise ConfigError(f"backbone {path} does not exist; give backbone.onnx files or a split's node "
                              "directory")
        self._files[keccak256(path.read_bytes())] = path

    def __call__(self, model_id: bytes, version: int) -> SplitBackbone:
        key = (bytes(model_id), int(version))
        if key not in self._loaded:
            record = self.chain.call(self.deployment.model_registry.functions.modelVersion(model_id, version))
            backbone_hash = bytes(record[0])
            path = self._files.get(backbone_hash)
            if path is None:
                raise BackboneUnavailable(f"this node holds no backbone for model 0x{model_id.hex()[:16]}… "
                                          f"v{version} (registered backbone hash 0x{backbone_hash.hex()[:16]}…); "
                                          "give it with --backbone")
            data = path.read_bytes()
            if keccak256(data) != backbone_hash:
                raise BackboneUnavailable(f"backbone file {path} changed on disk since the node started")
            self._loaded[key] = SplitBackbone(data)
        return self._loaded[key]


@dataclass
class NodeWiring:
    node: InferenceNode
    client: EnclaveClient


def build_node(config: Config, chain: Chain, deployment: Deployment, account: LocalAccount, *,
               backbone_paths: Iterable[Path], socket_path: Path | None = None, state_dir: Path | None = None,
               node_index: int = 0, node_count: int = 1,
               input_key: X25519KeyPair | None = None, start_block: int | None = None,
               wait: threading.Event | None = None) -> NodeWiring:
    """Everything a node needs, wired explicitly; the caller runs ``wiring.node``.

    ``input_key`` defaults to ``<state_dir>/input.key``; several nodes of one operator share it.
    With ``wait``, an enclave that is down is waited for until it answers or ``wait`` is set.
    The account must hold NODE_ROLE: a node without it is refused here, before it touches a request.
    """
    state_dir = state_dir or config.path(config.node.db_path).parent
    require_node_role(chain, deployment, account)
    client = EnclaveClient(socket_path or config.path(config.enclave.socket_path))
    status = connect_enclave(client, stop=wait)
    registered = chain.call(deployment.model_registry.functions.enclaveRecord(status.enclave))
    if bytes(registered[2]) != status.encryption_key:
        raise InvalidInputError(f"the enclave at {client.socket_path} ({status.enclave}) is not registered with "
                                "its current key; run `splitseal enclave attest` first")
    input_key = input_key or load_or_create_x25519_key(state_dir / "input.key")
    on_chain_key = bytes(chain.call(deployment.backbone_execution.functions.inputKey()))
    if on_chain_key != input_key.public:
        raise InvalidInputError("BackboneExecution's input key is not this node's; the admin must publish it "
                                "(`splitseal node run --authorize` as the admin does it)")
    node = InferenceNode(
        chain, deployment, account, input_key=input_key,
        enclave=EnclaveTarget(status.enclave, status.encryption_key, client),
        backbones=BackboneLibrary(chain, deployment, backbone_paths), config=config.node,
        checkpoint_path=state_dir / f"node-{account.address.lower()}.sqlite3",
        blob_dir=config.path(config.node.blob_dir), confirmations=config.chain.confirmations,
        node_index=node_index, node_count=node_count, claim_grace=config.node.claim_grace,
        poll_interval=config.chain.poll_interval, start_block=start_block)
    return NodeWiring(node, client)
