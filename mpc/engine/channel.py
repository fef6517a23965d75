"""Authenticated, encrypted channels between MPC processes (built with `cryptography`).

Every process of a cluster (nodes ``node-0..node-{N-1}``, the ``dealer``, the ``client`` that
the orchestrator uses) has an Ed25519 identity key; the cluster's *roster* lists their public
keys. A connection runs a SIGMA-style authenticated key exchange, then carries AES-256-GCM
frames. Handshake, in order:

1. initiator -> responder: its name, an ephemeral X25519 key, a nonce;
2. responder -> initiator: its name, ephemeral key, nonce, and an Ed25519 signature over the
   transcript hash (label || message 1 || message 2 without signature);
3. initiator -> responder: its Ed25519 signature over the same hash plus "initiator".

Both check the other's signature against the roster (and the initiator checks it reached the name
it dialled). Keys: HKDF-SHA256 of the X25519 secret, salt = transcript hash, gives one key per
direction and a 32-byte *pair key* that only these two parties know (random mask recovery draws
its re-sharing masks from it). Frame nonce = 64-bit counter per direction, so a replayed,
reordered or dropped frame fails authentication.

Why not TLS: the node reads and writes the same connection from two threads (a reader thread
keeps large simultaneous sends from deadlocking), which OpenSSL's SSL objects do not promise to
support; a plain socket with per-direction AEAD does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from splitseal.errors import ConfigError, ProtocolError

log = logging.getLogger(__name__)

_LABEL = b"splitseal.mpc.ake.v1"
MAX_FRAME = 1 << 31


# --- identities and roster ---------------------------------------------------------------------

def generate_identity(path: Path) -> str:
    """Create an Ed25519 identity key file (mode 0600); returns the public key hex."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_identity(path: Path) -> Ed25519PrivateKey:
    try:
        raw = Path(path).read_bytes()
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (OSError, ValueError):
        raise ConfigError(f"identity key {path} is missing or corrupt; re-run `splitseal mpc up`") from None


@dataclass(frozen=True)
class Roster:
    """Names and Ed25519 public keys of the processes allowed in the cluster."""

    keys: dict[str, bytes]

    @classmethod
    def load(cls, path: Path) -> "Roster":
        try:
            data = json.loads(Path(path).read_text())
            return cls({k: bytes.fromhex(v) for k, v in data.items()})
        except (OSError, ValueError, AttributeError):
            raise ConfigError(f"roster {path} is missing or corrupt; re-run `splitseal mpc up`") from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({k: v.hex() for k, v in self.keys.items()}, indent=1))

    def public(self, name: str) -> Ed25519PublicKey:
        if name not in self.keys:
            raise ProtocolError(f"{name!r} is not in the cluster roster; connection refused")
        return Ed25519PublicKey.from_public_bytes(self.keys[name])


# --- the channel -----------------------------------------------------------------------------

def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def _send_msg(sock: socket.socket, obj: dict) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    sock.sendall(struct.pack("<I", len(data)) + data)
    return data


def _recv_msg(sock: socket.socket) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<I", _recv_exact(sock, 4))
    if n > 65536:
        raise ProtocolError("handshake message too large")
    data = _recv_exact(sock, n)
    return json.loads(data), data


class Channel:
    """An authenticated AES-GCM channel over one TCP connection."""

    def __init__(self, sock: socket.socket, peer: str, send_key: bytes, recv_key: bytes, pair_key: bytes) -> None:
        self.sock = sock
        self.peer = peer
        self.pair_key = pair_key
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self._send_ctr = 0
        self._recv_ctr = 0
        self._send_lock = threading.Lock()
        self.closed = False

    def send(self, data: bytes) -> int:
        """Encrypt and send one frame; returns bytes on the wire."""
        with self._send_lock:
            nonce = struct.pack(">4xQ", self._send_ctr)
            self._send_ctr += 1
            ct = self._send.encrypt(nonce, data, None)
            try:
                self.sock.sendall(struct.pack("<I", len(ct)) + ct)
            except OSError as exc:
                self.closed = True
                raise ProtocolError(f"link to {self.peer} is down ({exc.__class__.__name__})") from None
            return 4 + len(ct)

    def recv(self) -> tuple[bytes, int]:
        """Receive and authenticate one frame; ConnectionError on EOF, ProtocolError on tampering."""
        (n,) = struct.unpack("<I", _recv_exact(self.sock, 4))
        if n > MAX_FRAME:
            raise ProtocolError(f"{self.peer} announced a frame of {n} bytes; refusing")
        ct = _recv_exact(self.sock, n)
        nonce = struct.pack(">4xQ", self._recv_ctr)
        self._recv_ctr += 1
        try:
            return self._recv.decrypt(nonce, ct, None), 4 + n
        except InvalidTag:
            raise ProtocolError(f"frame from {self.peer} failed authentication; dropping the link") from None

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _derive(shared: bytes, th: bytes) -> tuple[bytes, bytes, bytes]:
    okm = HKDF(hashes.SHA256(), 96, th, b"splitseal.mpc.channel.v1").derive(shared)
    return okm[:32], okm[32:64], okm[64:]


def _pub(x: X25519PrivateKey) -> bytes:
    return x.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def connect(host: str, port: int, me: str, identity: Ed25519PrivateKey, roster: Roster, expect: str,
            timeout: float = 10.0) -> Channel:
    """Dial ``expect`` at host:port and authenticate both sides."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ProtocolError(f"cannot reach {expect} at {host}:{port} ({exc.__class__.__name__})") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        eph = X25519PrivateKey.generate()
        m1 = _send_msg(sock, {"name": me, "eph": _pub(eph).hex(), "nonce": os.urandom(16).hex()})
        reply, _ = _recv_msg(sock)
        if reply.get("error"):
            raise ProtocolError(f"{expect} refused the connection: {reply['error']}")
        if reply.get("name") != expect:
            raise ProtocolError(f"connected to {reply.get('name')!r} at {host}:{port}, expected {expect!r}")
        body = {k: reply[k] for k in ("name", "eph", "nonce")}
        m2 = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        th = hashlib.sha256(_LABEL + m1 + m2).digest()
        try:
            roster.public(expect).verify(bytes.fromhex(reply["sig"]), th)
        except InvalidSignature:
            raise ProtocolError(f"{expect} at {host}:{port} failed authentication") from None
        _send_msg(sock, {"sig": identity.sign(th + b"initiator").hex()})
        shared = eph.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(reply["eph"])))
        k_i2r, k_r2i, pair = _derive(shared, th)
        sock.settimeout(None)
        return Channel(sock, expect, k_i2r, k_r2i, pair)
    except (OSError, ValueError, KeyError, ConnectionError) as exc:
        sock.close()
        raise ProtocolError(f"handshake with {expect} at {host}:{port} failed ({exc.__class__.__name__})") from None
    except ProtocolError:
        sock.close()
        raise


def accept(sock: socket.socket, me: str, identity: Ed25519PrivateKey, roster: Roster,
           allowed: Callable[[str], bool], timeout: float = 10.0) -> Channel:
    """Run the responder side on an accepted socket."""
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        hello, m1 = _recv_msg(sock)
        name = str(hello.get("name"))
        if not allowed(name) or name not in roster.keys:
            _send_msg(sock, {"error": f"{name!r} may not connect to {me}"})
            raise ProtocolError(f"refused a connection from {name!r}")
        eph = X25519PrivateKey.generate()
        body = {"name": me, "eph": _pub(eph).hex(), "nonce": os.urandom(16).hex()}
        m2 = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        th = hashlib.sha256(_LABEL + m1 + m2).digest()
        _send_msg(sock, {**body, "sig": identity.sign(th).hex()})
        fin, _ = _recv_msg(sock)
        try:
            roster.public(name).verify(bytes.fromhex(fin["sig"]), th + b"initiator")
        except InvalidSignature:
            raise ProtocolError(f"{name!r} failed authentication") from None
        shared = eph.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(hello["eph"])))
        k_i2r, k_r2i, pair = _derive(shared, th)
        sock.settimeout(None)
        return Channel(sock, name, k_r2i, k_i2r, pair)
    except (OSError, ValueError, KeyError, ConnectionError) as exc:
        sock.close()
        raise ProtocolError(f"handshake failed ({exc.__class__.__name__})") from None
    except ProtocolError:
        sock.close()
        raise


class Listener:
    """Accepts authenticated connections on host:port and hands each channel to ``on_channel``."""

    def __init__(self, host: str, port: int, me: str, identity: Ed25519PrivateKey, roster: Roster,
                 allowed: Callable[[str], bool], on_channel: Callable[[Channel], None]) -> None:
        self.me = me
        self._identity = identity
        self._roster = roster
        self._allowed = allowed
        self._on_channel = on_channel
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=f"listener-{me}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handshake, args=(conn,), daemon=True).start()

    def _handshake(self, conn: socket.socket) -> None:
        try:
            ch = accept(conn, self.me, self._identity, self._roster, self._allowed)
        except ProtocolError as exc:
            log.warning("mpc.listener refused me=%s reason=%s", self.me, exc)
            return
        self._on_channel(ch)

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
