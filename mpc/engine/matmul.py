"""Exact matrix products mod 2^64 on float64 BLAS, and convolution by im2col.

numpy has no BLAS path for integer matmul; a naive uint64 product is tens of times slower than
float. Both functions here split 64-bit ring elements into 16-bit limbs, multiply limbs with
float64 BLAS (exact while every partial sum stays below 2^53) and recombine mod 2^64.

* :func:`ring_matmul` (both operands uniform ring elements, e.g. Beaver terms): for inner
  dimension k <= 512, 3 limbs each (22, 21, 21 bits), the 6 limb products of weight below 2^64
  in 3 BLAS calls (each product below 2^44 k, two of equal weight summed: below 2^53); for
  512 < k <= 2^19, 4 limbs of 16 bits, the 10 products in 4 calls. Exact either way.
* :func:`ring_matmul_public` (shares times a *public* small signed integer matrix, e.g. plaintext
  kernels encoded in fixed point): 3 limbs (22/21/21 bits) of the shares where
  ``2^22 * k * max|w| < 2^53``, else 4 of 16 bits while ``2^16 * k * max|w| < 2^53``, times the
  signed weights in one BLAS call on the stacked limbs; checked per weight matrix, with a
  fallback that also splits the weights.
"""

from __future__ import annotations

import numpy as np

from splitseal.errors import InvalidInputError

_LIMB = 16
_LIMB_MASK = np.uint64(0xFFFF)
_EXACT = float(2 ** 53)


#: the 3-limb split of a ring element for short inner dimensions: bit offsets and widths
_SHIFTS3 = (0, 22, 43)
_WIDTHS3 = (22, 21, 21)
#: largest inner dimension for which 3 limbs stay exact: k * 2 * 2^43 < 2^53
_K3 = 512


def _limb_stack(a: np.ndarray) -> np.ndarray:
    """(4, *a.shape) float64 limbs, least significant first (a uint16 view: one pass, one copy)."""
    a = np.ascontiguousarray(a, dtype="<u8")
    v = a.view("<u2").reshape(*a.shape, 4)
    return np.moveaxis(v, -1, 0).astype(np.float64, order="C")


def _limb_count(k: int) -> int:
    """Limbs per ring element in a ring x ring product of inner dimension ``k``."""
    return 3 if k <= _K3 else 4


def _ring_limbs(a: np.ndarray, count: int) -> np.ndarray:
    """(count, *a.shape) float64 limbs for a ring x ring product: 16-bit limbs (count 4) or
    the 22/21/21-bit split (count 3)."""
    if count == 4:
        return _limb_stack(a)
    a = np.asarray(a, dtype=np.uint64)
    out = np.empty((3, *a.shape), dtype=np.float64)
    for i, (sh, wd) in enumerate(zip(_SHIFTS3, _WIDTHS3)):
        out[i] = (a >> np.uint64(sh)) & np.uint64((1 << wd) - 1)
    return out


def _limbs(a: np.ndarray) -> list[np.ndarray]:
    return list(_limb_stack(a))


def _f2u(x: np.ndarray) -> np.ndarray:
    """float64 holding an exact integer (|x| < 2^63) to its ring element."""
    return x.astype(np.int64).view(np.uint64)


class RingOperand:
    """A ring matrix (k x n) used many times as the right operand of :func:`ring_matmul` (a
    weight masked once, a fixed dealer mask): its limb stack is built once."""

    def __init__(self, b: np.ndarray) -> None:
        b = np.ascontiguousarray(b, dtype=np.uint64)
        if b.ndim != 2:
            raise InvalidInputError(f"ring operand must be 2-D, got shape {b.shape}")
        self.b = b
        self.shape = b.shape
        k, n = b.shape
        self.count = _limb_count(k)
        self.limbs = np.ascontiguousarray(_ring_limbs(b, self.count).transpose(1, 0, 2)).reshape(k, self.count * n)


def ring_matmul(a: np.ndarray, b: "np.ndarray | RingOperand") -> np.ndarray:
    """``a @ b mod 2^64`` for uint64 matrices (m x k) and (k x n); exact.

    Limb i of ``a`` times the limbs of ``b`` whose products weigh below 2^64 (one BLAS call per
    i); products of equal weight are summed in float64 and recombined mod 2^64. 16-bit limbs:
    10 products, each below 2^32 k, at most four added (k <= 2^19); 3 limbs (k <= 512): 6
    products, each below 2^44 k, at most two added.
    """
    a = np.asarray(a, dtype=np.uint64)
    op = b if isinstance(b, RingOperand) else None
    bshape = op.shape if op is not None else np.shape(b)
    if a.ndim != 2 or len(bshape) != 2 or a.shape[1] != bshape[0]:
        raise InvalidInputError(f"ring_matmul needs (m,k) @ (k,n), got {a.shape} @ {tuple(bshape)}")
    m, k = a.shape
    n = bshape[1]
    if k > (1 << 19):
        raise InvalidInputError(f"inner dimension {k} too large for exact limb products (max 2^19)")
    count = _limb_count(k)
    al = _ring_limbs(a, count).reshape(count * m, k)
    bl = op.limbs if op is not None else RingOperand(b).limbs
    return _limb_product(al, bl, m, n)


def _limb_product(al: np.ndarray, bl: np.ndarray, m: int, n: int) -> np.ndarray:
    """(c*m, k) limb rows (limb i = rows i*m..) times (k, c*n) limb columns, recombined mod 2^64;
    c = 4 (16-bit limbs) or 3 (:data:`_SHIFTS3`), read from the shapes."""
    count = al.shape[0] // m
    shifts = _SHIFTS3 if count == 3 else tuple(_LIMB * i for i in range(4))
    out = np.zeros((m, n), dtype=np.uint64)
    # the limb products of weight < 2^64, one call per limb of a (measured faster than one call
    # for all of them); equal weights summed in float (exact, see ring_matmul)
    acc: dict[int, np.ndarray] = {}
    for i in range(count):
        js = [j for j in range(count) if shifts[i] + shifts[j] < 64]
        part = al[i * m:(i + 1) * m] @ bl[:, :len(js) * n]
        for j in js:
            w = shifts[i] + shifts[j]
            block = part[:, j * n:(j + 1) * n]
            if w in acc:
                acc[w] += block
            else:
                acc[w] = block.copy()
    for w, v in acc.items():
        out += _f2u(v) << np.uint64(w)
    return out


class PublicOperand:
    """A public int64 matrix (k x n) prepared once for :func:`ring_matmul_public`: its float64
    copy and whether the fast path is exact for it (models reuse their kernels every inference)."""

    def __init__(self, w: np.ndarray) -> None:
        w = np.ascontiguousarray(w, dtype=np.int64)
        if w.ndim != 2:
            raise InvalidInputError(f"public operand must be 2-D, got shape {w.shape}")
        self.w = w
        self.shape = w.shape
        wmax = float(np.max(np.abs(w))) if w.size else 0.0
        self.fast = 65536.0 * w.shape[0] * max(wmax, 1.0) < _EXACT
        #: limbs per share element: 3 (22/21/21 bits) where a 22-bit limb times the weights stays
        #: exact, else 4 of 16 bits
        self.count = 3 if float(1 << 22) * w.shape[0] * max(wmax, 1.0) < _EXACT else 4
        self.wf = w.astype(np.float64) if self.fast else None


def ring_matmul_public(a: np.ndarray, w: "np.ndarray | PublicOperand") -> np.ndarray:
    """``a @ w mod 2^64`` for uint64 shares ``a`` (m x k) and public signed int64 ``w`` (k x n)."""
    a = np.asarray(a, dtype=np.uint64)
    op = w if isinstance(w, PublicOperand) else PublicOperand(w)
    if a.ndim != 2 or a.shape[1] != op.shape[0]:
        raise InvalidInputError(f"ring_matmul_public needs (m,k) @ (k,n), got {a.shape} @ {op.shape}")
    m, k = a.shape
    if not op.fast:
        return ring_matmul(a, op.w.view(np.uint64))
    stacked = _ring_limbs(a, op.count).reshape(op.count * m, k)  # (count m, k)
    return _combine_limb_products(stacked @ op.wf, m)  # (count m, n) exact integers, recombined


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, padding: int = 0) -> tuple[np.ndarray, int, int]:
    """(B, C, H, W) to (B*Ho*Wo, C*kh*kw) patches, column order matching (Cout, C, kh, kw) kernels."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    b, c, h, w = x.shape
    ho = (h - kh) // stride + 1
    wo = (w - kw) // stride + 1
    if ho <= 0 or wo <= 0:
        raise InvalidInputError(f"kernel {kh}x{kw} larger than padded input {h}x{w}")
    s = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, shape=(b, ho, wo, c, kh, kw),
        strides=(s[0], s[2] * stride, s[3] * stride, s[1], s[2], s[3]), writeable=False)
    return view.reshape(b * ho * wo, c * kh * kw), ho, wo


def _cols_to_map(y: np.ndarray, b: int, ho: int, wo: int) -> np.ndarray:
    return np.ascontiguousarray(y.reshape(b, ho, wo, -1).transpose(0, 3, 1, 2))


def _combine_limb_products(prod: np.ndarray, m: int) -> np.ndarray:
    """Sum (c*m, n) float products of limb i (rows i*m..) times its weight, mod 2^64: 2^(16 i)
    for c = 4 limbs, :data:`_SHIFTS3` for 3 (the count read from the shape)."""
    count = prod.shape[0] // m
    shifts = _SHIFTS3 if count == 3 else tuple(_LIMB * i for i in range(4))
    out = _f2u(prod[:m])
    for i in range(1, count):
        out += _f2u(prod[i * m:(i + 1) * m]) << np.uint64(shifts[i])
    return out


def ring_conv2d_public(x: np.ndarray, w: np.ndarray, stride: int = 1, padding: int = 0,
                       prepared: PublicOperand | None = None) -> np.ndarray:
    """Convolution of ring shares (B, C, H, W) with a public int64 kernel (Cout, C, kh, kw).

    ``prepared`` = ``PublicOperand(w.reshape(cout, -1).T)``, cached by the caller. The map is
    split into limbs *before* im2col, so the kh*kw-times larger patch matrix is built directly
    in float64 (no integer-to-float conversion of the expanded matrix)."""
    cout, _, kh, kw = w.shape
    op = prepared if prepared is not None else PublicOperand(w.reshape(cout, -1).T)
    x = np.asarray(x, dtype=np.uint64)
    b = x.shape[0]
    if not op.fast:
        cols, ho, wo = im2col(x, kh, kw, stride, padding)
        return _cols_to_map(ring_matmul_public(cols, op), b, ho, wo)
    limbs = _ring_limbs(x, op.count).reshape(op.count * b, *x.shape[1:])
    cols, ho, wo = im2col(limbs, kh, kw, stride, padding)  # (4 * b*ho*wo, C*kh*kw), float64
    m = b * ho * wo
    return _cols_to_map(_combine_limb_products(cols @ op.wf, m), b, ho, wo)


def kernel_operand(w: np.ndarray) -> RingOperand:
    """A ring kernel (Cout, C, kh, kw) prepared for repeated :func:`ring_conv2d`."""
    return RingOperand(np.asarray(w, dtype=np.uint64).reshape(w.shape[0], -1).T)


def ring_conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1, padding: int = 0,
                prepared: RingOperand | None = None) -> np.ndarray:
    """Convolution of ring elements (B, C, H, W) with ring kernel (Cout, C, kh, kw), exact mod 2^64.

    ``prepared`` = :func:`kernel_operand` of ``w``, when the kernel is reused. As for public
    kernels, the map is split into limbs before im2col."""
    cout, _, kh, kw = w.shape
    op = prepared if prepared is not None else kernel_operand(w)
    x = np.asarray(x, dtype=np.uint64)
    b = x.shape[0]
    if op.shape[0] > (1 << 19):
        raise InvalidInputError(f"kernel of {op.shape[0]} taps too large for exact limb products")
    limbs = _ring_limbs(x, op.count).reshape(op.count * b, *x.shape[1:])
    cols, ho, wo = im2col(limbs, kh, kw, stride, padding)  # (count * b*ho*wo, C*kh*kw), float64
    return _cols_to_map(_limb_product(cols, op.limbs, b * ho * wo, cout), b, ho, wo)


def conv2d_float(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None, stride: int = 1,
                 padding: int = 0) -> np.ndarray:
    """Plaintext float convolution with the same layout (reference for tests and benchmarks)."""
    cout, _, kh, kw = w.shape
    cols, ho, wo = im2col(np.asarray(x, dtype=np.float64), kh, kw, stride, padding)
    y = cols @ w.reshape(cout, -1).T.astype(np.float64)
    if bias is not None:
        y = y + bias
    return _cols_to_map(y, x.shape[0], ho, wo)


# --- general convolutions: asymmetric padding, strides and dilations per axis, groups ----------

class ConvSpec:
    """Geometry of a convolution: strides (sh, sw), pads (top, left, bottom, right), dilations
    (dh, dw), groups. Built from a layer's params: the old ``stride``/``padding`` integers or
    ONNX-style ``strides``/``pads``/``dilations``/``group`` lists."""

    __slots__ = ("stride", "pads", "dilation", "group")

    def __init__(self, stride: "tuple[int, int]" = (1, 1), pads: "tuple[int, int, int, int]" = (0, 0, 0, 0),
                 dilation: "tuple[int, int]" = (1, 1), group: int = 1) -> None:
        self.stride = (int(stride[0]), int(stride[1]))
        self.pads = tuple(int(p) for p in pads)
        self.dilation = (int(dilation[0]), int(dilation[1]))
        self.group = int(group)
        if len(self.pads) != 4 or min(self.pads) < 0 or min(self.stride) < 1 or min(self.dilation) < 1 \
                or self.group < 1:
            raise InvalidInputError(f"invalid convolution geometry {self.to_params()}")

    @classmethod
    def from_params(cls, params: "dict") -> "ConvSpec":
        if "strides" in params or "pads" in params or "dilations" in params or "group" in params:
            st = params.get("strides", [params.get("stride", 1)] * 2)
            pads = params.get("pads", [params.get("padding", 0)] * 4)
            return cls(tuple(st), tuple(pads), tuple(params.get("dilations", (1, 1))), int(params.get("group", 1)))
        s, p = int(params.get("stride", 1)), int(params.get("padding", 0))
        return cls((s, s), (p, p, p, p))

    def to_params(self) -> dict:
        return {"strides": list(self.stride), "pads": list(self.pads), "dilations": list(self.dilation),
                "group": self.group}

    @property
    def simple(self) -> bool:
        """Equal strides, equal pads, no dilation, one group: the original fast path."""
        return (self.group == 1 and self.dilation == (1, 1) and self.stride[0] == self.stride[1]
                and len(set(self.pads)) == 1)

    def out_hw(self, h: int, w: int, kh: int, kw: int) -> "tuple[int, int]":
        t, l, b, r = self.pads
        ho = (h + t + b - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + l + r - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        if ho <= 0 or wo <= 0:
            raise InvalidInputError(f"kernel {kh}x{kw} (dilation {self.dilation}) larger than padded input {h}x{w}")
        return ho, wo


def _pad(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    t, l, b, r = spec.pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r))) if (t or l or b or r) else x


def im2col_spec(x: np.ndarray, kh: int, kw: int, spec: ConvSpec) -> "tuple[np.ndarray, int, int]":
    """:func:`im2col` for any :class:`ConvSpec` (group ignored: the caller slices groups)."""
    h, w = x.shape[2], x.shape[3]
    ho, wo = spec.out_hw(h, w, kh, kw)
    x = np.ascontiguousarray(_pad(x, spec))
    b, c = x.shape[:2]
    s = x.strides
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    view = np.lib.stride_tricks.as_strided(
        x, shape=(b, ho, wo, c, kh, kw),
        strides=(s[0], s[2] * sh, s[3] * sw, s[1], s[2] * dh, s[3] * dw), writeable=False)
    return view.reshape(b * ho * wo, c * kh * kw), ho, wo


def _taps(x: np.ndarray, kh: int, kw: int, spec: ConvSpec, ho: int, wo: int):
    """The kh*kw shifted, strided views of the padded map (for per-channel convolutions)."""
    xp = _pad(x, spec)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]


def _depthwise(x: np.ndarray, w: np.ndarray, spec: ConvSpec, dtype) -> np.ndarray:
    """Per-channel convolution (each output channel reads one input channel), elementwise: exact
    mod 2^64 for uint64 (numpy wraps), plain float for float64. Channel multiplier allowed."""
    cout, _, kh, kw = w.shape
    c = x.shape[1]
    mult = cout // c
    ho, wo = spec.out_hw(x.shape[2], x.shape[3], kh, kw)
    if mult > 1:
        x = np.repeat(x, mult, axis=1)
    w = np.asarray(w).astype(dtype, copy=False)
    y = np.zeros((x.shape[0], cout, ho, wo), dtype=dtype)
    for i, j, view in _taps(x, kh, kw, spec, ho, wo):
        y += view * w[:, 0, i, j][None, :, None, None]
    return y


def _grouped(fn, x: np.ndarray, w: np.ndarray, spec: ConvSpec, prepared) -> np.ndarray:
    g = spec.group
    cin = x.shape[1] // g
    cout = w.shape[0] // g
    one = ConvSpec(spec.stride, spec.pads, spec.dilation, 1)
    outs = [fn(x[:, k * cin:(k + 1) * cin], w[k * cout:(k + 1) * cout], one,
               prepared[k] if prepared is not None else None) for k in range(g)]
    return np.concatenate(outs, axis=1)


def _check_groups(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> None:
    g = spec.group
    if x.shape[1] % g or w.shape[0] % g or w.shape[1] * g != x.shape[1]:
        raise InvalidInputError(f"kernel {w.shape} with {g} groups does not fit {x.shape[1]} input channels")


def is_depthwise(w_shape, spec: ConvSpec) -> bool:
    return spec.group > 1 and w_shape[1] == 1 and w_shape[0] % spec.group == 0


def conv_prepare(w: np.ndarray, spec: ConvSpec, public: bool):
    """The operand(s) a convolution reuses: PublicOperand / RingOperand (per group), or None for
    per-channel convolutions (elementwise, nothing to prepare)."""
    if is_depthwise(w.shape, spec):
        return None
    make = (lambda k: PublicOperand(k.reshape(k.shape[0], -1).T)) if public else kernel_operand
    if spec.group == 1:
        return make(w)
    cout = w.shape[0] // spec.group
    return [make(w[k * cout:(k + 1) * cout]) for k in range(spec.group)]


def ring_conv_public(x: np.ndarray, w: np.ndarray, spec: ConvSpec, prepared=None) -> np.ndarray:
    """Ring shares (B, C, H, W) convolved with a public int64 kernel, any :class:`ConvSpec`; exact."""
    x = np.asarray(x, dtype=np.uint64)
    _check_groups(x, w, spec)
    if is_depthwise(w.shape, spec):
        return _depthwise(x, np.asarray(w, dtype=np.int64).view(np.uint64), spec, np.uint64)
    if spec.group > 1:
        return _grouped(ring_conv_public, x, w, spec, prepared)
    if spec.simple:
        return ring_conv2d_public(x, w, spec.stride[0], spec.pads[0], prepared)
    cout, _, kh, kw = w.shape
    op = prepared if prepared is not None else PublicOperand(np.asarray(w, dtype=np.int64).reshape(cout, -1).T)
    b = x.shape[0]
    if not op.fast:
        cols, ho, wo = im2col_spec(x, kh, kw, spec)
        return _cols_to_map(ring_matmul_public(cols, op), b, ho, wo)
    limbs = _ring_limbs(x, op.count).reshape(op.count * b, *x.shape[1:])
    cols, ho, wo = im2col_spec(limbs, kh, kw, spec)
    return _cols_to_map(_combine_limb_products(cols @ op.wf, b * ho * wo), b, ho, wo)


def ring_conv(x: np.ndarray, w: np.ndarray, spec: ConvSpec, prepared=None) -> np.ndarray:
    """Ring elements convolved with a ring kernel (both uniform, e.g. Beaver terms), any spec; exact."""
    x = np.asarray(x, dtype=np.uint64)
    w = np.asarray(w, dtype=np.uint64)
    _check_groups(x, w, spec)
    if is_depthwise(w.shape, spec):
        return _depthwise(x, w, spec, np.uint64)
    if spec.group > 1:
        return _grouped(ring_conv, x, w, spec, prepared)
    if spec.simple:
        return ring_conv2d(x, w, spec.stride[0], spec.pads[0], prepared)
    cout, _, kh, kw = w.shape
    op = prepared if prepared is not None else kernel_operand(w)
    b = x.shape[0]
    limbs = _ring_limbs(x, op.count).reshape(op.count * b, *x.shape[1:])
    cols, ho, wo = im2col_spec(limbs, kh, kw, spec)
    return _cols_to_map(_limb_product(cols, op.limbs, b * ho * wo, cout), b, ho, wo)


def conv_float(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: ConvSpec) -> np.ndarray:
    """Plaintext float64 convolution for any :class:`ConvSpec` (the reference)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    _check_groups(x, w, spec)
    if is_depthwise(w.shape, spec):
        y = _depthwise(x, w, spec, np.float64)
    elif spec.group > 1:
        y = _grouped(lambda a, k, s, _p: conv_float(a, k, None, s), x, w, spec, None)
    else:
        cout, _, kh, kw = w.shape
        cols, ho, wo = im2col_spec(x, kh, kw, spec)
        y = _cols_to_map(cols @ w.reshape(cout, -1).T, x.shape[0], ho, wo)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1)
    return y
