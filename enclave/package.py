"""The head package and the parameter index table: binary formats, hashes, Merkle root.

The protected part of a model (neck + head) travels to the enclave as two separately encrypted
and separately provisioned objects (see ``docs/FORMATS.md`` for the byte layouts):

* the **head package** = a *graph file* (operators, attributes, tensor names and shapes; no
  weights) + a *parameter blob* (every parameter's raw little-endian bytes, back to back);
* the **parameter index table**: for each parameter its name, dtype, shape, offset and length in
  the blob and the sha256 of that slice, plus the Merkle root of the entries.

The interpreter fetches every parameter through the index, so a blob that does not match the
index (or an index that does not match the root registered on-chain) is refused.

This module is part of the enclave's trusted computing base: it imports only the standard
library, numpy, ``eth_utils`` and ``splitseal.errors``. Nothing here uses pickle; every decoder
checks magic, version, every length and every count and raises :class:`PackageFormatError` on
anything unexpected instead of guessing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from splitseal.errors import PackageFormatError
from splitseal.protocol.crypto import keccak256

logger = logging.getLogger(__name__)

# --- constants ---------------------------------------------------------------------------

PACKAGE_MAGIC = b"SSHEADPK"
INDEX_MAGIC = b"SSPINDEX"
GRAPH_MAGIC = b"SSHGRAPH"
FORMAT_VERSION = 1

#: dtype code (one byte in the index) -> numpy dtype name. Little-endian on the wire.
DTYPE_CODES: dict[int, str] = {1: "float32", 2: "int64"}
DTYPE_BY_NAME: dict[str, int] = {v: k for k, v in DTYPE_CODES.items()}
_NP_DTYPES = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}

MAX_NAME_BYTES = 1024
MAX_RANK = 8
MAX_ENTRIES = 1_000_000
#: Upper bound on a graph file's JSON document; heads are small, anything bigger is refused.
MAX_GRAPH_JSON_BYTES = 64 * 1024 * 1024

# Domain-separation prefixes of the Merkle tree (a leaf can never be confused with a node).
MERKLE_LEAF_PREFIX = b"\x00"
MERKLE_NODE_PREFIX = b"\x01"

_HEADER = struct.Struct(">8sHH")          # magic, version, reserved (must be 0)
_PKG_LENGTHS = struct.Struct(">QQ")       # graph length, params length
_IDX_COUNT = struct.Struct(">I")          # entry count
_GRAPH_LEN = struct.Struct(">I")          # graph JSON length


def np_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype for a format dtype name, or PackageFormatError."""
    try:
        return _NP_DTYPES[name]
    except KeyError:
        raise PackageFormatError(f"unknown dtype {name!r}; supported: {sorted(_NP_DTYPES)}") from None


def _as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PackageFormatError(f"{what} must be bytes, got {type(data).__name__}")
    return bytes(data)


def _check_header(data: bytes, magic: bytes, what: str) -> int:
    if len(data) < _HEADER.size:
        raise PackageFormatError(f"{what} is truncated: {len(data)} bytes, header needs {_HEADER.size}")
    got_magic, version, reserved = _HEADER.unpack_from(data, 0)
    if got_magic != magic:
        raise PackageFormatError(f"{what} has wrong magic {got_magic!r}, expected {magic!r}; "
                                 "is this the right file?")
    if version != FORMAT_VERSION:
        raise PackageFormatError(f"{what} has format version {version}; this build reads version "
                                 f"{FORMAT_VERSION} only")
    if reserved != 0:
        raise PackageFormatError(f"{what} has non-zero reserved header field {reserved}")
    return _HEADER.size


# --- parameter index table ---------------------------------------------------------------

@dataclass(frozen=True)
class ParameterEntry:
    """One row of the parameter index table."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int
    sha256: bytes

    def __post_init__(self) -> None:
        raw = self.name.encode("utf-8") if isinstance(self.name, str) else b""
        if not raw or len(raw) > MAX_NAME_BYTES:
            raise PackageFormatError(f"parameter name must be 1..{MAX_NAME_BYTES} UTF-8 bytes, "
                                     f"got {len(raw)}")
        if self.dtype not in DTYPE_BY_NAME:
            raise PackageFormatError(f"parameter {self.name!r}: unknown dtype {self.dtype!r}; "
                                     f"supported: {sorted(DTYPE_BY_NAME)}")
        shape = tuple(self.shape)
        if len(shape) > MAX_RANK or any((not isinstance(d, int)) or d < 0 for d in shape):
            raise PackageFormatError(f"parameter {self.name!r}: shape {shape} must be at most "
                                     f"{MAX_RANK} non-negative integers")
        object.__setattr__(self, "shape", shape)
        expected = math.prod(shape) * np_dtype(self.dtype).itemsize
        if self.length != expected:
            raise PackageFormatError(f"parameter {self.name!r}: length {self.length} does not match "
                                     f"shape {shape} of {self.dtype} ({expected} bytes)")
        if self.offset < 0 or self.offset >= 2**64 or self.length >= 2**64:
            raise PackageFormatError(f"parameter {self.name!r}: offset/length out of range")
        if not isinstance(self.sha256, (bytes, bytearray)) or len(self.sha256) != 32:
            raise PackageFormatError(f"parameter {self.name!r}: sha256 must be 32 bytes")
        object.__setattr__(self, "sha256", bytes(self.sha256))

    def encode(self) -> bytes:
        """Canonical bytes of this entry: what the index stores and what a Merkle leaf hashes."""
        raw = self.name.encode("utf-8")
        return b"".join([
            struct.pack(">H", len(raw)), raw,
            struct.pack(">BB", DTYPE_BY_NAME[self.dtype], len(self.shape)),
            b"".join(struct.pack(">Q", d) for d in self.shape),
            struct.pack(">QQ", self.offset, self.length),
            self.sha256,
        ])

    def leaf(self) -> bytes:
        """Merkle leaf: keccak256(0x00 || encoded entry)."""
        return keccak256(MERKLE_LEAF_PREFIX + self.encode())


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of a fixed-order binary Merkle tree over ``leaves``.

    Internal node = keccak256(0x01 || left || right), pairs taken left to right at each level; a
    node without a partner (odd count) is carried up unchanged (never duplicated, so two
    different entry lists cannot share a root). A single leaf is its own root. An empty tree has
    no root: the index must hold at least one entry.
    """
    if not leaves:
        raise PackageFormatError("a Merkle tree needs at least one leaf")
    level = [bytes(x) for x in leaves]
    while len(level) > 1:
        nxt = [keccak256(MERKLE_NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[tuple[bool, bytes]]:
    """Audit path of leaf ``index``: list of (sibling_is_left, sibling hash), bottom up."""
    if not 0 <= index < len(leaves):
        raise PackageFormatError(f"leaf {index} out of range 0..{len(leaves) - 1}")
    proof: list[tuple[bool, bytes]] = []
    level = [bytes(x) for x in leaves]
    pos = index
    while len(level) > 1:
        if pos % 2 == 1:
            proof.append((True, level[pos - 1]))
        elif pos + 1 < len(level):
            proof.append((False, level[pos + 1]))
        nxt = [keccak256(MERKLE_NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        pos //= 2
    return proof


def verify_merkle_proof(leaf: bytes, proof: Iterable[tuple[bool, bytes]], root: bytes) -> bool:
    """True when ``proof`` (from :func:`merkle_proof`) links ``leaf`` to ``root``."""
    node = bytes(leaf)
    for sibling_is_left, sibling in proof:
        node = keccak256(MERKLE_NODE_PREFIX + (sibling + node if sibling_is_left else node + sibling))
    return node == bytes(root)


@dataclass(frozen=True)
class ParameterIndexTable:
    """The parameter index table: entries in blob order, contiguous from offset 0."""

    entries: tuple[ParameterEntry, ...]

    def __post_init__(self) -> None:
        entries = tuple(self.entries)
        object.__setattr__(self, "entries", entries)
        if not entries:
            raise PackageFormatError("the parameter index has no entries; a head must hold at "
                                     "least one protected parameter")
        if len(entries) > MAX_ENTRIES:
            raise PackageFormatError(f"the parameter index has {len(entries)} entries, more than "
                                     f"{MAX_ENTRIES}")
        seen: set[str] = set()
        expected_offset = 0
        for e in entries:
            if e.name in seen:
                raise PackageFormatError(f"parameter {e.name!r} appears twice in the index")
            seen.add(e.name)
            if e.offset != expected_offset:
                raise PackageFormatError(f"parameter {e.name!r} starts at offset {e.offset}, expected "
                                         f"{expected_offset}: entries must be contiguous in blob order")
            expected_offset += e.length

    @property
    def entry_count(self) -> int:
        return len(self.entries)

    @property
    def blob_length(self) -> int:
        """Length the parameter blob must have: the end of the last entry."""
        last = self.entries[-1]
        return last.offset + last.length

    def merkle_root(self) -> bytes:
        """Merkle root of the entries (see :func:`merkle_root`), 32 bytes."""
        return merkle_root([e.leaf() for e in self.entries])

    def proof(self, name: str) -> list[tuple[bool, bytes]]:
        """Merkle audit path of the entry named ``name``."""
        for i, e in enumerate(self.entries):
            if e.name == name:
                return merkle_proof([x.leaf() for x in self.entries], i)
        raise PackageFormatError(f"no parameter named {name!r} in the index")

    def entry(self, name: str) -> ParameterEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise PackageFormatError(f"no parameter named {name!r} in the index")

    def encode(self) -> bytes:
        """The index in its wire format (header, count, entries, Merkle root)."""
        return b"".join([_HEADER.pack(INDEX_MAGIC, FORMAT_VERSION, 0), _IDX_COUNT.pack(len(self.entries)),
                         *(e.encode() for e in self.entries), self.merkle_root()])

    @property
    def plain_hash(self) -> bytes:
        """keccak256 of the encoded index (the ``indexPlainHash`` bound into its encryption)."""
        return keccak256(self.encode())


def decode_index(data: bytes) -> ParameterIndexTable:
    """Parse and check an encoded parameter index; PackageFormatError on anything corrupt."""
    data = _as_bytes(data, "parameter index")
    pos = _check_header(data, INDEX_MAGIC, "parameter index")

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise PackageFormatError(f"parameter index is truncated while reading {what} "
                                     f"(needs {n} bytes at offset {pos}, has {len(data) - pos})")
        chunk = data[pos:pos + n]
        pos += n
        return chunk

    (count,) = _IDX_COUNT.unpack(take(_IDX_COUNT.size, "entry count"))
    if count == 0 or count > MAX_ENTRIES:
        raise PackageFormatError(f"parameter index declares {count} entries; must be 1..{MAX_ENTRIES}")
    # each entry needs at least 2+1+1+1+8+8+32 bytes; refuse impossible counts before looping
    if count * 53 > len(data) - pos:
        raise PackageFormatError(f"parameter index declares {count} entries but holds only "
                                 f"{len(data) - pos} bytes")
    entries = []
    for i in range(count):
        (name_len,) = struct.unpack(">H", take(2, f"entry {i} name length"))
        if name_len == 0 or name_len > MAX_NAME_BYTES:
            raise PackageFormatError(f"entry {i}: name length {name_len} not in 1..{MAX_NAME_BYTES}")
        try:
            name = take(name_len, f"entry {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise PackageFormatError(f"entry {i}: name is not valid UTF-8") from None
        code, rank = struct.unpack(">BB", take(2, f"entry {i} dtype/rank"))
        if code not in DTYPE_CODES:
            raise PackageFormatError(f"entry {i} ({name!r}): unknown dtype code {code}")
        if rank > MAX_RANK:
            raise PackageFormatError(f"entry {i} ({name!r}): rank {rank} exceeds {MAX_RANK}")
        shape = struct.unpack(f">{rank}Q", take(8 * rank, f"entry {i} shape"))
        offset, length = struct.unpack(">QQ", take(16, f"entry {i} offset/length"))
        digest = take(32, f"entry {i} sha256")
        entries.append(ParameterEntry(name, DTYPE_CODES[code], tuple(shape), offset, length, digest))
    root = take(32, "Merkle root")
    if pos != len(data):
        raise PackageFormatError(f"parameter index has {len(data) - pos} trailing bytes")
    table = ParameterIndexTable(tuple(entries))
    if table.merkle_root() != root:
        raise PackageFormatError("parameter index Merkle root does not match its entries; the index "
                                 "is corrupt or was tampered with")
    return table


# --- graph file --------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``None`` for the symbolic batch dimension) and dtype of a tensor."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


@dataclass(frozen=True)
class NodeSpec:
    """One operator application of the head graph."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    #: the operator's ONNX domain: "" for ai.onnx, else e.g. "ai.onnx.ml"
    domain: str = ""


@dataclass(frozen=True)
class HeadGraph:
    """Decoded graph file."""

    opset: int
    output_policy: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: tuple[TensorSpec, ...]
    values: dict[str, TensorSpec]
    nodes: tuple[NodeSpec, ...]
    meta: dict[str, Any]
    #: opset version of every other domain the nodes use (``opset`` is ai.onnx's)
    domains: dict[str, int] = field(default_factory=dict)


#: Output policies the enclave understands: what of the head's output leaves it (encrypted;
#: ``public_label`` also signs the one-row label in plaintext for the request's consumer).
OUTPUT_POLICIES = ("label", "label_scores", "features", "ctc_greedy", "public_label")

_GRAPH_KEYS = {"format", "opset", "output_policy", "inputs", "outputs", "parameters", "values", "nodes", "meta"}
_GRAPH_FORMAT = "splitseal.head-graph.v1"
#: Optional keys: written only when used, so heads without them keep their bytes and hashes.
_GRAPH_OPTIONAL_KEYS = {"domains"}
_NODE_KEYS = {"name", "op", "inputs", "outputs", "attrs"}


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}


def encode_graph(graph: HeadGraph) -> bytes:
    """Serialise a head graph as a graph file (header + canonical JSON)."""
    doc = {
        "format": _GRAPH_FORMAT,
        "opset": graph.opset,
        "output_policy": graph.output_policy,
        "inputs": [_spec_json(s) for s in graph.inputs],
        "outputs": [_spec_json(s) for s in graph.outputs],
        "parameters": [_spec_json(s) for s in graph.parameters],
        "values": {k: _spec_json(v) for k, v in graph.values.items()},
        "nodes": [_node_json(n) for n in graph.nodes],
        "meta": graph.meta,
    }
    if graph.domains:
        doc["domains"] = dict(graph.domains)
    body = _canonical_json(doc)
    data = _HEADER.pack(GRAPH_MAGIC, FORMAT_VERSION, 0) + _GRAPH_LEN.pack(len(body)) + body
    decode_graph(data)  # never emit a file the decoder would refuse
    return data


def _node_json(n: NodeSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
                           "attrs": n.attrs}
    if n.domain:
        doc["domain"] = n.domain
    return doc


def _fail(msg: str) -> PackageFormatError:
    return PackageFormatError(f"graph file: {msg}")


def _as_str(v: Any, where: str, allow_empty: bool = False) -> str:
    if not isinstance(v, str) or (not v and not allow_empty):
        raise _fail(f"{where} must be a {'string' if allow_empty else 'non-empty string'}")
    return v


def _as_tensor_spec(obj: Any, where: str, allow_batch: bool, anywhere: bool = False) -> TensorSpec:
    if not isinstance(obj, dict) or set(obj) != {"name", "shape", "dtype"}:
        raise _fail(f"{where} must be an object with exactly name, shape, dtype")
    name = _as_str(obj["name"], f"{where}.name")
    shape = obj["shape"]
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        raise _fail(f"{where}.shape must be a list of at most {MAX_RANK} dimensions")
    dims: list[int | None] = []
    for i, d in enumerate(shape):
        if d is None and allow_batch and (i == 0 or anywhere):
            dims.append(None)
        elif isinstance(d, int) and not isinstance(d, bool) and d >= 0:
            dims.append(d)
        else:
            raise _fail(f"{where}.shape[{i}] = {d!r}; dimensions are non-negative integers "
                        "(only dimension 0 of an activation may be null, the batch)")
    dtype = obj["dtype"]
    if dtype not in _NP_DTYPES:
        raise _fail(f"{where}.dtype {dtype!r} not in {sorted(_NP_DTYPES)}")
    return TensorSpec(name, tuple(dims), dtype)


def _check_attr_value(v: Any, where: str) -> Any:
    if isinstance(v, bool):
        raise _fail(f"{where}: booleans are not attribute values")
    if isinstance(v, (int, float, str)):
        return v
    if isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return list(v)
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return list(v)
    raise _fail(f"{where}: attribute values are int, float, string or a list of numbers or of strings")


def decode_graph(data: bytes) -> HeadGraph:
    """Parse and structurally check a graph file; PackageFormatError on anything unexpected.

    Structural only: operator semantics (supported ops, attributes, shapes) are the
    interpreter's job, which refuses what it does not know.
    """
    data = _as_bytes(data, "graph file")
    pos = _check_header(data, GRAPH_MAGIC, "graph file")
    if len(data) < pos + _GRAPH_LEN.size:
        raise _fail("truncated before the JSON length")
    (n,) = _GRAPH_LEN.unpack_from(data, pos)
    pos += _GRAPH_LEN.size
    if n > MAX_GRAPH_JSON_BYTES:
        raise _fail(f"JSON document of {n} bytes exceeds {MAX_GRAPH_JSON_BYTES}")
    if len(data) != pos + n:
        raise _fail(f"declares {n} JSON bytes but holds {len(data) - pos}")
    body = data[pos:]
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise _fail(f"JSON document does not parse: {exc}") from None
    if not isinstance(doc, dict) or not _GRAPH_KEYS <= set(doc) <= _GRAPH_KEYS | _GRAPH_OPTIONAL_KEYS:
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise _fail(f"top-level keys {got} differ from {sorted(_GRAPH_KEYS)} (optional: "
                    f"{sorted(_GRAPH_OPTIONAL_KEYS)})")
    if _canonical_json(doc) != body:
        raise _fail("JSON document is not in canonical form (sorted keys, no spaces)")
    if doc["format"] != _GRAPH_FORMAT:
        raise _fail(f"format {doc['format']!r}, expected {_GRAPH_FORMAT!r}")
    opset = doc["opset"]
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < 1:
        raise _fail("opset must be a positive integer")
    policy = doc["output_policy"]
    if policy not in OUTPUT_POLICIES:
        raise _fail(f"output_policy {policy!r} not in {list(OUTPUT_POLICIES)}")
    for key in ("inputs", "outputs", "parameters", "nodes"):
        if not isinstance(doc[key], list):
            raise _fail(f"{key} must be a list")
    if not isinstance(doc["values"], dict) or not isinstance(doc["meta"], dict):
        raise _fail("values and meta must be objects")
    inputs = tuple(_as_tensor_spec(o, f"inputs[{i}]", True) for i, o in enumerate(doc["inputs"]))
    outputs = tuple(_as_tensor_spec(o, f"outputs[{i}]", True) for i, o in enumerate(doc["outputs"]))
    params = tuple(_as_tensor_spec(o, f"parameters[{i}]", False) for i, o in enumerate(doc["parameters"]))
    domains = doc.get("domains", {})
    if "domains" in doc and (not isinstance(domains, dict) or not domains or any(
            not isinstance(d, str) or d in ("", "ai.onnx") or not isinstance(v, int) or isinstance(v, bool) or v < 1
            for d, v in domains.items())):
        raise _fail("domains must be a non-empty object of other domains' names to positive opset versions")
    values = {}
    for k, o in doc["values"].items():
        # a computed tensor may carry the batch in any dimension (an RNN's [seq, dirs, batch, hidden]):
        # head inputs are static except dimension 0, so every symbolic dimension is the batch's
        spec = _as_tensor_spec(o, f"values[{k!r}]", True, anywhere=True)
        if spec.name != k:
            raise _fail(f"values[{k!r}] carries name {spec.name!r}")
        values[k] = spec
    if not inputs or not outputs:
        raise _fail("a head needs at least one input and one output")
    nodes = []
    for i, o in enumerate(doc["nodes"]):
        if not isinstance(o, dict) or not _NODE_KEYS <= set(o) <= _NODE_KEYS | {"domain"}:
            raise _fail(f"nodes[{i}] must have exactly name, op, inputs, outputs, attrs (and a domain "
                        "outside ai.onnx)")
        domain = _as_str(o.get("domain", ""), f"nodes[{i}].domain", allow_empty="domain" not in o)
        if domain == "ai.onnx" or (domain and domain not in domains):
            raise _fail(f"nodes[{i}].domain {domain!r} must be another domain listed in domains")
        name = _as_str(o["name"], f"nodes[{i}].name")
        op = _as_str(o["op"], f"nodes[{i}].op")
        if not isinstance(o["inputs"], list) or not isinstance(o["outputs"], list) or not isinstance(o["attrs"], dict):
            raise _fail(f"nodes[{i}] ({name}): inputs/outputs must be lists, attrs an object")
        ins = tuple(_as_str(x, f"nodes[{i}].inputs", allow_empty=True) for x in o["inputs"])
        outs = tuple(_as_str(x, f"nodes[{i}].outputs", allow_empty=True) for x in o["outputs"])
        attrs = {k: _check_attr_value(v, f"nodes[{i}] ({name}).attrs.{k}") for k, v in o["attrs"].items()}
        nodes.append(NodeSpec(name, op, ins, outs, attrs, domain))
    names = [s.name for s in inputs] + [s.name for s in params] + [x for nd in nodes for x in nd.outputs if x]
    if len(names) != len(set(names)):
        dup = sorted({x for x in names if names.count(x) > 1})
        raise _fail(f"tensor names defined more than once: {dup}")
    return HeadGraph(opset, policy, inputs, outputs, params, values, tuple(nodes), doc["meta"], dict(domains))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


# --- head package ------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadPackage:
    """Graph file + parameter blob, as provisioned (encrypted) into the enclave."""

    graph_bytes: bytes
    params_bytes: bytes

    @property
    def graph_hash(self) -> bytes:
        """keccak256 of the graph file (``headGraphHash`` in the registry)."""
        return keccak256(self.graph_bytes)

    @property
    def params_hash(self) -> bytes:
        """keccak256 of the parameter blob (``headParamsHash`` in the registry)."""
        return keccak256(self.params_bytes)

    def check_hashes(self, graph_hash: bytes, params_hash: bytes) -> None:
        """Refuse a package whose graph or parameter blob is not the one the registry records."""
        if self.graph_hash != bytes(graph_hash):
            raise PackageFormatError("the head graph file does not match the registered headGraphHash; "
                                     "provision the package that was registered for this model version")
        if self.params_hash != bytes(params_hash):
            raise PackageFormatError("the parameter blob does not match the registered headParamsHash; "
                                     "provision the package that was registered for this model version")

    def encode(self) -> bytes:
        """The package in its wire format."""
        return b"".join([_HEADER.pack(PACKAGE_MAGIC, FORMAT_VERSION, 0),
                         _PKG_LENGTHS.pack(len(self.graph_bytes), len(self.params_bytes)),
                         self.graph_bytes, self.params_bytes])

    @property
    def plain_hash(self) -> bytes:
        """keccak256 of the encoded package (``packagePlainHash`` bound into its encryption)."""
        return keccak256(self.encode())


def encode_head_package(pkg: HeadPackage) -> bytes:
    return pkg.encode()


def decode_head_package(data: bytes) -> HeadPackage:
    """Parse an encoded head package; checks lengths exactly and that the graph file parses."""
    data = _as_bytes(data, "head package")
    pos = _check_header(data, PACKAGE_MAGIC, "head package")
    if len(data) < pos + _PKG_LENGTHS.size:
        raise PackageFormatError("head package is truncated before its section lengths")
    glen, plen = _PKG_LENGTHS.unpack_from(data, pos)
    pos += _PKG_LENGTHS.size
    if len(data) != pos + glen + plen:
        raise PackageFormatError(f"head package declares {glen} graph + {plen} parameter bytes but "
                                 f"holds {len(data) - pos}")
    pkg = HeadPackage(data[pos:pos + glen], data[pos + glen:])
    decode_graph(pkg.graph_bytes)
    return pkg


# --- building ----------------------------------------------------------------------------

def build_parameter_blob(params: Sequence[tuple[str, np.ndarray]]) -> tuple[bytes, ParameterIndexTable]:
    """Lay ``params`` out back to back (little-endian) and build their index table."""
    chunks: list[bytes] = []
    entries: list[ParameterEntry] = []
    offset = 0
    for name, array in params:
        arr = np.asarray(array)
        dtype_name = arr.dtype.name
        if dtype_name not in _NP_DTYPES:
            raise PackageFormatError(f"parameter {name!r} has dtype {dtype_name}; the head package "
                                     f"stores {sorted(_NP_DTYPES)} only")
        raw = np.ascontiguousarray(arr, dtype=_NP_DTYPES[dtype_name]).tobytes()
        entries.append(ParameterEntry(name, dtype_name, tuple(int(d) for d in arr.shape), offset,
                                      len(raw), hashlib.sha256(raw).digest()))
        chunks.append(raw)
        offset += len(raw)
    return b"".join(chunks), ParameterIndexTable(tuple(entries))


def read_parameter(params_bytes: bytes, entry: ParameterEntry) -> np.ndarray:
    """The parameter ``entry`` describes, after checking its slice against the entry's sha256."""
    end = entry.offset + entry.length
    if end > len(params_bytes):
        raise PackageFormatError(f"parameter {entry.name!r} ends at byte {end} but the blob has "
                                 f"{len(params_bytes)}")
    raw = bytes(params_bytes[entry.offset:end])
    if hashlib.sha256(raw).digest() != entry.sha256:
        raise PackageFormatError(f"parameter {entry.name!r} does not match its sha256 in the index; "
                                 "the parameter blob is corrupt or was tampered with")
    arr = np.frombuffer(raw, dtype=np_dtype(entry.dtype)).reshape(entry.shape).copy()
    arr.setflags(write=False)
    return arr
