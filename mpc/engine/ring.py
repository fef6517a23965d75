"""Fixed-point arithmetic in the ring Z_2^64 and additive secret sharing.

Values are ``numpy.uint64`` arrays; every addition and multiplication wraps mod 2^64, which is
exactly the ring the patent's formula (1) shares in. A real number ``x`` is encoded as
``round(x * 2^f)`` in two's complement (``f`` fractional bits, 16 by default), so a product of
two encodings carries ``2f`` fractional bits and must be truncated by ``2^f``.

Sharing: ``x = s_0 + ... + s_{N-1} mod 2^64`` with ``s_0..s_{N-2}`` drawn uniformly from the
whole ring (a cryptographic generator), so any N-1 shares are independent of ``x``.

Truncation of shared values (from ``2f`` back to ``f`` fractional bits):

* 2 parties, local (SecureML, Mohassel & Zhang 2017): party 0 computes ``s_0 >> f`` (arithmetic),
  party 1 computes ``-((-s_1) >> f)``. Error bound: with probability at least
  ``1 - 2^(|x|_bits + 1 - 64)`` the result is within 1 unit in the last place (``2^-f``) of
  ``x / 2^f``; otherwise (a share pair straddling the wrap point) it is wrong by about
  ``2^(64-f)``. For |x| < 2^40 (values below 16 at 36 fractional bits, below 256 at 32) that
  failure probability is below 2^-23 per element.
* N parties, with dealer randomness (:func:`truncate_with_dealer_share`): the dealer gives shares
  of a uniform ``r`` and of its wrap count ``theta_r``; the parties open ``z = x + r`` to party 0
  only (uniform, reveals nothing) and correct the sum of locally shifted shares by the wrap count.
  Error bound: within ``N`` units in the last place, except with probability at most
  ``|x| / 2^64`` (same failure shape as above, far smaller).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from splitseal.errors import InvalidInputError

RING_BITS = 64
DEFAULT_FRACTIONAL_BITS = 16
U64 = np.uint64
_MASK64 = (1 << 64) - 1


def encode(x: np.ndarray | float, frac_bits: int = DEFAULT_FRACTIONAL_BITS) -> np.ndarray:
    """Encode reals as fixed point in Z_2^64 (two's complement, round to nearest)."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError("cannot encode non-finite values (NaN or infinity) in fixed point")
    scaled = np.rint(arr * float(1 << frac_bits))
    if np.any(np.abs(scaled) >= 2.0 ** 62):
        raise InvalidInputError(
            f"value too large for fixed point with {frac_bits} fractional bits in Z_2^64; "
            "normalise the input or lower the fractional bits")
    return scaled.astype(np.int64).view(np.uint64)


def decode(a: np.ndarray, frac_bits: int = DEFAULT_FRACTIONAL_BITS) -> np.ndarray:
    """Decode fixed-point ring elements to float64 (two's complement)."""
    return np.asarray(a, dtype=np.uint64).view(np.int64).astype(np.float64) / float(1 << frac_bits)


def encode_int(w: np.ndarray | float, frac_bits: int = DEFAULT_FRACTIONAL_BITS) -> np.ndarray:
    """Encode public reals (plaintext kernels) as small signed int64, for :mod:`matmul`'s fast path."""
    return encode(w, frac_bits).view(np.int64)


class Prg:
    """A cryptographic pseudo-random generator of ring elements (AES-256-CTR keystream).

    Seeded PRGs let two holders of a seed draw the same shares without sending them; the
    dealer and the re-sharing step of random mask recovery rely on that to save traffic.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise InvalidInputError("PRG key must be 32 bytes")
        self._key = key
        self._counter = 0

    def stream(self, label: bytes, nbytes: int) -> bytes:
        """``nbytes`` of keystream for ``label`` (domain separated by a hash of the label)."""
        import hashlib

        nonce = hashlib.sha256(label).digest()[:16]
        enc = Cipher(algorithms.AES(self._key), modes.CTR(nonce)).encryptor()
        return enc.update(b"\0" * nbytes) + enc.finalize()

    def ring(self, label: bytes | str, shape: Sequence[int] | int) -> np.ndarray:
        """Uniform ring elements of ``shape`` for ``label``; same key and label give the same values."""
        if isinstance(label, str):
            label = label.encode()
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        data = self.stream(label, 8 * count)
        return np.frombuffer(data, dtype=np.uint64).reshape(shape).copy()


def random_ring(shape: Sequence[int] | int) -> np.ndarray:
    """Uniform ring elements from the operating system's generator (fresh key per call)."""
    return Prg(os.urandom(32)).ring(b"random", shape)


def share(x: np.ndarray, n: int) -> list[np.ndarray]:
    """Split ring elements ``x`` into ``n >= 2`` additive shares, the first ``n-1`` uniform."""
    if n < 2:
        raise InvalidInputError(f"need at least 2 parties to share a secret, got {n}")
    x = np.asarray(x, dtype=np.uint64)
    shares = [random_ring(x.shape) for _ in range(n - 1)]
    last = x.copy()
    for s in shares:
        last -= s
    shares.append(last)
    return shares


def reconstruct(shares: Sequence[np.ndarray]) -> np.ndarray:
    """Sum shares mod 2^64."""
    total = np.array(shares[0], dtype=np.uint64, copy=True)
    for s in shares[1:]:
        total += np.asarray(s, dtype=np.uint64)
    return total


def truncate_local_2pc(s: np.ndarray, party: int, frac_bits: int = DEFAULT_FRACTIONAL_BITS) -> np.ndarray:
    """SecureML local truncation of one party's share, for exactly two parties (bound above)."""
    s = np.asarray(s, dtype=np.uint64)
    if party == 0:
        return (s.view(np.int64) >> frac_bits).view(np.uint64)
    neg = (np.uint64(0) - s).view(np.int64) >> frac_bits
    return np.uint64(0) - neg.view(np.uint64)


def wrap_count(terms: Sequence[np.ndarray]) -> np.ndarray:
    """How many times the integer sum of ``terms`` (each in [0, 2^64)) exceeds 2^64, as uint64."""
    acc = np.array(terms[0], dtype=np.uint64, copy=True)
    wraps = np.zeros(acc.shape, dtype=np.uint64)
    for t in terms[1:]:
        t = np.asarray(t, dtype=np.uint64)
        new = acc + t
        wraps += (new < acc).astype(np.uint64)
        acc = new
    return wraps


def truncate_with_dealer_share(s: np.ndarray, r: np.ndarray, theta_r: np.ndarray,
                               frac_bits: int = DEFAULT_FRACTIONAL_BITS) -> tuple[np.ndarray, np.ndarray]:
    """First local step of dealer truncation: ``(z_i, partial_i)``.

    ``z_i = s_i + r_i`` is sent to party 0; ``partial_i`` is this party's share of the result
    before party 0 adds its correction (:func:`truncate_with_dealer_finish`). Steps, in order:

    1. each party computes ``z_i = s_i + r_i`` and ``beta_i = [s_i + r_i wrapped]``;
    2. party 0 receives every ``z_j`` and computes ``eta`` = wrap count of their sum;
    3. share of the wrap count of the shares of x: ``theta_i = beta_i - theta_r_i (+ eta at party 0)``;
    4. result share: ``(s_i >> f) - theta_i * 2^(64-f)`` (logical shift).
    """
    s = np.asarray(s, dtype=np.uint64)
    z = s + r
    beta = (z < s).astype(np.uint64)
    theta = beta - theta_r
    partial = (s >> np.uint64(frac_bits)) - theta * np.uint64(1 << (64 - frac_bits))
    return z, partial


def truncate_with_dealer_finish(partial0: np.ndarray, all_z: Sequence[np.ndarray],
                                frac_bits: int = DEFAULT_FRACTIONAL_BITS) -> np.ndarray:
    """Party 0's correction: subtract ``eta * 2^(64-f)`` where eta is the wrap count of the z's."""
    eta = wrap_count(all_z)
    return partial0 - eta * np.uint64(1 << (64 - frac_bits))


def to_bytes_u64(a: np.ndarray) -> bytes:
    """Canonical little-endian bytes of ring elements (commitments hash these)."""
    return np.ascontiguousarray(np.asarray(a, dtype="<u8")).tobytes()


