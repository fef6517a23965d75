"""The enclave's entry calls, independent of the transport.

:class:`EnclaveCore` is what runs inside the sealed process. :mod:`enclave.server` feeds it
decoded frames; tests may drive it directly. Every entry call takes and returns only
ciphertexts, hashes, public keys, addresses, integers and signatures: no plaintext head,
parameter, index, input, output or key ever crosses this boundary.

Entry calls (arguments -> result; see docs/ENCLAVE.md for the full table):

``status``
    -> identity (measurement, signer, product id, security version, debug), enclave address,
    encryption key, quoting key address, state version, loaded models.
``attest(nonce, chain_id, registry)``
    -> quote over a report whose report_data binds (address, encryption key, chain id, nonce),
    and the enclave key's EIP-712 ``EnclaveRegistration`` co-signature for ``registry``.
``provision_head(model_id, version, chain_id, registry, transfer, package_ciphertext,
package_plain_hash, head_graph_hash, head_params_hash, package_hash, anchored_state_version)``
    1. keccak(ciphertext) must equal the package hash the registry recorded;
    2. ECIES-decrypt with AAD (model id, version, package plain hash);
    3. the plaintext must hash to ``package_plain_hash`` and decode as a head package whose
       graph and parameter hashes equal the registry's;
    4. with an index present, the interpreter loads it (every parameter checked);
    5. state version := max(own, anchored) + 1; the model is sealed;
    -> EIP-712 ``HeadLoaded`` signed for ``registry``, state version.
``provision_index(model_id, version, chain_id, parameter_index, index_ciphertext,
index_plain_hash, encrypted_index_hash, merkle_root, entry_count)``
    same pattern; -> EIP-712 ``IndexVerified`` signed for ``parameter_index``.
``infer(request_id, model_id, version, input_commitment, transfer_ciphertext, shape, dtype,
requester_key)``
    1. the model must be loaded with its index; the request id must not have been answered;
    2. ECIES-decrypt with AAD (request id, model id, version, enclave address, shape/dtype);
    3. run the head; 4. encode the result under the graph's output policy;
    5. ECIES-encrypt it to the requester (AAD request id, model id, version), in the requester
       key's result session (docs/PROTOCOL.md, "Result sessions");
    -> encrypted result, its keccak (result commitment), keccak of the transfer ciphertext and
    the EIP-712 ``InferenceResult`` signature for the model's ``EnclaveTransfer``.
``infer_hybrid(request_id, model_id, version, input_commitment, manifest, shares, shape,
requester_key)``
    a hybrid request (:mod:`enclave.hybrid`): the MPC nodes' sealed output shares, checked against
    the manifest the input commitment names and reconstructed, instead of one transfer; then
    steps 3-5 of ``infer``, signed over the contributions record's hash.
``seal_state(action="seal" | "restore", anchored_state_version)``
    ``seal`` writes the current state; ``restore`` (after a restart) reloads it, refusing a
    manifest older than the version anchored on-chain.

Sealed state, under the measurement policy: ``sealed/identity.sealed`` (the secp256k1 signing
key and the X25519 key, generated here on first start), one ``sealed/model-<id>-v<n>.sealed``
per model (AAD = model id and version) and ``sealed/manifest.sealed`` (AAD = enclave address)
listing each model blob's state version and SHA-256, the answered request ids, the answer
sequence and the recent answers, under the global state version, which is the counter
``ModelRegistry.confirmHeadLoaded`` anchors; a state change that the chain has not anchored yet
(an index provisioned after the last ``HeadLoaded``) is protected only from rollback below the
anchor.

Answers are journalled, not re-sealed in the manifest: each answer appends one sealed record to
``sealed/journal-<epoch>.sealed`` (AAD = enclave address, epoch and record index, so records
cannot be reordered or moved between journals) before the answer leaves, a cost that does not
grow with history; when it reaches the disk is the operator's choice (:mod:`enclave.journal`:
fsynced before the answer leaves, right after it by default, or by the OS). Every :data:`JOURNAL_COMPACT` answers (and on every
provisioning or ``seal``) the manifest is re-sealed with the next epoch and the old journal
removed. Restore replays the manifest's journal; a torn last record is an answer that never left.

Exactly once: the enclave keeps its :data:`RECENT_ANSWERS` most recent answers (sealed with the
state), and a repeated ``infer`` for a request it answered gets the very same answer (same
encrypted result, sequence and signature, ``repeated`` set), whichever transfer it comes with:
the answer names the transfer it was computed on, so no second evaluation of the head happens.
Older answered ids are refused as replays.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from splitseal.errors import EnclaveError, InvalidInputError, ModelError, SealingError, SplitsealError
from splitseal.protocol import FailureCode, bundle, crypto, eip712, wire
from splitseal.protocol.result import (PUBLIC_LABEL_POLICY, SALT_BYTES, ResultClaim, encode_result_document,
                                       label_word, released_parts)

from . import quote as quote_mod
from .identity import EnclaveIdentity
from .journal import RECORD_HEADER, AnswerJournal
from .keys import KeyDeriver
from .platform import Platform
from .ratelimit import RateLimiter
from .sealing import Sealer, write_atomic

log = logging.getLogger(__name__)

ENTRY_CALLS = ("attest", "provision_head", "provision_index", "infer", "infer_hybrid", "seal_state", "status")
IDENTITY_AAD = b"splitseal.identity.v1"
MODEL_AAD = b"splitseal.model-state.v1"
MANIFEST_AAD = b"splitseal.manifest.v1"
JOURNAL_AAD = b"splitseal.journal.v1"
#: Answers kept for repeated requests (sealed with the state): a node or its stand-in that comes
#: back within this many answers gets the same answer again.
RECENT_ANSWERS = 1024
#: Answers between two manifest re-seals (the journal is compacted into the manifest).
JOURNAL_COMPACT = 256


class EntryCallError(EnclaveError):
    """An entry call was refused; ``reason`` is the on-chain failure code to report."""

    def __init__(self, message: str, reason: FailureCode = FailureCode.ENCLAVE_REFUSED) -> None:
        super().__init__(message)
        self.reason = FailureCode(reason)


class ReplayError(EntryCallError):
    """The request id was already answered by this enclave."""


class NotProvisionedError(EntryCallError):
    """No head (or no index) is loaded for the model version asked for."""


class ShapeMismatchError(EntryCallError):
    """The backbone output does not have the shape or dtype the head expects."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FailureCode.SHAPE_MISMATCH)


# --- argument checking ------------------------------------------------------------------------

class _Args:
    """Typed access to an entry call's argument map; every miss is an InvalidInputError."""

    def __init__(self, call: str, args: Any) -> None:
        if not isinstance(args, dict):
            raise InvalidInputError(f"{call}: arguments must be a map")
        self.call, self.args = call, args

    def _get(self, name: str, default: Any = ...) -> Any:
        if name not in self.args:
            if default is ...:
                raise InvalidInputError(f"{self.call}: missing argument {name!r}")
            return default
        return self.args[name]

    def bytes_(self, name: str, length: int | None = None, max_len: int | None = None) -> bytes:
        v = self._get(name)
        if not isinstance(v, bytes) or (length is not None and len(v) != length) \
                or (max_len is not None and len(v) > max_len):
            want = f"{length} bytes" if length is not None else "bytes"
            raise InvalidInputError(f"{self.call}: argument {name!r} must be {want}")
        return v

    def int_(self, name: str, lo: int = 0, hi: int = 2**256 - 1, default: Any = ...) -> int:
        v = self._get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise InvalidInputError(f"{self.call}: argument {name!r} must be an integer in [{lo}, {hi}]")
        return v

    def str_(self, name: str, choices: tuple[str, ...] | None = None, default: Any = ...) -> str:
        v = self._get(name, default)
        if not isinstance(v, str) or (choices is not None and v not in choices):
            raise InvalidInputError(f"{self.call}: argument {name!r} must be one of {choices}"
                                    if choices else f"{self.call}: argument {name!r} must be a string")
        return v

    def address(self, name: str) -> str:
        v = self._get(name)
        if isinstance(v, bytes) and len(v) == 20:
            v = "0x" + v.hex()
        if not isinstance(v, str) or len(v) != 42 or not v.startswith("0x"):
            raise InvalidInputError(f"{self.call}: argument {name!r} must be a 0x-prefixed address")
        try:
            bytes.fromhex(v[2:])
        except ValueError:
            raise InvalidInputError(f"{self.call}: argument {name!r} is not hex") from None
        return eip712.checksum_address(v)

    def shape(self, name: str) -> tuple[int, ...]:
        v = self._get(name)
        if not isinstance(v, list) or len(v) > crypto.MAX_TENSOR_DIMS or \
                not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**32 for d in v):
            raise InvalidInputError(f"{self.call}: argument {name!r} must be a list of dimensions")
        return tuple(v)


# --- state ------------------------------------------------------------------------------------

@dataclass
class _Model:
    """One provisioned model version (plaintext lives only in this process)."""

    model_id: bytes
    version: int
    chain_id: int
    registry: str = ""
    transfer: str = ""
    parameter_index: str = ""
    package: bytes = b""
    package_hash: bytes = b""
    graph_hash: bytes = b""
    params_hash: bytes = b""
    index: bytes = b""
    encrypted_index_hash: bytes = b""
    state_version: int = 0
    head: Any = field(default=None, repr=False)
    #: (name, shape) of every head input: several when the cut is crossed by several tensors,
    #: which then arrive as one bundle (splitseal.protocol.bundle) of shape ``input_shape``
    input_specs: tuple[tuple[str, tuple[int | None, ...]], ...] = ()
    input_shape: tuple[int | None, ...] = ()
    output_name: str = ""
    policy: str = ""
    rate_limit: dict[str, int] = field(default_factory=dict, repr=False)
    sealed_sha256: bytes = b""

    def __repr__(self) -> str:
        return f"_Model(model_id=0x{self.model_id.hex()}, version={self.version})"

    @property
    def key(self) -> tuple[bytes, int]:
        return (self.model_id, self.version)

    def sealed_fields(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "version": self.version, "chain_id": self.chain_id,
                "registry": self.registry, "transfer": self.transfer,
                "parameter_index": self.parameter_index, "package": self.package,
                "package_hash": self.package_hash, "graph_hash": self.graph_hash,
                "params_hash": self.params_hash, "index": self.index,
                "encrypted_index_hash": self.encrypted_index_hash}


class AnsweredIds:
    """Request ids already answered, per (chain id, EnclaveTransfer): a watermark below which
    every id was answered plus the sparse ids above it. Request ids are handed out in order
    on-chain, so the sparse part stays small and sealing it after every answer stays cheap."""

    def __init__(self) -> None:
        self._low: dict[tuple[int, str], int] = {}
        self._high: dict[tuple[int, str], set[int]] = {}
        self.count = 0

    def __contains__(self, key: tuple[int, str, int]) -> bool:
        scope, rid = (key[0], key[1]), key[2]
        return rid <= self._low.get(scope, 0) or rid in self._high.get(scope, ())

    def add(self, key: tuple[int, str, int]) -> None:
        if key in self:
            return
        scope, rid = (key[0], key[1]), key[2]
        high = self._high.setdefault(scope, set())
        high.add(rid)
        low = self._low.get(scope, 0)
        while low + 1 in high:
            low += 1
            high.discard(low)
        self._low[scope] = low
        self.count += 1

    def to_wire(self) -> list[Any]:
        scopes = sorted(set(self._low) | set(self._high))
        return [[c, t, self._low.get((c, t), 0), sorted(self._high.get((c, t), ()))] for c, t in scopes]

    @classmethod
    def from_wire(cls, entries: list[Any]) -> "AnsweredIds":
        ids = cls()
        for c, t, low, high in entries:
            ids._low[(c, t)] = low
            ids._high[(c, t)] = set(high)
            ids.count += low + len(high)  # ids start at 1 on-chain
        return ids


def _model_aad(model_id: bytes, version: int) -> bytes:
    return MODEL_AAD + model_id + struct.pack(">I", version)


class EnclaveCore:
    """The enclave's state and entry calls (see module doc)."""

    def __init__(self, platform: Platform, identity: EnclaveIdentity, state_dir: str | Path, *,
                 clock: Callable[[], float] | None = None, process: dict[str, Any] | None = None,
                 answer_durability: str = "background") -> None:
        self.platform = platform
        #: the process protections in effect (enclave.hardening), reported by ``status``
        self.process = dict(process or {})
        #: when an answer's journal record reaches the disk (``enclave.journal``): before the
        #: answer leaves, right after it, or when the OS writes it back; never an answer off the
        #: record, only availability after a power loss traded for latency
        self._journal = AnswerJournal(answer_durability)
        self.identity = identity
        self.state_dir = Path(state_dir)
        self.sealed_dir = self.state_dir / "sealed"
        self._keys = KeyDeriver(platform.root_secret(), identity)
        self._sealer = Sealer(self._keys)
        self._lock = threading.RLock()
        self._models: dict[tuple[bytes, int], _Model] = {}
        self._answered = AnsweredIds()
        #: the latest answers by (chain id, EnclaveTransfer, request id), oldest first, each with its
        #: manifest entry ``[key, answer]`` encoded once (around the answer's encoding made for its
        #: journal record) and spliced into every manifest after it
        self._recent: collections.OrderedDict[tuple[int, str, int], tuple[dict[str, Any], wire.Encoded]] = \
            collections.OrderedDict()
        self._epoch = 0
        self._journal_records = 0
        #: answers issued (signed results), sealed in the manifest; each answer carries its number
        #: and the chain keeps the highest delivered one as the anchor against rollback
        self.sequence = 0
        clock = clock or time.monotonic  # the rate limit's windows and the result sessions' time
        self._rate_limiter = RateLimiter(clock)
        self.state_version = 0
        self.restored = False
        self._signing_key, self._x25519 = self._load_or_create_keys()
        # transfers from a node's session share an ephemeral key: its AES key is derived once
        self._transfer_keys = crypto.SessionKeys(self._x25519)
        self.address = eip712.address_of(self._signing_key)
        self._journal_aad_prefix = JOURNAL_AAD + bytes.fromhex(self.address[2:])
        self._journal_file: tuple[int, Path] = (-1, self.sealed_dir)
        self._signer = eip712.signing_key(self._signing_key)  # built once: signs every answer
        #: results go out in a session per requester key (docs/PROTOCOL.md, "Result sessions"):
        #: a session's ephemeral key pair is the one drawn after the previous reply was sent
        #: (``answer_sent``), off the request's path; each serves one session only
        self._result_keys = crypto.EphemeralKeys()
        self._result_keys.refill()
        self._result_sessions = crypto.RecipientSessions(clock=clock, keys=self._result_keys)
        log.info("enclave ready address=%s", self.address)

    def __repr__(self) -> str:
        return f"EnclaveCore(address={self.address}, models={len(self._models)})"

    # -- keys ---------------------------------------------------------------------------------

    def _load_or_create_keys(self) -> tuple[bytes, crypto.X25519KeyPair]:
        path = self.sealed_dir / "identity.sealed"
        if path.exists():
            plain, _ = self._sealer.unseal(path.read_bytes(), aad=IDENTITY_AAD, label="identity")
            keys = wire.decode(plain)
            return keys["signing_key"], crypto.X25519KeyPair.from_private(keys["encryption_key"])
        from coincurve import PrivateKey

        signing = PrivateKey().secret
        x25519 = crypto.X25519KeyPair.generate()
        blob = self._sealer.seal(wire.encode({"signing_key": signing, "encryption_key": x25519.private}),
                                 aad=IDENTITY_AAD, label="identity")
        write_atomic(path, blob)
        log.info("generated enclave keys; sealed to %s", path.name)
        return signing, x25519

    @property
    def encryption_key(self) -> bytes:
        return self._x25519.public

    # -- dispatch -----------------------------------------------------------------------------

    def call(self, name: str, args: Any) -> dict[str, Any]:
        """Run one entry call; raises SplitsealError subclasses on refusal."""
        if name not in ENTRY_CALLS:
            raise InvalidInputError(f"unknown entry call {name!r}; the enclave offers {list(ENTRY_CALLS)}")
        a = _Args(name, args if args is not None else {})
        with self._lock:
            return getattr(self, "_call_" + name)(a)

    # -- status / attest ----------------------------------------------------------------------

    def _call_status(self, a: _Args) -> dict[str, Any]:
        return {
            "measurement": self.identity.mr_enclave, "signer": self.identity.mr_signer,
            "product_id": self.identity.product_id, "security_version": self.identity.security_version,
            "debug": self.identity.debug, "enclave": self.address, "encryption_key": self.encryption_key,
            "quoting_key": self.platform.quoting_address(), "state_version": self.state_version,
            "restored": self.restored, "answered": self._answered.count, "sequence": self.sequence,
            "process": self.process,
            "models": [{"model_id": m.model_id, "version": m.version, "state_version": m.state_version,
                        "head_loaded": bool(m.package), "index_verified": bool(m.index),
                        "serving": m.head is not None, "chain_id": m.chain_id}
                       for m in sorted(self._models.values(), key=lambda m: m.key)],
        }

    def _call_attest(self, a: _Args) -> dict[str, Any]:
        nonce = a.bytes_("nonce", 32)
        chain_id = a.int_("chain_id", 1)
        registry = a.address("registry")
        report_data = quote_mod.report_data_for(self.address, self.encryption_key, chain_id, nonce)
        body = quote_mod.ReportBody(
            mr_enclave=self.identity.mr_enclave, mr_signer=self.identity.mr_signer,
            isv_prod_id=self.identity.product_id, isv_svn=self.identity.security_version,
            debug=self.identity.debug, report_data=report_data).pack()
        quote = self.platform.quote(body)
        digest = eip712.enclave_registration_digest(
            chain_id, registry, enclave=self.address, encryption_key=self.encryption_key,
            measurement=self.identity.mr_enclave, nonce=nonce)
        log.info("attested chain_id=%d registry=%s", chain_id, registry)
        return {"quote": quote, "enclave": self.address, "encryption_key": self.encryption_key,
                "measurement": self.identity.mr_enclave, "nonce": nonce,
                "registration_signature": eip712.sign(self._signing_key, digest)}

    # -- provisioning -------------------------------------------------------------------------

    def _model_for(self, model_id: bytes, version: int, chain_id: int) -> _Model:
        model = self._models.get((model_id, version))
        if model is None:
            model = _Model(model_id=model_id, version=version, chain_id=chain_id)
        elif model.chain_id != chain_id:
            raise EntryCallError(f"model 0x{model_id.hex()} v{version} was provisioned for chain "
                                 f"{model.chain_id}, not {chain_id}")
        return model

    def _call_provision_head(self, a: _Args) -> dict[str, Any]:
        model_id, version = a.bytes_("model_id", 32), a.int_("version", 1, 2**32 - 1)
        chain_id = a.int_("chain_id", 1)
        registry, transfer = a.address("registry"), a.address("transfer")
        ciphertext = a.bytes_("package_ciphertext")
        plain_hash = a.bytes_("package_plain_hash", 32)
        graph_hash, params_hash = a.bytes_("head_graph_hash", 32), a.bytes_("head_params_hash", 32)
        package_hash = a.bytes_("package_hash", 32)
        anchored = a.int_("anchored_state_version", 0, 2**64 - 2, default=0)
        model = self._model_for(model_id, version, chain_id)

        plaintext = self._open_provisioned(
            ciphertext, package_hash, crypto.head_aad(model_id, version, plain_hash), plain_hash,
            mismatch="head package ciphertext does not hash to the package hash the registry recorded; "
                     "provision the ciphertext that was registered",
            closed="head package does not open: it was not encrypted to this enclave's registered key, "
                   "or for another model, version or package",
            tampered="head package plaintext does not match its declared hash")
        from .package import decode_graph, decode_head_package

        try:
            pkg = decode_head_package(plaintext)
            graph = decode_graph(pkg.graph_bytes)
        except ModelError as exc:
            raise EntryCallError(f"head package is malformed: {exc}") from None
        if pkg.graph_hash != graph_hash or pkg.params_hash != params_hash:
            raise EntryCallError(
                "head package differs from the registry's record: graph hash "
                f"{'matches' if pkg.graph_hash == graph_hash else 'differs'}, parameter hash "
                f"{'matches' if pkg.params_hash == params_hash else 'differs'}")
        if not graph.inputs or not graph.outputs:
            raise EntryCallError("head graph must have at least one input and one output")
        if len(graph.inputs) > 1:
            try:
                bundle.bundle_shape([(t.name, tuple(t.shape)) for t in graph.inputs])
            except InvalidInputError as exc:
                raise EntryCallError(f"head graph's inputs cannot arrive as one transfer: {exc}") from None

        # work on a copy: a refused package leaves the serving model untouched
        model = dataclasses.replace(model, registry=registry, transfer=transfer, package=plaintext,
                                    package_hash=package_hash, graph_hash=graph_hash, params_hash=params_hash)
        self._load_head(model)  # with an index present, every parameter is checked now
        self.state_version = max(self.state_version, anchored) + 1
        self._models[model.key] = model
        self._seal_model(model)
        digest = eip712.head_loaded_digest(
            chain_id, registry, model_id=model_id, model_version=version, enclave=self.address,
            head_graph_hash=graph_hash, head_params_hash=params_hash, package_hash=package_hash,
            state_version=self.state_version)
        log.info("head loaded model=0x%s version=%d state_version=%d serving=%s",
                 model_id.hex()[:16], version, self.state_version, model.head is not None)
        return {"enclave": self.address, "state_version": self.state_version,
                "head_graph_hash": graph_hash, "head_params_hash": params_hash,
                "package_hash": package_hash, "serving": model.head is not None,
                "signature": eip712.sign(self._signing_key, digest)}

    def _call_provision_index(self, a: _Args) -> dict[str, Any]:
        model_id, version = a.bytes_("model_id", 32), a.int_("version", 1, 2**32 - 1)
        chain_id = a.int_("chain_id", 1)
        parameter_index = a.address("parameter_index")
        ciphertext = a.bytes_("index_ciphertext")
        plain_hash = a.bytes_("index_plain_hash", 32)
        encrypted_hash = a.bytes_("encrypted_index_hash", 32)
        merkle_root = a.bytes_("merkle_root", 32)
        entry_count = a.int_("entry_count", 0, 2**32 - 1)
        model = self._model_for(model_id, version, chain_id)

        plaintext = self._open_provisioned(
            ciphertext, encrypted_hash, crypto.index_aad(model_id, version, plain_hash), plain_hash,
            mismatch="parameter index ciphertext does not hash to the encrypted index hash recorded in "
                     "ParameterIndex",
            closed="parameter index does not open: it was not encrypted to this enclave's registered key, "
                   "or for another model, version or index",
            tampered="parameter index plaintext does not match its declared hash")
        from .package import decode_index

        try:
            index = decode_index(plaintext)  # checks the entries against the embedded root
        except ModelError as exc:
            raise EntryCallError(f"parameter index is malformed: {exc}") from None
        if index.merkle_root() != merkle_root or index.entry_count != entry_count:
            raise EntryCallError(
                "parameter index differs from the on-chain record: Merkle root "
                f"{'matches' if index.merkle_root() == merkle_root else 'differs'}, entry count "
                f"{index.entry_count} vs {entry_count}")
        model = dataclasses.replace(model, index=plaintext, encrypted_index_hash=encrypted_hash,
                                    parameter_index=parameter_index)
        self._load_head(model)
        self.state_version += 1
        self._models[model.key] = model
        self._seal_model(model)
        digest = eip712.index_verified_digest(
            chain_id, parameter_index, model_id=model_id, model_version=version, enclave=self.address,
            encrypted_index_hash=encrypted_hash, merkle_root=merkle_root, entry_count=entry_count)
        log.info("index verified model=0x%s version=%d entries=%d serving=%s",
                 model_id.hex()[:16], version, entry_count, model.head is not None)
        return {"enclave": self.address, "encrypted_index_hash": encrypted_hash,
                "merkle_root": merkle_root, "entry_count": entry_count,
                "state_version": self.state_version, "serving": model.head is not None,
                "signature": eip712.sign(self._signing_key, digest)}

    def _open_provisioned(self, ciphertext: bytes, ciphertext_hash: bytes, aad: bytes, plain_hash: bytes, *,
                          mismatch: str, closed: str, tampered: str) -> bytes:
        """Open something provisioned to this enclave: its ciphertext must be the one recorded
        on-chain, it must open with our key and its AAD, and its plaintext must hash as declared."""
        if crypto.keccak256(ciphertext) != ciphertext_hash:
            raise EntryCallError(mismatch)
        try:
            plaintext = crypto.ecies_decrypt(self._x25519, ciphertext, aad)
        except crypto.DecryptionError:
            raise EntryCallError(closed) from None
        if crypto.keccak256(plaintext) != plain_hash:
            raise EntryCallError(tampered)
        return plaintext

    def _load_head(self, model: _Model) -> None:
        """Build the interpreter once both package and index are present."""
        if not model.package or not model.index:
            model.head = None
            return
        from .interpreter import HeadInterpreter
        from .package import decode_graph, decode_head_package, decode_index

        try:
            pkg = decode_head_package(model.package)
            head = HeadInterpreter(pkg, decode_index(model.index))
            graph = decode_graph(pkg.graph_bytes)
        except ModelError as exc:
            raise EntryCallError(f"head and parameter index do not load together: {exc}") from None
        model.head = head
        model.input_specs = tuple((t.name, tuple(t.shape)) for t in graph.inputs)
        model.input_shape = (model.input_specs[0][1] if len(model.input_specs) == 1
                             else bundle.bundle_shape(model.input_specs))
        model.output_name, model.policy = graph.outputs[0].name, graph.output_policy
        model.rate_limit = dict(graph.meta.get("rate_limit") or {})

    # -- inference ------------------------------------------------------------------------------

    def _call_infer(self, a: _Args) -> dict[str, Any]:
        request_id = a.int_("request_id")
        model_id, version = a.bytes_("model_id", 32), a.int_("version", 1, 2**32 - 1)
        input_commitment = a.bytes_("input_commitment", 32)
        ciphertext = a.bytes_("transfer_ciphertext")
        shape, dtype = a.shape("shape"), a.str_("dtype", crypto.TENSOR_DTYPES)
        requester_key = a.bytes_("requester_key", 32)
        requester = a.address("requester")
        model, replay_key, previous = self._serving(request_id, model_id, version, input_commitment, requester,
                                                    requester_key)
        if previous is not None:
            return previous
        if not shape or 0 in shape:
            raise ShapeMismatchError(f"backbone output shape {list(shape)} is empty")
        header = crypto.tensor_header(shape, dtype)
        try:
            plaintext = self._transfer_keys.open(
                ciphertext, crypto.transfer_aad(request_id, model_id, version, self.address, header))
        except crypto.DecryptionError:
            raise EntryCallError(f"transfer for request {request_id} does not open: not for this "
                                 "request, model, version, enclave, shape or dtype, or tampered") from None
        if len(plaintext) != crypto.tensor_nbytes(shape, dtype):
            raise ShapeMismatchError(f"transfer for request {request_id} holds {len(plaintext)} bytes, "
                                     f"shape {list(shape)} {dtype} needs {crypto.tensor_nbytes(shape, dtype)}")
        self._check_head_input(model, shape)
        x = np.frombuffer(plaintext, dtype=dtype).reshape(shape).astype(np.float32)
        return self._answer(model, replay_key, request_id, x, input_commitment, requester, requester_key,
                            crypto.keccak256(ciphertext))

    def _call_infer_hybrid(self, a: _Args) -> dict[str, Any]:
        """A hybrid request (enclave.hybrid): the MPC nodes' sealed output shares instead of one
        transfer; the answer also returns the contributions record the transfer hash names."""
        from .hybrid import open_hybrid_transfer

        request_id = a.int_("request_id")
        model_id, version = a.bytes_("model_id", 32), a.int_("version", 1, 2**32 - 1)
        input_commitment = a.bytes_("input_commitment", 32)
        manifest = a.bytes_("manifest", max_len=16 * 1024)
        shape = a.shape("shape")
        requester_key = a.bytes_("requester_key", 32)
        requester = a.address("requester")
        shares = a.args.get("shares")
        if not isinstance(shares, list):
            raise InvalidInputError("infer_hybrid: argument 'shares' must be a list of sealed shares")
        model, replay_key, previous = self._serving(request_id, model_id, version, input_commitment, requester,
                                                    requester_key)
        if previous is not None:
            return previous
        if not shape or 0 in shape:
            raise ShapeMismatchError(f"backbone output shape {list(shape)} is empty")
        head_shape = _unflattened(shape, model.input_shape)
        self._check_head_input(model, head_shape)
        opened = open_hybrid_transfer(
            refuse=EntryCallError, x25519=self._x25519, enclave=self.address, chain_id=model.chain_id,
            transfer_contract=model.transfer, request_id=request_id, model_id=model_id, version=version,
            input_commitment=input_commitment, manifest_bytes=manifest, shares=shares, shape=shape)
        return self._answer(model, replay_key, request_id, opened.output.reshape(head_shape), input_commitment,
                            requester, requester_key,
                            opened.transfer_hash, extra={"record": opened.record,
                                                         "output_commitment": opened.output_commitment})

    def _serving(self, request_id: int, model_id: bytes, version: int, input_commitment: bytes, requester: str,
                 requester_key: bytes) -> tuple[_Model, tuple[int, str, int], dict[str, Any] | None]:
        """The serving model, the replay key, and the earlier answer when this request was answered."""
        model = self._models.get((model_id, version))
        if model is None or model.head is None:
            raise NotProvisionedError(f"model 0x{model_id.hex()} v{version} is not loaded with its "
                                      "parameter index in this enclave; provision it first")
        replay_key = (model.chain_id, model.transfer, request_id)
        if replay_key in self._answered:
            previous = self._recent.get(replay_key, (None,))[0]
            if previous is None:
                raise ReplayError(f"request {request_id} was already answered by this enclave and its answer "
                                  f"is no longer among the {RECENT_ANSWERS} kept; replay refused")
            if (previous["input_commitment"], previous["requester"], previous["requester_key"]) != \
                    (input_commitment, requester, requester_key):
                raise ReplayError(f"request {request_id} was already answered by this enclave for another "
                                  "input commitment, requester or key; replay refused")
            log.info("inference request_id=%d repeated: same answer sequence=%d", request_id, previous["sequence"])
            return model, replay_key, {**previous, "repeated": True}
        return model, replay_key, None

    @staticmethod
    def _check_head_input(model: _Model, shape: tuple[int, ...]) -> None:
        expected = model.input_shape
        if len(expected) != len(shape) or any(e is not None and e != s for e, s in zip(expected, shape)):
            raise ShapeMismatchError(f"backbone output shape {list(shape)} does not match the head "
                                     f"input {[e if e is not None else 'N' for e in expected]}")

    def _answer(self, model: _Model, replay_key: tuple[int, str, int], request_id: int, x: np.ndarray,
                input_commitment: bytes, requester: str, requester_key: bytes, transfer_hash: bytes,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the head on the backbone output, encrypt the result to the requester, sign, journal."""
        model_id, version = model.model_id, model.version
        if not self._rate_limiter.allow(model.key, requester, model.rate_limit):
            raise EntryCallError(f"requester {requester} reached the model owner's limit of "
                                 f"{model.rate_limit['answers']} answers per {model.rate_limit.get('window_seconds')} s; "
                                 "ask again later")
        try:
            feed = ({model.input_specs[0][0]: x} if len(model.input_specs) == 1
                    else bundle.unpack(x, model.input_specs))
            outputs = model.head.run(feed)
        except (ModelError, InvalidInputError) as exc:
            raise EntryCallError(f"head refused the input of request {request_id}: {exc}",
                                 FailureCode.SHAPE_MISMATCH) from None
        result, public_label = release_result(np.asarray(outputs[model.output_name]), model.policy)
        encrypted = self._result_sessions.encrypt(requester_key, result,
                                                  crypto.result_aad(request_id, model_id, version))
        result_commitment = crypto.keccak256(encrypted)
        sequence = self.sequence + 1
        claim = ResultClaim(request_id=request_id, model_id=model_id, input_commitment=input_commitment,
                            requester=requester, requester_key=requester_key, enclave=self.address,
                            transfer_hash=transfer_hash, sequence=sequence, label=public_label)
        digest = claim.digest(model.chain_id, model.transfer, model_version=version,
                              result_commitment=result_commitment)
        answer = {"request_id": request_id, "enclave": self.address, "encrypted_result": encrypted,
                  "result_commitment": result_commitment, "transfer_hash": transfer_hash,
                  "input_commitment": input_commitment, "requester": requester, "requester_key": requester_key,
                  "sequence": sequence, "signature": eip712.sign(self._signer, digest), **(extra or {})}
        if public_label is not None:
            answer["public_label"] = public_label
        # durable before the answer leaves: once delivered, the chain anchors this sequence, and a
        # state that lost it would be refused as rolled back at the next restore
        self._journal_answer(replay_key, answer)
        # debug, not info: a formatted, timestamped line written per answer cost 0.15 ms of the
        # call under load; the server's ``call`` events (``--json``) report each answer already
        log.debug("inference request_id=%d model=0x%s shape=%s sequence=%d", request_id, model_id.hex()[:16],
                  list(x.shape), sequence)
        return {**answer, "repeated": False}

    def _remember(self, key: tuple[int, str, int], answer: dict[str, Any],
                  encoded: wire.Encoded | None = None) -> None:
        self.sequence = max(self.sequence, int(answer["sequence"]))
        self._answered.add(key)
        self._recent[key] = (answer, wire.Encoded([list(key), encoded or wire.Encoded(answer)]))
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_ANSWERS:
            self._recent.popitem(last=False)

    # -- journal ----------------------------------------------------------------------------------

    def _journal_path(self, epoch: int) -> Path:
        # asked for on every answer: the path of the current epoch is built once
        if self._journal_file[0] != epoch:
            self._journal_file = (epoch, self.sealed_dir / f"journal-{epoch}.sealed")
        return self._journal_file[1]

    def _journal_aad(self, epoch: int, index: int) -> bytes:
        return self._journal_aad_prefix + struct.pack(">QQ", epoch, index)

    def _journal_answer(self, key: tuple[int, str, int], answer: dict[str, Any]) -> None:
        """One sealed record appended (durable per ``answer_durability``): O(1) per answer;
        compacted at intervals."""
        encoded = wire.Encoded(answer)
        if self._journal_records >= JOURNAL_COMPACT:
            self._remember(key, answer, encoded)
            self._seal_manifest()  # the next epoch holds this answer; the old journal goes
            return
        record = self._sealer.seal(wire.encode({"key": list(key), "answer": encoded}), label="journal",
                                   aad=self._journal_aad(self._epoch, self._journal_records),
                                   state_version=self.state_version)
        self._journal.append(self._journal_path(self._epoch), record)
        self._journal_records += 1
        self._remember(key, answer, encoded)

    @property
    def answer_durability(self) -> str:
        return self._journal.durability

    def answer_sent(self) -> None:
        """The reply of an entry call is out: the journal's flusher may run now, and the next
        result session's ephemeral key pair is drawn (when the last was taken) while the node
        handles the reply; result sessions whose time is up are dropped."""
        self._journal.kick()
        self._result_keys.refill()
        self._result_sessions.expire()

    def close(self) -> None:
        """Flush the journal's outstanding records and close it (the process is stopping)."""
        with self._lock:
            self._journal.close()

    def _replay_journal(self, epoch: int, min_state_version: int) -> int:
        """Apply the journal of ``epoch``; returns the records applied (a torn tail is dropped)."""
        path = self._journal_path(epoch)
        if not path.exists():
            return 0
        self._journal.close()
        data, pos, index = path.read_bytes(), 0, 0
        while pos < len(data):
            (size,) = RECORD_HEADER.unpack_from(data, pos) if pos + RECORD_HEADER.size <= len(data) else (len(data),)
            if pos + RECORD_HEADER.size + size > len(data):
                # an answer whose write did not finish; cut off, so the next record is appended
                # where a replay will find it
                log.warning("journal ends in a torn record (an answer that never left); dropped")
                os.truncate(path, pos)
                break
            start = pos + RECORD_HEADER.size
            plain, _ = self._sealer.unseal(data[start:start + size], aad=self._journal_aad(epoch, index),
                                           label="journal", min_state_version=min_state_version)
            entry = wire.decode(plain)
            c, t, rid = entry["key"]
            self._remember((int(c), str(t), int(rid)), entry["answer"])
            pos += RECORD_HEADER.size + size
            index += 1
        return index

    # -- sealed state ---------------------------------------------------------------------------

    def _model_path(self, model: _Model) -> Path:
        return self.sealed_dir / f"model-{model.model_id.hex()}-v{model.version}.sealed"

    def _seal_model(self, model: _Model) -> None:
        model.state_version = self.state_version
        blob = self._sealer.seal(wire.encode(model.sealed_fields()), label="model",
                                 aad=_model_aad(model.model_id, model.version),
                                 state_version=model.state_version)
        write_atomic(self._model_path(model), blob)
        model.sealed_sha256 = hashlib.sha256(blob).digest()
        self._seal_manifest()

    def _manifest_aad(self) -> bytes:
        return MANIFEST_AAD + bytes.fromhex(self.address[2:])

    def _seal_manifest(self, durable: bool = True) -> bytes:
        entries = [{"model_id": m.model_id, "version": m.version, "state_version": m.state_version,
                    "sha256": m.sealed_sha256}
                   for m in sorted(self._models.values(), key=lambda m: m.key)]
        answered = self._answered.to_wire()
        recent = [entry for _, entry in self._recent.values()]  # encoded already, not again
        old_epoch, self._epoch = self._epoch, self._epoch + 1
        blob = self._sealer.seal(wire.encode({"models": entries, "answered": answered, "sequence": self.sequence,
                                              "recent": recent, "epoch": self._epoch}),
                                 aad=self._manifest_aad(), label="manifest",
                                 state_version=self.state_version)
        write_atomic(self.sealed_dir / "manifest.sealed", blob, fsync=durable)
        self._journal.close(flush=False)  # its records are in the manifest now
        self._journal_records = 0
        for stale in (old_epoch, self._epoch):  # the old journal is in the manifest now
            try:
                self._journal_path(stale).unlink()
            except FileNotFoundError:
                pass
        return blob

    def _call_seal_state(self, a: _Args) -> dict[str, Any]:
        action = a.str_("action", ("seal", "restore"), default="seal")
        if action == "seal":
            blob = self._seal_manifest()
            return {"state_version": self.state_version, "models": len(self._models),
                    "manifest_sha256": hashlib.sha256(blob).digest()}
        anchored = a.int_("anchored_state_version", 0, 2**64 - 1)
        anchored_sequence = a.int_("anchored_sequence", 0, 2**64 - 1, default=0)
        return self._restore(anchored, anchored_sequence)

    def _restore(self, anchored: int, anchored_sequence: int = 0) -> dict[str, Any]:
        """Load the sealed manifest and models; refuse a state older than the chain's anchors:
        the registry's state version (provisioning) and the highest answer sequence delivered
        (the highest sequence of its ``ResultSubmitted`` events), which a rolled-back manifest cannot reach."""
        path = self.sealed_dir / "manifest.sealed"
        if not path.exists():
            if anchored or anchored_sequence:
                raise SealingError(f"no sealed state here but the chain anchors state version "
                                   f"{anchored} and answer {anchored_sequence}: the sealed files were removed; "
                                   "provision again")
            self.restored = True
            return {"state_version": self.state_version, "models": 0}
        plain, manifest_version = self._sealer.unseal(path.read_bytes(), aad=self._manifest_aad(),
                                                      label="manifest", min_state_version=anchored)
        manifest = wire.decode(plain)
        sealed_sequence = int(manifest.get("sequence", 0))
        models: dict[tuple[bytes, int], _Model] = {}
        for entry in manifest["models"]:
            model_id, version = entry["model_id"], entry["version"]
            model_path = self.sealed_dir / f"model-{model_id.hex()}-v{version}.sealed"
            try:
                blob = model_path.read_bytes()
            except FileNotFoundError:
                raise SealingError(f"sealed model 0x{model_id.hex()} v{version} is missing") from None
            if hashlib.sha256(blob).digest() != entry["sha256"]:
                raise SealingError(f"sealed model 0x{model_id.hex()} v{version} is not the one the "
                                   "manifest lists (replaced by an older or foreign blob)")
            fields, sv = self._sealer.unseal(blob, aad=_model_aad(model_id, version), label="model",
                                             min_state_version=entry["state_version"])
            model = _Model(**wire.decode(fields))
            model.state_version, model.sealed_sha256 = sv, entry["sha256"]
            self._load_head(model)
            models[model.key] = model
        before = (self._models, self._answered, self._recent, self.sequence, self._epoch, self._journal_records)
        self._models = models
        self._answered = AnsweredIds.from_wire(manifest["answered"])
        recent: collections.OrderedDict[tuple[int, str, int], tuple[dict[str, Any], wire.Encoded]] = \
            collections.OrderedDict()
        for k, v in manifest.get("recent", []):
            key = (int(k[0]), str(k[1]), int(k[2]))
            recent[key] = (v, wire.Encoded([list(key), v]))
        self._recent = recent
        self.sequence = sealed_sequence
        self._epoch = int(manifest.get("epoch", 0))
        try:
            self._journal_records = self._replay_journal(self._epoch, manifest_version)
        except SealingError:
            (self._models, self._answered, self._recent, self.sequence, self._epoch, self._journal_records) = before
            raise
        if self.sequence < anchored_sequence:
            (self._models, self._answered, self._recent, self.sequence, self._epoch, self._journal_records) = before
            raise SealingError(f"sealed state is older than the chain: it has issued {self.sequence} answers, "
                               f"the chain has delivered answer {anchored_sequence}; the sealed state was rolled "
                               "back to an earlier copy and is refused (restore the latest sealed state)")
        self.state_version = manifest_version
        self.restored = True
        log.info("restored sealed state state_version=%d models=%d sequence=%d journal=%d", manifest_version,
                 len(models), self.sequence, self._journal_records)
        return {"state_version": manifest_version, "models": len(models), "sequence": self.sequence}


def _unflattened(shape: tuple[int, ...], head_input: tuple[int | None, ...]) -> tuple[int, ...]:
    """The MPC engine hands out its output per example flattened, (B, D); a head that reads a
    feature map (B, C, H, W) of the same D elements gets it in that shape (C order both)."""
    rest = head_input[1:]
    if len(shape) == 2 and len(head_input) > 2 and all(d is not None for d in rest) \
            and int(np.prod(rest)) == shape[1]:
        return (shape[0], *(int(d) for d in rest))
    return tuple(shape)


# --- result plaintext -----------------------------------------------------------------------------

def encode_result(output: np.ndarray, policy: str) -> bytes:
    """The result plaintext delivered (encrypted) to the requester (splitseal.protocol.result)."""
    return release_result(output, policy)[0]


def release_result(output: np.ndarray, policy: str) -> tuple[bytes, bytes | None]:
    """The result plaintext, and under the ``public_label`` policy the label the enclave also
    signs in plaintext (a 32-byte word; None under any other policy).

    Labels are computed here, inside the enclave, so that the ``label`` policy releases nothing else.
    """
    from .interpreter import apply_output_policy

    if output.ndim == 0:
        raise EntryCallError("head produced a scalar; expected one row of scores per sample", FailureCode.INTERNAL)
    if not np.all(np.isfinite(output)):
        raise EntryCallError("head produced non-finite outputs", FailureCode.INTERNAL)
    try:
        released = apply_output_policy(policy, output)
    except ModelError as exc:
        code = FailureCode.SHAPE_MISMATCH if policy == PUBLIC_LABEL_POLICY else FailureCode.INTERNAL
        raise EntryCallError(f"output policy {policy!r} of the head graph: {exc}", code) from None
    document = encode_result_document(policy, salt=crypto.random_bytes(SALT_BYTES), **released_parts(released))
    public_label = label_word(int(released["label"][0])) if policy == PUBLIC_LABEL_POLICY else None
    return document, public_label


def error_reason(exc: BaseException) -> FailureCode:
    """The on-chain failure reason code for a refusal."""
    if isinstance(exc, EntryCallError):
        return exc.reason
    if isinstance(exc, SplitsealError):
        return FailureCode.ENCLAVE_REFUSED
    return FailureCode.INTERNAL
