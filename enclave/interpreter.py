"""Minimal numpy interpreter for the head graph, run inside the enclave.

It reads the graph file of a :class:`~enclave.package.HeadPackage`, fetches every parameter
through the :class:`~enclave.package.ParameterIndexTable` (each slice checked against its
sha256, the table against its Merkle root) and evaluates the nodes in order, in float32.

It supports exactly the operators registered in :data:`OPERATORS` (one :func:`operator` entry per
operator: attributes with their opset ranges, arity, constant inputs, implementation; see
``docs/FORMATS.md``)
and fails closed: an unknown operator, opset or attribute, an attribute value it does not
implement, a dtype or shape that differs from what the graph file declares, or a tensor larger
than the configured limit raises :class:`UnsupportedOperatorError` or :class:`ModelError`;
it never guesses. Error messages name the node and operator, never values.

Why hand-written rather than onnxruntime inside the enclave: the enclave is the trusted
computing base, and a few hundred lines of numpy per operator can be read and audited, fail
closed on anything outside the registered set, and hold no code path the head does not use;
onnxruntime is a large native runtime with its own graph optimiser and allocator. The price is
speed, paid mostly per node and per call (1-3 us of Python and numpy dispatch each, against a ViT
block's 17x64 tensors), so the plan is compiled at load, by hand here for the same reason:

- every tensor is a slot of a list (no name lookups per call), each output's dtype and shape
  check is precomputed, and the input shapes, size limit and batch are checked once per set of
  input shapes (dtype and NaN/infinity on every call);
- every maximal chain of nodes whose intermediates are each read once, by the next node, becomes
  one entry (:class:`_Chain`): the first call per input shape runs the nodes' own code with every
  check and proves the fast path equal to it bit for bit; from then on the chain skips the
  intermediates' checks (their dtypes are fixed, their shapes follow from the input shapes),
  turns Reshape/Squeeze/Unsqueeze/Flatten into a reshape to the shape it saw, keeps Transposes as
  views between reshapes (a run of them one strided view), writes Erf, Softmax, Relu,
  BatchNormalization and LayerNormalization into arrays it allocated itself (a Conv's bias,
  activation and normalisation in its output), runs consecutive Add / Sub / Mul / Div / Erf
  nodes as one pass of a C program (a torch GELU's five nodes), scaled dot-product attention
  (scale, MatMul, Softmax, MatMul) as one call of ``gemm.c`` and a residual Add after a packed
  product in the product's store. Every node is still one
  :data:`OPERATORS` entry, checked by :func:`node_problems` first, and nothing is accepted that
  the nodes alone would refuse;
- nodes keep what they derive from input shapes and constants per shape (:func:`_memoised`).

LayerNormalization, Softmax and Erf are one call each of a C kernel (``enclave/csrc/vit.c``;
numpy needed 10, 5 and 19 calls for them).

The hot operators are vectorised in float32 (dense Conv as one product of the gathered windows by
a weight laid out once per node for how OpenBLAS runs few-column products, or on maps of at most
12 positions in one call of a C kernel (enclave/csrc/floor.c), depthwise and grouped
Conv over channels-last windows, MatMul by a 2-D weight and Gemm at up to 128 rows by a weight
packed once per node for a register-tiled C product (``enclave/csrc/gemm.c``, its bias in the
store; small products of two computed operands, attention's, one batched call of it), larger
ones a transposed Gemm weight kept contiguous (a gemv on the stored weight at one row) or MatMul
by a weight as one 2-D BLAS call, PRelu as max(s x, x) where that is
exact, BatchNormalization folded into one multiply and one add, spatial means in one C loop,
short trailing means as one matrix-vector product, RNNs with one matmul for every step's input
projection and the recurrence of every direction in one call of a C kernel, LogSoftmax in C one
pass per row); ``scripts/bench_heads`` measures each zoo
head against onnxruntime with one thread each (docs/BENCHMARKS.md).

Where numpy's per-call dispatch is the cost itself, an operator calls a compiled kernel instead
(:mod:`enclave.native`, C sources in ``enclave/csrc``): tree ensembles are walked and their
classifier outputs computed in one call (``trees.c``) after their tables are checked here; the
recurrences and LogSoftmax (``rnn.c``); the inputs' finiteness check, small dense convs and
spatial means (``floor.c``); the products by a packed weight and the small batched ones
(``gemm.c``: OpenBLAS packs B again on every call, which at a ViT block's 17 rows is most of the
work; onnxruntime packs its weights once at load, as this does per node).

Imports: numpy, the standard library, ``enclave.package``, ``enclave.native`` and
``splitseal.errors`` only.
"""

from __future__ import annotations

import contextvars
import logging
import functools
import math
import operator as _operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from enclave import native
from enclave.package import HeadGraph, HeadPackage, NodeSpec, ParameterIndexTable, decode_graph, read_parameter
from splitseal.errors import ModelError, PackageFormatError, UnsupportedOperatorError

logger = logging.getLogger(__name__)

#: ai.onnx opset versions whose semantics this interpreter implements for every supported op.
MIN_OPSET = 11
MAX_OPSET = 23
#: Default cap on the element count of any tensor (inputs, intermediates, im2col buffers).
DEFAULT_MAX_TENSOR_ELEMENTS = 1 << 25

F32 = np.dtype("float32")
#: entries a node keeps in its per-shape memo (:attr:`_Ctx.memo`) before it starts over
_MEMO_LIMIT = 64
I64 = np.dtype("int64")

@dataclass(frozen=True)
class OpSpec:
    """Everything the interpreter knows about one operator, in one place.

    ``attrs`` maps each attribute the operator may carry to the (first, last) ai.onnx opset in
    which it has the meaning ``impl`` implements; outside that range the attribute is refused.
    ``inputs`` / ``outputs`` are the (min, max) counts (trailing empty inputs are absent);
    ``inputs_by_opset`` overrides ``inputs`` for opsets below a version (an input that became
    an attribute or the reverse). ``const_inputs`` are input positions that must be head
    parameters (shapes, axes, indices: known when the head is loaded, never computed), with
    the dtype they must have. ``opsets`` is the ai.onnx range the operator exists in with these
    semantics. ``impl(ctx, *inputs)`` returns one array or a tuple (one per output).
    """

    name: str
    impl: Callable[..., Any]
    attrs: Mapping[str, tuple[int, int]]
    inputs: tuple[int, int]
    outputs: tuple[int, int] = (1, 1)
    opsets: tuple[int, int] = (MIN_OPSET, MAX_OPSET)
    inputs_by_opset: tuple[tuple[int, tuple[int, int]], ...] = ()
    const_inputs: Mapping[int, str] = field(default_factory=dict)
    domain: str = ""
    #: attributes that may arrive instead as the float32 parameter inputs 1, 2, ... (in this
    #: order): the split lifts a tree ensemble's thresholds and leaf values out of the graph
    #: file into the parameter blob, where the index, its Merkle root and the rule cover them
    lifted: tuple[str, ...] = ()

    def input_range(self, opset: int) -> tuple[int, int]:
        for below, rng in self.inputs_by_opset:
            if opset < below:
                return rng
        return self.inputs


#: The operator registry: :func:`op_key` -> its :class:`OpSpec`. Adding an operator = one ``@operator``.
OPERATORS: dict[str, OpSpec] = {}
_ALL = (MIN_OPSET, MAX_OPSET)
#: Domains besides ai.onnx that have registered operators (anything else is refused).
ML_DOMAIN = "ai.onnx.ml"


def op_key(domain: str, op: str) -> str:
    """Registry key of an operator: its name in ai.onnx, ``domain:name`` in any other domain."""
    return op if domain in ("", "ai.onnx") else f"{domain}:{op}"


def _attr_ranges(attrs: Mapping[str, tuple[int, int] | None] | Iterable[str]) -> dict[str, tuple[int, int]]:
    if isinstance(attrs, Mapping):
        return {k: (v or _ALL) for k, v in attrs.items()}
    return {k: _ALL for k in attrs}


def operator(name: str, *, attrs: Mapping[str, tuple[int, int] | None] | Iterable[str] = (),
             inputs: tuple[int, int] = (1, 1), outputs: tuple[int, int] = (1, 1),
             opsets: tuple[int, int] = _ALL, inputs_by_opset: tuple[tuple[int, tuple[int, int]], ...] = (),
             const_inputs: Mapping[int, str] | None = None, domain: str = "",
             lifted: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``impl`` as the implementation of operator ``name`` (see :class:`OpSpec`)."""
    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        key = op_key(domain, name)
        if key in OPERATORS:
            raise RuntimeError(f"operator {key} registered twice")
        OPERATORS[key] = OpSpec(name, impl, _attr_ranges(attrs), inputs, outputs, opsets, inputs_by_opset,
                                 dict(const_inputs or {}), domain, lifted)
        return impl
    return register


def node_problems(node: NodeSpec, opset: int, constants: Mapping[str, str],
                  domains: Mapping[str, int] | None = None) -> list[str]:
    """Why the interpreter would refuse ``node`` at ``opset`` (empty: it runs it).

    ``opset`` is the ai.onnx opset; ``domains`` the opset of every other domain the model
    imports (a node of another domain is checked against that one). ``constants`` maps the names
    of the head's parameters to their dtypes. Checks: the operator is registered in its domain
    and exists in that opset, every attribute is known in that opset, the input and output
    counts, and that constant-only inputs are parameters of the right dtype.
    """
    spec = OPERATORS.get(op_key(node.domain, node.op))
    if spec is None:
        if node.domain not in ("", "ai.onnx") and not any(s.domain == node.domain for s in OPERATORS.values()):
            return [f"domain {node.domain!r} is not implemented by the enclave interpreter"]
        return [f"operator {node.op!r} is not implemented by the enclave interpreter"
                + (f" in domain {node.domain!r}" if node.domain else "")]
    out: list[str] = []
    if spec.domain:
        if not domains or spec.domain not in domains:
            return [f"the model imports no opset of domain {spec.domain!r}"]
        opset = domains[spec.domain]
    if not spec.opsets[0] <= opset <= spec.opsets[1]:
        out.append(f"{node.op} is implemented for opsets {spec.opsets[0]}..{spec.opsets[1]}, the model uses {opset}")
    for attr in sorted(node.attrs):
        rng = spec.attrs.get(attr)
        if rng is None:
            out.append(f"attribute {attr!r} is not supported (supported: {sorted(spec.attrs)})")
        elif not rng[0] <= opset <= rng[1]:
            out.append(f"attribute {attr!r} does not exist in opset {opset}")
    ins = list(node.inputs)
    while ins and ins[-1] == "":
        ins.pop()
    lo, hi = spec.input_range(opset)
    n_out = len(node.outputs)
    if not lo <= len(ins) <= hi or not spec.outputs[0] <= n_out <= spec.outputs[1] or not node.outputs[0]:
        out.append(f"{len(ins)} inputs / {n_out} outputs are outside {lo}..{hi} / "
                   f"{spec.outputs[0]}..{spec.outputs[1]}")
    for pos, dtype in spec.const_inputs.items():
        if pos < len(ins) and ins[pos]:
            if ins[pos] not in constants:
                out.append(f"input {pos} ({ins[pos]!r}) must be a constant (a parameter of the head), it is computed")
            elif constants[ins[pos]] != dtype:
                out.append(f"input {pos} ({ins[pos]!r}) must be {dtype}, it is {constants[ins[pos]]}")
    return out


def supported_operators() -> dict[str, frozenset[str]]:
    """:func:`op_key` -> the attribute names it may carry (what the importer and the split check
    against; keys of other domains than ai.onnx are ``domain:op``, which the strict importer,
    ai.onnx only, never matches)."""
    return {name: frozenset(spec.attrs) for name, spec in sorted(OPERATORS.items())}


class _Ctx:
    """What an op implementation needs besides its inputs."""

    def __init__(self, node: NodeSpec, opset: int, max_elements: int) -> None:
        self.node = node
        self.opset = opset
        self.max_elements = max_elements
        #: results an op derives from its input shapes and constant inputs alone (a Reshape's
        #: target shape), kept per input shape so the checks run once per shape, not per call
        self.memo: dict[Any, Any] = {}
        #: positions of the node's inputs that are head parameters (the same array on every call)
        self.parameters: frozenset[int] = frozenset()

    def unsupported(self, what: str) -> UnsupportedOperatorError:
        return UnsupportedOperatorError(f"node {self.node.name!r} ({self.node.op}): {what}")

    def error(self, what: str) -> ModelError:
        return ModelError(f"node {self.node.name!r} ({self.node.op}): {what}")

    def attr_int(self, name: str, default: int) -> int:
        v = self.node.attrs.get(name, default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.unsupported(f"attribute {name} must be an integer")
        return v

    def attr_float(self, name: str, default: float) -> float:
        v = self.node.attrs.get(name, default)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise self.unsupported(f"attribute {name} must be a finite number")
        return float(v)

    def attr_ints(self, name: str, default: list[int] | None) -> list[int] | None:
        v = self.node.attrs.get(name, default)
        if v is None:
            return None
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self.unsupported(f"attribute {name} must be a list of integers")
        return list(v)

    def attr_str(self, name: str, default: str) -> str:
        v = self.node.attrs.get(name, default)
        if not isinstance(v, str):
            raise self.unsupported(f"attribute {name} must be a string")
        return v

    def check_size(self, shape: tuple[int, ...] | list[int], what: str = "output") -> None:
        n = math.prod(shape)
        if n > self.max_elements:
            raise self.error(f"{what} of shape {tuple(shape)} has {n} elements, more than the "
                             f"limit {self.max_elements}")

    def float_input(self, x: np.ndarray | None, which: str) -> np.ndarray:
        if x is None:
            raise self.error(f"input {which} is required")
        if x.dtype != F32:
            raise self.error(f"input {which} has dtype {x.dtype}, expected float32")
        return x


def _broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of two shapes (ValueError if they do not broadcast): numpy's
    ``broadcast_shapes`` builds arrays for it, about 8 us a call, paid on every element-wise node."""
    if a == b:
        return a
    if len(a) < len(b):
        a, b = b, a
    b = (1,) * (len(a) - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ValueError("shapes do not broadcast")
    return tuple(out)


def _memoised(ctx: "_Ctx", key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``key`` for this node (see :attr:`_Ctx.memo`): what a node derives
    from its input shapes, attributes and constant inputs, checks included, so a call on a shape
    already seen does only the arithmetic."""
    value = ctx.memo.get(key)
    if value is None:
        if len(ctx.memo) >= _MEMO_LIMIT:   # one entry per batch size seen: bounded all the same
            ctx.memo.clear()
        value = ctx.memo[key] = compute()
    return value


# --- helpers for windowed ops ------------------------------------------------------------

def _spatial_params(ctx: _Ctx, x: np.ndarray, kernel: list[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """strides, dilations, pads_begin, pads_end for a 2-D windowed op (auto_pad resolved)."""
    if x.ndim != 4:
        raise ctx.unsupported(f"only 2-D spatial inputs (N, C, H, W) are supported, got rank {x.ndim}")
    if len(kernel) != 2 or any(k < 1 for k in kernel):
        raise ctx.unsupported(f"kernel_shape {kernel} must be two positive integers")
    strides = ctx.attr_ints("strides", [1, 1]) or [1, 1]
    dilations = ctx.attr_ints("dilations", [1, 1]) or [1, 1]
    if len(strides) != 2 or len(dilations) != 2 or min(strides + dilations) < 1:
        raise ctx.unsupported(f"strides {strides} / dilations {dilations} must be two positive integers")
    auto_pad = ctx.attr_str("auto_pad", "NOTSET")
    spatial = list(x.shape[2:])
    if auto_pad == "NOTSET":
        pads = ctx.attr_ints("pads", [0, 0, 0, 0]) or [0, 0, 0, 0]
        if len(pads) != 4 or min(pads) < 0:
            raise ctx.unsupported(f"pads {pads} must be four non-negative integers")
        begin, end = pads[:2], pads[2:]
    elif auto_pad == "VALID":
        if "pads" in ctx.node.attrs:
            raise ctx.unsupported("pads must not be given with auto_pad")
        begin, end = [0, 0], [0, 0]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if "pads" in ctx.node.attrs:
            raise ctx.unsupported("pads must not be given with auto_pad")
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            if auto_pad == "SAME_UPPER":
                begin.append(small)
                end.append(large)
            else:
                begin.append(large)
                end.append(small)
    else:
        raise ctx.unsupported(f"auto_pad {auto_pad!r} is not supported")
    return strides, dilations, begin, end


def _out_size(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil_mode: bool) -> int:
    span = size + pb + pe - d * (k - 1) - 1
    if span < 0:
        return 0
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + pb:  # the last window must start inside input or left padding
            out -= 1
        return out
    return span // s + 1


def _windows(ctx: _Ctx, x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int],
             begin: list[int], end: list[int], ceil_mode: bool, fill: float) -> tuple[np.ndarray, list[int], list[int]]:
    """View of shape (N, OH, OW, KH, KW, C) over a channels-last copy of ``x`` padded with ``fill``;
    also out size and the extra end padding added for ceil mode. Channels-last because numpy
    reduces and contracts fastest along a contiguous, long last axis: a max or sum over the window
    axes of an NCHW view runs a few elements per inner loop (a 3x3 max pool's reduction measured
    17-26x slower)."""
    outs = [_out_size(x.shape[2 + i], kernel[i], strides[i], dilations[i], begin[i], end[i], ceil_mode)
            for i in range(2)]
    if min(outs) < 1:
        raise ctx.error(f"input of spatial size {tuple(x.shape[2:])} is smaller than the window")
    ctx.check_size((x.shape[0], x.shape[1], outs[0], outs[1], kernel[0], kernel[1]), "window buffer")
    extra = []
    for i in range(2):
        need = (outs[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
        have = x.shape[2 + i] + begin[i] + end[i]
        extra.append(max(need - have, 0))
    rows = x.transpose(0, 2, 3, 1)
    if any(begin) or end[0] + extra[0] or end[1] + extra[1]:
        # a filled buffer and one slice assignment: np.pad's general machinery costs tens of us
        n, h, w, c = rows.shape
        padded = np.full((n, h + begin[0] + end[0] + extra[0], w + begin[1] + end[1] + extra[1], c), fill, dtype=x.dtype)
        padded[:, begin[0]:begin[0] + h, begin[1]:begin[1] + w] = rows
    else:
        padded = np.ascontiguousarray(rows)
    n, h, w, c = padded.shape
    sn, sh, sw, sc = padded.strides
    view = _strided_view(padded, (n, outs[0], outs[1], kernel[0], kernel[1], c),
                         (sn, sh * strides[0], sw * strides[1], sh * dilations[0], sw * dilations[1], sc))
    return view, outs, extra


def _strided_view(base: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only view of ``base`` with these strides (windows over it), as ``as_strided`` makes
    it but without its Python-level wrapper (3.5 us a call against 0.4); numpy's constructor
    refuses a view that would reach outside the buffer of a C-contiguous base."""
    if not base.flags.c_contiguous:
        return np.lib.stride_tricks.as_strided(base, shape=shape, strides=strides, writeable=False)
    view = np.ndarray(shape, base.dtype, base, 0, strides)
    view.flags.writeable = False
    return view


# --- operators ---------------------------------------------------------------------------

# Conv's dense forms (pointwise and im2col) gather the columns as one row per output position
# (``kh*kw*c`` values, channels innermost, so the gather copies contiguous runs of c) and multiply
# them by the weight laid out once per node (:func:`_conv_weight`). The heads' convolutions run on
# 1x1 to 4x4 maps: a large weight against a few columns, where how OpenBLAS is called decides the
# time (measured on the zoo's shapes, numpy's OpenBLAS 0.3.31, SkylakeX kernels):
# - OpenBLAS runs a product of at most ``_SMALL_GEMM_MACS`` multiply-adds in its small-matrix
#   kernel, reading the operands in place (kernel/x86_64/sgemm_small_kernel_permit_skylakex.c;
#   with a transposed operand only when the result has at most ``_SMALL_GEMM_TRANSPOSED``
#   elements); above it, it packs both operands into buffers on every call, which against a few
#   columns costs more than the arithmetic (2-3x on MobileNet's and ResNet's last convs);
# - "columns": [positions, k] @ W^T [k, m], the product transposed, so the kernel runs along
#   the output channels (many), not the positions (few); the result is returned as an NCHW view
#   of the channels-last block, which the next conv's columns read without a transpose;
# - with at most ``_FEW_COLUMNS`` columns and a product over the limit, the weight is split into
#   blocks of output channels that each fit the limit, one batched matmul: "channel blocks"
#   (W^T blocks [k, 32j], widths a multiple of 32, the kernel's fast widths) while the weight fits
#   one core's L2 cache (``_CACHED_WEIGHT_BYTES``: the product is compute-bound there), "weight
#   rows" (W blocks [rows, k] @ columns^T) above, where the product streams the weight from memory
#   and reading it row by row measured 20-30 % faster.
# With at most ``_NATIVE_POSITIONS`` positions per image (the 1x1 to 3x3 maps of the last layers)
# none of these is called: the C kernel of enclave/csrc/floor.c gathers and multiplies in one call
# ("native"; its docstring says why), reading NCHW and writing NCHW. On an AMD EPYC (AVX2,
# OpenBLAS's Haswell kernels) the forms above measured slower than that kernel there (SqueezeNet's
# 3x3 maps, the 2x2 maps of ResNet's and MobileNet's last layers) and faster above it (4x4 maps
# and larger); docs/BENCHMARKS.md.
# Where gemm.c has its AVX-512 tiles (while OpenBLAS runs its Haswell kernels, as numpy's wheel
# does on an Intel Sapphire Rapids), the columns of a product the packed kernel takes
# (:func:`_packed_fits`) are multiplied by the weight packed once per node, the bias added in the
# store: "packed" (ArcFace's layer4 convs 49 x 576 @ 576 x 128 and 49 x 1152 @ 1152 x 128 0.6x
# numpy's time).

#: multiply-adds of the largest product OpenBLAS runs in its small-matrix kernel (no packing)
_SMALL_GEMM_MACS = 1_000_000
#: elements of the largest result OpenBLAS's small-matrix kernel takes with a transposed operand
_SMALL_GEMM_TRANSPOSED = 1200
#: columns (output positions x batch) up to which a conv's product is split into blocks
_FEW_COLUMNS = 16
#: weights up to this size (one core's L2 here) are multiplied in channel blocks, larger ones by rows
_CACHED_WEIGHT_BYTES = 2 << 20
#: dense convs of at most this many output positions per image run in floor.c's kernel
_NATIVE_POSITIONS = 12
#: output channels per block of floor.c's packed weight
_NATIVE_BLOCK = 8


@dataclass(frozen=True)
class _ConvPlan:
    """What a Conv node derives from its input and weight shapes (checks done once per shape)."""

    kind: str                   #: "pointwise", "im2col", "depthwise" or "grouped"
    out: tuple[int, int]        #: output height, width
    strides: tuple[int, int]
    dilations: tuple[int, int]
    begin: tuple[int, int]      #: padding before, per spatial axis
    end: tuple[int, int]        #: padding after
    group: int
    product: str                #: dense forms: "native", "packed", "columns", "channel blocks" or "weight rows"
    block: int                  #: output channels per block of the blocked products
    #: "native": the output shape and floor.c conv's size arguments after the buffers
    native: tuple = ()


def _conv_product(cols: int, depth: int, m: int) -> tuple[str, int]:
    """How a dense conv multiplies [cols, depth] columns by its [m, depth] weight (see above)."""
    if cols > _FEW_COLUMNS or cols * depth * m <= _SMALL_GEMM_MACS:
        return "columns", 0
    widest = _SMALL_GEMM_MACS // (cols * depth)
    if m * depth * F32.itemsize <= _CACHED_WEIGHT_BYTES and widest >= 32:
        blocks = -(-m // (widest // 32 * 32))
        return "channel blocks", -(-m // (32 * blocks)) * 32   # the same count of blocks, widths even
    widest = max(min(widest, _SMALL_GEMM_TRANSPOSED // cols), 1)
    blocks = -(-m // widest)
    return "weight rows", -(-m // blocks)   # as many blocks as needed, as even as possible


#: positions (rows of the columns) up to which a dense conv runs on the packed kernel's AVX-512
#: tiles: with the conv's bias they measured 0.6-0.9x numpy's dot + add at 196 x 576 @ 576 x 128
#: (ArcFace's layer4 conv1), 392 x 576 @ 576 x 128 and 784 x 288 @ 288 x 32 (11:58 UTC, load 0.6)
_PACKED_CONV_MAX_ROWS = 1024


def _packed_conv(cols: int, depth: int, m: int) -> bool:
    """A dense conv's product runs on gemm.c's packed kernel (see above): its AVX-512 tiles only."""
    return bool(native.load("gemm").AVX512) and 0 < cols <= _PACKED_CONV_MAX_ROWS and \
        depth * m <= _packed_max_weights() and (cols > 1 or depth <= _PACKED_MAX_ONE_ROW_INNER)


def _conv_plan(ctx: _Ctx, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> _ConvPlan:
    if w.ndim != 4:
        raise ctx.unsupported(f"only 2-D convolution is supported, weight has rank {w.ndim}")
    kernel = ctx.attr_ints("kernel_shape", None) or list(w.shape[2:])
    if kernel != list(w.shape[2:]):
        raise ctx.error(f"kernel_shape {kernel} does not match weight shape {w.shape}")
    strides, dilations, begin, end = _spatial_params(ctx, x, kernel)
    group = ctx.attr_int("group", 1)
    n, c, h, wd = x.shape
    m = w.shape[0]
    if group < 1 or c % group or m % group or w.shape[1] * group != c:
        raise ctx.error(f"channels: input {c}, weight {w.shape}, group {group} do not fit")
    if b is not None and b.shape != (m,):
        raise ctx.error(f"bias shape {b.shape} is not ({m},)")
    outs = tuple(_out_size(size, kernel[i], strides[i], dilations[i], begin[i], end[i], False)
                 for i, size in enumerate((h, wd)))
    if min(outs) < 1:
        raise ctx.error(f"input of spatial size {(h, wd)} is smaller than the window")
    ctx.check_size((n, m) + outs)
    product, block = "", 0
    if group == 1 and kernel == [1, 1] and not any(begin) and not any(end):
        kind = "pointwise"   # a 1x1 window: dilation is irrelevant, stride a subsampling
    elif group == 1:
        kind = "im2col"
    else:
        kind = "depthwise" if c == group and m == group else "grouped"
    if kind != "pointwise":
        ctx.check_size((n, h + begin[0] + end[0], wd + begin[1] + end[1], c), "padded input")
        ctx.check_size((n, outs[0], outs[1], kernel[0], kernel[1], c), "window buffer")
    if kind in ("pointwise", "im2col") and outs[0] * outs[1] <= _NATIVE_POSITIONS:
        product, block = "native", _NATIVE_BLOCK
        depth = kernel[0] * kernel[1] * c
        ctx.check_size((-(-m // block) * block, depth), "packed weight")
        ctx.check_size((depth, outs[0] * outs[1]), "columns")
    elif kind in ("pointwise", "im2col") and _packed_conv(n * outs[0] * outs[1], kernel[0] * kernel[1] * c, m):
        product, block = "packed", 0
        ctx.check_size((-(-m // native.load("gemm").PANEL), kernel[0] * kernel[1] * c, native.load("gemm").PANEL),
                       "packed weight")
    elif kind in ("pointwise", "im2col"):
        product, block = _conv_product(n * outs[0] * outs[1], kernel[0] * kernel[1] * c, m)
        if block:
            ctx.check_size((-(-m // block) * block, kernel[0] * kernel[1] * c), "blocked weight")
    native_sizes = ()
    if product == "native":
        native_sizes = ((n, m) + outs, (x.shape, (m, kernel[0], kernel[1]), tuple(strides), tuple(dilations), tuple(begin),
                                  outs))
    return _ConvPlan(kind, outs, tuple(strides), tuple(dilations), tuple(begin), tuple(end), group,
                     product, block, native_sizes)


def _conv_weight(ctx: _Ctx, w: np.ndarray, product: str, block: int) -> np.ndarray:
    """The weight [m, c, kh, kw] laid out for ``product``, depth ordered as :func:`_conv_columns`
    orders a window (kh, kw, c): W^T [depth, m] ("columns"), [blocks, depth, block] ("channel
    blocks") or [blocks, block, depth] ("weight rows"), the last block padded with zero channels;
    for floor.c's kernel [blocks, depth, block] ("native": a tap's rows contiguous, which its
    tap-by-tap product reads); a depthwise weight [m, 1, kh, kw] as [kh, kw, m] ("depthwise").
    Kept per node and layout, by identity of ``w`` (a parameter: the same array on every call)."""
    key = ("conv weight", product, block)
    cached = ctx.memo.get(key)
    if cached is not None and cached[0] is w:
        return cached[1]
    m = w.shape[0]
    rows = w.transpose(0, 2, 3, 1).reshape(m, -1)            # [m, depth] (a view for depthwise)
    if product == "packed":
        gemm = native.load("gemm")
        prepared = np.empty(-(-m // gemm.PANEL) * gemm.PANEL * rows.shape[1], F32)
        gemm.pack(np.ascontiguousarray(rows), rows.shape[1], m, True, prepared)   # W^T [depth, m] in panels
    elif product == "depthwise":
        prepared = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
    elif product == "columns":
        prepared = np.ascontiguousarray(rows.T)
    else:
        blocks = -(-m // block)
        padded = np.zeros((blocks * block, rows.shape[1]), F32)
        padded[:m] = rows
        padded = padded.reshape(blocks, block, -1)
        prepared = np.ascontiguousarray(padded.transpose(0, 2, 1) if product in ("channel blocks", "native")
                                        else padded)
    ctx.memo[key] = (w, prepared)
    return prepared


def _conv_windows(plan: _ConvPlan, x: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """[n, oh, ow, kh, kw, c]: a read-only view of the windows over a zero-padded channels-last
    copy of ``x``."""
    n, c, h, w = x.shape
    (b0, b1), (e0, e1) = plan.begin, plan.end
    if b0 or b1 or e0 or e1:
        # a zero-filled buffer and one slice assignment: np.pad's general machinery costs tens of us
        padded = np.zeros((n, h + b0 + e0, w + b1 + e1, c), F32)
        padded[:, b0:b0 + h, b1:b1 + w] = x.transpose(0, 2, 3, 1)
    else:
        padded = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    sn, sh, sw, sc = padded.strides
    (oh, ow), (s0, s1), (d0, d1) = plan.out, plan.strides, plan.dilations
    return _strided_view(padded, (n, oh, ow, kernel[0], kernel[1], c), (sn, sh * s0, sw * s1, sh * d0, sw * d1, sc))


def _conv_columns(plan: _ConvPlan, x: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """[n*oh*ow, kh*kw*c]: one row per output position, its window channels-last."""
    n, c = x.shape[:2]
    if plan.kind == "pointwise":
        s0, s1 = plan.strides
        xs = x if s0 == s1 == 1 else x[:, :, ::s0, ::s1]
        return np.ascontiguousarray(xs.transpose(0, 2, 3, 1)).reshape(-1, c)
    oh, ow = plan.out
    return np.ascontiguousarray(_conv_windows(plan, x, kernel)).reshape(n * oh * ow, kernel[0] * kernel[1] * c)


@operator("Conv", attrs=("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"), inputs=(2, 3))
def _conv(ctx: _Ctx, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    x = ctx.float_input(x, "X")
    w = ctx.float_input(w, "W")
    if b is not None:
        b = ctx.float_input(b, "B")
    plan = _memoised(ctx, ("conv", x.shape, w.shape, None if b is None else b.shape),
                     lambda: _conv_plan(ctx, x, w, b))
    n = x.shape[0]
    m = w.shape[0]
    oh, ow = plan.out
    if plan.native:
        # few positions: gather and product in one C call, NCHW out (see the comment above _SMALL_GEMM_MACS)
        shape, sizes = plan.native
        y = np.empty(shape, F32)
        native.load("floor").conv(np.ascontiguousarray(x), _conv_weight(ctx, w, "native", plan.block),
                                  None if b is None else np.ascontiguousarray(b), y, *sizes)
        return y
    if (plan.kind == "pointwise" and plan.product == "columns" and plan.strides == (1, 1)
            and n * oh * ow > _FEW_COLUMNS and x.flags.c_contiguous):
        # many positions of an NCHW input: W [m, c] @ x [n, c, h*w] reads x in place (the columns
        # would be its transposed copy; the product itself measured the same either way)
        y = np.matmul(w.reshape(m, -1), x.reshape(n, x.shape[1], -1))
        if b is not None:
            y += b[:, None]         # y is a fresh array here
        return y.reshape(n, m, oh, ow)
    if (plan.kind == "pointwise" and plan.product == "columns" and plan.strides == (1, 1)
            and n == 1 and oh * ow > _FEW_COLUMNS and x.transpose(0, 2, 3, 1).flags.c_contiguous):
        # the same for an input laid out channels-last (the previous conv's columns, or an
        # element-wise op on them): W [m, c] @ its columns^T gives NCHW itself, which the next
        # element-wise ops and a Flatten read contiguously (SFace's 1024->1024 on 7x7: the
        # product 1154 -> 1005 us, and its head's Flatten no longer copies 50k values)
        y = np.matmul(w.reshape(m, -1), x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1]).T)
        if b is not None:
            y += b[:, None]         # y is a fresh array here
        return y.reshape(n, m, oh, ow)
    if plan.product == "packed":
        cols = _conv_columns(plan, x, (w.shape[2], w.shape[3]))
        y = np.empty((cols.shape[0], m), F32)
        native.load("gemm").matmul(cols, _conv_weight(ctx, w, "packed", 0), cols.shape[0], cols.shape[1], m,
                                   None if b is None else np.ascontiguousarray(b), y)
        return y.reshape(n, oh, ow, m).transpose(0, 3, 1, 2)
    if plan.kind in ("pointwise", "im2col"):
        if (plan.kind == "pointwise" and plan.product == "columns" and plan.strides == (1, 1) and n == 1
                and oh * ow * m <= _SMALL_GEMM_TRANSPOSED and x.flags.c_contiguous):
            # few positions of an NCHW input (a 4x4 map of few channels): the columns as the transposed
            # view of x, which OpenBLAS's small kernel reads in place for a result this small
            # (the channels-last copy was 1.7 us of a 512->100 conv's 11)
            cols = x.reshape(x.shape[1], -1).T
        else:
            cols = _conv_columns(plan, x, (w.shape[2], w.shape[3]))
        wl = _conv_weight(ctx, w, plan.product, plan.block)
        if plan.product == "weight rows":
            # [blocks, block, depth] @ [depth, cols] -> [m, cols]: NCHW (batch-major after a transpose)
            y = np.matmul(wl, cols.T).reshape(-1, cols.shape[0])[:m]
            if b is not None:
                y += b[:, None]     # y is a fresh array here
            return y.reshape(m, n, oh, ow).transpose(1, 0, 2, 3)
        if plan.product == "channel blocks":
            # [blocks, cols, block] -> [cols, blocks*block], the padding channels dropped
            y = np.matmul(cols, wl).transpose(1, 0, 2).reshape(cols.shape[0], -1)[:, :m]
        else:
            y = np.dot(cols, wl)
        if b is not None:
            y += b                  # y is a fresh array here
        return y.reshape(n, oh, ow, m).transpose(0, 3, 1, 2)
    if plan.kind == "depthwise":
        # a multiply-add over the window per channel, channels-last so that einsum's inner loop
        # runs over the channels (contiguous, many) rather than a few window positions: on SFace's
        # 1024-channel 7x7 map the einsum measured 1.9 ms over NCHW windows, 0.1 ms over these
        y = np.einsum("nhwijc,ijc->nhwc", _conv_windows(plan, x, (w.shape[2], w.shape[3])),
                      _conv_weight(ctx, w, "depthwise", 0))
        if b is not None:
            y += b                  # y is a fresh array here
        return y.transpose(0, 3, 1, 2)
    # grouped: one batched matmul over the groups, (G, Mg, Cg*KK) @ (G, Cg*KK, N*OH*OW); every
    # operand C-contiguous (numpy's stacked matmul leaves BLAS for a strided one)
    kh, kw = w.shape[2:]
    group = plan.group
    c = x.shape[1]
    cg, mg, kk, ohw = c // group, m // group, kh * kw, oh * ow
    cols = _conv_windows(plan, x, (kh, kw)).reshape(n, oh, ow, kh, kw, group, cg)
    cols = np.ascontiguousarray(cols.transpose(5, 6, 3, 4, 0, 1, 2).reshape(group, cg * kk, n * ohw))
    y = np.matmul(w.reshape(group, mg, cg * kk), cols).reshape(group, mg, n, ohw).transpose(2, 0, 1, 3)
    y = y.reshape(n, m, oh, ow)
    if b is not None:
        y += b.reshape(1, m, 1, 1)   # y is always a fresh array here
    return y.astype(F32, copy=False)


def _pool_kernel(ctx: _Ctx) -> list[int]:
    kernel = ctx.attr_ints("kernel_shape", None)
    if kernel is None:
        raise ctx.error("attribute kernel_shape is required")
    return kernel


@operator("MaxPool", attrs=("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"))
def _maxpool(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "X")
    kernel = _pool_kernel(ctx)
    strides, dilations, begin, end = _spatial_params(ctx, x, kernel)
    if ctx.attr_int("storage_order", 0) != 0:
        raise ctx.unsupported("storage_order other than 0 is not supported")
    ceil_mode = ctx.attr_int("ceil_mode", 0)
    if ceil_mode not in (0, 1):
        raise ctx.unsupported(f"ceil_mode {ceil_mode} must be 0 or 1")
    view, _, _ = _windows(ctx, x, kernel, strides, dilations, begin, end, bool(ceil_mode), -np.inf)
    return view.max(axis=(3, 4)).transpose(0, 3, 1, 2)


@operator("AveragePool", attrs={"auto_pad": None, "ceil_mode": None, "count_include_pad": None,
                                "dilations": (19, MAX_OPSET), "kernel_shape": None, "pads": None, "strides": None})
def _avgpool(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "X")
    kernel = _pool_kernel(ctx)
    strides, dilations, begin, end = _spatial_params(ctx, x, kernel)
    ceil_mode = ctx.attr_int("ceil_mode", 0)
    include = ctx.attr_int("count_include_pad", 0)
    if ceil_mode not in (0, 1) or include not in (0, 1):
        raise ctx.unsupported("ceil_mode and count_include_pad must be 0 or 1")
    view, outs, extra = _windows(ctx, x, kernel, strides, dilations, begin, end, bool(ceil_mode), 0.0)
    total = view.sum(axis=(3, 4), dtype=F32)                  # [n, oh, ow, c]
    # divisor: elements of the window inside the input (count_include_pad=0) or inside input +
    # explicit pads (count_include_pad=1); ceil-mode overhang is never counted.
    h, w = x.shape[2:]
    mask = np.zeros((h + begin[0] + end[0] + extra[0], w + begin[1] + end[1] + extra[1]), dtype=F32)
    if include:
        mask[:h + begin[0] + end[0], :w + begin[1] + end[1]] = 1.0
    else:
        mask[begin[0]:begin[0] + h, begin[1]:begin[1] + w] = 1.0
    s = mask.strides
    mview = _strided_view(mask, (outs[0], outs[1], kernel[0], kernel[1]),
                          (s[0] * strides[0], s[1] * strides[1], s[0] * dilations[0], s[1] * dilations[1]))
    count = mview.sum(axis=(2, 3))
    if np.any(count == 0):
        raise ctx.error("a pooling window covers no input element")
    total /= count[:, :, None]
    return total.transpose(0, 3, 1, 2)


@operator("GlobalAveragePool")
def _global_avgpool(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "X")
    rows, size, out = _memoised(ctx, x.shape, lambda: _check_spatial(ctx, x) and _spatial_layout(x.shape))
    return _spatial_mean(x, rows, size, out)


def _spatial_mean(x: np.ndarray, rows: int, size: int, out: tuple[int, ...]) -> np.ndarray:
    """The mean over every axis after the first two, kept as size-1 axes (``rows``, ``size`` and
    ``out`` from :func:`_spatial_layout`), one C loop over the rows (floor.c's ``row_means``):
    numpy's reductions over a few innermost elements cost 5-20 us on the heads' 2x2 maps, a gemv
    against [1/size]*size 3-5 us of dispatch, the loop about 1 us."""
    y = np.empty(out, F32)
    if rows:
        native.load("floor").row_means(np.ascontiguousarray(x), y, rows, size)
    return y


def _spatial_layout(shape: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """For :func:`_spatial_mean`: the rows (N*C), their size (the spatial extent), the output shape."""
    return shape[0] * shape[1], math.prod(shape[2:]), shape[:2] + (1,) * (len(shape) - 2)


def _mean(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """ReduceMean. Over every spatial axis of an NCHW-like tensor (what torch's dynamo exporter
    writes for adaptive average pooling) it is GlobalAveragePool's loop."""
    if x.ndim >= 3 and axes == tuple(range(2, x.ndim)) and x.size:
        y = _spatial_mean(x, *_spatial_layout(x.shape))
        return y if keepdims else y.reshape(x.shape[:2])
    return _MEAN(x, axes, keepdims)   # short trailing means as a matrix-vector product too


def _check_spatial(ctx: _Ctx, x: np.ndarray) -> bool:
    if x.ndim < 3:
        raise ctx.error(f"input rank {x.ndim} has no spatial dimensions")
    if math.prod(x.shape[2:]) == 0:
        raise ctx.error(f"input of shape {x.shape} has an empty spatial extent")
    return True


@operator("BatchNormalization", attrs={"epsilon": None, "momentum": None, "training_mode": (14, MAX_OPSET)},
          inputs=(5, 5))
def _batchnorm(ctx: _Ctx, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
               var: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "X")
    # scale, B, mean and var are parameters almost always (the same arrays on every call): the
    # checks and the folded 1 / sqrt(var + eps) once per rank and channel count of X and per
    # set of those arrays (held here, so none of them can be replaced by another at its address)
    factor, offset = _batchnorm_affine(ctx, x, scale, bias, mean, var)
    y = np.multiply(x, factor)
    y += offset
    return y


def _batchnorm_affine(ctx: _Ctx, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                      var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization as y = x * factor + offset (factor = scale / sqrt(var + eps), offset =
    B - mean * factor: two passes over X instead of three, as onnxruntime folds it), checked and
    folded once per rank and channel count of X and per set of parameter arrays."""
    cached = ctx.memo.get("folded")
    if cached is None or cached[0] != x.shape[1:2] or cached[1] != x.ndim or cached[2] is not scale or \
            cached[3] is not bias or cached[4] is not mean or cached[5] is not var:
        cached = ctx.memo["folded"] = (x.shape[1:2], x.ndim, scale, bias, mean, var,
                                       *_batchnorm_folded(ctx, x, scale, bias, mean, var))
    return cached[6], cached[7]


def _batchnorm_folded(ctx: _Ctx, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                      var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """factor and offset (see :func:`_batchnorm_affine`), shaped to broadcast over X, after the checks."""
    if ctx.attr_int("training_mode", 0) != 0:
        raise ctx.unsupported("training_mode=1 is not supported (inference only)")
    eps = ctx.attr_float("epsilon", 1e-5)
    ctx.attr_float("momentum", 0.9)  # inference ignores it; validated only
    if x.ndim < 2:
        raise ctx.error(f"input rank {x.ndim} < 2")
    c = x.shape[1]
    for nm, p in (("scale", scale), ("B", bias), ("mean", mean), ("var", var)):
        ctx.float_input(p, nm)
        if p.shape != (c,):
            raise ctx.error(f"{nm} has shape {p.shape}, expected ({c},)")
    shape = (1, c) + (1,) * (x.ndim - 2)
    factor = (scale / np.sqrt(var + F32.type(eps))).astype(F32)
    offset = (bias - mean * factor).astype(F32)
    return factor.reshape(shape), offset.reshape(shape)


@operator("Add", inputs=(2, 2))
def _add(ctx: _Ctx, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = ctx.float_input(a, "A")
    b = ctx.float_input(b, "B")
    _memoised(ctx, (a.shape, b.shape), lambda: _broadcast(ctx, a, b) or True)
    return np.add(a, b, dtype=F32)


@operator("Concat", attrs=("axis",), inputs=(1, 1 << 16))
def _concat(ctx: _Ctx, *xs: np.ndarray) -> np.ndarray:
    for i, x in enumerate(xs):     # dtypes on every call, the rest once per input shapes
        if x is None or x.dtype != F32:
            ctx.float_input(x, f"{i}")
    return np.concatenate(xs, axis=_memoised(ctx, tuple([x.shape for x in xs]), lambda: _concat_axis(ctx, xs)))


def _concat_axis(ctx: _Ctx, xs: tuple[np.ndarray, ...]) -> int:
    if "axis" not in ctx.node.attrs:
        raise ctx.error("attribute axis is required")
    axis = ctx.attr_int("axis", 0)
    rank = xs[0].ndim
    if not -rank <= axis < rank:
        raise ctx.error(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    for x in xs:
        if x.ndim != rank or x.shape[:axis] + x.shape[axis + 1:] != xs[0].shape[:axis] + xs[0].shape[axis + 1:]:
            raise ctx.error(f"input shapes {[x.shape for x in xs]} differ outside axis {axis}")
    return axis


@operator("Flatten", attrs=("axis",))
def _flatten(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "input")
    axis = ctx.attr_int("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise ctx.error(f"axis {axis} out of range for rank {x.ndim}")
    if axis < 0:
        axis += x.ndim
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@operator("Reshape", attrs={"allowzero": (14, MAX_OPSET)}, inputs=(2, 2), const_inputs={1: "int64"})
def _reshape(ctx: _Ctx, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "data")
    # the shape input is a parameter (const_inputs), so the target depends on x's shape alone
    return x.reshape(_memoised(ctx, x.shape, lambda: _reshape_target(ctx, x, shape)))


def _reshape_target(ctx: _Ctx, x: np.ndarray, shape: np.ndarray) -> tuple[int, ...]:
    if shape is None or shape.dtype != I64 or shape.ndim != 1:
        raise ctx.error("shape must be a 1-D int64 tensor")
    allowzero = ctx.attr_int("allowzero", 0)
    if allowzero not in (0, 1):
        raise ctx.unsupported(f"allowzero {allowzero} must be 0 or 1")
    dims = [int(d) for d in shape]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise ctx.error(f"shape {dims} has more than one -1 or a negative dimension")
    if allowzero and 0 in dims and -1 in dims:
        raise ctx.error("allowzero=1 with both 0 and -1 in the shape is invalid")
    out = []
    for i, d in enumerate(dims):
        if d == 0 and not allowzero:
            if i >= x.ndim:
                raise ctx.error(f"shape {dims}: dimension {i} copies a dimension the input lacks")
            out.append(x.shape[i])
        else:
            out.append(d)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or x.size % known:
            raise ctx.error(f"cannot reshape {x.shape} into {dims}")
        out[out.index(-1)] = x.size // known
    if math.prod(out) != x.size:
        raise ctx.error(f"cannot reshape {x.shape} into {dims}")
    return tuple(out)


@operator("Gemm", attrs=("alpha", "beta", "transA", "transB"), inputs=(2, 3))
def _gemm(ctx: _Ctx, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    a = ctx.float_input(a, "A")
    b = ctx.float_input(b, "B")
    attrs = ctx.memo.get("attrs")
    if attrs is None:   # attributes are constant per node: parsed and checked on the first call
        attrs = (ctx.attr_float("alpha", 1.0), ctx.attr_float("beta", 1.0),
                 ctx.attr_int("transA", 0), ctx.attr_int("transB", 0))
        if attrs[2] not in (0, 1) or attrs[3] not in (0, 1):
            raise ctx.unsupported("transA/transB must be 0 or 1")
        ctx.memo["attrs"] = attrs
    alpha, beta, ta, tb = attrs
    if c is not None:
        c = ctx.float_input(c, "C")
    # the shape checks once per shape of A, B and C (B and C are parameters almost always)
    _memoised(ctx, (a.shape, b.shape, None if c is None else c.shape), lambda: _gemm_shapes(ctx, a, b, c, ta, tb))
    a2 = a.T if ta else a
    if 1 in ctx.parameters and _packed_fits(a2.shape[0], a2.shape[1], b.size):
        # the weight packed once (enclave/csrc/gemm.c), a bias row added in the kernel's store
        n = b.shape[0] if tb else b.shape[1]
        fused = alpha == 1.0 and beta == 1.0 and c is not None and c.shape in ((n,), (1, n))
        y = _packed_product(ctx, a2, b, tb, c.reshape(n) if fused else None)
        if fused:
            return y
    elif tb and a2.shape[0] == 1:
        # one row (a head at batch 1) against a weight stored [N, K] the kernel does not take: a gemv
        # on the weight as it is stored, each output one contiguous row; measured with the caches cold (as between
        # the enclave's requests) 15 -> 6 us on a 100x512 classifier, 1.5-1.7 -> 1.0 ms on SFace's
        # 128x50176 embedding, against the product by the transposed copy
        y = np.dot(b, a2[0]).reshape(1, -1)
    elif tb:
        # a B that is not a parameter, or too many rows for the packed kernel: transposed into a
        # contiguous copy once per array, since BLAS on the transposed view of a (N, K) @ (K, M)
        # with N > 1 measured 2.5-3.5x slower than on the contiguous copy
        cached = ctx.memo.get("B")
        if cached is not None and cached[0] is b:
            b2 = cached[1]
        else:
            b2 = np.ascontiguousarray(b.T)
            ctx.memo["B"] = (b, b2)
        y = np.matmul(a2, b2)
    else:
        y = np.matmul(a2, b)
    if alpha != 1.0:
        y *= F32.type(alpha)
    if c is not None:
        y += c * F32.type(beta) if beta != 1.0 else c
    return y.astype(F32, copy=False)


def _gemm_shapes(ctx: _Ctx, a: np.ndarray, b: np.ndarray, c: np.ndarray | None, ta: int, tb: int) -> bool:
    if a.ndim != 2 or b.ndim != 2:
        raise ctx.error(f"A and B must be 2-D, got {a.shape} and {b.shape}")
    rows, inner = a.shape[::-1] if ta else a.shape
    inner_b, cols = b.shape[::-1] if tb else b.shape
    if inner != inner_b:
        raise ctx.error(f"inner dimensions differ: {(rows, inner)} x {(inner_b, cols)}")
    ctx.check_size((rows, cols))
    if c is not None:
        try:
            if _broadcast_shape(c.shape, (rows, cols)) != (rows, cols):
                raise ValueError
        except ValueError:
            raise ctx.error(f"C of shape {c.shape} does not broadcast to {(rows, cols)}") from None
    return True


@operator("MatMul", inputs=(2, 2))
def _matmul(ctx: _Ctx, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = ctx.float_input(a, "A")
    b = ctx.float_input(b, "B")
    # the shape checks once per pair of shapes (b is a weight, a's shape follows the batch)
    _memoised(ctx, (a.shape, b.shape), lambda: _matmul_shapes(ctx, a, b))
    if b.ndim == 2 and 1 in ctx.parameters and _packed_fits(a.size // max(a.shape[-1], 1), a.shape[-1], b.size):
        # (..., K) @ (K, N) by a weight: one call of the packed kernel over all the leading rows
        a2 = a.reshape(-1, a.shape[-1]) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1, a.shape[-1])
        return _packed_product(ctx, a2, b, False, None).reshape(a.shape[:-1] + b.shape[1:])
    if _on_batched_kernel(ctx, a.shape, b.shape):
        # small products of two computed operands (attention's per-head scores and mix; a parameter
        # B that the packed kernel does not take stays numpy's): one call of the kernel for every
        # leading index, each B packed inside the call
        out = np.empty(a.shape[:-1] + b.shape[-1:], F32)
        m, (k, n) = a.shape[-2], b.shape[-2:]
        native.load("gemm").batched(np.ascontiguousarray(a), np.ascontiguousarray(b), out, math.prod(a.shape[:-2]),
                                    m, k, n)
        return out
    if a.ndim > 2 and b.ndim == 2:
        # (..., K) @ (K, N): one 2-D BLAS call over all the leading rows, not numpy's stacked loop
        # of one small product per leading index (ViT's (17, 1, 64) @ (64, 192): 17)
        a = np.ascontiguousarray(a)
        return np.matmul(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[1:])
    if a.ndim > 2 or b.ndim > 2:   # stacked matmul stays on BLAS only with contiguous operands
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return np.matmul(a, b).astype(F32, copy=False)


#: the packed kernel (enclave/csrc/gemm.c) is used up to this many rows of A and this many
#: weights (the packed panels within a core's L2), and at one row only up to this inner size (a
#: row's sums are one chain of FMAs per 16 columns, latency-bound). Alone against numpy's OpenBLAS
#: on one thread (16:10-16:28 UTC, load 4-7): 0.3-0.5x its time at 17 rows (ViT's 17 x 64 @ 64 x
#: 192 7.4 against 13.9 us), 0.9-1.0x at 68-256 rows, on par at 512, 1.26x at PP-OCRv4's 40 x 120
#: @ 120 x 6625 (3.2 MB of panels); at one row 0.5x numpy's gemv at K = 64, 1.2x at K = 512.
#: With AVX-512 tiles (an Intel Sapphire Rapids, 2026-12-03 11:40 UTC, load 0.7) 0.58-0.95x numpy's
#: time from 17 to 128 rows and up to 1 M weights (PP-OCRv4's 0.90x, 1 x 2048 @ 2048 x 512 0.95x):
#: the weight limit is then _PACKED_MAX_WEIGHTS_AVX512
_PACKED_MAX_ROWS = 128
_PACKED_MAX_WEIGHTS = 1 << 17
_PACKED_MAX_WEIGHTS_AVX512 = 1 << 20
_PACKED_MAX_ONE_ROW_INNER = 128


#: the batched kernel packs each B inside the call: up to this many elements of one B (numpy
#: 5.2-5.7 us, the kernel 2.3-3.2 on attention's 4 x (17 x 16 @ 16 x 17) and 4 x (17 x 17 @ 17 x 16)
#: at 16:16 UTC, load 2.3-2.9; on par at 8 x (17 x 64 @ 64 x 17) and 12 x (197 x 64 @ 64 x 197))
_BATCHED_MAX_WEIGHTS = 1 << 14


@functools.cache
def _packed_max_weights() -> int:
    """The largest weight (elements) the packed kernel takes on this machine's build."""
    return _PACKED_MAX_WEIGHTS_AVX512 if native.load("gemm").AVX512 else _PACKED_MAX_WEIGHTS


def _packed_fits(rows: int, inner: int, weights: int) -> bool:
    return 0 < rows <= _PACKED_MAX_ROWS and weights <= _packed_max_weights() and \
        (rows > 1 or inner <= _PACKED_MAX_ONE_ROW_INNER)


def _on_batched_kernel(ctx: _Ctx, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> bool:
    """A MatMul node of these operand shapes runs on the batched kernel: two computed operands of
    the same leading shape (a parameter B the packed kernel does not take stays numpy's), small
    enough. The one test, for :func:`_matmul` and for the chains that recognise its calls."""
    if len(a_shape) < 2 or len(b_shape) < 2 or a_shape[:-2] != b_shape[:-2] or 1 in ctx.parameters:
        return False
    rows, (k, n) = a_shape[-2], b_shape[-2:]
    return 0 < rows <= _PACKED_MAX_ROWS and 0 < k * n <= _BATCHED_MAX_WEIGHTS and \
        (rows > 1 or k <= _PACKED_MAX_ONE_ROW_INNER)


def _packed_product(ctx: _Ctx, a: np.ndarray, b: np.ndarray, transposed: int,
                    bias: np.ndarray | None) -> np.ndarray:
    """``a @ b`` (``a @ b.T`` if transposed), plus a bias row if given, for a 2-D ``a`` and a
    weight ``b`` (a parameter: the same array on every call), in one call of the packed kernel.
    The weight is laid out in the kernel's panels once per node (kept by identity)."""
    gemm = native.load("gemm")
    k, n = b.shape[::-1] if transposed else b.shape
    cached = ctx.memo.get("packed")
    if cached is not None and cached[0] is b:
        packed = cached[1]
    else:
        packed = np.empty(-(-n // gemm.PANEL) * gemm.PANEL * k, F32)
        gemm.pack(np.ascontiguousarray(b), k, n, transposed, packed)
        ctx.memo["packed"] = (b, packed)
    out = np.empty((a.shape[0], n), F32)
    gemm.matmul(np.ascontiguousarray(a), packed, a.shape[0], k, n, bias, out)
    return out


def _matmul_shapes(ctx: _Ctx, a: np.ndarray, b: np.ndarray) -> bool:
    if a.ndim == 0 or b.ndim == 0:
        raise ctx.error("MatMul operands must have rank >= 1")
    try:
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim >= 2 else b.shape[0]
        if ka != kb:
            raise ValueError
        batch = _broadcast_shape(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ctx.error(f"shapes {a.shape} and {b.shape} do not multiply") from None
    ctx.check_size(tuple(batch) + (a.shape[-2] if a.ndim >= 2 else 1, b.shape[-1] if b.ndim >= 2 else 1))
    return True


def _softmax_along(x: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax of float32 ``x`` along ``axis``, into ``out`` if given (which may be ``x``).

    One call of the C kernel (``enclave/csrc/vit.c``) over ``x`` as [outer, n, inner]: in numpy it
    was five calls (max, subtract, exp, sum, divide), 10-20 us on a ViT attention's 4 x 17 x 17
    where the kernel takes 2-3 (one pass for the maxima, one for exp and the sums, one scaling)."""
    shape = x.shape
    src = np.ascontiguousarray(x)
    dst = out if out is not None and out.flags.c_contiguous else np.empty(shape, F32)
    native.load("vit").softmax(src, dst, math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
    if out is not None and dst is not out:
        out[...] = dst
        return out
    return dst


def _log_softmax_along(x: np.ndarray, axis: int) -> np.ndarray:
    """(x - max) - log(sum(exp(x - max))) along ``axis``, in C (rnn.c's log_softmax, one pass per
    row: numpy's seven calls cost a CRNN head 13-20 us); another axis than the last is moved last
    and back (a copy in, a view out)."""
    last = axis == x.ndim - 1
    rows = np.ascontiguousarray(x if last else np.moveaxis(x, axis, -1))
    out = np.empty(rows.shape, F32)
    n = rows.shape[-1] if rows.ndim else 1
    if out.size:
        native.load("rnn").log_softmax(rows, out.size // n, n, out)
    return out if last else np.moveaxis(out, -1, axis)


def _softmax_axis(ctx: _Ctx, x: np.ndarray) -> int:
    axis = ctx.attr_int("axis", -1 if ctx.opset >= 13 else 1)
    if not -x.ndim <= axis < max(x.ndim, 1):
        raise ctx.error(f"axis {axis} out of range for rank {x.ndim}")
    return axis % x.ndim


def _softmax_family(along: Callable[[np.ndarray, int], np.ndarray]) -> Callable[..., np.ndarray]:
    def op(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
        x = ctx.float_input(x, "input")
        axis = _memoised(ctx, x.ndim, lambda: _softmax_axis(ctx, x))
        if ctx.opset >= 13:
            return along(x, axis)
        # opset < 13: coerce to 2-D at axis, normalise over the second dimension
        flat = x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        return along(flat, 1).reshape(x.shape)
    return op


operator("Softmax", attrs=("axis",))(_softmax_family(_softmax_along))
# CRNN / CTC heads end in log-probabilities
operator("LogSoftmax", attrs=("axis",))(_softmax_family(_log_softmax_along))


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    def op(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
        return fn(ctx.float_input(x, "X")).astype(F32, copy=False)
    return op


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-x)) in one C pass (rnn.c): a few ulp in both tails
    x = np.ascontiguousarray(x, dtype=F32)
    y = np.empty_like(x)
    native.load("rnn").sigmoid(x, y)
    return y


@operator("Clip", inputs=(1, 3))
def _clip(ctx: _Ctx, x: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> np.ndarray:
    x = ctx.float_input(x, "input")
    for nm, v in (("min", lo), ("max", hi)):
        if v is not None:
            ctx.float_input(v, nm)
            if v.size != 1 or v.ndim > 1:
                raise ctx.error(f"{nm} must be a scalar, got shape {v.shape}")
    y = x
    if lo is not None:
        y = np.maximum(y, lo.reshape(()))
    if hi is not None:
        y = np.minimum(y, hi.reshape(()))
    return y.astype(F32, copy=False)


@operator("Identity")
def _identity(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
    return ctx.float_input(x, "input")


@operator("Dropout", attrs={"ratio": (MIN_OPSET, 11), "seed": (12, MAX_OPSET)}, inputs=(1, 3), outputs=(1, 2),
          inputs_by_opset=((12, (1, 1)),))
def _dropout(ctx: _Ctx, x: np.ndarray, ratio: np.ndarray | None = None,
             training: np.ndarray | None = None) -> np.ndarray:
    x = ctx.float_input(x, "data")
    if training is not None and (training.size != 1 or bool(training.reshape(())) is not False):
        raise ctx.unsupported("training_mode must be a constant false (inference only)")
    if len([o for o in ctx.node.outputs if o]) > 1:
        raise ctx.unsupported("the mask output is not supported (inference only)")
    return x


operator("Relu")(_unary(lambda x: np.maximum(x, F32.type(0))))
operator("Sigmoid")(_unary(_sigmoid))
operator("Tanh")(_unary(np.tanh))


# --- element-wise, shape and normalisation operators -------------------------------------------

def _broadcast(ctx: _Ctx, a: np.ndarray, b: np.ndarray) -> None:
    try:
        shape = _broadcast_shape(a.shape, b.shape)
    except ValueError:
        raise ctx.error(f"shapes {a.shape} and {b.shape} do not broadcast") from None
    ctx.check_size(shape)


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    def op(ctx: _Ctx, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = ctx.float_input(a, "A"), ctx.float_input(b, "B")
        _memoised(ctx, (a.shape, b.shape), lambda: _broadcast(ctx, a, b) or True)
        return fn(a, b).astype(F32, copy=False)
    return op


operator("Mul", inputs=(2, 2))(_binary(np.multiply))
operator("Sub", inputs=(2, 2))(_binary(np.subtract))
operator("Div", inputs=(2, 2))(_binary(np.divide))
operator("Pow", inputs=(2, 2))(_binary(np.power))
operator("Sqrt")(_unary(np.sqrt))
operator("Exp")(_unary(np.exp))
operator("Neg")(_unary(np.negative))
operator("Abs")(_unary(np.abs))


@operator("PRelu", inputs=(2, 2))
def _prelu(ctx: _Ctx, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    x, slope = ctx.float_input(x, "X"), ctx.float_input(slope, "slope")
    _memoised(ctx, (x.shape, slope.shape), lambda: _prelu_shapes(ctx, x, slope))
    # slope is a parameter almost always (the same array on every call): whether every slope is
    # finite, non-zero and at most 1, checked once per array (held here, so none can replace it
    # at its address)
    cached = ctx.memo.get("slope")
    if cached is None or cached[0] is not slope:
        bounded = bool(np.all(np.isfinite(slope)) and np.all(slope <= 1) and np.all(slope != 0))
        cached = ctx.memo["slope"] = (slope, bounded)
    if cached[1]:
        # with every slope s <= 1, max(s x, x) is x for x >= 0 and s x for x < 0, exactly (each
        # is one of the two operands, not a new rounding; s != 0 so that an infinite x never
        # makes the NaN of inf * 0): two passes, against np.where's mask, two temporaries and a
        # branch per element (130 us against 20 on SFace's 1024x7x7)
        y = np.multiply(x, slope)
        return np.maximum(y, x, out=y)
    return np.where(x < 0, x * slope, x).astype(F32, copy=False)


def _prelu_shapes(ctx: _Ctx, x: np.ndarray, slope: np.ndarray) -> bool:
    try:
        if _broadcast_shape(x.shape, slope.shape) != x.shape:
            raise ValueError
    except ValueError:
        raise ctx.error(f"slope of shape {slope.shape} does not broadcast to X {x.shape}") from None
    return True


def _erf(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """erf of float32 ``x``, into ``out`` if given (which may be ``x``).

    Abramowitz & Stegun 7.1.26 in float32, one call of the C kernel (``enclave/csrc/vit.c``):
    absolute error below 1.5e-7 from the formula plus float32 rounding (5e-7 measured), within
    the op tests' tolerance against onnxruntime. In numpy it was 19 calls (Horner's rule in two
    temporaries), 14-35 us on a ViT MLP's 17 x 128, against 3 here.
    """
    src = np.ascontiguousarray(x)
    dst = out if out is not None and out.flags.c_contiguous else np.empty(x.shape, F32)
    native.load("vit").erf(src, dst, src.size)
    if out is not None and dst is not out:
        out[...] = dst
        return out
    return dst


operator("Erf")(_unary(_erf))


@operator("Gelu", attrs=("approximate",), opsets=(20, MAX_OPSET))
def _gelu(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "X")
    mode = ctx.attr_str("approximate", "none")
    if mode == "none":
        y = 0.5 * x * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))
    elif mode == "tanh":
        y = 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))))
    else:
        raise ctx.unsupported(f"approximate {mode!r} must be 'none' or 'tanh'")
    return y.astype(F32, copy=False)


def _int_list(ctx: _Ctx, v: np.ndarray | None, which: str) -> list[int] | None:
    if v is None:
        return None
    if v.dtype != I64 or v.ndim > 1:
        raise ctx.error(f"{which} must be a 0-D or 1-D int64 tensor")
    return [int(d) for d in v.reshape(-1)]


def _norm_axes(ctx: _Ctx, axes: list[int], rank: int) -> list[int]:
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ctx.error(f"axis {a} out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ctx.error(f"axes {axes} repeat an axis")
    return out


def _reduce(fn: Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray], axes_input_from: int) -> Callable[..., np.ndarray]:
    """A Reduce* op; ``axes`` is an attribute before opset ``axes_input_from``, an input from it."""
    def op(ctx: _Ctx, x: np.ndarray, axes_in: np.ndarray | None = None) -> np.ndarray:
        x = ctx.float_input(x, "data")
        # the axes are an attribute or a parameter (const_inputs): resolved once per rank
        ax, keep = _memoised(ctx, x.ndim, lambda: _reduce_axes(ctx, x, axes_in, axes_input_from))
        if ax is None:
            return x
        return fn(x, ax, keep).astype(F32, copy=False)   # float32 sums (pairwise, as numpy adds)
    return op


def _reduce_axes(ctx: _Ctx, x: np.ndarray, axes_in: np.ndarray | None,
                 axes_input_from: int) -> tuple[tuple[int, ...] | None, bool]:
    """A Reduce* node's normalised axes (None: the identity, noop_with_empty_axes) and keepdims."""
    keep = ctx.attr_int("keepdims", 1)
    noop = ctx.attr_int("noop_with_empty_axes", 0)
    if keep not in (0, 1) or noop not in (0, 1):
        raise ctx.unsupported("keepdims and noop_with_empty_axes must be 0 or 1")
    if ctx.opset < axes_input_from:
        axes = ctx.attr_ints("axes", None)
    else:
        axes = _int_list(ctx, axes_in, "axes")
    if not axes:
        if noop:
            return None, bool(keep)
        axes = list(range(x.ndim))
    return tuple(sorted(_norm_axes(ctx, axes, x.ndim))), bool(keep)   # sorted: [-1, -2] is trailing too


#: at most this many elements per output: a sum over trailing axes is one matrix-vector product
_SHORT_REDUCTION = 16
_ONES = [np.ones(k, F32) for k in range(_SHORT_REDUCTION + 1)]
for _ones in _ONES:
    _ones.flags.writeable = False


def _sum_or_mean(mean: bool) -> Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]:
    """ReduceSum / ReduceMean. Over trailing axes of few elements per output (a pool over a 2x2
    map: EfficientNet's (1, 1280, 2, 2) mean) numpy's reduction costs per outer row, 28 us
    there; the same sums as (rows, k) @ ones(k) are one BLAS call, 1.7 us. Elsewhere numpy's."""
    def reduce(x: np.ndarray, ax: tuple[int, ...], keep: bool) -> np.ndarray:
        lead = x.ndim - len(ax)
        k = math.prod(x.shape[lead:])
        if 0 < k <= _SHORT_REDUCTION and ax == tuple(range(lead, x.ndim)) and x.flags.c_contiguous:
            y = np.matmul(x.reshape(-1, k), _ONES[k])
            if mean:
                y *= F32.type(1.0 / k)
            return y.reshape(x.shape[:lead] + ((1,) * len(ax) if keep else ()))
        return (np.mean if mean else np.sum)(x, axis=ax, keepdims=keep)
    return reduce


_MEAN = _sum_or_mean(True)
for _name, _from, _fn in (
        ("ReduceMean", 18, lambda x, a, k: _mean(x, a, k)),
        ("ReduceSum", 13, _sum_or_mean(False)),
        ("ReduceMax", 18, lambda x, a, k: np.max(x, axis=a, keepdims=k)),
        ("ReduceL2", 18, lambda x, a, k: np.sqrt(np.add.reduce(x * x, axis=a, keepdims=k)))):
    operator(_name, attrs={"axes": (MIN_OPSET, _from - 1), "keepdims": None, "noop_with_empty_axes": (_from, MAX_OPSET)},
             inputs=(1, 2), inputs_by_opset=((_from, (1, 1)),), const_inputs={1: "int64"})(_reduce(_fn, _from))


@operator("Transpose", attrs=("perm",))
def _transpose(ctx: _Ctx, x: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "data")
    return np.ascontiguousarray(x.transpose(_memoised(ctx, x.ndim, lambda: _transpose_perm(ctx, x))))


def _transpose_perm(ctx: _Ctx, x: np.ndarray) -> tuple[int, ...]:
    perm = ctx.attr_ints("perm", None)
    if perm is None:
        perm = list(range(x.ndim))[::-1]
    if sorted(perm) != list(range(x.ndim)):
        raise ctx.error(f"perm {perm} is not a permutation of {x.ndim} axes")
    return tuple(perm)


@operator("Squeeze", attrs={"axes": (MIN_OPSET, 12)}, inputs=(1, 2), inputs_by_opset=((13, (1, 1)),),
          const_inputs={1: "int64"})
def _squeeze(ctx: _Ctx, x: np.ndarray, axes_in: np.ndarray | None = None) -> np.ndarray:
    x = ctx.float_input(x, "data")
    return x.reshape(_memoised(ctx, x.shape, lambda: _squeezed_shape(ctx, x, axes_in)))


def _squeezed_shape(ctx: _Ctx, x: np.ndarray, axes_in: np.ndarray | None) -> tuple[int, ...]:
    axes = ctx.attr_ints("axes", None) if ctx.opset < 13 else _int_list(ctx, axes_in, "axes")
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    ax = _norm_axes(ctx, axes, x.ndim)
    if any(x.shape[a] != 1 for a in ax):
        raise ctx.error(f"cannot squeeze axes {axes} of shape {x.shape}")
    return tuple(d for i, d in enumerate(x.shape) if i not in ax)


@operator("Unsqueeze", attrs={"axes": (MIN_OPSET, 12)}, inputs=(2, 2), inputs_by_opset=((13, (1, 1)),),
          const_inputs={1: "int64"})
def _unsqueeze(ctx: _Ctx, x: np.ndarray, axes_in: np.ndarray | None = None) -> np.ndarray:
    x = ctx.float_input(x, "data")
    return x.reshape(_memoised(ctx, x.shape, lambda: _unsqueezed_shape(ctx, x, axes_in)))


def _unsqueezed_shape(ctx: _Ctx, x: np.ndarray, axes_in: np.ndarray | None) -> tuple[int, ...]:
    axes = ctx.attr_ints("axes", None) if ctx.opset < 13 else _int_list(ctx, axes_in, "axes")
    if not axes:
        raise ctx.error("axes are required")
    rank = x.ndim + len(axes)
    ax = sorted(_norm_axes(ctx, axes, rank))
    shape = list(x.shape)
    for a in ax:
        shape.insert(a, 1)
    return tuple(shape)


@operator("Expand", inputs=(2, 2), const_inputs={1: "int64"})
def _expand(ctx: _Ctx, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    x = ctx.float_input(x, "input")
    # the shape is a parameter (const_inputs): the target is resolved once per input shape;
    # a filled buffer, since np.broadcast_to's Python machinery costs 2-3 us a call
    y = np.empty(_memoised(ctx, x.shape, lambda: _expanded_shape(ctx, x, shape)), F32)
    y[...] = x
    return y


def _expanded_shape(ctx: _Ctx, x: np.ndarray, shape: np.ndarray) -> tuple[int, ...]:
    dims = _int_list(ctx, shape, "shape")
    try:
        out = _broadcast_shape(x.shape, tuple(dims))
    except ValueError:
        raise ctx.error(f"input {x.shape} does not expand to {dims}") from None
    ctx.check_size(out)
    return out


@operator("Gather", attrs=("axis",), inputs=(2, 2), const_inputs={1: "int64"})
def _gather(ctx: _Ctx, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    data = ctx.float_input(data, "data")
    # the indices are a parameter (const_inputs): checked and made non-negative once per shape
    axis, index = _memoised(ctx, data.shape, lambda: _gather_index(ctx, data, indices))
    if type(index) is tuple:
        # one index (a ViT's Q / K / V select, its class token): a view of data by basic indexing,
        # no copy (``take`` copied 1-3 us per select on a ViT block's 17 x 64)
        return data[index]
    return data.take(index, axis=axis)


def _gather_index(ctx: _Ctx, data: np.ndarray, indices: np.ndarray) -> tuple[int, np.ndarray | tuple]:
    """The axis and the indices made non-negative (a 0-d index as the basic-indexing key of its
    view), after the checks."""
    if indices.dtype != I64:
        raise ctx.error("indices must be int64")
    axis = ctx.attr_int("axis", 0)
    if not -data.ndim <= axis < data.ndim:
        raise ctx.error(f"axis {axis} out of range for rank {data.ndim}")
    axis %= data.ndim
    n = data.shape[axis]
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise ctx.error(f"an index is outside -{n}..{n - 1}")
    ctx.check_size(data.shape[:axis] + indices.shape + data.shape[axis + 1:])
    index = np.where(indices < 0, indices + n, indices)
    if index.ndim == 0:
        return axis, (slice(None),) * axis + (int(index),)
    return axis, index


@operator("LayerNormalization", attrs=("axis", "epsilon", "stash_type"), inputs=(2, 3), opsets=(17, MAX_OPSET))
def _layernorm(ctx: _Ctx, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    x, scale = ctx.float_input(x, "X"), ctx.float_input(scale, "Scale")
    if bias is not None:
        ctx.float_input(bias, "B")
    return _layernorm_into(ctx, x, scale, bias, None)


def _layernorm_into(ctx: _Ctx, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None,
                    out: np.ndarray | None) -> np.ndarray:
    """LayerNormalization of ``x`` into ``out`` if given (which may be ``x``; the chain's in-place
    form), else into a new array: one call of the C kernel (``enclave/csrc/vit.c``) over the rows
    of the normalised trailing axes, float32 as onnxruntime computes it (stash_type 1) with the
    mean and the variance of the centred values summed in double. In numpy it was ten calls,
    11-35 us on a ViT block's 17 x 64, against about 2 here."""
    key = (x.shape, scale.shape, None if bias is None else bias.shape)
    rows, n, eps, norm_shape = _memoised(ctx, key, lambda: _layernorm_params(ctx, x, scale, bias))
    # Scale and B are parameters almost always (the same arrays on every call): broadcast to
    # the normalised shape and made contiguous once per pair of arrays (held here, so neither can
    # be replaced by another at its address)
    cached = ctx.memo.get("affine")
    if cached is None or cached[0] is not scale or cached[1] is not bias or cached[2] != norm_shape:
        flat = [None if p is None else np.ascontiguousarray(np.broadcast_to(p, norm_shape), F32).reshape(-1)
                for p in (scale, bias)]
        cached = ctx.memo["affine"] = (scale, bias, norm_shape, flat[0], flat[1])
    src = np.ascontiguousarray(x)
    dst = out if out is not None and out.flags.c_contiguous else np.empty(x.shape, F32)
    native.load("vit").layernorm(src, cached[3], cached[4], dst, rows, n, eps)
    if out is not None and dst is not out:
        out[...] = dst
        return out
    return dst


def _layernorm_params(ctx: _Ctx, x: np.ndarray, scale: np.ndarray,
                      bias: np.ndarray | None) -> tuple[int, int, float, tuple[int, ...]]:
    """The rows and row length the kernel normalises, epsilon and the normalised shape, after the
    checks."""
    axis = ctx.attr_int("axis", -1)
    eps = ctx.attr_float("epsilon", 1e-5)
    if ctx.attr_int("stash_type", 1) != 1:
        raise ctx.unsupported("stash_type other than 1 (float32) is not supported")
    if not -x.ndim <= axis < x.ndim:
        raise ctx.error(f"axis {axis} out of range for rank {x.ndim}")
    axis %= x.ndim
    norm_shape = x.shape[axis:]
    for nm, p in (("Scale", scale), ("B", bias)):
        if p is not None:
            ctx.float_input(p, nm)
            try:
                if _broadcast_shape(p.shape, norm_shape) != norm_shape:
                    raise ValueError
            except ValueError:
                raise ctx.error(f"{nm} of shape {p.shape} does not broadcast to {norm_shape}") from None
    return math.prod(x.shape[:axis]), math.prod(norm_shape), eps, norm_shape


# --- recurrent operators (LSTM, GRU) ---------------------------------------------------------
#
# What PyTorch exports for ``nn.LSTM`` / ``nn.GRU`` (one layer each node): default activations,
# layout 0 (X is [seq, batch, input]), forward or bidirectional (reverse too), optional initial
# states, no sequence_lens, no peepholes, no clip, no input_forget. Anything else is refused.

_RNN_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_RNN_GATES = {"LSTM": 4, "GRU": 3}
#: the direction attribute as rnn.c's compile() takes it
_RNN_DIRECTIONS = {"forward": 0, "reverse": 1, "bidirectional": 2}


def _rnn_common(ctx: _Ctx, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None,
                seq_lens: np.ndarray | None, h0: np.ndarray | None, c0: np.ndarray | None,
                p: np.ndarray | None) -> tuple[int, int, int]:
    """Every check of an LSTM or GRU node; returns hidden size, number of directions and
    linear_before_reset (0 for an LSTM). Once per node and shape of X and the initial states
    (:func:`_rnn_checked`)."""
    op = ctx.node.op
    gates = _RNN_GATES[op]
    lbr = 0
    if op == "LSTM":
        if p is not None:
            raise ctx.unsupported("peephole weights (input P) are not supported")
        if ctx.attr_int("input_forget", 0) != 0:
            raise ctx.unsupported("input_forget=1 (coupled input and forget gates) is not supported")
    else:
        lbr = ctx.attr_int("linear_before_reset", 0)
        if lbr not in (0, 1):
            raise ctx.unsupported(f"linear_before_reset {lbr} must be 0 or 1")
    ctx.float_input(w, "W")
    ctx.float_input(r, "R")
    if seq_lens is not None:
        raise ctx.unsupported("sequence_lens is not supported (every sequence has the full length)")
    if ctx.attr_int("layout", 0) != 0:
        raise ctx.unsupported("layout 1 (batch first) is not supported; layout 0 is what exporters write")
    if "clip" in ctx.node.attrs:
        raise ctx.unsupported("cell clipping (clip) is not supported")
    if "activation_alpha" in ctx.node.attrs or "activation_beta" in ctx.node.attrs:
        raise ctx.unsupported("activation_alpha / activation_beta are not supported (default activations only)")
    direction = ctx.attr_str("direction", "forward")
    if direction not in _RNN_DIRECTIONS:
        raise ctx.unsupported(f"direction {direction!r} must be forward, reverse or bidirectional")
    nd = 2 if direction == "bidirectional" else 1
    acts = ctx.node.attrs.get("activations")
    if acts is not None and acts != _RNN_DEFAULT_ACTS[op] * nd:
        raise ctx.unsupported(f"activations {acts} are not supported; only the defaults "
                              f"{_RNN_DEFAULT_ACTS[op]} per direction")
    if "hidden_size" not in ctx.node.attrs:
        raise ctx.error("attribute hidden_size is required")
    hs = ctx.attr_int("hidden_size", 0)
    if hs < 1:
        raise ctx.error(f"hidden_size {hs} must be positive")
    if x.ndim != 3:
        raise ctx.error(f"X must be [seq_length, batch, input_size], got shape {x.shape}")
    seq, batch, inp = x.shape
    if w.shape != (nd, gates * hs, inp):
        raise ctx.error(f"W has shape {w.shape}, expected {(nd, gates * hs, inp)}")
    if r.shape != (nd, gates * hs, hs):
        raise ctx.error(f"R has shape {r.shape}, expected {(nd, gates * hs, hs)}")
    if b is not None and ctx.float_input(b, "B").shape != (nd, 2 * gates * hs):
        raise ctx.error(f"B has shape {b.shape}, expected {(nd, 2 * gates * hs)}")
    for nm, h in (("initial_h", h0), ("initial_c", c0)):
        if h is not None and h.shape != (nd, batch, hs):
            raise ctx.error(f"{nm} has shape {h.shape}, expected {(nd, batch, hs)}")
    ctx.check_size((seq, batch, nd, gates * hs), "input projection")
    return hs, nd, lbr


def _rnn_checked(ctx: _Ctx, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None,
                 seq_lens: np.ndarray | None, h0: np.ndarray | None, c0: np.ndarray | None = None,
                 p: np.ndarray | None = None) -> tuple[int, int, int]:
    """:func:`_rnn_common` once per shape of X and the initial states (W, R, B are parameters,
    the attributes constant); the dtypes of X and the states on every call."""
    ctx.float_input(x, "X")
    if h0 is not None:
        ctx.float_input(h0, "initial_h")
    if c0 is not None:
        ctx.float_input(c0, "initial_c")
    key = ("checked", x.shape, None if h0 is None else h0.shape, None if c0 is None else c0.shape,
           seq_lens is None, p is None)
    return _memoised(ctx, key, lambda: _rnn_common(ctx, x, w, r, b, seq_lens, h0, c0, p))


# The recurrence runs in C (enclave/csrc/rnn.c: every step of every direction in one call; a step
# in numpy was a gemv and 8-11 ufunc calls at ~0.3 us each, 3.6-4x onnxruntime's node). What stays
# here is what BLAS does better: the input projection of every step and direction, one product of
# X [seq*batch, input] by W laid out once per node as [input, dirs*gates*hidden] (ONNX's order:
# direction, gate, unit), so that row (step, batch) is the kernel's input for that step. The
# kernel gets the biases and R, laid out by its compile() once per node (W, R and B are parameters:
# the same arrays every call).


def _rnn_prepared(ctx: _Ctx, w: np.ndarray, r: np.ndarray, b: np.ndarray | None,
                  lbr: int) -> tuple[np.ndarray, Any, Any]:
    """W^T, the compiled cell and the kernel module, once per node for these W, R, B arrays (kept
    by identity, as Gemm keeps its B)."""
    cached = ctx.memo.get("rnn_weights")
    if cached is not None and cached[0] is w and cached[1] is r and cached[2] is b:
        return cached[3]
    nd, gh, inp = w.shape
    wt = np.ascontiguousarray(w.reshape(nd * gh, inp).T)
    gates = _RNN_GATES[ctx.node.op]
    kernel = native.load("rnn")
    cell = kernel.compile(gates, lbr, _RNN_DIRECTIONS[ctx.attr_str("direction", "forward")], gh // gates,
                          np.ascontiguousarray(r), None if b is None else np.ascontiguousarray(b))
    prepared = (wt, cell, kernel)
    ctx.memo["rnn_weights"] = (w, r, b, prepared)
    return prepared


def _rnn_run(ctx: _Ctx, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None, hs: int,
             nd: int, h0: np.ndarray | None, c0: np.ndarray | None, lbr: int) -> tuple[np.ndarray, ...]:
    """Y [seq, dirs, batch, hidden], Y_h (and, for an LSTM, Y_c) [dirs, batch, hidden]; as many as
    the node has outputs."""
    wt, cell, kernel = _rnn_prepared(ctx, w, r, b, lbr)
    seq, batch, inp = x.shape
    pre = np.dot(x.reshape(seq * batch, inp), wt)
    y = np.empty((seq, nd, batch, hs), F32)
    y_h = np.empty((nd, batch, hs), F32)
    y_c = np.empty((nd, batch, hs), F32) if ctx.node.op == "LSTM" else None
    kernel.run(cell, pre, seq, batch, None if h0 is None else np.ascontiguousarray(h0),
               None if c0 is None else np.ascontiguousarray(c0), y, y_h, y_c)
    out = (y, y_h) if y_c is None else (y, y_h, y_c)
    return out[:len(ctx.node.outputs)]


@operator("LSTM", attrs={"activation_alpha": None, "activation_beta": None, "activations": None, "clip": None,
                         "direction": None, "hidden_size": None, "input_forget": None, "layout": (14, MAX_OPSET)},
          inputs=(3, 8), outputs=(1, 3), const_inputs={1: "float32", 2: "float32", 3: "float32"})
def _lstm(ctx: _Ctx, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None = None,
          seq_lens: np.ndarray | None = None, h0: np.ndarray | None = None, c0: np.ndarray | None = None,
          p: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    hs, nd, _ = _rnn_checked(ctx, x, w, r, b, seq_lens, h0, c0, p)
    return _rnn_run(ctx, x, w, r, b, hs, nd, h0, c0, 0)


@operator("GRU", attrs={"activation_alpha": None, "activation_beta": None, "activations": None, "clip": None,
                        "direction": None, "hidden_size": None, "layout": (14, MAX_OPSET),
                        "linear_before_reset": None},
          inputs=(3, 6), outputs=(1, 2), const_inputs={1: "float32", 2: "float32", 3: "float32"})
def _gru(ctx: _Ctx, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None = None,
         seq_lens: np.ndarray | None = None, h0: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    hs, nd, lbr = _rnn_checked(ctx, x, w, r, b, seq_lens, h0)
    return _rnn_run(ctx, x, w, r, b, hs, nd, h0, None, lbr)


# --- ai.onnx.ml tree ensembles (TreeEnsembleClassifier, TreeEnsembleRegressor) ------------------
#
# As skl2onnx writes them (gradient boosting, random forests): numeric features [N, F], int64
# class labels, BRANCH_* / LEAF modes, post_transform NONE / LOGISTIC / SOFTMAX, the
# classifier's outputs as onnxruntime computes them (its binary single-score form included).
# Refused: string labels, PROBIT / SOFTMAX_ZERO, *_as_tensor (double) attributes, a two-class
# ensemble with weights for both classes, a regressor's MIN / MAX aggregation.

_TREE_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ", "LEAF")
_TREE_NODE_ATTRS = ("nodes_falsenodeids", "nodes_featureids", "nodes_hitrates", "nodes_missing_value_tracks_true",
                    "nodes_modes", "nodes_nodeids", "nodes_treeids", "nodes_truenodeids", "nodes_values")
_ML_OPSETS = (1, 4)


def _floats(ctx: _Ctx, name: str, lifted: np.ndarray | None, required: bool) -> np.ndarray | None:
    """A float list attribute, or the parameter the split lifted it into (never both)."""
    v = ctx.node.attrs.get(name)
    if lifted is not None:
        if v is not None:
            raise ctx.error(f"{name} is given both as an attribute and as a parameter")
        if ctx.float_input(lifted, name).ndim != 1:
            raise ctx.error(f"{name} must be a 1-D parameter")
        return lifted
    if v is None:
        if required:
            raise ctx.error(f"attribute {name} is required")
        return None
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ctx.unsupported(f"attribute {name} must be a list of numbers")
    return np.asarray(v, dtype=F32)


def _ints(ctx: _Ctx, name: str, n: int | None = None, required: bool = True) -> np.ndarray:
    v = ctx.attr_ints(name, None if required else [])
    if v is None:
        raise ctx.error(f"attribute {name} is required")
    if n is not None and v and len(v) != n:
        raise ctx.error(f"attribute {name} has {len(v)} entries, the nodes are {n}")
    return np.asarray(v, dtype=np.int64)


@dataclass(frozen=True)
class _Forest:
    """A tree ensemble compiled once per node (its attributes and lifted parameters are fixed):
    flat per-node tables checked here, handed to the C walker (``enclave/csrc/trees.c``), which
    copies them and checks every index again."""

    kernel: Any                # the walker's compiled forest
    trees: int
    positive: bool             # every leaf weight is >= 0


def _compile_forest(ctx: _Ctx, n_features: int, values_in: np.ndarray | None, prefix: str, n_targets: int,
                    weights_in: np.ndarray | None) -> _Forest:
    """Check the ensemble's attributes and build its :class:`_Forest` (every structural check
    here: a node defined twice, a branch to a node its tree lacks, a feature out of range, a
    weight on an inner node, a cycle)."""
    for a in ctx.node.attrs:
        if a.endswith("_as_tensor"):
            raise ctx.unsupported(f"{a} (double-precision tensors) is not supported")
    node_ids = _ints(ctx, "nodes_nodeids")
    n = len(node_ids)
    tree_ids = _ints(ctx, "nodes_treeids", n)
    feats = _ints(ctx, "nodes_featureids", n)
    true_ids, false_ids = _ints(ctx, "nodes_truenodeids", n), _ints(ctx, "nodes_falsenodeids", n)
    track = _ints(ctx, "nodes_missing_value_tracks_true", n, required=False)
    thresholds = _floats(ctx, "nodes_values", values_in, True)
    hit = _floats(ctx, "nodes_hitrates", None, False)   # informational; checked only
    modes = ctx.node.attrs.get("nodes_modes")
    if not isinstance(modes, list) or any(m not in _TREE_MODES for m in modes):
        raise ctx.unsupported(f"nodes_modes must be a list of {list(_TREE_MODES)}")
    if n == 0 or any(len(a) != n for a in (tree_ids, feats, true_ids, false_ids, thresholds, modes)) or \
            (hit is not None and len(hit) != n):
        raise ctx.error("the nodes_* attributes must all have one entry per node")
    code = np.array([_TREE_MODES.index(m) for m in modes], dtype=np.int64)
    leaf = code == _TREE_MODES.index("LEAF")
    index: dict[tuple[int, int], int] = {}
    roots: dict[int, int] = {}
    for k, (t, i) in enumerate(zip(tree_ids.tolist(), node_ids.tolist())):
        if (t, i) in index:
            raise ctx.error(f"node {i} of tree {t} is defined twice")
        index[(t, i)] = k
        roots.setdefault(t, k)
    nxt_true = np.arange(n, dtype=np.int64)   # a leaf stays where it is
    nxt_false = np.arange(n, dtype=np.int64)
    for k in np.flatnonzero(~leaf).tolist():
        t = int(tree_ids[k])
        try:
            nxt_true[k], nxt_false[k] = index[(t, int(true_ids[k]))], index[(t, int(false_ids[k]))]
        except KeyError:
            raise ctx.error(f"node {int(node_ids[k])} of tree {t} branches to a node the tree lacks") from None
        if not 0 <= feats[k] < n_features:
            raise ctx.error(f"node {int(node_ids[k])} of tree {t} reads feature {int(feats[k])}, X has "
                            f"{n_features}")
    feats = np.where(leaf, 0, feats)
    # depth: walk the frontier of every tree at once; a path longer than the node count is a cycle
    frontier, depth = np.array(list(roots.values()), dtype=np.int64), 0
    while True:
        frontier = frontier[~leaf[frontier]]
        if not len(frontier):
            break
        depth += 1
        if depth > n:
            raise ctx.error("a tree has a cycle")
        frontier = np.unique(np.concatenate([nxt_true[frontier], nxt_false[frontier]]))
    # leaf weights -> a dense [nodes, targets] table (and which entries carry a weight)
    w_tree, w_node = _ints(ctx, f"{prefix}_treeids"), _ints(ctx, f"{prefix}_nodeids")
    w_id = _ints(ctx, f"{prefix}_ids")
    weights = _floats(ctx, f"{prefix}_weights", weights_in, True)
    if not len(w_tree) == len(w_node) == len(w_id) == len(weights):
        raise ctx.error(f"the {prefix}_* attributes must all have one entry per weight")
    if len(w_id) and (w_id.min() < 0 or w_id.max() >= n_targets):
        raise ctx.error(f"a {prefix}_ids entry is outside 0..{n_targets - 1}")
    table = np.zeros((n, n_targets), dtype=np.float64)
    has = np.zeros((n, n_targets), dtype=np.int64)
    for t, i, c, v in zip(w_tree.tolist(), w_node.tolist(), w_id.tolist(), weights.tolist()):
        k = index.get((t, i))
        if k is None or not leaf[k]:
            raise ctx.error(f"a weight names node {i} of tree {t}, which is not a leaf")
        table[k, c] += v
        has[k, c] = 1
    tracks = track.astype(bool) if len(track) else np.zeros(n, dtype=bool)
    kernel = native.load("trees").compile(
        np.array(list(roots.values()), dtype=np.int64), feats, np.ascontiguousarray(thresholds, dtype=F32),
        code.astype(np.uint8), np.concatenate([nxt_false, nxt_true]),
        tracks.astype(np.uint8) if tracks[~leaf].any() else None,
        np.ascontiguousarray(table.T), np.ascontiguousarray(has.T).astype(np.uint8), n_features)
    return _Forest(kernel=kernel, trees=len(roots), positive=bool(np.all(weights >= 0)))


def _forest_input(ctx: _Ctx, x: np.ndarray, values_in: np.ndarray | None, prefix: str, n_targets: int,
                  weights_in: np.ndarray | None) -> tuple[_Forest, np.ndarray]:
    """The node's compiled forest for X's width, and X checked ([N, features] float32, contiguous)."""
    x = ctx.float_input(x, "X")
    if x.ndim != 2:
        raise ctx.unsupported(f"X must be [N, features], got shape {x.shape}")
    forest = _memoised(ctx, ("forest", x.shape[1]),
                       lambda: _compile_forest(ctx, x.shape[1], values_in, prefix, n_targets, weights_in))
    ctx.check_size((x.shape[0], forest.trees, n_targets), "tree buffer")
    return forest, np.ascontiguousarray(x)


def _classifier_attrs(ctx: _Ctx, base_in: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, set[int], str]:
    """A classifier's fixed attributes, checked once per node: labels, base values, the class ids
    its weights name, the post transform."""
    if "classlabels_strings" in ctx.node.attrs:
        raise ctx.unsupported("string class labels are not supported (int64 labels only)")
    labels = _ints(ctx, "classlabels_int64s")
    if len(labels) < 2:
        raise ctx.error("a classifier needs at least two class labels")
    base = _floats(ctx, "base_values", base_in, False)
    return (labels, np.zeros(0, F32) if base is None else base, set(_ints(ctx, "class_ids").tolist()),
            ctx.attr_str("post_transform", "NONE"))


@operator("TreeEnsembleClassifier", domain=ML_DOMAIN, opsets=_ML_OPSETS, inputs=(1, 4), outputs=(2, 2),
          attrs={a: _ML_OPSETS for a in ("base_values", "class_ids", "class_nodeids", "class_treeids", "class_weights",
                                        "classlabels_int64s", "classlabels_strings", "post_transform",
                                        *_TREE_NODE_ATTRS)},
          const_inputs={1: "float32", 2: "float32", 3: "float32"},
          lifted=("nodes_values", "class_weights", "base_values"))
def _tree_classifier(ctx: _Ctx, x: np.ndarray, values_in: np.ndarray | None = None,
                     weights_in: np.ndarray | None = None, base_in: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    labels, base, post = _memoised(ctx, "classifier", lambda: _classifier_checked(ctx, base_in))
    forest, x = _forest_input(ctx, x, values_in, "class", len(labels), weights_in)
    label = np.empty(x.shape[0], dtype=I64)
    probabilities = np.empty((x.shape[0], len(labels)), dtype=F32)
    native.load("trees").classify(forest.kernel, x, x.shape[0], base, _POST_CODES[post], forest.positive,
                                  labels, label, probabilities)
    return label, probabilities


_POST_CODES = {"NONE": 0, "LOGISTIC": 1, "SOFTMAX": 2}


def _classifier_checked(ctx: _Ctx, base_in: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The classifier's attributes once per node, refused where onnxruntime's outputs are not the
    ones ``trees.c`` computes: labels (int64), base values (float64), the post transform."""
    labels, base, class_ids, post = _classifier_attrs(ctx, base_in)
    k = len(labels)
    if post not in _POST_CODES:
        raise ctx.unsupported(f"post_transform {post!r} is not supported (supported: {list(_POST_CODES)})")
    if k > 2 and len(base) not in (0, k):
        raise ctx.error(f"base_values has {len(base)} entries, the classes are {k}")
    if k == 2:
        # two classes: onnxruntime's binary case, one score column for class 0 (what skl2onnx writes)
        if class_ids != {0}:
            raise ctx.unsupported("a two-class ensemble must carry its weights for class 0 only (one score)")
        if len(base) > 2:
            raise ctx.error(f"base_values has {len(base)} entries, the classes are 2")
    return np.ascontiguousarray(labels, dtype=I64), np.ascontiguousarray(base, dtype=np.float64), post


@operator("TreeEnsembleRegressor", domain=ML_DOMAIN, opsets=_ML_OPSETS, inputs=(1, 4),
          attrs={a: _ML_OPSETS for a in ("aggregate_function", "base_values", "n_targets", "post_transform",
                                        "target_ids", "target_nodeids", "target_treeids", "target_weights",
                                        *_TREE_NODE_ATTRS)},
          const_inputs={1: "float32", 2: "float32", 3: "float32"},
          lifted=("nodes_values", "target_weights", "base_values"))
def _tree_regressor(ctx: _Ctx, x: np.ndarray, values_in: np.ndarray | None = None,
                    weights_in: np.ndarray | None = None, base_in: np.ndarray | None = None) -> np.ndarray:
    n_targets = ctx.attr_int("n_targets", 1)
    if n_targets < 1:
        raise ctx.error(f"n_targets {n_targets} must be positive")
    agg = ctx.attr_str("aggregate_function", "SUM")
    if agg not in ("SUM", "AVERAGE"):
        raise ctx.unsupported(f"aggregate_function {agg!r} is not supported (SUM, AVERAGE)")
    if ctx.attr_str("post_transform", "NONE") != "NONE":
        raise ctx.unsupported(f"post_transform {ctx.attr_str('post_transform', 'NONE')!r} is not supported for a regressor (NONE only)")
    forest, x = _forest_input(ctx, x, values_in, "target", n_targets, weights_in)
    scores = np.empty((x.shape[0], n_targets), dtype=np.float64)
    native.load("trees").walk(forest.kernel, x, x.shape[0], scores)
    if agg == "AVERAGE":
        scores = scores / forest.trees
    base = _floats(ctx, "base_values", base_in, False)
    if base is not None and len(base):
        if len(base) != n_targets:
            raise ctx.error(f"base_values has {len(base)} entries, the targets are {n_targets}")
        scores = scores + base
    return scores.astype(F32)


# --- the interpreter ---------------------------------------------------------------------

def _shape_matches(actual: tuple[int, ...], declared: tuple[int | None, ...]) -> bool:
    if len(actual) != len(declared):
        return False
    for a, d in zip(actual, declared):   # a plain loop: all() over a generator costs twice as much
        if d is not None and a != d:
            return False
    return True


def _shape_check(declared: tuple[int | None, ...] | None) -> tuple[int, tuple[int, ...] | None]:
    """How to compare an output's shape with its declaration cheaply on every call.

    (0, None): nothing declared; (1, shape): fully static, one tuple comparison; (2, tail):
    only the batch dimension is free, compare rank and the tail; (3, None): the general check."""
    if declared is None:
        return 0, None
    if None not in declared:
        return 1, tuple(declared)
    if declared[0] is None and None not in declared[1:]:
        return 2, tuple(declared[1:])
    return 3, None


def _run_step(impl: Callable[..., Any], ctx: _Ctx, args: list[Any], outputs: tuple, limit: int) -> Any:
    """Run one plan entry and check its outputs against their declarations (dtype, element limit,
    shape: see :func:`_shape_check`); returns its outputs as a tuple."""
    try:
        ys = impl(ctx, *args)
    except (ModelError, PackageFormatError):
        raise
    except (ValueError, TypeError, IndexError, FloatingPointError, MemoryError) as exc:
        raise ModelError(f"node {ctx.node.name!r} ({ctx.node.op}) failed: {type(exc).__name__}") from None
    if type(ys) is not tuple:
        ys = (ys,)
    for pos, _, want, kind, fast, shape, accepted in outputs:
        y = ys[pos] if pos < len(ys) else None
        if y is None or y.dtype != accepted:   # accepted: the declared dtype if float32 or int64, else None
            got = "no array" if y is None else y.dtype
            raise ModelError(f"node {ctx.node.name!r} ({ctx.node.op}) produced dtype {got}, expected {want}")
        if y.size > limit:
            ctx.check_size(y.shape)
        if kind and not (y.shape == fast if kind == 1 else
                         (y.ndim == len(shape) and y.shape[1:] == fast) if kind == 2 else
                         _shape_matches(y.shape, shape)):
            raise ModelError(f"node {ctx.node.name!r} ({ctx.node.op}) produced shape {y.shape}, "
                             f"the graph declares {shape}")
    return ys


@dataclass(frozen=True)
class _Plan:
    """One node resolved at load: its inputs and outputs are slots of the run's value list
    (no name lookups per call), its output checks precomputed (see :func:`_shape_check`)."""

    node: NodeSpec
    impl: Callable[..., Any]
    #: slot of every input, -1 for an absent optional input (the run's last slot, always None)
    input_slots: tuple[int, ...]
    ctx: "_Ctx"
    #: (position among the node's outputs, slot, dtype, check kind, shape, declared shape, accepted
    #: dtype: the declared one if float32 or int64, else None, which no array's dtype equals) of
    #: every non-empty output
    outputs: tuple[tuple[int, int, np.dtype, int, tuple[int, ...] | None, tuple[int | None, ...] | None,
                         np.dtype | None], ...]


def _fetcher(slots: tuple[int, ...], size: int) -> Callable[[list], Any]:
    """``env -> the values at slots`` as one C call (an itemgetter; a slice for a single slot, so
    the result is always a sequence): the run loop builds no argument list per entry. Slot -1
    (an absent input) is the env's last slot, always None."""
    slots = tuple(size - 1 if s < 0 else s for s in slots)
    if len(slots) == 1:
        return _operator.itemgetter(slice(slots[0], slots[0] + 1))
    return _operator.itemgetter(*slots) if slots else _operator.itemgetter(slice(0, 0))


# --- the plan compiler: chains of single-consumer nodes run as one entry -----------------------
#
# A head of many small nodes (a ViT block: 46 nodes on 17x64 tensors, half of them Reshape /
# Transpose / Squeeze / Gather) costs more in the run loop's per-node work (argument lists, output
# dtype and shape checks, each op's own argument checks) than in numpy. The plan therefore groups
# every maximal chain of nodes in which each node's only output is read by exactly one node, the
# next one, and by nothing else (not a head output), into one entry, :class:`_Chain`:
#
# 1. The first call with a given set of input shapes runs the reference path: every node's own
#    implementation, every intermediate checked against its declared dtype and shape as the run
#    loop does. That call then runs the fast path on the same inputs and compares the two results
#    bit for bit (same shape, dtype and bits); only if they agree is the fast path used for that
#    shape from then on, else the reference path stays (and a warning is logged). This checks the
#    fast path's bookkeeping, not its arithmetic: it runs the same numpy operations on the same
#    operands in the same order as the nodes, with no branch on values, so what agrees on one
#    input of a shape agrees on every input of that shape.
# 2. The fast path, per node: a Reshape / Flatten / Squeeze / Unsqueeze / Identity becomes a
#    reshape to the output shape the reference run saw (what each of them computes, once their
#    checks passed); a Transpose stays a view while only reshapes and transposes follow it (one
#    copy where the run of views ends instead of one per Transpose); an Add / Sub / Mul / Div,
#    Erf, Softmax, Relu or BatchNormalization whose chain operand is an array the chain itself
#    allocated (the result of a MatMul, Gemm, Conv, LayerNormalization, BatchNormalization, PRelu,
#    Relu, element-wise op, Erf or Softmax of the same chain, read by no one else) writes its
#    result into it instead of allocating (a Conv's residual Add, Relu and BatchNormalization
#    in the Conv's output); every other node calls its
#    implementation, checks included. The intermediates' dtype and shape checks are not repeated:
#    every operator's output dtype is fixed and its shape follows from its input shapes, constants
#    and attributes, all of which the reference run covered for that input shape.
# 3. Per set of input shapes (:meth:`_Chain._fast_plan`), three kinds of runs of consecutive nodes
#    become one step: Add / Sub / Mul / Div / Erf nodes whose other operands are one value, one row
#    or the whole shape (:class:`_ElementwiseRun`: one call of ``enclave/csrc/vit.c``'s
#    ``elementwise``, which does each node's IEEE float32 operation, the one numpy's ufunc does, in
#    the nodes' order, chunk by chunk in L1, and Erf by the Erf operator's own kernel); and
#    reshapes / transposes and Gathers of one index (:class:`_ViewRun`: one strided view where
#    none of them copies); a MatMul or Gemm that its node ran on the packed or batched kernel,
#    with the next node if it adds a bias row (:class:`_ProductRun`: the node's kernel call, the
#    bias added in its store, the same float32 addition the Add does); and a Conv of floor.c's
#    kernel with parameter weights (:class:`_ConvRun`): the kernel call itself, with the Relu
#    after it stored by the kernel, then a spatial mean taken by the kernel or a Concat along the
#    channels written in place. The element-wise program, the bias in the product's store and the
#    conv run's Relu and mean are the places where a chain evaluates an operator's arithmetic
#    itself rather than through its implementation; the proof above covers them by the same
#    argument (the same correctly rounded operations in the same order, no branch on values but
#    the Relu's own sign test).
#
# Why this way and not a pattern rewriter (GELU, attention, MatMul + Add as fused kernels): a
# chain reuses the operators' own code and their numpy operations in the same order, so it
# accepts exactly what the nodes accept (every node is checked by :func:`node_problems` first,
# and the reference run does all of an operator's checks) and computes exactly what they compute,
# which the first call per shape proves; there is no second implementation of any operator to
# audit beyond the element-wise program of step 3. The GELU of a torch export (Div, Erf, Add, Mul,
# Mul), MatMul + bias, attention's scale / MatMul / Softmax / MatMul and the head split's
# Reshape / Transpose runs are all chains.

#: ops a chain evaluates as a reshape to the output shape seen on the reference run
_CHAIN_RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
#: ops whose result is always a new array (never a view of an input): the chain owns it
_CHAIN_FRESH = frozenset({"Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Erf", "Softmax", "LayerNormalization",
                          "Conv", "BatchNormalization", "PRelu", "Relu"})
#: element-wise ops a chain may write into an array it owns
_CHAIN_IN_PLACE = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}

# fast-path kinds of a chain node
_IMPL, _RESHAPE, _TRANSPOSE, _BINARY, _ERF, _SOFTMAX, _RELU, _BATCHNORM, _LAYERNORM, _ELEMENTWISE, _VIEWS, \
    _PRODUCT = range(12)
#: a view run's Gather of one index (its basic-indexing key)
_GATHER = 12
#: a step of a chain's fast plan: a Conv of floor.c's kernel with what follows it (:class:`_ConvRun`)
_CONV_RUN = 13
#: a step of a chain's fast plan: scaled dot-product attention in one call (:class:`_AttentionRun`)
_ATTENTION = 14
#: a step of a chain's fast plan: a LayerNormalization by its parameters' flat copies (:class:`_LayerNormRun`)
_LAYERNORM_RUN = 15

#: the C kernel's opcodes (enclave/csrc/vit.c, elementwise) of a chain's element-wise nodes: op ->
#: (the chain's value on the left, on the right)
_ELEMENTWISE_CODES = {"Add": (0, 0), "Sub": (1, 2), "Mul": (3, 3), "Div": (4, 5)}
_ELEMENTWISE_ERF = 6
#: how a step's other operand is read: one value, one row broadcast over the rows, the whole shape
_OPERAND_SCALAR, _OPERAND_ROW, _OPERAND_FULL = 1, 2, 3
#: at most this many nodes in one run (the kernel's limit)
_ELEMENTWISE_MAX = 32


@dataclass(slots=True)
class _ChainNode:
    step: _Plan
    #: for each input position: -1 the chain's running value, else an index into the entry's inputs
    sources: tuple[int, ...]
    kind: int
    #: Transpose: the permutation; binary ops: the ufunc
    arg: Any = None
    #: a Transpose whose result is made contiguous (a node other than a reshape or transpose follows)
    contiguous: bool = True
    #: the result is an array the chain allocated (in-place ops may write into it)
    fresh: bool = False


@dataclass(slots=True)
class _ElementwiseRun:
    """Consecutive Add / Sub / Mul / Div / Erf nodes of a chain, for one set of input shapes, as
    one call of the C kernel: the value passes through every node's op chunk by chunk while it is
    in L1 (a torch GELU's Div, Erf, Add, Mul, Mul: five numpy calls, one pass here)."""

    step: _Plan                  #: the first node's (a failure names it)
    #: -1: the chain's running value; else the index of the entry's input the first node reads
    source: int
    program: bytes               #: (opcode, operand mode, operand position) per node
    operands: tuple[int, ...]    #: the entry's inputs the steps read, in their order
    rows: int
    n: int                       #: the length of a row (the last axis)
    kind: int = _ELEMENTWISE


def _elementwise_run(run: _ElementwiseRun, value: np.ndarray | None, inputs: tuple, owned: bool) -> np.ndarray:
    """Evaluate ``run`` on the chain's value (into it when the chain owns it) or on its input."""
    x = value if run.source < 0 else inputs[run.source]
    src = x if x.flags.c_contiguous else np.ascontiguousarray(x)
    out = src if (owned and run.source < 0) or src is not x else np.empty(src.shape, F32)
    native.load("vit").elementwise(src, out, run.rows, run.n, run.program,
                                   tuple([np.ascontiguousarray(inputs[i]) for i in run.operands]))
    return out


class _ViewRun:
    """Consecutive Reshape / Squeeze / Unsqueeze / Flatten / Identity / Transpose nodes and Gathers
    of one index (a ViT's Q / K / V select) of a chain, for one set of input shapes, as one step: on
    a C-contiguous input of that shape their composition is one strided view, computed on the
    first call by applying them (if none of them copied) and from then on made in one call (a
    ViT's head split: 3-6 nodes, 0.4-0.7 us each); when the run's result is made contiguous, the
    copy is one call of vit.c's ``view_copy`` (no view object: 1.1 of a 3.5 us run), with the Mul
    or Div by one value that may follow the run (a ViT's K scale) applied as it copies. Any other
    input gets the nodes' reshapes, transposes and selects one by one, and the Mul or Div node."""

    __slots__ = ("step", "source", "ops", "in_shape", "contiguous", "strides", "scale", "kind")

    def __init__(self, step: _Plan, source: int, ops: list[tuple[int, Any]], in_shape: tuple[int, ...],
                 contiguous: bool, scale: "_ChainNode | None" = None) -> None:
        self.step = step                 #: the first node's (a failure names it)
        self.source = source             #: as :attr:`_ElementwiseRun.source`
        #: (_RESHAPE, output shape), (_TRANSPOSE, permutation) or (_GATHER, basic-indexing key)
        self.ops = ops
        self.in_shape = in_shape
        self.contiguous = contiguous     #: the last node's result is made contiguous
        #: None: not tried yet; False: a node copied; else the composed view's (shape, strides,
        #: offset) in bytes and (offset, strides) in elements
        self.strides: Any = None
        #: a Mul (the value on either side) or Div (the value on the left) by one float32 after the
        #: views (only on a contiguous result): its node, whose other operand is an entry input
        self.scale = scale
        self.kind = _VIEWS

    def apply(self, value: np.ndarray | None, inputs: tuple) -> np.ndarray:
        x = value if self.source < 0 else inputs[self.source]
        composed = self.strides
        fits = x.flags.c_contiguous and x.shape == self.in_shape and x.dtype == F32
        if composed is None and fits:
            # on the chain's proving run, so that what later calls do is what the proof compared
            composed = self._compose(x)
        if composed and fits:
            if self.contiguous:
                op, c = 0, 0.0
                scale = self.scale
                if scale is not None:
                    other = inputs[scale.sources[1 - scale.sources.index(-1)]]
                    if not (isinstance(other, np.ndarray) and other.dtype == F32 and other.size == 1):
                        return self._by_nodes(x, inputs)
                    op, c = (2 if scale.step.node.op == "Div" else 1), float(other.reshape(-1)[0])
                out = np.empty(composed[0], F32)
                native.load("vit").view_copy(x, out, composed[3], composed[0], composed[4], op, c)
                return out
            # numpy's constructor refuses an offset and strides that would reach outside x's buffer
            return np.ndarray(composed[0], F32, x, composed[2], composed[1])
        return self._by_nodes(x, inputs)

    def _compose(self, x: np.ndarray) -> Any:
        """:attr:`strides` from the nodes' views of ``x`` (False if one of them copied)."""
        v = self._views(x)
        # a view of x (none of the nodes copied), at an offset if a Gather selected a part
        offset = v.__array_interface__["data"][0] - x.__array_interface__["data"][0]
        viewed = v.base is not None and np.shares_memory(v, x) and offset >= 0 and v.ndim >= 1 and \
            all(st >= 0 and st % F32.itemsize == 0 for st in v.strides) and offset % F32.itemsize == 0
        self.strides = (v.shape, v.strides, offset, offset // F32.itemsize,
                        tuple(st // F32.itemsize for st in v.strides)) if viewed else False
        return self.strides

    def _views(self, x: np.ndarray) -> np.ndarray:
        v = x
        for kind, arg in self.ops:
            v = v.reshape(arg) if kind == _RESHAPE else v.transpose(arg) if kind == _TRANSPOSE else v[arg]
        return v

    def _by_nodes(self, x: np.ndarray, inputs: tuple) -> np.ndarray:
        """The nodes' reshapes, transposes and selects one by one, then the scale node's own code."""
        v = self._views(x)
        if not self.contiguous:
            return v
        v = np.ascontiguousarray(v)
        scale = self.scale
        if scale is None:
            return v
        return scale.step.impl(scale.step.ctx, *[v if s < 0 else inputs[s] for s in scale.sources])


class _ConvRun:
    """A Conv node of a chain whose product is floor.c's kernel ("native": at most 12 positions per
    image), for one set of input shapes, as one kernel call with what follows it in the chain:
    a Relu (stored as max(y, 0) by the kernel) or a Clip by two parameter scalars (MobileNet's
    ReLU6, stored as min(max(y, lo), hi)), then either a spatial mean (GlobalAveragePool, or
    ReduceMean over every axis after the first two: the kernel's ``mean``, the means the pooling's
    own loop takes) or a Concat along the channels of a batch of one (the kernel writes its
    channels of the Concat's output, the other inputs are copied into theirs). SqueezeNet's Fire
    module on 3x3 maps: two Relus, a Concat, a pool and the Conv nodes' own Python were about as
    long as its four convs. Built only when the weight and bias are parameters (packed once here)."""

    __slots__ = ("step", "source", "packed", "bias", "sizes", "relu", "clip", "mean", "shape", "parts", "kind")

    def __init__(self, step: _Plan, source: int, packed: np.ndarray, bias: np.ndarray | None, sizes: tuple,
                 relu: bool, mean: bool, shape: tuple[int, ...], parts: tuple,
                 clip: tuple[float, float] | None = None) -> None:
        self.step = step                 #: the Conv node's (a failure names it)
        self.source = source             #: as :attr:`_ElementwiseRun.source`
        self.packed = packed             #: the weight as the kernel reads it (the node's own layout)
        self.bias = bias
        self.sizes = sizes               #: the kernel's size arguments, from the node's plan
        self.relu = relu
        self.clip = clip                 #: a Clip's (lo, hi) the kernel applies as it stores, or None
        self.mean = mean
        self.shape = shape               #: the run's result shape (the last node's, as seen)
        #: Concat: (channel offset, channels, entry input or -1 for the conv's own) per input; else ()
        self.parts = parts
        self.kind = _CONV_RUN

    def apply(self, value: np.ndarray | None, inputs: tuple) -> np.ndarray:
        x = np.ascontiguousarray(value if self.source < 0 else inputs[self.source])
        y = np.empty(self.shape, F32)
        if not self.parts:
            native.load("floor").conv(x, self.packed, self.bias, y, *self.sizes, self.relu, self.mean, self.clip)
            return y
        for begin, width, source in self.parts:
            if source < 0:
                native.load("floor").conv(x, self.packed, self.bias, y[:, begin:begin + width], *self.sizes,
                                          self.relu, False, self.clip)
            else:   # casting "no": an input of another dtype fails as the Concat node would
                np.copyto(y[:, begin:begin + width], inputs[source], casting="no")
        return y


class _ProductRun:
    """A MatMul or Gemm of a chain, for one set of input shapes, as the one kernel call its node
    makes (``enclave/csrc/gemm.c``) without the node's per-call checks: by its packed parameter
    weight, a following Add of a bias row added in the kernel's store (the same float32 addition
    the Add does), or two computed operands as one batched call. Any other operand (not the
    weight packed on the reference run) gets the nodes' own implementations. A residual Add of a
    whole tensor after the packed product (and its bias), across reshapes and transposes that keep
    the elements' order, is a second addition in the same store."""

    __slots__ = ("step", "nodes", "sources", "weight", "packed", "bias", "residual", "shape", "sizes", "kernel",
                 "kind")

    def __init__(self, nodes: list["_ChainNode"], sources: tuple[int, ...], weight: np.ndarray | None,
                 packed: np.ndarray | None, bias: int | None, shape: tuple[int, ...],
                 sizes: tuple[int, int, int, int], residual: int | None = None) -> None:
        self.step = nodes[0].step     #: the product's (a failure names it)
        self.nodes = nodes            #: the product and, if fused, the Add of its bias
        self.sources = sources        #: the product's A and B: -1 the chain's value, else an entry input
        self.weight = weight          #: the parameter B whose packed form is ``packed`` (None: batched)
        self.packed = packed
        self.bias = bias              #: the entry input added as a bias row (the Gemm's C or the Add's)
        self.residual = residual      #: the entry input of the result's shape added after the bias
        self.shape = shape            #: the result's shape
        self.sizes = sizes            #: (batch, m, k, n) of the kernel call
        gemm = native.load("gemm")
        self.kernel = gemm.batched if packed is None else gemm.matmul
        self.kind = _PRODUCT

    def apply(self, value: np.ndarray | None, inputs: tuple) -> np.ndarray:
        a_at, b_at = self.sources
        a = value if a_at < 0 else inputs[a_at]
        b = value if b_at < 0 else inputs[b_at]
        batch, m, k, n = self.sizes
        residual = None if self.residual is None else inputs[self.residual]
        if self.packed is not None and b is self.weight and \
                (residual is None or (residual.shape == self.shape and residual.dtype == F32)):
            out = np.empty(self.shape, F32)
            bias = None if self.bias is None else np.ascontiguousarray(inputs[self.bias]).reshape(n)
            self.kernel(np.ascontiguousarray(a), self.packed, m, k, n, bias, out,
                        None if residual is None else np.ascontiguousarray(residual))
            return out
        if self.packed is None and a.shape[:-2] == b.shape[:-2] and a.shape[-2:] == (m, k) and b.shape[-1] == n:
            out = np.empty(self.shape, F32)
            self.kernel(np.ascontiguousarray(a), np.ascontiguousarray(b), out, batch, m, k, n)
            return out
        for node in self.nodes:
            value = node.step.impl(node.step.ctx, *[value if s < 0 else inputs[s] for s in node.sources])
        return value


class _AttentionRun:
    """Scaled dot-product attention of a chain, for one set of input shapes: the chain's value Q,
    an optional Mul or Div by one value (on Q or on the scores), MatMul by the entry input K^T,
    Softmax along the last axis, MatMul by the entry input V, as one call of gemm.c's
    ``attention`` (the batched kernel's products and the Softmax kernel's row function, one
    call for every head instead of four or five steps of 1-9 us). Any operand of another shape
    or dtype than on the reference run gets the nodes' own implementations."""

    __slots__ = ("step", "nodes", "kt", "v", "shapes", "shape", "sizes", "scale_at", "divide", "scale", "kind")

    def __init__(self, nodes: list["_ChainNode"], kt: int, v: int, shapes: tuple, sizes: tuple[int, ...],
                 scale_at: int, divide: bool, scale: int | None) -> None:
        self.step = nodes[0].step     #: the first node's (a failure names it)
        self.nodes = nodes
        self.kt, self.v = kt, v       #: the entry inputs of the two products' B
        self.shapes = shapes          #: Q's, K^T's and V's shapes on the reference run
        self.shape = shapes[3]        #: the result's
        self.sizes = sizes            #: (batch, m, k, n, dv) of the kernel call
        self.scale_at = scale_at      #: 0 no scale, 1 on Q, 2 on the scores
        self.divide = divide          #: the scale is a Div (the value on the left), else a Mul
        self.scale = scale            #: the entry input holding the scale (one float32)
        self.kind = _ATTENTION

    def apply(self, value: np.ndarray | None, inputs: tuple) -> np.ndarray:
        kt, v = inputs[self.kt], inputs[self.v]
        q_shape, kt_shape, v_shape, _ = self.shapes
        if value.shape == q_shape and kt.shape == kt_shape and v.shape == v_shape and \
                value.dtype == kt.dtype == v.dtype == F32:
            out = np.empty(self.shape, F32)
            c = 1.0 if self.scale is None else float(inputs[self.scale].reshape(-1)[0])
            native.load("gemm").attention(np.ascontiguousarray(value), np.ascontiguousarray(kt),
                                          np.ascontiguousarray(v), out, *self.sizes, self.scale_at, self.divide, c)
            return out
        for node in self.nodes:
            value = node.step.impl(node.step.ctx, *[value if s < 0 else inputs[s] for s in node.sources])
        return value


class _LayerNormRun:
    """A LayerNormalization of a chain, for one set of input shapes, whose Scale and B are
    parameters: the kernel call its node makes (:func:`_layernorm_into`), by the flat copies of
    Scale and B and the rows, row length and epsilon its reference run derived and checked,
    without the node's per-call lookups (6.5 -> about 3.5 us on a ViT block's 17 x 64, three of
    them a block); into the chain's value when the chain owns it. Any other operand (another
    Scale or B, another shape or dtype) gets the node's own implementation."""

    __slots__ = ("step", "node", "source", "scale", "bias", "flat", "shape", "sizes", "kernel", "kind")

    def __init__(self, node: "_ChainNode", scale: np.ndarray, bias: np.ndarray | None, flat: tuple,
                 shape: tuple[int, ...], sizes: tuple[int, int, float]) -> None:
        self.step = node.step         #: the node's (a failure names it)
        self.node = node
        self.source = node.sources[0]  #: as :attr:`_ElementwiseRun.source`
        self.scale, self.bias = scale, bias   #: the parameters the reference run flattened
        self.flat = flat              #: their flat copies, as the kernel reads them (bias: None if none)
        self.shape = shape            #: the input's (and the result's) shape
        self.sizes = sizes            #: (rows, n, epsilon) of the kernel call
        self.kernel = native.load("vit").layernorm
        self.kind = _LAYERNORM_RUN

    def apply(self, value: np.ndarray | None, inputs: tuple, owned: bool) -> np.ndarray:
        node = self.node
        x = value if self.source < 0 else inputs[self.source]
        params = [inputs[s] for s in node.sources[1:]]
        if x.shape == self.shape and x.dtype == F32 and params[0] is self.scale and \
                (params[1] if len(params) > 1 else None) is self.bias:
            src = np.ascontiguousarray(x)
            out = src if owned and self.source < 0 and src is x else np.empty(self.shape, F32)
            self.kernel(src, self.flat[0], self.flat[1], out, *self.sizes)
            return out
        return node.step.impl(node.step.ctx, x, *params)


def _operand_mode(other: Any, shape: tuple[int, ...]) -> int | None:
    """How the kernel reads ``other`` against a value of ``shape`` (None: not one of its forms)."""
    if not isinstance(other, np.ndarray) or other.dtype != F32:
        return None
    if other.size == 1 and other.ndim <= len(shape):
        return _OPERAND_SCALAR
    if other.shape == shape:
        return _OPERAND_FULL
    if shape and other.ndim <= len(shape) and other.shape[-1:] == shape[-1:] and other.size == shape[-1]:
        return _OPERAND_ROW
    return None


class _Chain:
    """One plan entry for a chain of nodes (see the comment above): ``run(ctx, *inputs)``."""

    def __init__(self, nodes: list[_ChainNode], input_slots: tuple[int, ...], dynamic: tuple[int, ...],
                 limit: int) -> None:
        self.nodes = nodes
        #: the slot of every input of the entry: each node's inputs but its chain operand, in order
        self.input_slots = input_slots
        #: positions of the entry's inputs that are not parameters: their shapes key the memo
        self.dynamic = dynamic
        self.limit = limit
        #: input shapes -> the output shape of every node (fast path proven) or None (reference only)
        self.shapes: dict[tuple, list[tuple[int, ...]] | None] = {}
        #: the position of the one input that is not a parameter, whose shape alone is then the
        #: memo's key (most chains: a tuple built per call is 0.3-0.5 us of a 2-5 us entry)
        self._single = dynamic[0] if len(dynamic) == 1 else None
        last = nodes[-1].step.node
        self.ctx = _Ctx(NodeSpec(" + ".join(n.step.node.name for n in nodes), "+".join(n.step.node.op for n in nodes),
                                 (), last.outputs), nodes[-1].step.ctx.opset, limit)

    @property
    def names(self) -> list[str]:
        return [n.step.node.name for n in self.nodes]

    def run(self, ctx: _Ctx, *inputs: np.ndarray | None) -> np.ndarray:
        single = self._single
        key = inputs[single].shape if single is not None else tuple([inputs[i].shape for i in self.dynamic])
        shapes = self.shapes.get(key, False)
        if shapes:
            return self._fast(inputs, shapes)
        if shapes is None:
            return self._reference(inputs)[0]
        y, seen = self._reference(inputs)
        plan = self._fast_plan(inputs, seen)
        try:
            fast = self._fast(inputs, plan)
        except ModelError:   # the nodes' own run passed: a fast path that fails is not used either
            fast = None
        proven = plan if _same(fast, y) else None
        if proven is None:
            logger.warning("chain %s: the fast path differs from the nodes' own on input shapes %s; "
                           "running the nodes one by one for these shapes", self.ctx.node.name, key)
        if len(self.shapes) >= _MEMO_LIMIT:   # one entry per batch size seen: bounded all the same
            self.shapes.clear()
        self.shapes[key] = proven
        return y

    def _reference(self, inputs: tuple[np.ndarray | None, ...]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Every node's implementation with the run loop's output checks; the output shapes."""
        value = None
        seen = []
        for node in self.nodes:
            step = node.step
            args = [value if s < 0 else inputs[s] for s in node.sources]
            value = _run_step(step.impl, step.ctx, args, step.outputs, self.limit)[0]
            seen.append(value.shape)
        return value, seen

    def _fast_plan(self, inputs: tuple[np.ndarray | None, ...], seen: list[tuple[int, ...]]) -> list[tuple[Any, tuple]]:
        """The fast path for one set of input shapes: (node or :class:`_ElementwiseRun`, output
        shape) per step, each run of at least two element-wise nodes whose operands the kernel
        reads (one value, one row, the whole shape; the value's shape unchanged), or of one that
        adds a row, as one step."""
        plan: list[tuple[Any, tuple]] = []
        k = 0
        while k < len(self.nodes):
            run, end = self._attention_run_at(k, inputs, seen)
            if run is None:
                run, end = self._elementwise_run_at(k, inputs, seen)
            if run is None:
                run, end = self._view_run_at(k, inputs, seen)
            if run is None:
                run, end = self._conv_run_at(k, inputs, seen)
            if run is None:
                run, end = self._product_run_at(k, inputs, seen)
            if run is None:
                run, end = self._layernorm_run_at(k, inputs, seen)
            if run is not None:
                plan.append((run, seen[end - 1]))
                k = end
            else:
                plan.append((self.nodes[k], seen[k]))
                k += 1
        return plan

    def _attention_run_at(self, k: int, inputs: tuple,
                          seen: list[tuple[int, ...]]) -> tuple[_AttentionRun | None, int]:
        """Nodes k.. are attention on the chain's value (see :class:`_AttentionRun`), each product
        one its node ran on the batched kernel (by the reference run's shapes), else None."""
        nodes = self.nodes
        if not k:
            return None, k      # Q must be the chain's value (at the start it would be an input)
        end, scale_at, divide, scale = k, 0, False, None

        def scale_node(at: int) -> tuple[bool, int] | None:
            """(a Div, the scale's entry input) if node ``at`` scales the value by one float32."""
            if at >= len(nodes) or seen[at] != seen[at - 1]:
                return None
            node = nodes[at]
            if node.kind != _BINARY or node.step.node.op not in ("Mul", "Div") or node.sources.count(-1) != 1:
                return None
            where = node.sources.index(-1)
            other = node.sources[1 - where]
            if (node.step.node.op == "Div" and where) or _operand_mode(inputs[other], seen[at]) != _OPERAND_SCALAR:
                return None
            return node.step.node.op == "Div", other

        def batched_at(at: int) -> int | None:
            """B's entry input if node ``at`` is a MatMul of the value by it on the batched kernel."""
            if at >= len(nodes):
                return None
            node = nodes[at]
            if node.kind != _IMPL or node.step.node.op != "MatMul" or node.step.node.domain or \
                    len(node.sources) != 2 or node.sources[0] != -1 or node.sources[1] < 0:
                return None
            b = inputs[node.sources[1]]
            a_shape = seen[at - 1]
            if not isinstance(b, np.ndarray) or b.dtype != F32 or \
                    not _on_batched_kernel(node.step.ctx, a_shape, b.shape):
                return None
            return node.sources[1]

        if (found := scale_node(end)) is not None:
            scale_at, (divide, scale), end = 1, found, end + 1
        q_shape = seen[end - 1]
        kt = batched_at(end)
        if kt is None:
            return None, k
        end += 1
        if not scale_at and (found := scale_node(end)) is not None:
            scale_at, (divide, scale), end = 2, found, end + 1
        softmax = nodes[end] if end < len(nodes) else None
        if softmax is None or softmax.kind != _SOFTMAX or softmax.sources != (-1,) or \
                softmax.arg % len(seen[end]) != len(seen[end]) - 1:
            return None, k
        end += 1
        v = batched_at(end)
        if v is None:
            return None, k
        end += 1
        kt_shape, v_shape = inputs[kt].shape, inputs[v].shape
        (m, kk), n, dv = q_shape[-2:], kt_shape[-1], v_shape[-1]
        return _AttentionRun(nodes[k:end], kt, v, (q_shape, kt_shape, v_shape, seen[end - 1]),
                             (math.prod(q_shape[:-2]), m, kk, n, dv), scale_at, divide, scale), end

    def _product_run_at(self, k: int, inputs: tuple, seen: list[tuple[int, ...]]) -> tuple[_ProductRun | None, int]:
        """A MatMul or Gemm that its node ran on the packed or batched kernel (by the reference run's
        shapes and the weight it packed), with the next node if that adds a bias row to it."""
        nodes = self.nodes
        node = nodes[k]
        op = node.step.node.op
        if node.kind != _IMPL or node.step.node.domain or op not in ("MatMul", "Gemm") or len(node.sources) < 2:
            return None, k
        shapes = [seen[k - 1] if s < 0 else getattr(inputs[s], "shape", None) for s in node.sources]
        if any(sh is None for sh in shapes) or any(not isinstance(inputs[s], np.ndarray) or inputs[s].dtype != F32
                                                   for s in node.sources if s >= 0):
            return None, k
        a_shape, b_shape = shapes[:2]
        out = seen[k]
        ctx = node.step.ctx
        cached = ctx.memo.get("packed")
        weight = inputs[node.sources[1]] if node.sources[1] >= 0 else None
        bias = None
        if op == "Gemm":
            # (read again: the memo may have been cleared since; the reference run checked them)
            alpha, beta, ta = ctx.attr_float("alpha", 1.0), ctx.attr_float("beta", 1.0), ctx.attr_int("transA", 0)
            if not (cached and cached[0] is weight and alpha == 1.0 and beta == 1.0 and not ta
                    and _packed_fits(a_shape[0], a_shape[1], weight.size)):
                return None, k
            n = out[-1]
            if len(node.sources) > 2:
                if inputs[node.sources[2]].shape not in ((n,), (1, n)) or node.sources[2] < 0:
                    return None, k
                bias = node.sources[2]
            m, kk = a_shape
        elif len(b_shape) == 2 and cached and cached[0] is weight and \
                _packed_fits(math.prod(a_shape[:-1]), a_shape[-1], weight.size):
            kk, n = b_shape
            m = math.prod(a_shape[:-1])
        elif _on_batched_kernel(ctx, a_shape, b_shape):
            (m, kk), n = a_shape[-2:], b_shape[-1]
            return _ProductRun([node], node.sources[:2], None, None, None, out,
                               (math.prod(a_shape[:-2]), m, kk, n)), k + 1
        else:
            return None, k
        end = k + 1
        if bias is None and end < len(nodes) and seen[end] == out:
            add = nodes[end]
            if add.kind == _BINARY and add.step.node.op == "Add" and len(add.sources) == 2 and -1 in add.sources:
                other = add.sources[1 - add.sources.index(-1)]
                if other >= 0 and _operand_mode(inputs[other], out) == _OPERAND_ROW:
                    bias = other
                    end += 1
        residual, end = self._residual_at(end, inputs, seen)
        return _ProductRun(nodes[k:end], node.sources[:2], weight, cached[1], bias, seen[end - 1], (1, m, kk, n),
                           residual), end

    def _layernorm_run_at(self, k: int, inputs: tuple,
                          seen: list[tuple[int, ...]]) -> tuple[_LayerNormRun | None, int]:
        """A LayerNormalization whose Scale and B are the arrays its node flattened on the
        reference run (its memo, by the shapes it saw), else None."""
        node = self.nodes[k]
        if node.kind != _LAYERNORM or any(s < 0 for s in node.sources[1:]):
            return None, k
        params = [inputs[s] for s in node.sources[1:]]
        scale, bias = params[0], params[1] if len(params) > 1 else None
        x_shape = seen[k - 1] if node.sources[0] < 0 else getattr(inputs[node.sources[0]], "shape", None)
        memo = node.step.ctx.memo
        derived = memo.get((x_shape, scale.shape, None if bias is None else bias.shape))
        affine = memo.get("affine")
        if derived is None or affine is None or affine[0] is not scale or affine[1] is not bias or \
                affine[2] != derived[3] or seen[k] != x_shape:
            return None, k
        rows, n, eps, _ = derived
        return _LayerNormRun(node, scale, bias, (affine[3], affine[4]), x_shape, (rows, n, eps)), k + 1

    def _residual_at(self, k: int, inputs: tuple, seen: list[tuple[int, ...]]) -> tuple[int | None, int]:
        """(the entry input, the end) if nodes k.. are reshapes and transposes that keep the value's
        elements in their order (only axes of size 1 move), then an Add of a float32 tensor of the
        value's shape (a residual); else (None, k)."""
        nodes = self.nodes
        end = k
        while end < len(nodes) and nodes[end].kind in (_RESHAPE, _TRANSPOSE) and nodes[end].sources[0] == -1:
            node = nodes[end]
            if node.kind == _TRANSPOSE:
                shape = seen[end - 1]
                moved = [axis for axis in (node.arg or ()) if shape[axis] != 1]
                if node.arg is None or moved != sorted(moved):
                    return None, k
            end += 1
        if end >= len(nodes) or seen[end] != seen[end - 1]:
            return None, k
        add = nodes[end]
        if add.kind != _BINARY or add.step.node.op != "Add" or len(add.sources) != 2 or add.sources.count(-1) != 1:
            return None, k
        other = add.sources[1 - add.sources.index(-1)]
        if _operand_mode(inputs[other], seen[end]) != _OPERAND_FULL:
            return None, k
        return other, end + 1

    def _view_run_at(self, k: int, inputs: tuple, seen: list[tuple[int, ...]]) -> tuple[_ViewRun | None, int]:
        nodes = self.nodes
        first = nodes[k]
        source = -1 if k else first.sources[0]
        if k:
            in_shape = seen[k - 1]
        elif isinstance(inputs[source], np.ndarray):
            in_shape = inputs[source].shape
        else:
            return None, k
        ops: list[tuple[int, Any]] = []
        end = k
        while end < len(nodes):
            node = nodes[end]
            if node.kind == _RESHAPE:
                ops.append((_RESHAPE, seen[end]))
            elif node.kind == _TRANSPOSE:
                ops.append((_TRANSPOSE, node.arg))
            elif node.sources[0] == (source if end == k else -1) and \
                    (gather := self._gather_key(node, seen[end - 1] if end > k else in_shape)) is not None:
                ops.append((_GATHER, gather))   # a ViT's Q / K / V select: basic indexing
            else:
                break
            end += 1
        if end - k < 2:
            return None, k
        contiguous = nodes[end - 1].contiguous
        scale = nodes[end] if contiguous and end < len(nodes) else None
        if scale is not None and not (
                scale.kind == _BINARY and scale.step.node.op in ("Mul", "Div") and scale.sources.count(-1) == 1
                and not (scale.step.node.op == "Div" and scale.sources.index(-1))
                and seen[end] == seen[end - 1]
                and _operand_mode(inputs[scale.sources[1 - scale.sources.index(-1)]], seen[end]) == _OPERAND_SCALAR):
            scale = None
        run = _ViewRun(first.step, source, ops, in_shape, contiguous, scale)
        return run, end + (scale is not None)

    def _conv_run_at(self, k: int, inputs: tuple, seen: list[tuple[int, ...]]) -> tuple[_ConvRun | None, int]:
        nodes = self.nodes
        node = nodes[k]
        if node.step.node.op != "Conv" or node.step.node.domain or (k and node.sources[0] >= 0):
            return None, k
        source = -1 if k else node.sources[0]
        x_shape = seen[k - 1] if k else getattr(inputs[source], "shape", None)
        w, b = inputs[node.sources[1]], inputs[node.sources[2]] if len(node.sources) > 2 else None
        if any(s in self.dynamic for s in node.sources[1:]):
            return None, k      # a computed weight or bias: the node's own code, packing per call
        ctx = node.step.ctx
        plan = ctx.memo.get(("conv", x_shape, w.shape, None if b is None else b.shape))
        if plan is None or not plan.native:
            return None, k
        packed = _conv_weight(ctx, w, "native", plan.block)
        bias = None if b is None else np.ascontiguousarray(b)
        end = k + 1
        relu = end < len(nodes) and nodes[end].kind == _RELU and nodes[end].sources == (-1,)
        clip = None if relu else self._clip_bounds_at(end, inputs)
        activated = relu or clip is not None
        end += activated
        mean, parts = False, ()
        if activated and end < len(nodes) and nodes[end].sources[:1] == (-1,) and self._spatial_mean_at(end, seen):
            mean, end = True, end + 1
        elif end < len(nodes) and nodes[end].step.node.op == "Concat" and not nodes[end].step.node.domain:
            parts = self._concat_parts(end, inputs, seen)
            end += bool(parts)
        return _ConvRun(node.step, source, packed, bias, plan.native[1], relu, mean, seen[end - 1], parts,
                        clip), end

    def _clip_bounds_at(self, k: int, inputs: tuple) -> tuple[float, float] | None:
        """Node k is a Clip of the chain's value by float32 scalar parameters (absent: no bound):
        its (lo, hi) for the conv kernel's store, else None. A NaN bound is left to the node's own
        code (np.maximum by NaN is NaN everywhere; the kernel's compare would keep the value)."""
        if k >= len(self.nodes):
            return None
        node = self.nodes[k]
        if node.step.node.op != "Clip" or node.step.node.domain or node.sources[:1] != (-1,) or \
                any(s in self.dynamic for s in node.sources[1:]):
            return None
        bounds = [-math.inf, math.inf]
        for i, at in enumerate(node.sources[1:3]):
            v = inputs[at]
            if v is None:
                continue
            if not isinstance(v, np.ndarray) or v.dtype != F32 or v.size != 1 or v.ndim > 1 or np.isnan(v).any():
                return None
            bounds[i] = float(v.reshape(()))
        return bounds[0], bounds[1]

    def _spatial_mean_at(self, k: int, seen: list[tuple[int, ...]]) -> bool:
        """Node k is a mean over every axis after the first two of a rank-4 value, as its reference
        run resolved it (GlobalAveragePool; ReduceMean by the axes it memoised for that rank)."""
        node = self.nodes[k]
        op = node.step.node.op
        if node.step.node.domain or len(seen[k - 1]) != 4:
            return False
        if op == "GlobalAveragePool":
            return True
        resolved = node.step.ctx.memo.get(4) if op == "ReduceMean" else None
        return resolved is not None and resolved[0] == (2, 3)

    def _concat_parts(self, k: int, inputs: tuple, seen: list[tuple[int, ...]]) -> tuple:
        """(channel offset, channels, entry input or -1) per input of Concat node k, if it joins a
        batch of one along the channels (axis 1 as its reference run resolved it), else ()."""
        node = self.nodes[k]
        shapes = [seen[k - 1] if s < 0 else getattr(inputs[s], "shape", None) for s in node.sources]
        if seen[k][:1] != (1,) or node.sources.count(-1) != 1 or None in shapes:
            return ()
        if node.step.ctx.memo.get(tuple(shapes)) != 1 or any(
                s >= 0 and inputs[s].dtype != F32 for s in node.sources):
            return ()
        parts, begin = [], 0
        for s, shape in zip(node.sources, shapes):
            parts.append((begin, shape[1], s))
            begin += shape[1]
        return tuple(parts)

    @staticmethod
    def _gather_key(node: _ChainNode, data_shape: tuple[int, ...]) -> tuple | None:
        """The basic-indexing key of a Gather of one index, as its node derived it for this shape
        of data on the reference run (None: another Gather, or its memo has been cleared)."""
        if node.kind != _IMPL or node.step.node.op != "Gather" or node.step.node.domain:
            return None
        found = node.step.ctx.memo.get(data_shape)
        return found[1] if type(found) is tuple and type(found[1]) is tuple else None

    def _elementwise_run_at(self, k: int, inputs: tuple,
                            seen: list[tuple[int, ...]]) -> tuple[_ElementwiseRun | None, int]:
        nodes = self.nodes
        first = nodes[k]
        if k:
            source, shape = -1, seen[k - 1]
        elif first.kind == _ERF or (first.kind == _BINARY and first.step.node.op in _ELEMENTWISE_CODES):
            # the chain's first node: its value is the input of the output's shape (the left one if both)
            fits = [s for s in first.sources if isinstance(inputs[s], np.ndarray) and inputs[s].shape == seen[0]]
            if not fits:
                return None, k
            source, shape = fits[0], seen[0]
        else:
            return None, k
        program, operands = [], []
        end = k
        while end < len(nodes) and end - k < _ELEMENTWISE_MAX and seen[end] == shape:
            node = nodes[end]
            # the value's position among the node's inputs: -1 inside the chain, the source at its start
            at = [i for i, s in enumerate(node.sources) if s == (source if end == k else -1)]
            if node.kind == _ERF and at == [0]:
                program += [_ELEMENTWISE_ERF, 0, 0]
            elif node.kind == _BINARY and node.step.node.op in _ELEMENTWISE_CODES and len(node.sources) == 2 and at:
                other = node.sources[1 - at[0]]
                mode = _operand_mode(inputs[other], shape) if other >= 0 else None
                if mode is None:
                    break
                program += [_ELEMENTWISE_CODES[node.step.node.op][at[0]], mode, len(operands)]
                operands.append(other)
            else:
                break
            end += 1
        # one node alone only when it broadcasts a row (a bias): numpy's broadcast loop measured
        # 3.3 us on a (17, 1, 192) + (192,), the kernel 2.0; a same-shape add is as fast in numpy
        if end - k < 2 and not (end > k and program[1] == _OPERAND_ROW):
            return None, k
        n = shape[-1] if shape else 1
        return _ElementwiseRun(first.step, source, bytes(program), tuple(operands),
                               math.prod(shape) // n if n else 0, n), end

    def _fast(self, inputs: tuple[np.ndarray | None, ...], plan: list[tuple[Any, tuple]]) -> np.ndarray:
        value: Any = None
        owned = False
        node = self.nodes[0]
        try:
            for node, shape in plan:
                kind = node.kind
                if kind == _ELEMENTWISE:
                    value = _elementwise_run(node, value, inputs, owned)
                    owned = True
                    continue
                if kind == _VIEWS:
                    x = value if node.source < 0 else inputs[node.source]
                    value = node.apply(value, inputs)
                    # a view of (or a copy from) the chain's array; or a copy the run made of an
                    # entry input's view (its last node contiguous: a new array, owning its data)
                    owned = (owned and node.source < 0) or (node.contiguous and value is not x and value.base is None)
                    continue
                if kind == _LAYERNORM_RUN:
                    value = node.apply(value, inputs, owned)
                    owned = True
                    continue
                if kind == _CONV_RUN or kind == _PRODUCT or kind == _ATTENTION:
                    value = node.apply(value, inputs)
                    owned = True
                    continue
                if kind == _RESHAPE or kind == _TRANSPOSE:
                    x = value if node.sources[0] < 0 else inputs[node.sources[0]]
                    value = x.reshape(shape) if kind == _RESHAPE else x.transpose(node.arg)
                    if node.contiguous:
                        value = np.ascontiguousarray(value)
                    continue
                if owned and value.shape == shape:
                    if kind == _BINARY:
                        a, b = [value if s < 0 else inputs[s] for s in node.sources]
                        node.arg(a, b, out=value)
                        continue
                    if kind == _ERF:
                        _erf(value, out=value)
                        continue
                    if kind == _SOFTMAX:
                        _softmax_along(value, node.arg % len(shape), out=value)
                        continue
                    if kind == _RELU:
                        np.maximum(value, F32.type(0), out=value)
                        continue
                    if kind == _BATCHNORM and node.sources[0] < 0:
                        # the parameters' checks and fold as the node's own (kept per arrays)
                        factor, offset = _batchnorm_affine(node.step.ctx, value, *[inputs[s] for s in node.sources[1:]])
                        np.multiply(value, factor, out=value)
                        value += offset
                        continue
                    if kind == _LAYERNORM and node.sources[0] < 0:
                        # the node's own kernel call, its checks kept per shape, into the chain's array
                        scale, *bias = [inputs[s] for s in node.sources[1:]]
                        _layernorm_into(node.step.ctx, value, scale, bias[0] if bias else None, value)
                        continue
                step = node.step
                value = step.impl(step.ctx, *[value if s < 0 else inputs[s] for s in node.sources])
                owned = node.fresh
        except (ModelError, PackageFormatError):
            raise
        except (ValueError, TypeError, IndexError, FloatingPointError, MemoryError) as exc:
            raise ModelError(f"node {node.step.node.name!r} ({node.step.node.op}) failed: {type(exc).__name__}") from None
        return value


def _same(a: Any, b: Any) -> bool:
    """Bitwise equality of two float32 results (NaN equal to NaN), as the chain proof needs."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
            and np.array_equal(a.view(np.uint32) if a.dtype == F32 else a, b.view(np.uint32) if b.dtype == F32 else b))


class HeadInterpreter:
    """Evaluates a head graph on float32 numpy arrays; refuses anything outside its operator set.

    Construction verifies the package against the index: the graph file parses, every node is
    a supported operator with supported attributes and opset, every parameter the graph declares
    is an index entry with the same name, dtype and shape (in the same order), the blob is
    exactly as long as the entries cover, and each parameter slice matches its sha256. The
    index itself was checked against its Merkle root when it was decoded; callers compare that
    root with the one registered on-chain.

    Not thread-safe: :meth:`run` updates the per-shape memos of its nodes and chains (the enclave
    serialises its entry calls); a second thread entering :meth:`run` while one is in it gets
    RuntimeError from ``Context.run`` (the steps' context is the interpreter's own).
    """

    def __init__(self, package: HeadPackage, index: ParameterIndexTable, *,
                 max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS) -> None:
        self._max = int(max_tensor_elements)
        graph = decode_graph(package.graph_bytes)
        self._graph = graph
        if not MIN_OPSET <= graph.opset <= MAX_OPSET:
            raise UnsupportedOperatorError(f"head graph uses ai.onnx opset {graph.opset}; this "
                                           f"interpreter implements opsets {MIN_OPSET}..{MAX_OPSET}")
        self._params = self._load_parameters(package, index, graph)
        self._plan = self._validate_nodes(graph)
        self._inputs_by_name = {s.name: s for s in graph.inputs}
        self._input_slots = tuple((s.name, self._slots[s.name]) for s in graph.inputs)
        self._output_slots = tuple((s.name, self._slots[s.name], s.shape, *_shape_check(s.shape))
                                   for s in graph.outputs)
        #: the input check of every call: NaN and infinity in one pass (enclave/csrc/floor.c)
        self._all_finite = native.load("floor").all_finite
        # the steps run in a context whose numpy error state ignores floating-point errors (IEEE
        # results, no warnings): entered per call by Context.run (0.05 us), np.errstate per call
        # cost 1.3-2.6 us, a tenth of a one-node head
        with np.errstate(all="ignore"):
            self._ignoring_fp_errors = contextvars.copy_context()
        #: the sets of input shapes that passed the shape, size and batch checks
        self._accepted_shapes: set[tuple[tuple[int, ...], ...]] = set()
        # the loop's tuple per entry (a node or a chain of them), unpacked without attribute lookups
        self._steps = self._compile(self._plan, graph)
        self.merkle_root = index.merkle_root()
        logger.info("head loaded nodes=%d params=%d opset=%d", len(graph.nodes), len(self._params), graph.opset)

    # -- construction checks --

    @staticmethod
    def _load_parameters(package: HeadPackage, index: ParameterIndexTable,
                         graph: HeadGraph) -> dict[str, np.ndarray]:
        declared = [(p.name, p.dtype, tuple(p.shape)) for p in graph.parameters]
        indexed = [(e.name, e.dtype, e.shape) for e in index.entries]
        if declared != indexed:
            missing = sorted({d[0] for d in declared} - {i[0] for i in indexed})
            extra = sorted({i[0] for i in indexed} - {d[0] for d in declared})
            raise PackageFormatError(
                "the parameter index does not match the head graph's parameters "
                f"(missing from index: {missing}, not in graph: {extra}; or dtype/shape/order "
                "differ); provision the index that was built with this package")
        if len(package.params_bytes) != index.blob_length:
            raise PackageFormatError(f"parameter blob has {len(package.params_bytes)} bytes, the index "
                                     f"covers {index.blob_length}")
        return {e.name: read_parameter(package.params_bytes, e) for e in index.entries}

    def _validate_nodes(self, graph: HeadGraph) -> list[_Plan]:
        known: set[str] = {s.name for s in graph.inputs} | set(self._params)
        for s in graph.inputs:
            if s.dtype != "float32":
                raise UnsupportedOperatorError(f"head input {s.name!r} has dtype {s.dtype}; only float32")
            if s.shape[1:].count(None):
                raise UnsupportedOperatorError(f"head input {s.name!r} has a symbolic non-batch dimension")
        constants = {k: v.dtype.name for k, v in self._params.items()}
        # every tensor name gets a slot of the list a run fills: parameters, head inputs, outputs
        slots: dict[str, int] = {}

        def slot(name: str) -> int:
            return slots.setdefault(name, len(slots))

        for name in self._params:
            slot(name)
        for s in graph.inputs:
            slot(s.name)
        plan = []
        for node in graph.nodes:
            problems = node_problems(node, graph.opset, constants, graph.domains)
            key = op_key(node.domain, node.op)
            if problems:
                raise UnsupportedOperatorError(f"node {node.name!r} ({node.op}): " + "; ".join(problems)
                                               + (f"; supported operators: {sorted(OPERATORS)}"
                                                  if key not in OPERATORS else ""))
            spec = OPERATORS[key]
            opset = graph.domains[spec.domain] if spec.domain else graph.opset
            lo_in = spec.input_range(opset)[0]
            ins = list(node.inputs)
            while ins and ins[-1] == "":
                ins.pop()
            outs = [o for o in node.outputs]
            for i, name in enumerate(ins):
                if name and name not in known:
                    raise ModelError(f"node {node.name!r} ({node.op}): input {name!r} is not defined "
                                     "before it (graph not topologically sorted or tensor missing)")
                if not name and i < lo_in:
                    raise ModelError(f"node {node.name!r} ({node.op}): required input {i} is empty")
            for o in outs:
                if o:
                    known.add(o)
            declared = []
            for pos, o in enumerate(node.outputs):
                if o:
                    v = graph.values.get(o)
                    shape = tuple(v.shape) if v is not None else None
                    kind, fast = _shape_check(shape)
                    want = np.dtype(v.dtype) if v is not None else F32
                    declared.append((pos, slot(o), want, kind, fast, shape, want if want in (F32, I64) else None))
            ctx = _Ctx(node, opset, self._max)
            ctx.parameters = frozenset(i for i, name in enumerate(ins) if name in self._params)
            plan.append(_Plan(node, spec.impl, tuple(slot(n) if n else -1 for n in ins), ctx, tuple(declared)))
        for s in graph.outputs:
            if s.name not in known:
                raise ModelError(f"head output {s.name!r} is produced by no node")
            if s.dtype != "float32" or s.shape[1:].count(None):
                raise UnsupportedOperatorError(f"head output {s.name!r} must be float32 with static "
                                               "non-batch dimensions")
        self._slots = slots
        # one slot more than names, always None: an absent input's slot -1 reads it
        self._env_template: list[np.ndarray | None] = [None] * (len(slots) + 1)
        for name, value in self._params.items():
            self._env_template[slots[name]] = value
        return plan

    def _compile(self, plan: list[_Plan], graph: HeadGraph) -> list[tuple]:
        """The run loop's entries: each node, or a :class:`_Chain` in place of the last node of a
        chain (every node of the chain reads only tensors defined before its own position, so
        before the last node's; no other node reads the chain's intermediates)."""
        uses: dict[str, int] = {}
        for step in plan:
            for name in step.node.inputs:
                uses[name] = uses.get(name, 0) + 1
        for s in graph.outputs:
            uses[s.name] = uses.get(s.name, 0) + 2   # a head output never links a chain
        produced_by = {step.node.outputs[0]: i for i, step in enumerate(plan) if self._chainable(step)}
        after: dict[int, int] = {}      # producer index -> its consumer in a chain
        link_pos: dict[int, int] = {}   # consumer index -> the input position of its chain operand
        for i, step in enumerate(plan):
            if not self._chainable(step):
                continue
            for pos, name in enumerate(step.node.inputs):
                j = produced_by.get(name)
                if j is not None and uses[name] == 1:
                    after[j] = i
                    link_pos[i] = pos
                    break
        chains: dict[int, _Chain] = {}   # index of a chain's last node -> the chain
        inside: set[int] = set()
        for first in sorted(set(after) - set(link_pos)):
            members = [first]
            while members[-1] in after:
                members.append(after[members[-1]])
            chains[members[-1]] = self._chain([plan[i] for i in members], [link_pos.get(i, -1) for i in members])
            inside.update(members)
        steps = []
        size = len(self._env_template)
        for i, step in enumerate(plan):
            # (implementation, env -> its arguments, ctx, output checks, (position, slot) of each output)
            stores = tuple((pos, out_slot) for pos, out_slot, *_ in step.outputs)
            if i in chains:
                chain = chains[i]
                steps.append((chain.run, _fetcher(chain.input_slots, size), chain.ctx, step.outputs, stores))
            elif i not in inside:
                steps.append((step.impl, _fetcher(step.input_slots, size), step.ctx, step.outputs, stores))
        if chains:
            logger.info("head plan entries=%d chains=%d nodes_in_chains=%d", len(steps), len(chains), len(inside))
        return steps

    @staticmethod
    def _chainable(step: _Plan) -> bool:
        """A node with one output, of an operator with one output (a chain passes one array on)."""
        return len(step.node.outputs) == 1 and len(step.outputs) == 1 and \
            OPERATORS[op_key(step.node.domain, step.node.op)].outputs == (1, 1)

    def _chain(self, steps: list[_Plan], link_pos: list[int]) -> _Chain:
        input_slots: list[int] = []
        nodes: list[_ChainNode] = []
        kinds = [self._chain_kind(step) for step in steps]
        for k, (step, link) in enumerate(zip(steps, link_pos)):
            sources = []
            for pos, slot in enumerate(step.input_slots):
                if k and pos == link:
                    sources.append(-1)
                else:
                    sources.append(len(input_slots))
                    input_slots.append(slot)
            kind, arg = kinds[k]
            view_follows = k + 1 < len(steps) and kinds[k + 1][0] in (_RESHAPE, _TRANSPOSE)
            nodes.append(_ChainNode(step, tuple(sources), kind, arg, contiguous=not view_follows,
                                    fresh=step.node.op in _CHAIN_FRESH and not step.node.domain))
        n_params = len(self._params)
        # a parameter's or an absent input's shape never changes: only the rest key the memo
        dynamic = tuple(i for i, slot in enumerate(input_slots) if slot >= n_params)
        return _Chain(nodes, tuple(input_slots), dynamic, self._max)

    @staticmethod
    def _chain_kind(step: _Plan) -> tuple[int, Any]:
        node = step.node
        if node.domain:
            return _IMPL, None
        if node.op in _CHAIN_RESHAPES:
            return _RESHAPE, None
        if node.op == "Transpose":
            perm = node.attrs.get("perm")
            # an invalid perm fails the reference run, before the fast path is ever taken
            return _TRANSPOSE, tuple(perm) if isinstance(perm, list) else None
        if node.op in _CHAIN_IN_PLACE:
            return _BINARY, _CHAIN_IN_PLACE[node.op]
        if node.op == "Erf":
            return _ERF, None
        if node.op == "Relu":
            return _RELU, None
        if node.op == "BatchNormalization":
            return _BATCHNORM, None
        if node.op == "LayerNormalization":
            return _LAYERNORM, None
        axis = node.attrs.get("axis", -1)
        if node.op == "Softmax" and step.ctx.opset >= 13 and type(axis) is int:
            return _SOFTMAX, axis
        return _IMPL, None

    # -- public surface --

    @property
    def input_specs(self) -> list[tuple[str, tuple[int | None, ...], str]]:
        """(name, shape with None for the batch dimension, dtype) of every head input."""
        return [(s.name, s.shape, s.dtype) for s in self._graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self._graph.outputs]

    @property
    def output_policy(self) -> str:
        """What of the head's output may leave the enclave: label, label_scores or features."""
        return self._graph.output_policy

    @property
    def opset(self) -> int:
        return self._graph.opset

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Evaluate the head. ``inputs`` maps every head input name to a float32 array."""
        if inputs.keys() != self._inputs_by_name.keys():
            raise ModelError(f"head inputs must be exactly {sorted(self._inputs_by_name)}, got {sorted(inputs)}")
        env = self._env_template.copy()
        shapes = ()
        for name, slot in self._input_slots:
            x = inputs[name]
            if not isinstance(x, np.ndarray) or x.dtype != F32:
                raise ModelError(f"head input {name!r} must be a float32 numpy array, got "
                                 f"{getattr(x, 'dtype', type(x).__name__)}")
            shapes += (x.shape,)
            env[slot] = x
        if shapes not in self._accepted_shapes:   # shapes, size limit and batch: once per set of shapes
            self._check_input_shapes(inputs)
            if len(self._accepted_shapes) >= _MEMO_LIMIT:
                self._accepted_shapes.clear()
            self._accepted_shapes.add(shapes)
        all_finite = self._all_finite
        for name, slot in self._input_slots:
            if not all_finite(np.ascontiguousarray(env[slot])):
                raise ModelError(f"head input {name!r} contains NaN or infinity")
        self._ignoring_fp_errors.run(self._run_steps, env)
        out = {}
        for name, slot, shape, kind, fast in self._output_slots:
            y = env[slot]
            if not (y.shape == fast if kind == 1 else (y.ndim == len(shape) and y.shape[1:] == fast) if kind == 2
                    else _shape_matches(y.shape, shape)):
                raise ModelError(f"head output {name!r} has shape {y.shape}, expected {shape}")
            out[name] = np.ascontiguousarray(y)
        return out

    def _run_steps(self, env: list[np.ndarray | None]) -> None:
        # everything per node is resolved in the plan (slots, checks): heads of small layers are
        # dominated by the interpreter's own per-node cost, not by numpy
        limit = self._max
        for impl, fetch, ctx, outputs, stores in self._steps:
            ys = _run_step(impl, ctx, fetch(env), outputs, limit)
            for pos, out_slot in stores:
                env[out_slot] = ys[pos]

    def _check_input_shapes(self, inputs: Mapping[str, np.ndarray]) -> None:
        batch: int | None = None
        for name, spec in self._inputs_by_name.items():
            x = inputs[name]
            if not _shape_matches(x.shape, spec.shape):
                raise ModelError(f"head input {name!r} has shape {x.shape}, expected {spec.shape}")
            if x.size > self._max:
                raise ModelError(f"head input {name!r} has {x.size} elements, more than the limit {self._max}")
            if spec.shape and spec.shape[0] is None:
                if batch is not None and x.shape[0] != batch:
                    raise ModelError(f"head inputs disagree on the batch size ({batch} vs {x.shape[0]})")
                batch = x.shape[0]



def apply_output_policy(policy: str, scores: np.ndarray) -> dict[str, np.ndarray]:
    """What leaves the enclave for one head output under ``policy``.

    ``label``: the arg-max class per row (int64); ``public_label``: the same for exactly one row
    (the enclave also signs it in plaintext, so a batch would publish more than one answer);
    ``label_scores``: that plus the scores;
    ``features``: the output vector itself (embedding models); ``ctc_greedy``: for sequence
    scores (batch, steps, classes), CTC greedy decoding: the arg-max class per step, repeats
    merged, the blank (class :data:`CTC_BLANK`) dropped; a list of class indices per row, so the
    scores themselves (and where each character sits) stay inside.
    """
    if policy == "ctc_greedy":
        if scores.ndim != 3:
            raise ModelError(f"the ctc_greedy policy needs (batch, steps, classes) scores, got shape "
                             f"{list(scores.shape)}")
        return {"sequences": [ctc_greedy_collapse(row) for row in np.argmax(scores, axis=-1)]}
    if scores.ndim != 2:
        scores = scores.reshape(scores.shape[0], -1) if scores.ndim > 1 else scores.reshape(1, -1)
    if policy == "label":
        return {"label": np.argmax(scores, axis=-1).astype(np.int64)}
    if policy == "public_label":
        if scores.shape[0] != 1:
            raise ModelError(f"the public_label policy publishes one label per request; got {scores.shape[0]} rows "
                             "(send one example per request)")
        return {"label": np.argmax(scores, axis=-1).astype(np.int64)}
    if policy == "label_scores":
        return {"label": np.argmax(scores, axis=-1).astype(np.int64), "scores": scores.astype(F32)}
    if policy == "features":
        return {"features": scores.astype(F32)}
    raise ModelError(f"unknown output policy {policy!r}; known: label, label_scores, features, ctc_greedy, "
                     "public_label")


#: The CTC blank class of the ``ctc_greedy`` policy (CRNN and PaddleOCR put it first).
CTC_BLANK = 0


def ctc_greedy_collapse(steps: np.ndarray) -> np.ndarray:
    """One row of per-step classes with repeats merged and blanks dropped (int64)."""
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    keep = np.ones(steps.shape, dtype=bool)
    keep[1:] = steps[1:] != steps[:-1]
    return steps[keep & (steps != CTC_BLANK)]


#: op -> allowed attribute names (derived from :data:`OPERATORS`; kept for callers).
SUPPORTED_OPS: dict[str, frozenset[str]] = supported_operators()
