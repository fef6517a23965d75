"""Several tensors crossing one cut, carried into the enclave as one transfer tensor.

A cut that k > 1 tensors cross (inside a ResNet stage: the skip connection and the main path)
sends them as ONE float32 tensor of shape ``(B, S_1 + ... + S_k)``: row ``b`` is row ``b`` of
each crossing tensor flattened in C order, concatenated in the order of the head graph's inputs
(the backbone's outputs, same order). ``B`` is the leading (batch) dimension they all share and
``S_i`` the product of tensor ``i``'s other dimensions. The head graph, whose hash the registry
records, names the tensors and fixes their shapes, so the enclave splits the rows back; the one
ciphertext (its hash is the transfer commitment on-chain), the backbone output commitment and the
transfer header (shape ``(B, ΣS)``, dtype) therefore cover every crossing tensor. A single
crossing tensor is sent as itself, unchanged. docs/FORMATS.md describes the layout.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from splitseal.errors import InvalidInputError

#: (name, shape) of each crossing tensor, in head-input order; ``None`` marks the batch dimension.
Spec = tuple[str, Sequence[int | None]]


def row_sizes(specs: Sequence[Spec]) -> list[int]:
    """Elements per batch row of each crossing tensor (its non-leading dimensions must be static)."""
    sizes = []
    for name, shape in specs:
        if len(shape) < 1 or any(d is None for d in shape[1:]):
            raise InvalidInputError(f"crossing tensor {name!r} has shape {list(shape)}: a bundle needs a leading "
                                    "batch dimension and static other dimensions")
        sizes.append(math.prod(int(d) for d in shape[1:]))
    return sizes


def bundle_shape(specs: Sequence[Spec]) -> tuple[int | None, int]:
    """The transfer tensor's shape for these crossing tensors (``None`` = any batch)."""
    leading = {s[0] for _, s in specs}
    if len(leading) != 1:
        raise InvalidInputError(f"crossing tensors {[n for n, _ in specs]} have different leading dimensions "
                                f"{[list(s)[:1] for _, s in specs]}; they cannot be carried row by row")
    return (next(iter(leading)), sum(row_sizes(specs)))


def pack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The backbone's crossing tensors (head-input order) as one ``(B, ΣS)`` float32 tensor."""
    if not arrays:
        raise InvalidInputError("no tensors to pack")
    batch = {int(a.shape[0]) if a.ndim else -1 for a in arrays}
    if len(batch) != 1 or -1 in batch:
        raise InvalidInputError(f"crossing tensors have leading dimensions {[list(a.shape)[:1] for a in arrays]}; "
                                "they must share the batch dimension")
    (b,) = batch
    return np.concatenate([np.asarray(a, np.float32).reshape(b, -1) for a in arrays], axis=1)


def unpack(packed: np.ndarray, specs: Sequence[Spec]) -> Mapping[str, np.ndarray]:
    """Split a ``(B, ΣS)`` transfer tensor back into the named crossing tensors (views, no copy)."""
    sizes = row_sizes(specs)
    if packed.ndim != 2 or packed.shape[1] != sum(sizes):
        raise InvalidInputError(f"bundle of shape {list(packed.shape)} does not hold {len(specs)} tensors of "
                                f"{sizes} elements per row (expected (B, {sum(sizes)}))")
    out, start = {}, 0
    b = packed.shape[0]
    for (name, shape), size in zip(specs, sizes):
        out[name] = packed[:, start:start + size].reshape((b,) + tuple(int(d) for d in shape[1:]))
        start += size
    return out
