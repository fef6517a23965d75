"""Correlated randomness for multiplications on shares: the TripleProvider interface and a dealer.

A Beaver triple is ``(A, B, C)`` secret-shared with ``C = A (op) B`` for the bilinear ``op`` the
protocol needs (matrix product, convolution, elementwise product). Each node asks its own
:class:`TripleProvider` for *its* shares under a tag that every node derives identically (session
id and step counter), so triples line up across nodes without coordination.

The :class:`Dealer` is a trusted third party that never sees data. To keep its traffic small it
uses seeds (the "trusted first party" trick): the dealer gives each node a secret 32-byte seed;
every node draws its shares of ``A`` and ``B``, and nodes ``0..N-2`` also their share of ``C``,
from an AES-CTR generator keyed by that seed. Only node ``N-1`` receives a message: its share of
``C``, computed by the dealer as ``C - sum(other C shares)``. Traffic per triple = size of C.

Truncation pairs (``r`` uniform, ``theta_r`` = wrap count of r's shares) follow the same pattern.
Another provider (oblivious transfer, homomorphic encryption) can replace the dealer behind the
interface.
"""

from __future__ import annotations

import abc
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from splitseal.errors import InvalidInputError, ProtocolError

from .matmul import ConvSpec, RingOperand, conv_prepare, kernel_operand, ring_conv, ring_conv2d, ring_matmul
from .ring import Prg, wrap_count

Triple = tuple[np.ndarray, np.ndarray, "np.ndarray | Future[np.ndarray]"]


DEALER_WAIT = {"seconds": 0.0}  # time sessions spent blocked on dealer answers (benchmarks)


def resolve(c: "np.ndarray | Future[np.ndarray]") -> np.ndarray:
    """A triple's C share: providers may hand it out as a Future still in flight from the dealer;
    sessions resolve it after the opening round, so the dealer round trip overlaps that round."""
    if not isinstance(c, Future):
        return c
    import time

    t0 = time.perf_counter()
    try:
        return c.result()
    finally:
        DEALER_WAIT["seconds"] += time.perf_counter() - t0


class TripleProvider(abc.ABC):
    """One node's source of correlated randomness (its shares only)."""

    party: int
    n_parties: int

    @abc.abstractmethod
    def matmul_triple(self, tag: str, a_shape: Sequence[int], b_shape: Sequence[int],
                      b_label: str | None = None) -> Triple:
        """Shares of A (m,k), B (k,n), C = A @ B mod 2^64.

        With ``b_label``, B is the fixed mask :meth:`fixed_mask` returns for that label (A and C
        stay fresh): a weight masked once as ``F = W - B`` is then reused across inferences.
        """

    @abc.abstractmethod
    def conv_triple(self, tag: str, x_shape: Sequence[int], w_shape: Sequence[int], stride: int,
                    padding: int, b_label: str | None = None, spec: ConvSpec | None = None) -> Triple:
        """Shares of A (input shape), B (kernel shape), C = conv2d(A, B) mod 2^64 (``b_label``
        as for :meth:`matmul_triple`). ``spec`` (a :class:`ConvSpec`: asymmetric pads, strides,
        dilations, groups) replaces ``stride``/``padding`` when given."""

    @abc.abstractmethod
    def fixed_mask(self, label: str, shape: Sequence[int]) -> np.ndarray:
        """This node's share of a uniform mask B that is the same every time ``label`` is asked.
        Used once per weight tensor: it must never mask two different secrets."""

    @abc.abstractmethod
    def mul_triple(self, tag: str, shape: Sequence[int]) -> Triple:
        """Shares of A, B, C = A * B (elementwise) mod 2^64."""

    @abc.abstractmethod
    def trunc_pair(self, tag: str, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Shares of a uniform r and of theta_r, the wrap count of r's shares."""

    @abc.abstractmethod
    def positive_masks(self, tag: str, count: int) -> np.ndarray:
        """Shares of (rho*sigma, rho^2, sigma^2) for ``count`` random integers rho, sigma > 0,
        as a (3, count) array: multiplicative masks that let a score be revealed alone."""


def _compute(kind: str, params: Mapping[str, Any], a: np.ndarray, b: np.ndarray,
             prepared: RingOperand | None = None) -> np.ndarray:
    if kind == "matmul":
        return ring_matmul(a, prepared if prepared is not None else b)
    if kind == "conv":
        if "spec" in params:
            return ring_conv(a, b, ConvSpec.from_params(params["spec"]), prepared)
        return ring_conv2d(a, b, int(params["stride"]), int(params["padding"]), prepared)
    if kind == "mul":
        return a * b
    raise InvalidInputError(f"unknown triple kind {kind!r}")


def _shapes(kind: str, params: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if kind in ("matmul", "conv"):
        return tuple(params["a_shape"]), tuple(params["b_shape"])
    return tuple(params["shape"]), tuple(params["shape"])


class Dealer:
    """Trusted dealer for ``n_parties`` nodes; holds one seed per node."""

    def __init__(self, n_parties: int, seeds: Sequence[bytes] | None = None) -> None:
        if n_parties < 2:
            raise InvalidInputError("a dealer serves at least 2 parties")
        self.n_parties = n_parties
        self._seeds = list(seeds) if seeds is not None else [os.urandom(32) for _ in range(n_parties)]
        self.requests = 0
        self.bytes_out = 0
        #: fixed masks B (by label): their sum and prepared operand, built once
        self._fixed: dict[tuple[str, str, tuple[int, ...]], tuple[np.ndarray, RingOperand]] = {}

    def seed_for(self, party: int) -> bytes:
        """The secret seed of ``party`` (delivered to that node only, over its authenticated channel)."""
        return self._seeds[party]

    def correction(self, request: Mapping[str, Any]) -> np.ndarray:
        """The last node's share of C (or of theta_r / masks) for ``request``.

        ``request`` = {"kind": matmul|conv|mul|trunc|masks, "tag": str, shape params...}.
        """
        kind = str(request["kind"])
        tag = str(request["tag"])
        prgs = [Prg(s) for s in self._seeds]
        last = self.n_parties - 1
        if kind == "trunc":
            shape = tuple(request["shape"])
            rs = [p.ring(f"{tag}/r", shape) for p in prgs]
            theta = wrap_count(rs)
            out = theta - _sum([p.ring(f"{tag}/t", shape) for p in prgs[:last]], shape)
        elif kind == "masks":
            count = int(request["count"])
            rnd = np.frombuffer(os.urandom(16 * count), dtype=np.uint64).reshape(2, count)
            rho = (rnd[0] % np.uint64(1 << 10)) + np.uint64(1 << 8)
            sigma = (rnd[1] % np.uint64(1 << 10)) + np.uint64(1 << 8)
            m = np.stack([rho * sigma, rho * rho, sigma * sigma])
            out = m - _sum([p.ring(f"{tag}/m", m.shape) for p in prgs[:last]], m.shape)
        else:
            a_shape, b_shape = _shapes(kind, request)
            a = _sum([p.ring(f"{tag}/A", a_shape) for p in prgs], a_shape)
            b_label = request.get("b_label")
            b_name = _b_name(tag, b_label)
            prepared = None
            if b_label and kind in ("conv", "matmul"):
                key = (kind, str(b_label), tuple(b_shape))
                if key not in self._fixed:
                    b = _sum([p.ring(b_name, b_shape) for p in prgs], b_shape)
                    if kind == "conv":
                        spec = ConvSpec.from_params(request["spec"]) if "spec" in request else None
                        op = conv_prepare(b, spec, public=False) if spec is not None else kernel_operand(b)
                    else:
                        op = RingOperand(b)
                    self._fixed[key] = (b, op)
                b, prepared = self._fixed[key]
            else:
                b = _sum([p.ring(b_name, b_shape) for p in prgs], b_shape)
            c = _compute(kind, request, a, b, prepared)
            out = c - _sum([p.ring(f"{tag}/C", c.shape) for p in prgs[:last]], c.shape)
        self.requests += 1
        self.bytes_out += out.nbytes
        return out


def _b_name(tag: str, b_label: str | None) -> str:
    return f"fixed/{b_label}/B" if b_label else f"{tag}/B"


def _sum(arrays: Sequence[np.ndarray], shape: Sequence[int]) -> np.ndarray:
    total = np.zeros(tuple(shape), dtype=np.uint64)
    for a in arrays:
        total += a
    return total


class DealerTripleProvider(TripleProvider):
    """A node's view of the dealer: local seeded shares, plus fetched corrections for the last node.

    ``fetch`` sends a request to the dealer and returns its correction (in-process: the dealer's
    bound method; between processes: a call over the node's authenticated dealer channel).
    """

    def __init__(self, party: int, n_parties: int, seed: bytes,
                 fetch: Callable[[Mapping[str, Any]], np.ndarray] | None) -> None:
        if party == n_parties - 1 and fetch is None:
            raise InvalidInputError("the last party needs a dealer connection to fetch corrections")
        self.party = party
        self.n_parties = n_parties
        self._prg = Prg(seed)
        self._fetch = fetch
        self.fetches = 0
        self._fixed: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
        # one worker: dealer requests stay in order on the node's single dealer channel
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dealer-fetch-{party}") \
            if party == n_parties - 1 else None

    def _last(self) -> bool:
        return self.party == self.n_parties - 1

    def _get(self, request: dict[str, Any], shape: Sequence[int]) -> np.ndarray:
        self.fetches += 1
        assert self._fetch is not None
        out = np.asarray(self._fetch(request), dtype=np.uint64)
        if out.shape != tuple(shape):
            raise ProtocolError(f"dealer answered shape {out.shape} for {request['kind']} triple, "
                                f"expected {tuple(shape)}")
        return out

    def _get_later(self, request: dict[str, Any], shape: Sequence[int]) -> "Future[np.ndarray]":
        assert self._pool is not None
        return self._pool.submit(self._get, request, shape)

    def _triple(self, kind: str, tag: str, params: dict[str, Any], c_shape: Sequence[int]) -> Triple:
        a_shape, b_shape = _shapes(kind, params)
        a = self._prg.ring(f"{tag}/A", a_shape)
        if params.get("b_label"):
            b = self.fixed_mask(str(params["b_label"]), b_shape)
        else:
            b = self._prg.ring(f"{tag}/B", b_shape)
        if self._last():
            c: np.ndarray | Future[np.ndarray] = self._get_later({"kind": kind, "tag": tag, **params}, c_shape)
        else:
            c = self._prg.ring(f"{tag}/C", c_shape)
        return a, b, c

    def matmul_triple(self, tag: str, a_shape: Sequence[int], b_shape: Sequence[int],
                      b_label: str | None = None) -> Triple:
        params: dict[str, Any] = {"a_shape": list(a_shape), "b_shape": list(b_shape)}
        if b_label:
            params["b_label"] = b_label
        return self._triple("matmul", tag, params, (a_shape[0], b_shape[1]))

    def fixed_mask(self, label: str, shape: Sequence[int]) -> np.ndarray:
        key = (label, tuple(int(s) for s in shape))
        if key not in self._fixed:
            self._fixed[key] = self._prg.ring(_b_name("", label), shape)
            self._fixed[key].setflags(write=False)
        return self._fixed[key]

    def conv_triple(self, tag: str, x_shape: Sequence[int], w_shape: Sequence[int], stride: int,
                    padding: int, b_label: str | None = None, spec: ConvSpec | None = None) -> Triple:
        b, _, h, w = x_shape
        cout, _, kh, kw = w_shape
        if spec is not None:
            ho, wo = spec.out_hw(h, w, kh, kw)
        else:
            ho = (h + 2 * padding - kh) // stride + 1
            wo = (w + 2 * padding - kw) // stride + 1
        params: dict[str, Any] = {"a_shape": list(x_shape), "b_shape": list(w_shape), "stride": stride,
                                  "padding": padding}
        if spec is not None:
            params["spec"] = spec.to_params()
        if b_label:
            params["b_label"] = b_label
        return self._triple("conv", tag, params, (b, cout, ho, wo))

    def mul_triple(self, tag: str, shape: Sequence[int]) -> Triple:
        return self._triple("mul", tag, {"shape": list(shape)}, tuple(shape))

    def trunc_pair(self, tag: str, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        r = self._prg.ring(f"{tag}/r", shape)
        if self._last():
            t = self._get({"kind": "trunc", "tag": tag, "shape": list(shape)}, shape)
        else:
            t = self._prg.ring(f"{tag}/t", shape)
        return r, t

    def positive_masks(self, tag: str, count: int) -> np.ndarray:
        if self._last():
            return self._get({"kind": "masks", "tag": tag, "count": count}, (3, count))
        return self._prg.ring(f"{tag}/m", (3, count))
