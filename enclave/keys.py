"""Key derivation from the platform root secret, after SGX's EGETKEY.

A key is HKDF-SHA256 of the root secret with ``info`` binding, in this order: the key name
(``"seal"``, ...), the policy, the identity the policy selects (the measurement for
``MEASUREMENT``, the signer id and product id for ``SIGNER``), the requested security version
the DEBUG attribute (as SGX's attribute mask does, so a debug build of the same code cannot open
what a production build sealed), the requested security version and a 32-byte key id. So:

* another enclave build (another measurement) derives different measurement-policy keys and
  cannot open what this build sealed;
* a later version from the same signer can derive the *older* versions' signer-policy keys
  (for migration) but an older version can never derive a newer one: asking for a security
  version above the running one is refused, as EGETKEY refuses it.
"""

from __future__ import annotations

import enum
import struct

from splitseal.errors import EnclaveError
from splitseal.protocol.crypto import hkdf_sha256

from .identity import EnclaveIdentity

KEY_SALT = b"splitseal.keys.v1"


class KeyPolicy(enum.IntEnum):
    """Which identity a derived key is bound to."""

    MEASUREMENT = 1
    SIGNER = 2


class KeyDerivationError(EnclaveError):
    """A key request was refused (higher security version, bad key id or name)."""


class KeyDeriver:
    """Derives the enclave's keys; holds the root secret and never hands it out."""

    def __init__(self, root_secret: bytes, identity: EnclaveIdentity) -> None:
        if len(root_secret) != 32:
            raise KeyDerivationError("the platform root secret must be 32 bytes")
        self._root = bytes(root_secret)
        self.identity = identity

    def __repr__(self) -> str:
        return f"KeyDeriver(measurement=0x{self.identity.mr_enclave.hex()[:16]}...)"

    def derive(self, name: str, policy: KeyPolicy, security_version: int, key_id: bytes) -> bytes:
        """The 32-byte key for (name, policy, security version, key id)."""
        policy = KeyPolicy(policy)
        if not 0 <= int(security_version) < 2**16:
            raise KeyDerivationError(f"security version {security_version} does not fit uint16")
        if security_version > self.identity.security_version:
            raise KeyDerivationError(
                f"key for security version {security_version} requested by an enclave running "
                f"security version {self.identity.security_version}; only equal or lower versions "
                "may be derived")
        if len(key_id) != 32:
            raise KeyDerivationError(f"key id must be 32 bytes, got {len(key_id)}")
        raw_name = name.encode()
        if not raw_name or len(raw_name) > 64:
            raise KeyDerivationError("key name must be 1..64 bytes")
        if policy is KeyPolicy.MEASUREMENT:
            bound = self.identity.mr_enclave
        else:
            bound = self.identity.mr_signer + struct.pack(">H", self.identity.product_id)
        info = (struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">B", int(policy)) + bound
                + struct.pack(">B", 1 if self.identity.debug else 0)
                + struct.pack(">H", int(security_version)) + bytes(key_id))
        return hkdf_sha256(self._root, salt=KEY_SALT, info=info)
