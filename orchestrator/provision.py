"""Attest and register an enclave; provision a model's head and parameter index into it.

Attestation (:func:`attest_enclave`), in order:

1. draw a fresh 32-byte nonce;
2. ask the enclave for a quote bound to (its address, its X25519 key, the chain id, the nonce)
   and its EIP-712 ``EnclaveRegistration`` co-signature for the registry;
3. verify off-chain what the registry will verify on-chain (quoting key pinned in the
   registry, age, DEBUG off, report data, co-signature, optionally the expected measurement),
   so a bad quote is refused before paying gas;
4. ``ModelRegistry.registerEnclave``; then read the record back and check it names exactly the
   key the enclave holds.

Provisioning (:func:`provision_model`), by the model's owner:

1. read the enclave's identity from its ``status`` and check its registration on-chain: the
   record's encryption key must equal the enclave's, unrevoked, unexpired, authorized for the
   model (optionally allow its measurement first);
2. check the local head package and index against the hashes registered for the model version;
3. encrypt the package and the index to the *registered* key (ECIES, AAD per docs/PROTOCOL.md);
4. ``ModelRegistry.provisionHead`` and ``ParameterIndex.publishIndex`` (once per version);
5. hand both ciphertexts to the enclave, which checks every hash and the Merkle root against
   the same on-chain values and signs;
6. submit ``confirmHeadLoaded`` (anchoring the sealed-state version) and ``confirmIndex``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from enclave import quote as quote_mod
from enclave.package import decode_graph, decode_head_package, decode_index
from splitseal.chain import Chain, Deployment
from splitseal.enclave_client import Attestation, EnclaveClient
from splitseal.errors import AttestationError, InvalidInputError
from splitseal.protocol import crypto, eip712
from splitseal.protocol.result import PUBLIC_LABEL_POLICY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """An enclave registered in ModelRegistry."""

    enclave: str
    encryption_key: bytes
    measurement: bytes
    signer: bytes
    nonce: bytes
    expires_at: int
    tx_hash: str


@dataclass(frozen=True)
class ProvisionResult:
    """What provisioning recorded on-chain."""

    model_id: bytes
    version: int
    enclave: str
    package_hash: bytes
    encrypted_index_hash: bytes
    state_version: int
    head_tx: str
    index_tx: str | None
    serving: bool


def _chain_time(chain: Chain) -> int:
    return int(chain.get_block("latest")["timestamp"])


def _next_block_time(chain: Chain) -> int:
    """The earliest time the registration transaction can be mined at: nodes that mine on demand
    (anvil, eth-tester) stamp the next block with the wall clock or later, never earlier than
    the latest block."""
    import time

    return max(_chain_time(chain), int(time.time()))


def verify_quote(att: Attestation, *, quoting_key: str, chain_id: int, registry: str, nonce: bytes,
                 now: int, validity: int, expected_measurement: bytes | None = None,
                 allow_debug: bool = False) -> Any:
    """Verify a quote and co-signature off-chain as ModelRegistry will; returns the report body.

    Raises :class:`AttestationError` naming the first check that fails.
    """
    try:
        parsed = quote_mod.verify_quote(att.quote, quoting_key, now=now, validity=validity,
                                        enclave_address=att.enclave, encryption_key=att.encryption_key,
                                        chain_id=chain_id, nonce=nonce, allow_debug=allow_debug)
    except InvalidInputError as exc:
        raise AttestationError(f"quote is malformed: {exc}") from None
    body = parsed.body
    if expected_measurement is not None and body.mr_enclave != expected_measurement:
        raise AttestationError(f"enclave measurement 0x{body.mr_enclave.hex()} is not the expected "
                               f"0x{expected_measurement.hex()}")
    digest = eip712.enclave_registration_digest(
        chain_id, registry, enclave=att.enclave, encryption_key=att.encryption_key,
        measurement=body.mr_enclave, nonce=nonce)
    try:
        signer = eip712.recover(digest, att.registration_signature)
    except InvalidInputError:
        signer = ""
    if signer.lower() != att.enclave.lower():
        raise AttestationError("the enclave's registration co-signature does not recover to its address")
    return body


def attest_enclave(chain: Chain, deployment: Deployment, client: EnclaveClient, *, sender: LocalAccount,
                   expected_measurement: bytes | None = None, nonce: bytes | None = None) -> Registration:
    """Attest the enclave behind ``client`` and register it (steps in the module doc)."""
    registry = deployment.model_registry
    nonce = nonce or os.urandom(32)
    att = client.attest(nonce, chain.chain_id, registry.address)
    quoting_key = chain.call(registry.functions.quotingKey())
    validity = chain.call(registry.functions.quoteValidity())
    body = verify_quote(att, quoting_key=quoting_key, chain_id=chain.chain_id, registry=registry.address,
                        nonce=nonce, now=_next_block_time(chain), validity=validity,
                        expected_measurement=expected_measurement)
    receipt = chain.transact(registry.functions.registerEnclave(
        att.quote, att.enclave, att.encryption_key, nonce, att.registration_signature), sender=sender)
    record = chain.call(registry.functions.enclaveRecord(att.enclave))
    if bytes(record[2]) != att.encryption_key or bytes(record[0]) != body.mr_enclave:
        raise AttestationError("the registry's record does not name the enclave's key and measurement")
    log.info("enclave registered enclave=%s measurement=0x%s tx=%s", att.enclave,
             body.mr_enclave.hex()[:16], receipt["transactionHash"].to_0x_hex())
    return Registration(enclave=att.enclave, encryption_key=att.encryption_key, measurement=body.mr_enclave,
                        signer=body.mr_signer, nonce=nonce, expires_at=int(record[4]),
                        tx_hash=receipt["transactionHash"].to_0x_hex())


def registered_key(chain: Chain, deployment: Deployment, enclave: str, model_id: bytes | None = None) -> bytes:
    """The X25519 key registered for ``enclave``, after checking the registration is usable."""
    registry = deployment.model_registry
    record = chain.call(registry.functions.enclaveRecord(to_checksum_address(enclave)))
    measurement, key, expires_at, revoked = bytes(record[0]), bytes(record[2]), int(record[4]), bool(record[7])
    if key == bytes(32):
        raise AttestationError(f"enclave {enclave} is not registered; run `splitseal enclave attest` first")
    if revoked:
        raise AttestationError(f"enclave {enclave} was revoked; attest a new enclave key")
    if expires_at <= _chain_time(chain):
        raise AttestationError(f"enclave {enclave}'s registration expired at {expires_at}; attest it again")
    if model_id is not None and not chain.call(registry.functions.isEnclaveAuthorized(model_id, enclave)):
        raise AttestationError(
            f"enclave {enclave} (measurement 0x{measurement.hex()}) is not authorized for model "
            f"0x{model_id.hex()}: the owner must allow its measurement (--allow-measurement)")
    return key


def provision_model(chain: Chain, deployment: Deployment, client: EnclaveClient, owner: LocalAccount, *,
                    model_id: bytes, version: int, package_bytes: bytes, index_bytes: bytes,
                    allow_measurement: bool = False,
                    progress: Callable[[str], None] | None = None) -> ProvisionResult:
    """Provision head package and parameter index of a model version (steps in the module doc);
    ``progress`` hears of each step as it starts (transactions wait for their blocks)."""
    say = progress or (lambda message: None)
    registry, pindex = deployment.model_registry, deployment.parameter_index
    status = client.status()
    enclave = to_checksum_address(status.enclave)
    if allow_measurement and not chain.call(registry.functions.isMeasurementAllowed(model_id, status.measurement)):
        say("allowing the enclave's measurement for the model (owner transaction)")
        chain.transact(registry.functions.allowMeasurement(model_id, status.measurement), sender=owner)
    key = registered_key(chain, deployment, enclave, model_id)
    if key != status.encryption_key:
        raise AttestationError(f"the enclave at the socket holds key 0x{status.encryption_key.hex()}, but "
                               f"{enclave} is registered with 0x{key.hex()}: attest it again")

    pkg = decode_head_package(package_bytes)
    index = decode_index(index_bytes)
    record = chain.call(registry.functions.modelVersion(model_id, version))
    graph_hash, params_hash = bytes(record[1]), bytes(record[2])
    if pkg.graph_hash != graph_hash or pkg.params_hash != params_hash:
        raise InvalidInputError(f"the head package does not match model 0x{model_id.hex()} v{version} "
                                "as registered (graph or parameter hash differs); provision the package "
                                "the model was registered with")

    package_plain_hash = crypto.keccak256(package_bytes)
    package_ct = crypto.ecies_encrypt(key, package_bytes, crypto.head_aad(model_id, version, package_plain_hash))
    package_hash = crypto.keccak256(package_ct)
    say(f"recording the encrypted head package for {enclave} (provisionHead)")
    head_receipt = chain.transact(registry.functions.provisionHead(model_id, version, enclave, package_hash),
                                  sender=owner)
    anchored = chain.call(registry.functions.stateVersion(enclave))
    say("the enclave decrypts, checks and loads the head")
    head = client.provision_head(
        model_id=model_id, version=version, chain_id=chain.chain_id, registry=registry.address,
        transfer=deployment.enclave_transfer.address, package_ciphertext=package_ct,
        package_plain_hash=package_plain_hash, head_graph_hash=graph_hash, head_params_hash=params_hash,
        package_hash=package_hash, anchored_state_version=anchored)
    say("recording the enclave's signed confirmation (confirmHeadLoaded)")
    chain.transact(registry.functions.confirmHeadLoaded(model_id, version, enclave, head.state_version,
                                                        head.signature), sender=owner)

    index_plain_hash = crypto.keccak256(index_bytes)
    published = chain.call(pindex.functions.index(model_id, version))
    index_tx = None
    if int(published[3]) != 0:
        loaded = any(m["model_id"] == model_id and m["version"] == version and m["index_verified"]
                     for m in client.status().models)
        if not (chain.call(pindex.functions.isIndexVerified(model_id, version, enclave)) and loaded):
            raise InvalidInputError(
                f"the parameter index of model 0x{model_id.hex()} v{version} is already published "
                "(encrypted to another enclave); ParameterIndex holds one index ciphertext per version, "
                "so register a new model version to serve it from another enclave")
        encrypted_index_hash, serving = bytes(published[0]), head.serving
        log.info("index of model=0x%s version=%d already verified by %s; head re-provisioned only",
                 model_id.hex()[:16], version, enclave)
    else:
        index_ct = crypto.ecies_encrypt(key, index_bytes, crypto.index_aad(model_id, version, index_plain_hash))
        encrypted_index_hash = crypto.keccak256(index_ct)
        say(f"publishing the encrypted parameter index ({index.entry_count} entries, publishIndex)")
        r = chain.transact(pindex.functions.publishIndex(model_id, version, encrypted_index_hash,
                                                         index.merkle_root(), index.entry_count), sender=owner)
        index_tx = r["transactionHash"].to_0x_hex()
        say("the enclave decrypts and verifies the index against its Merkle root")
        conf = client.provision_index(
            model_id=model_id, version=version, chain_id=chain.chain_id, parameter_index=pindex.address,
            index_ciphertext=index_ct, index_plain_hash=index_plain_hash,
            encrypted_index_hash=encrypted_index_hash, merkle_root=index.merkle_root(),
            entry_count=index.entry_count)
        say("recording the enclave's signed confirmation (confirmIndex)")
        chain.transact(pindex.functions.confirmIndex(model_id, version, enclave, conf.signature), sender=owner)
        serving = conf.serving
    log.info("provisioned model=0x%s version=%d enclave=%s state_version=%d", model_id.hex()[:16], version,
             enclave, head.state_version)
    return ProvisionResult(model_id=model_id, version=version, enclave=enclave, package_hash=package_hash,
                           encrypted_index_hash=encrypted_index_hash, state_version=head.state_version,
                           head_tx=head_receipt["transactionHash"].to_0x_hex(), index_tx=index_tx,
                           serving=serving)


def restore_enclave(chain: Chain, deployment: Deployment, client: EnclaveClient) -> dict[str, Any]:
    """After a restart: reload sealed state, refusing anything older than the on-chain anchors (the
    registry's state version and the highest answer sequence delivered to EnclaveTransfer)."""
    status = client.status()
    enclave = to_checksum_address(status.enclave)
    anchored = chain.call(deployment.model_registry.functions.stateVersion(enclave))
    from splitseal.chain import last_delivered_sequence

    sequence = last_delivered_sequence(chain, deployment, enclave)
    return client.restore_state(int(anchored), int(sequence))


def register_model_version(chain: Chain, deployment: Deployment, owner: LocalAccount, model_id: bytes,
                           split_dir: "os.PathLike[str] | str", summary: dict[str, Any]) -> int:
    """Register a split (``split.json`` + its files) as a new version of ``model_id``.

    The hashes are recomputed from the files, not trusted from ``split.json``.
    """
    from pathlib import Path

    split_dir = Path(split_dir)
    backbone = (split_dir / summary["backbone"]["file"]).read_bytes()
    pkg = decode_head_package((split_dir / summary["head"]["package_file"]).read_bytes())
    rule_hash = bytes.fromhex(summary["rule"]["hash"][2:])
    registry = deployment.model_registry
    # the public_label flag follows the head graph the registered hash commits to: the contract
    # forwards a signed label only for such a version, the enclave signs one only under that policy
    public_label = decode_graph(pkg.graph_bytes).output_policy == PUBLIC_LABEL_POLICY
    receipt = chain.transact(registry.functions.registerModelWithPolicy(
        model_id, crypto.keccak256(backbone), pkg.graph_hash, pkg.params_hash, rule_hash, public_label), sender=owner)
    version = int(chain.events(receipt, registry, "ModelRegistered")[0]["version"])
    log.info("model registered model=0x%s version=%d", model_id.hex()[:16], version)
    return version
