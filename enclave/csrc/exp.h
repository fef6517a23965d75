/* exp on the kernels' vector paths, shared by every kernel that needs it (vit.c's softmax and
 * erf, rnn.c's log-softmax and sigmoid): libm's expf would keep their loops scalar. Part of
 * every kernel's digest and of the enclave's measurement, as every header in enclave/csrc. */
#ifndef SPLITSEAL_EXP_H
#define SPLITSEAL_EXP_H

#include <stdint.h>

/* The clamp and the select below are float comparisons: under gcc's default -ftrapping-math they
 * stay branches and no loop calling exp_nonpositive vectorises. Values are unchanged (this
 * concerns exception flags only); it applies to the rest of every file including this header. */
#pragma GCC optimize("no-trapping-math")

typedef union {
    float f;
    uint32_t u;
} bits_t;

/* exp(x) for x <= 0 (Cephes' expf polynomial, about 1 ulp): 0 below ln(FLT_MIN), NaN for NaN.
 * Branch-free, so that the loops calling it vectorise. */
static inline float exp_nonpositive(float x) {
    const float lowest = -87.33654f;  /* ln(FLT_MIN): 2^k stays a normal number above it */
    float clamped = x < lowest ? lowest : x;
    /* k = round(clamped / ln 2) by the 1.5 * 2^23 trick: no float -> int conversion (a NaN's is
     * undefined behaviour); the low mantissa bits of the sum hold k + 2^22 */
    bits_t shifted = {.f = clamped * 1.44269504088896341f + 12582912.0f};
    float k = shifted.f - 12582912.0f;
    float r = clamped - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    bits_t scale = {.u = (shifted.u - 0x4B400000u + 127u) << 23};  /* 2^k, k in -126..0 */
    float y = p * scale.f;
    return x < lowest ? 0.0f : y;
}

#endif
