/* Native CPU selective scan (Mamba-1), float32: forward and backward.
 *
 * Compiled on first use by sosm.kernels.selective_scan.native_cpu (system C compiler, -O3,
 * -fopenmp-simd for the two reductions; no OpenMP runtime) and loaded with ctypes.
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
 *   last, glast: [B][D][N] (either may be NULL); gout is never NULL; z, gz NULL when there is no gate
 *   out, gu, gdt, gz: [B][L][D] contiguous
 *   ckpt: [B][nck][N][D], nck = ceil(L / tc): the state after each chunk of tc steps, written
 *         by the forward (when not NULL) and read by the backward, which recomputes each chunk's
 *         decays and states from the previous chunk's end state (the same operations in the same
 *         order, so the same numbers) into a cache-sized buffer and walks it back in time.
 *
 * Work is tiled over (b, block of up to BLOCK channels inside one group); a tile's state
 * [N][BLOCK] stays in L1 and every inner loop runs over the block's contiguous channels, so the
 * compiler vectorises it. exp and log are branch-free polynomial versions (Cephes' expf/logf
 * coefficients, ~1-2 ulp) so those loops vectorise too; the exponent is clamped to
 * [-87, 88] (exp(-87) = 1.6e-38, the floor of the vectorised PyTorch path: below it exp()
 * lands on subnormals).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SOSM_SCAN_ABI 1
#define BLOCK 64

int sosm_scan_abi(void) { return SOSM_SCAN_ABI; }
int sosm_scan_block(void) { return BLOCK; }

static inline float from_bits(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline int32_t to_bits(float f) { int32_t i; memcpy(&i, &f, sizeof i); return i; }

/* exp(x), x clamped to [-87, 88]: Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, then a
 * degree-7 polynomial for e^r and 2^n from the exponent bits. */
static inline float vexp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + 12582912.0f;  /* + 1.5 * 2^23: round to nearest */
    float n = t - 12582912.0f;
    int32_t ni = to_bits(t) - 0x4B400000;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * from_bits((ni + 127) << 23);
}

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

static inline float vsigmoid(float x) { return 1.0f / (1.0f + vexp(-x)); }

/* PyTorch's softplus (beta 1, threshold 20); log1p(e) as log(w) * e / (w - 1), w = 1 + e. */
static inline float vsoftplus(float x) {
    float e = vexp(x);
    float w = 1.0f + e, wm1 = w - 1.0f;
    int tiny = wm1 == 0.0f;                 /* computed unconditionally, then selected: vectorises */
    float q = vlog(w) * (e / (tiny ? 1.0f : wm1));
    float lp = tiny ? e : q;
    return x > 20.0f ? x : lp;
}

/* delta and delta * u for one time step of a tile. */
static inline void step_delta(int64_t wd, const float *restrict dt, const float *restrict u,
                              const float *restrict bias, int softplus,
                              float *restrict dl, float *restrict du) {
    if (softplus)
        for (int64_t d = 0; d < wd; d++) {
            float v = vsoftplus(dt[d] + bias[d]);
            dl[d] = v;
            du[d] = v * u[d];
        }
    else
        for (int64_t d = 0; d < wd; d++) {
            float v = dt[d] + bias[d];
            dl[d] = v;
            du[d] = v * u[d];
        }
}

/* One recurrence step of a tile: h <- exp(dl A) h + du B_t (decays into da when not NULL),
 * y = C_t . h. hp is the previous state, h the new one (may alias for the forward). */
static inline void step_state(int64_t N, int64_t wd, int64_t D, const float *restrict dl,
                              const float *restrict du, const float *A, const float *Bt,
                              const float *Ct, const float *hp, float *h, float *da,
                              float *restrict y) {
    for (int64_t d = 0; d < wd; d++) y[d] = 0.0f;
    for (int64_t n = 0; n < N; n++) {
        const float *restrict an = A + n * D;
        const float *hpn = hp + n * BLOCK;
        float *hn = h + n * BLOCK;
        const float bn = Bt[n], cn = Ct[n];
        if (da) {
            float *restrict dan = da + n * BLOCK;
            for (int64_t d = 0; d < wd; d++) {
                float a = vexp(dl[d] * an[d]);
                float v = a * hpn[d] + du[d] * bn;
                dan[d] = a;
                hn[d] = v;
                y[d] += cn * v;
            }
        } else {
            for (int64_t d = 0; d < wd; d++) {
                float v = vexp(dl[d] * an[d]) * hpn[d] + du[d] * bn;
                hn[d] = v;
                y[d] += cn * v;
            }
        }
    }
}

int sosm_scan_fwd_f32(int64_t nb, int64_t L, int64_t D, int64_t N, int64_t G, int64_t tc,
                      const float *u, int64_t u_sb, int64_t u_sl,
                      const float *dt, int64_t dt_sb, int64_t dt_sl,
                      const float *z, int64_t z_sb, int64_t z_sl,
                      const float *A, const float *Bm, const float *Cm,
                      const float *Dv, const float *bias, int softplus,
                      float *out, float *last, float *ckpt) {
    const int64_t H = D / G, nck = (L + tc - 1) / tc;
    float *buf = malloc(sizeof(float) * (size_t)(N * BLOCK + 3 * BLOCK));
    if (!buf) return -1;
    float *h = buf, *dl = h + N * BLOCK, *du = dl + BLOCK, *y = du + BLOCK;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t g = 0; g < G; g++)
            for (int64_t d0 = g * H; d0 < (g + 1) * H; d0 += BLOCK) {
                const int64_t wd = (g + 1) * H - d0 < BLOCK ? (g + 1) * H - d0 : BLOCK;
                memset(h, 0, sizeof(float) * (size_t)(N * BLOCK));
                for (int64_t t = 0; t < L; t++) {
                    const float *ut = u + b * u_sb + t * u_sl + d0;
                    step_delta(wd, dt + b * dt_sb + t * dt_sl + d0, ut, bias + d0, softplus, dl, du);
                    const int64_t bc = ((b * L + t) * G + g) * N;
                    step_state(N, wd, D, dl, du, A + d0, Bm + bc, Cm + bc, h, h, NULL, y);
                    float *restrict o = out + (b * L + t) * D + d0;
                    const float *restrict zt = z ? z + b * z_sb + t * z_sl + d0 : NULL;
                    const float *restrict Dd = Dv + d0;
                    if (zt)
                        for (int64_t d = 0; d < wd; d++)
                            o[d] = (y[d] + Dd[d] * ut[d]) * (zt[d] * vsigmoid(zt[d]));
                    else
                        for (int64_t d = 0; d < wd; d++)
                            o[d] = y[d] + Dd[d] * ut[d];
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
                      const float *dt, int64_t dt_sb, int64_t dt_sl,
                      const float *z, int64_t z_sb, int64_t z_sl,
                      const float *A, const float *Bm, const float *Cm,
                      const float *Dv, const float *bias, int softplus, const float *ckpt,
                      const float *gout, int64_t go_sb, int64_t go_sl, const float *glast,
                      float *gu, float *gdt, float *gz, float *gA, float *gB, float *gC,
                      float *gD, float *gbias) {
    const int64_t H = D / G, nck = (L + tc - 1) / tc, sN = N * BLOCK;
    /* chunk buffers: states and decays [tc][N][BLOCK]; delta, delta * u, y [tc][BLOCK];
     * the state before the chunk and the carried state gradient [N][BLOCK]; per-step [BLOCK] rows */
    float *buf = malloc(sizeof(float) * (size_t)(2 * tc * sN + 3 * tc * BLOCK + 2 * sN + 3 * BLOCK));
    if (!buf) return -1;
    float *hs = buf, *das = hs + tc * sN, *dls = das + tc * sN, *dus = dls + tc * BLOCK;
    float *ys = dus + tc * BLOCK, *h0 = ys + tc * BLOCK, *carry = h0 + sN;
    float *gy = carry + sN, *gdu = gy + BLOCK, *gdl = gdu + BLOCK;
    memset(gA, 0, sizeof(float) * (size_t)(N * D));
    memset(gB, 0, sizeof(float) * (size_t)(nb * L * G * N));
    memset(gC, 0, sizeof(float) * (size_t)(nb * L * G * N));
    memset(gD, 0, sizeof(float) * (size_t)D);
    memset(gbias, 0, sizeof(float) * (size_t)D);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t g = 0; g < G; g++)
            for (int64_t d0 = g * H; d0 < (g + 1) * H; d0 += BLOCK) {
                const int64_t wd = (g + 1) * H - d0 < BLOCK ? (g + 1) * H - d0 : BLOCK;
                /* carry = d loss / d h_t from the steps after t, times exp(delta_{t+1} A) */
                for (int64_t n = 0; n < N; n++)
                    for (int64_t d = 0; d < wd; d++)
                        carry[n * BLOCK + d] = glast ? glast[(b * D + d0 + d) * N + n] : 0.0f;
                for (int64_t k = nck - 1; k >= 0; k--) {
                    const int64_t t0 = k * tc, c = (t0 + tc < L ? t0 + tc : L) - t0;
                    if (k == 0) {
                        memset(h0, 0, sizeof(float) * (size_t)sN);
                    } else {
                        const float *cp = ckpt + (b * nck + k - 1) * N * D + d0;
                        for (int64_t n = 0; n < N; n++)
                            memcpy(h0 + n * BLOCK, cp + n * D, sizeof(float) * (size_t)wd);
                    }
                    for (int64_t i = 0; i < c; i++) {  /* recompute the chunk's states and decays */
                        const int64_t t = t0 + i, bc = ((b * L + t) * G + g) * N;
                        step_delta(wd, dt + b * dt_sb + t * dt_sl + d0, u + b * u_sb + t * u_sl + d0,
                                   bias + d0, softplus, dls + i * BLOCK, dus + i * BLOCK);
                        step_state(N, wd, D, dls + i * BLOCK, dus + i * BLOCK, A + d0, Bm + bc, Cm + bc,
                                   i ? hs + (i - 1) * sN : h0, hs + i * sN, das + i * sN, ys + i * BLOCK);
                    }
                    for (int64_t i = c - 1; i >= 0; i--) {  /* walk the chunk back in time */
                        const int64_t t = t0 + i, bc = ((b * L + t) * G + g) * N, row = (b * L + t) * D + d0;
                        const float *restrict ut = u + b * u_sb + t * u_sl + d0;
                        const float *restrict zt = z ? z + b * z_sb + t * z_sl + d0 : NULL;
                        const float *restrict got = gout + b * go_sb + t * go_sl + d0;
                        const float *restrict yt = ys + i * BLOCK;
                        const float *restrict dl = dls + i * BLOCK, *restrict du = dus + i * BLOCK;
                        const float *restrict Dd = Dv + d0;
                        float *restrict gDd = gD + d0, *restrict gzt = gz ? gz + row : NULL;
                        if (zt)
                            for (int64_t d = 0; d < wd; d++) {
                                float go = got[d], zz = zt[d], s = vsigmoid(zz);
                                gzt[d] = go * (yt[d] + Dd[d] * ut[d]) * s * (1.0f + zz * (1.0f - s));
                                gy[d] = go * zz * s;
                            }
                        else
                            for (int64_t d = 0; d < wd; d++) gy[d] = got[d];
                        for (int64_t d = 0; d < wd; d++) {
                            gdu[d] = 0.0f;
                            gdl[d] = 0.0f;
                            gDd[d] += gy[d] * ut[d];
                        }
                        const float *hcur = hs + i * sN, *hprev = i ? hs + (i - 1) * sN : h0;
                        const float *dacur = das + i * sN;
                        for (int64_t n = 0; n < N; n++) {
                            const float *restrict hn = hcur + n * BLOCK, *restrict hpn = hprev + n * BLOCK;
                            const float *restrict an = dacur + n * BLOCK, *restrict An = A + n * D + d0;
                            float *restrict cn_ = carry + n * BLOCK, *restrict gAn = gA + n * D + d0;
                            const float bn = Bm[bc + n], cn = Cm[bc + n];
                            float sc = 0.0f, sb = 0.0f;
#pragma omp simd reduction(+ : sc, sb)
                            for (int64_t d = 0; d < wd; d++) {
                                float gh = gy[d] * cn + cn_[d];       /* d loss / d h_t */
                                float a = an[d];
                                float gx = gh * a * hpn[d];            /* d loss / d (delta_t A) */
                                sc += gy[d] * hn[d];
                                sb += gh * du[d];
                                gdu[d] += gh * bn;
                                gdl[d] += gx * An[d];
                                gAn[d] += gx * dl[d];
                                cn_[d] = gh * a;
                            }
                            gC[bc + n] += sc;
                            gB[bc + n] += sb;
                        }
                        const float *restrict dtt = dt + b * dt_sb + t * dt_sl + d0, *restrict bd = bias + d0;
                        float *restrict gut = gu + row, *restrict gdtt = gdt + row, *restrict gbd = gbias + d0;
                        for (int64_t d = 0; d < wd; d++) {
                            gut[d] = gdu[d] * dl[d] + gy[d] * Dd[d];
                            gdl[d] += gdu[d] * ut[d];
                        }
                        if (softplus)
                            for (int64_t d = 0; d < wd; d++) {
                                float x = dtt[d] + bd[d];
                                gdl[d] *= x > 20.0f ? 1.0f : vsigmoid(x);
                            }
                        for (int64_t d = 0; d < wd; d++) {
                            gdtt[d] = gdl[d];
                            gbd[d] += gdl[d];
                        }
                    }
                }
            }
    free(buf);
    return 0;
}
