"""enclave.quote: the SGX-layout report body, the report-data binding and the 457-byte quote."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from eth_abi.packed import encode_packed
from eth_utils import keccak

from enclave import quote
from splitseal.errors import AttestationError, InvalidInputError
from splitseal.protocol import eip712

CHAIN_ID = 31337


def _body(**overrides) -> quote.ReportBody:
    fields = dict(mr_enclave=b"\x11" * 32, mr_signer=b"\x22" * 32, report_data=os.urandom(32) + bytes(32),
                  isv_prod_id=0x0102, isv_svn=0x0304, cpu_svn=b"\x33" * 16, misc_select=0x05060708)
    fields.update(overrides)
    return quote.ReportBody(**fields)


def test_report_body_layout_is_sgx() -> None:
    body = _body()
    raw = body.pack()
    assert len(raw) == 384
    assert raw[0:16] == b"\x33" * 16
    assert raw[16:20] == struct.pack("<I", 0x05060708)
    assert raw[48:56] == struct.pack("<Q", quote.FLAG_INIT | quote.FLAG_MODE64BIT)
    assert raw[56:64] == struct.pack("<Q", quote.DEFAULT_XFRM)
    assert raw[64:96] == b"\x11" * 32
    assert raw[128:160] == b"\x22" * 32
    assert raw[256:258] == b"\x02\x01" and raw[258:260] == b"\x04\x03"  # little-endian
    assert raw[320:384] == body.report_data
    for start, end in ((20, 48), (96, 128), (160, 256), (260, 320)):
        assert raw[start:end] == bytes(end - start)


def test_debug_flag_is_bit_1_of_the_attributes() -> None:
    assert _body().pack()[48] & 0x02 == 0
    debug = _body(debug=True)
    assert debug.pack()[48] & 0x02 == 0x02
    assert quote.ReportBody.unpack(debug.pack()).debug is True
    with pytest.raises(InvalidInputError, match="debug=True"):
        _body(flags=quote.FLAG_DEBUG)


def test_report_body_round_trips() -> None:
    body = _body(debug=True, isv_svn=65535)
    assert quote.ReportBody.unpack(body.pack()) == body


@pytest.mark.parametrize("offset", [20, 100, 200, 300])
def test_reserved_bytes_must_be_zero(offset: int) -> None:
    raw = bytearray(_body().pack())
    raw[offset] = 1
    with pytest.raises(AttestationError, match="reserved"):
        quote.ReportBody.unpack(bytes(raw))


@pytest.mark.parametrize("field, value", [("mr_enclave", b"\0" * 31), ("report_data", b"\0" * 32),
                                          ("isv_svn", 65536), ("isv_prod_id", -1)])
def test_report_body_fields_are_checked(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        _body(**{field: value})


def test_report_data_binds_address_key_chain_and_nonce() -> None:
    addr, key, nonce = "0x" + "ab" * 20, os.urandom(32), os.urandom(32)
    data = quote.report_data_for(addr, key, CHAIN_ID, nonce)
    assert data == keccak(encode_packed(["address", "bytes32", "uint256", "bytes32"], [addr, key, CHAIN_ID, nonce])) \
        + bytes(32)
    assert quote.report_data_for(addr, key, CHAIN_ID + 1, nonce) != data
    assert quote.report_data_for(addr, os.urandom(32), CHAIN_ID, nonce) != data


def test_quote_packs_to_457_bytes_and_verifies() -> None:
    qkey = os.urandom(32)
    body = _body()
    packed = quote.sign_quote(body, 1_700_000_000, qkey)
    assert len(packed) == 457
    assert packed[:384] == body.pack()
    assert packed[384:392] == (1_700_000_000).to_bytes(8, "big")
    digest = keccak(b"splitseal.quote.v1" + packed[:392])
    assert quote.quote_digest(body, 1_700_000_000) == digest
    assert eip712.recover(digest, packed[392:]) == eip712.address_of(qkey)
    parsed = quote.verify_quote(packed, eip712.address_of(qkey), now=1_700_000_100, validity=3600)
    assert parsed.body == body and parsed.issued_at == 1_700_000_000
    assert quote.Quote.unpack(packed).pack() == packed
    assert quote.sign_quote(body.pack(), 1_700_000_000, qkey) == packed  # body as bytes too


def test_verify_checks_the_binding() -> None:
    qkey, enclave_key, enc, nonce = os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32)
    enclave = eip712.address_of(enclave_key)
    body = _body(report_data=quote.report_data_for(enclave, enc, CHAIN_ID, nonce))
    q = quote.make_quote(body, 1000, qkey)
    q.verify(eip712.address_of(qkey), now=1000, validity=60, enclave_address=enclave, encryption_key=enc,
             chain_id=CHAIN_ID, nonce=nonce)
    with pytest.raises(AttestationError, match="does not bind"):
        q.verify(eip712.address_of(qkey), now=1000, validity=60, enclave_address=enclave, encryption_key=enc,
                 chain_id=CHAIN_ID, nonce=os.urandom(32))
    with pytest.raises(InvalidInputError, match="or none"):
        q.verify(eip712.address_of(qkey), now=1000, validity=60, enclave_address=enclave)


@pytest.mark.parametrize("case, message", [
    ("other key", "not by the pinned quoting key"),
    ("future", "in the future"),
    ("expired", "older than"),
    ("debug", "DEBUG"),
    ("tampered", "not by the pinned quoting key"),
])
def test_verify_failures(case: str, message: str) -> None:
    qkey = os.urandom(32)
    body = _body(debug=case == "debug")
    packed = bytearray(quote.sign_quote(body, 1000, qkey))
    now, pinned = 1000, eip712.address_of(qkey)
    if case == "other key":
        pinned = eip712.address_of(os.urandom(32))
    elif case == "future":
        now = 1000 - quote.QUOTE_CLOCK_SKEW - 1
    elif case == "expired":
        now = 1000 + 3601
    elif case == "tampered":
        packed[70] ^= 1  # a bit of mr_enclave
    with pytest.raises(AttestationError, match=message):
        quote.verify_quote(bytes(packed), pinned, now=now, validity=3600)


def test_clock_skew_is_tolerated_like_the_registry() -> None:
    qkey = os.urandom(32)
    packed = quote.sign_quote(_body(), 1000, qkey)
    quote.verify_quote(packed, eip712.address_of(qkey), now=1000 - quote.QUOTE_CLOCK_SKEW, validity=60)
    source = (Path(__file__).resolve().parents[2] / "contracts/src/ModelRegistry.sol").read_text()
    assert "QUOTE_CLOCK_SKEW = 2 minutes;" in source and quote.QUOTE_CLOCK_SKEW == 120


def test_malformed_quotes() -> None:
    with pytest.raises(AttestationError, match="457 bytes"):
        quote.Quote.unpack(bytes(456))
    packed = bytearray(quote.sign_quote(_body(), 1000, os.urandom(32)))
    packed[-1] = 0  # v = 0
    with pytest.raises(AttestationError, match="malformed"):
        quote.Quote.unpack(bytes(packed)).signer()
