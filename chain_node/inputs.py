"""Request inputs: the tensor codec, encryption to the node's input key, off-chain blobs.

An input is ``tensor header || array bytes`` (the header of ``splitseal.protocol.crypto.tensor_header``:
dtype and shape), encrypted with ECIES to the node operator's X25519 input key with additional
data that binds it to (model, version, requester key). Its commitment is keccak256 of the
ciphertext. Small ciphertexts travel inline in the request; larger ones (images of 224x224x3
float32 and up) are stored as blobs addressed by that hash, and the node checks the hash.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitseal.errors import InvalidInputError
from splitseal.protocol import FailureCode
from splitseal.protocol.crypto import (
    TENSOR_DTYPES,
    SessionKeys,
    TransferSession,
    X25519KeyPair,
    ecies_decrypt,
    ecies_encrypt,
    input_aad,
    keccak256,
    request_key_hash,
    tensor_header,
)

#: Largest input a node accepts (bytes of plaintext tensor): a 512x512x3 float32 image and then some.
MAX_INPUT_BYTES = 8 * 1024 * 1024
#: Ciphertexts up to this size go inline in the request transaction.
INLINE_LIMIT = 4096
BLOB_SCHEME = "blob:"
_BLOB_RE = re.compile(r"^blob:0x([0-9a-f]{64})$")


class InputProblem(InvalidInputError):
    """An input the node cannot serve; carries the on-chain failure code."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode_tensor(array: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(array)
    dtype = arr.dtype.newbyteorder("<").str if arr.dtype.byteorder == ">" else arr.dtype.str
    if dtype not in TENSOR_DTYPES:
        raise InvalidInputError(f"input dtype {arr.dtype} is not supported; use float32 "
                                f"(one of {TENSOR_DTYPES})")
    return tensor_header(arr.shape, dtype) + arr.astype(dtype, copy=False).tobytes(order="C")


def decode_tensor(blob: bytes, *, max_bytes: int = MAX_INPUT_BYTES) -> np.ndarray:
    """Parse ``header || data``; every inconsistency is an :class:`InputProblem` (BadInput)."""
    def bad(msg: str) -> InputProblem:
        return InputProblem(FailureCode.BAD_INPUT, f"input tensor is malformed: {msg}")

    if len(blob) < 2:
        raise bad("too short for a header")
    n = blob[0]
    dtype = blob[1:1 + n].decode("ascii", errors="replace")
    if dtype not in TENSOR_DTYPES:
        raise bad(f"dtype {dtype!r} is not one of {TENSOR_DTYPES}")
    pos = 1 + n
    if len(blob) < pos + 1:
        raise bad("header truncated")
    ndim = blob[pos]
    pos += 1
    if ndim > 8 or len(blob) < pos + 4 * ndim:
        raise bad(f"{ndim} dimensions, or header truncated")
    shape = struct.unpack(f">{ndim}I", blob[pos:pos + 4 * ndim])
    pos += 4 * ndim
    count = 1
    for d in shape:  # Python integers: dims whose product overflows 64 bits are refused, not wrapped
        count *= int(d)
    size = int(np.dtype(dtype).itemsize) * count
    if size > max_bytes:
        raise bad(f"shape {tuple(shape)} {dtype} needs {size} bytes, above the node's limit of {max_bytes}")
    if count == 0:
        raise bad(f"shape {tuple(shape)} holds no element")
    if len(blob) - pos != size:
        raise bad(f"shape {tuple(shape)} {dtype} needs {size} bytes, got {len(blob) - pos}")
    array = np.frombuffer(blob, dtype=dtype, count=count, offset=pos).reshape(shape)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise bad("it holds NaN or infinite values; send finite numbers")
    return array


def seal_input(input_key: bytes, model_id: bytes, version: int, requester_key: bytes,
               array: np.ndarray, session: TransferSession | None = None) -> bytes:
    """Encrypt an input tensor to the node's input key (requester side), in the requester's
    ``session`` of inputs when given (docs/PROTOCOL.md, "Transfer sessions")."""
    aad = input_aad(request_key_hash(model_id, version, requester_key))
    if session is not None:
        return session.encrypt(input_key, encode_tensor(array), aad)
    return ecies_encrypt(input_key, encode_tensor(array), aad)


def open_input(key: X25519KeyPair | SessionKeys, model_id: bytes, version: int, requester_key: bytes,
               ciphertext: bytes) -> np.ndarray:
    """Decrypt and parse an input (node side), with the node's key pair or its
    :class:`SessionKeys` (which skip the exchange for the rest of a requester's session);
    failures carry their reason code."""
    aad = input_aad(request_key_hash(model_id, version, requester_key))
    try:
        plaintext = key.open(ciphertext, aad) if isinstance(key, SessionKeys) else ecies_decrypt(key, ciphertext, aad)
    except Exception:  # noqa: BLE001 - DecryptionError or malformed key material
        raise InputProblem(FailureCode.BAD_INPUT,
                           "input does not decrypt with the node's input key for this model, version "
                           "and requester key; encrypt it to BackboneExecution.inputKey()") from None
    return decode_tensor(plaintext)


@dataclass(frozen=True)
class BlobStore:
    """Content-addressed off-chain inputs: ``blob:0x<keccak256>`` names ``<dir>/<hash>.bin``."""

    directory: Path

    def put(self, data: bytes) -> str:
        digest = keccak256(data).hex()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{digest}.bin"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return f"{BLOB_SCHEME}0x{digest}"

    def get(self, pointer: str, expected: bytes, *, max_bytes: int) -> bytes:
        """Fetch a blob and check it against the request's input commitment."""
        match = _BLOB_RE.match(pointer.strip().lower())
        if not match:
            raise InputProblem(FailureCode.INPUT_UNAVAILABLE,
                               f"input pointer {pointer[:80]!r} is not of the form blob:0x<64 hex>")
        path = self.directory / f"{match.group(1)}.bin"
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise InputProblem(FailureCode.BAD_INPUT, f"input blob of {size} bytes exceeds {max_bytes}")
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputProblem(FailureCode.INPUT_UNAVAILABLE,
                               f"input blob {pointer} is not in the node's blob store") from None
        if keccak256(data) != bytes(expected):
            raise InputProblem(FailureCode.INPUT_HASH_MISMATCH,
                               f"input blob {pointer} does not match the request's input commitment")
        return data


def check_input_shape(x: np.ndarray, expected: tuple[int | None, ...]) -> np.ndarray:
    """The input as the backbone takes it: float32, a single sample given without its batch axis
    gets one; otherwise the shape must match (``None`` dims are free). Raises :class:`InputProblem`."""
    if x.dtype != np.float32:
        if x.dtype.kind != "f":
            raise InputProblem(FailureCode.SHAPE_MISMATCH, f"input dtype {x.dtype} is not float")
        x = x.astype(np.float32)
    if len(expected) == x.ndim + 1:
        x = x[None, ...]
    fixed = [e for e in expected]
    if len(fixed) != x.ndim or any(e is not None and e != d for e, d in zip(fixed, x.shape)):
        shown = tuple("N" if e is None else e for e in expected)
        raise InputProblem(FailureCode.SHAPE_MISMATCH,
                           f"input shape {tuple(x.shape)} does not match the backbone input {shown}")
    return np.ascontiguousarray(x)
