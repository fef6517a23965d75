"""The enclave's identity: an MRENCLAVE-like measurement, an MRSIGNER-like signer id, the
security version, the product id and the debug attribute.

Measurement, as SGX's MRENCLAVE measures the pages loaded into the enclave, is a SHA-256 chain
over, in this fixed order:

1. ``code``: every ``enclave/*.py`` file except the interpreter's, plus the shared core files
   the enclave imports (``splitseal/__init__.py``, ``splitseal/errors.py`` and every
   ``splitseal/protocol/*.py``: wire formats, ECIES, EIP-712), sorted by path;
2. ``interpreter``: ``enclave/interpreter.py`` and ``enclave/package.py`` (the head's loader
   and evaluator), then the compiled kernels' flags, shared headers and C sources (``enclave/csrc``) and the
   shared objects built from them (``.venv/native``, see :mod:`enclave.native`), sorted;
3. ``config``: the canonical JSON of the measured configuration (:class:`MeasuredConfig`) and
   the versions of the third-party libraries the enclave runs on.

Every item enters as ``section || path || length || bytes`` so no two layouts collide; changing
any byte of any of them changes the measurement. Third-party library *code* is not measured
(Gramine would list it as trusted files); its version is.

Signer id, as SGX's MRSIGNER is the hash of the key that signed the enclave's SIGSTRUCT, is
SHA-256 of the uncompressed secp256k1 public key of the build's signing key. The stand-in's
default signing key is derived from a fixed development seed; a product would pass its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from splitseal.errors import ConfigError

log = logging.getLogger(__name__)

ENCLAVE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = ENCLAVE_DIR.parent
INTERPRETER_FILES = ("enclave/interpreter.py", "enclave/package.py")
#: Shared core files the enclave imports (``tests/unit/test_layers.py`` keeps the import rule).
SHARED_CORE_FILES = ("splitseal/__init__.py", "splitseal/errors.py")
SHARED_CORE_DIRS = ("splitseal/protocol",)
DEV_SIGNER_SEED = b"splitseal.dev-signer.v1"
MEASUREMENT_DOMAIN = b"splitseal.measurement.v1"


@dataclass(frozen=True)
class MeasuredConfig:
    """Configuration that changes the enclave's behaviour and is therefore measured."""

    #: Largest frame the entry-call server accepts, bytes.
    max_frame_bytes: int = 64 * 1024 * 1024
    #: Protocol version of the entry calls.
    protocol: str = "splitseal.enclave.v1"

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class EnclaveIdentity:
    """What a report states about the running enclave."""

    mr_enclave: bytes
    mr_signer: bytes
    product_id: int
    security_version: int
    debug: bool

    def __post_init__(self) -> None:
        if len(self.mr_enclave) != 32 or len(self.mr_signer) != 32:
            raise ConfigError("measurement and signer id must be 32 bytes each")
        if not 0 <= self.product_id < 2**16 or not 0 <= self.security_version < 2**16:
            raise ConfigError(
                f"product id {self.product_id} and security version {self.security_version} must fit uint16")


def code_files(root: Path = PROJECT_DIR) -> list[str]:
    """Relative paths of the measured code files (section 1), sorted."""
    enclave_files = sorted(p.relative_to(root).as_posix() for p in (root / "enclave").glob("*.py"))
    shared = [p.relative_to(root).as_posix() for d in SHARED_CORE_DIRS for p in (root / d).glob("*.py")]
    return sorted([f for f in enclave_files if f not in INTERPRETER_FILES] + list(SHARED_CORE_FILES) + shared)


def interpreter_files(root: Path = PROJECT_DIR) -> list[str]:
    """Relative paths of the measured interpreter files (section 2): the evaluator, the kernels'
    flags and sources, and the objects built from those sources (absent ones measured as such)."""
    from enclave import native

    source_dir = root / "enclave" / "csrc"
    files = list(INTERPRETER_FILES)
    if (source_dir / native.FLAGS_FILE).is_file():
        files.append(f"enclave/csrc/{native.FLAGS_FILE}")
        files += [f"enclave/csrc/{header}" for header in native.header_names(source_dir)]
        for name in native.kernel_names(source_dir):
            obj = native.object_path(name, source_dir, root / ".venv" / "native")
            files += [f"enclave/csrc/{name}.c", obj.relative_to(root).as_posix()]
    return files


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("numpy", "cryptography", "coincurve", "eth-hash", "eth-keys"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _item(h: "hashlib._Hash", section: bytes, name: str, data: bytes) -> None:
    raw_name = name.encode()
    h.update(struct.pack(">H", len(section)) + section + struct.pack(">H", len(raw_name)) + raw_name
             + struct.pack(">Q", len(data)))
    h.update(data)


def compute_measurement(config: MeasuredConfig = MeasuredConfig(), root: Path = PROJECT_DIR,
                        libraries: dict[str, str] | None = None) -> bytes:
    """The 32-byte measurement of the enclave at ``root`` with ``config`` (see module doc)."""
    h = hashlib.sha256(MEASUREMENT_DOMAIN)
    for rel in code_files(root):
        _item(h, b"code", rel, _read(root, rel))
    for rel in interpreter_files(root):
        _item(h, b"interpreter", rel, _read(root, rel, missing_ok=True))
    libs = _library_versions() if libraries is None else libraries
    _item(h, b"config", "measured-config", config.canonical())
    _item(h, b"config", "libraries", json.dumps(libs, sort_keys=True).encode())
    return h.digest()


def _read(root: Path, rel: str, missing_ok: bool = False) -> bytes:
    try:
        return (root / rel).read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return b""  # measured as absent: adding the file later changes the measurement
        raise ConfigError(f"measured enclave file {rel} is missing under {root}") from None


def signer_public_key(signer_private: bytes) -> bytes:
    """Uncompressed secp256k1 public key (64 bytes, no prefix) of a signing key."""
    from coincurve import PrivateKey

    return PrivateKey(signer_private).public_key.format(compressed=False)[1:]


def dev_signer_key() -> bytes:
    """The development build's signing key (anyone can derive it: fine for a stand-in only)."""
    return hashlib.sha256(DEV_SIGNER_SEED).digest()


def compute_signer_id(signer_private: bytes | None = None) -> bytes:
    """MRSIGNER-like id: SHA-256 of the signing key's uncompressed public key."""
    key = dev_signer_key() if signer_private is None else signer_private
    return hashlib.sha256(signer_public_key(key)).digest()


def load_identity(*, product_id: int = 1, security_version: int = 1, debug: bool = False,
                  config: MeasuredConfig = MeasuredConfig(), signer_private: bytes | None = None,
                  root: Path = PROJECT_DIR) -> EnclaveIdentity:
    """Measure the enclave at start, as the loader does before the first instruction runs."""
    identity = EnclaveIdentity(mr_enclave=compute_measurement(config, root),
                               mr_signer=compute_signer_id(signer_private),
                               product_id=product_id, security_version=security_version, debug=debug)
    log.info("enclave identity measurement=0x%s signer=0x%s svn=%d prod=%d debug=%s",
             identity.mr_enclave.hex(), identity.mr_signer.hex(), security_version, product_id, debug)
    return identity
