"""The backbone engine of the normal environment (REE): onnxruntime on the CPU.

The backbone holds only public parameters; it turns a request's input into the tensors that
cross into the enclave. Inputs are checked against the model's declared names, dtypes and
shapes before onnxruntime sees them, so a malformed request fails with a clear error.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from splitseal.errors import InvalidInputError, ModelError

logger = logging.getLogger(__name__)


def ort_session(onnx_bytes: bytes, *, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session over a serialised model (deterministic thread count)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None


class Backbone:
    """Runs a backbone ONNX model; ``run`` returns every crossing tensor by name."""

    def __init__(self, onnx_bytes: bytes, *, threads: int = 1) -> None:
        self.onnx_bytes = bytes(onnx_bytes)
        self._session = ort_session(self.onnx_bytes, threads=threads)
        model = onnx.load_model_from_string(self.onnx_bytes)
        specs = []
        for inp in self._session.get_inputs():
            shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
            if inp.type != "tensor(float)":
                raise ModelError(f"backbone input {inp.name!r} has type {inp.type}; only float32 is supported")
            specs.append((inp.name, shape, "float32"))
        self._specs = specs
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
        #: the model's metadata (the split keeps the whole model's on the backbone: e.g. the
        #: character list a text recogniser's indices are decoded with)
        self.metadata: dict[str, str] = {p.key: p.value for p in model.metadata_props}

    @property
    def input_specs(self) -> list[tuple[str, tuple[int | None, ...], str]]:
        """(name, shape with None for symbolic dimensions, dtype) of each input."""
        return list(self._specs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Evaluate the backbone; ``inputs`` maps each input name to a float32 array."""
        names = {s[0] for s in self._specs}
        if set(inputs) != names:
            raise InvalidInputError(f"backbone inputs must be exactly {sorted(names)}, got {sorted(inputs)}")
        feed = {}
        for name, shape, _ in self._specs:
            x = inputs[name]
            if not isinstance(x, np.ndarray) or x.dtype != np.float32:
                raise InvalidInputError(f"backbone input {name!r} must be a float32 array, got "
                                        f"{getattr(x, 'dtype', type(x).__name__)}")
            if x.ndim != len(shape) or any(d is not None and a != d for a, d in zip(x.shape, shape)):
                raise InvalidInputError(f"backbone input {name!r} has shape {x.shape}, expected {shape} "
                                        "(None = any batch size)")
            if not np.all(np.isfinite(x)):
                raise InvalidInputError(f"backbone input {name!r} contains NaN or infinity")
            feed[name] = x
        outs = self._session.run(self._outputs, feed)
        return dict(zip(self._outputs, (np.asarray(o, dtype=np.float32) for o in outs)))
