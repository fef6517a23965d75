"""The result plaintext: what the enclave encrypts to the requester and the requester opens.

Canonical JSON (sorted keys, no spaces), UTF-8::

    {"format": "splitseal.result.v1",
     "policy": "label" | "label_scores" | "features" | "ctc_greedy" | "public_label",
     "labels": [int, ...],            # label, label_scores, public_label: argmax per batch row
     "scores": [[float, ...], ...],   # only for label_scores: the head's output rows
     "features": [[float, ...], ...], # only for features: the head's output rows
     "sequences": [[int, ...], ...],  # only for ctc_greedy: class indices per row (CTC-collapsed;
                                      # the requester maps them onto the model's character list)
     "salt": "<32 hex chars>"}        # 16 random bytes: equal labels never look alike

A delivered result is bound by a :class:`ResultClaim` (the Solidity ``RequestBinding.ResultClaim``):
the request, its requester and the requester's key, the enclave, the transfer, the enclave's
answer sequence and, under the ``public_label`` policy only, the plaintext label (the class index
of a one-row result as a big-endian 32-byte word) that a delivery hands the request's consumer.
The enclave signs it (EIP-712 ``InferenceResult``); the contract, the requester and the auditor
check it.

The enclave applies the model's output policy (labels are computed inside it, so ``label``
releases nothing else) and builds the document with :func:`encode_result_document`; the
requester decrypts and parses it with :func:`open_result`. Both sides read this one module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from splitseal.errors import InvalidInputError

from . import crypto, eip712

RESULT_FORMAT = "splitseal.result.v1"
ZERO_ADDRESS = "0x" + "00" * 20
SALT_BYTES = 16
#: The output policy under which the enclave also signs the label in plaintext (one row only).
PUBLIC_LABEL_POLICY = "public_label"


def label_word(label: int) -> bytes:
    """A class index as the 32-byte ``label`` of the signed claim (big-endian uint256)."""
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < 2 ** 256:
        raise InvalidInputError(f"a public label is a class index >= 0, got {label!r}")
    return label.to_bytes(32, "big")


@dataclass(frozen=True)
class ResultClaim:
    """What an enclave's signed result names besides the result (``RequestBinding.ResultClaim``).

    ``consumer`` and ``callback_gas_limit`` are the request's callback (zero address and 0
    without one): the contract checks them against the request's binding; the enclave does not
    sign them (the binding already ties them to the request). ``label`` is the public label the
    enclave signed (``public_label`` policy) as a 32-byte word, or None (then the claim carries
    ``hasLabel = false`` and a zero word)."""

    request_id: int
    model_id: bytes
    input_commitment: bytes
    requester: str
    requester_key: bytes
    enclave: str
    transfer_hash: bytes
    sequence: int
    consumer: str = ZERO_ADDRESS
    callback_gas_limit: int = 0
    label: bytes | None = None

    def __post_init__(self) -> None:
        if self.label is not None and len(self.label) != 32:
            raise InvalidInputError(f"a public label is a 32-byte word, got {len(self.label)} bytes")

    @property
    def label_fields(self) -> tuple[bool, bytes]:
        """(hasLabel, label) as the struct and the signature carry them."""
        return (True, bytes(self.label)) if self.label is not None else (False, bytes(32))

    def as_abi(self) -> tuple[Any, ...]:
        """The tuple a contract call takes for the Solidity struct."""
        return (self.request_id, self.model_id, self.input_commitment, self.requester, self.requester_key,
                self.enclave, self.transfer_hash, self.sequence, self.consumer, self.callback_gas_limit,
                *self.label_fields)

    def digest(self, chain_id: int, enclave_transfer: str, *, model_version: int, result_commitment: bytes) -> bytes:
        """The EIP-712 ``InferenceResult`` digest the enclave signs for this claim."""
        return eip712.inference_result_digest(
            chain_id, enclave_transfer, request_id=self.request_id, model_id=self.model_id,
            model_version=model_version, input_commitment=self.input_commitment, requester=self.requester,
            requester_key=self.requester_key, transfer_hash=self.transfer_hash,
            result_commitment=result_commitment, sequence=self.sequence, has_label=self.label_fields[0],
            label=self.label_fields[1])


def encode_result_document(policy: str, *, labels: Sequence[int] | None = None,
                           scores: Sequence[Sequence[float]] | None = None,
                           features: Sequence[Sequence[float]] | None = None,
                           sequences: Sequence[Sequence[int]] | None = None, salt: bytes) -> bytes:
    """The canonical JSON of one result; only the parts the policy releases are given."""
    if len(salt) != SALT_BYTES:
        raise InvalidInputError(f"result salt must be {SALT_BYTES} bytes, got {len(salt)}")
    doc: dict[str, Any] = {"format": RESULT_FORMAT, "policy": policy, "salt": bytes(salt).hex()}
    if labels is not None:
        doc["labels"] = [int(i) for i in labels]
    if scores is not None:
        doc["scores"] = [_float32_row(row) for row in scores]
    if features is not None:
        doc["features"] = [_float32_row(row) for row in features]
    if sequences is not None:
        doc["sequences"] = [[int(v) for v in row] for row in sequences]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _float32(value: float) -> float:
    """A head output value as the shortest decimal that reads back as the same float32 (about 9
    digits instead of float64's 17): the result travels in calldata, where every byte costs gas
    (a 128-d embedding: 1.6 KB instead of 2.5 KB), and nothing of the float32 is lost."""
    return float(str(np.float32(value)))


#: rows at least this long take :func:`_float32_vector` (its fixed cost is ~90-130 us: below this
#: numpy's per-value 2.5-3.5 us is cheaper)
_VECTOR_FROM = 128
_POW10 = np.array([10.0 ** i for i in range(23)])  # exact in float64 up to 1e22


def _float32_row(row: Sequence[float]) -> list[float]:
    """:func:`_float32` of every value of a row, the very same floats, vectorised for long rows."""
    values = np.asarray(row, dtype=np.float32)
    if values.ndim != 1 or values.size < _VECTOR_FROM:
        return [_float32(v) for v in values] if values.ndim == 1 else [_float32(v) for v in row]
    return _float32_vector(values)


def _float32_vector(a: np.ndarray) -> list[float]:
    """The shortest float32 decimals of a 1-d float32 array without numpy's per-value Dragon4
    (2.5-3.5 us a value: 1.1-1.8 ms for a 512-d embedding), written by hand because no library
    call here gives them faster; the floats are exactly :func:`_float32`'s (tests compare the two
    on millions of values).

    For p = 6..9 significant digits, the p-digit decimal nearest the value is ``c x 10^-j`` with
    ``c = rint(|x| * 10^j)``: one multiplication by an exact power of ten (j <= 22) rounds once,
    so ``rint`` is the correct rounding unless the product lies within 1e-6 of a half (a near tie);
    ``c / 10^j`` is then the float64 nearest that decimal (both operands exact, one rounding), the
    float :func:`_float32` would parse. The shortest p whose decimal reads back as the same float32
    is the shortest representation (the nearest p-digit decimal lies in the value's rounding
    interval whenever any does, the interval being symmetric). Left to numpy's Dragon4, value by
    value: zeros, NaN, infinities, magnitudes outside [1e-14, 1e6) (subnormals included), powers
    of two (their interval is lopsided), near ties, a decimal exponent misjudged by log10, and
    values of 6 digits or fewer (the search starts at 6)."""
    with np.errstate(all="ignore"):  # signalling NaNs in the cast; they are left to numpy below
        x = a.astype(np.float64)
    ax = np.abs(x)
    special = ~((ax >= 1e-14) & (ax < 1e6)) | (np.abs(np.frexp(x)[0]) == 0.5)
    safe = np.where(special, 1.0, ax)
    # kept within the range whatever log10 rounds to, so every power of ten is looked up in the
    # table; an exponent off by one shows as a count of digits out of range below
    e10 = np.minimum(np.maximum(np.floor(np.log10(safe)), -14), 5).astype(np.int64)
    target = np.abs(a)
    chosen = np.zeros(a.shape, dtype=bool)
    result = np.zeros(a.shape, dtype=np.float64)
    for p in (6, 7, 8, 9):
        scale = _POW10[(p - 1) - e10]  # 10^j, j = p - 1 - e10 in [0, 22] within the range above
        scaled = safe * scale
        c = np.rint(scaled)
        doubtful = (np.abs(scaled - c) > 0.5 - 1e-6) | (c < _POW10[p - 1]) | (c >= _POW10[p])
        value = c / scale
        fits = value.astype(np.float32) == target
        if p == 6:
            special |= doubtful | fits  # a near tie, a misjudged exponent, or 6 digits or fewer
            continue
        special |= doubtful & ~chosen
        take = fits & ~chosen & ~special
        result[take] = value[take]
        chosen |= take
    special |= ~chosen  # 9 digits always read back; kept so that nothing is left unset
    values = np.copysign(result, x).tolist()
    for i in np.flatnonzero(special).tolist():
        values[i] = _float32(a[i])
    return values


@dataclass(frozen=True)
class InferenceResult:
    """A decrypted result, as the requester sees it (one entry per batch row)."""

    policy: str
    labels: tuple[int, ...]
    scores: tuple[tuple[float, ...], ...] | None
    features: tuple[tuple[float, ...], ...] | None
    #: ``ctc_greedy``: class indices per row (decoded into text by the requester)
    sequences: tuple[tuple[int, ...], ...] | None = None

    @property
    def label(self) -> int:
        """The first row's label (policies ``label`` and ``label_scores``)."""
        if not self.labels:
            raise InvalidInputError(f"a {self.policy!r} result carries no label")
        return self.labels[0]


def decode_result(plaintext: bytes) -> InferenceResult:
    """Parse a result plaintext (see the module doc)."""
    try:
        doc = json.loads(plaintext)
        if doc["format"] != RESULT_FORMAT:
            raise ValueError(doc["format"])
        labels = tuple(int(v) for v in doc.get("labels", ()))
        scores = tuple(tuple(float(v) for v in r) for r in doc["scores"]) if "scores" in doc else None
        features = tuple(tuple(float(v) for v in r) for r in doc["features"]) if "features" in doc else None
        sequences = tuple(tuple(int(v) for v in r) for r in doc["sequences"]) if "sequences" in doc else None
        return InferenceResult(str(doc["policy"]), labels, scores, features, sequences)
    except (ValueError, KeyError, TypeError):
        raise InvalidInputError(f"result plaintext is not a {RESULT_FORMAT} document") from None


def open_result(requester: "crypto.X25519KeyPair | crypto.SessionKeys", encrypted_result: bytes, request_id: int,
                model_id: bytes, version: int) -> InferenceResult:
    """What the requester runs: decrypt with its key (or its :class:`~crypto.SessionKeys`, which
    skip the exchange for the rest of an enclave's result session) and the request's AAD, then parse."""
    aad = crypto.result_aad(request_id, model_id, version)
    if isinstance(requester, crypto.SessionKeys):
        return decode_result(requester.open(encrypted_result, aad))
    return decode_result(crypto.ecies_decrypt(requester, encrypted_result, aad))


def released_parts(released: Mapping[str, Any]) -> dict[str, Any]:
    """Map an output policy's released arrays (``label``, ``scores``, ``features``, ``sequences``) onto the
    keyword arguments of :func:`encode_result_document`."""
    parts: dict[str, Any] = {}
    if "label" in released:
        parts["labels"] = released["label"]
    for key in ("scores", "features", "sequences"):
        if key in released:
            parts[key] = released[key]
    return parts
