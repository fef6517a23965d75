"""The attestation report and quote format of the SGX-like stand-in (docs/PROTOCOL.md).

Pure format code: packing, unpacking, the report-data binding, the quote digest, signing with
a quoting key and verifying against a pinned quoting address. No process logic (the enclave
process and the simulated platform use it) and no chain libraries (``eth_utils`` keccak and
``coincurve`` through :mod:`splitseal.protocol.eip712` only). ``ModelRegistry.registerEnclave`` checks
exactly these bytes on-chain.

Report body, 384 bytes, SGX layout, little-endian integers::

    0 cpu_svn 16 | 16 misc_select 4 | 20 reserved 28 | 48 attributes 16 (flags u64, xfrm u64;
    flag bit 1 = DEBUG) | 64 mr_enclave 32 | 96 reserved 32 | 128 mr_signer 32 | 160 reserved 96 |
    256 isv_prod_id 2 | 258 isv_svn 2 | 260 reserved 60 | 320 report_data 64

Quote, 457 bytes: ``body (384) || issued_at (u64 big-endian) || signature (65)``, the signature by
the quoting key over ``keccak256("splitseal.quote.v1" || body || issued_at)``.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from splitseal.errors import AttestationError, InvalidInputError
from splitseal.protocol import eip712
from splitseal.protocol.crypto import keccak256

log = logging.getLogger(__name__)

REPORT_BODY_SIZE = 384
QUOTE_SIZE = 457
SIGNATURE_SIZE = 65
QUOTE_DOMAIN = b"splitseal.quote.v1"
#: How far ``issued_at`` may lie ahead of the verifier's clock (ModelRegistry.QUOTE_CLOCK_SKEW):
#: block timestamps trail the wall clock by up to a block interval.
QUOTE_CLOCK_SKEW = 120

#: SGX attribute flags (low u64 of ``attributes``).
FLAG_INIT = 0x01
FLAG_DEBUG = 0x02
FLAG_MODE64BIT = 0x04
#: What a production stand-in enclave reports: initialized, 64-bit, not debug.
DEFAULT_FLAGS = FLAG_INIT | FLAG_MODE64BIT
#: x87 + SSE state enabled (SGX's usual XFRM).
DEFAULT_XFRM = 0x03

_OFF_CPU_SVN, _OFF_MISC, _OFF_ATTR, _OFF_MRENCLAVE = 0, 16, 48, 64
_OFF_MRSIGNER, _OFF_PROD_ID, _OFF_SVN, _OFF_REPORT_DATA = 128, 256, 258, 320


def _check_bytes(name: str, value: bytes, size: int) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise InvalidInputError(f"{name} must be {size} bytes")
    return bytes(value)


def _check_uint(name: str, value: int, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** bits:
        raise InvalidInputError(f"{name} must be an integer in [0, 2**{bits})")
    return value


@dataclass(frozen=True)
class ReportBody:
    """An SGX-layout report body (384 bytes packed). Reserved areas are zero."""

    mr_enclave: bytes
    mr_signer: bytes
    report_data: bytes
    isv_prod_id: int = 0
    isv_svn: int = 0
    debug: bool = False
    cpu_svn: bytes = bytes(16)
    misc_select: int = 0
    #: Attribute flags other than DEBUG (which ``debug`` controls).
    flags: int = DEFAULT_FLAGS
    xfrm: int = DEFAULT_XFRM

    def __post_init__(self) -> None:
        _check_bytes("mr_enclave", self.mr_enclave, 32)
        _check_bytes("mr_signer", self.mr_signer, 32)
        _check_bytes("report_data", self.report_data, 64)
        _check_bytes("cpu_svn", self.cpu_svn, 16)
        _check_uint("isv_prod_id", self.isv_prod_id, 16)
        _check_uint("isv_svn", self.isv_svn, 16)
        _check_uint("misc_select", self.misc_select, 32)
        _check_uint("flags", self.flags, 64)
        _check_uint("xfrm", self.xfrm, 64)
        if self.flags & FLAG_DEBUG:
            raise InvalidInputError("set the DEBUG attribute with debug=True, not in flags")

    @property
    def attribute_flags(self) -> int:
        """The flags word as packed (DEBUG included when ``debug``)."""
        return self.flags | (FLAG_DEBUG if self.debug else 0)

    def pack(self) -> bytes:
        """The 384-byte body."""
        out = bytearray(REPORT_BODY_SIZE)
        out[_OFF_CPU_SVN:_OFF_CPU_SVN + 16] = self.cpu_svn
        out[_OFF_MISC:_OFF_MISC + 4] = struct.pack("<I", self.misc_select)
        out[_OFF_ATTR:_OFF_ATTR + 16] = struct.pack("<QQ", self.attribute_flags, self.xfrm)
        out[_OFF_MRENCLAVE:_OFF_MRENCLAVE + 32] = self.mr_enclave
        out[_OFF_MRSIGNER:_OFF_MRSIGNER + 32] = self.mr_signer
        out[_OFF_PROD_ID:_OFF_PROD_ID + 2] = struct.pack("<H", self.isv_prod_id)
        out[_OFF_SVN:_OFF_SVN + 2] = struct.pack("<H", self.isv_svn)
        out[_OFF_REPORT_DATA:_OFF_REPORT_DATA + 64] = self.report_data
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes) -> "ReportBody":
        """Parse a 384-byte body. Non-zero reserved bytes are refused (:class:`AttestationError`):
        a stand-in report never sets them, so they mean corruption or a foreign format."""
        if not isinstance(data, (bytes, bytearray)) or len(data) != REPORT_BODY_SIZE:
            raise AttestationError(f"a report body is {REPORT_BODY_SIZE} bytes, got "
                                   f"{len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__}")
        data = bytes(data)
        for start, end in ((20, 48), (96, 128), (160, 256), (260, 320)):
            if any(data[start:end]):
                raise AttestationError(f"report body has non-zero reserved bytes at {start}..{end}")
        flags, xfrm = struct.unpack_from("<QQ", data, _OFF_ATTR)
        return cls(
            cpu_svn=data[_OFF_CPU_SVN:_OFF_CPU_SVN + 16],
            misc_select=struct.unpack_from("<I", data, _OFF_MISC)[0],
            flags=flags & ~FLAG_DEBUG,
            xfrm=xfrm,
            debug=bool(flags & FLAG_DEBUG),
            mr_enclave=data[_OFF_MRENCLAVE:_OFF_MRENCLAVE + 32],
            mr_signer=data[_OFF_MRSIGNER:_OFF_MRSIGNER + 32],
            isv_prod_id=struct.unpack_from("<H", data, _OFF_PROD_ID)[0],
            isv_svn=struct.unpack_from("<H", data, _OFF_SVN)[0],
            report_data=data[_OFF_REPORT_DATA:_OFF_REPORT_DATA + 64],
        )


def report_data_for(enclave_address: eip712.Address, encryption_key: bytes, chain_id: int, nonce: bytes) -> bytes:
    """The 64-byte report data that binds an enclave's keys to a chain and a nonce:
    ``keccak256(abi.encodePacked(address, bytes32, uint256, bytes32)) || 32 zero bytes``."""
    packed = (eip712.address_bytes(enclave_address) + _check_bytes("encryption_key", encryption_key, 32)
              + _check_uint("chain_id", chain_id, 256).to_bytes(32, "big") + _check_bytes("nonce", nonce, 32))
    return keccak256(packed) + bytes(32)


def quote_digest(body: ReportBody | bytes, issued_at: int) -> bytes:
    """keccak256("splitseal.quote.v1" || body || issued_at as u64 big-endian)."""
    raw = body.pack() if isinstance(body, ReportBody) else _check_bytes("report body", body, REPORT_BODY_SIZE)
    return keccak256(QUOTE_DOMAIN + raw + _check_uint("issued_at", issued_at, 64).to_bytes(8, "big"))


@dataclass(frozen=True)
class Quote:
    """A report body, its issue time and the quoting key's signature (457 bytes packed)."""

    body: ReportBody
    issued_at: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_uint("issued_at", self.issued_at, 64)
        _check_bytes("signature", self.signature, SIGNATURE_SIZE)

    def pack(self) -> bytes:
        return self.body.pack() + self.issued_at.to_bytes(8, "big") + self.signature

    @classmethod
    def unpack(cls, data: bytes) -> "Quote":
        """Parse a 457-byte quote (no signature check: see :meth:`verify`)."""
        if not isinstance(data, (bytes, bytearray)) or len(data) != QUOTE_SIZE:
            raise AttestationError(f"a quote is {QUOTE_SIZE} bytes, got "
                                   f"{len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__}")
        data = bytes(data)
        body = ReportBody.unpack(data[:REPORT_BODY_SIZE])
        issued_at = int.from_bytes(data[REPORT_BODY_SIZE:REPORT_BODY_SIZE + 8], "big")
        return cls(body=body, issued_at=issued_at, signature=data[REPORT_BODY_SIZE + 8:])

    def digest(self) -> bytes:
        return quote_digest(self.body, self.issued_at)

    def signer(self) -> str:
        """The checksummed address the signature recovers to (:class:`AttestationError` if none)."""
        try:
            return eip712.recover(self.digest(), self.signature)
        except InvalidInputError as exc:
            raise AttestationError(f"quote signature is malformed: {exc}") from None

    def verify(self, quoting_address: eip712.Address, *, now: int, validity: int,
               enclave_address: eip712.Address | None = None, encryption_key: bytes | None = None,
               chain_id: int | None = None, nonce: bytes | None = None, allow_debug: bool = False,
               clock_skew: int = QUOTE_CLOCK_SKEW) -> None:
        """Check what ``ModelRegistry.registerEnclave`` checks, off-chain.

        Signed by ``quoting_address``; ``issued_at`` at most ``clock_skew`` seconds after ``now``
        and at most ``validity`` seconds before it; DEBUG off unless ``allow_debug``; and, when the binding values are
        given, the report data binds them. Raises :class:`AttestationError` naming the failure.
        """
        expected = eip712.address_bytes(quoting_address)
        signer = self.signer()
        if eip712.address_bytes(signer) != expected:
            raise AttestationError(f"quote is signed by {signer}, not by the pinned quoting key "
                                   f"0x{expected.hex()}")
        if self.issued_at > now + clock_skew:
            raise AttestationError(f"quote issued at {self.issued_at}, in the future of {now} "
                                   f"(more than {clock_skew} s of clock skew)")
        if now > self.issued_at and now - self.issued_at > validity:
            raise AttestationError(f"quote issued at {self.issued_at} is older than {validity} s at {now}")
        if self.body.debug and not allow_debug:
            raise AttestationError("quote is from a DEBUG enclave, which is never trusted")
        binding = (enclave_address, encryption_key, chain_id, nonce)
        if any(v is not None for v in binding):
            if any(v is None for v in binding):
                raise InvalidInputError("give all of enclave_address, encryption_key, chain_id and nonce, or none")
            if self.body.report_data != report_data_for(enclave_address, encryption_key, chain_id, nonce):
                raise AttestationError("quote report data does not bind this enclave address, encryption key, "
                                       "chain id and nonce")


def make_quote(body: ReportBody | bytes, issued_at: int, quoting_key: bytes) -> Quote:
    """Sign a report body with the quoting key's private key."""
    report = body if isinstance(body, ReportBody) else ReportBody.unpack(body)
    return Quote(body=report, issued_at=issued_at, signature=eip712.sign(quoting_key, quote_digest(report, issued_at)))


def sign_quote(body: ReportBody | bytes, issued_at: int, quoting_key: bytes) -> bytes:
    """The packed 457-byte quote over ``body`` (a :class:`ReportBody` or its 384 bytes)."""
    return make_quote(body, issued_at, quoting_key).pack()


def verify_quote(quote: bytes, quoting_address: eip712.Address, *, now: int, validity: int,
                 **binding: object) -> Quote:
    """Unpack and :meth:`Quote.verify` a packed quote; returns the parsed quote."""
    parsed = Quote.unpack(quote)
    parsed.verify(quoting_address, now=now, validity=validity, **binding)  # type: ignore[arg-type]
    return parsed
