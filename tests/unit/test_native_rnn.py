"""The recurrent kernel (enclave/csrc/rnn.c) against the ONNX LSTM / GRU equations written out in
float64 numpy, its tanh against numpy's, and its refusal of malformed weights and buffers. The
interpreter's LSTM and GRU nodes are compared with onnxruntime in test_interpreter_rnn.py and
test_interpreter_kernels.py; this file checks the kernel's own contract (ONNX's layouts, every
direction, initial states, linear_before_reset, hidden sizes that are not a multiple of the
vector width) on inputs it is given directly."""

from __future__ import annotations

import numpy as np
import pytest

from enclave import native

SEED = 20261202
DIRECTIONS = {"forward": 0, "reverse": 1, "bidirectional": 2}


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def reference(op, pre, r, b, h0, c0, direction, lbr):
    """ONNX's equations in float64: pre [seq, batch, dirs, gates*hidden] is X W^T without bias.
    Returns Y [seq, dirs, batch, hidden], Y_h and (LSTM) Y_c [dirs, batch, hidden]."""
    seq, batch, nd, width = pre.shape
    hs = r.shape[2]
    b = np.zeros((nd, 2 * width)) if b is None else b.astype(np.float64)
    y = np.zeros((seq, nd, batch, hs))
    y_h, y_c = np.zeros((nd, batch, hs)), np.zeros((nd, batch, hs))
    for d in range(nd):
        wb, rb = b[d, :width], b[d, width:]
        rd = r[d].astype(np.float64)
        h = np.zeros((batch, hs)) if h0 is None else h0[d].astype(np.float64)
        c = np.zeros((batch, hs)) if c0 is None else c0[d].astype(np.float64)
        steps = range(seq - 1, -1, -1) if direction == "reverse" or d == 1 else range(seq)
        for t in steps:
            p = pre[t, :, d].astype(np.float64)
            if op == "LSTM":
                g = p + h @ rd.T + wb + rb
                i, o, f, cc = np.split(g, 4, axis=1)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(cc)
                h = _sigmoid(o) * np.tanh(c)
            else:
                rz, rr, rh = np.split(rd, 3, axis=0)
                pz, pr, ph = np.split(p, 3, axis=1)
                z = _sigmoid(pz + h @ rz.T + wb[:hs] + rb[:hs])
                rg = _sigmoid(pr + h @ rr.T + wb[hs:2 * hs] + rb[hs:2 * hs])
                if lbr:
                    cand = np.tanh(ph + rg * (h @ rh.T + rb[2 * hs:]) + wb[2 * hs:])
                else:
                    cand = np.tanh(ph + (rg * h) @ rh.T + rb[2 * hs:] + wb[2 * hs:])
                h = (1 - z) * cand + z * h
            y[t, d] = h
        y_h[d], y_c[d] = h, c
    return y, y_h, y_c


def run_kernel(op, pre, r, b, h0, c0, direction, lbr):
    seq, batch, nd, width = pre.shape
    hs = r.shape[2]
    rnn = native.load("rnn")
    cell = rnn.compile(4 if op == "LSTM" else 3, lbr, DIRECTIONS[direction], hs, r, b)
    y = np.full((seq, nd, batch, hs), np.nan, np.float32)
    y_h = np.full((nd, batch, hs), np.nan, np.float32)
    y_c = np.full((nd, batch, hs), np.nan, np.float32) if op == "LSTM" else None
    rnn.run(cell, pre, seq, batch, h0, c0, y, y_h, y_c)
    return y, y_h, y_c


# (op, direction, seq, batch, hidden, initial states, linear_before_reset): hidden 32 is the heads'
# (one 64-column and one 32-column block of the gemv for an LSTM's 128, 64 + 32 for a GRU's 96),
# 5 and 13 leave tails for the 8-wide and the one-by-one columns
CASES = [("LSTM", "forward", 7, 1, 5, False, 0), ("LSTM", "reverse", 4, 3, 13, True, 0),
         ("LSTM", "bidirectional", 32, 1, 32, False, 0), ("LSTM", "bidirectional", 6, 2, 9, True, 0),
         ("GRU", "forward", 5, 2, 13, True, 0), ("GRU", "reverse", 6, 1, 5, False, 1),
         ("GRU", "bidirectional", 32, 1, 32, False, 1), ("GRU", "bidirectional", 8, 3, 32, True, 0),
         ("GRU", "bidirectional", 3, 2, 17, True, 1), ("LSTM", "forward", 0, 2, 4, True, 0)]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-seq{c[2]}-batch{c[3]}-hidden{c[4]}"
                                             f"-{'states' if c[5] else 'zeros'}-lbr{c[6]}" for c in CASES])
def test_the_kernel_computes_the_onnx_equations(case):
    op, direction, seq, batch, hs, states, lbr = case
    rng = np.random.default_rng([SEED, CASES.index(case)])
    print(f"seed={SEED} case={case}")
    gates, nd = (4 if op == "LSTM" else 3), (2 if direction == "bidirectional" else 1)

    def f(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    pre, r, b = f(seq, batch, nd, gates * hs, scale=1.5), f(nd, gates * hs, hs), f(nd, 2 * gates * hs)
    h0 = f(nd, batch, hs) if states else None
    c0 = f(nd, batch, hs) if states and op == "LSTM" else None
    got = run_kernel(op, pre, r, b, h0, c0, direction, lbr)
    want = reference(op, pre, r, b, h0, c0, direction, lbr)
    for g, w in zip(got, want):
        if g is not None:
            np.testing.assert_allclose(g, w, atol=2e-6, rtol=0)
    if seq == 0:   # no step: the final states are the initial ones
        np.testing.assert_array_equal(got[1], h0)
        np.testing.assert_array_equal(got[2], c0)


def test_the_kernel_without_biases_equals_zero_biases():
    rng = np.random.default_rng([SEED, 100])
    pre, r = rng.standard_normal((5, 2, 2, 36)).astype(np.float32), rng.standard_normal((2, 36, 12)).astype(np.float32)
    for lbr in (0, 1):
        without = run_kernel("GRU", pre, r, None, None, None, "bidirectional", lbr)
        zeros = run_kernel("GRU", pre, r, np.zeros((2, 72), np.float32), None, None, "bidirectional", lbr)
        np.testing.assert_array_equal(without[0], zeros[0])


def _tanh_by_kernel(v: np.ndarray) -> np.ndarray:
    """The kernel's tanh: a forward GRU step from a zero state whose update gate is closed
    (z = sigmoid(-100) = 0) and R = 0, so h = tanh(the h gate's input)."""
    n = v.size
    pre = np.concatenate([np.full(n, -100, np.float32), np.zeros(n, np.float32), v]).reshape(1, 1, 1, 3 * n)
    y, _, _ = run_kernel("GRU", pre, np.zeros((1, 3 * n, n), np.float32), None, None, None, "forward", 0)
    return y.reshape(n)


def test_the_kernels_tanh_is_numpys_within_a_few_ulp_and_passes_nan():
    v = np.concatenate([np.linspace(-12, 12, 4001), [-1e-30, 0.0, 1e-30, 1e-6, -3e-4, 40, -1e30, 1e30]])
    got = _tanh_by_kernel(v.astype(np.float32))
    want = np.tanh(v.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=4e-7, atol=1e-37)
    assert np.all(np.abs(got) <= 1)
    special = _tanh_by_kernel(np.array([np.nan, np.inf, -np.inf], np.float32))
    assert np.isnan(special[0]) and special[1] == 1 and special[2] == -1


def _cell_args(**change):
    args = dict(gates=4, lbr=0, direction=0, hidden=3, r=np.zeros(36, np.float32), b=None)
    args.update(change)
    return list(args.values())


@pytest.mark.parametrize("change,match", [
    ({"gates": 5}, "gates must be 3"),
    ({"lbr": 1}, "linear_before_reset"),
    ({"gates": 3, "lbr": 2, "r": np.zeros(27, np.float32)}, "linear_before_reset"),
    ({"direction": 3}, "direction must be"),
    ({"hidden": 0}, "hidden size"),
    ({"r": np.zeros(35, np.float32)}, "R: 35 items, expected 36"),
    ({"direction": 2}, "R: 36 items, expected 72"),
    ({"r": np.zeros(36, np.float64)}, "R: wrong item type"),
    ({"b": np.zeros(23, np.float32)}, "B: 23 items, expected 24"),
])
def test_compile_refuses_malformed_weights(change, match):
    with pytest.raises(ValueError, match=match):
        native.load("rnn").compile(*_cell_args(**change))


def test_run_refuses_buffers_of_the_wrong_size_or_kind():
    rnn = native.load("rnn")
    lstm = rnn.compile(*_cell_args())                      # forward, hidden 3: 12 gate columns
    gru = rnn.compile(*_cell_args(gates=3, r=np.zeros(27, np.float32)))
    z = np.zeros

    def go(cell, pre=None, seq=2, batch=1, h0=None, c0=None, y=None, y_h=None, y_c="default"):
        width = 12 if cell is lstm else 9
        rnn.run(cell, z(seq * batch * width, np.float32) if pre is None else pre, seq, batch, h0, c0,
                z(seq * batch * 3, np.float32) if y is None else y, z(batch * 3, np.float32) if y_h is None else y_h,
                (z(batch * 3, np.float32) if cell is lstm else None) if isinstance(y_c, str) else y_c)

    go(lstm)
    go(gru)
    with pytest.raises(ValueError, match="pre: 23 items, expected 24"):
        go(lstm, pre=z(23, np.float32))
    with pytest.raises(ValueError, match="y: 5 items, expected 6"):
        go(lstm, y=z(5, np.float32))
    with pytest.raises(ValueError, match="y_h: 4 items, expected 3"):
        go(gru, y_h=z(4, np.float32))
    with pytest.raises(ValueError, match="initial_h: 2 items, expected 3"):
        go(lstm, h0=z(2, np.float32))
    with pytest.raises(ValueError, match="initial_c: 6 items, expected 3"):
        go(lstm, c0=z(6, np.float32))
    with pytest.raises(ValueError, match="y_c: 3 items, expected 6"):
        go(lstm, batch=2, y_c=z(3, np.float32))
    with pytest.raises(ValueError, match="an LSTM writes y_c"):
        go(lstm, y_c=None)
    with pytest.raises(ValueError, match="no cell state"):
        go(gru, y_c=z(3, np.float32))
    with pytest.raises(ValueError, match="no cell state"):
        go(gru, c0=z(3, np.float32))
    one = z(1, np.float32)
    for seq, batch in ((-1, 1), (2, -1), (2**40, 2**40)):
        with pytest.raises(ValueError, match="seq or batch out of range"):
            go(lstm, pre=one, seq=seq, batch=batch, y=one, y_h=one, y_c=one)
    with pytest.raises(ValueError, match="y: wrong item type"):
        go(lstm, y=z(6, np.float64))
    read_only = z(6, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        go(lstm, y=read_only)
    with pytest.raises(ValueError, match="not C-contiguous"):
        go(lstm, pre=z(48, np.float32)[::2])
    with pytest.raises(ValueError, match="invalid PyCapsule"):
        go(object())


# --- log-softmax over contiguous rows -----------------------------------------------------------

def _log_softmax_numpy(x: np.ndarray) -> np.ndarray:
    """The numpy formula the kernel replaced, in float32 (NaN and infinities as numpy has them)."""
    with np.errstate(all="ignore"):
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("n", [1, 5, 8, 37, 100, 6625])
def test_log_softmax_matches_the_float64_formula(n):
    rng = np.random.default_rng([SEED, 200, n])
    x = (rng.standard_normal((9, n)) * rng.choice([0.1, 3, 30], size=(9, 1))).astype(np.float32)
    x[0] = np.float32(-1e4) + x[0]   # a row far below zero: only the shift keeps exp in range
    x[1, 0] = 80 if n > 1 else x[1, 0]   # one dominant class, the others' exp underflow
    out = np.full_like(x, np.nan)
    native.load("rnn").log_softmax(x, 9, n, out)
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=-1, keepdims=True)
    want = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(out, want, rtol=2e-6, atol=2e-6)


def test_log_softmax_rows_with_nan_or_infinity_are_numpys():
    x = np.array([[0.5, np.nan, 1.0, 2, 3, 4, 5, 6, 7], [1, 2, np.inf, 0, 0, 0, 0, 0, 0],
                  [1, 2, -np.inf, 0, 0, 0, 0, 0, 0], [-np.inf] * 9, [1, 2, 3, 4, 5, 6, 7, 8, 9]], np.float32)
    out = np.empty_like(x)
    native.load("rnn").log_softmax(x, 5, 9, out)
    want = _log_softmax_numpy(x)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_allclose(out[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-6, atol=1e-6)
    assert np.isnan(out[0]).all() and np.isnan(out[1]).all() and out[2, 2] == -np.inf


def test_log_softmax_refuses_malformed_buffers():
    ls = native.load("rnn").log_softmax
    x = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="x: 12 items, expected 15"):
        ls(x, 3, 5, np.zeros(15, np.float32))
    with pytest.raises(ValueError, match="out: 11 items, expected 12"):
        ls(x, 3, 4, np.zeros(11, np.float32))
    with pytest.raises(ValueError, match="out: wrong item type"):
        ls(x, 3, 4, np.zeros(12, np.float64))
    for rows, n in ((3, 0), (-1, 4), (2**40, 2**40)):
        with pytest.raises(ValueError, match="out of range"):
            ls(x, rows, n, np.zeros(12, np.float32))


def test_sigmoid_is_the_float64_logistic_within_a_few_ulp_in_place_or_not():
    rnn = native.load("rnn")
    v = np.concatenate([np.linspace(-80, 80, 160001), np.random.default_rng(3).normal(0, 4, 5000)]).astype(np.float32)
    want = 1.0 / (1.0 + np.exp(-v.astype(np.float64)))
    got = np.empty_like(v)
    rnn.sigmoid(v, got)
    assert np.max(np.abs(got - want) / np.spacing(want.astype(np.float32)).astype(np.float64)) < 4
    far = np.array([-87, -100, -1e30], np.float32)     # exp's argument is held at -87 below it
    rnn.sigmoid(far, far)
    assert np.all((far >= 0) & (far < 2e-38))
    special = np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)
    rnn.sigmoid(special, special)               # out may be x
    assert np.isnan(special[0]) and special[1] == 1.0 and 0 <= special[2] < 2e-38 and special[3] == 0.5
    with pytest.raises(ValueError, match="out: 3 items, expected 4"):
        rnn.sigmoid(np.zeros(4, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="x: wrong item type"):
        rnn.sigmoid(np.zeros(4), np.zeros(4, np.float32))
