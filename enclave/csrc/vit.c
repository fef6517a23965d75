/* Transformer-block kernels for the enclave's interpreter: LayerNormalization, Softmax and Erf.
 *
 * Why C: enclave/native.py. In numpy a LayerNormalization over a ViT block's 17x64 tensor is ten
 * calls, a Softmax five, an Erf nineteen (1-3 us each on arrays this small); each is one pass or
 * two over the rows here. The interpreter checks the operator (enclave/interpreter.py) and hands
 * over flat float32 buffers with their sizes; every function checks each buffer's item type and
 * length against those sizes before it reads (ValueError otherwise), so no read or write leaves
 * a buffer. ``out`` may be the input itself (every element is read before it is overwritten).
 *
 *   layernorm(x f32[rows*n], scale f32[n], bias f32[n] or None, out f32[rows*n], rows, n, eps)
 *       out = (x - mean) / sqrt(var + eps) * scale + bias per row of n; mean and variance (of
 *       the centred values, two passes) summed in double
 *   softmax(x f32[outer*n*inner], out, outer, n, inner)
 *       softmax along the middle axis of [outer, n, inner]
 *   erf(x f32[count], out f32[count], count)
 *       Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7 from the formula)
 *   elementwise(x f32[rows*n], out, rows, n, program bytes, operands tuple)
 *       a chain's run of Add / Sub / Mul / Div / Erf nodes in one pass (see elementwise below)
 *   view_copy(x f32[len], out f32[prod(shape)], offset, shape tuple, strides tuple, op, c)
 *       out = the view of x at element `offset` with these element strides (rank <= 8, each
 *       >= 0), read in C order; then times c (op 1), divided by c (op 2) or as is (op 0): a
 *       chain's run of reshapes, transposes and one-index Gathers (a ViT's head split) copied
 *       contiguous in one call, with the Mul or Div by one value that may follow it
 *
 * exp comes from exp.h (exp_nonpositive) rather than from libm so that the loops vectorise: every
 * argument is <= 0 in these kernels (x - max, -x*x), which keeps the range reduction to normal
 * numbers. NaN propagates as in numpy (a NaN in a row makes the row's softmax NaN).
 * Built with -std=c11 (no -ffast-math, so no contraction into FMA): the results do not depend
 * on whether a loop was vectorised.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
/* Comparisons may be evaluated unconditionally (FP traps are never enabled in this process:
 * numpy only reads the exception flags), so GCC can turn the selects into vector blends; with
 * the default -ftrapping-math it keeps them as branches and vectorises none of these loops.
 * Values are unchanged: this concerns exception flags only. */
#pragma GCC optimize("no-trapping-math")
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "buffers.h"
#include "exp.h"
#include "softmax.h"


/* rows * n (or a * b * c) without overflow, each factor >= 0 */
static int checked_count(Py_ssize_t *count, Py_ssize_t a, Py_ssize_t b, Py_ssize_t c) {
    if (a < 0 || b < 0 || c < 0) {
        PyErr_SetString(PyExc_ValueError, "sizes must be >= 0");
        return -1;
    }
    Py_ssize_t limit = PY_SSIZE_T_MAX / 4;
    if ((b && a > limit / b) || (c && a * b > limit / c)) {
        PyErr_SetString(PyExc_ValueError, "sizes overflow");
        return -1;
    }
    *count = a * b * c;
    return 0;
}


static inline float erf_as(float x) {
    float z = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * z);
    float poly = 1.061405429f;
    poly = poly * t - 1.453152027f;
    poly = poly * t + 1.421413741f;
    poly = poly * t - 0.284496736f;
    poly = poly * t + 0.254829592f;
    poly = poly * t;
    float y = 1.0f - poly * exp_nonpositive(-(z * z));
    return copysignf(y, x);
}

enum { LANES = 8 };

static double row_sum(const float *x, Py_ssize_t n) {
    double acc[LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += x[i + j];
    double s = 0;
    for (; i < n; i++) s += x[i];
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

static double row_centred_squares(const float *x, Py_ssize_t n, double mean) {
    double acc[LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double d = x[i + j] - mean;
            acc[j] += d * d;
        }
    double s = 0;
    for (; i < n; i++) s += (x[i] - mean) * (x[i] - mean);
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

/* (the sizes by value: the parsers' variables have their address taken, which keeps GCC from
 * counting a loop's iterations over them) */
static void layernorm_rows(const float *x, const float *scale, const float *bias, float *out, Py_ssize_t rows,
                           Py_ssize_t n, float eps) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        float *dst = out + r * n;
        double mean = row_sum(row, n) / (double)n;
        double var = row_centred_squares(row, n, mean) / (double)n;
        float m = (float)mean, inv = (float)(1.0 / sqrt(var + (double)eps));
        if (bias)
            for (Py_ssize_t i = 0; i < n; i++) dst[i] = (row[i] - m) * inv * scale[i] + bias[i];
        else
            for (Py_ssize_t i = 0; i < n; i++) dst[i] = (row[i] - m) * inv * scale[i];
    }
}

static PyObject *layernorm(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_scale, *o_bias, *o_out;
    Py_ssize_t rows, n, count;
    float eps;
    if (!PyArg_ParseTuple(args, "OOOOnnf", &o_x, &o_scale, &o_bias, &o_out, &rows, &n, &eps)) return NULL;
    if (checked_count(&count, rows, n, 1) < 0) return NULL;
    Py_buffer bx, bs, bb, bo;
    int biased = o_bias != Py_None;
    if (get_floats(o_x, &bx, "x", count, 0) < 0) return NULL;
    if (get_floats(o_scale, &bs, "scale", n, 0) < 0) goto fail_x;
    if (biased && get_floats(o_bias, &bb, "bias", n, 0) < 0) goto fail_s;
    if (get_floats(o_out, &bo, "out", count, 1) < 0) goto fail_b;
    const float *x = bx.buf, *scale = bs.buf, *bias = biased ? bb.buf : NULL;
    float *out = bo.buf;
    Py_BEGIN_ALLOW_THREADS
    if (count) layernorm_rows(x, scale, bias, out, rows, n, eps);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bo);
    if (biased) PyBuffer_Release(&bb);
    PyBuffer_Release(&bs);
    PyBuffer_Release(&bx);
    Py_RETURN_NONE;
fail_b:
    if (biased) PyBuffer_Release(&bb);
fail_s:
    PyBuffer_Release(&bs);
fail_x:
    PyBuffer_Release(&bx);
    return NULL;
}

enum { COLUMNS = 64 };

/* softmax along the middle axis of one [n, inner] block, COLUMNS columns at a time */
static void softmax_strided(const float *x, float *out, Py_ssize_t n, Py_ssize_t inner) {
    float m[COLUMNS], s[COLUMNS];
    for (Py_ssize_t c0 = 0; c0 < inner; c0 += COLUMNS) {
        Py_ssize_t w = inner - c0 < COLUMNS ? inner - c0 : COLUMNS;
        for (Py_ssize_t j = 0; j < w; j++) { m[j] = -INFINITY; s[j] = 0.0f; }
        for (Py_ssize_t k = 0; k < n; k++) {
            const float *v = x + k * inner + c0;
            for (Py_ssize_t j = 0; j < w; j++) m[j] = v[j] > m[j] ? v[j] : m[j];
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            const float *v = x + k * inner + c0;
            float *e = out + k * inner + c0;
            for (Py_ssize_t j = 0; j < w; j++) {
                e[j] = exp_nonpositive(v[j] - m[j]);
                s[j] += e[j];
            }
        }
        for (Py_ssize_t j = 0; j < w; j++) s[j] = 1.0f / s[j];
        for (Py_ssize_t k = 0; k < n; k++) {
            float *e = out + k * inner + c0;
            for (Py_ssize_t j = 0; j < w; j++) e[j] *= s[j];
        }
    }
}

static PyObject *softmax(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_out;
    Py_ssize_t outer, n, inner, count;
    if (!PyArg_ParseTuple(args, "OOnnn", &o_x, &o_out, &outer, &n, &inner)) return NULL;
    if (checked_count(&count, outer, n, inner) < 0) return NULL;
    Py_buffer bx, bo;
    if (get_in_out(o_x, &bx, o_out, &bo, count) < 0) return NULL;
    const float *x = bx.buf;
    float *out = bo.buf;
    if (count) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t o = 0; o < outer; o++) {
            if (inner == 1)
                softmax_row(x + o * n, out + o * n, n);
            else
                softmax_strided(x + o * n * inner, out + o * n * inner, n, inner);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bx);
    Py_RETURN_NONE;
}

static void erf_into(const float *x, float *out, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) out[i] = erf_as(x[i]);
}

static PyObject *erf_all(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_out;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "OOn", &o_x, &o_out, &count)) return NULL;
    if (checked_count(&count, count, 1, 1) < 0) return NULL;
    Py_buffer bx, bo;
    if (get_in_out(o_x, &bx, o_out, &bo, count) < 0) return NULL;
    const float *x = bx.buf;
    float *out = bo.buf;
    Py_BEGIN_ALLOW_THREADS
    erf_into(x, out, count);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bx);
    Py_RETURN_NONE;
}

/* One element-wise run of a chain: the ops of consecutive nodes applied to each chunk of a row
 * while it is in L1, one pass over memory instead of one numpy call per node. A step is three
 * bytes (op, operand mode, operand index); every operand's length is checked against its mode
 * before anything is read. Each op is the one IEEE float32 operation numpy's ufunc does
 * (Sub / Div with the chain's value on either side), Erf the kernel above: the interpreter's
 * chain proves the run equal to the nodes' own code bit for bit. */
enum { OP_ADD, OP_SUB, OP_RSUB, OP_MUL, OP_DIV, OP_RDIV, OP_ERF, N_OPS };
enum { MODE_NONE, MODE_SCALAR, MODE_ROW, MODE_FULL };
enum { CHUNK = 256, MAX_STEPS = 32 };

typedef struct {
    int op, mode;
    const float *v;
} step_t;

static void apply_step(const step_t *st, float *acc, Py_ssize_t w, Py_ssize_t row_at, Py_ssize_t at) {
    const float *v = st->mode == MODE_ROW ? st->v + row_at : st->mode == MODE_FULL ? st->v + at : st->v;
    if (st->op == OP_ERF) {
        for (Py_ssize_t j = 0; j < w; j++) acc[j] = erf_as(acc[j]);
        return;
    }
    if (st->mode == MODE_SCALAR) {
        const float c = v[0];
        switch (st->op) {
        case OP_ADD: for (Py_ssize_t j = 0; j < w; j++) acc[j] = acc[j] + c; break;
        case OP_SUB: for (Py_ssize_t j = 0; j < w; j++) acc[j] = acc[j] - c; break;
        case OP_RSUB: for (Py_ssize_t j = 0; j < w; j++) acc[j] = c - acc[j]; break;
        case OP_MUL: for (Py_ssize_t j = 0; j < w; j++) acc[j] = acc[j] * c; break;
        case OP_DIV: for (Py_ssize_t j = 0; j < w; j++) acc[j] = acc[j] / c; break;
        default: for (Py_ssize_t j = 0; j < w; j++) acc[j] = c / acc[j]; break;
        }
        return;
    }
    switch (st->op) {
    case OP_ADD: for (Py_ssize_t j = 0; j < w; j++) acc[j] = acc[j] + v[j]; break;
    case OP_SUB: for (Py_ssize_t j = 0; j < w; j++) acc[j] = acc[j] - v[j]; break;
    case OP_RSUB: for (Py_ssize_t j = 0; j < w; j++) acc[j] = v[j] - acc[j]; break;
    case OP_MUL: for (Py_ssize_t j = 0; j < w; j++) acc[j] = acc[j] * v[j]; break;
    case OP_DIV: for (Py_ssize_t j = 0; j < w; j++) acc[j] = acc[j] / v[j]; break;
    default: for (Py_ssize_t j = 0; j < w; j++) acc[j] = v[j] / acc[j]; break;
    }
}

static void elementwise_rows(const float *x, float *out, Py_ssize_t rows, Py_ssize_t n, const step_t *steps,
                             int n_steps) {
    float acc[CHUNK];
    for (Py_ssize_t r = 0; r < rows; r++)
        for (Py_ssize_t c0 = 0; c0 < n; c0 += CHUNK) {
            Py_ssize_t w = n - c0 < CHUNK ? n - c0 : CHUNK, at = r * n + c0;
            memcpy(acc, x + at, (size_t)w * sizeof(float));
            for (int k = 0; k < n_steps; k++) apply_step(&steps[k], acc, w, c0, at);
            memcpy(out + at, acc, (size_t)w * sizeof(float));
        }
}

static PyObject *elementwise(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_out, *o_operands;
    Py_ssize_t rows, n, count;
    const char *program;
    Py_ssize_t program_len;
    if (!PyArg_ParseTuple(args, "OOnny#O!", &o_x, &o_out, &rows, &n, &program, &program_len, &PyTuple_Type,
                          &o_operands))
        return NULL;
    if (checked_count(&count, rows, n, 1) < 0) return NULL;
    Py_ssize_t n_operands = PyTuple_GET_SIZE(o_operands);
    int n_steps = (int)(program_len / 3);
    if (program_len % 3 || n_steps > MAX_STEPS || n_operands > MAX_STEPS) {
        PyErr_SetString(PyExc_ValueError, "program: not whole steps of 3 bytes, or too many steps or operands");
        return NULL;
    }
    step_t steps[MAX_STEPS];
    Py_buffer views[MAX_STEPS];
    Py_buffer bx, bo;
    if (get_in_out(o_x, &bx, o_out, &bo, count) < 0) return NULL;
    /* each operand is acquired once, with the length its first step's mode needs; a later step
     * naming it with another mode is refused */
    Py_ssize_t need[MAX_STEPS];
    for (Py_ssize_t i = 0; i < n_operands; i++) need[i] = -1;
    for (int k = 0; k < n_steps; k++) {
        int op = (unsigned char)program[3 * k], mode = (unsigned char)program[3 * k + 1];
        int index = (unsigned char)program[3 * k + 2];
        steps[k].op = op;
        steps[k].mode = mode;
        steps[k].v = NULL;
        if (op >= N_OPS || mode > MODE_FULL || (op == OP_ERF) != (mode == MODE_NONE)) {
            PyErr_Format(PyExc_ValueError, "program: step %d has op %d with mode %d", k, op, mode);
            goto fail;
        }
        if (mode == MODE_NONE) continue;
        if (index >= n_operands) {
            PyErr_Format(PyExc_ValueError, "program: step %d names operand %d of %zd", k, index, n_operands);
            goto fail;
        }
        Py_ssize_t len = mode == MODE_SCALAR ? 1 : mode == MODE_ROW ? n : count;
        if (need[index] < 0) {
            if (get_floats(PyTuple_GET_ITEM(o_operands, index), &views[index], "operand", len, 0) < 0) goto fail;
            need[index] = len;
        } else if (need[index] != len) {
            PyErr_Format(PyExc_ValueError, "program: operand %d is used with two lengths", index);
            goto fail;
        }
        steps[k].v = views[index].buf;
    }
    if (count) {
        const float *x = bx.buf;
        float *out = bo.buf;
        Py_BEGIN_ALLOW_THREADS
        elementwise_rows(x, out, rows, n, steps, n_steps);
        Py_END_ALLOW_THREADS
    }
    for (Py_ssize_t i = 0; i < n_operands; i++)
        if (need[i] >= 0) PyBuffer_Release(&views[i]);
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bx);
    Py_RETURN_NONE;
fail:
    for (Py_ssize_t i = 0; i < n_operands; i++)
        if (need[i] >= 0) PyBuffer_Release(&views[i]);
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bx);
    return NULL;
}

/* One C-order pass over a strided view of x (see view_copy above); the innermost axis is a
 * plain loop (a memcpy when it is contiguous and nothing is applied). */
enum { VIEW_MAX_RANK = 8 };

static void view_copy_into(const float *x, float *out, Py_ssize_t rank, const Py_ssize_t *shape,
                           const Py_ssize_t *strides, int op, float c) {
    Py_ssize_t index[VIEW_MAX_RANK] = {0};
    Py_ssize_t inner = shape[rank - 1], step = strides[rank - 1];
    const float *src = x;
    for (;;) {
        if (step == 1 && op == 0) {
            memcpy(out, src, (size_t)inner * sizeof(float));
        } else if (op == 1) {
            for (Py_ssize_t j = 0; j < inner; j++) out[j] = src[j * step] * c;
        } else if (op == 2) {
            for (Py_ssize_t j = 0; j < inner; j++) out[j] = src[j * step] / c;
        } else {
            for (Py_ssize_t j = 0; j < inner; j++) out[j] = src[j * step];
        }
        out += inner;
        Py_ssize_t axis = rank - 2;
        for (; axis >= 0; axis--) {
            src += strides[axis];
            if (++index[axis] < shape[axis]) break;
            src -= strides[axis] * shape[axis];
            index[axis] = 0;
        }
        if (axis < 0) return;
    }
}

static PyObject *view_copy(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_out, *o_shape, *o_strides;
    Py_ssize_t offset;
    int op;
    float c;
    if (!PyArg_ParseTuple(args, "OOnO!O!if", &o_x, &o_out, &offset, &PyTuple_Type, &o_shape, &PyTuple_Type,
                          &o_strides, &op, &c))
        return NULL;
    Py_ssize_t rank = PyTuple_GET_SIZE(o_shape);
    if (rank < 1 || rank > VIEW_MAX_RANK || PyTuple_GET_SIZE(o_strides) != rank || op < 0 || op > 2 || offset < 0) {
        PyErr_SetString(PyExc_ValueError, "view_copy: rank 1-8, one stride per axis, op 0-2, offset >= 0");
        return NULL;
    }
    Py_ssize_t shape[VIEW_MAX_RANK], strides[VIEW_MAX_RANK], count = 1, last = offset;
    for (Py_ssize_t i = 0; i < rank; i++) {
        shape[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(o_shape, i));
        strides[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(o_strides, i));
        if (PyErr_Occurred()) return NULL;
        if (shape[i] < 0 || strides[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "view_copy: sizes and strides must be >= 0");
            return NULL;
        }
        if (checked_count(&count, count, shape[i], 1) < 0) return NULL;
    }
    /* the last element the view reaches, without overflow: each term below PY_SSIZE_T_MAX / 8 */
    for (Py_ssize_t i = 0; count && i < rank; i++) {
        if (strides[i] && shape[i] - 1 > (PY_SSIZE_T_MAX / 8 - last) / strides[i]) {
            PyErr_SetString(PyExc_ValueError, "view_copy: the view overflows");
            return NULL;
        }
        last += (shape[i] - 1) * strides[i];
    }
    Py_buffer bx, bo;
    if (get_floats(o_x, &bx, "x", -1, 0) < 0) return NULL;
    if (get_floats(o_out, &bo, "out", count, 1) < 0) {
        PyBuffer_Release(&bx);
        return NULL;
    }
    if (count && last >= bx.len / (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "view_copy: the view reaches outside x");
        goto fail;
    }
    uintptr_t x0 = (uintptr_t)bx.buf, o0 = (uintptr_t)bo.buf;
    if (bo.len && bx.len && x0 < o0 + (uintptr_t)bo.len && o0 < x0 + (uintptr_t)bx.len) {
        PyErr_SetString(PyExc_ValueError, "view_copy: out overlaps x");
        goto fail;
    }
    if (count) {
        const float *x = (const float *)bx.buf + offset;
        float *out = bo.buf;
        Py_BEGIN_ALLOW_THREADS
        view_copy_into(x, out, rank, shape, strides, op, c);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bx);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bx);
    return NULL;
}

static PyMethodDef methods[] = {
    {"view_copy", view_copy, METH_VARARGS, "A strided view of x copied in C order, optionally scaled (see above)."},
    {"elementwise", elementwise, METH_VARARGS, "A chain's run of element-wise ops, one pass (see above)."},
    {"layernorm", layernorm, METH_VARARGS, "LayerNormalization of every row of n (see the file's comment)."},
    {"softmax", softmax, METH_VARARGS, "Softmax along the middle axis of [outer, n, inner]."},
    {"erf", erf_all, METH_VARARGS, "erf of every element, into out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "vit", "Transformer-block kernels.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_vit(void) { return PyModule_Create(&module); }
