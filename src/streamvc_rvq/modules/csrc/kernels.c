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
#include <stdlib.h>
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

/* KEEP(v): v stays in a register. Without it GCC folds a value used twice into both multiply-adds as a memory
 * operand, loading it twice: 18 loads per 16 multiply-adds, which made the loops load-bound. */
#if defined(__AVX512F__)
#define KEEP(v) __asm__("" : "+v"(v))
#elif defined(__AVX__) || defined(__SSE2__)
#define KEEP(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define KEEP(v) __asm__("" : "+w"(v))
#else
#define KEEP(v) ((void)0)
#endif

static inline vf loadu(const float *p) { return *(const vfu *)p; }
static inline void storeu(float *p, vf v) { *(vfu *)p = v; }
static inline vf splat(float s) { return (vf){0} + s; }

int streamvc_vector_floats(void) { return V; }

/* Rows of `n` samples starting at sample `start` of each of `rows` rows of `src` (row length `length`), zero outside
 * [0, length): the zero padding at the signal's edges, materialised only for the few samples next to them. */
static float *padded_rows(const float *src, int64_t rows, int64_t length, int64_t start, int64_t n) {
    float *dst = malloc((size_t)(rows * n) * sizeof(float));
    if (!dst) return NULL;
    int64_t lo = start < 0 ? -start : 0, hi = length - start < n ? length - start : n;
    for (int64_t r = 0; r < rows; r++) {
        float *row = dst + r * n;
        if (hi <= lo) { memset(row, 0, (size_t)n * sizeof(float)); continue; }
        memset(row, 0, (size_t)lo * sizeof(float));
        memcpy(row + lo, src + r * length + start + lo, (size_t)(hi - lo) * sizeof(float));
        memset(row + hi, 0, (size_t)(n - hi) * sizeof(float));
    }
    return dst;
}

/* COB output channels x NV vectors of time: y[o][yp ...] from x[i][xp + k d ...] (rows xs and ys apart), plus
 * add[o][yp ...] where given (a residual connection, summed in the accumulators instead of in another pass). */
static inline __attribute__((always_inline)) void correlate_block(
    const float *x, int64_t xs, const float *w, const float *bias, const float *add, float *y, int64_t ys,
    int64_t c_in, int64_t k_size, int64_t d, int64_t o, int64_t xp, int64_t yp, const int cob) {
    vf acc[COB][NV];
    for (int c = 0; c < cob; c++) {
        vf b = splat(bias ? bias[o + c] : 0.0f);
        for (int j = 0; j < NV; j++) acc[c][j] = add ? b + loadu(add + (o + c) * ys + yp + j * V) : b;
    }
    for (int64_t i = 0; i < c_in; i++) {
        const float *xi = x + i * xs + xp;
        for (int64_t k = 0; k < k_size; k++) {
            vf xv[NV];
            for (int j = 0; j < NV; j++) xv[j] = loadu(xi + k * d + j * V);
            for (int c = 0; c < cob; c++) {
                vf wv = splat(w[((o + c) * c_in + i) * k_size + k]);
                KEEP(wv);
                for (int j = 0; j < NV; j++) acc[c][j] += wv * xv[j];
            }
        }
    }
    for (int c = 0; c < cob; c++)
        for (int j = 0; j < NV; j++) storeu(y + (o + c) * ys + yp + j * V, acc[c][j]);
}

static void correlate_blocks(const float *x, int64_t xs, const float *w, const float *bias, const float *add,
                             float *y, int64_t ys, int64_t c_in, int64_t c_out, int64_t k_size, int64_t d, int64_t xp,
                             int64_t yp, int64_t blocks) {
    for (int64_t n = 0; n < blocks; n++, xp += NV * V, yp += NV * V) {
        int64_t o = 0;
        for (; o + COB <= c_out; o += COB)
            correlate_block(x, xs, w, bias, add, y, ys, c_in, k_size, d, o, xp, yp, COB);
        for (; o < c_out; o++) correlate_block(x, xs, w, bias, add, y, ys, c_in, k_size, d, o, xp, yp, 1);
    }
}

/* Output samples [r0, r1) next to an edge, through padded copies of what they read. Returns 0, or -1 (no memory). */
static int correlate_edge(const float *xb, const float *w, const float *bias, const float *addb, float *yb,
                          int64_t c_in, int64_t c_out, int64_t t_in, int64_t t_out, int64_t k_size, int64_t d,
                          int64_t offset, int64_t r0, int64_t r1) {
    if (r1 <= r0) return 0;
    const int64_t blocks = (r1 - r0 + NV * V - 1) / (NV * V), n = blocks * NV * V, span = (k_size - 1) * d;
    float *xpad = padded_rows(xb, c_in, t_in, r0 - offset, n + span);
    float *ypad = addb ? padded_rows(addb, c_out, t_out, r0, n) : malloc((size_t)(c_out * n) * sizeof(float));
    if (!xpad || !ypad) { free(xpad); free(ypad); return -1; }
    correlate_blocks(xpad, n + span, w, bias, addb ? ypad : NULL, ypad, n, c_in, c_out, k_size, d, 0, 0, blocks);
    for (int64_t o = 0; o < c_out; o++) memcpy(yb + o * t_out + r0, ypad + o * n, (size_t)(r1 - r0) * sizeof(float));
    free(xpad);
    free(ypad);
    return 0;
}

/* Output samples [t_begin, t_end) of every batch item and channel, plus `add` (same shape as y) where not NULL.
 * Returns 0, or -1 when out of memory. */
int streamvc_correlate(const float *x, const float *w, const float *bias, const float *add, float *y, int64_t batch,
                       int64_t c_in, int64_t c_out, int64_t t_in, int64_t t_out, int64_t k_size, int64_t d, int64_t offset,
                       int64_t t_begin, int64_t t_end) {
    const int64_t span = (k_size - 1) * d;
    /* blocks whose every read lies in [0, t_in): t - offset >= 0 and t - offset + span + NV*V - 1 < t_in */
    int64_t fast_begin = offset > t_begin ? offset : t_begin;
    if (fast_begin > t_end) fast_begin = t_end;
    int64_t fast_end = t_in + offset - span; /* one past the last sample whose reads are all < t_in */
    if (fast_end > t_end) fast_end = t_end;
    int64_t blocks = fast_end > fast_begin ? (fast_end - fast_begin) / (NV * V) : 0;
    for (int64_t b = 0; b < batch; b++) {
        const float *xb = x + b * c_in * t_in, *addb = add ? add + b * c_out * t_out : NULL;
        float *yb = y + b * c_out * t_out;
        correlate_blocks(xb, t_in, w, bias, addb, yb, t_out, c_in, c_out, k_size, d, fast_begin - offset, fast_begin,
                         blocks);
        if (correlate_edge(xb, w, bias, addb, yb, c_in, c_out, t_in, t_out, k_size, d, offset, t_begin, fast_begin) ||
            correlate_edge(xb, w, bias, addb, yb, c_in, c_out, t_in, t_out, k_size, d, offset,
                           fast_begin + blocks * NV * V, t_end))
            return -1;
    }
    return 0;
}

#define TILE 1024 /* samples per pass of the weight gradient (its inputs stay in L2) */

/* Partial sums part[o][i][k] (V lanes each) over samples [t0, t1) of dy, reading x[i][xp + t + k d]. */
static inline __attribute__((always_inline)) void weight_grad_block(
    const float *dy, int64_t dys, const float *x, int64_t xs, float *part, int64_t c_in, int64_t k_size, int64_t d,
    int64_t o, int64_t i, int64_t k0, int64_t xp, int64_t t0, int64_t t1, const int cob, const int kb) {
    vf acc[WCOB][KB];
    for (int c = 0; c < cob; c++)
        for (int j = 0; j < kb; j++) acc[c][j] = loadu(part + (((o + c) * c_in + i) * k_size + k0 + j) * V);
    const float *xi = x + i * xs + xp + k0 * d;
    for (int64_t t = t0; t < t1; t += V) {
        vf g[WCOB], xv[KB];
        for (int c = 0; c < cob; c++) {
            g[c] = loadu(dy + (o + c) * dys + t);
            KEEP(g[c]);
        }
        for (int j = 0; j < kb; j++) xv[j] = loadu(xi + t + j * d);
        for (int c = 0; c < cob; c++)
            for (int j = 0; j < kb; j++) acc[c][j] += g[c] * xv[j];
    }
    for (int c = 0; c < cob; c++)
        for (int j = 0; j < kb; j++) storeu(part + (((o + c) * c_in + i) * k_size + k0 + j) * V, acc[c][j]);
}

static inline __attribute__((always_inline)) void weight_grad_taps(
    const float *dy, int64_t dys, const float *x, int64_t xs, float *part, int64_t c_in, int64_t k_size, int64_t d,
    int64_t o, int64_t i, int64_t xp, int64_t t0, int64_t t1, const int cob) {
    int64_t k0 = 0;
    for (; k0 + KB <= k_size; k0 += KB)
        weight_grad_block(dy, dys, x, xs, part, c_in, k_size, d, o, i, k0, xp, t0, t1, cob, KB);
    for (; k0 < k_size; k0++) weight_grad_block(dy, dys, x, xs, part, c_in, k_size, d, o, i, k0, xp, t0, t1, cob, 1);
}

static void weight_grad_span(const float *dy, int64_t dys, const float *x, int64_t xs, float *part, int64_t c_in,
                             int64_t c_out, int64_t k_size, int64_t d, int64_t xp, int64_t t_begin, int64_t t_end) {
    for (int64_t t0 = t_begin; t0 < t_end; t0 += TILE) {
        int64_t t1 = t0 + TILE < t_end ? t0 + TILE : t_end;
        for (int64_t o = 0; o + WCOB <= c_out; o += WCOB)
            for (int64_t i = 0; i < c_in; i++)
                weight_grad_taps(dy, dys, x, xs, part, c_in, k_size, d, o, i, xp, t0, t1, WCOB);
        for (int64_t o = c_out / WCOB * WCOB; o < c_out; o++)
            for (int64_t i = 0; i < c_in; i++)
                weight_grad_taps(dy, dys, x, xs, part, c_in, k_size, d, o, i, xp, t0, t1, 1);
    }
}

/* The samples [r0, r1) next to an edge, through padded copies (dy zero past r1, x zero outside the signal). */
static int weight_grad_edge(const float *dyb, const float *xb, float *part, int64_t c_in, int64_t c_out, int64_t t_in,
                            int64_t t_out, int64_t k_size, int64_t d, int64_t offset, int64_t r0, int64_t r1) {
    if (r1 <= r0) return 0;
    const int64_t n = (r1 - r0 + V - 1) / V * V, span = (k_size - 1) * d;
    float *dypad = padded_rows(dyb, c_out, t_out, r0, n);
    float *xpad = padded_rows(xb, c_in, t_in, r0 - offset, n + span);
    if (!dypad || !xpad) { free(dypad); free(xpad); return -1; }
    if (r1 - r0 < n) /* dy past r1 belongs to the next span: zero it */
        for (int64_t o = 0; o < c_out; o++) memset(dypad + o * n + (r1 - r0), 0, (size_t)(n - (r1 - r0)) * sizeof(float));
    weight_grad_span(dypad, n, xpad, n + span, part, c_in, c_out, k_size, d, 0, 0, n);
    free(dypad);
    free(xpad);
    return 0;
}

/* gw (c_out x c_in x k_size) = the weight gradient over samples [t_begin, t_end) of every batch item.
 * part: scratch of c_out * c_in * k_size * V floats (streamvc_vector_floats()). Returns 0, or -1 (no memory). */
int streamvc_weight_grad(const float *dy, const float *x, float *gw, float *part, int64_t batch, int64_t c_in,
                         int64_t c_out, int64_t t_in, int64_t t_out, int64_t k_size, int64_t d, int64_t offset,
                         int64_t t_begin, int64_t t_end) {
    const int64_t n = c_out * c_in * k_size;
    const int64_t span = (k_size - 1) * d;
    memset(part, 0, (size_t)(n * V) * sizeof(float));
    int64_t fast_begin = offset > t_begin ? offset : t_begin;
    if (fast_begin > t_end) fast_begin = t_end;
    int64_t fast_end = t_in + offset - span; /* samples whose every read is < t_in */
    if (fast_end > t_end) fast_end = t_end;
    if (fast_end < fast_begin) fast_end = fast_begin;
    fast_end = fast_begin + (fast_end - fast_begin) / V * V;
    for (int64_t b = 0; b < batch; b++) {
        const float *dyb = dy + b * c_out * t_out;
        const float *xb = x + b * c_in * t_in;
        weight_grad_span(dyb, t_out, xb, t_in, part, c_in, c_out, k_size, d, -offset, fast_begin, fast_end);
        if (weight_grad_edge(dyb, xb, part, c_in, c_out, t_in, t_out, k_size, d, offset, t_begin, fast_begin) ||
            weight_grad_edge(dyb, xb, part, c_in, c_out, t_in, t_out, k_size, d, offset, fast_end, t_end))
            return -1;
    }
    for (int64_t e = 0; e < n; e++) {
        float s = 0.0f;
        for (int l = 0; l < V; l++) s += part[e * V + l];
        gw[e] = s;
    }
    return 0;
}

/* ELU (alpha = 1): y = x for x > 0, expm1(x) otherwise; and its gradient from the output, dx = dy * (y > 0 ? 1 : y + 1).
 * Why: torch 2.14's CPU ELU evaluates expm1 one lane at a time for negative inputs (~9 ns a value). Here expm1 is
 * 2^n (e^r - 1) + (2^n - 1) with r = x - n ln2, |r| <= ln2 / 2, e^r - 1 by its Taylor series to r^8 (relative
 * error < 1e-8 before rounding): exact to about one float ulp, and exactly the series at n = 0, near zero. */
typedef int32_t vi __attribute__((vector_size(VB)));
typedef int32_t viu __attribute__((vector_size(VB), aligned(4), may_alias));

static inline vf expm1_nonpositive(vf x) {
    const vf lo = splat(-87.0f);
    vi below = x < lo;
    x = (vf)(((vi)x & ~below) | ((vi)lo & below)); /* max(x, -87): 2^n stays a normal float */
    vf z = x * splat(1.44269504088896341f) - splat(0.5f);
    vi n = __builtin_convertvector(z, vi); /* z <= -0.5: truncation is rounding of x log2(e) to nearest */
    vf nf = __builtin_convertvector(n, vf);
    vf r = x - nf * splat(0.693359375f) + nf * splat(2.12194440e-4f); /* Cody-Waite: ln2 = 0.693359375 - 2.12e-4 */
    vf p = splat(1.0f / 40320);
    p = p * r + splat(1.0f / 5040);
    p = p * r + splat(1.0f / 720);
    p = p * r + splat(1.0f / 120);
    p = p * r + splat(1.0f / 24);
    p = p * r + splat(1.0f / 6);
    p = p * r + splat(0.5f);
    p = p * r * r + r; /* e^r - 1 */
    vf scale = (vf)((n + 127) << 23); /* 2^n */
    return scale * p + (scale - splat(1.0f));
}

static float expm1_scalar(float x) {
    vf v = splat(x);
    return expm1_nonpositive(v)[0];
}

void streamvc_elu(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + V <= n; i += V) {
        vf v = loadu(x + i);
        vi positive = v > splat(0.0f);
        vf e = expm1_nonpositive(v);
        storeu(y + i, (vf)(((vi)v & positive) | ((vi)e & ~positive)));
    }
    for (; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : expm1_scalar(x[i]);
}

void streamvc_elu_backward(const float *dy, const float *y, float *dx, int64_t n) {
    int64_t i = 0;
    const vf one = splat(1.0f);
    for (; i + V <= n; i += V) {
        vf out = loadu(y + i);
        vi positive = out > splat(0.0f);
        vf slope = (vf)(((vi)one & positive) | ((vi)(out + one) & ~positive));
        storeu(dx + i, loadu(dy + i) * slope);
    }
    for (; i < n; i++) dx[i] = dy[i] * (y[i] > 0.0f ? 1.0f : y[i] + 1.0f);
}
