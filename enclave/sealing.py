"""Sealed state: AES-256-GCM under a key derived from the platform root secret.

Sealed blob layout (all integers big-endian)::

    magic "SSSEALED" (8) | format u16 | policy u8 | security version u16 | key id (32)
    | label length u8 | label | state version u64 | nonce (12) | ciphertext || tag (16)

Everything before the ciphertext is the *header*; the AES-GCM additional data is
``"splitseal.seal.v1" || header || caller AAD`` (for model state the caller AAD is model id and
version), so policy, security version, label and state version cannot be altered without the
tag failing, and a blob sealed for one model cannot be opened as another's.

Opening refuses, each with a :class:`SealingError` that names the reason and never the content:

* a blob sealed by another measurement (the derived key differs, the tag fails);
* a tampered blob (the tag fails);
* a blob whose state version is lower than the chain-anchored counter (rollback);
* a blob whose security version is above the running one (key derivation refuses).

Nonces: one sealing key per :class:`Sealer` (a random key id drawn at start, as SGX draws a
KEYID per seal), and nonce = 4 random bytes drawn at start || a 64-bit counter, so no nonce
repeats under one key; a restarted enclave draws a new key id and therefore a new key.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from splitseal.errors import SealingError
from splitseal.protocol.crypto import DecryptionError, aead_decrypt, aead_encrypt, random_bytes

from .keys import KeyDerivationError, KeyDeriver, KeyPolicy

log = logging.getLogger(__name__)

SEAL_MAGIC = b"SSSEALED"
SEAL_FORMAT = 1
SEAL_AAD_PREFIX = b"splitseal.seal.v1"
SEAL_KEY_NAME = "seal"
_FIXED = struct.Struct(">8sHBH32sB")
_TAIL = struct.Struct(">Q12s")


@dataclass(frozen=True)
class SealedHeader:
    """Public header of a sealed blob."""

    policy: KeyPolicy
    security_version: int
    key_id: bytes
    label: str
    state_version: int
    nonce: bytes
    header_bytes: bytes


def parse_header(blob: bytes) -> tuple[SealedHeader, bytes]:
    """Split a sealed blob into its header and ciphertext; checks the layout only."""
    blob = bytes(blob)
    if len(blob) < _FIXED.size:
        raise SealingError(f"sealed blob is truncated ({len(blob)} bytes)")
    magic, fmt, policy, svn, key_id, label_len = _FIXED.unpack_from(blob, 0)
    if magic != SEAL_MAGIC or fmt != SEAL_FORMAT:
        raise SealingError("not a splitseal sealed blob of format 1")
    end = _FIXED.size + label_len + _TAIL.size
    if len(blob) < end + 16:
        raise SealingError(f"sealed blob is truncated ({len(blob)} bytes)")
    try:
        label = blob[_FIXED.size:_FIXED.size + label_len].decode("ascii")
        policy = KeyPolicy(policy)
    except (UnicodeDecodeError, ValueError):
        raise SealingError("sealed blob header is corrupt (label or policy)") from None
    state_version, nonce = _TAIL.unpack_from(blob, _FIXED.size + label_len)
    return SealedHeader(policy, svn, key_id, label, state_version, nonce, blob[:end]), blob[end:]


class Sealer:
    """Seals and unseals bytes for one running enclave (see module doc)."""

    def __init__(self, keys: KeyDeriver) -> None:
        self._keys = keys
        self._key_id = random_bytes(32)
        self._nonce_prefix = random_bytes(4)
        self._counter = 0
        self._lock = threading.Lock()
        self._key_cache: dict[tuple[KeyPolicy, int, bytes], bytes] = {}

    def __repr__(self) -> str:
        return f"Sealer(key_id=0x{self._key_id.hex()[:16]}..., sealed={self._counter})"

    def _key(self, policy: KeyPolicy, svn: int, key_id: bytes) -> bytes:
        cache_key = (policy, svn, key_id)
        key = self._key_cache.get(cache_key)
        if key is None:
            key = self._keys.derive(SEAL_KEY_NAME, policy, svn, key_id)
            if len(self._key_cache) < 64:
                self._key_cache[cache_key] = key
        return key

    def _next_nonce(self) -> bytes:
        with self._lock:
            if self._counter >= 2**64 - 1:
                raise SealingError("sealing nonce space exhausted; restart the enclave for a new key")
            self._counter += 1
            return self._nonce_prefix + struct.pack(">Q", self._counter)

    def seal(self, plaintext: bytes, *, aad: bytes, label: str, state_version: int = 0,
             policy: KeyPolicy = KeyPolicy.MEASUREMENT) -> bytes:
        """Seal ``plaintext``; ``aad`` is bound but not stored (the opener must supply it)."""
        raw_label = label.encode("ascii")
        if not 0 < len(raw_label) < 256:
            raise SealingError("seal label must be 1..255 ASCII bytes")
        if not 0 <= state_version < 2**64:
            raise SealingError(f"state version {state_version} does not fit uint64")
        svn = self._keys.identity.security_version
        nonce = self._next_nonce()
        header = (_FIXED.pack(SEAL_MAGIC, SEAL_FORMAT, int(policy), svn, self._key_id, len(raw_label))
                  + raw_label + _TAIL.pack(state_version, nonce))
        _, ciphertext = aead_encrypt(self._key(policy, svn, self._key_id), plaintext,
                                     SEAL_AAD_PREFIX + header + bytes(aad), nonce=nonce)
        return header + ciphertext

    def unseal(self, blob: bytes, *, aad: bytes, label: str, min_state_version: int = 0) -> tuple[bytes, int]:
        """Open a sealed blob; returns ``(plaintext, state version)``. See module doc for refusals."""
        header, ciphertext = parse_header(blob)
        if header.label != label:
            raise SealingError(f"sealed blob holds {header.label!r}, expected {label!r}")
        if header.state_version < min_state_version:
            raise SealingError(
                f"sealed {label} has state version {header.state_version}, older than the "
                f"chain-anchored version {min_state_version}: refusing a rollback; provision again")
        try:
            key = self._key(header.policy, header.security_version, header.key_id)
        except KeyDerivationError as exc:
            raise SealingError(f"cannot derive the sealing key: {exc}") from None
        try:
            plaintext = aead_decrypt(key, header.nonce, ciphertext,
                                     SEAL_AAD_PREFIX + header.header_bytes + bytes(aad))
        except DecryptionError:
            raise SealingError(
                f"sealed {label} does not open: sealed by another enclave measurement or platform, "
                "for another model/version, or tampered") from None
        return plaintext, header.state_version


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write a file readable only by its owner, atomically (temp file + rename, + fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
