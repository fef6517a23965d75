/* The softmax of one row, shared by vit.c (the Softmax operator) and gemm.c (attention's
 * scores, softmaxed between its two products in one call): one definition, so that the fused
 * attention computes exactly the float32 operations, in the same order, as the Softmax node's
 * kernel (the interpreter's chain proves the two equal bit for bit). Part of every kernel's
 * digest and of the enclave's measurement, as every header in enclave/csrc. */
#ifndef SPLITSEAL_SOFTMAX_H
#define SPLITSEAL_SOFTMAX_H

#include <math.h>

#include "exp.h"

/* lanes of the maximum and of the sum (the order of the sum's additions depends on it) */
enum { SOFTMAX_LANES = 8 };

/* softmax of one contiguous row of n > 0 */
static void softmax_row(const float *x, float *out, Py_ssize_t n) {
    float lane[SOFTMAX_LANES];
    for (int j = 0; j < SOFTMAX_LANES; j++) lane[j] = -INFINITY;
    Py_ssize_t i = 0;
    for (; i + SOFTMAX_LANES <= n; i += SOFTMAX_LANES)
        for (int j = 0; j < SOFTMAX_LANES; j++) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
    float m = -INFINITY;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int j = 0; j < SOFTMAX_LANES; j++) m = lane[j] > m ? lane[j] : m;
    for (i = 0; i < n; i++) out[i] = exp_nonpositive(x[i] - m);
    for (int j = 0; j < SOFTMAX_LANES; j++) lane[j] = 0.0f;
    for (i = 0; i + SOFTMAX_LANES <= n; i += SOFTMAX_LANES)
        for (int j = 0; j < SOFTMAX_LANES; j++) lane[j] += out[i + j];
    float s = 0.0f;
    for (; i < n; i++) s += out[i];
    for (int j = 0; j < SOFTMAX_LANES; j++) s += lane[j];
    float inv = 1.0f / s;
    for (i = 0; i < n; i++) out[i] *= inv;
}

#endif
