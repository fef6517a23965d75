"""Fold shape-only subgraphs by evaluating them, before the model is imported for a split.

Exporters compute shapes at run time: ``Shape -> Slice -> Concat -> Reshape`` for a view,
``Shape -> Expand`` for ``x / norm.expand_as(x)``, ``Shape -> ConstantOfShape`` (or a zero
constant expanded to ``[2, N, H]``) for an RNN's initial state, ``Shape -> Cast -> Sqrt`` for an
attention scale. None of them depends on a value, only on the input's shape, so the split can
fold them: the enclave then never has to run shape arithmetic, and the head holds only its real
operators. The symbolic folder of the importer (:func:`splitseal.onnx_import.fold_shape_chains`)
covers the common chains by reasoning; this one covers the rest by running them.

Steps:

1. A tensor is *shape-derived* when a ``Shape``/``Size`` node produces it, or a node whose
   inputs are all shape-derived or small constants (integer, boolean or scalar: never weights).
2. Every place a shape-derived tensor is read by a node that is not itself shape-derived is a
   *sink*. The model runs on onnxruntime at two batch sizes (2 and 3; random inputs of the
   model's static shapes) with every sink tensor as an extra output.
3. A sink whose value is the same at both batch sizes becomes a constant. Otherwise, where the
   difference is the batch alone, it becomes a batch-agnostic constant: a ``Reshape`` target
   whose one varying entry becomes ``-1``; an ``Expand`` target whose varying entries are the
   data's own dimensions there, which become ``1``; an RNN's initial state that is all zeros is
   dropped (ONNX's default initial state is zero). Anything else is left as it is.
4. Shape-derived nodes left without consumers are removed.

A model whose inputs have dynamic dimensions besides the batch, or are not float, is left as it
is (no samples to run it on).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from orchestrator.models.backbone import ort_session

logger = logging.getLogger(__name__)

_SHAPE_SOURCES = ("Shape", "Size")
#: (op, input index) of RNN initial states, whose default (input absent) is all zeros
_RNN_STATES = {("LSTM", 5), ("LSTM", 6), ("GRU", 5), ("RNN", 5)}
_TRIAL_BATCHES = (2, 3)
_INTEGER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
                  onnx.TensorProto.UINT8, onnx.TensorProto.BOOL}


def _small(t: onnx.TensorProto) -> bool:
    """An integer or boolean constant, or a scalar: shape arithmetic's operands, never weights."""
    return t.data_type in _INTEGER_TYPES or np.prod(t.dims, dtype=np.int64) <= 1


def _shape_derived(graph: onnx.GraphProto) -> set[str]:
    small = {t.name for t in graph.initializer if _small(t)}
    derived: set[str] = set()
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is None or _small(value):
                small.update(node.output)
            continue
        ins = [i for i in node.input if i]
        if node.op_type in _SHAPE_SOURCES or (ins and all(i in small or i in derived for i in ins)):
            derived.update(o for o in node.output if o)
    return derived


def _trial_feeds(model: onnx.ModelProto) -> list[dict[str, np.ndarray]] | None:
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    specs = []
    for v in model.graph.input:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT or not t.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if not dims or any(d is None for d in dims[1:]):
            return None
        specs.append((v.name, dims))
    if not specs or any(dims[0] not in (None,) for _, dims in specs):
        return None   # a fixed batch: the symbolic folder folds what it can into plain constants
    return [{name: rng.random((b, *dims[1:]), dtype=np.float32) for name, dims in specs} for b in _TRIAL_BATCHES]


def _run_with_outputs(model: onnx.ModelProto, names: list[str], feeds: list[dict[str, np.ndarray]]
                      ) -> list[dict[str, np.ndarray]] | None:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for n in names:
        if n not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=n))
    try:
        sess = ort_session(probe.SerializeToString())
        return [dict(zip(names, sess.run(names, feed))) for feed in feeds]
    except Exception as exc:  # a model onnxruntime cannot run this way is imported unfolded
        logger.info("shape folding skipped: onnxruntime could not run the probe (%s)", str(exc).splitlines()[0])
        return None


def fold_shape_subgraphs(model: onnx.ModelProto) -> bool:
    """Fold in place (see the module's steps); True when the model changed."""
    g = model.graph
    derived = _shape_derived(g)
    if not derived:
        return False
    sinks = [(node, k, i) for node in g.node if not any(o in derived for o in node.output)
             for k, i in enumerate(node.input) if i in derived]
    sinks += [(None, -1, o.name) for o in g.output if o.name in derived]
    if not sinks:
        return False
    feeds = _trial_feeds(model)
    if feeds is None:
        return False
    wanted = sorted({t for _, _, t in sinks} | {n.input[0] for n, k, _ in sinks if n is not None
                                                 and n.op_type == "Expand" and k == 1})
    runs = _run_with_outputs(model, wanted, feeds)
    if runs is None:
        return False
    a, b = runs
    inits = {t.name for t in g.initializer}
    added: dict[str, np.ndarray] = {}

    def constant(name: str, value: np.ndarray) -> str:
        if name not in added and name not in inits:
            added[name] = value
        return name

    changed = False
    for node, k, t in sinks:
        va, vb = a[t], b[t]
        if node is None:
            continue
        if va.shape == vb.shape and np.array_equal(va, vb):
            node.input[k] = constant(f"{t}__folded", va)
            changed = True
        elif (node.op_type, k) in _RNN_STATES and not va.any() and not vb.any():
            node.input[k] = ""
            changed = True
        elif node.op_type == "Reshape" and k == 1 and va.ndim == 1 and va.shape == vb.shape:
            allowzero = any(at.name == "allowzero" and at.i for at in node.attribute)
            varying = np.flatnonzero(va != vb)
            if len(varying) == 1 and -1 not in np.delete(va, varying) and not allowzero:
                target = va.copy()
                target[varying] = -1
                node.input[k] = constant(f"{t}__batch_agnostic", target)
                changed = True
        elif node.op_type == "Expand" and k == 1 and va.ndim == 1 and va.shape == vb.shape:
            da, db = a[node.input[0]].shape, b[node.input[0]].shape
            varying = np.flatnonzero(va != vb)
            offset = len(va) - len(da)
            if len(da) == len(db) and all(p - offset >= 0 and da[p - offset] == va[p] and db[p - offset] == vb[p]
                                          for p in varying):
                target = va.copy()
                target[varying] = 1   # broadcasting 1 keeps the data's own dimension
                node.input[k] = constant(f"{t}__batch_agnostic", target)
                changed = True
    if not changed:
        return False
    for name, value in added.items():
        g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    # drop shape-derived nodes nobody reads any more (repeat: chains die back to their Shape)
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if all(o not in used for o in n.output if o)
                and (any(o in derived for o in n.output) or n.op_type == "Constant")]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used and t.name in added]:
        g.initializer.remove(t)
    del g.value_info[:]   # stale after the rewrite; the importer infers shapes again
    logger.info("shape subgraphs folded: %d constants", len(added))
    return True


def folded_bytes(data: bytes) -> bytes:
    """The model with its shape-only subgraphs folded (the bytes as given when nothing folds)."""
    try:
        model = onnx.load_model_from_string(data)
    except Exception:
        return data   # the importer reports a corrupt file
    return model.SerializeToString() if fold_shape_subgraphs(model) else data

