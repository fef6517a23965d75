/* The interpreter's per-call floor, its small dense convolutions and spatial means
 * (enclave/interpreter.py).
 *
 * Why C: enclave/native.py. Loops that numpy runs slowly at the sizes of the heads:
 *
 *   all_finite(x f32 buffer) -> bool
 *       the input check of every call: one pass, no temporary (np.isfinite(x).all() allocates a
 *       mask and reduces it: 4 us on 512 floats, most of a one-node head's floor);
 *   conv(x f32[N*C*H*W], packed f32[ceil(M/8)*8*K], bias f32[M] or None, y f32[N*M*OH*OW]
 *        (written), (N, C, H, W), (M, KH, KW), (SH, SW), (DH, DW), (PT, PL), (OH, OW)[, relu[, mean[,
 *        (lo, hi)]]])
 *       a dense (group 1) 2-D convolution, y[m, p] = sum_k W[m, k] cols[k, p] + bias[m] for each
 *       image, k = (i, j, c) (a tap's rows contiguous), p = (oy, ox): NCHW in, NCHW out. The
 *       weight is packed once per node (by the interpreter) in blocks of 8 output channels,
 *       [M/8][K][8], zero channels padding the last block; the columns of an image are gathered
 *       into a buffer freed in the same call (zero where a window reaches into the padding; the
 *       padding after the image is implied by OH and OW), except for a 1x1 window of stride 1
 *       over at most 12 positions, whose columns are the image itself, and except for a window
 *       whose padding is a fifth or more of its (position, tap) pairs (taps_product: tap by tap
 *       over the positions each reaches, no zeros multiplied). With `relu` each output is
 *       stored as max(y, 0) (a Relu after the conv, without a second pass over y); with (lo, hi)
 *       as min(max(y, lo), hi) (a Clip by two scalars after it: MobileNet's ReLU6; not with
 *       `relu`); with `mean`,
 *       y is f32[N*M], each channel's mean over its OH*OW outputs as row_means takes it (a
 *       SqueezeNet classifier's conv, Relu and GlobalAveragePool in one call, no [M][OH*OW]
 *       result handed back). The interpreter's chains use both (enclave/interpreter.py);
 *   row_means(x f32[R*S], y f32[R] (written), R, S)
 *       the mean of each row (GlobalAveragePool and ReduceMean over the spatial axes).
 *
 * Why not OpenBLAS for these convs: the heads' smallest maps are 1x1 to 3x3 (9 positions for
 * SqueezeNet), and on this machine's AMD EPYC (AVX2, OpenBLAS's Haswell kernels; the interpreter's
 * product forms were laid out for its SkylakeX small-matrix kernel) such products measured
 * 13-16 GMAC/s, [9, 64] @ [64, 256] 23 us against 12 for the same product transposed, and the 3x3
 * conv's gather and channel-blocked product more than this whole call (docs/BENCHMARKS.md).
 * Here a block of 8 output channels times a run of up to 12 positions is up to 12 vector
 * accumulators held in registers over the whole depth K (a run of up to 6 takes several blocks),
 * the weight read once per run. Above 12 positions per image OpenBLAS's kernels measured faster
 * and the interpreter keeps them.
 *
 * Safety: every size is checked positive and every buffer's length against the sizes (products
 * checked for overflow) before the loop; the gather reads the image only at indices it checked
 * to be inside it; a malformed call raises ValueError. The GIL is released around the loops.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffers.h"

#if defined(__FMA__) && defined(__AVX__)
#include <immintrin.h>
#endif

typedef float vec __attribute__((vector_size(32)));   /* 8 floats: one AVX register */

#if defined(__FMA__) && defined(__AVX__)
#define MULADD(a, b, c) ((vec)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#else
#define MULADD(a, b, c) ((a) * (b) + (c))
#endif

enum { BLOCK = 8, TILE = 12 };   /* output channels per block, positions per run at most */

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static PyObject *all_finite(PyObject *self, PyObject *obj) {
    (void)self;
    Py_buffer view;
    if (get_floats(obj, &view, "x", -1, 0) < 0) return NULL;
    const uint32_t *bits = view.buf;
    Py_ssize_t n = view.len / 4;
    uint32_t top = 0;
    /* the largest magnitude's bits: a float is NaN or infinite iff its exponent is all ones,
     * i.e. its bits without the sign are >= those of infinity (a max reduction vectorises) */
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t b = bits[i] & 0x7fffffffu;
        top = b > top ? b : top;
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(top < 0x7f800000u);
}

/* The positions of an image are cut into `tiles` runs of at most 12, as even as possible (16 -> 8 + 8:
 * a short run has fewer independent accumulators than the FMA units' latency needs). Run t starts
 * at run_start(t) and its columns are packed at cols + start * K as [K][width]. */
static inline Py_ssize_t run_start(Py_ssize_t t, Py_ssize_t np, Py_ssize_t tiles) {
    Py_ssize_t base = np / tiles, extra = np % tiles;
    return t * base + (t < extra ? t : extra);
}

/* the activation a conv's store applies: np.minimum(np.maximum(v, lo), hi) bit for bit (a NaN kept,
 * v itself when equal to a bound); none is (-inf, inf), a Relu (0, inf) */
typedef struct {
    float lo, hi;
} clamp_t;

static inline float clamp(float v, clamp_t act) {
    v = v < act.lo ? act.lo : v;
    return v > act.hi ? act.hi : v;
}

/* y[m0 + 8b + j, p0 + q] for b < NB, j < 8, q < P: NB blocks of 8 channels from `w` (block b at
 * w + b*K*8, each [K][8]) times the run of P packed columns at `c` ([K][P]), plus bias, clamped by
 * `act`; only channels below `m` stored (y's rows are `np` long). NB * P accumulators stay in registers: a
 * short run takes several blocks at once, so that enough independent multiply-adds are in flight
 * (one accumulator per block measured the 1x1 maps' convs latency-bound). */
static inline __attribute__((always_inline)) void tile(const float *w, const float *c, Py_ssize_t k, int NB,
                                                       int P, float *y, Py_ssize_t np, Py_ssize_t p0,
                                                       Py_ssize_t m0, Py_ssize_t m, const float *bias, clamp_t act) {
    vec acc[TILE];
    for (int i = 0; i < NB * P; i++) acc[i] = (vec){0};
    for (Py_ssize_t kk = 0; kk < k; kk++, c += P) {
        vec a[TILE];
        for (int b = 0; b < NB; b++) a[b] = load(w + (b * k + kk) * BLOCK);
        for (int q = 0; q < P; q++) {
            const float v = c[q];
            vec x = {v, v, v, v, v, v, v, v};   /* one broadcast load */
            for (int b = 0; b < NB; b++) acc[b * P + q] = MULADD(a[b], x, acc[b * P + q]);
        }
    }
    for (int b = 0; b < NB; b++)
        for (int q = 0; q < P; q++) {
            float out[BLOCK];
            memcpy(out, &acc[b * P + q], sizeof out);
            for (int j = 0; j < BLOCK && m0 + b * BLOCK + j < m; j++) {
                Py_ssize_t ch = m0 + b * BLOCK + j;
                float v = out[j] + (bias ? bias[ch] : 0.0f);
                y[ch * np + p0 + q] = clamp(v, act);
            }
        }
}

/* blocks taken at once by a run of P positions (NB * P accumulators, NB weights, one broadcast:
 * at most the 16 vector registers) */
static const int BLOCKS_PER_RUN[TILE + 1] = {1, 6, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1};

#define TILE_CASE(P)                                                                                \
    case P:                                                                                         \
        if (nb == BLOCKS_PER_RUN[P]) tile(w, c, k, BLOCKS_PER_RUN[P], P, y, np, p0, m0, m, bias, act); \
        else tile(w, c, k, 1, P, y, np, p0, m0, m, bias, act);                                     \
        break;

/* y [M][np] = W [M][K] @ cols + bias */
static void product(const float *packed, const float *cols, Py_ssize_t m, Py_ssize_t k, Py_ssize_t np,
                    Py_ssize_t tiles, const float *bias, clamp_t act, float *y) {
    const Py_ssize_t blocks = (m + BLOCK - 1) / BLOCK;
    for (Py_ssize_t t = 0; t < tiles; t++) {
        const Py_ssize_t p0 = run_start(t, np, tiles), width = run_start(t + 1, np, tiles) - p0;
        const float *c = cols + p0 * k;
        for (Py_ssize_t blk = 0; blk < blocks;) {
            /* the run's full count of blocks while they last, then one at a time */
            const int nb = blocks - blk >= BLOCKS_PER_RUN[width] ? BLOCKS_PER_RUN[width] : 1;
            const float *w = packed + blk * k * BLOCK;
            const Py_ssize_t m0 = blk * BLOCK;
            switch (width) { /* constant widths and counts: the accumulators stay in registers */
            TILE_CASE(12) TILE_CASE(11) TILE_CASE(10) TILE_CASE(9) TILE_CASE(8) TILE_CASE(7)
            TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3) TILE_CASE(2)
            default: TILE_CASE(1)
            }
            blk += nb;
        }
    }
}

/* The columns of one image packed for product(): depth kk = (i*KW + j)*C + ci of position
 * p = oy*OW + ox holds x[ci, oy*SH - PT + i*DH, ox*SW - PL + j*DW], 0 where that is outside the
 * image. `top` and `left` hold oy*SH - PT and ox*SW - PL of every position. */
static void gather(const float *x, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw,
                   Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t np, Py_ssize_t tiles, const Py_ssize_t *top,
                   const Py_ssize_t *left, float *cols) {
    float *out = cols;
    for (Py_ssize_t t = 0; t < tiles; t++) {
        Py_ssize_t p0 = run_start(t, np, tiles), p1 = run_start(t + 1, np, tiles);
        for (Py_ssize_t i = 0; i < kh; i++)
            for (Py_ssize_t j = 0; j < kw; j++)
                for (Py_ssize_t ci = 0; ci < c; ci++) {
                    const float *plane = x + ci * h * w;
                    for (Py_ssize_t p = p0; p < p1; p++) {
                        Py_ssize_t iy = top[p] + i * dh, ix = left[p] + j * dw;
                        *out++ = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? plane[iy * w + ix] : 0.0f;
                    }
                }
    }
}

/* The padding's share of a window product: on SqueezeNet's 3x3 maps a 3x3 window with pad 1 has
 * 49 of its 81 (position, tap) pairs inside the image, ResNet's 2x2 maps 16 of 36, so 40-56% of
 * the columns are zeros. For those convs (one run of positions, at least 16 channels, a fifth or
 * more of the pairs outside) the product goes tap by tap over the positions that tap reaches:
 * each tap's weight rows [C][8] per block (contiguous: depth is ordered (i, j, ci)) times its
 * columns [C][Pv], Pv positions, accumulated in a scratch [blocks][np][8] that stays in L1. */
enum { TAPS_MIN_CHANNELS = 16 };

/* acc[b][pos[q]] += block (b) rows of `w` ([depth][8], blocks `wblock` apart) x columns `c` ([depth][P]) */
static inline __attribute__((always_inline)) void tap_tile(const float *w, Py_ssize_t wblock, const float *c,
                                                           Py_ssize_t depth, int NB, int P, float *acc_base,
                                                           Py_ssize_t np, const Py_ssize_t *pos) {
    vec acc[TILE];
    for (int b = 0; b < NB; b++)
        for (int q = 0; q < P; q++) acc[b * P + q] = load(acc_base + (b * np + pos[q]) * BLOCK);
    for (Py_ssize_t kk = 0; kk < depth; kk++, c += P) {
        vec a[TILE];
        for (int b = 0; b < NB; b++) a[b] = load(w + b * wblock + kk * BLOCK);
        for (int q = 0; q < P; q++) {
            const float v = c[q];
            vec x = {v, v, v, v, v, v, v, v};
            for (int b = 0; b < NB; b++) acc[b * P + q] = MULADD(a[b], x, acc[b * P + q]);
        }
    }
    for (int b = 0; b < NB; b++)
        for (int q = 0; q < P; q++) memcpy(acc_base + (b * np + pos[q]) * BLOCK, &acc[b * P + q], sizeof(vec));
}

#define TAP_CASE(P)                                                                                    \
    case P:                                                                                            \
        if (nb == BLOCKS_PER_RUN[P]) tap_tile(w, wblock, cols, c, BLOCKS_PER_RUN[P], P, acc, np, pos); \
        else tap_tile(w, wblock, cols, c, 1, P, acc, np, pos);                                         \
        break;

/* The (position, tap) pairs inside the image, per tap: pos[t*np ..] the positions tap t reaches,
 * count[t] how many; returns the number of pairs. */
static Py_ssize_t tap_positions(Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t dh,
                                Py_ssize_t dw, Py_ssize_t np, const Py_ssize_t *top, const Py_ssize_t *left,
                                Py_ssize_t *pos, Py_ssize_t *count) {
    Py_ssize_t pairs = 0;
    for (Py_ssize_t i = 0, t = 0; i < kh; i++)
        for (Py_ssize_t j = 0; j < kw; j++, t++) {
            count[t] = 0;
            for (Py_ssize_t p = 0; p < np; p++) {
                Py_ssize_t iy = top[p] + i * dh, ix = left[p] + j * dw;
                if (iy >= 0 && iy < h && ix >= 0 && ix < w) pos[t * np + count[t]++] = p;
            }
            pairs += count[t];
        }
    return pairs;
}

/* y [M][np] = W @ cols + bias (Relu'd if asked) tap by tap, for one image of at most 12 positions;
 * `cols` holds C*np floats, `acc` blocks*np*8 */
static void taps_product(const float *packed, const float *image, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w_,
                         Py_ssize_t m, Py_ssize_t k, Py_ssize_t kk_count, Py_ssize_t np, const Py_ssize_t *pos_all,
                         const Py_ssize_t *count, const Py_ssize_t *top, const Py_ssize_t *left, Py_ssize_t kw,
                         Py_ssize_t dh, Py_ssize_t dw, const float *bias, clamp_t act, float *cols, float *acc_all,
                         float *y) {
    const Py_ssize_t blocks = (m + BLOCK - 1) / BLOCK, wblock = k * BLOCK;
    memset(acc_all, 0, (size_t)blocks * np * BLOCK * sizeof(float));
    for (Py_ssize_t t = 0; t < kk_count; t++) {
        const Py_ssize_t pv = count[t], i = t / kw, j = t % kw;
        const Py_ssize_t *pos = pos_all + t * np;
        if (!pv) continue;
        /* the tap's columns [C][pv]: every read is at a position tap_positions found inside */
        for (Py_ssize_t ci = 0; ci < c; ci++)
            for (Py_ssize_t q = 0; q < pv; q++)
                cols[ci * pv + q] = image[(ci * h + top[pos[q]] + i * dh) * w_ + left[pos[q]] + j * dw];
        for (Py_ssize_t blk = 0; blk < blocks;) {
            const int nb = blocks - blk >= BLOCKS_PER_RUN[pv] ? BLOCKS_PER_RUN[pv] : 1;
            const float *w = packed + blk * wblock + t * c * BLOCK;
            float *acc = acc_all + blk * np * BLOCK;
            switch (pv) {
            TAP_CASE(12) TAP_CASE(11) TAP_CASE(10) TAP_CASE(9) TAP_CASE(8) TAP_CASE(7)
            TAP_CASE(6) TAP_CASE(5) TAP_CASE(4) TAP_CASE(3) TAP_CASE(2)
            default: TAP_CASE(1)
            }
            blk += nb;
        }
    }
    for (Py_ssize_t ch = 0; ch < m; ch++)
        for (Py_ssize_t p = 0; p < np; p++) {
            float v = acc_all[((ch / BLOCK) * np + p) * BLOCK + ch % BLOCK] + (bias ? bias[ch] : 0.0f);
            y[ch * np + p] = clamp(v, act);   /* as tile() stores */
        }
}

/* sum of row[j] * scale, j = 0..size-1 left to right in float32 (as the gemv of one thread sums): the
 * one mean of row_means and of conv's `mean`, so that both give the same bits */
static inline float row_mean(const float *row, Py_ssize_t size, float scale) {
    float sum = 0.0f;
    for (Py_ssize_t j = 0; j < size; j++) sum += row[j] * scale;
    return sum;
}

/* a * b * ... of positive sizes into *out, 0 if any is < 1 or the product overflows */
static int product_of(Py_ssize_t *out, int count, const Py_ssize_t *sizes) {
    Py_ssize_t p = 1;
    for (int i = 0; i < count; i++) {
        if (sizes[i] < 1 || __builtin_mul_overflow(p, sizes[i], &p) || p > PY_SSIZE_T_MAX / 8) return 0;
    }
    *out = p;
    return 1;
}

static PyObject *conv(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_w, *o_b, *o_y;
    Py_ssize_t n, c, h, w, m, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow;
    int relu = 0, mean = 0;
    PyObject *o_clip = Py_None;
    if (!PyArg_ParseTuple(args, "OOOO(nnnn)(nnn)(nn)(nn)(nn)(nn)|ppO", &o_x, &o_w, &o_b, &o_y, &n, &c, &h, &w, &m,
                          &kh, &kw, &sh, &sw, &dh, &dw, &pt, &pl, &oh, &ow, &relu, &mean, &o_clip))
        return NULL;
    clamp_t act = {relu ? 0.0f : -INFINITY, INFINITY};
    if (o_clip != Py_None) {
        if (relu) {
            PyErr_SetString(PyExc_ValueError, "conv: relu and a clip's (lo, hi) cannot both be given");
            return NULL;
        }
        if (!PyTuple_Check(o_clip) || !PyArg_ParseTuple(o_clip, "ff", &act.lo, &act.hi)) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, "conv: the clip must be a tuple of two floats (lo, hi)");
            }
            return NULL;
        }
    }
    Py_ssize_t size_x, k, size_w, np, size_y, size_cols, unused;
    const Py_ssize_t dims_x[] = {n, c, h, w}, dims_k[] = {c, kh, kw}, dims_p[] = {oh, ow},
                     dims_s[] = {sh, sw, dh, dw};
    if (!product_of(&size_x, 4, dims_x) || !product_of(&k, 3, dims_k) || !product_of(&np, 2, dims_p) ||
        !product_of(&unused, 4, dims_s) || m < 1 || pt < 0 || pl < 0) {
        PyErr_SetString(PyExc_ValueError, "conv: sizes, strides and dilations must be positive, pads >= 0");
        return NULL;
    }
    /* with `mean`, y holds each channel's mean over the positions, [N][M] */
    const Py_ssize_t dims_w[] = {(m + BLOCK - 1) / BLOCK * BLOCK, k}, dims_y[] = {n, m, mean ? 1 : np},
                     dims_c[] = {k, np};
    if (!product_of(&size_w, 2, dims_w) || !product_of(&size_y, 3, dims_y) || !product_of(&size_cols, 2, dims_c) ||
        np > PY_SSIZE_T_MAX / 16) {
        PyErr_SetString(PyExc_ValueError, "conv: sizes overflow");
        return NULL;
    }
    Py_buffer bx, bw, bb, by;
    if (get_floats(o_x, &bx, "x", size_x, 0) < 0) return NULL;
    if (get_floats(o_w, &bw, "packed weight", size_w, 0) < 0) { PyBuffer_Release(&bx); return NULL; }
    int has_bias = o_b != Py_None;
    if (has_bias && get_floats(o_b, &bb, "bias", m, 0) < 0) {
        PyBuffer_Release(&bx); PyBuffer_Release(&bw); return NULL;
    }
    if (get_floats(o_y, &by, "y", size_y, 1) < 0) {
        PyBuffer_Release(&bx); PyBuffer_Release(&bw); if (has_bias) PyBuffer_Release(&bb); return NULL;
    }
    float *cols = malloc((size_t)size_cols * sizeof(float));
    Py_ssize_t *top = malloc((size_t)np * 2 * sizeof(Py_ssize_t));
    /* with `mean`: one image's [M][np] outputs before their means */
    float *maps = mean ? malloc((size_t)m * np * sizeof(float)) : NULL;
    /* tap by tap (see taps_product) only over one run of positions: the taps' positions and the
     * accumulators, blocks*8*np floats (np <= 12 here; size_w = blocks*8*k was checked) */
    const Py_ssize_t tiles = (np + TILE - 1) / TILE, kk_count = kh * kw;
    const int taps = tiles == 1 && kk_count > 1 && c >= TAPS_MIN_CHANNELS && dims_w[0] <= PY_SSIZE_T_MAX / 64;
    Py_ssize_t *pos = taps ? malloc((size_t)(kk_count * np + kk_count) * sizeof(Py_ssize_t)) : NULL;
    float *acc = taps ? malloc((size_t)dims_w[0] * np * sizeof(float)) : NULL;
    if (!cols || !top || (mean && !maps) || (taps && (!pos || !acc))) {
        free(cols); free(top); free(maps); free(pos); free(acc);
        PyBuffer_Release(&bx); PyBuffer_Release(&bw); if (has_bias) PyBuffer_Release(&bb); PyBuffer_Release(&by);
        return PyErr_NoMemory();
    }
    Py_ssize_t *left = top + np;
    const float *x = bx.buf, *packed = bw.buf, *bias = has_bias ? bb.buf : NULL;
    float *y = by.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t oy = 0, p = 0; oy < oh; oy++)
        for (Py_ssize_t ox = 0; ox < ow; ox++, p++) {
            top[p] = oy * sh - pt;
            left[p] = ox * sw - pl;
        }
    /* a 1x1 window of stride 1 without padding over a map of one run: the image, [C][H*W] as NCHW
     * stores it, is already its packed columns */
    const int direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && oh == h && ow == w &&
                       tiles == 1;
    /* the padding's share: tap by tap when a fifth or more of the (position, tap) pairs are outside */
    Py_ssize_t *count = taps ? pos + kk_count * np : NULL;
    const int by_taps = taps && (kk_count * np - tap_positions(h, w, kh, kw, dh, dw, np, top, left, pos, count)) * 5 >=
                                    kk_count * np;
    const float scale = 1.0f / (float)np;
    for (Py_ssize_t img = 0; img < n; img++) {
        const float *image = x + img * c * h * w;
        float *out = mean ? maps : y + img * m * np;
        if (by_taps) {
            taps_product(packed, image, c, h, w, m, k, kk_count, np, pos, count, top, left, kw, dh, dw, bias, act,
                         cols, acc, out);
        } else {
            if (!direct) gather(image, c, h, w, kh, kw, dh, dw, np, tiles, top, left, cols);
            product(packed, direct ? image : cols, m, k, np, tiles, bias, act, out);
        }
        if (mean)
            for (Py_ssize_t ch = 0; ch < m; ch++) y[img * m + ch] = row_mean(maps + ch * np, np, scale);
    }
    Py_END_ALLOW_THREADS
    free(maps);
    free(cols);
    free(top);
    free(pos);
    free(acc);
    PyBuffer_Release(&bx);
    PyBuffer_Release(&bw);
    if (has_bias) PyBuffer_Release(&bb);
    PyBuffer_Release(&by);
    Py_RETURN_NONE;
}

/* y[r] = (x[r*size] + ... + x[r*size + size-1]) * scale for every row r: the spatial mean of an
 * NCHW tensor, rows = N*C (numpy's gemv against [1/size]*size costs 3-5 us of dispatch on the
 * heads' 9 to 49 positions; the sum in float32 left to right, as the gemv of one thread sums) */
static PyObject *row_means(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_x, *o_y;
    Py_ssize_t rows, size;
    if (!PyArg_ParseTuple(args, "OOnn", &o_x, &o_y, &rows, &size)) return NULL;
    Py_ssize_t total;
    const Py_ssize_t dims[] = {rows, size};
    if (!product_of(&total, 2, dims)) {
        PyErr_SetString(PyExc_ValueError, "row_means: rows and size must be positive");
        return NULL;
    }
    Py_buffer bx, by;
    if (get_floats(o_x, &bx, "x", total, 0) < 0) return NULL;
    if (get_floats(o_y, &by, "y", rows, 1) < 0) { PyBuffer_Release(&bx); return NULL; }
    const float *x = bx.buf;
    float *y = by.buf;
    const float scale = 1.0f / (float)size;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) y[r] = row_mean(x + r * size, size, scale);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bx);
    PyBuffer_Release(&by);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"all_finite", all_finite, METH_O, "True if no element of a float32 buffer is NaN or infinite."},
    {"conv", conv, METH_VARARGS, "Dense 2-D convolution, NCHW, by a weight packed in blocks of 8 channels."},
    {"row_means", row_means, METH_VARARGS, "The mean of every row of a float32 [rows, size] buffer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "floor", "Per-call checks and small dense convolutions.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_floor(void) { return PyModule_Create(&module); }
