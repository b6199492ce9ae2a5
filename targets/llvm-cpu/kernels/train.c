/*
 * Backward-pass and optimizer kernels of LoRA training (contracts in
 * train.h). Compiled to bitcode like dispatch.c (AVX-512, AVX2, plain C).
 * No libm: sqrt via __builtin_sqrtf/__builtin_sqrt (instructions with
 * -fno-math-errno), exp and log are written here.
 *
 * Every item's arithmetic depends only on its index (fixed token blocks,
 * fixed column units, fixed summation orders), never on [begin, end), so a
 * thread pool may split the items anyhow and get the same bits.
 */
#include "mathf.h"
#include "simd.h"
#include "ternary.h"
#include "tlc/train_abi.h"

#include <stdint.h>

/* The x86 builds keep a few hand-tiled paths of their own (ternary decode,
 * attention dots); everything else is written against simd.h's float
 * vectors (TR_L lanes), so NEON builds take the same vector paths. */
#if defined(TLC_ISA_AVX512)
#define TR_AVX512 1
#elif defined(TLC_ISA_AVX2)
#define TR_AVX2 1
#endif
#if defined(TLC_VF_LANES)
#define TR_L TLC_VF_LANES
#endif

/* -ffreestanding turns off the memcpy builtin: name it explicitly. */
#define tr_memcpy __builtin_memcpy

TLC_AI int64_t tr_min(int64_t a, int64_t b) { return a < b ? a : b; }

static inline float tr_bf16_to_f32(uint16_t v) {
  uint32_t u = (uint32_t)v << 16;
  float f;
  tr_memcpy(&f, &u, sizeof f);
  return f;
}
#define TR_LOAD_F32(v) (v)


/* Natural log in double, ~1 ulp: x = 2^e m, m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(f), f = (m-1)/(m+1), |f| < 0.172, series to f^25. */
static double tr_log(double x) {
  if (!(x > 0.0))
    return x == 0.0 ? -__builtin_inf() : __builtin_nan("");
  if (x == __builtin_inf())
    return x;
  uint64_t u;
  tr_memcpy(&u, &x, 8);
  int64_t e = 0;
  if ((u >> 52) == 0) { /* subnormal */
    x *= 0x1p54;
    tr_memcpy(&u, &x, 8);
    e = -54;
  }
  e += (int64_t)(u >> 52) - 1023;
  u = (u & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
  double m;
  tr_memcpy(&m, &u, 8);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e += 1;
  }
  double f = (m - 1.0) / (m + 1.0), f2 = f * f;
  double p = 1.0 / 25;
  for (int n = 11; n >= 0; --n)
    p = p * f2 + 1.0 / (2 * n + 1);
  const double ln2_hi = 6.93147180369123816490e-01; /* 32 bits, e*hi exact */
  const double ln2_lo = 1.90821492927058770002e-10;
  return (double)e * ln2_hi + ((double)e * ln2_lo + 2.0 * f * p);
}

/* ------------------------------------------------------------------------ */
/* RMSNorm backward: sums in double.                                        */
/* ------------------------------------------------------------------------ */

#define TR_DEFINE_RMS_GRAD(NAME, WTYPE, LOAD)                                  \
  void NAME(const float *x, const WTYPE *w, const float *dy, float *dx,        \
            int64_t D, float eps, int64_t begin, int64_t end) {                \
    _Pragma("clang fp reassociate(on)");                                       \
    for (int64_t t = begin; t < end; ++t) {                                    \
      const float *xt = x + t * D, *dyt = dy + t * D;                          \
      float *dxt = dx + t * D;                                                 \
      double ss = 0.0, sd = 0.0;                                               \
      for (int64_t d = 0; d < D; ++d) {                                        \
        ss += (double)xt[d] * xt[d];                                           \
        sd += (double)(LOAD(w[d]) * dyt[d]) * xt[d];                           \
      }                                                                        \
      float r = 1.0f / __builtin_sqrtf((float)(ss / (double)D) + eps);         \
      float c = (float)((double)r * r * r * sd / (double)D);                   \
      for (int64_t d = 0; d < D; ++d)                                          \
        dxt[d] = r * (LOAD(w[d]) * dyt[d]) - xt[d] * c;                        \
    }                                                                          \
  }

TR_DEFINE_RMS_GRAD(tlc_k_rms_norm_grad_f32, float, TR_LOAD_F32)
TR_DEFINE_RMS_GRAD(tlc_k_rms_norm_grad_bf16, uint16_t, tr_bf16_to_f32)

/* ------------------------------------------------------------------------ */
/* Ternary backward product dx = gamma * dy W.                              */
/* Per 64-column unit and slab of TMT_NB rows n: decode gamma*W[n][k] to a  */
/* float slab [nb][64] (row n of a chunk = one 32-bit word, lane k = 4j+s   */
/* takes bits 8s+2j), then FMA tiles of tokens x 64 columns over n; the     */
/* accumulators go through dx between slabs (exact: float either way).      */
/* ------------------------------------------------------------------------ */

#define TMT_UNIT 64
#define TMT_NB 64

static void tmt_decode(const uint8_t *codes, int64_t K, int64_t n0,
                       int64_t nb, int64_t b0, int64_t kb, float gamma,
                       float *slab) {
#if defined(TR_AVX512)
  const __m512i sh = _mm512_setr_epi32(0, 8, 16, 24, 2, 10, 18, 26, 4, 12, 20,
                                       28, 6, 14, 22, 30);
  const __m512 tab = _mm512_setr_ps(-gamma, 0.0f, gamma, 0.0f, -gamma, 0.0f,
                                    gamma, 0.0f, -gamma, 0.0f, gamma, 0.0f,
                                    -gamma, 0.0f, gamma, 0.0f);
  for (int64_t i = 0; i < nb; ++i) {
    int64_t n = n0 + i;
    const uint8_t *row = codes + ((n >> 4) * (K >> 4) + b0) * 64 + 4 * (n & 15);
    for (int64_t b = 0; b < 4; ++b) {
      __m512 v = _mm512_setzero_ps();
      if (b < kb) {
        int32_t word;
        tr_memcpy(&word, row + 64 * b, 4);
        __m512i idx = _mm512_srlv_epi32(_mm512_set1_epi32(word), sh);
        v = _mm512_permutexvar_ps(idx, tab);
      }
      _mm512_store_ps(slab + i * TMT_UNIT + 16 * b, v);
    }
  }
#elif defined(TR_AVX2)
  const __m256i sh0 = _mm256_setr_epi32(0, 8, 16, 24, 2, 10, 18, 26);
  const __m256i sh1 = _mm256_setr_epi32(4, 12, 20, 28, 6, 14, 22, 30);
  const __m256 tab = _mm256_setr_ps(-gamma, 0.0f, gamma, 0.0f, -gamma, 0.0f,
                                    gamma, 0.0f);
  for (int64_t i = 0; i < nb; ++i) {
    int64_t n = n0 + i;
    const uint8_t *row = codes + ((n >> 4) * (K >> 4) + b0) * 64 + 4 * (n & 15);
    for (int64_t b = 0; b < kb; ++b) {
      int32_t word;
      tr_memcpy(&word, row + 64 * b, 4);
      __m256i wv = _mm256_set1_epi32(word);
      float *dst = slab + i * TMT_UNIT + 16 * b;
      __m256i i0 = _mm256_srlv_epi32(wv, sh0), i1 = _mm256_srlv_epi32(wv, sh1);
      _mm256_store_ps(dst, _mm256_permutevar8x32_ps(tab, i0));
      _mm256_store_ps(dst + 8, _mm256_permutevar8x32_ps(tab, i1));
    }
  }
#else
  for (int64_t i = 0; i < nb; ++i) {
    int64_t n = n0 + i;
    const uint8_t *row = codes + ((n >> 4) * (K >> 4) + b0) * 64 + 4 * (n & 15);
    for (int64_t b = 0; b < kb; ++b)
      for (int kk = 0; kk < 16; ++kk) {
        int c = (row[64 * b + (kk & 3)] >> (2 * (kk >> 2))) & 3;
        float v = c == 0 ? -gamma : c == 2 ? gamma : 0.0f;
        slab[i * TMT_UNIT + 16 * b + kk] = v;
      }
  }
#endif
}

#if defined(TR_AVX512)
/* nt tokens x nv vectors of 16 columns, fma over the slab's rows. */
TLC_AI void tmt_tile(const float *slab, int64_t nb, const float *dy, int64_t N,
                    float *dx, int64_t K, int nt, int nv, int first) {
  __m512 acc[6][4];
  for (int i = 0; i < nt; ++i)
    for (int v = 0; v < nv; ++v)
      acc[i][v] = first ? _mm512_setzero_ps()
                        : _mm512_loadu_ps(dx + i * K + 16 * v);
  for (int64_t n = 0; n < nb; ++n) {
    __m512 wv[4];
    for (int v = 0; v < nv; ++v)
      wv[v] = _mm512_load_ps(slab + n * TMT_UNIT + 16 * v);
    for (int i = 0; i < nt; ++i) {
      __m512 d = _mm512_set1_ps(dy[i * N + n]);
      for (int v = 0; v < nv; ++v)
        acc[i][v] = _mm512_fmadd_ps(d, wv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < nt; ++i)
    for (int v = 0; v < nv; ++v)
      _mm512_storeu_ps(dx + i * K + 16 * v, acc[i][v]);
}
#define TMT_TB 6

TLC_AI void tmt_tokens(const float *slab, int64_t nb, const float *dy,
                      int64_t N, float *dx, int64_t K, int64_t T, int nv,
                      int first) {
  int64_t t = 0;
  for (; t + TMT_TB <= T; t += TMT_TB)
    tmt_tile(slab, nb, dy + t * N, N, dx + t * K, K, TMT_TB, nv, first);
  for (; t < T; ++t)
    tmt_tile(slab, nb, dy + t * N, N, dx + t * K, K, 1, nv, first);
}

static void tmt_slab(const float *slab, int64_t nb, const float *dy, int64_t N,
                     float *dx, int64_t K, int64_t T, int64_t kb, int first) {
  switch (kb) {
  case 4: tmt_tokens(slab, nb, dy, N, dx, K, T, 4, first); break;
  case 3: tmt_tokens(slab, nb, dy, N, dx, K, T, 3, first); break;
  case 2: tmt_tokens(slab, nb, dy, N, dx, K, T, 2, first); break;
  default: tmt_tokens(slab, nb, dy, N, dx, K, T, 1, first); break;
  }
}
#elif defined(TR_L)
/* nt tokens x one 16-column block (16 / TR_L vectors). */
#define TMT_NV (16 / TR_L)
TLC_AI void tmt_tile(const float *slab, int64_t nb, const float *dy, int64_t N,
                    float *dx, int64_t K, int nt, int first) {
  tlc_vf acc[6][TMT_NV];
  for (int i = 0; i < nt; ++i)
    for (int v = 0; v < TMT_NV; ++v)
      acc[i][v] = first ? tlc_vf_zero() : tlc_vf_load(dx + i * K + TR_L * v);
  for (int64_t n = 0; n < nb; ++n) {
    tlc_vf w[TMT_NV];
    for (int v = 0; v < TMT_NV; ++v)
      w[v] = tlc_vf_load(slab + n * TMT_UNIT + TR_L * v);
    for (int i = 0; i < nt; ++i) {
      tlc_vf d = tlc_vf_set1(dy[i * N + n]);
      for (int v = 0; v < TMT_NV; ++v)
        acc[i][v] = tlc_vf_fma(d, w[v], acc[i][v]);
    }
  }
  for (int i = 0; i < nt; ++i)
    for (int v = 0; v < TMT_NV; ++v)
      tlc_vf_store(dx + i * K + TR_L * v, acc[i][v]);
}
#define TMT_TB 6

static void tmt_slab(const float *slab, int64_t nb, const float *dy, int64_t N,
                     float *dx, int64_t K, int64_t T, int64_t kb, int first) {
  for (int64_t b = 0; b < kb; ++b) {
    const float *s = slab + 16 * b;
    int64_t t = 0;
    for (; t + TMT_TB <= T; t += TMT_TB)
      tmt_tile(s, nb, dy + t * N, N, dx + t * K + 16 * b, K, TMT_TB, first);
    for (; t < T; ++t)
      tmt_tile(s, nb, dy + t * N, N, dx + t * K + 16 * b, K, 1, first);
  }
}
#else
static void tmt_slab(const float *slab, int64_t nb, const float *dy, int64_t N,
                     float *dx, int64_t K, int64_t T, int64_t kb, int first) {
  int64_t kw = 16 * kb;
  for (int64_t t = 0; t < T; ++t) {
    float *d = dx + t * K;
    if (first)
      for (int64_t k = 0; k < kw; ++k)
        d[k] = 0.0f;
    for (int64_t n = 0; n < nb; ++n) {
      float a = dy[t * N + n];
      const float *s = slab + n * TMT_UNIT;
      for (int64_t k = 0; k < kw; ++k)
        d[k] = a * s[k] + d[k];
    }
  }
}
#endif

void tlc_k_ternary_matmul_t(const float *dy, const uint8_t *w, float *dx,
                            int64_t T, int64_t K, int64_t N, int64_t begin,
                            int64_t end) {
  float gamma;
  tr_memcpy(&gamma, w, sizeof gamma);
  const uint8_t *codes = w + 64;
  _Alignas(64) float slab[TMT_NB * TMT_UNIT];
  for (int64_t u = begin; u < end; ++u) {
    int64_t k0 = u * TMT_UNIT, kb = (tr_min(k0 + TMT_UNIT, K) - k0) / 16;
    if (kb <= 0)
      continue;
    for (int64_t n0 = 0; n0 < N; n0 += TMT_NB) {
      int64_t nb = tr_min(TMT_NB, N - n0);
      tmt_decode(codes, K, n0, nb, k0 / 16, kb, gamma, slab);
      tmt_slab(slab, nb, dy + n0, N, dx + k0, K, T, kb, n0 == 0);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* LoRA backward.                                                           */
/* ------------------------------------------------------------------------ */

void tlc_k_lora_grad_rows(const float *x, const float *A, const float *B,
                          const float *dy, float *ud, float *dx, int64_t K,
                          int64_t N, int64_t R, float scale, int64_t begin,
                          int64_t end) {
#pragma clang fp reassociate(on)
  float du[R];
  for (int64_t t = begin; t < end; ++t) {
    const float *xt = x + t * K, *dyt = dy + t * N;
    float *udt = ud + t * 2 * R, *dxt = dx + t * K;
    for (int64_t r = 0; r < R; ++r) {
      const float *a = A + r * K;
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k)
        s += xt[k] * a[k];
      udt[r] = s;
    }
    for (int64_t r = 0; r < R; ++r)
      du[r] = 0.0f;
    for (int64_t n = 0; n < N; ++n) {
      float d = dyt[n];
      const float *b = B + n * R;
      for (int64_t r = 0; r < R; ++r)
        du[r] += d * b[r];
    }
    for (int64_t r = 0; r < R; ++r)
      udt[R + r] = du[r] = du[r] * scale;
    for (int64_t k = 0; k < K; ++k)
      dxt[k] = 0.0f;
    for (int64_t r = 0; r < R; ++r) {
      const float *a = A + r * K;
      float c = du[r];
      for (int64_t k = 0; k < K; ++k)
        dxt[k] += c * a[k];
    }
  }
}

void tlc_k_lora_grad_weights(const float *x, const float *dy, const float *ud,
                             float *dA, float *dB, int64_t T, int64_t K,
                             int64_t N, int64_t R, float scale, int64_t begin,
                             int64_t end) {
  int64_t UA = (K + 63) / 64;
  for (int64_t w = begin; w < end; ++w) {
    if (w < UA) { /* dA[r][k0, k1) */
      int64_t k0 = 64 * w, kw = tr_min(k0 + 64, K) - k0;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < kw; ++k)
          dA[r * K + k0 + k] = 0.0f;
      for (int64_t t = 0; t < T; ++t) {
        const float *du = ud + t * 2 * R + R, *xt = x + t * K + k0;
        for (int64_t r = 0; r < R; ++r) {
          float c = du[r], *da = dA + r * K + k0;
          for (int64_t k = 0; k < kw; ++k)
            da[k] += c * xt[k];
        }
      }
    } else { /* dB[n0, n1)[r], 16 r at a time through a [r][n] tile */
      int64_t n0 = 64 * (w - UA), nw = tr_min(n0 + 64, N) - n0;
      if (nw <= 0)
        continue;
      float acc[16][64];
      for (int64_t r0 = 0; r0 < R; r0 += 16) {
        int64_t rc = tr_min(16, R - r0);
        for (int64_t r = 0; r < rc; ++r)
          for (int64_t n = 0; n < 64; ++n)
            acc[r][n] = 0.0f;
        for (int64_t t = 0; t < T; ++t) {
          const float *u = ud + t * 2 * R + r0, *dyt = dy + t * N + n0;
          for (int64_t r = 0; r < rc; ++r) {
            float c = u[r];
            for (int64_t n = 0; n < nw; ++n)
              acc[r][n] += c * dyt[n];
          }
        }
        for (int64_t n = 0; n < nw; ++n)
          for (int64_t r = 0; r < rc; ++r)
            dB[(n0 + n) * R + r0 + r] = acc[r][n] * scale;
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* relu(g)^2 * u backward.                                                  */
/* ------------------------------------------------------------------------ */

void tlc_k_squared_relu_mul_grad(const float *g, const float *u,
                                 const float *dm, float *dg, float *du,
                                 int64_t D, int64_t begin, int64_t end) {
  for (int64_t i = begin * D; i < end * D; ++i) {
    float r = g[i] > 0.0f ? g[i] : 0.0f;
    dg[i] = dm[i] * u[i] * (2.0f * r);
    du[i] = dm[i] * (r * r);
  }
}

/* ------------------------------------------------------------------------ */
/* Causal attention over packed sequences, forward (with lse) and backward. */
/* ------------------------------------------------------------------------ */

static inline float tr_dot(const float *a, const float *b, int64_t n) {
#pragma clang fp reassociate(on)
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

void tlc_k_causal_attention(const float *q, const float *k, const float *v,
                            float *o, float *lse, int64_t H, int64_t KVH,
                            int64_t HD, int64_t S, float scale, int64_t begin,
                            int64_t end) {
#pragma clang fp reassociate(on)
  int64_t G = H / KVH, DQ = H * HD, DKV = KVH * HD;
  for (int64_t w = begin; w < end; ++w) {
    int64_t t = w / KVH, g = w % KVH, j0 = t / S * S, len = t - j0 + 1;
    float scores[G][len];
    float acc[G][HD];
    const float *qg = q + t * DQ + g * G * HD;
    for (int64_t j = 0; j < len; ++j) {
      const float *kj = k + (j0 + j) * DKV + g * HD;
      for (int64_t h = 0; h < G; ++h)
        scores[h][j] = tr_dot(qg + h * HD, kj, HD) * scale;
    }
    float sum[G];
    for (int64_t h = 0; h < G; ++h) {
      float *row = scores[h];
      float m = row[0];
      for (int64_t j = 1; j < len; ++j)
        m = row[j] > m ? row[j] : m;
      for (int64_t j = 0; j < len; ++j)
        row[j] = tlc_expf(row[j] - m);
      float s = 0.0f;
      for (int64_t j = 0; j < len; ++j)
        s += row[j];
      sum[h] = s;
      lse[t * H + g * G + h] = (float)((double)m + tr_log((double)s));
      for (int64_t d = 0; d < HD; ++d)
        acc[h][d] = 0.0f;
    }
    for (int64_t j = 0; j < len; ++j) {
      const float *vj = v + (j0 + j) * DKV + g * HD;
      for (int64_t h = 0; h < G; ++h) {
        float p = scores[h][j];
        for (int64_t d = 0; d < HD; ++d)
          acc[h][d] += p * vj[d];
      }
    }
    for (int64_t h = 0; h < G; ++h) {
      float *oh = o + t * DQ + (g * G + h) * HD;
      for (int64_t d = 0; d < HD; ++d)
        oh[d] = acc[h][d] / sum[h];
    }
  }
}

#if defined(TR_AVX512)
/* out[h][j] = a[h] . bt[:, j] for h < G, j < n (rounded up to 64): dot
 * products against a transposed block (bt: HD rows of LD >= n + 64 floats,
 * zero past the keys), 4 heads x 64 keys per register tile, summed over d in
 * order: no horizontal sums. Rows h >= G of a tile repeat the last head. */
static void attn_dots_t(const float *a, const float *bt, int64_t LD,
                        int64_t HD, int64_t G, int64_t n, float *out,
                        int64_t ldo) {
  for (int64_t h0 = 0; h0 < G; h0 += 4)
    for (int64_t j = 0; j < n; j += 64) {
      const float *ah[4];
      for (int i = 0; i < 4; ++i)
        ah[i] = a + tr_min(h0 + i, G - 1) * HD;
      __m512 acc[4][4];
      for (int i = 0; i < 4; ++i)
        for (int v = 0; v < 4; ++v)
          acc[i][v] = _mm512_setzero_ps();
      for (int64_t d = 0; d < HD; ++d) {
        const float *row = bt + d * LD + j;
        __m512 b0 = _mm512_loadu_ps(row), b1 = _mm512_loadu_ps(row + 16),
               b2 = _mm512_loadu_ps(row + 32), b3 = _mm512_loadu_ps(row + 48);
        for (int i = 0; i < 4; ++i) {
          __m512 x = _mm512_set1_ps(ah[i][d]);
          acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
          acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
          acc[i][2] = _mm512_fmadd_ps(x, b2, acc[i][2]);
          acc[i][3] = _mm512_fmadd_ps(x, b3, acc[i][3]);
        }
      }
      for (int i = 0; i < 4 && h0 + i < G; ++i)
        for (int v = 0; v < 4; ++v)
          _mm512_storeu_ps(out + (h0 + i) * ldo + j + 16 * v, acc[i][v]);
    }
}
#endif

void tlc_k_causal_attention_grad(const float *q, const float *k,
                                 const float *v, const float *o,
                                 const float *lse, const float *dout,
                                 float *dq, float *dk, float *dv, int64_t H,
                                 int64_t KVH, int64_t HD, int64_t S,
                                 float scale, int64_t begin, int64_t end) {
#pragma clang fp reassociate(on)
  int64_t G = H / KVH, DQ = H * HD, DKV = KVH * HD;
  for (int64_t w = begin; w < end; ++w) {
    int64_t b = w / KVH, g = w % KVH, j0 = b * S;
    for (int64_t j = 0; j < S; ++j)
      for (int64_t d = 0; d < HD; ++d) {
        dk[(j0 + j) * DKV + g * HD + d] = 0.0f;
        dv[(j0 + j) * DKV + g * HD + d] = 0.0f;
      }
    /* Per query i, all G heads at once: each k_j / v_j / dk_j / dv_j row is
     * loaded once for the group. */
#if defined(TR_AVX512)
    /* Scores and dP against K and V transposed once per item. */
    int64_t LD = (S + 15) / 16 * 16 + 64;
    float p[G][LD], ds[G][LD], acc[G][HD], Di[G], l[G];
    float *kt = 0, *vt = 0;
    float tbuf[S * HD <= (1 << 17) ? 2 * HD * LD : 1];
    if (S * HD <= (1 << 17)) { /* 2 x 512 KiB at most, on the stack */
      kt = tbuf, vt = tbuf + HD * LD;
      for (int64_t d = 0; d < HD; ++d)
        for (int64_t j = 0; j < LD; ++j) {
          int in = j < S;
          kt[d * LD + j] = in ? k[(j0 + j) * DKV + g * HD + d] : 0.0f;
          vt[d * LD + j] = in ? v[(j0 + j) * DKV + g * HD + d] : 0.0f;
        }
    }
#else
    float p[G][S], ds[G][S], acc[G][HD], Di[G], l[G];
#endif
    for (int64_t i = 0; i < S; ++i) {
      int64_t ti = j0 + i;
      const float *qi = q + ti * DQ + g * G * HD;
      const float *oi = o + ti * DQ + g * G * HD;
      const float *doi = dout + ti * DQ + g * G * HD;
      for (int64_t h = 0; h < G; ++h) {
        Di[h] = tr_dot(doi + h * HD, oi + h * HD, HD);
        l[h] = lse[ti * H + g * G + h];
        for (int64_t d = 0; d < HD; ++d)
          acc[h][d] = 0.0f;
      }
#if defined(TR_AVX512)
      if (kt) {
        attn_dots_t(qi, kt, LD, HD, G, i + 1, &p[0][0], LD);
        attn_dots_t(doi, vt, LD, HD, G, i + 1, &ds[0][0], LD);
        for (int64_t h = 0; h < G; ++h)
          for (int64_t j = 0; j <= i; ++j) {
            p[h][j] = p[h][j] * scale - l[h];
            ds[h][j] -= Di[h];
          }
      } else
#endif
      for (int64_t j = 0; j <= i; ++j) {
        const float *kj = k + (j0 + j) * DKV + g * HD;
        const float *vj = v + (j0 + j) * DKV + g * HD;
        for (int64_t h = 0; h < G; ++h) {
          p[h][j] = tr_dot(qi + h * HD, kj, HD) * scale - l[h];
          ds[h][j] = tr_dot(doi + h * HD, vj, HD) - Di[h];
        }
      }
      for (int64_t h = 0; h < G; ++h) /* a separate loop: exp vectorizes */
        for (int64_t j = 0; j <= i; ++j) {
          p[h][j] = tlc_expf(p[h][j]);
          ds[h][j] *= p[h][j];
        }
      for (int64_t j = 0; j <= i; ++j) {
        const float *kj = k + (j0 + j) * DKV + g * HD;
        float *dkj = dk + (j0 + j) * DKV + g * HD;
        float *dvj = dv + (j0 + j) * DKV + g * HD;
        for (int64_t h = 0; h < G; ++h) {
          const float *qh = qi + h * HD, *doh = doi + h * HD;
          float e = ds[h][j], c = scale * e, pj = p[h][j], *ah = acc[h];
          for (int64_t d = 0; d < HD; ++d) {
            ah[d] += e * kj[d];
            dkj[d] += c * qh[d];
            dvj[d] += pj * doh[d];
          }
        }
      }
      for (int64_t h = 0; h < G; ++h) {
        float *dqh = dq + ti * DQ + (g * G + h) * HD;
        for (int64_t d = 0; d < HD; ++d)
          dqh[d] = scale * acc[h][d];
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Cross entropy fused with the LM head.                                    */
/* An item is a block of CE_TB tokens; the head streams once per block in   */
/* tiles of CE_VB rows: logits z[CE_TB][CE_VB] from CE_TT x CE_TV micro     */
/* tiles (vector accumulators over k, then a fixed horizontal sum and the   */
/* scalar k tail). Tokens/rows past the end re-read the last valid one, so  */
/* every logit takes the same arithmetic path. The backward recomputes the  */
/* tile with the same (noinline) function and adds g W into dx with fma     */
/* chains over v.                                                           */
/* ------------------------------------------------------------------------ */

#define CE_TB 16
#define CE_VB 16
#if defined(TR_AVX512)
#define CE_TT 4
#define CE_TV 4
#define CE_AV 4 /* dx vectors per axpy tile */
#else
#define CE_TT 4
#define CE_TV 2
#define CE_AV 2
#endif

#if defined(TR_L)
/* Vector path: the k loop runs in chunks of CE_KC so that the x block and
 * the head tile's chunk stay in (or near) L1; each micro tile's vector
 * accumulators wait in part[] between chunks (a float store/load: the same
 * chain of fma over k as without chunks). Micro tile c also prefetches row
 * c % CE_VB of the next head tile (rows are short streams: without it the
 * head arrives at a fraction of the memory bandwidth). */
#define CE_KC 512
#define TR_CE_LOGITS_FN(SUF, WTYPE, VLOADW, LOAD)                              \
  TLC_AI void ce_micro_##SUF(const float *const *xr, const WTYPE *const *wr,    \
                            int64_t k0, int64_t k1, tlc_vf *part, int first,    \
                            const WTYPE *pf) {                                 \
    tlc_vf acc[CE_TT][CE_TV];                                                   \
    for (int i = 0; i < CE_TT; ++i)                                            \
      for (int j = 0; j < CE_TV; ++j)                                          \
        acc[i][j] = first ? tlc_vf_zero() : part[i * CE_TV + j];                   \
    for (int64_t k = k0; k < k1; k += TR_L) {                                  \
      TLC_PREFETCH(pf + k);                                                            \
      tlc_vf wv[CE_TV];                                                         \
      for (int j = 0; j < CE_TV; ++j)                                          \
        wv[j] = VLOADW(wr[j] + k);                                             \
      for (int i = 0; i < CE_TT; ++i) {                                        \
        tlc_vf xv = tlc_vf_load(xr[i] + k);                                         \
        for (int j = 0; j < CE_TV; ++j)                                        \
          acc[i][j] = tlc_vf_fma(xv, wv[j], acc[i][j]);                            \
      }                                                                        \
    }                                                                          \
    for (int i = 0; i < CE_TT; ++i)                                            \
      for (int j = 0; j < CE_TV; ++j)                                          \
        part[i * CE_TV + j] = acc[i][j];                                       \
  }                                                                            \
  /* z[i][j] = x[t0 + i] . w[v0 + j], i < nt, j < nv. */                       \
  static __attribute__((noinline)) void ce_logits_##SUF(                       \
      const float *x, const WTYPE *w, int64_t K, int64_t t0, int64_t nt,       \
      int64_t v0, int64_t nv, int64_t V, float z[CE_TB][CE_VB]) {              \
    tlc_vf part[CE_TB / CE_TT][CE_VB / CE_TV][CE_TT * CE_TV];                   \
    int64_t KV = K / TR_L * TR_L, c = 0;                                       \
    /* the next tile's rows (the last tile's: its own) */                      \
    int64_t vn = v0 + nv < V ? v0 + nv : v0, nn = tr_min(CE_VB, V - vn);       \
    const WTYPE *next = w + vn * K;                                            \
    for (int64_t kc = 0; kc == 0 || kc < KV; kc += CE_KC) {                    \
      int64_t k1 = tr_min(kc + CE_KC, KV);                                     \
      for (int64_t i0 = 0; i0 < nt; i0 += CE_TT) {                             \
        const float *xr[CE_TT];                                                \
        for (int i = 0; i < CE_TT; ++i)                                        \
          xr[i] = x + (t0 + tr_min(i0 + i, nt - 1)) * K;                       \
        for (int64_t j0 = 0; j0 < nv; j0 += CE_TV) {                           \
          const WTYPE *wr[CE_TV];                                              \
          for (int j = 0; j < CE_TV; ++j)                                      \
            wr[j] = w + (v0 + tr_min(j0 + j, nv - 1)) * K;                     \
          ce_micro_##SUF(xr, wr, kc, k1, part[i0 / CE_TT][j0 / CE_TV],         \
                         kc == 0, next + (c++ % nn) * K);                      \
        }                                                                      \
      }                                                                        \
    }                                                                          \
    for (int64_t i = 0; i < nt; ++i)                                           \
      for (int64_t j = 0; j < nv; ++j) {                                       \
        const float *xi = x + (t0 + i) * K;                                    \
        const WTYPE *wj = w + (v0 + j) * K;                                    \
        tlc_vf a = part[i / CE_TT][j / CE_TV][i % CE_TT * CE_TV + j % CE_TV];   \
        float s = tlc_vf_sum(a);                                                   \
        for (int64_t k = KV; k < K; ++k)                                       \
          s = tlc_fma1(xi[k], LOAD(wj[k]), s);                                  \
        z[i][j] = s;                                                           \
      }                                                                        \
  }
/* dx[i][k..] += sum_j g[i][j] w[j][k..] for nt tokens, nv rows, NV vectors. */
#define TR_CE_AXPY(VLOADW)                                                     \
  tlc_vf acc[CE_TT][CE_AV];                                                     \
  for (int i = 0; i < nt; ++i)                                                 \
    for (int a = 0; a < NV; ++a)                                               \
      acc[i][a] = tlc_vf_load(dx + i * K + k + a * TR_L);                          \
  for (int64_t j = 0; j < nv; ++j) {                                           \
    tlc_vf wv[CE_AV];                                                           \
    for (int a = 0; a < NV; ++a)                                               \
      wv[a] = VLOADW(w + j * K + k + a * TR_L);                                \
    for (int i = 0; i < nt; ++i) {                                             \
      tlc_vf gv = tlc_vf_set1(g[i][j]);                                             \
      for (int a = 0; a < NV; ++a)                                             \
        acc[i][a] = tlc_vf_fma(gv, wv[a], acc[i][a]);                              \
    }                                                                          \
  }                                                                            \
  for (int i = 0; i < nt; ++i)                                                 \
    for (int a = 0; a < NV; ++a)                                               \
      tlc_vf_store(dx + i * K + k + a * TR_L, acc[i][a]);
#else
#define TR_CE_LOGITS_FN(SUF, WTYPE, VLOADW, LOAD)                              \
  static __attribute__((noinline)) void ce_logits_##SUF(                       \
      const float *x, const WTYPE *w, int64_t K, int64_t t0, int64_t nt,       \
      int64_t v0, int64_t nv, int64_t V, float z[CE_TB][CE_VB]) {              \
    _Pragma("clang fp reassociate(on)");                                       \
    (void)V;                                                                   \
    for (int64_t i = 0; i < nt; ++i)                                           \
      for (int64_t j = 0; j < nv; ++j) {                                       \
        const float *xi = x + (t0 + i) * K;                                    \
        const WTYPE *wj = w + (v0 + j) * K;                                    \
        float s = 0.0f;                                                        \
        for (int64_t k = 0; k < K; ++k)                                        \
          s += xi[k] * LOAD(wj[k]);                                            \
        z[i][j] = s;                                                           \
      }                                                                        \
  }
#endif

#define TR_DEFINE_CE(SUF, WTYPE, VLOADW, LOAD)                                 \
  TR_CE_LOGITS_FN(SUF, WTYPE, VLOADW, LOAD)                                    \
                                                                               \
  void tlc_k_cross_entropy_##SUF(const float *x, const WTYPE *w,               \
                                 const int32_t *labels, float *loss,           \
                                 float *lse, int64_t T, int64_t K, int64_t V,  \
                                 int64_t begin, int64_t end) {                 \
    for (int64_t it = begin; it < end; ++it) {                                 \
      int64_t t0 = it * CE_TB, nt = tr_min(CE_TB, T - t0);                     \
      float m[CE_TB], zl[CE_TB], z[CE_TB][CE_VB];                              \
      double s[CE_TB];                                                         \
      for (int64_t i = 0; i < nt; ++i)                                         \
        m[i] = -__builtin_inff(), s[i] = 0.0, zl[i] = 0.0f;                    \
      for (int64_t v0 = 0; v0 < V; v0 += CE_VB) {                              \
        int64_t nv = tr_min(CE_VB, V - v0);                                    \
        ce_logits_##SUF(x, w, K, t0, nt, v0, nv, V, z);                        \
        for (int64_t i = 0; i < nt; ++i)                                       \
          if (labels[t0 + i] >= 0)                                             \
            ce_online(z[i], nv, labels[t0 + i] - v0, &m[i], &s[i], &zl[i]);    \
      }                                                                        \
      for (int64_t i = 0; i < nt; ++i) {                                       \
        if (labels[t0 + i] < 0) {                                              \
          loss[t0 + i] = lse[t0 + i] = 0.0f;                                   \
          continue;                                                            \
        }                                                                      \
        double l = (double)m[i] + tr_log(s[i]);                                \
        lse[t0 + i] = (float)l;                                                \
        loss[t0 + i] = (float)(l - (double)zl[i]);                             \
      }                                                                        \
    }                                                                          \
  }                                                                            \
                                                                               \
  TR_CE_AXPY_FN(SUF, WTYPE, VLOADW, LOAD)                                      \
                                                                               \
  void tlc_k_cross_entropy_grad_##SUF(                                         \
      const float *x, const WTYPE *w, const int32_t *labels, const float *lse, \
      const float *dloss, float *dx, int64_t T, int64_t K, int64_t V,          \
      int64_t begin, int64_t end) {                                            \
    for (int64_t it = begin; it < end; ++it) {                                 \
      int64_t t0 = it * CE_TB, nt = tr_min(CE_TB, T - t0);                     \
      float z[CE_TB][CE_VB], g[CE_TB][CE_VB];                                  \
      for (int64_t i = 0; i < nt * K; ++i)                                     \
        dx[t0 * K + i] = 0.0f;                                                 \
      for (int64_t v0 = 0; v0 < V; v0 += CE_VB) {                              \
        int64_t nv = tr_min(CE_VB, V - v0);                                    \
        ce_logits_##SUF(x, w, K, t0, nt, v0, nv, V, z);                        \
        for (int64_t i = 0; i < nt; ++i) {                                     \
          int64_t lab = labels[t0 + i];                                        \
          float l = lse[t0 + i], c = dloss[t0 + i];                            \
          for (int64_t j = 0; j < nv; ++j) {                                   \
            float p = tlc_expf(z[i][j] - l) - (v0 + j == lab ? 1.0f : 0.0f);    \
            g[i][j] = lab >= 0 ? p * c : 0.0f;                                 \
          }                                                                    \
        }                                                                      \
        ce_axpy_##SUF(w + v0 * K, K, nv, g, dx + t0 * K, nt);                  \
      }                                                                        \
    }                                                                          \
  }

/* Online max / sum of exp over one tile of logits; catches the label's. */
static void ce_online(const float *z, int64_t nv, int64_t lab, float *m,
                      double *s, float *zl) {
  float mx = z[0];
  for (int64_t j = 1; j < nv; ++j)
    mx = z[j] > mx ? z[j] : mx;
  if (mx > *m) {
    *s *= (double)tlc_expf(*m - mx);
    *m = mx;
  }
  double acc = 0.0;
  for (int64_t j = 0; j < nv; ++j)
    acc += (double)tlc_expf(z[j] - *m);
  *s += acc;
  if (lab >= 0 && lab < nv)
    *zl = z[lab];
}

#if defined(TR_L)
/* The axpy tiles: CE_TT tokens x NV vectors, NV = CE_AV, then 1 (tail). */
#define TR_CE_AXPY_FN(SUF, WTYPE, VLOADW, LOAD)                                \
  TLC_AI void ce_axpy_tile_##SUF(const WTYPE *w, int64_t K, int64_t nv,         \
                                const float g[][CE_VB], float *dx, int64_t k,  \
                                int nt, int NV) {                              \
    TR_CE_AXPY(VLOADW)                                                         \
  }                                                                            \
  TLC_AI void ce_axpy_cols_##SUF(const WTYPE *w, int64_t K, int64_t nv,         \
                                const float g[][CE_VB], float *dx, int nt) {   \
    int64_t k = 0;                                                             \
    for (; k + CE_AV * TR_L <= K; k += CE_AV * TR_L)                           \
      ce_axpy_tile_##SUF(w, K, nv, g, dx, k, nt, CE_AV);                       \
    for (; k + TR_L <= K; k += TR_L)                                           \
      ce_axpy_tile_##SUF(w, K, nv, g, dx, k, nt, 1);                           \
    for (; k < K; ++k)                                                         \
      for (int i = 0; i < nt; ++i) {                                           \
        float a = dx[i * K + k];                                               \
        for (int64_t j = 0; j < nv; ++j)                                       \
          a = tlc_fma1(g[i][j], LOAD(w[j * K + k]), a);                         \
        dx[i * K + k] = a;                                                     \
      }                                                                        \
  }                                                                            \
  static void ce_axpy_##SUF(const WTYPE *w, int64_t K, int64_t nv,             \
                            const float g[][CE_VB], float *dx, int64_t nt) {   \
    int64_t i = 0;                                                             \
    for (; i + CE_TT <= nt; i += CE_TT)                                        \
      ce_axpy_cols_##SUF(w, K, nv, g + i, dx + i * K, CE_TT);                  \
    for (; i < nt; ++i)                                                        \
      ce_axpy_cols_##SUF(w, K, nv, g + i, dx + i * K, 1);                      \
  }
#else
#define TR_CE_AXPY_FN(SUF, WTYPE, VLOADW, LOAD)                                \
  static void ce_axpy_##SUF(const WTYPE *w, int64_t K, int64_t nv,             \
                            const float g[][CE_VB], float *dx, int64_t nt) {   \
    for (int64_t i = 0; i < nt; ++i)                                           \
      for (int64_t j = 0; j < nv; ++j) {                                       \
        float a = g[i][j];                                                     \
        for (int64_t k = 0; k < K; ++k)                                        \
          dx[i * K + k] = a * LOAD(w[j * K + k]) + dx[i * K + k];              \
      }                                                                        \
  }
#endif

TR_DEFINE_CE(bf16, uint16_t, tlc_vf_load_bf16, tr_bf16_to_f32)
TR_DEFINE_CE(f32, float, tlc_vf_load, TR_LOAD_F32)

void tlc_k_loss_mean(const float *loss, const int32_t *labels, float *out,
                     int64_t T, int64_t begin, int64_t end) {
  if (begin >= end)
    return;
  double s = 0.0;
  int64_t count = 0;
  for (int64_t t = 0; t < T; ++t)
    if (labels[t] >= 0)
      s += (double)loss[t], ++count;
  out[0] = count ? (float)(s / (double)count) : 0.0f;
}

/* ------------------------------------------------------------------------ */
/* Gradient accumulation and the optimizers.                                */
/* ------------------------------------------------------------------------ */

#define TR_UNIT 1024

void tlc_k_mean_loss_grad(const float *seed, const int32_t *labels,
                          float *dloss, int64_t T, int64_t begin,
                          int64_t end) {
  if (begin >= end)
    return;
  int64_t count = 0;
  for (int64_t t = 0; t < T; ++t)
    count += labels[t] >= 0;
  float c = count ? seed[0] / (float)count : 0.0f;
  for (int64_t t = 0; t < T; ++t)
    dloss[t] = labels[t] >= 0 ? c : 0.0f;
}

void tlc_k_accumulate(const float *g, float *acc, int64_t n, int64_t begin,
                      int64_t end) {
  int64_t i1 = tr_min(end * TR_UNIT, n);
  for (int64_t i = begin * TR_UNIT; i < i1; ++i)
    acc[i] += g[i];
}

void tlc_k_grad_norm(float *state, tlc_train_hyper_t *hyper, int64_t P,
                     int64_t begin, int64_t end) {
  if (begin >= end || hyper->apply == 0)
    return;
  const float *g = state + P;
  double s = 0.0;
  for (int64_t i = 0; i < P; ++i)
    s += (double)g[i] * (double)g[i];
  hyper->grad_norm = (float)__builtin_sqrt(s);
}

/* torch.nn.utils.clip_grad_norm_'s factor (float32 tensor math). */
static float tr_clip(const tlc_train_hyper_t *h) {
  if (!(h->max_grad_norm > 0.0f))
    return 1.0f;
  float coef = h->max_grad_norm / (h->grad_norm + 1e-6f);
  return coef < 1.0f ? coef : 1.0f;
}

void tlc_k_adamw(float *state, const tlc_train_hyper_t *hyper, int64_t P,
                 int64_t begin, int64_t end) {
  if (hyper->apply == 0)
    return;
  float clip = tr_clip(hyper);
  float decay = (float)(1.0 - (double)hyper->lr * (double)hyper->weight_decay);
  float b1 = 1.0f - hyper->beta1, beta2 = hyper->beta2, b2 = 1.0f - beta2;
  float bc2 = hyper->bias_correction2_sqrt, eps = hyper->eps;
  float step = hyper->step_size;
  float *p = state, *gr = state + P, *m = state + 2 * P, *v = state + 3 * P;
  int64_t i1 = tr_min(end * TR_UNIT, P);
  for (int64_t i = begin * TR_UNIT; i < i1; ++i) {
    float g = gr[i] * clip;
    float pi = p[i] * decay;
    float mi = m[i] + b1 * (g - m[i]);
    float vi = v[i] * beta2 + b2 * g * g;
    float denom = __builtin_sqrtf(vi) / bc2 + eps;
    p[i] = pi - step * (mi / denom);
    m[i] = mi;
    v[i] = vi;
    gr[i] = 0.0f;
  }
}

void tlc_k_sgd(float *state, const tlc_train_hyper_t *hyper, int64_t P,
               int64_t begin, int64_t end) {
  if (hyper->apply == 0)
    return;
  float clip = tr_clip(hyper), wd = hyper->weight_decay, lr = hyper->lr;
  float *p = state, *gr = state + P;
  int64_t i1 = tr_min(end * TR_UNIT, P);
  for (int64_t i = begin * TR_UNIT; i < i1; ++i) {
    float g = gr[i] * clip + wd * p[i];
    p[i] = p[i] - lr * g;
    gr[i] = 0.0f;
  }
}
