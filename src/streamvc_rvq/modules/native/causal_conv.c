/* Stride-1 1-D convolutions on few channels, for the CPU: the forward, the input gradient and the weight gradient.
 *
 * Why: at 8-16 channels and 16 kHz, oneDNN's convolution runs at ~10 GFLOP/s on one core (it vectorises over
 * channels, and there are too few), while the arithmetic is a handful of multiply-adds per sample. These kernels
 * vectorise over time instead: each output channel's next V samples in one register, a block of output channels x
 * a few registers of time as accumulators, one broadcast weight per (channel, tap).
 *
 * Plain C with GCC/Clang vector extensions (no intrinsics, no torch headers): the compiler lowers the vectors to
 * AVX-512, AVX2 or NEON, and building it takes a second. Deterministic: a fixed summation order per call.
 *
 * Layout: contiguous B x C x T float32. Zero padding is implicit: reads outside [0, t_in) are zero.
 *   correlate: y[b, o, t] = bias[o] + sum_i sum_k w[o, i, k] * x[b, i, t + k * d - offset]     (t in [0, t_out))
 *     forward: offset = (K - 1) * d (causal); input gradient: x = dy, w = flipped and transposed, offset = 0.
 *   weight_grad: gw[o, i, k] = sum_b sum_t dy[b, o, t] * x[b, i, t + k * d - offset]            (t in [0, t_out))
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Register blocks (measured on a Zen 4 with AVX-512: 8 -> 8 channels, k=7, 8 x 26,240 samples, forward 2.2 ms against
 * 7.4 for oneDNN): COB output channels x NV vectors of time in the forward; WCOB output channels x KB taps of one input
 * channel in the weight gradient. AVX2 has 16 vector registers, AVX-512 and NEON 32. */
#if defined(__AVX512F__)
#define VB 64
#define COB 8
#define NV 2
#define WCOB 8
#elif defined(__AVX__)
#define VB 32
#define COB 4
#define NV 2
#define WCOB 4
#else
#define VB 16
#define COB 8
#define NV 2
#define WCOB 8
#endif
#define KB 2
#define V (VB / 4)

typedef float vf __attribute__((vector_size(VB)));
typedef float vfu __attribute__((vector_size(VB), aligned(4), may_alias));

static inline vf loadu(const float *p) { return *(const vfu *)p; }
static inline void storeu(float *p, vf v) { *(vfu *)p = v; }
static inline vf splat(float s) { return (vf){0} + s; }

int streamvc_vector_floats(void) { return V; }

/* One output sample, any position, bounds checked. */
static float correlate_one(const float *x, const float *w, int64_t c_in, int64_t t_in, int64_t k_size,
                           int64_t d, int64_t offset, int64_t t, float acc) {
    for (int64_t i = 0; i < c_in; i++) {
        const float *xi = x + i * t_in;
        const float *wi = w + i * k_size;
        for (int64_t k = 0; k < k_size; k++) {
            int64_t s = t + k * d - offset;
            if (s >= 0 && s < t_in) acc += wi[k] * xi[s];
        }
    }
    return acc;
}

/* COB output channels x NV vectors of time starting at t, all reads in bounds. */
static inline __attribute__((always_inline)) void correlate_block(
    const float *x, const float *w, const float *bias, float *y, int64_t c_in, int64_t t_in, int64_t t_out,
    int64_t k_size, int64_t d, int64_t offset, int64_t o, int64_t t, const int cob) {
    vf acc[COB][NV];
    for (int c = 0; c < cob; c++) {
        vf b = splat(bias ? bias[o + c] : 0.0f);
        for (int j = 0; j < NV; j++) acc[c][j] = b;
    }
    for (int64_t i = 0; i < c_in; i++) {
        const float *xi = x + i * t_in + t - offset;
        for (int64_t k = 0; k < k_size; k++) {
            vf xv[NV];
            for (int j = 0; j < NV; j++) xv[j] = loadu(xi + k * d + j * V);
            for (int c = 0; c < cob; c++) {
                vf wv = splat(w[((o + c) * c_in + i) * k_size + k]);
                for (int j = 0; j < NV; j++) acc[c][j] += wv * xv[j];
            }
        }
    }
    for (int c = 0; c < cob; c++)
        for (int j = 0; j < NV; j++) storeu(y + (o + c) * t_out + t + j * V, acc[c][j]);
}

/* Output samples [t_begin, t_end) of every batch item and channel. */
void streamvc_correlate(const float *x, const float *w, const float *bias, float *y, int64_t batch, int64_t c_in,
                        int64_t c_out, int64_t t_in, int64_t t_out, int64_t k_size, int64_t d, int64_t offset,
                        int64_t t_begin, int64_t t_end) {
    const int64_t span = (k_size - 1) * d;
    /* samples whose every read lies in [0, t_in): t - offset >= 0 and t - offset + span + NV*V - 1 < t_in */
    int64_t fast_begin = offset > t_begin ? offset : t_begin;
    int64_t fast_last = t_in + offset - span - NV * V; /* last block start with all reads in bounds */
    if (fast_last > t_end - NV * V) fast_last = t_end - NV * V;
    for (int64_t b = 0; b < batch; b++) {
        const float *xb = x + b * c_in * t_in;
        float *yb = y + b * c_out * t_out;
        int64_t t = fast_begin;
        for (; t <= fast_last; t += NV * V) {
            int64_t o = 0;
            for (; o + COB <= c_out; o += COB)
                correlate_block(xb, w, bias, yb, c_in, t_in, t_out, k_size, d, offset, o, t, COB);
            for (; o < c_out; o++)
                correlate_block(xb, w, bias, yb, c_in, t_in, t_out, k_size, d, offset, o, t, 1);
        }
        for (int64_t o = 0; o < c_out; o++) {
            const float *wo = w + o * c_in * k_size;
            float b0 = bias ? bias[o] : 0.0f;
            for (int64_t s = t_begin; s < fast_begin && s < t_end; s++)
                yb[o * t_out + s] = correlate_one(xb, wo, c_in, t_in, k_size, d, offset, s, b0);
            for (int64_t s = t > fast_begin ? t : fast_begin; s < t_end; s++)
                yb[o * t_out + s] = correlate_one(xb, wo, c_in, t_in, k_size, d, offset, s, b0);
        }
    }
}

#define TILE 1024 /* samples per pass of the weight gradient (its inputs stay in L2) */

/* Partial sums part[o][i][k] (V lanes each) over samples [t0, t1), every read in bounds. */
static inline __attribute__((always_inline)) void weight_grad_block(
    const float *dy, const float *x, float *part, int64_t c_in, int64_t t_in, int64_t t_out,
    int64_t k_size, int64_t d, int64_t offset, int64_t o, int64_t i, int64_t k0, int64_t t0, int64_t t1,
    const int cob, const int kb) {
    vf acc[WCOB][KB];
    for (int c = 0; c < cob; c++)
        for (int j = 0; j < kb; j++) acc[c][j] = loadu(part + (((o + c) * c_in + i) * k_size + k0 + j) * V);
    const float *xi = x + i * t_in - offset + k0 * d;
    for (int64_t t = t0; t < t1; t += V) {
        vf g[WCOB], xv[KB];
        for (int c = 0; c < cob; c++) g[c] = loadu(dy + (o + c) * t_out + t);
        for (int j = 0; j < kb; j++) xv[j] = loadu(xi + t + j * d);
        for (int c = 0; c < cob; c++)
            for (int j = 0; j < kb; j++) acc[c][j] += g[c] * xv[j];
    }
    for (int c = 0; c < cob; c++)
        for (int j = 0; j < kb; j++) storeu(part + (((o + c) * c_in + i) * k_size + k0 + j) * V, acc[c][j]);
}

static inline __attribute__((always_inline)) void weight_grad_taps(
    const float *dy, const float *x, float *part, int64_t c_in, int64_t t_in, int64_t t_out,
    int64_t k_size, int64_t d, int64_t offset, int64_t o, int64_t i, int64_t t0, int64_t t1, const int cob) {
    int64_t k0 = 0;
    for (; k0 + KB <= k_size; k0 += KB)
        weight_grad_block(dy, x, part, c_in, t_in, t_out, k_size, d, offset, o, i, k0, t0, t1, cob, KB);
    for (; k0 < k_size; k0++)
        weight_grad_block(dy, x, part, c_in, t_in, t_out, k_size, d, offset, o, i, k0, t0, t1, cob, 1);
}

/* gw (c_out x c_in x k_size) = the weight gradient over samples [t_begin, t_end) of every batch item.
 * part: scratch of c_out * c_in * k_size * V floats (streamvc_vector_floats()). */
void streamvc_weight_grad(const float *dy, const float *x, float *gw, float *part, int64_t batch, int64_t c_in,
                          int64_t c_out, int64_t t_in, int64_t t_out, int64_t k_size, int64_t d, int64_t offset,
                          int64_t t_begin, int64_t t_end) {
    const int64_t n = c_out * c_in * k_size;
    const int64_t span = (k_size - 1) * d;
    memset(part, 0, (size_t)(n * V) * sizeof(float));
    int64_t fast_begin = offset > t_begin ? offset : t_begin;
    int64_t fast_end = t_in + offset - span; /* samples whose every read is < t_in */
    if (fast_end > t_end) fast_end = t_end;
    if (fast_end < fast_begin) fast_end = fast_begin;
    fast_end = fast_begin + (fast_end - fast_begin) / V * V;
    for (int64_t b = 0; b < batch; b++) {
        const float *dyb = dy + b * c_out * t_out;
        const float *xb = x + b * c_in * t_in;
        for (int64_t t0 = fast_begin; t0 < fast_end; t0 += TILE) {
            int64_t t1 = t0 + TILE < fast_end ? t0 + TILE : fast_end;
            for (int64_t o = 0; o + WCOB <= c_out; o += WCOB)
                for (int64_t i = 0; i < c_in; i++)
                    weight_grad_taps(dyb, xb, part, c_in, t_in, t_out, k_size, d, offset, o, i, t0, t1, WCOB);
            for (int64_t o = c_out / WCOB * WCOB; o < c_out; o++)
                for (int64_t i = 0; i < c_in; i++)
                    weight_grad_taps(dyb, xb, part, c_in, t_in, t_out, k_size, d, offset, o, i, t0, t1, 1);
        }
    }
    for (int64_t e = 0; e < n; e++) {
        float s = 0.0f;
        for (int l = 0; l < V; l++) s += part[e * V + l];
        gw[e] = s;
    }
    /* the samples outside the vector range, bounds checked */
    for (int64_t b = 0; b < batch; b++) {
        const float *dyb = dy + b * c_out * t_out;
        const float *xb = x + b * c_in * t_in;
        for (int64_t o = 0; o < c_out; o++)
            for (int64_t i = 0; i < c_in; i++)
                for (int64_t k = 0; k < k_size; k++) {
                    float s = 0.0f;
                    for (int64_t t = t_begin; t < t_end; t++) {
                        if (t == fast_begin) t = fast_end;
                        if (t >= t_end) break;
                        int64_t r = t + k * d - offset;
                        if (r >= 0 && r < t_in) s += dyb[o * t_out + t] * xb[i * t_in + r];
                    }
                    gw[(o * c_in + i) * k_size + k] += s;
                }
    }
}
