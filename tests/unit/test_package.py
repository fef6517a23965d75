"""Head package, graph file and parameter index: round trips, corruption anywhere, Merkle root."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from eth_utils.crypto import keccak

from enclave.package import (
    FORMAT_VERSION,
    HeadPackage,
    ParameterEntry,
    ParameterIndexTable,
    build_parameter_blob,
    decode_graph,
    decode_head_package,
    decode_index,
    encode_graph,
    merkle_proof,
    merkle_root,
    read_parameter,
    verify_merkle_proof,
)
from orchestrator.models import load_model
from orchestrator.models.rule import parse_rule
from orchestrator.models.split import split_model
from splitseal.errors import PackageFormatError
from tests.support.models_fixtures import small_cnn

RULE = b'version=1\n[split]\nat_node="conv3"\n[protect]\nparameters=["conv3.*","neck.*","head.*"]\n[output]\npolicy="label_scores"\n'


@pytest.fixture(scope="module")
def split():
    return split_model(load_model(small_cnn().SerializeToString()), parse_rule(RULE))


def small_index() -> tuple[bytes, ParameterIndexTable]:
    rng = np.random.default_rng(0)
    return build_parameter_blob([("a.weight", rng.standard_normal((2, 3)).astype(np.float32)),
                                 ("a.bias", rng.standard_normal(3).astype(np.float32)),
                                 ("shape", np.array([0, -1], np.int64)),
                                 ("scalar", np.array(0.5, np.float32))])


# --- round trips ------------------------------------------------------------------------

def test_package_round_trip(split):
    data = split.package.encode()
    pkg = decode_head_package(data)
    assert pkg == split.package
    assert pkg.encode() == data
    assert pkg.graph_hash == keccak(pkg.graph_bytes)
    assert pkg.params_hash == keccak(pkg.params_bytes)
    assert pkg.plain_hash == keccak(data)
    assert data[:8] == b"SSHEADPK" and struct.unpack(">H", data[8:10])[0] == FORMAT_VERSION


def test_index_round_trip(split):
    data = split.index.encode()
    index = decode_index(data)
    assert index == split.index
    assert index.encode() == data
    assert index.entry_count == len(split.index.entries) == len(split.head_graph.parameters)
    assert index.merkle_root() == data[-32:]
    assert index.plain_hash == keccak(data)


def test_graph_round_trip(split):
    graph = decode_graph(split.package.graph_bytes)
    assert graph == split.head_graph
    assert encode_graph(graph) == split.package.graph_bytes


def test_index_entries_describe_the_blob(split):
    offset = 0
    for e in split.index.entries:
        assert e.offset == offset
        raw = split.package.params_bytes[e.offset:e.offset + e.length]
        assert e.sha256 == hashlib.sha256(raw).digest()
        arr = read_parameter(split.package.params_bytes, e)
        assert np.array_equal(arr, split.imported.initializers[e.name])
        offset += e.length
    assert offset == len(split.package.params_bytes) == split.index.blob_length


def test_check_hashes(split):
    pkg = split.package
    pkg.check_hashes(pkg.graph_hash, pkg.params_hash)
    with pytest.raises(PackageFormatError, match="headGraphHash"):
        pkg.check_hashes(b"\0" * 32, pkg.params_hash)
    with pytest.raises(PackageFormatError, match="headParamsHash"):
        pkg.check_hashes(pkg.graph_hash, b"\0" * 32)


# --- corruption -------------------------------------------------------------------------

def test_index_every_byte_flip_is_detected():
    _, index = small_index()
    data = index.encode()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(PackageFormatError):
            decode_index(bytes(bad))


def test_index_every_truncation_and_extension_is_detected():
    _, index = small_index()
    data = index.encode()
    for n in range(len(data)):
        with pytest.raises(PackageFormatError):
            decode_index(data[:n])
    with pytest.raises(PackageFormatError, match="trailing"):
        decode_index(data + b"\0")


def test_index_field_errors_are_specific():
    _, index = small_index()
    data = bytearray(index.encode())
    with pytest.raises(PackageFormatError, match="magic"):
        decode_index(b"XXXXXXXX" + bytes(data[8:]))
    with pytest.raises(PackageFormatError, match="version"):
        decode_index(bytes(data[:8]) + struct.pack(">H", 2) + bytes(data[10:]))
    with pytest.raises(PackageFormatError, match="entries"):
        decode_index(bytes(data[:12]) + struct.pack(">I", 0) + bytes(data[16:]))
    with pytest.raises(PackageFormatError, match="Merkle root"):
        decode_index(bytes(data[:-1]) + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(PackageFormatError):
        decode_index("not bytes")  # type: ignore[arg-type]


def test_package_header_and_length_corruption_detected(split):
    data = split.package.encode()
    header = 8 + 2 + 2 + 16
    for i in range(header):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(PackageFormatError):
            decode_head_package(bytes(bad))
    for n in (0, 5, header - 1, header, len(data) - 1):
        with pytest.raises(PackageFormatError):
            decode_head_package(data[:n])
    with pytest.raises(PackageFormatError):
        decode_head_package(data + b"x")


def test_graph_corruption_detected_by_decoder_or_hash(split):
    """A flipped graph byte either fails to decode, or the graph hash no longer matches the one
    the registry holds (the enclave checks both)."""
    graph = split.package.graph_bytes
    registered = split.package.graph_hash
    decode_failures = 0
    for i in range(0, len(graph), 7):
        bad = bytearray(graph)
        bad[i] ^= 0x20
        pkg = HeadPackage(bytes(bad), split.package.params_bytes)
        try:
            decode_head_package(pkg.encode())
        except PackageFormatError:
            decode_failures += 1
            continue
        with pytest.raises(PackageFormatError):
            pkg.check_hashes(registered, split.package.params_hash)
    assert decode_failures > 0


@pytest.mark.parametrize("doc_change", [
    b'{"format":"x"}',
    b'not json',
    b'{"format":"splitseal.head-graph.v1"}',
])
def test_graph_json_errors(doc_change):
    data = b"SSHGRAPH" + struct.pack(">HHI", FORMAT_VERSION, 0, len(doc_change)) + doc_change
    with pytest.raises(PackageFormatError, match="graph file"):
        decode_graph(data)


def test_graph_non_canonical_json_refused(split):
    graph = split.package.graph_bytes
    body = graph[16:].replace(b",", b", ", 1)
    data = graph[:12] + struct.pack(">I", len(body)) + body
    with pytest.raises(PackageFormatError, match="canonical"):
        decode_graph(data)


def test_entry_validation():
    good = dict(name="w", dtype="float32", shape=(2, 2), offset=0, length=16, sha256=b"\0" * 32)
    ParameterEntry(**good)
    for change in ({"name": ""}, {"dtype": "float64"}, {"length": 12}, {"shape": (2, -2)},
                   {"sha256": b"\0" * 31}, {"offset": -1}):
        with pytest.raises(PackageFormatError):
            ParameterEntry(**{**good, **change})
    e1 = ParameterEntry(**good)
    with pytest.raises(PackageFormatError, match="twice"):
        ParameterIndexTable((e1, ParameterEntry(**{**good, "offset": 16})))
    with pytest.raises(PackageFormatError, match="contiguous"):
        ParameterIndexTable((e1, ParameterEntry(**{**good, "name": "v", "offset": 20})))
    with pytest.raises(PackageFormatError, match="no entries"):
        ParameterIndexTable(())


def test_blob_rejects_other_dtypes():
    with pytest.raises(PackageFormatError, match="float64"):
        build_parameter_blob([("w", np.zeros(3))])


# --- Merkle tree ------------------------------------------------------------------------

def _k(b: bytes) -> bytes:
    return bytes(keccak(b))


def test_merkle_root_by_hand():
    _, index = small_index()
    leaves = [_k(b"\x00" + e.encode()) for e in index.entries]
    assert [e.leaf() for e in index.entries] == leaves
    n01 = _k(b"\x01" + leaves[0] + leaves[1])
    n23 = _k(b"\x01" + leaves[2] + leaves[3])
    assert index.merkle_root() == _k(b"\x01" + n01 + n23)
    # odd counts: the unpaired node is carried up, not duplicated
    assert merkle_root(leaves[:3]) == _k(b"\x01" + n01 + leaves[2])
    assert merkle_root(leaves[:1]) == leaves[0]
    five = leaves + [_k(b"five")]
    assert merkle_root(five) == _k(b"\x01" + _k(b"\x01" + n01 + n23) + five[4])
    with pytest.raises(PackageFormatError):
        merkle_root([])


def test_merkle_root_depends_on_order_and_content():
    _, index = small_index()
    leaves = [e.leaf() for e in index.entries]
    assert merkle_root(leaves) != merkle_root(leaves[::-1])
    assert merkle_root(leaves) != merkle_root(leaves + [leaves[-1]])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_merkle_proofs(n):
    leaves = [_k(bytes([i])) for i in range(n)]
    root = merkle_root(leaves)
    for i in range(n):
        proof = merkle_proof(leaves, i)
        assert verify_merkle_proof(leaves[i], proof, root)
        assert not verify_merkle_proof(_k(b"other"), proof, root)


def test_index_proof_by_name():
    _, index = small_index()
    e = index.entry("a.bias")
    assert verify_merkle_proof(e.leaf(), index.proof("a.bias"), index.merkle_root())
    with pytest.raises(PackageFormatError):
        index.proof("missing")
