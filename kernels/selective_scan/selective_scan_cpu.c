/* Native CPU selective scan (Mamba-1), float32: forward and backward.
 *
 * Compiled on first use by sosm.kernels.selective_scan.native_cpu (system C compiler, -O3,
 * -fopenmp-simd for the `omp simd` loops, which asserts them free of aliasing; no OpenMP runtime)
 * and loaded with ctypes.
 * For every batch item b, channel d and state n:
 *
 *     delta = softplus(dt + bias) (or dt + bias)      softplus(x) = x for x > 20 (PyTorch's threshold)
 *     h_t   = exp(max(delta_t * A, -87)) * h_{t-1} + delta_t * u_t * B_t      h_{-1} = 0
 *     y_t   = sum_n C_t h_t + D u_t;   out = y * silu(z) if z is given
 *
 * Layouts (element strides; every row is unit-stride along the channels d):
 *   u, dt, z, gout: [B][L][D] read at b * s_b + t * s_l + d   (the model's [B, T, E] memory)
 *   A, gA: [N][D]  (A transposed, so the inner loops run along contiguous channels)
 *   Bm, Cm, gB, gC: [B][L][G][N]; group g owns channels g * D/G .. (g+1) * D/G - 1
 *   Dv, bias, gD, gbias: [D], never NULL (the caller passes zeros for an absent D or bias)
 *   the backward reads delta from dl_s (below) instead of dt and bias
 *   last, glast: [B][D][N] (either may be NULL); gout is never NULL; z, gz NULL when there is no gate
 *   out, gu, gdt, gz: [B][L][D] contiguous
 *   ckpt: [B][nck][N][D], nck = ceil(L / tc): the state after each chunk of tc steps, written
 *         by the forward (when not NULL) and read by the backward, which recomputes each chunk's
 *         decays and states from the previous chunk's end state (the same operations in the same
 *         order, so the same numbers) into a cache-sized buffer and walks it back in time.
 *   dl_s, sx_s, sz_s: [B][L][D]: delta, softplus' derivative sigmoid(dt + bias) and sigmoid(z),
 *         written by the forward (when not NULL) so the backward evaluates no exp, log or division
 *         per (b, t, d): it only recomputes the decays exp(delta A) per state.
 *
 * Work is tiled over (b, block of BLOCK channels inside one group); a tile's state [N][BLOCK]
 * stays in L1 and every inner loop runs over the block's contiguous channels with a fixed trip
 * count (a last partial block is zero-padded in tile-local rows: padded lanes carry zero state,
 * zero drive and zero gradient), so the compiler vectorises it completely. The backward's
 * reverse step is written with vector types (below): its sums over states stay in registers and
 * its sums over channels (the B and C gradients) are kept as 16-lane partials per chunk, summed
 * across lanes once all the group's blocks have added theirs. On AVX-512 builds the recurrence
 * step uses intrinsics (vscalefps for 2^n, delta / drive / y in registers). exp and log are
 * branch-free polynomials (exp2 on [-1/2, 1/2]: fitted degree 6, 1.6 ulp; log: Cephes' logf) so
 * their loops vectorise too. A is scaled by log2(e) once per tile; the decay's exponent is
 * floored at -87 in natural units (exp(-87) = 1.6e-38, the floor of the vectorised PyTorch
 * path: below it exp() lands on subnormals, which CPUs evaluate tens of times slower) and capped
 * at 88 (the generic code; AVX-512 saturates to +inf like exp()).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SOSM_SCAN_ABI 3
#define BLOCK 64
#define LOG2E 1.44269504088896341f
#define EXP2_LO (-87.0f * LOG2E)
#define EXP2_HI (88.0f * LOG2E)

int sosm_scan_abi(void) { return SOSM_SCAN_ABI; }
int sosm_scan_block(void) { return BLOCK; }

static inline float from_bits(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline int32_t to_bits(float f) { int32_t i; memcpy(&i, &f, sizeof i); return i; }

/* 2^x for x clamped to [EXP2_LO, EXP2_HI]: x = n + f, |f| <= 1/2, 2^f by a degree-6 polynomial
 * (relative error 1.6 ulp), 2^n from the exponent bits. */
static inline float vexp2(float x) {
    x = x < EXP2_LO ? EXP2_LO : x;
    x = x > EXP2_HI ? EXP2_HI : x;
    float t = x + 12582912.0f;  /* + 1.5 * 2^23: rounds x to the nearest integer */
    float n = t - 12582912.0f;
    int32_t ni = to_bits(t) - 0x4B400000;
    float f = x - n;
    float p = 1.5345809515565634e-4f;
    p = p * f + 1.3399930903688073e-3f;
    p = p * f + 9.6184890717267990e-3f;
    p = p * f + 5.5503286421298980e-2f;
    p = p * f + 2.4022646248340607e-1f;
    p = p * f + 6.9314718246459961e-1f;
    p = p * f + 1.0f;
    return p * from_bits((ni + 127) << 23);
}

static inline float vexp(float x) { return vexp2(x * LOG2E); }

/* log(x) for positive normal x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), polynomial in m - 1. */
static inline float vlog(float x) {
    int32_t i = to_bits(x);
    int32_t e = ((i >> 23) & 0xff) - 126;
    float m = from_bits((i & 0x007fffff) | 0x3f000000); /* [0.5, 1) */
    int lt = m < 0.707106781186547524f;
    e -= lt;
    m = lt ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    float fe = (float)e;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

/* PyTorch's softplus (beta 1, threshold 20) and its derivative sigmoid(x), sharing one division:
 * with e = exp(x) and w = fl(1 + e), log1p(e) = log(w) + (e - (w - 1)) / w to first order (the
 * rounding of 1 + e corrected; exact to float32 rounding for every e, w = 1 included). */
static inline float vsoftplus(float x, float *sig) {
    float e = vexp(x);
    float w = 1.0f + e, rw = 1.0f / w;
    float lp = vlog(w) + (e - (w - 1.0f)) * rw;
    int big = x > 20.0f;
    *sig = big ? 1.0f : e * rw;
    return big ? x : lp;
}

/* A row of wd <= BLOCK channels: the row itself when full, else a zero-padded copy in pad. */
static inline const float *row(const float *src, int64_t wd, float *pad) {
    if (wd == BLOCK) return src;
    memcpy(pad, src, sizeof(float) * (size_t)wd);
    memset(pad + wd, 0, sizeof(float) * (size_t)(BLOCK - wd));
    return pad;
}

/* Per-tile constants: A^T * log2(e) (and A^T when At is not NULL), D and the bias (when bt is
 * not NULL), zero-padded. */
static void load_tile(int64_t N, int64_t D, int64_t d0, int64_t wd, const float *A, const float *Dv,
                      const float *bias, float *A2t, float *At, float *Dt, float *bt) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < BLOCK; d++) {
            float a = d < wd ? A[n * D + d0 + d] : 0.0f;
            A2t[n * BLOCK + d] = a * LOG2E;
            if (At) At[n * BLOCK + d] = a;
        }
    for (int64_t d = 0; d < BLOCK; d++) {
        Dt[d] = d < wd ? Dv[d0 + d] : 0.0f;
        if (bt) bt[d] = d < wd ? bias[d0 + d] : 0.0f;
    }
}

/* delta and delta * u for one time step of a tile (and softplus' derivative into sx). */
static inline void step_delta(const float *restrict dt, const float *restrict u, const float *restrict bias,
                              int softplus, float *restrict dl, float *restrict du, float *restrict sx) {
    if (softplus)
        for (int d = 0; d < BLOCK; d++) {
            float v = vsoftplus(dt[d] + bias[d], sx + d);
            dl[d] = v;
            du[d] = v * u[d];
        }
    else
        for (int d = 0; d < BLOCK; d++) {
            float v = dt[d] + bias[d];
            dl[d] = v;
            du[d] = v * u[d];
        }
}

/* One recurrence step of a tile: h <- 2^(dl A log2 e) hp + du B_t (decays into da when not NULL),
 * y = C_t . h. The forward passes h == hp (in place). */
#if defined(__AVX512F__)
#include <immintrin.h>
/* AVX-512: 2^x as vexp2 (same rounding of n, same polynomial, same floor) with the scaling by 2^n
 * done by vscalefps, which also saturates large x to +inf as exp() does (no upper clamp needed). */
static inline __m512 exp2_avx512(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(EXP2_LO), x);  /* operand order: a NaN x stays NaN */
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.5345809515565634e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3399930903688073e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6184890717267990e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5503286421298980e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022646248340607e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718246459961e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* One recurrence step of a tile (see the generic version below); delta, delta * u and y stay in
 * registers across the state loop. */
static inline void step_state(int64_t N, const float *restrict dl, const float *restrict du, const float *A2t,
                              const float *Bt, const float *Ct, const float *hp, float *h, float *da,
                              float *restrict y) {
    __m512 DL[BLOCK / 16], DU[BLOCK / 16], Y[BLOCK / 16];
    for (int k = 0; k < BLOCK / 16; k++) {
        DL[k] = _mm512_loadu_ps(dl + 16 * k);
        DU[k] = _mm512_loadu_ps(du + 16 * k);
        Y[k] = _mm512_setzero_ps();
    }
    for (int64_t n = 0; n < N; n++) {
        const __m512 bn = _mm512_set1_ps(Bt[n]), cn = _mm512_set1_ps(Ct[n]);
        for (int k = 0; k < BLOCK / 16; k++) {
            const int64_t i = n * BLOCK + 16 * k;
            __m512 a = exp2_avx512(_mm512_mul_ps(DL[k], _mm512_loadu_ps(A2t + i)));
            __m512 v = _mm512_fmadd_ps(a, _mm512_loadu_ps(hp + i), _mm512_mul_ps(DU[k], bn));
            _mm512_storeu_ps(h + i, v);
            if (da) _mm512_storeu_ps(da + i, a);
            Y[k] = _mm512_fmadd_ps(cn, v, Y[k]);
        }
    }
    for (int k = 0; k < BLOCK / 16; k++) _mm512_storeu_ps(y + 16 * k, Y[k]);
}
#else
/* One recurrence step of a tile: h <- 2^(dl A log2 e) hp + du B_t (decays into da when not NULL),
 * y = C_t . h. The forward passes h == hp (in place). */
static inline void step_state(int64_t N, const float *restrict dl, const float *restrict du, const float *A2t,
                              const float *Bt, const float *Ct, const float *hp, float *h, float *da,
                              float *restrict y) {
    for (int d = 0; d < BLOCK; d++) y[d] = 0.0f;
    for (int64_t n = 0; n < N; n++) {
        const float *restrict an = A2t + n * BLOCK;
        const float *hpn = hp + n * BLOCK;
        float *hn = h + n * BLOCK;
        const float bn = Bt[n], cn = Ct[n];
        if (da) {
            float *restrict dan = da + n * BLOCK;
#pragma omp simd
            for (int d = 0; d < BLOCK; d++) {
                float a = vexp2(dl[d] * an[d]);
                float v = a * hpn[d] + du[d] * bn;
                dan[d] = a;
                hn[d] = v;
                y[d] += cn * v;
            }
        } else {
#pragma omp simd
            for (int d = 0; d < BLOCK; d++) {
                float v = vexp2(dl[d] * an[d]) * hpn[d] + du[d] * bn;
                hn[d] = v;
                y[d] += cn * v;
            }
        }
    }
}

#endif

/* GCC/clang vector extension: 16 floats (one AVX-512 register, two AVX ones, four SSE ones). The
 * backward's reverse step is written with it so that the per-channel accumulators stay in
 * registers across the state loop and each channel sum is one in-register tree. */
typedef float vf __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
#define VW 16
#define NV (BLOCK / VW)

static inline vf vld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vst(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vsplat(float x) { vf v = {0}; return v + x; }
#if defined(__AVX512F__)
static inline float vsum(vf v) { return _mm512_reduce_add_ps((__m512)v); }  /* in registers */
#else
static inline float vsum(vf v) {
    vf8 a, b;
    memcpy(&a, &v, sizeof a);
    memcpy(&b, (const char *)&v + sizeof a, sizeof b);
    a += b;
    vf4 c, d;
    memcpy(&c, &a, sizeof c);
    memcpy(&d, (const char *)&a + sizeof c, sizeof d);
    c += d;
    return (c[0] + c[2]) + (c[1] + c[3]);
}
#endif

/* One step of the backward walk for a tile, given gy = d loss / d y_t (after the gate):
 *   gh  = gy C_t + carry                 d loss / d h_t  (carry: from step t+1, times its decay)
 *   gC_t += sum_d gy h_t,  gB_t += sum_d gh du_t   (kept as VW lane partials pC, pB [N][VW], summed
 *                                                  once all the group's tiles have added theirs)
 *   gdu = sum_n gh B_t
 *   gx  = gh a_t h_{t-1}                 d loss / d (delta_t A), a_t the decay
 *   gdl = sum_n gx A,  gA += gx delta_t,  carry = gh a_t                                        */
static inline void reverse_step(int64_t N, const float *gy, const float *du, const float *dl,
                                const float *Bt, const float *Ct, const float *h, const float *hp,
                                const float *da, const float *At, float *carry, float *gAt,
                                float *gdu, float *gdl, float *pB, float *pC) {
    vf GY[NV], DU[NV], DL[NV], GDU[NV], GDL[NV];
    for (int k = 0; k < NV; k++) {
        GY[k] = vld(gy + k * VW);
        DU[k] = vld(du + k * VW);
        DL[k] = vld(dl + k * VW);
        GDU[k] = vsplat(0.0f);
        GDL[k] = vsplat(0.0f);
    }
    for (int64_t n = 0; n < N; n++) {
        const int64_t o = n * BLOCK;
        const vf bn = vsplat(Bt[n]), cn = vsplat(Ct[n]);
        vf sc = vsplat(0.0f), sb = vsplat(0.0f);
        for (int k = 0; k < NV; k++) {
            const int64_t i = o + k * VW;
            vf a = vld(da + i);
            vf gh = GY[k] * cn + vld(carry + i);
            vf gx = gh * a * vld(hp + i);
            sc += GY[k] * vld(h + i);
            sb += gh * DU[k];
            GDU[k] += gh * bn;
            GDL[k] += gx * vld(At + i);
            vst(gAt + i, vld(gAt + i) + gx * DL[k]);
            vst(carry + i, gh * a);
        }
        vst(pC + n * VW, vld(pC + n * VW) + sc);
        vst(pB + n * VW, vld(pB + n * VW) + sb);
    }
    for (int k = 0; k < NV; k++) {
        vst(gdu + k * VW, GDU[k]);
        vst(gdl + k * VW, GDL[k]);
    }
}

int sosm_scan_fwd_f32(int64_t nb, int64_t L, int64_t D, int64_t N, int64_t G, int64_t tc,
                      const float *u, int64_t u_sb, int64_t u_sl,
                      const float *dt, int64_t dt_sb, int64_t dt_sl,
                      const float *z, int64_t z_sb, int64_t z_sl,
                      const float *A, const float *Bm, const float *Cm,
                      const float *Dv, const float *bias, int softplus,
                      float *out, float *last, float *ckpt, float *dl_s, float *sx_s, float *sz_s) {
    const int64_t H = D / G, nck = (L + tc - 1) / tc, sN = N * BLOCK;
    float *buf = aligned_alloc(64, sizeof(float) * (size_t)(2 * sN + 12 * BLOCK));
    if (!buf) return -1;
    float *h = buf, *A2t = h + sN, *dl = A2t + sN, *du = dl + BLOCK, *y = du + BLOCK, *o = y + BLOCK;
    float *Dt = o + BLOCK, *bt = Dt + BLOCK, *pu = bt + BLOCK, *pdt = pu + BLOCK, *pz = pdt + BLOCK;
    float *sx = pz + BLOCK, *sz = sx + BLOCK;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t g = 0; g < G; g++)
            for (int64_t d0 = g * H; d0 < (g + 1) * H; d0 += BLOCK) {
                const int64_t wd = (g + 1) * H - d0 < BLOCK ? (g + 1) * H - d0 : BLOCK;
                load_tile(N, D, d0, wd, A, Dv, bias, A2t, NULL, Dt, bt);
                memset(h, 0, sizeof(float) * (size_t)sN);
                for (int64_t t = 0; t < L; t++) {
                    const int64_t orow = (b * L + t) * D + d0;
                    const float *restrict ut = row(u + b * u_sb + t * u_sl + d0, wd, pu);
                    step_delta(row(dt + b * dt_sb + t * dt_sl + d0, wd, pdt), ut, bt, softplus, dl, du, sx);
                    const int64_t bc = ((b * L + t) * G + g) * N;
                    step_state(N, dl, du, A2t, Bm + bc, Cm + bc, h, h, NULL, y);
                    if (z) {
                        const float *restrict zt = row(z + b * z_sb + t * z_sl + d0, wd, pz);
                        for (int d = 0; d < BLOCK; d++) {
                            float s = 1.0f / (1.0f + vexp(-zt[d]));
                            sz[d] = s;
                            o[d] = (y[d] + Dt[d] * ut[d]) * (zt[d] * s);
                        }
                    } else {
                        for (int d = 0; d < BLOCK; d++) o[d] = y[d] + Dt[d] * ut[d];
                    }
                    memcpy(out + orow, o, sizeof(float) * (size_t)wd);
                    if (dl_s) memcpy(dl_s + orow, dl, sizeof(float) * (size_t)wd);
                    if (sx_s && softplus) memcpy(sx_s + orow, sx, sizeof(float) * (size_t)wd);
                    if (sz_s && z) memcpy(sz_s + orow, sz, sizeof(float) * (size_t)wd);
                    if (ckpt && ((t + 1) % tc == 0 || t == L - 1)) {
                        float *c = ckpt + (b * nck + t / tc) * N * D + d0;
                        for (int64_t n = 0; n < N; n++)
                            memcpy(c + n * D, h + n * BLOCK, sizeof(float) * (size_t)wd);
                    }
                }
                if (last)
                    for (int64_t d = 0; d < wd; d++)
                        for (int64_t n = 0; n < N; n++)
                            last[(b * D + d0 + d) * N + n] = h[n * BLOCK + d];
            }
    free(buf);
    return 0;
}

int sosm_scan_bwd_f32(int64_t nb, int64_t L, int64_t D, int64_t N, int64_t G, int64_t tc,
                      const float *u, int64_t u_sb, int64_t u_sl,
                      const float *z, int64_t z_sb, int64_t z_sl,
                      const float *A, const float *Bm, const float *Cm, const float *Dv,
                      const float *ckpt, const float *dl_s, const float *sx_s, const float *sz_s,
                      const float *gout, int64_t go_sb, int64_t go_sl, const float *glast,
                      float *gu, float *gdt, float *gz, float *gA, float *gB, float *gC,
                      float *gD, float *gbias) {
    const int64_t H = D / G, nck = (L + tc - 1) / tc, sN = N * BLOCK, nt = (H + BLOCK - 1) / BLOCK;
    /* Loop order: batch item, group, chunk (last first), channel block. Per group: the carried
     * state gradients, A^T log2 e, A^T and the A gradient of every block [nt][N][BLOCK], D and the
     * D / bias gradients [nt][BLOCK]. Per chunk: the B and C gradients' lane partials [tc][N][VW]
     * (summed over the group's blocks, then across lanes once). Per block: the chunk's states and
     * decays [tc][N][BLOCK]; delta, delta * u, y [tc][BLOCK]; the state before the chunk [N][BLOCK];
     * per-step rows [BLOCK]. */
    const size_t nfl = (size_t)(4 * nt * sN + 3 * nt * BLOCK + 2 * tc * N * VW + 2 * tc * sN + 3 * tc * BLOCK
                                + sN + 16 * BLOCK);
    float *buf = aligned_alloc(64, sizeof(float) * nfl);
    if (!buf) return -1;
    float *carry_g = buf, *A2t_g = carry_g + nt * sN, *At_g = A2t_g + nt * sN, *gA_g = At_g + nt * sN;
    float *Dt_g = gA_g + nt * sN, *gD_g = Dt_g + nt * BLOCK, *gb_g = gD_g + nt * BLOCK;
    float *pB = gb_g + nt * BLOCK, *pC = pB + tc * N * VW;
    float *hs = pC + tc * N * VW, *das = hs + tc * sN, *dls = das + tc * sN, *dus = dls + tc * BLOCK;
    float *ys = dus + tc * BLOCK, *h0 = ys + tc * BLOCK, *r = h0 + sN;
    float *gy = r, *gdu = r + BLOCK, *gdl = r + 2 * BLOCK, *pdl = r + 3 * BLOCK, *pu = r + 4 * BLOCK;
    float *pz = r + 5 * BLOCK, *pgo = r + 6 * BLOCK, *rgu = r + 7 * BLOCK, *rgdt = r + 8 * BLOCK;
    float *rgz = r + 9 * BLOCK, *psx = r + 10 * BLOCK, *psz = r + 11 * BLOCK;
    memset(gA, 0, sizeof(float) * (size_t)(N * D));
    memset(gD, 0, sizeof(float) * (size_t)D);
    memset(gbias, 0, sizeof(float) * (size_t)D);
    for (int64_t g = 0; g < G; g++) {
        memset(gA_g, 0, sizeof(float) * (size_t)(nt * sN));
        memset(gD_g, 0, sizeof(float) * (size_t)(2 * nt * BLOCK));  /* gD_g and gb_g */
        for (int64_t j = 0; j < nt; j++) {
            const int64_t d0 = g * H + j * BLOCK, wd = H - j * BLOCK < BLOCK ? H - j * BLOCK : BLOCK;
            load_tile(N, D, d0, wd, A, Dv, NULL, A2t_g + j * sN, At_g + j * sN, Dt_g + j * BLOCK, NULL);
        }
        for (int64_t b = 0; b < nb; b++) {
            /* carry = d loss / d h_t from the steps after t, times exp(delta_{t+1} A) */
            for (int64_t j = 0; j < nt; j++) {
                const int64_t d0 = g * H + j * BLOCK, wd = H - j * BLOCK < BLOCK ? H - j * BLOCK : BLOCK;
                float *carry = carry_g + j * sN;
                for (int64_t n = 0; n < N; n++)
                    for (int64_t d = 0; d < BLOCK; d++)
                        carry[n * BLOCK + d] = glast && d < wd ? glast[(b * D + d0 + d) * N + n] : 0.0f;
            }
            for (int64_t k = nck - 1; k >= 0; k--) {
                const int64_t t0 = k * tc, c = (t0 + tc < L ? t0 + tc : L) - t0;
                memset(pB, 0, sizeof(float) * (size_t)(c * N * VW));
                memset(pC, 0, sizeof(float) * (size_t)(c * N * VW));
                for (int64_t j = 0; j < nt; j++) {
                    const int64_t d0 = g * H + j * BLOCK, wd = H - j * BLOCK < BLOCK ? H - j * BLOCK : BLOCK;
                    const float *A2t = A2t_g + j * sN, *At = At_g + j * sN, *Dt = Dt_g + j * BLOCK;
                    float *carry = carry_g + j * sN, *gAt = gA_g + j * sN;
                    float *gDt = gD_g + j * BLOCK, *gbt = gb_g + j * BLOCK;
                    memset(h0, 0, sizeof(float) * (size_t)sN);
                    if (k > 0) {
                        const float *cp = ckpt + (b * nck + k - 1) * N * D + d0;
                        for (int64_t n = 0; n < N; n++)
                            memcpy(h0 + n * BLOCK, cp + n * D, sizeof(float) * (size_t)wd);
                    }
                    for (int64_t i = 0; i < c; i++) {  /* recompute the chunk's states and decays */
                        const int64_t t = t0 + i, bc = ((b * L + t) * G + g) * N;
                        const float *restrict dl = row(dl_s + (b * L + t) * D + d0, wd, pdl);
                        const float *restrict ut = row(u + b * u_sb + t * u_sl + d0, wd, pu);
                        float *restrict dli = dls + i * BLOCK, *restrict du = dus + i * BLOCK;
                        for (int d = 0; d < BLOCK; d++) {
                            dli[d] = dl[d];
                            du[d] = dl[d] * ut[d];
                        }
                        step_state(N, dli, du, A2t, Bm + bc, Cm + bc, i ? hs + (i - 1) * sN : h0, hs + i * sN,
                                   das + i * sN, ys + i * BLOCK);
                    }
                    for (int64_t i = c - 1; i >= 0; i--) {  /* walk the chunk back in time */
                        const int64_t t = t0 + i, bc = ((b * L + t) * G + g) * N, orow = (b * L + t) * D + d0;
                        const float *restrict ut = row(u + b * u_sb + t * u_sl + d0, wd, pu);
                        const float *restrict got = row(gout + b * go_sb + t * go_sl + d0, wd, pgo);
                        const float *restrict yt = ys + i * BLOCK;
                        const float *restrict dl = dls + i * BLOCK, *restrict du = dus + i * BLOCK;
                        if (z) {
                            const float *restrict zt = row(z + b * z_sb + t * z_sl + d0, wd, pz);
                            const float *restrict st = row(sz_s + orow, wd, psz);
                            for (int d = 0; d < BLOCK; d++) {
                                float go = got[d], zz = zt[d], sg = st[d];
                                rgz[d] = go * (yt[d] + Dt[d] * ut[d]) * sg * (1.0f + zz * (1.0f - sg));
                                gy[d] = go * zz * sg;
                            }
                            memcpy(gz + orow, rgz, sizeof(float) * (size_t)wd);
                        } else {
                            for (int d = 0; d < BLOCK; d++) gy[d] = got[d];
                        }
                        for (int d = 0; d < BLOCK; d++) gDt[d] += gy[d] * ut[d];
                        reverse_step(N, gy, du, dl, Bm + bc, Cm + bc, hs + i * sN, i ? hs + (i - 1) * sN : h0,
                                     das + i * sN, At, carry, gAt, gdu, gdl, pB + i * N * VW, pC + i * N * VW);
                        for (int d = 0; d < BLOCK; d++) {
                            rgu[d] = gdu[d] * dl[d] + gy[d] * Dt[d];
                            gdl[d] += gdu[d] * ut[d];
                        }
                        if (sx_s) {  /* softplus: d delta / d (dt + bias) = sigmoid(dt + bias) */
                            const float *restrict sxt = row(sx_s + orow, wd, psx);
                            for (int d = 0; d < BLOCK; d++) gdl[d] *= sxt[d];
                        }
                        for (int d = 0; d < BLOCK; d++) {
                            rgdt[d] = gdl[d];
                            gbt[d] += gdl[d];
                        }
                        memcpy(gu + orow, rgu, sizeof(float) * (size_t)wd);
                        memcpy(gdt + orow, rgdt, sizeof(float) * (size_t)wd);
                    }
                }
                for (int64_t i = 0; i < c; i++) {  /* the chunk's B and C gradients: sum the lanes */
                    const int64_t bc = ((b * L + t0 + i) * G + g) * N;
                    for (int64_t n = 0; n < N; n++) {
                        gB[bc + n] = vsum(vld(pB + (i * N + n) * VW));
                        gC[bc + n] = vsum(vld(pC + (i * N + n) * VW));
                    }
                }
            }
        }
        for (int64_t j = 0; j < nt; j++) {
            const int64_t d0 = g * H + j * BLOCK, wd = H - j * BLOCK < BLOCK ? H - j * BLOCK : BLOCK;
            for (int64_t n = 0; n < N; n++)
                for (int64_t d = 0; d < wd; d++) gA[n * D + d0 + d] += gA_g[j * sN + n * BLOCK + d];
            for (int64_t d = 0; d < wd; d++) {
                gD[d0 + d] += gD_g[j * BLOCK + d];
                gbias[d0 + d] += gb_g[j * BLOCK + d];
            }
        }
    }
    free(buf);
    return 0;
}

/* ---- Mamba's causal depthwise convolution (width K, left zero padding), optionally with SiLU ----
 *
 *     c[b, t, e] = bias[e] + sum_k w[k][e] * x[b, t - (K - 1) + k, e]     (x = 0 before t = 0)
 *     out = silu(c) = c * sigmoid(c) when act, else c
 *
 * x is read at b * sxb + t * sxt + e (unit stride along the channels: the model passes a half
 * of the in-projection's output without a copy); w: [K][E] contiguous taps, oldest first;
 * bias: [E]; out, gy, gx: [B][T][E] contiguous; gw: [K][E]; gb: [E]. The backward recomputes c
 * (K multiply-adds per element) for SiLU's derivative instead of storing it, and sums the tap
 * and bias gradients per batch item before adding them up (shorter float32 sums). Every loop
 * runs along contiguous channels. Returns 0, or 1 when the work buffer cannot be allocated. */
static inline void conv_row(int64_t T, int64_t E, int64_t K, const float *xb, int64_t sxt, const float *w,
                            const float *bias, int64_t t, float *restrict o) {
    for (int64_t e = 0; e < E; e++) o[e] = bias[e];
    for (int64_t k = 0; k < K; k++) {
        const int64_t src = t - (K - 1) + k;
        if (src < 0 || src >= T) continue;
        const float *restrict xr = xb + src * sxt;
        const float *restrict wk = w + k * E;
#pragma omp simd
        for (int64_t e = 0; e < E; e++) o[e] += wk[e] * xr[e];
    }
}

/* SiLU in place: the exp and the division in separate loops (one loop holding both ran ~8x slower
 * under -fno-trapping-math with GCC 12 on AVX-512: the division is then if-converted over every
 * lane of the exp's clamping branches). tmp: E floats. */
static inline void silu_row(int64_t E, float *restrict o, float *restrict tmp) {
#pragma omp simd
    for (int64_t e = 0; e < E; e++) tmp[e] = 1.0f + vexp(-o[e]);
#pragma omp simd
    for (int64_t e = 0; e < E; e++) o[e] = o[e] / tmp[e];
}

int sosm_conv_fwd_f32(int64_t nb, int64_t T, int64_t E, int64_t K, const float *x, int64_t sxb, int64_t sxt,
                      const float *w, const float *bias, int act, float *out) {
    float *tmp = act ? (float *)malloc(sizeof(float) * (size_t)E) : NULL;
    if (act && !tmp) return 1;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t t = 0; t < T; t++) {
            float *restrict o = out + (b * T + t) * E;
            conv_row(T, E, K, x + b * sxb, sxt, w, bias, t, o);
            if (act) silu_row(E, o, tmp);
        }
    free(tmp);
    return 0;
}

int sosm_conv_bwd_f32(int64_t nb, int64_t T, int64_t E, int64_t K, const float *x, int64_t sxb, int64_t sxt,
                      const float *w, const float *bias, int act, const float *gy, float *gx, float *gw,
                      float *gb) {
    float *buf = (float *)malloc(sizeof(float) * (size_t)((T + K + 1) * E));
    if (!buf) return 1;
    float *gc = buf, *pw = buf + T * E, *pb = pw + K * E;  /* gc: [T][E] of one batch item */
    memset(gw, 0, sizeof(float) * (size_t)(K * E));
    memset(gb, 0, sizeof(float) * (size_t)E);
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * sxb, *gyb = gy + b * T * E;
        for (int64_t t = 0; t < T; t++) {  /* gc = d out / d c * gy */
            float *restrict g = gc + t * E;
            const float *restrict gr = gyb + t * E;
            if (act) {  /* d silu(c) / dc = s (1 + c (1 - s)), s = sigmoid(c); exp and division apart (silu_row) */
                conv_row(T, E, K, xb, sxt, w, bias, t, g);
#pragma omp simd
                for (int64_t e = 0; e < E; e++) pb[e] = 1.0f + vexp(-g[e]);  /* pb: scratch until zeroed below */
#pragma omp simd
                for (int64_t e = 0; e < E; e++) {
                    const float c = g[e], sg = 1.0f / pb[e];
                    g[e] = gr[e] * sg * (1.0f + c * (1.0f - sg));
                }
            } else {
                memcpy(g, gr, sizeof(float) * (size_t)E);
            }
        }
        memset(pw, 0, sizeof(float) * (size_t)((K + 1) * E));
        for (int64_t t = 0; t < T; t++) {
            const float *restrict g = gc + t * E;
#pragma omp simd
            for (int64_t e = 0; e < E; e++) pb[e] += g[e];
            for (int64_t k = 0; k < K; k++) {
                const int64_t src = t - (K - 1) + k;
                if (src < 0) continue;
                const float *restrict xr = xb + src * sxt;
                float *restrict p = pw + k * E;
#pragma omp simd
                for (int64_t e = 0; e < E; e++) p[e] += g[e] * xr[e];
            }
        }
        for (int64_t i = 0; i < K * E; i++) gw[i] += pw[i];
        for (int64_t e = 0; e < E; e++) gb[e] += pb[e];
        for (int64_t s = 0; s < T; s++) {  /* gx[s] = sum_k w[k] * gc[s + K - 1 - k] */
            float *restrict o = gx + (b * T + s) * E;
            memset(o, 0, sizeof(float) * (size_t)E);
            for (int64_t k = 0; k < K; k++) {
                const int64_t t = s + (K - 1) - k;
                if (t >= T) continue;
                const float *restrict g = gc + t * E;
                const float *restrict wk = w + k * E;
#pragma omp simd
                for (int64_t e = 0; e < E; e++) o[e] += wk[e] * g[e];
            }
        }
    }
    free(buf);
    return 0;
}
