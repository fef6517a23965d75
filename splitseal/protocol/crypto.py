"""Symmetric and public-key encryption of splitseal (docs/PROTOCOL.md, "ECIES").

One small library used by the enclave, the chain node and the requester, so that every party
builds the same ciphertexts and the same additional data (AAD).

ECIES to an X25519 key, step by step:

1. the sender draws a fresh ephemeral X25519 key pair (one per message), except where a session
   reuses one for a bounded run of messages to one recipient: a node's transfers to the enclave
   and a requester's inputs to the node (:class:`TransferSession`), the enclave's results to each
   requester key (:class:`RecipientSessions`, whose key pairs are drawn ahead of time,
   :class:`EphemeralKeys`);
2. shared secret = X25519(ephemeral private, recipient public);
3. key = HKDF-SHA256(shared secret, salt = ephemeral public || recipient public,
   info = ``"splitseal.ecies.v1"``, 32 bytes);
4. ciphertext = ``0x01 || ephemeral public (32) || nonce (12) || AES-256-GCM(key, nonce,
   plaintext, AAD)``.

The AAD is never transmitted: each use fixes it (the ``*_aad`` builders below), and the
receiver rebuilds it from what it expects, so a ciphertext moved to another request, model or
version fails to open.

This module imports only the standard library, ``cryptography`` and ``eth_hash`` (keccak).
"""

from __future__ import annotations

import functools
import hmac
import os
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sha3 import keccak_256 as _keccak_256  # safe-pysha3: C keccak, ~8x eth-hash's per call

from splitseal.errors import EnclaveError, InvalidInputError

ECIES_VERSION = 0x01
ECIES_INFO = b"splitseal.ecies.v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
PUBLIC_KEY_BYTES = 32
#: version byte + ephemeral public key + nonce + tag: what ECIES adds to a plaintext.
ECIES_OVERHEAD = 1 + PUBLIC_KEY_BYTES + NONCE_BYTES + TAG_BYTES

AAD_INPUT = b"splitseal.input.v1"
AAD_HEAD = b"splitseal.head.v1"
AAD_INDEX = b"splitseal.index.v1"
AAD_TRANSFER = b"splitseal.transfer.v1"
AAD_RESULT = b"splitseal.result.v1"


class DecryptionError(EnclaveError):
    """A ciphertext did not open: wrong key, wrong additional data, or tampered bytes.

    Deliberately says nothing about which: the three are indistinguishable to AES-GCM and the
    message must not help an attacker tell them apart.
    """


# --- hashing and key derivation -----------------------------------------------------------

def keccak256(data: bytes) -> bytes:
    """keccak256 as the EVM computes it (not NIST SHA3-256)."""
    return _keccak_256(data).digest()


def hkdf_sha256(secret: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``secret``; every derived key in splitseal goes through here."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def random_bytes(n: int) -> bytes:
    """Bytes from the operating system's CSPRNG."""
    return os.urandom(n)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare secrets or MACs without a timing side channel."""
    return hmac.compare_digest(bytes(a), bytes(b))


# --- X25519 key pairs ------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class X25519KeyPair:
    """An X25519 key pair; ``repr`` never shows the private half."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> "X25519KeyPair":
        key = X25519PrivateKey.generate()
        return cls(private=_raw_private(key), public=_raw_public(key.public_key()))._holding(key)

    @classmethod
    def from_private(cls, private: bytes) -> "X25519KeyPair":
        if len(private) != KEY_BYTES:
            raise InvalidInputError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(private)}")
        key = X25519PrivateKey.from_private_bytes(bytes(private))
        return cls(private=bytes(private), public=_raw_public(key.public_key()))._holding(key)

    def __repr__(self) -> str:
        return f"X25519KeyPair(public=0x{self.public.hex()})"

    @functools.cached_property
    def private_key(self) -> X25519PrivateKey:
        """The private half as an OpenSSL key object, built once: loading it from the 32 bytes
        derives the public point again, as costly as the exchange itself (~55 us), and an
        enclave or a requester opens many messages with one key pair."""
        return X25519PrivateKey.from_private_bytes(self.private)

    def _holding(self, key: X25519PrivateKey) -> "X25519KeyPair":
        self.__dict__["private_key"] = key  # what the cached property would compute again
        return self


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_public(public: bytes, what: str = "recipient public key") -> bytes:
    public = bytes(public)
    if len(public) != PUBLIC_KEY_BYTES:
        raise InvalidInputError(f"{what} must be {PUBLIC_KEY_BYTES} bytes (X25519), got {len(public)}")
    return public


# --- AES-256-GCM ----------------------------------------------------------------------------

def aead_encrypt(key: bytes, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> tuple[bytes, bytes]:
    """AES-256-GCM; returns ``(nonce, ciphertext || tag)``.

    The nonce is 96 random bits unless given. Random nonces are safe for far more than 2^32
    messages under one key only in the birthday sense; every key in splitseal encrypts few
    messages (ECIES: one; sealing: one key per sealed blob) so this is a wide margin.
    """
    if len(key) != KEY_BYTES:
        raise InvalidInputError(f"AES-256-GCM key must be {KEY_BYTES} bytes, got {len(key)}")
    nonce = random_bytes(NONCE_BYTES) if nonce is None else bytes(nonce)
    if len(nonce) != NONCE_BYTES:
        raise InvalidInputError(f"AES-GCM nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    return nonce, AESGCM(bytes(key)).encrypt(nonce, bytes(plaintext), bytes(aad))


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Open AES-256-GCM; raises :class:`DecryptionError` (no detail) when it does not verify."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES:
        raise DecryptionError("ciphertext does not open: malformed key, nonce or ciphertext length")
    return _aead_open(AESGCM(bytes(key)), nonce, ciphertext, aad)


def _aead_open(aead: AESGCM, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return aead.decrypt(bytes(nonce), bytes(ciphertext), bytes(aad))
    except InvalidTag:
        raise DecryptionError(
            "ciphertext does not open: wrong key, wrong additional data or tampered bytes") from None


# --- ECIES ----------------------------------------------------------------------------------

def _ecies_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return hkdf_sha256(shared, salt=ephemeral_public + recipient_public, info=ECIES_INFO)


@functools.lru_cache(maxsize=1024)
def _public_key(public: bytes) -> X25519PublicKey:
    # a node encrypts every transfer to one enclave key, an enclave every result to a few requesters
    return X25519PublicKey.from_public_bytes(public)


def ecies_encrypt(recipient_public: bytes, plaintext: bytes, aad: bytes,
                  ephemeral: "X25519KeyPair | None" = None) -> bytes:
    """Encrypt ``plaintext`` to an X25519 public key (docs/PROTOCOL.md, ECIES).

    ``ephemeral``: the message's ephemeral key pair when the caller drew it ahead of time (an
    :class:`EphemeralKeys` reserve, off the request's path); it must never serve another message.
    Without it one is drawn here."""
    recipient_public = _check_public(recipient_public)
    if ephemeral is None:
        private = X25519PrivateKey.generate()
        ephemeral_public = _raw_public(private.public_key())
    else:
        private, ephemeral_public = ephemeral.private_key, ephemeral.public
    nonce, sealed = aead_encrypt(_sealing_key(private, ephemeral_public, recipient_public), plaintext, aad)
    return bytes([ECIES_VERSION]) + ephemeral_public + nonce + sealed


def _sealing_key(private: X25519PrivateKey, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    try:
        shared = private.exchange(_public_key(recipient_public))
    except ValueError:
        raise InvalidInputError("recipient public key is a low-order X25519 point; use a real key") from None
    return _ecies_key(shared, ephemeral_public, recipient_public)


class EphemeralKeys:
    """A one-key reserve of ECIES ephemeral key pairs: :meth:`take` hands out the key pair drawn
    earlier by :meth:`refill` (or draws one now when there is none) and forgets it, so no key pair
    serves two messages, or two sessions; :meth:`refill` draws the next one where the caller has
    time to spare (the enclave: after a reply is sent, before the next request arrives). The draw
    is ~55 us of X25519 key generation taken off the request's path; the key pair is as fresh and
    as secret as one drawn in :func:`ecies_encrypt` (it never leaves the process)."""

    def __init__(self) -> None:
        self._next: X25519KeyPair | None = None
        self._lock = threading.Lock()  # a take and a refill on two threads never share a key pair

    def take(self) -> X25519KeyPair:
        with self._lock:
            key, self._next = self._next, None
        return key if key is not None else X25519KeyPair.generate()

    def refill(self) -> None:
        with self._lock:
            if self._next is None:
                self._next = X25519KeyPair.generate()

    @property
    def ready(self) -> bool:
        """A key pair is drawn and waiting (the next :meth:`take` costs nothing)."""
        return self._next is not None


def ecies_decrypt(recipient: X25519KeyPair, ciphertext: bytes, aad: bytes) -> bytes:
    """Open an ECIES ciphertext with the recipient's key pair and the expected AAD."""
    ephemeral_public, nonce, sealed = _ecies_parts(ciphertext)
    return aead_decrypt(_opening_key(recipient, ephemeral_public), nonce, sealed, aad)


def _ecies_parts(ciphertext: bytes) -> tuple[bytes, bytes, bytes]:
    """(ephemeral public key, nonce, AES-GCM ciphertext and tag) of an ECIES v1 ciphertext."""
    ciphertext = bytes(ciphertext)
    if len(ciphertext) < ECIES_OVERHEAD or ciphertext[0] != ECIES_VERSION:
        raise DecryptionError(
            f"not a splitseal ECIES v{ECIES_VERSION} ciphertext ({len(ciphertext)} bytes)")
    return ciphertext[1:33], ciphertext[33:45], ciphertext[45:]


def _opening_key(recipient: X25519KeyPair, ephemeral_public: bytes) -> bytes:
    try:
        shared = recipient.private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        raise DecryptionError("ciphertext does not open: invalid ephemeral key") from None
    return _ecies_key(shared, ephemeral_public, recipient.public)


#: A transfer session's ephemeral key pair serves at most this many messages, and for at most
#: this many seconds, before the sender draws the next (docs/PROTOCOL.md, "Transfer sessions").
#: Random 96-bit nonces under one key stay far from a collision for 2^12 messages (~2^-73).
TRANSFER_SESSION_MESSAGES = 4096
TRANSFER_SESSION_SECONDS = 600.0
#: The enclave's result sessions, one per requester key (docs/PROTOCOL.md, "Result sessions"):
#: shorter, because a result session's ephemeral private key opens every result of the session
#: (the window a memory compromise of the enclave reaches back), and bounded in number.
RESULT_SESSION_MESSAGES = 1024
RESULT_SESSION_SECONDS = 60.0
RESULT_SESSION_RECIPIENTS = 256


def _check_session_bounds(max_messages: int, max_seconds: float) -> None:
    if max_messages < 1 or max_seconds <= 0:
        raise InvalidInputError("a session serves at least one message for a positive time")


class TransferSession:
    """ECIES to one recipient with one ephemeral key pair kept for a bounded run of messages: the
    node's transfers to the enclave. The ciphertexts are ECIES v1 byte for byte (each message its
    own random nonce and its own AAD, which binds it to its request); what the session saves is
    the X25519 key generation, the exchange and the HKDF of every message but the first (~0.3 ms
    of the node's path per transfer), and the recipient's exchange with :class:`SessionKeys`.

    Reusing the ephemeral costs nothing the protocol relied on: the sender holds the plaintext
    anyway, and ECIES to a static recipient key never gave forward secrecy against that key. A
    new key pair is drawn after :data:`TRANSFER_SESSION_MESSAGES` messages, after
    :data:`TRANSFER_SESSION_SECONDS`, and whenever the recipient key changes (a new enclave)."""

    def __init__(self, max_messages: int = TRANSFER_SESSION_MESSAGES,
                 max_seconds: float = TRANSFER_SESSION_SECONDS, clock=time.monotonic,
                 keys: EphemeralKeys | None = None) -> None:
        _check_session_bounds(max_messages, max_seconds)
        self.max_messages, self.max_seconds, self._clock = int(max_messages), float(max_seconds), clock
        self._keys = keys  # where its key pairs come from when drawn ahead (else drawn on the spot)
        self._lock = threading.Lock()  # the node's workers share one session
        self._recipient: bytes | None = None
        self._prefix = b""
        self._aead: AESGCM | None = None
        self._used = 0
        self._since = 0.0
        self.sessions = 0  # key pairs drawn so far

    def encrypt(self, recipient_public: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """An ECIES v1 ciphertext of ``plaintext`` to ``recipient_public`` under the session's key."""
        recipient_public = _check_public(recipient_public)
        with self._lock:
            if (self._aead is None or self._recipient != recipient_public or self._used >= self.max_messages
                    or self._clock() - self._since >= self.max_seconds):
                self._start(recipient_public)
            self._used += 1
            aead, prefix = self._aead, self._prefix
        nonce = random_bytes(NONCE_BYTES)
        return prefix + nonce + aead.encrypt(nonce, bytes(plaintext), bytes(aad))

    def expired(self) -> bool:
        """Its time is up (or it never started): its next message starts a new key pair."""
        return self._aead is None or self._clock() - self._since >= self.max_seconds

    def _start(self, recipient_public: bytes) -> None:
        ephemeral = self._keys.take() if self._keys is not None else X25519KeyPair.generate()
        self._aead = AESGCM(_sealing_key(ephemeral.private_key, ephemeral.public, recipient_public))
        self._prefix = bytes([ECIES_VERSION]) + ephemeral.public
        self._recipient, self._used, self._since = recipient_public, 0, self._clock()
        self.sessions += 1


class RecipientSessions:
    """A :class:`TransferSession` per recipient key, for a sender that encrypts to many: the
    enclave's results, each to the key its requester named. The last ``capacity`` recipients'
    sessions are kept (a flood of new keys only evicts sessions, which start again); each session
    draws its key pair from ``keys`` when given (an :class:`EphemeralKeys` reserve the enclave
    refills after a reply), so a session's first message costs one exchange and one HKDF and the
    rest one AES-GCM each. The ciphertexts are ECIES v1 byte for byte: a requester opens each with
    :func:`ecies_decrypt` alone, or skips the exchange with :class:`SessionKeys`. :meth:`expire`
    drops the sessions whose time is up, so that no session key outlives its window in memory
    (the enclave calls it after each entry call's reply)."""

    def __init__(self, capacity: int = RESULT_SESSION_RECIPIENTS, max_messages: int = RESULT_SESSION_MESSAGES,
                 max_seconds: float = RESULT_SESSION_SECONDS, clock=time.monotonic,
                 keys: EphemeralKeys | None = None) -> None:
        if capacity < 1:
            raise InvalidInputError("recipient sessions keep at least one recipient")
        _check_session_bounds(max_messages, max_seconds)
        self.capacity, self._keys, self._clock = int(capacity), keys, clock
        self._bounds = (int(max_messages), float(max_seconds), clock)  # each new session's
        self._sessions: OrderedDict[bytes, TransferSession] = OrderedDict()
        self._lock = threading.Lock()
        self._next_sweep = float("-inf")  # when :meth:`expire` looks next

    def encrypt(self, recipient_public: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """An ECIES v1 ciphertext of ``plaintext`` to ``recipient_public`` under its session's key."""
        recipient_public = _check_public(recipient_public)
        with self._lock:
            session = self._sessions.get(recipient_public)
            if session is not None:
                self._sessions.move_to_end(recipient_public)
        if session is not None:
            return session.encrypt(recipient_public, plaintext, aad)
        # a new recipient: kept only once its first message is out (a low-order key raises here
        # and evicts no one)
        session = TransferSession(*self._bounds, keys=self._keys)
        ciphertext = session.encrypt(recipient_public, plaintext, aad)
        with self._lock:
            self._sessions.setdefault(recipient_public, session)
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
        return ciphertext

    def expire(self) -> int:
        """Drop every session whose time is up; returns how many were dropped. It looks at most
        once a second (a scan of up to ``capacity`` sessions after every reply would cost more
        than the sessions save), so a session key outlives its window by at most that second."""
        now = self._clock()
        with self._lock:
            if now < self._next_sweep:
                return 0
            self._next_sweep = now + 1.0
            ended = [key for key, session in self._sessions.items() if session.expired()]
            for key in ended:
                del self._sessions[key]
        return len(ended)

    def __len__(self) -> int:
        return len(self._sessions)


class SessionKeys:
    """The recipient's side of :class:`TransferSession`: opens ECIES v1 ciphertexts to one key
    pair as :func:`ecies_decrypt` does, keeping the AES-GCM key of the last ``capacity`` ephemeral
    keys that opened a message, so a session's later messages skip the X25519 exchange and the
    HKDF. Only a key that opened a message is kept (garbage does not fill the cache); anyone may
    encrypt to a public key, so a flood of sessions only evicts keys, which are derived again."""

    def __init__(self, recipient: X25519KeyPair, capacity: int = 256) -> None:
        self.recipient, self.capacity = recipient, int(capacity)
        self._keys: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext, as :func:`ecies_decrypt` gives it (and the same errors)."""
        ephemeral_public, nonce, sealed = _ecies_parts(ciphertext)
        with self._lock:
            aead = self._keys.get(ephemeral_public)
            if aead is not None:
                self._keys.move_to_end(ephemeral_public)
        if aead is not None:
            return _aead_open(aead, nonce, sealed, aad)
        aead = AESGCM(_opening_key(self.recipient, ephemeral_public))
        plaintext = _aead_open(aead, nonce, sealed, aad)
        with self._lock:
            self._keys[ephemeral_public] = aead
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)
        return plaintext

    def __len__(self) -> int:
        return len(self._keys)


def ecies_ephemeral_and_nonce(ciphertext: bytes) -> tuple[bytes, bytes]:
    """The public (ephemeral key, nonce) of an ECIES ciphertext; for audits and nonce tests."""
    if len(ciphertext) < ECIES_OVERHEAD:
        raise InvalidInputError("not an ECIES ciphertext: too short")
    return bytes(ciphertext[1:33]), bytes(ciphertext[33:45])


# --- additional data, one builder per use (docs/PROTOCOL.md table) -------------------------

def _b32(value: bytes, what: str) -> bytes:
    value = bytes(value)
    if len(value) != 32:
        raise InvalidInputError(f"{what} must be 32 bytes, got {len(value)}")
    return value


def _u32(value: int, what: str) -> bytes:
    if not 0 <= int(value) < 2**32:
        raise InvalidInputError(f"{what} must fit uint32, got {value}")
    return struct.pack(">I", int(value))


def _u256(value: int, what: str) -> bytes:
    if not 0 <= int(value) < 2**256:
        raise InvalidInputError(f"{what} must fit uint256, got {value}")
    return int(value).to_bytes(32, "big")


def _address(value: bytes | str) -> bytes:
    if isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise InvalidInputError(f"address {value!r} is not hex") from None
    if len(value) != 20:
        raise InvalidInputError(f"an address is 20 bytes, got {len(value)}")
    return bytes(value)


def request_key_hash(model_id: bytes, version: int, requester_key: bytes) -> bytes:
    """keccak256(modelId, uint32 version, requester key), packed; scopes an input ciphertext."""
    return keccak256(_b32(model_id, "model id") + _u32(version, "model version")
                     + _check_public(requester_key, "requester key"))


def input_aad(request_key_hash_: bytes) -> bytes:
    """AAD of a request input encrypted to the node's input key."""
    return AAD_INPUT + _b32(request_key_hash_, "request key hash")


def head_aad(model_id: bytes, version: int, package_plain_hash: bytes) -> bytes:
    """AAD of a head package encrypted to the enclave."""
    return AAD_HEAD + _b32(model_id, "model id") + _u32(version, "model version") \
        + _b32(package_plain_hash, "package plaintext hash")


def index_aad(model_id: bytes, version: int, index_plain_hash: bytes) -> bytes:
    """AAD of a parameter index encrypted to the enclave."""
    return AAD_INDEX + _b32(model_id, "model id") + _u32(version, "model version") \
        + _b32(index_plain_hash, "index plaintext hash")


def transfer_aad(request_id: int, model_id: bytes, version: int, enclave: bytes | str,
                 header: bytes) -> bytes:
    """AAD of a backbone output encrypted to the enclave; ``header`` from :func:`tensor_header`."""
    return AAD_TRANSFER + _u256(request_id, "request id") + _b32(model_id, "model id") \
        + _u32(version, "model version") + _address(enclave) + bytes(header)


def result_aad(request_id: int, model_id: bytes, version: int) -> bytes:
    """AAD of a result encrypted to the requester."""
    return AAD_RESULT + _u256(request_id, "request id") + _b32(model_id, "model id") \
        + _u32(version, "model version")


# --- tensors across the REE/enclave boundary -----------------------------------------------

#: dtypes a backbone output may have; the header carries numpy's little-endian type string.
TENSOR_DTYPES = ("<f4", "<f8", "<i8", "<i4")
MAX_TENSOR_DIMS = 8
#: ``uint8 len(dtype) || dtype`` of each dtype, the start of its tensor header
_DTYPE_PREFIX = {d: bytes((len(d),)) + d.encode("ascii") for d in TENSOR_DTYPES}


def tensor_header(shape: Sequence[int], dtype: str) -> bytes:
    """The shape-and-dtype header that ends the transfer AAD.

    ``uint8 len(dtype) || dtype as ASCII (numpy type string, e.g. "<f4") || uint8 ndim ||
    ndim x uint32 big-endian dims``. The tensor plaintext is the array's bytes in C order,
    little-endian, so the header fully determines how to read it.
    """
    # built on both sides of every transfer: the dims packed in one call (``I`` refuses what is
    # negative or beyond uint32) and the dtype's bytes made once, 2-3x faster than per dimension
    prefix = _DTYPE_PREFIX.get(dtype) if type(dtype) is str else None
    if prefix is None:
        raise InvalidInputError(f"tensor dtype {dtype!r} is not one of {TENSOR_DTYPES}")
    shape = tuple(map(int, shape))
    try:
        if len(shape) > MAX_TENSOR_DIMS:
            raise struct.error("too many dimensions")
        return prefix + bytes((len(shape),)) + struct.pack(f">{len(shape)}I", *shape)
    except struct.error:
        raise InvalidInputError(f"tensor shape {shape} has too many or out-of-range dimensions") from None


def tensor_nbytes(shape: Sequence[int], dtype: str) -> int:
    """Size in bytes of a C-order tensor of ``shape`` and ``dtype``."""
    size = int(dtype[2:])
    for d in shape:
        size *= int(d)
    return size


def encrypt_transfer(enclave_public: bytes, enclave_address: bytes | str, request_id: int,
                     model_id: bytes, version: int, array: "object",
                     session: TransferSession | None = None) -> tuple[bytes, tuple[int, ...], str]:
    """Encrypt a backbone output (a numpy array) to the enclave; returns (ciphertext, shape, dtype).

    The chain node calls this with its :class:`TransferSession`; without one the ciphertext has
    an ephemeral key of its own. The enclave's ``infer`` rebuilds the AAD from the same values.
    """
    import numpy as np  # local: keep this module importable without numpy for light clients

    arr = np.ascontiguousarray(array)
    dtype = arr.dtype.newbyteorder("<").str if arr.dtype.byteorder not in ("<", "=", "|") else arr.dtype.str
    arr = arr.astype(dtype, copy=False)
    header = tensor_header(arr.shape, dtype)
    aad = transfer_aad(request_id, model_id, version, enclave_address, header)
    plaintext = arr.tobytes(order="C")
    ciphertext = (ecies_encrypt(enclave_public, plaintext, aad) if session is None
                  else session.encrypt(enclave_public, plaintext, aad))
    return ciphertext, tuple(arr.shape), dtype
