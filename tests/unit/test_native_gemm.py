"""The packed-weight product kernel (enclave/csrc/gemm.c): against float64 numpy on shapes around
its 6 x 16 tiles and half panels, the same sums whichever entry computes them, and every
malformed buffer or size refused before it reads."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

from enclave import native

SEED = 20261202


def _gemm():
    return native.load("gemm")


def _packed(b: np.ndarray, transposed: bool = False) -> np.ndarray:
    k, n = b.shape[::-1] if transposed else b.shape
    panel = _gemm().PANEL
    packed = np.full(-(-n // panel) * panel * k, np.nan, np.float32)   # every float written by pack
    _gemm().pack(b, k, n, transposed, packed)
    return packed


def _tolerance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # float32 sums of k products: a few ulp of the sum of the absolute terms
    return 4 * a.shape[-1] * np.finfo(np.float32).eps * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))


@pytest.mark.parametrize("m", [1, 5, 6, 7, 17, 40])
@pytest.mark.parametrize("k,n", [(1, 1), (64, 192), (16, 17), (17, 16), (70, 8), (3, 9), (128, 64), (5, 33)])
def test_the_packed_product_matches_float64(m, k, n):
    rng = np.random.default_rng([SEED, m, k, n])
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    for transposed in (False, True):
        packed = _packed(np.ascontiguousarray(b.T) if transposed else b, transposed)
        out = np.full((m, n), np.nan, np.float32)
        _gemm().matmul(a, packed, m, k, n, None, out)
        assert np.all(np.abs(out - exact) <= _tolerance(a, b))
        with_bias = np.full((m, n), np.nan, np.float32)
        _gemm().matmul(a, packed, m, k, n, bias, with_bias)
        # the bias is one float32 addition to the same sum (what a separate Add node computes)
        assert np.array_equal(with_bias, out + bias)
        # a residual: a second float32 addition, after the bias (what an Add node after it computes)
        addend = rng.standard_normal((m, n)).astype(np.float32)
        with_both = np.full((m, n), np.nan, np.float32)
        _gemm().matmul(a, packed, m, k, n, bias, with_both, addend)
        assert np.array_equal(with_both, with_bias + addend)
        with_residual = np.full((m, n), np.nan, np.float32)
        _gemm().matmul(a, packed, m, k, n, None, with_residual, addend)
        assert np.array_equal(with_residual, out + addend)


@pytest.mark.parametrize("batch,m,k,n", [(4, 17, 16, 17), (4, 17, 17, 16), (1, 6, 64, 64), (3, 1, 1, 1),
                                         (2, 13, 9, 40), (0, 3, 4, 5)])
def test_the_batched_product_matches_float64_and_the_packed_one(batch, m, k, n):
    rng = np.random.default_rng([SEED, batch, m, k, n])
    a = rng.standard_normal((batch, m, k)).astype(np.float32)
    b = rng.standard_normal((batch, k, n)).astype(np.float32)
    out = np.full((batch, m, n), np.nan, np.float32)
    _gemm().batched(a, b, out, batch, m, k, n)
    for p in range(batch):
        assert np.all(np.abs(out[p] - a[p].astype(np.float64) @ b[p]) <= _tolerance(a[p], b[p]))
        one = np.empty((m, n), np.float32)
        _gemm().matmul(a[p], _packed(b[p]), m, k, n, None, one)
        assert np.array_equal(out[p], one)   # the same sums in the same order


def test_the_sums_do_not_depend_on_where_a_row_falls_in_a_tile():
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((23, 50)).astype(np.float32)
    packed = _packed(rng.standard_normal((50, 37)).astype(np.float32))
    whole = np.empty((23, 37), np.float32)
    _gemm().matmul(a, packed, 23, 50, 37, None, whole)
    for start, stop in [(0, 1), (5, 12), (17, 23)]:
        part = np.empty((stop - start, 37), np.float32)
        _gemm().matmul(np.ascontiguousarray(a[start:stop]), packed, stop - start, 50, 37, None, part)
        assert np.array_equal(part, whole[start:stop])


def _built_without_avx512(tmp_path):
    """gemm.c built with the project's flags but no AVX-512: the AVX2 tiles of the same source."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    flags = (native.SOURCE_DIR / native.FLAGS_FILE).read_text().split()
    path = tmp_path / "gemm.so"
    subprocess.run([cc, *flags, "-mno-avx512f", f"-I{sysconfig.get_paths()['include']}", "-o", str(path),
                    str(native.SOURCE_DIR / "gemm.c")], check=True)
    loader = importlib.machinery.ExtensionFileLoader("gemm", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("gemm", path, loader=loader))
    loader.exec_module(module)
    return module


def test_the_avx512_tiles_compute_the_avx2_tiles_sums_bit_for_bit(tmp_path):
    """A machine with AVX-512 runs two 16-float panels per tile under masks; every output must be
    the same float32 as on a machine without it (the chain proofs and the tests' figures do not
    depend on the machine's vector width)."""
    if not _gemm().AVX512:
        pytest.skip("this machine's build has no AVX-512 tiles to compare")
    avx2 = _built_without_avx512(tmp_path)
    assert avx2.AVX2 and not avx2.AVX512
    rng = np.random.default_rng([SEED, 512])
    for m, k, n in [(17, 64, 192), (1, 3, 1), (7, 5, 33), (13, 16, 8), (6, 9, 16), (23, 50, 37), (5, 1, 48)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        addend = rng.standard_normal((m, n)).astype(np.float32)
        packed = _packed(b)
        for args in [(None,), (bias,), (bias, addend), (None, addend)]:
            ours, theirs = np.full((m, n), np.nan, np.float32), np.full((m, n), np.nan, np.float32)
            _gemm().matmul(a, packed, m, k, n, args[0], ours, *args[1:])
            avx2.matmul(a, packed, m, k, n, args[0], theirs, *args[1:])
            assert np.array_equal(ours, theirs), (m, k, n, len(args))
        q, kt, v = (rng.standard_normal(s).astype(np.float32) for s in [(4, m, k), (4, k, m), (4, m, n)])
        ours, theirs = np.empty((4, m, n), np.float32), np.empty((4, m, n), np.float32)
        _gemm().attention(q, kt, v, ours, 4, m, k, m, n, 1, False, 0.25)
        avx2.attention(q, kt, v, theirs, 4, m, k, m, n, 1, False, 0.25)
        assert np.array_equal(ours, theirs), (m, k, n, "attention")


def test_nan_and_infinity_propagate():
    a = np.array([[1, np.nan], [1, 1], [np.inf, 0]], np.float32)
    b = np.array([[1, 2], [3, 4]], np.float32)
    out = np.empty((3, 2), np.float32)
    _gemm().matmul(a, _packed(b), 3, 2, 2, None, out)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(out, a @ b)


def test_malformed_buffers_and_sizes_are_refused():
    g = _gemm()
    a = np.zeros((4, 8), np.float32)
    b = np.zeros((8, 20), np.float32)
    packed = _packed(b)
    out = np.zeros((4, 20), np.float32)
    with pytest.raises(ValueError, match="b: 160 items, expected 168"):
        g.pack(b, 8, 21, False, packed)
    with pytest.raises(ValueError, match="packed: 128 items, expected 256"):
        g.pack(b, 8, 20, False, packed[:128])
    with pytest.raises(ValueError, match="b: wrong item type"):
        g.pack(b.astype(np.float64), 8, 20, False, packed)
    with pytest.raises(ValueError, match="a: 32 items, expected 40"):
        g.matmul(a, packed, 5, 8, 20, None, np.zeros((5, 20), np.float32))
    with pytest.raises(ValueError, match="packed: 256 items, expected 512"):
        g.matmul(np.zeros((4, 16), np.float32), packed, 4, 16, 20, None, out)
    with pytest.raises(ValueError, match="bias: 19 items, expected 20"):
        g.matmul(a, packed, 4, 8, 20, np.zeros(19, np.float32), out)
    with pytest.raises(ValueError, match="out: 79 items, expected 80"):
        g.matmul(a, packed, 4, 8, 20, None, np.zeros(79, np.float32))
    with pytest.raises(ValueError, match="addend: 79 items, expected 80"):
        g.matmul(a, packed, 4, 8, 20, None, out, np.zeros(79, np.float32))
    with pytest.raises(ValueError, match="addend: wrong item type"):
        g.matmul(a, packed, 4, 8, 20, None, out, np.zeros(80, np.float64))
    with pytest.raises(ValueError, match="out overlaps an input"):
        g.matmul(a, packed, 4, 8, 20, None, out, out)
    with pytest.raises(ValueError, match="out overlaps an input"):
        square = np.zeros(64, np.float32)
        g.matmul(square[:32], _packed(np.zeros((8, 8), np.float32)), 4, 8, 8, None, square[16:48])
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        g.matmul(a, packed, -4, 8, 20, None, out)
    with pytest.raises(ValueError, match="sizes overflow"):
        g.matmul(a, packed, 1 << 40, 1 << 40, 20, None, out)
    with pytest.raises(ValueError, match="not C-contiguous"):
        g.matmul(a, packed, 4, 8, 20, None, np.zeros((20, 4), np.float32).T)   # not C-contiguous
    with pytest.raises(ValueError, match="b: 63 items, expected 64"):
        g.batched(np.zeros((2, 4, 8), np.float32), np.zeros(63, np.float32), np.zeros((2, 4, 4), np.float32), 2, 4, 8, 4)
    with pytest.raises(ValueError, match="out overlaps an input"):
        x = np.zeros(64, np.float32)
        g.batched(x[:32], np.zeros(64, np.float32), x[16:48], 1, 4, 8, 8)
    with pytest.raises(ValueError, match="read-only"):
        frozen = np.zeros((4, 20), np.float32)
        frozen.flags.writeable = False
        g.matmul(a, packed, 4, 8, 20, None, frozen)


def _attention_float64(q, kt, v, scale_at, divide, c):
    q, kt, v = (x.astype(np.float64) for x in (q, kt, v))
    scaled = lambda x: x / c if divide else x * c
    s = (scaled(q) if scale_at == 1 else q) @ kt
    s = scaled(s) if scale_at == 2 else s
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v


@pytest.mark.parametrize("batch,m,k,n,dv", [(4, 17, 16, 17, 16), (1, 1, 1, 1, 1), (3, 7, 9, 20, 5),
                                            (2, 13, 64, 13, 64), (0, 3, 4, 5, 6)])
@pytest.mark.parametrize("scale_at,divide", [(0, False), (1, False), (1, True), (2, False), (2, True)])
def test_attention_matches_float64_and_the_steps_it_fuses(batch, m, k, n, dv, scale_at, divide):
    """One call: the scale, the batched product by K^T, the Softmax kernel's rows and the batched
    product by V; within float32 rounding of float64, and bit for bit the kernels' own steps."""
    rng = np.random.default_rng([SEED, batch, m, k, n, dv, scale_at, divide])
    q = rng.standard_normal((batch, m, k)).astype(np.float32)
    kt = rng.standard_normal((batch, k, n)).astype(np.float32)
    v = rng.standard_normal((batch, n, dv)).astype(np.float32)
    c = np.float32(k ** -0.25 if scale_at else 1.0)
    out = np.full((batch, m, dv), np.nan, np.float32)
    _gemm().attention(q, kt, v, out, batch, m, k, n, dv, scale_at, divide, float(c))
    np.testing.assert_allclose(out, _attention_float64(q, kt, v, scale_at, divide, c), rtol=1e-5, atol=1e-5)
    scaled = lambda x: x / c if divide else x * c
    s = np.empty((batch, m, n), np.float32)
    _gemm().batched(scaled(q) if scale_at == 1 else q, kt, s, batch, m, k, n)
    s = scaled(s) if scale_at == 2 else s
    native.load("vit").softmax(s, s, batch * m, n, 1)
    steps = np.empty((batch, m, dv), np.float32)
    _gemm().batched(s, v, steps, batch, m, n, dv)
    assert np.array_equal(out.view(np.uint32), steps.view(np.uint32))


def test_attention_refuses_malformed_buffers_and_sizes():
    g = _gemm()
    q, kt, v = np.zeros((2, 4, 8), np.float32), np.zeros((2, 8, 5), np.float32), np.zeros((2, 5, 3), np.float32)
    out = np.zeros((2, 4, 3), np.float32)
    g.attention(q, kt, v, out, 2, 4, 8, 5, 3, 1, False, 0.5)
    with pytest.raises(ValueError, match="q: 64 items, expected 80"):
        g.attention(q, kt, v, out, 2, 5, 8, 5, 3, 0, False, 1.0)
    with pytest.raises(ValueError, match="kt: 80 items, expected 96"):
        g.attention(q, kt, v, out, 2, 4, 8, 6, 3, 0, False, 1.0)
    with pytest.raises(ValueError, match="v: 30 items, expected 40"):
        g.attention(q, kt, v, out, 2, 4, 8, 5, 4, 0, False, 1.0)
    with pytest.raises(ValueError, match="out: 24 items, expected 32"):
        g.attention(q, kt, np.zeros((2, 5, 4), np.float32), out, 2, 4, 8, 5, 4, 0, False, 1.0)
    with pytest.raises(ValueError, match="q: wrong item type"):
        g.attention(q.astype(np.float64), kt, v, out, 2, 4, 8, 5, 3, 0, False, 1.0)
    with pytest.raises(ValueError, match="scale_at must be"):
        g.attention(q, kt, v, out, 2, 4, 8, 5, 3, 3, False, 1.0)
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        g.attention(q, kt, v, out, -2, 4, 8, 5, 3, 0, False, 1.0)
    with pytest.raises(ValueError, match="sizes overflow"):
        g.attention(q, kt, v, out, 1, 1 << 40, 1 << 40, 5, 3, 0, False, 1.0)
    with pytest.raises(ValueError, match="out overlaps an input"):
        x = np.zeros(64, np.float32)
        g.attention(x[:64], kt, v, x[:24], 2, 4, 8, 5, 3, 0, False, 1.0)
    with pytest.raises(ValueError, match="not C-contiguous"):
        g.attention(q, kt, v, np.zeros((3, 4, 2), np.float32).T, 2, 4, 8, 5, 3, 0, False, 1.0)
