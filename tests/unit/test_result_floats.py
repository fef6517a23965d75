"""The result document's float32 decimals: the vectorised shortest representation of long rows
(splitseal.protocol.result._float32_vector) gives exactly the floats of numpy's Dragon4 path."""

from __future__ import annotations

import json

import numpy as np

from splitseal.protocol.result import _VECTOR_FROM, _float32, _float32_row, _float32_vector, encode_result_document

SEED = 16  # fixed, so that a failure replays


def _hard_values(rng: np.random.Generator) -> np.ndarray:
    """Random bit patterns (every exponent, subnormals, NaNs and infinities among them), the
    magnitudes heads produce, every power of two and of ten with both neighbours, and the edges of
    the vectorised range."""
    pows2 = (np.float32(2.0) ** np.arange(-149, 128)).astype(np.float32)
    pows10 = np.array([np.float32(f"1e{e}") for e in range(-45, 39)], dtype=np.float32)
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(np.float32).max, np.finfo(np.float32).tiny,
                      16777218.0, 0.1, 1 / 3, 999999.94, 1e6, 1e-14, 9.9999994e-15], dtype=np.float32)
    parts = [rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
             rng.random(50_000).astype(np.float32), (rng.standard_normal(50_000) * 10).astype(np.float32),
             (rng.standard_normal(20_000) * 1e-3).astype(np.float32), (rng.standard_normal(20_000) * 1e4).astype(np.float32),
             np.arange(1, 20_000, dtype=np.uint32).view(np.float32),  # subnormals
             # exact short decimals, where a p-digit rounding can be an exact tie: integers, halves,
             # quarters, and them scaled by powers of ten
             rng.integers(0, 2**24, 20_000).astype(np.float32), (rng.integers(0, 2**22, 20_000) + 0.5).astype(np.float32),
             (rng.integers(0, 2**20, 20_000) + 0.25).astype(np.float32),
             (rng.integers(0, 2**24, 20_000) / 10.0 ** rng.integers(1, 12, 20_000)).astype(np.float32),
             pows2, np.nextafter(pows2, np.float32(np.inf)), np.nextafter(pows2, np.float32(0)),
             pows10, np.nextafter(pows10, np.float32(np.inf)), np.nextafter(pows10, np.float32(0)), edges]
    values = np.concatenate(parts)
    return np.concatenate([values, -values])


def test_the_vectorised_decimals_are_numpys_on_hundreds_of_thousands_of_values():
    values = _hard_values(np.random.default_rng(SEED))
    expected = [repr(_float32(v)) for v in values]
    got = []
    for start in range(0, len(values), 512):
        got.extend(repr(v) for v in _float32_vector(values[start:start + 512]))
    mismatches = [(float(values[i]), e, g) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    assert not mismatches, f"seed {SEED}: {len(mismatches)} differ, first {mismatches[:3]}"


def test_a_long_row_gives_the_same_document_bytes_as_value_by_value_including_nan_and_inf():
    rng = np.random.default_rng(SEED)
    row = rng.standard_normal(512).astype(np.float32)
    row[:8] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, np.finfo(np.float32).max, 0.5]
    features = np.stack([row, rng.random(512).astype(np.float32) * 1e-5])
    document = encode_result_document("features", features=features, salt=bytes(16))
    by_value = {"features": [[_float32(v) for v in r] for r in features], "format": "splitseal.result.v1",
                "policy": "features", "salt": "00" * 16}
    assert document == json.dumps(by_value, sort_keys=True, separators=(",", ":")).encode()
    assert b"NaN" in document and b"Infinity" in document  # as value by value writes them


def test_short_rows_lists_and_float64_input_take_the_value_by_value_path_with_the_same_result():
    rng = np.random.default_rng(SEED)
    for n in (1, 10, _VECTOR_FROM - 1, _VECTOR_FROM, 300):
        row64 = rng.standard_normal(n) * 3  # float64: rounded to float32 first, as _float32 does
        expected = [repr(_float32(v)) for v in row64]
        assert [repr(v) for v in _float32_row(row64)] == expected
        assert [repr(v) for v in _float32_row(list(row64))] == expected
