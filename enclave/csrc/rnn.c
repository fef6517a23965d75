/* Kernels of the enclave interpreter's recurrent heads: the recurrence of the ONNX LSTM and GRU
 * nodes (every step of every direction in one call) and, at the end of this file, the
 * log-softmax over rows that CTC heads end in (log_softmax(x, rows, n, out)) and the Sigmoid
 * operator (sigmoid(x, out): EfficientNet's SiLU), both on the exp below.
 *
 * Why C: enclave/native.py. In numpy a step was one gemv and 8-11 ufunc calls of ~0.3 us each on a
 * few hundred floats, 32 steps per direction in a CRNN head, which kept the node at 3-4x
 * onnxruntime's; here a step is a gemv gcc vectorises plus the gates' arithmetic in one pass.
 *
 * The interpreter (enclave/interpreter.py, _lstm / _gru) checks the node's attributes and shapes
 * and computes the input projection X W^T of every step and direction as one BLAS product; this
 * file does the rest (biases, the recurrent products, the gates, the states):
 *
 *   compile(gates 4 (LSTM) | 3 (GRU), linear_before_reset 0|1, direction 0 forward | 1 reverse |
 *           2 bidirectional, hidden, R f32[dirs*gates*hidden*hidden], B f32[dirs*2*gates*hidden]
 *           or None) -> capsule
 *   run(cell, pre f32[seq*batch*dirs*gates*hidden], seq, batch, initial_h f32[dirs*batch*hidden]
 *       or None, initial_c (LSTM) or None, y f32[seq*dirs*batch*hidden], y_h f32[dirs*batch*hidden],
 *       y_c f32[dirs*batch*hidden] (LSTM) or None (GRU))  (y, y_h, y_c written)
 *
 * Layouts are ONNX's: gates i, o, f, c (LSTM) and z, r, h (GRU); pre is [seq][batch][dir][gate]
 * [unit] (X W^T, no bias); y is [seq][dir][batch][unit], the reverse direction's row t being its
 * state after x[t]. Default activations only (sigmoid, tanh), no clip, no sequence_lens, no
 * peepholes: the interpreter refuses the rest.
 *
 * compile() keeps R transposed per direction, [hidden (from)][gates*hidden (to)], so the recurrent
 * gemv is a sum of rows scaled by the state (an axpy per state unit: vectorised along the outputs
 * with no reassociated sum), and the biases summed where ONNX adds them both (GRU with
 * linear_before_reset keeps R's h-gate bias apart: the reset gate multiplies it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffers.h"
#include "exp.h"

typedef struct {
    Py_ssize_t gates, dirs, hidden, width; /* width = gates * hidden, one direction's gate row */
    int lbr, direction;
    float *rt;   /* [dirs][hidden][width]: R[d] transposed */
    float *bias; /* [dirs][width] */
    float *rbh;  /* [dirs][hidden]: R's h-gate bias (GRU with linear_before_reset), else NULL */
} cell_t;

static const char *CAPSULE = "splitseal.rnn.cell";

static void cell_free(cell_t *c) {
    if (!c) return;
    free(c->rt); free(c->bias); free(c->rbh);
    free(c);
}

static void capsule_free(PyObject *capsule) { cell_free((cell_t *)PyCapsule_GetPointer(capsule, CAPSULE)); }


/* a * b * c * d floats, or -1 if a factor is negative or their bytes do not fit a Py_ssize_t */
static Py_ssize_t product(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c, Py_ssize_t d) {
    Py_ssize_t out;
    if (a < 0 || b < 0 || c < 0 || d < 0 || __builtin_mul_overflow(a, b, &out) ||
        __builtin_mul_overflow(out, c, &out) || __builtin_mul_overflow(out, d, &out) ||
        out > PY_SSIZE_T_MAX / 4)
        return -1;
    return out;
}

static PyObject *compile(PyObject *self, PyObject *args) {
    (void)self;
    int gates, lbr, direction;
    Py_ssize_t hidden;
    PyObject *o_r, *o_b;
    if (!PyArg_ParseTuple(args, "iiinOO", &gates, &lbr, &direction, &hidden, &o_r, &o_b)) return NULL;
    if (gates != 3 && gates != 4) return PyErr_Format(PyExc_ValueError, "gates must be 3 (GRU) or 4 (LSTM)");
    if (lbr != 0 && !(lbr == 1 && gates == 3))
        return PyErr_Format(PyExc_ValueError, "linear_before_reset must be 0, or 1 for a GRU");
    if (direction < 0 || direction > 2) return PyErr_Format(PyExc_ValueError, "direction must be 0, 1 or 2");
    if (hidden < 1 || hidden > (1 << 20)) return PyErr_Format(PyExc_ValueError, "hidden size out of range");
    const Py_ssize_t dirs = direction == 2 ? 2 : 1, width = gates * hidden;
    Py_ssize_t r_count = product(dirs, width, hidden, 1);
    if (r_count < 0) return PyErr_Format(PyExc_ValueError, "R is too large");
    Py_buffer br, bb;
    if (get_floats(o_r, &br, "R", r_count, 0) < 0) return NULL;
    int has_b = o_b != Py_None;
    if (has_b && get_floats(o_b, &bb, "B", dirs * 2 * width, 0) < 0) { PyBuffer_Release(&br); return NULL; }
    cell_t *c = calloc(1, sizeof *c);
    if (c) {
        c->gates = gates; c->dirs = dirs; c->hidden = hidden; c->width = width;
        c->lbr = lbr; c->direction = direction;
        c->rt = malloc((size_t)r_count * sizeof(float));
        c->bias = calloc((size_t)(dirs * width), sizeof(float));
        if (lbr) c->rbh = calloc((size_t)(dirs * hidden), sizeof(float));
    }
    if (!c || !c->rt || !c->bias || (lbr && !c->rbh)) {
        cell_free(c);
        PyBuffer_Release(&br);
        if (has_b) PyBuffer_Release(&bb);
        return PyErr_NoMemory();
    }
    const float *r = br.buf;
    for (Py_ssize_t d = 0; d < dirs; d++)
        for (Py_ssize_t o = 0; o < width; o++)
            for (Py_ssize_t k = 0; k < hidden; k++)
                c->rt[(d * hidden + k) * width + o] = r[(d * width + o) * hidden + k];
    if (has_b) {
        const float *b = bb.buf;
        for (Py_ssize_t d = 0; d < dirs; d++) {
            const float *wb = b + d * 2 * width, *rb = wb + width;
            for (Py_ssize_t o = 0; o < width; o++) c->bias[d * width + o] = wb[o] + rb[o];
            if (lbr)
                for (Py_ssize_t j = 0; j < hidden; j++) {
                    c->bias[d * width + 2 * hidden + j] = wb[2 * hidden + j];
                    c->rbh[d * hidden + j] = rb[2 * hidden + j];
                }
        }
    }
    PyBuffer_Release(&br);
    if (has_b) PyBuffer_Release(&bb);
    PyObject *capsule = PyCapsule_New(c, CAPSULE, capsule_free);
    if (!capsule) cell_free(c);
    return capsule;
}

/* out[o] += sum_k h[k] rt[k * stride + o] for o < cols: for each block of output columns, the
 * rows of rt scaled by h[k] summed into accumulators that stay in registers for the whole sum.
 * Written with gcc's vector type (8 floats: one AVX2 register) because gcc auto-vectorises the
 * plain loop with its accumulators in memory, and not at all for 8-column blocks (a GRU's 3 x 32
 * columns measured 970 ns a gemv that way, 124 ns this way; OpenBLAS's sgemv 157-223 ns: a
 * micro-benchmark of both at the heads' shapes is in docs/BENCHMARKS.md). Blocks of 64 columns
 * (8 accumulators: enough independent sums to hide the add latency), then 32, then 8, then
 * one by one. */
typedef float vec8 __attribute__((vector_size(32)));
typedef int32_t ivec8 __attribute__((vector_size(32)));

static inline vec8 load8(const float *p) {
    vec8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, vec8 v) { memcpy(p, &v, sizeof v); }

static void gemv_acc(const float *restrict rt, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t cols,
                     const float *restrict h, float *restrict out) {
    Py_ssize_t o = 0;
    for (; o + 64 <= cols; o += 64) {
        vec8 a0 = load8(out + o), a1 = load8(out + o + 8), a2 = load8(out + o + 16), a3 = load8(out + o + 24);
        vec8 a4 = load8(out + o + 32), a5 = load8(out + o + 40), a6 = load8(out + o + 48), a7 = load8(out + o + 56);
        for (Py_ssize_t k = 0; k < rows; k++) {
            const float *row = rt + k * stride + o;
            const vec8 hk = (vec8){0} + h[k];
            a0 += hk * load8(row); a1 += hk * load8(row + 8); a2 += hk * load8(row + 16); a3 += hk * load8(row + 24);
            a4 += hk * load8(row + 32); a5 += hk * load8(row + 40); a6 += hk * load8(row + 48); a7 += hk * load8(row + 56);
        }
        store8(out + o, a0); store8(out + o + 8, a1); store8(out + o + 16, a2); store8(out + o + 24, a3);
        store8(out + o + 32, a4); store8(out + o + 40, a5); store8(out + o + 48, a6); store8(out + o + 56, a7);
    }
    for (; o + 32 <= cols; o += 32) {
        vec8 a0 = load8(out + o), a1 = load8(out + o + 8), a2 = load8(out + o + 16), a3 = load8(out + o + 24);
        for (Py_ssize_t k = 0; k < rows; k++) {
            const float *row = rt + k * stride + o;
            const vec8 hk = (vec8){0} + h[k];
            a0 += hk * load8(row); a1 += hk * load8(row + 8); a2 += hk * load8(row + 16); a3 += hk * load8(row + 24);
        }
        store8(out + o, a0); store8(out + o + 8, a1); store8(out + o + 16, a2); store8(out + o + 24, a3);
    }
    for (; o + 8 <= cols; o += 8) {
        vec8 a0 = load8(out + o);
        for (Py_ssize_t k = 0; k < rows; k++) a0 += ((vec8){0} + h[k]) * load8(rt + k * stride + o);
        store8(out + o, a0);
    }
    for (; o < cols; o++) {
        float acc = out[o];
        for (Py_ssize_t k = 0; k < rows; k++) acc += h[k] * rt[k * stride + o];
        out[o] = acc;
    }
}

/* tanh by the 13/6-degree rational interpolant that Eigen and onnxruntime's MLAS use (a couple of
 * ulp on [-9, 9]; +-1 in float32 beyond; measured within 3.5 ulp of numpy's, test_native_rnn.py),
 * branch-free so that the loops calling it vectorise.
 * The clamp to [-9, 9] and the NaN pass-through are integer operations on the bits: under C's
 * default -ftrapping-math a float comparison may trap, and gcc then vectorises no select on one
 * (non-negative floats order as their bits do; a magnitude above infinity's bits is a NaN). */
static inline float tanh_f(float x) {
    uint32_t bits, mag, out;
    memcpy(&bits, &x, sizeof bits);
    mag = bits & 0x7fffffffu;
    const uint32_t nine = 0x41100000u, inf = 0x7f800000u;
    const uint32_t clamped = (mag < nine ? mag : nine) | (bits & 0x80000000u);
    float v;
    memcpy(&v, &clamped, sizeof v);
    const float v2 = v * v;
    float p = fmaf(v2, -2.76076847742355e-16f, 2.00018790482477e-13f);
    p = fmaf(v2, p, -8.60467152213735e-11f);
    p = fmaf(v2, p, 5.12229709037114e-08f);
    p = fmaf(v2, p, 1.48572235717979e-05f);
    p = fmaf(v2, p, 6.37261928875436e-04f);
    p = fmaf(v2, p, 4.89352455891786e-03f);
    float q = fmaf(v2, 1.19825839466702e-06f, 1.18534705686654e-04f);
    q = fmaf(v2, q, 2.26843463243900e-03f);
    q = fmaf(v2, q, 4.89352518554385e-03f);
    const float t = v * p / q;
    memcpy(&out, &t, sizeof out);
    /* the interpolant overshoots 1 by an ulp near 9: its magnitude is capped at 1's bits */
    const uint32_t one = 0x3f800000u, t_mag = out & 0x7fffffffu;
    out = (t_mag < one ? t_mag : one) | (bits & 0x80000000u);
    const uint32_t is_nan = 0u - (uint32_t)(mag > inf); /* all ones for a NaN: a mask, not a select */
    out = (bits & is_nan) | (out & ~is_nan);
    float r;
    memcpy(&r, &out, sizeof r);
    return r;
}

/* sigmoid(x) = (1 + tanh(x / 2)) / 2: no exp, stable in both tails */
static inline float sigmoid_f(float x) { return fmaf(0.5f, tanh_f(0.5f * x), 0.5f); }

/* One LSTM step of one direction and batch row: g is scratch [4 hidden]; c is updated in place. */
static void lstm_step(const cell_t *cell, const float *rt, const float *bias, const float *restrict pre,
                      const float *restrict h_prev, float *restrict c, float *restrict h, float *restrict g) {
    const Py_ssize_t n = cell->hidden, w = cell->width;
    for (Py_ssize_t o = 0; o < w; o++) g[o] = pre[o] + bias[o];
    gemv_acc(rt, n, w, w, h_prev, g);
    for (Py_ssize_t j = 0; j < 3 * n; j++) g[j] = sigmoid_f(g[j]);   /* i, o, f */
    const float *gi = g, *go = g + n, *gf = g + 2 * n, *gc = g + 3 * n;
    for (Py_ssize_t j = 0; j < n; j++) {
        c[j] = fmaf(gf[j], c[j], gi[j] * tanh_f(gc[j]));
        h[j] = go[j] * tanh_f(c[j]);
    }
}

/* One GRU step: g is scratch [3 hidden], rh scratch [hidden]. h = (1 - z) h~ + z h_prev, written
 * h~ + z (h_prev - h~) as the numpy code it replaces did. */
static void gru_step(const cell_t *cell, const float *rt, const float *bias, const float *rbh,
                     const float *restrict pre, const float *restrict h_prev, float *restrict h,
                     float *restrict g, float *restrict rh) {
    const Py_ssize_t n = cell->hidden, w = cell->width;
    for (Py_ssize_t o = 0; o < 2 * n; o++) g[o] = pre[o] + bias[o];
    const float *pre_h = pre + 2 * n, *bias_h = bias + 2 * n;
    float *gz = g, *gr = g + n, *gh = g + 2 * n;
    if (cell->lbr) {
        /* h~ = tanh(x W_h + Wb_h + r (h_prev R_h + Rb_h)): one gemv for all three gates */
        for (Py_ssize_t j = 0; j < n; j++) gh[j] = rbh[j];
        gemv_acc(rt, n, w, w, h_prev, g);
        for (Py_ssize_t j = 0; j < 2 * n; j++) g[j] = sigmoid_f(g[j]);
        for (Py_ssize_t j = 0; j < n; j++) {
            const float cand = tanh_f(fmaf(gr[j], gh[j], pre_h[j] + bias_h[j]));
            h[j] = fmaf(gz[j], h_prev[j] - cand, cand);
        }
    } else {
        /* h~ = tanh(x W_h + (r h_prev) R_h + Wb_h + Rb_h) */
        gemv_acc(rt, n, w, 2 * n, h_prev, g);
        for (Py_ssize_t j = 0; j < 2 * n; j++) g[j] = sigmoid_f(g[j]);
        for (Py_ssize_t j = 0; j < n; j++) {
            rh[j] = gr[j] * h_prev[j];
            gh[j] = pre_h[j] + bias_h[j];
        }
        gemv_acc(rt + 2 * n, n, w, n, rh, gh);
        for (Py_ssize_t j = 0; j < n; j++) {
            const float cand = tanh_f(gh[j]);
            h[j] = fmaf(gz[j], h_prev[j] - cand, cand);
        }
    }
}

static PyObject *run(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_cell, *o_pre, *o_h0, *o_c0, *o_y, *o_yh, *o_yc;
    Py_ssize_t seq, batch;
    if (!PyArg_ParseTuple(args, "OOnnOOOOO", &o_cell, &o_pre, &seq, &batch, &o_h0, &o_c0, &o_y, &o_yh, &o_yc))
        return NULL;
    cell_t *cell = PyCapsule_GetPointer(o_cell, CAPSULE);
    if (!cell) return NULL;
    const int lstm = cell->gates == 4;
    if (!lstm && (o_c0 != Py_None || o_yc != Py_None))
        return PyErr_Format(PyExc_ValueError, "a GRU has no cell state (initial_c, y_c)");
    if (lstm && o_yc == Py_None) return PyErr_Format(PyExc_ValueError, "an LSTM writes y_c");
    const Py_ssize_t nd = cell->dirs, n = cell->hidden, w = cell->width;
    const Py_ssize_t n_pre = product(seq, batch, nd, w), n_y = product(seq, nd, batch, n);
    const Py_ssize_t n_state = product(nd, batch, n, 1);
    if (n_pre < 0 || n_y < 0 || n_state < 0) return PyErr_Format(PyExc_ValueError, "seq or batch out of range");
    Py_buffer b[7];
    int got = 0;
    const float *h0 = NULL, *c0 = NULL;
    float *yc = NULL;
    if (get_floats(o_pre, &b[got], "pre", n_pre, 0) < 0) goto fail;
    const float *pre = b[got++].buf;
    if (get_floats(o_y, &b[got], "y", n_y, 1) < 0) goto fail;
    float *y = b[got++].buf;
    if (get_floats(o_yh, &b[got], "y_h", n_state, 1) < 0) goto fail;
    float *yh = b[got++].buf;
    if (o_h0 != Py_None) {
        if (get_floats(o_h0, &b[got], "initial_h", n_state, 0) < 0) goto fail;
        h0 = b[got++].buf;
    }
    if (o_c0 != Py_None) {
        if (get_floats(o_c0, &b[got], "initial_c", n_state, 0) < 0) goto fail;
        c0 = b[got++].buf;
    }
    if (lstm) {
        if (get_floats(o_yc, &b[got], "y_c", n_state, 1) < 0) goto fail;
        yc = b[got++].buf;
    }
    /* scratch: a zero state, the gates, the GRU's r h_prev */
    float *scratch = calloc((size_t)(n + w + n), sizeof(float));
    if (!scratch) { PyErr_NoMemory(); goto fail; }
    const float *zeros = scratch;
    float *g = scratch + n, *rh = scratch + n + w;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t d = 0; d < nd; d++) {
        const int backwards = cell->direction == 1 || d == 1;
        const float *rt = cell->rt + d * n * w, *bias = cell->bias + d * w;
        const float *rbh = cell->rbh ? cell->rbh + d * n : NULL;
        for (Py_ssize_t r = 0; r < batch; r++) {
            const Py_ssize_t state = (d * batch + r) * n;
            const float *h_prev = h0 ? h0 + state : zeros;
            float *c = lstm ? yc + state : NULL;
            if (lstm) {
                if (c0) memcpy(c, c0 + state, (size_t)n * sizeof(float));
                else memset(c, 0, (size_t)n * sizeof(float));
            }
            for (Py_ssize_t step = 0; step < seq; step++) {
                const Py_ssize_t t = backwards ? seq - 1 - step : step;
                const float *p = pre + ((t * batch + r) * nd + d) * w;
                float *h = y + ((t * nd + d) * batch + r) * n;
                if (lstm) lstm_step(cell, rt, bias, p, h_prev, c, h, g);
                else gru_step(cell, rt, bias, rbh, p, h_prev, h, g, rh);
                h_prev = h;
            }
            memcpy(yh + state, h_prev, (size_t)n * sizeof(float));
        }
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    for (int k = 0; k < got; k++) PyBuffer_Release(&b[k]);
    Py_RETURN_NONE;
fail:
    for (int k = 0; k < got; k++) PyBuffer_Release(&b[k]);
    return NULL;
}

/* ---- log-softmax over contiguous rows (the log-probabilities a CTC head ends in) ----
 *
 * Why here: in numpy LogSoftmax over a CRNN head's [32, 1, 37] scores is seven calls (max, subtract,
 * exp, sum, log, subtract, astype), 13-20 us where the reductions run row by row over 37 floats;
 * this is one pass per row. Same formula as the numpy code it replaced: (x - max) - log(sum(exp(x -
 * max))). A row with a NaN or an infinity goes through libm one element at a time, so its result is
 * numpy's (NaN rows stay NaN); every other row vectorises. */


static void log_softmax_row(const float *restrict x, Py_ssize_t n, float *restrict out, float *restrict e) {
    uint32_t special = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        uint32_t bits;
        memcpy(&bits, x + j, sizeof bits);
        special |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    if (special) { /* numpy's arithmetic on NaN and infinities, element by element */
        float m = x[0];
        for (Py_ssize_t j = 1; j < n; j++)
            if (isnan(x[j]) || x[j] > m) m = isnan(m) ? m : x[j];
        float total = 0.0f;
        for (Py_ssize_t j = 0; j < n; j++) total += expf(x[j] - m);
        const float lt = logf(total);
        for (Py_ssize_t j = 0; j < n; j++) out[j] = (x[j] - m) - lt;
        return;
    }
    /* the row's maximum and the sum of the exponentials in 8 lanes (finite values: comparisons
     * are exact and order-free), then across the lanes */
    Py_ssize_t j = 0;
    float m = x[0];
    if (n >= 8) {
        vec8 m8 = load8(x);
        for (j = 8; j + 8 <= n; j += 8) {
            const vec8 v = load8(x + j);
            const ivec8 gt = v > m8;
            m8 = (vec8)(((ivec8)v & gt) | ((ivec8)m8 & ~gt));
        }
        for (int l = 0; l < 8; l++) m = m8[l] > m ? m8[l] : m;
    }
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    for (j = 0; j < n; j++) e[j] = exp_nonpositive(x[j] - m);
    vec8 s8 = {0};
    for (j = 0; j + 8 <= n; j += 8) s8 += load8(e + j);
    float total = 0.0f;
    for (int l = 0; l < 8; l++) total += s8[l];
    for (; j < n; j++) total += e[j];
    const float lt = logf(total);
    for (j = 0; j < n; j++) out[j] = (x[j] - m) - lt;
}

static PyObject *log_softmax(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_out;
    Py_ssize_t rows, n;
    if (!PyArg_ParseTuple(args, "OnnO", &o_x, &rows, &n, &o_out)) return NULL;
    const Py_ssize_t count = product(rows, n, 1, 1);
    if (count < 0 || n < 1) return PyErr_Format(PyExc_ValueError, "rows or row length out of range");
    Py_buffer bx, bo;
    if (get_in_out(o_x, &bx, o_out, &bo, count) < 0) return NULL;
    float *e = malloc((size_t)n * sizeof(float));
    if (!e) { PyBuffer_Release(&bx); PyBuffer_Release(&bo); return PyErr_NoMemory(); }
    const float *x = bx.buf;
    float *out = bo.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) log_softmax_row(x + r * n, n, out + r * n, e);
    Py_END_ALLOW_THREADS
    free(e);
    PyBuffer_Release(&bx);
    PyBuffer_Release(&bo);
    Py_RETURN_NONE;
}

/* The Sigmoid operator's 1 / (1 + exp(-x)), within a few ulp in both tails (the gates' tanh form
 * above loses the relative precision of small results to its + 0.5): with e = exp(-|x|),
 * 1 / (1 + e) for x >= 0 and e / (1 + e) below; branch-free (bit masks, as tanh_f) so the loop
 * vectorises, a NaN passed through. */
static inline float logistic_f(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    const uint32_t minus_magnitude = bits | 0x80000000u;
    float v;
    memcpy(&v, &minus_magnitude, sizeof v);
    const float e = exp_nonpositive(v);    /* exp(-|x|) */
    const float d = 1.0f / (1.0f + e);
    uint32_t e_bits, one_bits = 0x3f800000u, out;
    memcpy(&e_bits, &e, sizeof e_bits);
    const uint32_t negative = 0u - (bits >> 31);
    const uint32_t num_bits = (e_bits & negative) | (one_bits & ~negative);
    float num;
    memcpy(&num, &num_bits, sizeof num);
    const float r = num * d;
    memcpy(&out, &r, sizeof out);
    const uint32_t is_nan = 0u - (uint32_t)((bits & 0x7fffffffu) > 0x7f800000u);
    out = (bits & is_nan) | (out & ~is_nan);
    float y;
    memcpy(&y, &out, sizeof y);
    return y;
}

/* sigmoid(x, out): the Sigmoid operator over a contiguous float32 array (logistic_f); out may be x. */
static PyObject *sigmoid(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_out;
    if (!PyArg_ParseTuple(args, "OO", &o_x, &o_out)) return NULL;
    Py_buffer bx, bo;
    if (get_floats(o_x, &bx, "x", -1, 0) < 0) return NULL;
    const Py_ssize_t n = bx.len / 4;
    if (get_floats(o_out, &bo, "out", n, 1) < 0) { PyBuffer_Release(&bx); return NULL; }
    const float *x = bx.buf;
    float *out = bo.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) out[i] = logistic_f(x[i]);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bx);
    PyBuffer_Release(&bo);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"compile", compile, METH_VARARGS, "Check and lay out a node's recurrent weights and biases; returns the cell."},
    {"run", run, METH_VARARGS, "Run every step of every direction, writing y, y_h (and y_c)."},
    {"log_softmax", log_softmax, METH_VARARGS, "Log-softmax of every contiguous row of x into out."},
    {"sigmoid", sigmoid, METH_VARARGS, "Sigmoid of every element of x into out (out may be x)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "rnn", "LSTM and GRU recurrences, log-softmax, sigmoid.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_rnn(void) { return PyModule_Create(&module); }
