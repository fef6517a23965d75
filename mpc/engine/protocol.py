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
from .matmul import (PublicOperand, RingOperand, kernel_operand, ring_conv2d, ring_conv2d_public, ring_matmul,
                     ring_matmul_public)
from .ring import (Prg, decode, encode, truncate_local_2pc, truncate_with_dealer_finish,
                   truncate_with_dealer_share)
from .transport import Transport

log = logging.getLogger(__name__)

ACTIVATIONS = ("relu", "sigmoid", "tanh")
POOLS = ("max", "avg")


# --- the model as a node holds it ------------------------------------------------------------

@dataclass
class Layer:
    """One layer of a node's model.

    ``op``: conv | linear | act | pool | flatten. For conv/linear, ``weight`` is either the public
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
            if layer.op not in ("conv", "linear", "act", "pool", "flatten"):
                raise InvalidInputError(f"layer {i}: unknown op {layer.op!r}")
            if layer.op == "act" and layer.params.get("kind") not in ACTIVATIONS:
                raise InvalidInputError(f"layer {i}: activation must be one of {ACTIVATIONS}")
            if layer.op == "pool":
                if layer.params.get("kind") not in POOLS:
                    raise InvalidInputError(f"layer {i}: pooling must be one of {POOLS}")
                if int(layer.params.get("stride", layer.params["k"])) != int(layer.params["k"]):
                    raise InvalidInputError(
                        f"layer {i}: overlapping pooling windows cannot be dealt to one node each; "
                        "use stride equal to the kernel size")


# --- plaintext helpers (used per window inside mask recovery and by the tests) ---------------

def activate(kind: str, x: np.ndarray) -> np.ndarray:
    """Plaintext activation."""
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
                    padding: int = 0, prepared: PublicOperand | None = None) -> np.ndarray:
        """Convolution with a plaintext kernel: local on each share, no communication. Output f + w."""
        y = ring_conv2d_public(x, w, stride, padding, prepared)
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
                    cache: dict[str, Any] | None = None) -> np.ndarray:
        """Convolution with a *shared* kernel via a Beaver convolution triple. Output f + w.

        Steps: 1. get shares of A (input shape), B (kernel shape), C = conv(A, B); 2. open
        E = x - A and F = w - B (one round); 3. z_i = C_i + conv(E, B_i) + conv(A_i, F)
        (+ conv(E, F) at party 0; merged as conv(E, B_i + F)); 4. add the bias share.
        With a kernel masked once (``f``, ``b_label``: see :meth:`mask_weights`) step 2 opens E only.
        """
        a, bt, c = self._need_triples().conv_triple(self._tag("triple"), x.shape, w.shape, stride, padding,
                                                    b_label)
        if f is None:
            e, f = self.open(x - a, w - bt)
            fixed = None
        else:
            (e,) = self.open(x - a)
            fixed = cache if cache is not None and b_label else None
            if fixed is not None and fixed.get("label") != b_label:
                fixed.clear()
                fixed.update(label=b_label, bb=kernel_operand(bt + f if self.party == 0 else bt),
                             f=kernel_operand(f))
        bb = bt + f if self.party == 0 else bt
        c = resolve(c)
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

    def truncate(self, x: np.ndarray, bits: int | None = None) -> np.ndarray:
        """[x / 2^bits] from [x] (default f; after a linear layer bits = w); bounds in :mod:`.ring`.

        Two parties: local, no communication. More: 1. dealer pair ([r], [theta_r]);
        2. send z_i = x_i + r_i to party 0 (one round); 3. local shift and wrap correction.
        """
        bits = self.f if bits is None else int(bits)
        if self.truncation == "local":
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
        1. cut the map (B, C, H, W) into pooling windows (k x k, stride k; 1 x 1 without
           pooling; rows/columns a floor-mode pool drops are dropped) and deal the windows out
           to the nodes at random, balanced, from the session's partition seed;
        2. one round: every node sends each peer its share values on that peer's windows;
        3. each node adds the shares of its own windows, decodes them (exact truncation from
           ``in_frac`` to real values) and applies the block's activation and pooling in
           plaintext — on its windows only;
        4. re-share with no traffic: for positions owned by node k, every other node j takes
           ``R_kj`` (AES-CTR from the key it shares with k, labelled by session and step) and
           node k takes ``value - sum_j R_kj``.
        """
        pool = next((o for o in ops if o.op == "pool"), None)
        k = int(pool.params["k"]) if pool is not None else 1
        b, c, h, w = y.shape
        ho, wo = h // k, w // k
        if ho == 0 or wo == 0:
            raise InvalidInputError(f"pooling window {k} larger than the map {h}x{w}")
        win = (y[:, :, :ho * k, :wo * k].reshape(b, c, ho, k, wo, k)
               .transpose(0, 1, 2, 4, 3, 5).reshape(-1, k * k))
        count = win.shape[0]
        label = self._tag("mask")
        owners = self._owners(label, count)
        masks = {p: owners == p for p in range(self.n)}
        got = self.t.exchange(label, {p: [np.ascontiguousarray(win[masks[p]])] for p in self.t.peers},
                              self.t.peers)
        mine = np.array(win[masks[self.party]], copy=True)
        for p, arrays in got.items():
            if arrays[0].shape != mine.shape:
                raise ProtocolError(f"peer {p} sent {arrays[0].shape} for mask recovery, expected {mine.shape}")
            mine += arrays[0]
        vals = decode(mine, in_frac)
        for o in ops:
            if o.op == "act":
                vals = activate(o.params["kind"], vals)
            elif o.op == "pool":
                vals = pool_windows(o.params["kind"], vals)[:, None]
        if vals.shape[1] != 1:  # no pooling: window of one element
            vals = vals[:, :1]
        out = np.zeros(count, dtype=np.uint64)
        own = masks[self.party]
        value = encode(vals[:, 0], self.f)
        for p in self.t.peers:
            r = Prg(self.t.pair_key(p)).ring(label, count)
            out[masks[p]] = r[masks[p]]
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

        Runs the layers in order; consecutive act/pool layers form one mask-recovery block;
        a linear layer whose input still carries f + weight bits is preceded by a truncation.
        """
        if tuple(x.shape[1:]) != tuple(model.input_shape):
            raise InvalidInputError(f"input shares have shape {tuple(x.shape[1:])}, the model "
                                    f"expects {tuple(model.input_shape)}")
        scale = self.f
        i = 0
        layers = model.layers
        while i < len(layers):
            layer = layers[i]
            if layer.op in ("conv", "linear"):
                if scale != self.f:
                    x = self.truncate(x, scale - self.f)
                if layer.op == "conv":
                    stride = int(layer.params.get("stride", 1))
                    pad = int(layer.params.get("padding", 0))
                    f = (masked_weights or {}).get(i)
                    label = self._weight_label(model, i) if f is not None else None
                    if model.shared:
                        x = self.conv_shared(x, layer.weight, layer.bias, stride, pad, f, label,
                                             layer.cache.setdefault("beaver", {}))
                    else:
                        if "op" not in layer.cache:
                            layer.cache["op"] = PublicOperand(layer.weight.reshape(layer.weight.shape[0], -1).T)
                        x = self.conv_public(x, layer.weight, layer.bias, stride, pad, layer.cache["op"])
                else:
                    if x.ndim != 2:
                        x = x.reshape(x.shape[0], -1)
                    if model.shared:
                        f = (masked_weights or {}).get(i)
                        label = self._weight_label(model, i) if f is not None else None
                        x = self.linear_shared(x, layer.weight, layer.bias, f, label,
                                               layer.cache.setdefault("beaver", {}))
                    else:
                        if "op" not in layer.cache:
                            layer.cache["op"] = PublicOperand(np.asarray(layer.weight, dtype=np.int64).T)
                        x = self.linear_public(x, layer.weight, layer.bias, layer.cache["op"])
                scale = self.f + model.weight_frac_bits
                i += 1
            elif layer.op == "flatten":
                x = x.reshape(x.shape[0], -1)
                i += 1
            else:
                j = i
                while j < len(layers) and layers[j].op in ("act", "pool"):
                    j += 1
                block = layers[i:j]
                if sum(1 for o in block if o.op == "pool") > 1:
                    raise InvalidInputError("two pooling layers in a row are not supported; merge them")
                squeeze = x.ndim == 2
                if squeeze:
                    x = x.reshape(x.shape[0], x.shape[1], 1, 1)
                x = self.mask_recover(x, scale, block)
                if squeeze:
                    x = x.reshape(x.shape[0], -1)
                scale = self.f
                i = j
        if scale != self.f:
            x = self.truncate(x, scale - self.f)
        return x.reshape(x.shape[0], -1)
