"""Secure operations on additive shares and the feature-extraction protocol of one node.

Every node runs the same sequence of calls on its own shares; step tags (session id + step
counter) keep the nodes in lock-step and name the dealer's triples. Notation: ``[x]`` is a
sharing of x; ``f`` the fractional bits of activations (16), ``w`` those of weights (20 by
default, see :class:`NodeModel`); a linear layer's output carries ``f + w`` bits until the next
mask recovery or truncation brings it back to ``f``.

Secure operations (each tested against plaintext in ``tests/unit/test_mpc_protocol.py``):

* linear layers with *plaintext* weights (convolution, fully connected) are local: every node
  applies the public kernel to its share; party 0 adds the bias. No communication.
* linear layers with *shared* weights use Beaver triples (:meth:`Session.conv_shared`,
  :meth:`Session.matmul`), one round each.
* activation and pooling use **random mask recovery** (:meth:`Session.mask_recover`): the output
  windows are dealt out at random to the nodes, each node learns the plaintext of its own
  windows only, applies the nonlinearity and pooling there, and the result is re-shared with
  zero traffic from pairwise seeds. One round per block; truncation from f + w to f is done exactly
  in plaintext in the same step.
* truncation of shares (after a linear layer not followed by a nonlinearity): local for two
  parties, with dealer randomness for more (error bounds in :mod:`.ring`).

Known limit (also in ARCHITECTURE.md): mask recovery shows each node the plaintext of its subset
of every intermediate pre-activation map — weaker than protocols that reveal only the output,
and far cheaper. No node sees a whole image, a whole map, the model (in shared mode) or a
feature vector.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from splitseal.errors import InvalidInputError, ProtocolError

from .beaver import TripleProvider, resolve
from .matmul import (
    ConvSpec,
    PublicOperand,
    RingOperand,
    _taps,
    conv_prepare,
    kernel_operand,
    ring_conv,
    ring_conv2d,
    ring_conv2d_public,
    ring_conv_public,
    ring_matmul,
    ring_matmul_public,
)
from .ring import Prg, decode, encode, truncate_local_2pc, truncate_with_dealer_finish, truncate_with_dealer_share
from .transport import Transport

log = logging.getLogger(__name__)

ACTIVATIONS = ("relu", "sigmoid", "tanh", "prelu")
POOLS = ("max", "avg")
#: every op a node's model may hold (see :class:`Layer`)
OPS = ("conv", "linear", "act", "pool", "flatten", "sumpool", "mulc", "add", "concat")


def layer_inputs(layer: "Layer", index: int) -> list[int]:
    """The layers whose outputs ``layer`` reads (-1 = the model input); default: the previous one."""
    return [int(j) for j in layer.params.get("inputs", [index - 1])]


class PoolSpec:
    """A pooling window: kernel (kh, kw) and the geometry of a :class:`ConvSpec` (strides, pads).
    From ``params``: the old ``k`` (square, stride k) or ``kernel``/``strides``/``pads``."""

    def __init__(self, params: dict[str, Any]) -> None:
        if "kernel" in params:
            kh, kw = (int(v) for v in params["kernel"])
        else:
            kh = kw = int(params["k"])
        st = params.get("strides", [params.get("stride", kh), params.get("stride", kw)])
        self.kernel = (kh, kw)
        self.geom = ConvSpec(tuple(st), tuple(params.get("pads", (0, 0, 0, 0))))

    @property
    def tiling(self) -> bool:
        """Windows tile the map (stride = kernel, no padding): each element in one window."""
        return self.geom.stride == self.kernel and not any(self.geom.pads)

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.tiling:
            return h // self.kernel[0], w // self.kernel[1]
        return self.geom.out_hw(h, w, *self.kernel)

    def index(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(ho*wo, kh*kw) flat positions into an h x w map for each window, and which are real
        (False = padding)."""
        ho, wo = self.out_hw(h, w)
        kh, kw = self.kernel
        (sh, sw), (t, l, _, _) = self.geom.stride, self.geom.pads
        rows = (np.arange(ho)[:, None] * sh - t)[:, None, :, None] + np.arange(kh)[None, None, :, None]
        cols = (np.arange(wo)[:, None] * sw - l)[None, :, None, :] + np.arange(kw)[None, None, None, :]
        rows = np.broadcast_to(rows, (ho, wo, kh, kw))
        cols = np.broadcast_to(cols, (ho, wo, kh, kw))
        valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        idx = np.where(valid, rows * w + cols, 0)
        return idx.reshape(ho * wo, kh * kw), valid.reshape(ho * wo, kh * kw), ho, wo


# --- the model as a node holds it ------------------------------------------------------------

@dataclass
class Layer:
    """One layer of a node's model.

    ``op``: conv | linear | act | pool | flatten | sumpool | mulc | add | concat (see
    :meth:`Session.infer`); ``params["inputs"]`` names the layers it reads (a DAG; default the
    previous layer, -1 the model input). For conv/linear, ``weight`` is either the public
    kernel in fixed point (int64, ``f`` fractional bits) or this node's share of it (uint64), and
    ``bias`` likewise with ``f + w`` fractional bits (public: added by party 0 only). Linear weights
    are stored (out, in), as ONNX Gemm with transB=1 and torch do.
    """

    op: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    #: derived forms of a public weight (float copy for BLAS), built on first use
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class NodeModel:
    """The layers of the embedding model as one node holds them."""

    input_shape: tuple[int, int, int]
    layers: list[Layer]
    shared: bool
    frac_bits: int = 16
    #: the same random id on every node; names the fixed weight masks (see Session.mask_weights)
    model_id: str = ""
    #: fractional bits of the weights (biases carry frac_bits + weight_frac_bits). More than the
    #: activations' 16: a 6272-input layer sums 6272 weight rounding errors (measured 8e-4 at 16
    #: bits, 5e-5 at 20).
    weight_frac_bits: int = 16

    def validate(self) -> None:
        for i, layer in enumerate(self.layers):
            if layer.op not in OPS:
                raise InvalidInputError(f"layer {i}: unknown op {layer.op!r}")
            ins = layer_inputs(layer, i)
            if not ins or any(j < -1 or j >= i for j in ins):
                raise InvalidInputError(f"layer {i}: inputs {ins} must name earlier layers (-1 = model input)")
            if len(ins) != (2 if layer.op == "add" else len(ins) if layer.op == "concat" else 1):
                raise InvalidInputError(f"layer {i}: {layer.op} cannot read {len(ins)} inputs")
            if layer.op == "act" and layer.params.get("kind") not in ACTIVATIONS:
                raise InvalidInputError(f"layer {i}: activation must be one of {ACTIVATIONS}")
            if layer.op == "act" and layer.params.get("kind") == "prelu" and "slope" not in layer.params:
                raise InvalidInputError(f"layer {i}: prelu needs its slopes")
            if layer.op == "pool":
                if layer.params.get("kind") not in POOLS:
                    raise InvalidInputError(f"layer {i}: pooling must be one of {POOLS}")
                if layer.params["kind"] == "avg" and not PoolSpec(layer.params).tiling:
                    raise InvalidInputError(
                        f"layer {i}: average pooling with overlapping or padded windows is a sumpool "
                        "followed by mulc (both local)")


# --- plaintext helpers (used per window inside mask recovery and by the tests) ---------------

def activate(kind: str, x: np.ndarray, slope: np.ndarray | float | None = None) -> np.ndarray:
    """Plaintext activation (``slope``: PReLU's negative slope, broadcast against x)."""
    if kind == "prelu":
        return np.where(x >= 0, x, x * slope)
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))
    if kind == "tanh":
        return np.tanh(x)
    raise InvalidInputError(f"unknown activation {kind!r}")


def pool_windows(kind: str, windows: np.ndarray) -> np.ndarray:
    """Reduce (n, k*k) windows to (n,)."""
    return windows.max(axis=1) if kind == "max" else windows.mean(axis=1)


# --- a session -------------------------------------------------------------------------------

class Session:
    """One node's side of one MPC session (one enrolment, verification or identification)."""

    def __init__(self, transport: Transport, triples: TripleProvider | None, session_id: str,
                 partition_seed: bytes, frac_bits: int = 16, truncation: str = "auto") -> None:
        if truncation not in ("auto", "local", "dealer"):
            raise InvalidInputError("truncation must be auto, local or dealer")
        if truncation == "local" and transport.n_parties != 2:
            raise InvalidInputError("local truncation is only correct for exactly two parties")
        self.t = transport
        self.triples = triples
        self.session_id = session_id
        self.party = transport.party
        self.n = transport.n_parties
        self.f = frac_bits
        self.truncation = ("local" if self.n == 2 else "dealer") if truncation == "auto" else truncation
        self._partition_seed = partition_seed
        self._step = 0

    def _tag(self, name: str) -> str:
        self._step += 1
        return f"{self.session_id}/{self._step}/{name}"

    def _need_triples(self) -> TripleProvider:
        if self.triples is None:
            raise ProtocolError("this operation needs a triple provider (dealer) and none is configured")
        return self.triples

    # --- opening ---------------------------------------------------------------------------

    def open(self, *xs: np.ndarray) -> list[np.ndarray]:
        """Reconstruct values at every node. One round: send own shares to all peers, sum."""
        tag = self._tag("open")
        got = self.t.exchange(tag, {p: list(xs) for p in self.t.peers}, self.t.peers)
        out = [np.array(x, dtype=np.uint64, copy=True) for x in xs]
        for arrays in got.values():
            if len(arrays) != len(out):
                raise ProtocolError("peer opened a different number of values")
            for o, a in zip(out, arrays):
                if a.shape != o.shape:
                    raise ProtocolError(f"peer sent shape {a.shape}, expected {o.shape}")
                o += a
        return out

    def reveal_to(self, target: int, *xs: np.ndarray) -> list[np.ndarray] | None:
        """Reconstruct values at ``target`` only. One round: others send their shares to it."""
        tag = self._tag("reveal")
        if self.party != target:
            self.t.exchange(tag, {target: list(xs)}, [])
            return None
        got = self.t.exchange(tag, {}, self.t.peers)
        out = [np.array(x, dtype=np.uint64, copy=True) for x in xs]
        for arrays in got.values():
            for o, a in zip(out, arrays):
                if a.shape != o.shape:
                    raise ProtocolError(f"peer sent shape {a.shape}, expected {o.shape}")
                o += a
        return out

    # --- linear operations -------------------------------------------------------------------

    def add_public(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """[x] + c: party 0 adds the public value."""
        return x + np.asarray(c).view(np.uint64) if self.party == 0 else x

    def conv_public(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1,
                    padding: int = 0, prepared: Any = None, spec: ConvSpec | None = None) -> np.ndarray:
        """Convolution with a plaintext kernel: local on each share, no communication. Output f + w.

        ``spec`` (asymmetric pads, strides, dilations, groups; depthwise is elementwise) replaces
        ``stride``/``padding``; ``prepared`` = :func:`conv_prepare` of the kernel."""
        y = (ring_conv_public(x, w, spec, prepared) if spec is not None
             else ring_conv2d_public(x, w, stride, padding, prepared))
        if b is not None:
            y = self.add_public(y, np.asarray(b, dtype=np.int64).reshape(1, -1, 1, 1))
        return y

    def linear_public(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                      prepared: PublicOperand | None = None) -> np.ndarray:
        """Fully connected layer with plaintext weights (out, in): local. Output f + w."""
        y = ring_matmul_public(x, prepared if prepared is not None else np.asarray(w, dtype=np.int64).T)
        if b is not None:
            y = self.add_public(y, np.asarray(b, dtype=np.int64).reshape(1, -1))
        return y

    def matmul(self, x: np.ndarray, y: np.ndarray, f: np.ndarray | None = None,
               b_label: str | None = None, cache: dict[str, Any] | None = None) -> np.ndarray:
        """[x @ y] from [x], [y] with a Beaver matrix triple.

        Steps: 1. get shares of A, B, C = A @ B; 2. open E = x - A and F = y - B (one round);
        3. z_i = C_i + E @ B_i + A_i @ F (+ E @ F at party 0). With a weight masked once
        (``f`` = the opened ``y - B`` for the fixed mask ``b_label``), step 2 opens E only and
        the fixed right operands are prepared once (``cache``, one per layer).
        """
        a, b, c = self._need_triples().matmul_triple(self._tag("triple"), x.shape, y.shape, b_label)
        if f is None:
            e, f = self.open(x - a, y - b)
        else:
            (e,) = self.open(x - a)
        c = resolve(c)
        if f is not None and cache is not None and b_label:
            if cache.get("label") != b_label:
                cache.clear()
                cache.update(label=b_label, bb=RingOperand(b + f if self.party == 0 else b), f=RingOperand(f))
            return c + ring_matmul(e, cache["bb"]) + ring_matmul(a, cache["f"])
        bb = b + f if self.party == 0 else b
        return c + ring_matmul(e, bb) + ring_matmul(a, f)

    def conv_shared(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1,
                    padding: int = 0, f: np.ndarray | None = None, b_label: str | None = None,
                    cache: dict[str, Any] | None = None, spec: ConvSpec | None = None) -> np.ndarray:
        """Convolution with a *shared* kernel via a Beaver convolution triple. Output f + w.

        Steps: 1. get shares of A (input shape), B (kernel shape), C = conv(A, B); 2. open
        E = x - A and F = w - B (one round); 3. z_i = C_i + conv(E, B_i) + conv(A_i, F)
        (+ conv(E, F) at party 0; merged as conv(E, B_i + F)); 4. add the bias share.
        With a kernel masked once (``f``, ``b_label``: see :meth:`mask_weights`) step 2 opens E only.
        """
        if spec is not None and spec.simple:
            stride, padding, spec = spec.stride[0], spec.pads[0], None
        a, bt, c = self._need_triples().conv_triple(self._tag("triple"), x.shape, w.shape, stride, padding,
                                                    b_label, spec)
        prep = (lambda k: conv_prepare(k, spec, public=False)) if spec is not None else kernel_operand
        if f is None:
            e, f = self.open(x - a, w - bt)
            fixed = None
        else:
            (e,) = self.open(x - a)
            fixed = cache if cache is not None and b_label else None
            if fixed is not None and fixed.get("label") != b_label:
                fixed.clear()
                fixed.update(label=b_label, bb=prep(bt + f if self.party == 0 else bt), f=prep(f))
        bb = bt + f if self.party == 0 else bt
        c = resolve(c)
        if spec is not None:
            y = (c + ring_conv(e, bb, spec, fixed["bb"] if fixed else None)
                 + ring_conv(a, f, spec, fixed["f"] if fixed else None))
        else:
            y = (c + ring_conv2d(e, bb, stride, padding, fixed["bb"] if fixed else None)
                 + ring_conv2d(a, f, stride, padding, fixed["f"] if fixed else None))
        if b is not None:
            y = y + np.asarray(b, dtype=np.uint64).reshape(1, -1, 1, 1)
        return y

    def linear_shared(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, f: np.ndarray | None = None,
                      b_label: str | None = None, cache: dict[str, Any] | None = None) -> np.ndarray:
        """Fully connected with shared weights (out, in) via a Beaver matrix triple. Output f + w."""
        wt = np.asarray(w, dtype=np.uint64).T if f is not None else np.ascontiguousarray(np.asarray(w, dtype=np.uint64).T)
        y = self.matmul(x, wt, f, b_label, cache)
        if b is not None:
            y = y + np.asarray(b, dtype=np.uint64).reshape(1, -1)
        return y

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Elementwise [x * y] with a Beaver triple (one round)."""
        a, b, c = self._need_triples().mul_triple(self._tag("triple"), x.shape)
        e, f = self.open(x - a, y - b)
        z = resolve(c) + e * b + a * f
        return z + e * f if self.party == 0 else z

    def truncate(self, x: np.ndarray, bits: int | None = None, exact: bool = False) -> np.ndarray:
        """[x / 2^bits] from [x] (default f; after a linear layer bits = w); bounds in :mod:`.ring`.

        ``exact``: with two parties too, use the dealer protocol when a dealer is configured
        (within 2 units in the last place except with probability |x| / 2^64, instead of local
        truncation's 2^(bits of |x| + 1 - 64) per element: what a large map needs).

        Two parties: local, no communication. More: 1. dealer pair ([r], [theta_r]);
        2. send z_i = x_i + r_i to party 0 (one round); 3. local shift and wrap correction.
        """
        bits = self.f if bits is None else int(bits)
        if self.truncation == "local" and not (exact and self.triples is not None):
            return truncate_local_2pc(x, self.party, bits)
        r, theta = self._need_triples().trunc_pair(self._tag("trunc"), x.shape)
        z, partial = truncate_with_dealer_share(x, r, theta, bits)
        tag = self._tag("trunc-open")
        if self.party != 0:
            self.t.exchange(tag, {0: [z]}, [])
            return partial
        got = self.t.exchange(tag, {}, self.t.peers)
        return truncate_with_dealer_finish(partial, [z] + [got[p][0] for p in self.t.peers], bits)

    # --- random mask recovery ----------------------------------------------------------------

    def _owners(self, label: str, count: int) -> np.ndarray:
        """Which node recovers each window: a balanced random assignment all nodes agree on."""
        key = hashlib.sha256(self._partition_seed + label.encode()).digest()
        seed = int.from_bytes(Prg(key).stream(b"owners", 16), "little")
        gen = np.random.Generator(np.random.PCG64(seed))
        return (gen.permutation(count) % self.n).astype(np.int64)

    def mask_recover(self, y: np.ndarray, in_frac: int, ops: Sequence[Layer]) -> np.ndarray:
        """Activation and pooling by random mask recovery; input ``in_frac`` bits, output ``f``.

        Steps, in order:
        1. cut the map (B, C, H, W) into pooling windows (1 x 1 without pooling; k x k tiles for
           non-overlapping pooling, rows/columns a floor-mode pool drops are dropped; for
           overlapping, strided or padded max pooling every window gathers its own elements, so
           an element shared by windows of two nodes is seen by both) and deal the windows out
           to the nodes at random, balanced, from the session's partition seed;
        2. one round: every node sends each peer its share values on that peer's windows;
        3. each node adds the shares of its own windows, decodes them (exact truncation from
           ``in_frac`` to real values) and applies the block's activation (ReLU, sigmoid, tanh,
           PReLU with its per-channel slope) and pooling in plaintext — on its windows only
           (padding counts as -inf for max pooling, as in ONNX);
        4. re-share with no traffic: for positions owned by node k, every other node j takes
           ``R_kj`` (AES-CTR from the key it shares with k, labelled by session and step) and
           node k takes ``value - sum_j R_kj``.
        """
        pool = next((o for o in ops if o.op == "pool"), None)
        b, c, h, w = y.shape
        valid = None
        if pool is None:
            ho, wo = h, w
            win = y.reshape(-1, 1)
        else:
            ps = PoolSpec(pool.params)
            ho, wo = ps.out_hw(h, w)
            if ho <= 0 or wo <= 0:
                raise InvalidInputError(f"pooling window {ps.kernel} larger than the map {h}x{w}")
            kh, kw = ps.kernel
            if ps.tiling:
                win = (y[:, :, :ho * kh, :wo * kw].reshape(b, c, ho, kh, wo, kw)
                       .transpose(0, 1, 2, 4, 3, 5).reshape(-1, kh * kw))
            else:
                idx, valid_hw, _, _ = ps.index(h, w)
                win = y.reshape(b * c, h * w)[:, idx].reshape(-1, kh * kw)
                valid = np.broadcast_to(valid_hw[None], (b * c,) + valid_hw.shape).reshape(-1, kh * kw)
        count = win.shape[0]
        label = self._tag("mask")
        owners = self._owners(label, count)
        # each node's windows as ascending positions, found once: every later gather and
        # scatter is by index instead of another pass of a boolean mask over the whole map
        where = {p: np.flatnonzero(owners == p) for p in range(self.n)}
        got = self.t.exchange(label, {p: [win[where[p]]] for p in self.t.peers}, self.t.peers)
        own = where[self.party]
        mine = win[own]
        for p, arrays in got.items():
            if arrays[0].shape != mine.shape:
                raise ProtocolError(f"peer {p} sent {arrays[0].shape} for mask recovery, expected {mine.shape}")
            mine += arrays[0]
        vals = decode(mine, in_frac)
        for o in ops:
            if o.op == "act":
                slope = None
                if o.params["kind"] == "prelu":
                    sl = np.asarray(o.params["slope"], dtype=np.float64).reshape(-1)
                    chan = (own // (ho * wo)) % c
                    slope = (sl[chan] if sl.size > 1 else np.full(chan.size, sl[0]))[:, None]
                vals = activate(o.params["kind"], vals, slope)
            elif o.op == "pool":
                if valid is not None:
                    vals = np.where(valid[own], vals, -np.inf)
                vals = pool_windows(o.params["kind"], vals)[:, None]
        if vals.shape[1] != 1:  # no pooling: window of one element
            vals = vals[:, :1]
        out = np.empty(count, dtype=np.uint64)
        value = encode(vals[:, 0], self.f)
        for p in self.t.peers:
            r = Prg(self.t.pair_key(p)).ring(label, count)
            out[where[p]] = r[where[p]]
            value -= r[own]
        out[own] = value
        return out.reshape(b, c, ho, wo)

    # --- the whole network -------------------------------------------------------------------

    @staticmethod
    def _weight_label(model: NodeModel, index: int) -> str:
        return f"weights/{model.model_id}/{index}"

    def mask_weights(self, model: NodeModel) -> dict[int, np.ndarray]:
        """Open ``F_l = W_l - B_l`` once for every shared weight tensor, B_l a fixed dealer mask.

        One round for the whole model. Afterwards each inference opens only its input masks
        (``E = X - A`` with A fresh), which removes the weights from the per-inference traffic.
        Safe because B_l masks W_l and nothing else (its label names the model id and layer);
        A and C of every triple stay fresh. Linear weights are masked transposed (in, out).
        """
        if not model.shared or not model.model_id:
            return {}
        idx, masked = [], []
        for i, layer in enumerate(model.layers):
            if layer.op in ("conv", "linear"):
                w = layer.weight if layer.op == "conv" else np.ascontiguousarray(layer.weight.T)
                masked.append(w - self._need_triples().fixed_mask(self._weight_label(model, i), w.shape))
                idx.append(i)
        return dict(zip(idx, self.open(*masked))) if masked else {}

    def infer(self, model: NodeModel, x: np.ndarray, masked_weights: dict[int, np.ndarray] | None = None
              ) -> np.ndarray:
        """Feature-vector shares (B, D), ``f`` fractional bits, from input shares (B, C, H, W).

        Runs the layers in order as a DAG (each reads ``layer_inputs``; a value is dropped after
        its last reader). Each value carries its fractional bits: ``f`` after mask recovery,
        ``f + w`` after a product with a weight. Per op:

        * conv / linear (plaintext kernels: local; shared: one Beaver round), mulc (a public
          constant, local): input truncated to ``f`` first (dealer truncation, exact with two
          parties too), output ``f + w``;
        * act / pool (max; avg on tiling windows): random mask recovery, one round, output ``f``;
          an act read only by the following pool is fused with it;
        * sumpool (window sums, the numerator of average pooling and global average pooling),
          flatten: local, bits unchanged;
        * add / concat of shared tensors: local; the input with fewer fractional bits is
          shifted left (exact) to the other's.
        """
        if tuple(x.shape[1:]) != tuple(model.input_shape):
            raise InvalidInputError(f"input shares have shape {tuple(x.shape[1:])}, the model "
                                    f"expects {tuple(model.input_shape)}")
        layers = model.layers
        reads = [layer_inputs(la, i) for i, la in enumerate(layers)]
        last_use: dict[int, int] = {}
        for i, ins in enumerate(reads):
            for j in ins:
                last_use[j] = i
        vals: dict[int, tuple[np.ndarray, int]] = {-1: (x, self.f)}
        wbits = model.weight_frac_bits
        fused: set[int] = set()

        def at_f(v: np.ndarray, sc: int) -> np.ndarray:
            return self.truncate(v, sc - self.f, exact=True) if sc != self.f else v

        for i, layer in enumerate(layers):
            if i in fused:
                continue
            args = [vals[j] for j in reads[i]]
            op = layer.op
            out_index = i
            if op == "conv":
                v = at_f(*args[0])
                spec = ConvSpec.from_params(layer.params)
                if model.shared:
                    f = (masked_weights or {}).get(i)
                    label = self._weight_label(model, i) if f is not None else None
                    y = self.conv_shared(v, layer.weight, layer.bias, f=f, b_label=label,
                                         cache=layer.cache.setdefault("beaver", {}), spec=spec)
                else:
                    if "op" not in layer.cache:
                        layer.cache["op"] = conv_prepare(np.asarray(layer.weight, dtype=np.int64), spec, public=True)
                    y = self.conv_public(v, layer.weight, layer.bias, prepared=layer.cache["op"], spec=spec)
                res = (y, self.f + wbits)
            elif op == "linear":
                v = at_f(*args[0])
                if v.ndim != 2:
                    v = v.reshape(v.shape[0], -1)
                if model.shared:
                    f = (masked_weights or {}).get(i)
                    label = self._weight_label(model, i) if f is not None else None
                    y = self.linear_shared(v, layer.weight, layer.bias, f, label, layer.cache.setdefault("beaver", {}))
                else:
                    if "op" not in layer.cache:
                        layer.cache["op"] = PublicOperand(np.asarray(layer.weight, dtype=np.int64).T)
                    y = self.linear_public(v, layer.weight, layer.bias, layer.cache["op"])
                res = (y, self.f + wbits)
            elif op == "mulc":
                v = at_f(*args[0])
                c = np.asarray(layer.weight, dtype=np.int64).view(np.uint64)
                res = (v * c.reshape((1,) * (v.ndim - c.ndim) + c.shape) if c.ndim < v.ndim else v * c,
                       self.f + wbits)
            elif op == "flatten":
                v, sc = args[0]
                res = (v.reshape(v.shape[0], -1), sc)
            elif op == "sumpool":
                v, sc = args[0]
                ps = PoolSpec(layer.params)
                ho, wo = ps.out_hw(v.shape[2], v.shape[3])
                y = np.zeros(v.shape[:2] + (ho, wo), dtype=np.uint64)
                for _, _, view in _taps(v, *ps.kernel, ps.geom, ho, wo):
                    y += view
                res = (y, sc)
            elif op in ("add", "concat"):
                top = max(sc for _, sc in args)
                parts = [v << np.uint64(top - sc) if sc != top else v for v, sc in args]
                if op == "add":
                    if parts[0].shape != parts[1].shape:
                        raise InvalidInputError(f"layer {i}: add of shapes {parts[0].shape} and {parts[1].shape}")
                    res = (parts[0] + parts[1], top)
                else:
                    res = (np.concatenate(parts, axis=int(layer.params.get("axis", 1))), top)
            else:  # act / pool: one mask-recovery round
                block = [layer]
                if (op == "act" and i + 1 < len(layers) and layers[i + 1].op == "pool"
                        and reads[i + 1] == [i] and last_use.get(i) == i + 1):
                    block.append(layers[i + 1])
                    fused.add(i + 1)
                    out_index = i + 1
                v, sc = args[0]
                squeeze = v.ndim == 2
                if squeeze:
                    v = v.reshape(v.shape[0], v.shape[1], 1, 1)
                y = self.mask_recover(v, sc, block)
                res = (y.reshape(y.shape[0], -1) if squeeze else y, self.f)
            vals[out_index] = res
            for j in set(reads[i]) | ({i} if out_index != i else set()):
                if last_use.get(j, -2) <= out_index and j in vals and j != len(layers) - 1:
                    del vals[j]
        y, sc = vals[len(layers) - 1]
        if sc != self.f:
            y = self.truncate(y, sc - self.f)
        return y.reshape(y.shape[0], -1)
