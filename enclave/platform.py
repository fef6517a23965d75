"""The platform-specific part of the enclave, behind one small interface.

Everything else in ``enclave/`` is the same on real hardware: it asks the platform for the
root of its key hierarchy and for a quote over a report. A Gramine-SGX backend would implement
:class:`Platform` with ``/dev/attestation/keys/_sgx_mrenclave`` / ``_sgx_mrsigner`` (EGETKEY)
and ``/dev/attestation/user_report_data`` + ``/dev/attestation/quote`` (DCAP), and the rest of
the enclave would not change.

:class:`SimulatedPlatform` is the stand-in used on machines without a TEE:

* the **root secret** (the CPU's fused key) is 32 random bytes in ``<platform dir>/root_secret``,
  created once with mode 0600 in a 0700 directory; it is refused if anyone else can read it;
* the **quoting key** (the quoting enclave's attestation key) is a secp256k1 key in
  ``<platform dir>/quoting_key``, same protection; its Ethereum address is what
  ``ModelRegistry`` pins as the attestation key.
"""

from __future__ import annotations

import abc
import logging
import os
import stat
import time
from pathlib import Path

from splitseal.errors import EnclaveError

log = logging.getLogger(__name__)

ROOT_SECRET_FILE = "root_secret"
QUOTING_KEY_FILE = "quoting_key"


class Platform(abc.ABC):
    """What the enclave needs from the hardware (or its stand-in)."""

    @abc.abstractmethod
    def root_secret(self) -> bytes:
        """The 32-byte platform secret every enclave key is derived from (never leaves)."""

    @abc.abstractmethod
    def quote(self, report_body: bytes) -> bytes:
        """Have the quoting enclave sign a 384-byte report body into a quote."""

    @abc.abstractmethod
    def quoting_address(self) -> str:
        """Checksummed address of the quoting key (what the registry pins)."""


def _secure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _read_or_create_secret(path: Path, create: "callable[[], bytes]") -> bytes:
    """Read a 0600 secret file, creating it atomically (O_EXCL) the first time."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise EnclaveError(
                f"platform secret {path} has mode {mode:o}; it must be readable by the enclave only "
                f"(chmod 600 {path})") from None
        data = path.read_bytes()
        if len(data) != 32:
            raise EnclaveError(f"platform secret {path} is {len(data)} bytes, expected 32; "
                               "it is corrupt: restore it or start a new platform dir")
        return data
    value = create()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
        f.flush()
        os.fsync(f.fileno())
    log.info("created platform secret file=%s", path.name)
    return value


class SimulatedPlatform(Platform):
    """Root secret and quoting key in files only the enclave's user can read (see module doc)."""

    def __init__(self, platform_dir: str | os.PathLike[str], clock: "callable[[], float]" = time.time) -> None:
        self.dir = Path(platform_dir)
        _secure_dir(self.dir)
        self._clock = clock
        self._root = _read_or_create_secret(self.dir / ROOT_SECRET_FILE, lambda: os.urandom(32))
        self._quoting_key = _read_or_create_secret(self.dir / QUOTING_KEY_FILE, _new_secp256k1_key)
        self._quoting_address = quoting_address_of(self._quoting_key)  # ``status`` reports it every call

    def root_secret(self) -> bytes:
        return self._root

    def quote(self, report_body: bytes) -> bytes:
        from enclave import quote as quote_mod

        return quote_mod.sign_quote(report_body, int(self._clock()), self._quoting_key)

    def quoting_address(self) -> str:
        return self._quoting_address


def _new_secp256k1_key() -> bytes:
    from coincurve import PrivateKey

    return PrivateKey().secret


def quoting_address_of(private_key: bytes) -> str:
    """Ethereum address (checksummed) of a secp256k1 private key."""
    from splitseal.protocol import eip712

    return eip712.address_of(private_key)


def read_quoting_address(platform_dir: str | os.PathLike[str]) -> str:
    """Address of an existing (or new) simulated platform's quoting key; for deployers and tests."""
    return SimulatedPlatform(platform_dir).quoting_address()


def platform_dir_for(state_dir: str | os.PathLike[str]) -> Path:
    """Where the simulated platform of an enclave state dir lives (``<state dir>/platform``)."""
    return Path(state_dir) / "platform"


def quoting_key_address(state_dir: str | os.PathLike[str]) -> str:
    """Quoting key address of the simulated platform under an enclave state dir (created if new).

    ``splitseal deploy`` pins this address in ``ModelRegistry`` when no other is given.
    """
    return read_quoting_address(platform_dir_for(state_dir))
