/* Products by a weight packed once: MatMul by a 2-D B and Gemm, for the few rows of a head.
 *
 * Why C: enclave/native.py. A ViT block's products are (17, 64) @ (64, 192), (64, 64), (64, 128)
 * and (17, 128) @ (128, 64): OpenBLAS copies B into its own panels on every call, which at 17
 * rows is most of the work (numpy 9.3 us on the first; docs/BENCHMARKS.md), while onnxruntime
 * packs its weights once at session load. Here the interpreter packs B once per node (the same
 * weight array on every call) into panels of PANEL columns, and each call runs a 6 x 16 register
 * tile of AVX2 FMAs over them, the bias added in the store. Where the compiler targets AVX-512
 * (-march=native on a machine that has it, as onnxruntime's MLAS picks its AVX-512 kernels there)
 * a tile is 6 x 32, two panels of one 16-float vector per row: half the instructions per output
 * (measured 1.5-2.0x faster on a ViT block's four products, docs/BENCHMARKS.md), the same sums.
 *
 *   pack(b f32[k*n], k, n, transposed, packed f32[panels(n)*PANEL*k])
 *       b is [k, n] (transposed == 0) or [n, k] (transposed == 1, a Gemm's transB);
 *       panel p holds columns p*PANEL.. as k rows of PANEL floats, zero beyond column n
 *   matmul(a f32[m*k], packed f32[panels(n)*PANEL*k], m, k, n, bias f32[n] or None, out f32[m*n]
 *          [, addend f32[m*n] or None])
 *       out = a @ b (+ bias, broadcast over the rows) (+ addend, element by element: a residual
 *       Add after the product, a second float32 addition in the store); out must not overlap
 *       an input
 *   batched(a f32[batch*m*k], b f32[batch*k*n], out f32[batch*m*n], batch, m, k, n)
 *       out[p] = a[p] @ b[p], b not packed (attention's per-head products): each b[p] is packed
 *       into a scratch buffer of the call and multiplied as above
 *   attention(q f32[batch*m*k], kt f32[batch*k*n], v f32[batch*n*dv], out f32[batch*m*dv],
 *             batch, m, k, n, dv, scale_at, divide, scale)
 *       per head p: s = q[p] @ kt[p]; every row of s softmaxed (softmax.h, the Softmax kernel's
 *       own row function); out[p] = s @ v[p]. The scale (one float32 multiply, or divide with
 *       the value on the left, per element) is applied to q (scale_at 1), to s before the
 *       softmax (2) or not at all (0): scaled dot-product attention's four or five nodes in one
 *       call, each step the same float32 operations as the batched products, the Mul or Div
 *       and the Softmax of the nodes (the interpreter's chain proves the run equal to them)
 *
 * Each output is one float32 accumulator summed over k in order with fused multiply-adds, then
 * the bias added with one float32 addition (what a separate Add of the result does): the result
 * depends on the shapes only, not on where a row or column falls in a tile. Every buffer's item
 * type and length is checked against the sizes before anything is read (ValueError otherwise).
 * Without AVX2 and FMA (another machine's -march=native) the same loops run in scalar fmaf.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "buffers.h"
#include "softmax.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GEMM_AVX2 1
#else
#define GEMM_AVX2 0
#endif
#if GEMM_AVX2 && defined(__AVX512F__)
#define GEMM_AVX512 1
#else
#define GEMM_AVX512 0
#endif

enum { PANEL = 16, TILE_ROWS = 6 };

/* a * b * c without overflow, each factor >= 0 */
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

/* floats of the packed form of a [k, n] weight */
static int packed_count(Py_ssize_t *count, Py_ssize_t k, Py_ssize_t n) {
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "sizes must be >= 0");
        return -1;
    }
    return checked_count(count, (n + PANEL - 1) / PANEL, PANEL, k);
}

static void pack_panels(const float *b, float *packed, Py_ssize_t k, Py_ssize_t n, int transposed) {
    Py_ssize_t panels = (n + PANEL - 1) / PANEL;
    for (Py_ssize_t p = 0; p < panels; p++) {
        float *dst = packed + p * PANEL * k;
        Py_ssize_t c0 = p * PANEL, w = n - c0 < PANEL ? n - c0 : PANEL;
        for (Py_ssize_t kk = 0; kk < k; kk++) {
            float *row = dst + kk * PANEL;
            for (Py_ssize_t j = 0; j < w; j++) row[j] = transposed ? b[(c0 + j) * k + kk] : b[kk * n + c0 + j];
            for (Py_ssize_t j = w; j < PANEL; j++) row[j] = 0.0f;
        }
    }
}

/* rows [r0, r0 + mr) of out, columns of panel p (w of them valid): mr is a constant after
 * inlining (the switch below), so the accumulators stay in registers */
static inline __attribute__((always_inline)) void tile(const float *a, const float *panel, const float *bias,
                                                       const float *addend, float *out, Py_ssize_t k,
                                                       Py_ssize_t n, Py_ssize_t c0, Py_ssize_t w, const int mr,
                                                       const int half) {
#if GEMM_AVX2
    /* named accumulators, not an array: GCC kept an array's rows in memory, storing all twelve
     * to the stack on every k (measured 2-3x slower than OpenBLAS) */
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
           c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (Py_ssize_t kk = 0; kk < k; kk++) {
        __m256 b0 = _mm256_loadu_ps(panel + kk * PANEL), b1 = half ? b0 : _mm256_loadu_ps(panel + kk * PANEL + 8), x;
#define ROW(r)                                                  \
        if (mr > r) {                                           \
            x = _mm256_broadcast_ss(a + r * k + kk);            \
            c##r##0 = _mm256_fmadd_ps(x, b0, c##r##0);          \
            if (!half) c##r##1 = _mm256_fmadd_ps(x, b1, c##r##1); \
        }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    __m256 rows[TILE_ROWS][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < mr; r++) {
        float *dst = out + r * n + c0;
        const float *more = addend ? addend + r * n + c0 : NULL;
        __m256 lo = rows[r][0], hi = rows[r][1];
        if (w == PANEL) {
            if (bias) {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(bias + c0));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(bias + c0 + 8));
            }
            if (more) {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(more));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(more + 8));
            }
            _mm256_storeu_ps(dst, lo);
            _mm256_storeu_ps(dst + 8, hi);
        } else {
            float tmp[PANEL];
            _mm256_storeu_ps(tmp, lo);
            _mm256_storeu_ps(tmp + 8, hi);   /* (unused when half: w <= 8) */
            for (Py_ssize_t j = 0; j < w; j++) {
                float y = bias ? tmp[j] + bias[c0 + j] : tmp[j];
                dst[j] = more ? y + more[j] : y;
            }
        }
    }
#else
    (void)half;
    for (int r = 0; r < mr; r++) {
        float acc[PANEL] = {0};
        for (Py_ssize_t kk = 0; kk < k; kk++)
            for (int j = 0; j < PANEL; j++) acc[j] = fmaf(a[r * k + kk], panel[kk * PANEL + j], acc[j]);
        for (Py_ssize_t j = 0; j < w; j++) {
            float y = bias ? acc[j] + bias[c0 + j] : acc[j];
            out[r * n + c0 + j] = addend ? y + addend[r * n + c0 + j] : y;
        }
    }
#endif
}

#if GEMM_AVX512
/* With AVX-512 a panel's row is one 16-float vector: a tile is mr rows of two panels (`two`) or of
 * one, the same accumulator per output, summed over k in the same order as above (results equal
 * bit for bit); a panel of fewer than PANEL valid columns is read and stored under a mask. */
static inline __attribute__((always_inline)) void tile512(const float *a, const float *panel, const float *bias,
                                                          const float *addend, float *out, Py_ssize_t k,
                                                          Py_ssize_t n, Py_ssize_t c0, Py_ssize_t w,
                                                          Py_ssize_t w1, const int mr, const int two) {
    const float *panel1 = panel + PANEL * k;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
           c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (Py_ssize_t kk = 0; kk < k; kk++) {
        __m512 b0 = _mm512_loadu_ps(panel + kk * PANEL), b1 = two ? _mm512_loadu_ps(panel1 + kk * PANEL) : b0, x;
#define ROW(r)                                                  \
        if (mr > r) {                                           \
            x = _mm512_set1_ps(a[r * k + kk]);                  \
            c##r##0 = _mm512_fmadd_ps(x, b0, c##r##0);          \
            if (two) c##r##1 = _mm512_fmadd_ps(x, b1, c##r##1); \
        }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    __m512 rows[TILE_ROWS][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    const __mmask16 masks[2] = {(__mmask16)((1u << w) - 1u), (__mmask16)((1u << w1) - 1u)};
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < 1 + two; h++) {
            Py_ssize_t at = c0 + h * PANEL;
            __mmask16 mask = masks[h];
            __m512 y = rows[r][h];
            if (bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, bias + at));
            if (addend) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, addend + r * n + at));
            _mm512_mask_storeu_ps(out + r * n + at, mask, y);
        }
}

static void product(const float *a, const float *packed, const float *bias, const float *addend, float *out,
                    Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) {
    Py_ssize_t panels = (n + PANEL - 1) / PANEL;
    for (Py_ssize_t p = 0; p < panels; p += 2) {
        const float *panel = packed + p * PANEL * k;
        Py_ssize_t c0 = p * PANEL, w = n - c0 < PANEL ? n - c0 : PANEL;
        Py_ssize_t w1 = p + 1 < panels ? (n - c0 - PANEL < PANEL ? n - c0 - PANEL : PANEL) : 0;
        for (Py_ssize_t r0 = 0; r0 < m; r0 += TILE_ROWS) {
            const float *ar = a + r0 * k, *ad = addend ? addend + r0 * n : NULL;
            float *o = out + r0 * n;
#define TILES(two)                                                                      \
            switch (m - r0 < TILE_ROWS ? m - r0 : TILE_ROWS) {                          \
            case 6: tile512(ar, panel, bias, ad, o, k, n, c0, w, w1, 6, two); break;    \
            case 5: tile512(ar, panel, bias, ad, o, k, n, c0, w, w1, 5, two); break;    \
            case 4: tile512(ar, panel, bias, ad, o, k, n, c0, w, w1, 4, two); break;    \
            case 3: tile512(ar, panel, bias, ad, o, k, n, c0, w, w1, 3, two); break;    \
            case 2: tile512(ar, panel, bias, ad, o, k, n, c0, w, w1, 2, two); break;    \
            default: tile512(ar, panel, bias, ad, o, k, n, c0, w, w1, 1, two); break;   \
            }
            if (w1) {
                TILES(1)
            } else {
                TILES(0)
            }
#undef TILES
        }
    }
}
#else
static void product(const float *a, const float *packed, const float *bias, const float *addend, float *out,
                    Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) {
    Py_ssize_t panels = (n + PANEL - 1) / PANEL;
    for (Py_ssize_t p = 0; p < panels; p++) {
        const float *panel = packed + p * PANEL * k;
        Py_ssize_t c0 = p * PANEL, w = n - c0 < PANEL ? n - c0 : PANEL;
        for (Py_ssize_t r0 = 0; r0 < m; r0 += TILE_ROWS) {
            const float *ar = a + r0 * k, *ad = addend ? addend + r0 * n : NULL;
            float *o = out + r0 * n;
            /* a last panel of at most 8 columns: one vector per row (each output's sum unchanged) */
#define TILES(half)                                                          \
            switch (m - r0 < TILE_ROWS ? m - r0 : TILE_ROWS) {               \
            case 6: tile(ar, panel, bias, ad, o, k, n, c0, w, 6, half); break;   \
            case 5: tile(ar, panel, bias, ad, o, k, n, c0, w, 5, half); break;   \
            case 4: tile(ar, panel, bias, ad, o, k, n, c0, w, 4, half); break;   \
            case 3: tile(ar, panel, bias, ad, o, k, n, c0, w, 3, half); break;   \
            case 2: tile(ar, panel, bias, ad, o, k, n, c0, w, 2, half); break;   \
            default: tile(ar, panel, bias, ad, o, k, n, c0, w, 1, half); break;  \
            }
            if (w <= PANEL / 2) {
                TILES(1)
            } else {
                TILES(0)
            }
#undef TILES
        }
    }
}
#endif

/* out[p] = a[p] @ b[p] for every p < batch, b unpacked: each b[p] packed into `scratch` first,
 * so that every output is the same sum, in the same order, as the packed product's */
static void batched_product(const float *a, const float *b, float *out, float *scratch, Py_ssize_t batch,
                            Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) {
    for (Py_ssize_t p = 0; p < batch; p++) {
        pack_panels(b + p * k * n, scratch, k, n, 0);
        product(a + p * m * k, scratch, NULL, NULL, out + p * m * n, m, k, n);
    }
}

static PyObject *pack(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_b, *o_packed;
    Py_ssize_t k, n, count, size;
    int transposed;
    if (!PyArg_ParseTuple(args, "OnnpO", &o_b, &k, &n, &transposed, &o_packed)) return NULL;
    if (checked_count(&count, k, n, 1) < 0 || packed_count(&size, k, n) < 0) return NULL;
    Py_buffer bb, bp;
    if (get_floats(o_b, &bb, "b", count, 0) < 0) return NULL;
    if (get_floats(o_packed, &bp, "packed", size, 1) < 0) {
        PyBuffer_Release(&bb);
        return NULL;
    }
    const float *b = bb.buf;
    float *packed = bp.buf;
    Py_BEGIN_ALLOW_THREADS
    pack_panels(b, packed, k, n, transposed);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bp);
    PyBuffer_Release(&bb);
    Py_RETURN_NONE;
}

static int overlaps(const Py_buffer *x, const Py_buffer *y) {
    uintptr_t x0 = (uintptr_t)x->buf, y0 = (uintptr_t)y->buf;
    return x->len && y->len && x0 < y0 + (uintptr_t)y->len && y0 < x0 + (uintptr_t)x->len;
}

static PyObject *matmul(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_a, *o_packed, *o_bias, *o_out, *o_addend = Py_None;
    Py_ssize_t m, k, n, count_a, count_out, size;
    if (!PyArg_ParseTuple(args, "OOnnnOO|O", &o_a, &o_packed, &m, &k, &n, &o_bias, &o_out, &o_addend)) return NULL;
    if (checked_count(&count_a, m, k, 1) < 0 || checked_count(&count_out, m, n, 1) < 0 ||
        packed_count(&size, k, n) < 0)
        return NULL;
    Py_buffer ba, bp, bb, bd, bo;
    int biased = o_bias != Py_None, added = o_addend != Py_None;
    if (get_floats(o_a, &ba, "a", count_a, 0) < 0) return NULL;
    if (get_floats(o_packed, &bp, "packed", size, 0) < 0) goto fail_a;
    if (biased && get_floats(o_bias, &bb, "bias", n, 0) < 0) goto fail_p;
    if (added && get_floats(o_addend, &bd, "addend", count_out, 0) < 0) goto fail_b;
    if (get_floats(o_out, &bo, "out", count_out, 1) < 0) goto fail_d;
    if (overlaps(&ba, &bo) || overlaps(&bp, &bo) || (biased && overlaps(&bb, &bo)) || (added && overlaps(&bd, &bo))) {
        PyErr_SetString(PyExc_ValueError, "out overlaps an input");
        goto fail_o;
    }
    const float *a = ba.buf, *packed = bp.buf, *bias = biased ? bb.buf : NULL, *addend = added ? bd.buf : NULL;
    float *out = bo.buf;
    Py_BEGIN_ALLOW_THREADS
    product(a, packed, bias, addend, out, m, k, n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bo);
    if (added) PyBuffer_Release(&bd);
    if (biased) PyBuffer_Release(&bb);
    PyBuffer_Release(&bp);
    PyBuffer_Release(&ba);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&bo);
fail_d:
    if (added) PyBuffer_Release(&bd);
fail_b:
    if (biased) PyBuffer_Release(&bb);
fail_p:
    PyBuffer_Release(&bp);
fail_a:
    PyBuffer_Release(&ba);
    return NULL;
}

static PyObject *batched(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_a, *o_b, *o_out;
    Py_ssize_t batch, m, k, n, count_a, count_b, count_out, size;
    if (!PyArg_ParseTuple(args, "OOOnnnn", &o_a, &o_b, &o_out, &batch, &m, &k, &n)) return NULL;
    if (checked_count(&count_a, batch, m, k) < 0 || checked_count(&count_b, batch, k, n) < 0 ||
        checked_count(&count_out, batch, m, n) < 0 || packed_count(&size, k, n) < 0)
        return NULL;
    Py_buffer ba, bb, bo;
    if (get_floats(o_a, &ba, "a", count_a, 0) < 0) return NULL;
    if (get_floats(o_b, &bb, "b", count_b, 0) < 0) goto fail_a;
    if (get_floats(o_out, &bo, "out", count_out, 1) < 0) goto fail_b;
    if (overlaps(&ba, &bo) || overlaps(&bb, &bo)) {
        PyErr_SetString(PyExc_ValueError, "out overlaps an input");
        goto fail_o;
    }
    float *scratch = PyMem_RawMalloc(size ? (size_t)size * sizeof(float) : 1);
    if (!scratch) {
        PyErr_NoMemory();
        goto fail_o;
    }
    const float *a = ba.buf, *b = bb.buf;
    float *out = bo.buf;
    Py_BEGIN_ALLOW_THREADS
    batched_product(a, b, out, scratch, batch, m, k, n);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bb);
    PyBuffer_Release(&ba);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&bo);
fail_b:
    PyBuffer_Release(&bb);
fail_a:
    PyBuffer_Release(&ba);
    return NULL;
}

static inline void scale_into(const float *x, float *out, Py_ssize_t count, int divide, float c) {
    if (divide)
        for (Py_ssize_t i = 0; i < count; i++) out[i] = x[i] / c;
    else
        for (Py_ssize_t i = 0; i < count; i++) out[i] = x[i] * c;
}

/* scratch: the scaled q of one head (m*k), its scores (m*n), one packed B (the larger of the two) */
static void attention_heads(const float *q, const float *kt, const float *v, float *out, float *scratch,
                            Py_ssize_t packed_size, Py_ssize_t batch, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                            Py_ssize_t dv, int scale_at, int divide, float c) {
    float *packed = scratch, *scores = packed + packed_size, *scaled = scores + m * n;
    for (Py_ssize_t p = 0; p < batch; p++) {
        const float *qp = q + p * m * k;
        if (scale_at == 1) {
            scale_into(qp, scaled, m * k, divide, c);
            qp = scaled;
        }
        pack_panels(kt + p * k * n, packed, k, n, 0);
        product(qp, packed, NULL, NULL, scores, m, k, n);
        if (scale_at == 2) scale_into(scores, scores, m * n, divide, c);
        if (n)
            for (Py_ssize_t r = 0; r < m; r++) softmax_row(scores + r * n, scores + r * n, n);
        pack_panels(v + p * n * dv, packed, n, dv, 0);
        product(scores, packed, NULL, NULL, out + p * m * dv, m, n, dv);
    }
}

static PyObject *attention(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_q, *o_kt, *o_v, *o_out;
    Py_ssize_t batch, m, k, n, dv, count_q, count_kt, count_v, count_out, count_s, packed_kn, packed_nv;
    int scale_at, divide;
    float c;
    if (!PyArg_ParseTuple(args, "OOOOnnnnnipf", &o_q, &o_kt, &o_v, &o_out, &batch, &m, &k, &n, &dv, &scale_at,
                          &divide, &c))
        return NULL;
    if (scale_at < 0 || scale_at > 2) {
        PyErr_SetString(PyExc_ValueError, "scale_at must be 0 (none), 1 (q) or 2 (scores)");
        return NULL;
    }
    if (checked_count(&count_q, batch, m, k) < 0 || checked_count(&count_kt, batch, k, n) < 0 ||
        checked_count(&count_v, batch, n, dv) < 0 || checked_count(&count_out, batch, m, dv) < 0 ||
        checked_count(&count_s, m, n + k, 1) < 0 || packed_count(&packed_kn, k, n) < 0 ||
        packed_count(&packed_nv, n, dv) < 0)
        return NULL;
    Py_ssize_t packed_size = packed_kn > packed_nv ? packed_kn : packed_nv;
    if (packed_size > PY_SSIZE_T_MAX / 8 - count_s) {
        PyErr_SetString(PyExc_ValueError, "sizes overflow");
        return NULL;
    }
    Py_buffer bq, bk, bv, bo;
    if (get_floats(o_q, &bq, "q", count_q, 0) < 0) return NULL;
    if (get_floats(o_kt, &bk, "kt", count_kt, 0) < 0) goto fail_q;
    if (get_floats(o_v, &bv, "v", count_v, 0) < 0) goto fail_k;
    if (get_floats(o_out, &bo, "out", count_out, 1) < 0) goto fail_v;
    if (overlaps(&bq, &bo) || overlaps(&bk, &bo) || overlaps(&bv, &bo)) {
        PyErr_SetString(PyExc_ValueError, "out overlaps an input");
        goto fail_o;
    }
    Py_ssize_t scratch_size = packed_size + count_s;
    float *scratch = PyMem_RawMalloc(scratch_size ? (size_t)scratch_size * sizeof(float) : 1);
    if (!scratch) {
        PyErr_NoMemory();
        goto fail_o;
    }
    const float *q = bq.buf, *kt = bk.buf, *v = bv.buf;
    float *out = bo.buf;
    Py_BEGIN_ALLOW_THREADS
    attention_heads(q, kt, v, out, scratch, packed_size, batch, m, k, n, dv, scale_at, divide, c);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&bk);
    PyBuffer_Release(&bq);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&bo);
fail_v:
    PyBuffer_Release(&bv);
fail_k:
    PyBuffer_Release(&bk);
fail_q:
    PyBuffer_Release(&bq);
    return NULL;
}

static PyMethodDef methods[] = {
    {"attention", attention, METH_VARARGS, "Scaled dot-product attention per head, one call (see above)."},
    {"batched", batched, METH_VARARGS, "out[p] = a[p] @ b[p] for a [batch, m, k], b [batch, k, n] (see above)."},
    {"pack", pack, METH_VARARGS, "Lay out a [k, n] (or transposed [n, k]) weight in panels (see above)."},
    {"matmul", matmul, METH_VARARGS, "out = a @ packed weight (+ bias) (+ addend), a of m rows of k."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gemm", "Products by a packed weight.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_gemm(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "PANEL", PANEL) < 0 || PyModule_AddIntConstant(m, "AVX2", GEMM_AVX2) < 0 ||
              PyModule_AddIntConstant(m, "AVX512", GEMM_AVX512) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
