/*
 * tlc ternary (BitNet b1.58) matrix microkernels. See ternary.h for the contract,
 * the exact output formula and the packed weight layout (T16x16).
 *
 * Build variants (selected by the predefined ISA macros only):
 *   TLC_T_AVX512 : __AVX512VNNI__ + __AVX512BW__ + __AVX512VL__ (vpdpbusd on zmm)
 *   TLC_T_AVX2   : __AVX2__ (vpmaddubsw + vpmaddwd on ymm)
 *   otherwise    : portable scalar C.
 */
#include "ternary.h"
#include "simd.h"

/* memcpy/memset via the compiler builtins so the file needs no libc headers
 * (freestanding; the builtins inline or become plain memcpy/memset calls). */
#if defined(__GNUC__) || defined(__clang__)
#define tlc_memcpy __builtin_memcpy
#define tlc_memset __builtin_memset
#else
#include <string.h>
#define tlc_memcpy memcpy
#define tlc_memset memset
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) &&          \
    defined(__AVX512F__)
#define TLC_T_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__)
#define TLC_T_AVX2 1
#include <immintrin.h>
#endif

#define TLC_AI static inline __attribute__((always_inline, unused))
#define TLC_NOINLINE static __attribute__((noinline))

/* ------------------------------------------------------------------------------ */
/* small helpers                                                                  */
/* ------------------------------------------------------------------------------ */

TLC_AI int32_t tlc_ld32(const void *p) {
  int32_t v;
  tlc_memcpy(&v, p, 4);
  return v;
}

TLC_AI int64_t tlc_min64(int64_t a, int64_t b) { return a < b ? a : b; }
TLC_AI int64_t tlc_max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Round to nearest, ties to even, done on the float's bits with integer arithmetic:
 * no libm (nearbyintf is a libcall on baseline x86-64) and no FP add after the x*s
 * multiply, so the result cannot change even if the bitcode is code-generated with
 * FP-contraction (FMA fusion) enabled. Valid for |v| < 2^31. */
TLC_AI int32_t tlc_rne_i32(float v) {
  uint32_t u;
  tlc_memcpy(&u, &v, 4);
  const int32_t e = (int32_t)((u >> 23) & 0xFFu);
  if (e < 126) return 0; /* |v| < 0.5 */
  const uint32_t m = (u & 0x7FFFFFu) | 0x800000u; /* v = m * 2^(e-150) */
  uint32_t ip;
  if (e >= 150) {
    ip = m << (e - 150);
  } else {
    const int sh = 150 - e; /* 1..24 */
    const uint32_t rem = m & ((1u << sh) - 1u), half = 1u << (sh - 1);
    ip = m >> sh;
    if (rem > half || (rem == half && (ip & 1u))) ++ip;
  }
  return (u >> 31) ? -(int32_t)ip : (int32_t)ip;
}

/* Scalar quantization of one element with the reference formula:
 * clamp(nearbyint(x * s), -128, 127), x * s one float32 multiply. |x*s| <= ~127 by
 * construction (|x| <= amax, s = 127/max(amax,1e-5)). */
TLC_AI int32_t tlc_q1(float xv, float s) {
  int32_t r = tlc_rne_i32(xv * s);
  if (r > 127) r = 127;
  if (r < -128) r = -128;
  return r;
}

TLC_AI float tlc_absf(float v) { return v < 0.0f ? -v : v; }

/* Which columns of the 16-row tile starting at n0 fall inside [nb, ne). */
TLC_AI uint32_t tlc_tile_mask(int64_t n0, int64_t nb, int64_t ne) {
  int64_t lo = tlc_max64(nb - n0, 0);
  int64_t hi = tlc_min64(ne - n0, 16);
  if (hi <= lo) return 0;
  uint32_t mhi = (hi >= 16) ? 0xFFFFu : ((1u << hi) - 1u);
  uint32_t mlo = (1u << lo) - 1u;
  return mhi & ~mlo;
}

/* ------------------------------------------------------------------------------ */
/* packing                                                                        */
/* ------------------------------------------------------------------------------ */

size_t tlc_ternary_packed_size(int64_t N, int64_t K) {
  int64_t tiles = (N + 15) / 16;
  return (size_t)tiles * 16u * (size_t)K / 4u;
}

void tlc_ternary_pack(const int8_t *w, int64_t N, int64_t K, uint8_t *out) {
  const int64_t nblk = K / 16;
  const int64_t tiles = (N + 15) / 16;
  for (int64_t t = 0; t < tiles; ++t) {
    for (int64_t b = 0; b < nblk; ++b) {
      uint8_t *chunk = out + (t * nblk + b) * 64;
      for (int r = 0; r < 16; ++r) {
        const int64_t n = t * 16 + r;
        for (int s = 0; s < 4; ++s) {
          uint32_t byte = 0;
          for (int j = 0; j < 4; ++j) {
            uint32_t code = 1; /* padding rows: weight 0 */
            if (n < N) code = (uint32_t)(w[n * K + b * 16 + 4 * j + s] + 1) & 3u;
            byte |= code << (2 * j);
          }
          chunk[4 * r + s] = (uint8_t)byte;
        }
      }
    }
  }
}

void tlc_ternary_unpack(const uint8_t *packed, int64_t N, int64_t K, int8_t *w) {
  const int64_t nblk = K / 16;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = n / 16, r = n % 16;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t b = k / 16, j = (k % 16) / 4, s = k % 4;
      const uint8_t byte = packed[(t * nblk + b) * 64 + 4 * r + s];
      w[n * K + k] = (int8_t)((int)((byte >> (2 * j)) & 3u) - 1);
    }
  }
}

/* ------------------------------------------------------------------------------ */
/* activation quantization                                                        */
/* ------------------------------------------------------------------------------ */

void tlc_quantize_rows(const float *x, int64_t ldx, int64_t M, int64_t K, int8_t *xq,
                       float *inv_scale, int32_t *row_sum) {
  for (int64_t m = 0; m < M; ++m) {
    const float *xr = x + m * ldx;
    int8_t *qr = xq + m * K;
    int64_t k = 0;
    float amax = 0.0f;
#if defined(TLC_T_AVX512)
    {
      __m512 vmax = _mm512_setzero_ps();
      for (; k + 16 <= K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(xr + k)));
      if (k < K) {
        __mmask16 mk = (__mmask16)((1u << (K - k)) - 1u);
        vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(mk, xr + k)));
      }
      amax = _mm512_reduce_max_ps(vmax);
      k = 0;
    }
#elif defined(TLC_T_AVX2)
    {
      const __m256 sign = _mm256_set1_ps(-0.0f);
      __m256 vmax = _mm256_setzero_ps();
      for (; k + 8 <= K; k += 8)
        vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(xr + k)));
      __m128 h = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
      h = _mm_max_ps(h, _mm_movehl_ps(h, h));
      h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
      amax = _mm_cvtss_f32(h);
      for (; k < K; ++k) {
        float a = tlc_absf(xr[k]);
        amax = a > amax ? a : amax;
      }
      k = 0;
    }
#else
    for (k = 0; k < K; ++k) {
      float a = tlc_absf(xr[k]);
      amax = a > amax ? a : amax;
    }
    k = 0;
#endif
    const float s = 127.0f / (amax > 1e-5f ? amax : 1e-5f);
    inv_scale[m] = 1.0f / s;
    int32_t sum = 0;
#if defined(TLC_T_AVX512)
    {
      const __m512 vs = _mm512_set1_ps(s);
      __m512i vsum = _mm512_setzero_si512();
      for (; k + 16 <= K; k += 16) {
        __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xr + k), vs));
        r = _mm512_max_epi32(_mm512_min_epi32(r, _mm512_set1_epi32(127)), _mm512_set1_epi32(-128));
        vsum = _mm512_add_epi32(vsum, r);
        _mm_storeu_si128((__m128i *)(qr + k), _mm512_cvtepi32_epi8(r));
      }
      if (k < K) {
        __mmask16 mk = (__mmask16)((1u << (K - k)) - 1u);
        __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, xr + k), vs));
        r = _mm512_max_epi32(_mm512_min_epi32(r, _mm512_set1_epi32(127)), _mm512_set1_epi32(-128));
        r = _mm512_maskz_mov_epi32(mk, r);
        vsum = _mm512_add_epi32(vsum, r);
        _mm512_mask_cvtepi32_storeu_epi8(qr + k, mk, r);
        k = K;
      }
      sum = _mm512_reduce_add_epi32(vsum);
    }
#elif defined(TLC_T_AVX2)
    {
      const __m256 vs = _mm256_set1_ps(s);
      const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
      const __m256i ones16 = _mm256_set1_epi16(1);
      __m256i vsum = _mm256_setzero_si256();
      for (; k + 32 <= K; k += 32) {
        __m256i r0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k), vs));
        __m256i r1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k + 8), vs));
        __m256i r2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k + 16), vs));
        __m256i r3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k + 24), vs));
        __m256i p01 = _mm256_packs_epi32(r0, r1); /* saturation == clamp to int16 */
        __m256i p23 = _mm256_packs_epi32(r2, r3);
        __m256i b = _mm256_packs_epi16(p01, p23); /* saturation == clamp(-128,127) */
        b = _mm256_permutevar8x32_epi32(b, perm);
        _mm256_storeu_si256((__m256i *)(qr + k), b);
        /* row sum of the clamped int8 values: sign-extend to 16 bit pairs */
        __m256i lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b));
        __m256i hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(b, 1));
        vsum = _mm256_add_epi32(vsum, _mm256_madd_epi16(_mm256_add_epi16(lo, hi), ones16));
      }
      __m128i h = _mm_add_epi32(_mm256_castsi256_si128(vsum), _mm256_extracti128_si256(vsum, 1));
      h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
      h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
      sum = _mm_cvtsi128_si32(h);
    }
#endif
    for (; k < K; ++k) {
      int32_t q = tlc_q1(xr[k], s);
      qr[k] = (int8_t)q;
      sum += q;
    }
    row_sum[m] = sum;
  }
}

/* ------------------------------------------------------------------------------ */
/* reference                                                                      */
/* ------------------------------------------------------------------------------ */

void tlc_ternary_matmul_ref(const int8_t *xq, const float *inv_scale,
                            const int32_t *row_sum, int64_t M, int64_t K,
                            const uint8_t *w_packed, int64_t N, float gamma, float *y,
                            int64_t ldy, int64_t n_begin, int64_t n_end) {
  (void)row_sum; /* the reference uses sum_k xq * W directly (independent check) */
  (void)N;
  const int64_t nblk = K / 16;
  for (int64_t m = 0; m < M; ++m) {
    const float sc = gamma * inv_scale[m];
    for (int64_t n = n_begin; n < n_end; ++n) {
      const int64_t t = n / 16, r = n % 16;
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t b = k / 16, j = (k % 16) / 4, s = k % 4;
        const uint8_t byte = w_packed[(t * nblk + b) * 64 + 4 * r + s];
        const int32_t wv = (int32_t)((byte >> (2 * j)) & 3u) - 1;
        acc += wv * (int32_t)xq[m * K + k];
      }
      y[m * ldy + n] = (float)acc * sc;
    }
  }
}

/* ------------------------------------------------------------------------------ */
/* AVX-512 VNNI                                                                   */
/* ------------------------------------------------------------------------------ */
#if defined(TLC_T_AVX512)

int tlc_ternary_isa(void) { return 2; }

#define GEMV_NT 4 /* tiles (x16 rows) processed together in the M == 1 path */
#ifndef TLC_PF
#define TLC_PF 2048 /* M == 1 software prefetch distance per tile stream (bytes) */
#endif
#define GEMM_MR 8 /* activation rows per micro tile */
#define GEMM_NR 2 /* weight tiles (x16 rows) per micro tile */

TLC_AI void epi512(__m512i acc, int32_t rs, float sc, float *yrow, int64_t n0, uint32_t mask) {
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_set1_epi32(rs))),
                           _mm512_set1_ps(sc));
  if (mask == 0xFFFFu)
    _mm512_storeu_ps(yrow + n0, f);
  else
    _mm512_mask_storeu_ps(yrow + n0, (__mmask16)mask, f);
}

/* M == 1: each 64-byte chunk is masked in place (no shifts): plane j holds code<<2j,
 * accumulated in its own register and rescaled (exact arithmetic shift) at the end.
 * |acc3| <= 64 * 2 * 128 * K/4 < 2^31 for K <= 2^19. */
TLC_AI void gemv512(const int8_t *x, int64_t nblk, const uint8_t *w, int64_t tstride,
                    const int NT, const int32_t rs, const float sc, float *y, int64_t n0,
                    const uint32_t *mask) {
  const __m512i c0 = _mm512_set1_epi8(0x03), c1 = _mm512_set1_epi8(0x0C);
  const __m512i c2 = _mm512_set1_epi8(0x30), c3 = _mm512_set1_epi8((char)0xC0);
  __m512i a0[GEMV_NT], a1[GEMV_NT], a2[GEMV_NT], a3[GEMV_NT];
  for (int q = 0; q < NT; ++q)
    a0[q] = a1[q] = a2[q] = a3[q] = _mm512_setzero_si512();
  for (int64_t b = 0; b < nblk; ++b) {
    const int8_t *xb = x + 16 * b;
    const __m512i x0 = _mm512_set1_epi32(tlc_ld32(xb));
    const __m512i x1 = _mm512_set1_epi32(tlc_ld32(xb + 4));
    const __m512i x2 = _mm512_set1_epi32(tlc_ld32(xb + 8));
    const __m512i x3 = _mm512_set1_epi32(tlc_ld32(xb + 12));
    for (int q = 0; q < NT; ++q) {
#if TLC_PF > 0
      {
        /* software prefetch TLC_PF bytes ahead in each tile stream; near the end of a
         * tile, continue into the same stream of the next group of GEMV_NT tiles. */
        int64_t off = q * tstride + 64 * b + TLC_PF;
        if (64 * b + TLC_PF >= tstride) off += (GEMV_NT - 1) * tstride;
        _mm_prefetch((const char *)(w + off), _MM_HINT_T0);
      }
#endif
      const __m512i v = _mm512_loadu_si512((const void *)(w + q * tstride + 64 * b));
      a0[q] = _mm512_dpbusd_epi32(a0[q], _mm512_and_si512(v, c0), x0);
      a1[q] = _mm512_dpbusd_epi32(a1[q], _mm512_and_si512(v, c1), x1);
      a2[q] = _mm512_dpbusd_epi32(a2[q], _mm512_and_si512(v, c2), x2);
      a3[q] = _mm512_dpbusd_epi32(a3[q], _mm512_and_si512(v, c3), x3);
    }
  }
  for (int q = 0; q < NT; ++q) {
    __m512i acc = _mm512_add_epi32(
        _mm512_add_epi32(a0[q], _mm512_srai_epi32(a1[q], 2)),
        _mm512_add_epi32(_mm512_srai_epi32(a2[q], 4), _mm512_srai_epi32(a3[q], 6)));
    epi512(acc, rs, sc, y, n0 + 16 * q, mask[q]);
  }
}

#define TLC_GEMV512(NT)                                                                 \
  TLC_NOINLINE void gemv512_##NT(const int8_t *x, int64_t nblk, const uint8_t *w,       \
                                 int64_t tstride, int32_t rs, float sc, float *y,       \
                                 int64_t n0, const uint32_t *mask) {                    \
    gemv512(x, nblk, w, tstride, NT, rs, sc, y, n0, mask);                              \
  }
TLC_GEMV512(1)
TLC_GEMV512(2)
TLC_GEMV512(3)
TLC_GEMV512(4)

/* M >= 2: MR x NR micro tile; each chunk is decoded (shift + and) once per plane and
 * used for MR rows. */
TLC_AI void gemm512(const int8_t *x, int64_t K, const uint8_t *w, int64_t tstride,
                    const int MR, const int NR, const int32_t *rs, const float *isc,
                    float gamma, float *y, int64_t ldy, int64_t n0, const uint32_t *mask) {
  __m512i acc[GEMM_MR][GEMM_NR];
  for (int m = 0; m < MR; ++m)
    for (int q = 0; q < NR; ++q) acc[m][q] = _mm512_setzero_si512();
  const __m512i c3 = _mm512_set1_epi8(3);
  const int64_t nblk = K >> 4;
  for (int64_t b = 0; b < nblk; ++b) {
    __m512i v[GEMM_NR];
    for (int q = 0; q < NR; ++q)
      v[q] = _mm512_loadu_si512((const void *)(w + q * tstride + 64 * b));
    const int8_t *xb = x + 16 * b;
#define TLC_PLANE512(J)                                                                 \
  {                                                                                     \
    __m512i p[GEMM_NR];                                                                 \
    for (int q = 0; q < NR; ++q)                                                        \
      p[q] = _mm512_and_si512((J) == 0 ? v[q] : _mm512_srli_epi16(v[q], 2 * (J)), c3);  \
    for (int m = 0; m < MR; ++m) {                                                      \
      const __m512i xv = _mm512_set1_epi32(tlc_ld32(xb + m * K + 4 * (J)));             \
      for (int q = 0; q < NR; ++q) acc[m][q] = _mm512_dpbusd_epi32(acc[m][q], p[q], xv); \
    }                                                                                   \
  }
    TLC_PLANE512(0)
    TLC_PLANE512(1)
    TLC_PLANE512(2)
    TLC_PLANE512(3)
#undef TLC_PLANE512
  }
  for (int m = 0; m < MR; ++m) {
    const float sc = gamma * isc[m];
    for (int q = 0; q < NR; ++q) epi512(acc[m][q], rs[m], sc, y + m * ldy, n0 + 16 * q, mask[q]);
  }
}

typedef void (*tlc_gemm_fn)(const int8_t *, int64_t, const uint8_t *, int64_t,
                            const int32_t *, const float *, float, float *, int64_t,
                            int64_t, const uint32_t *);
#define TLC_GEMM512(MR, NR)                                                             \
  TLC_NOINLINE void gemm512_##MR##_##NR(const int8_t *x, int64_t K, const uint8_t *w,   \
                                        int64_t tstride, const int32_t *rs,             \
                                        const float *isc, float gamma, float *y,        \
                                        int64_t ldy, int64_t n0, const uint32_t *mask) { \
    gemm512(x, K, w, tstride, MR, NR, rs, isc, gamma, y, ldy, n0, mask);                \
  }
#define TLC_GEMM512_ROW(MR) TLC_GEMM512(MR, 1) TLC_GEMM512(MR, 2)
TLC_GEMM512_ROW(1)
TLC_GEMM512_ROW(2)
TLC_GEMM512_ROW(3)
TLC_GEMM512_ROW(4)
TLC_GEMM512_ROW(5)
TLC_GEMM512_ROW(6)
TLC_GEMM512_ROW(7)
TLC_GEMM512_ROW(8)
static const tlc_gemm_fn tlc_gemm_tab[GEMM_MR][GEMM_NR] = {
    {gemm512_1_1, gemm512_1_2}, {gemm512_2_1, gemm512_2_2}, {gemm512_3_1, gemm512_3_2},
    {gemm512_4_1, gemm512_4_2}, {gemm512_5_1, gemm512_5_2}, {gemm512_6_1, gemm512_6_2},
    {gemm512_7_1, gemm512_7_2}, {gemm512_8_1, gemm512_8_2}};

void tlc_ternary_matmul(const int8_t *xq, const float *inv_scale, const int32_t *row_sum,
                        int64_t M, int64_t K, const uint8_t *w_packed, int64_t N,
                        float gamma, float *y, int64_t ldy, int64_t n_begin,
                        int64_t n_end) {
  (void)N;
  if (M <= 0 || n_begin >= n_end) return;
  const int64_t nblk = K / 16;
  const int64_t tstride = nblk * 64;
  const int64_t t0 = n_begin / 16, t1 = (n_end + 15) / 16;
  if (M == 1) {
    const float sc = gamma * inv_scale[0];
    for (int64_t t = t0; t < t1; t += GEMV_NT) {
      const int nt = (int)tlc_min64(GEMV_NT, t1 - t);
      uint32_t mask[GEMV_NT];
      for (int q = 0; q < nt; ++q) mask[q] = tlc_tile_mask((t + q) * 16, n_begin, n_end);
      const uint8_t *w = w_packed + t * tstride;
      switch (nt) {
      case 4: gemv512_4(xq, nblk, w, tstride, row_sum[0], sc, y, t * 16, mask); break;
      case 3: gemv512_3(xq, nblk, w, tstride, row_sum[0], sc, y, t * 16, mask); break;
      case 2: gemv512_2(xq, nblk, w, tstride, row_sum[0], sc, y, t * 16, mask); break;
      default: gemv512_1(xq, nblk, w, tstride, row_sum[0], sc, y, t * 16, mask); break;
      }
    }
    return;
  }
  for (int64_t t = t0; t < t1; t += GEMM_NR) {
    const int nr = (int)tlc_min64(GEMM_NR, t1 - t);
    uint32_t mask[GEMM_NR];
    for (int q = 0; q < nr; ++q) mask[q] = tlc_tile_mask((t + q) * 16, n_begin, n_end);
    const uint8_t *w = w_packed + t * tstride;
    for (int64_t m = 0; m < M; m += GEMM_MR) {
      const int mr = (int)tlc_min64(GEMM_MR, M - m);
      tlc_gemm_tab[mr - 1][nr - 1](xq + m * K, K, w, tstride, row_sum + m, inv_scale + m,
                                   gamma, y + m * ldy, ldy, t * 16, mask);
    }
  }
}

/* ------------------------------------------------------------------------------ */
/* AVX2                                                                           */
/* ------------------------------------------------------------------------------ */
#elif defined(TLC_T_AVX2)

int tlc_ternary_isa(void) { return 1; }

#define GEMV_NT 1 /* tiles per M == 1 call (1 measured best: ALU bound; sw prefetch
                     measured no gain: the stream is sequential) */
#define GEMM_MR 6 /* rows per micro tile (4..8 measured; 6 best on Zen 5) */

TLC_AI void epi256(__m256i acc, int32_t rs, float sc, float *yrow, int64_t n0, uint32_t mask8) {
  __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc, _mm256_set1_epi32(rs))),
                           _mm256_set1_ps(sc));
  if ((mask8 & 0xFFu) == 0xFFu) {
    _mm256_storeu_ps(yrow + n0, f);
  } else if (mask8 & 0xFFu) {
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256i mk = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)mask8), lane), lane);
    _mm256_maskstore_ps(yrow + n0, mk, f);
  }
}

/* int16 partial sums stay exact for up to 15 blocks (|.| <= 2048 per block); they are
 * widened to int32 (vpmaddwd) every TLC_A2_CHUNK blocks. */
#define TLC_A2_CHUNK 8

/* M == 1. Per 32-byte half chunk: p0 = v & 0x03 (c0), p1 = v & 0x0C (4*c1),
 * h = v >> 4: p2 = h & 0x03 (c2), p3 = h & 0x0C (4*c3). A accumulates the unscaled
 * products of planes 0 and 2 (|.| <= 1024 per block), B the 4x scaled ones of planes 1
 * and 3 (|.| <= 4096 per block, so at most 7 blocks per int16 chunk; no vpmaddubsw
 * saturation: |2 * 8 * 128| = 2048). Widened: acc32 += 4*A + B (pairs), / 4 at the end. */
#define TLC_A2_GEMV_CHUNK 7

TLC_AI void gemv256(const int8_t *x, int64_t nblk, const uint8_t *w, int64_t tstride,
                    const int NT, const int32_t rs, const float sc, float *y, int64_t n0,
                    const uint32_t *mask) {
  const __m256i c03 = _mm256_set1_epi8(0x03), c0c = _mm256_set1_epi8(0x0C);
  const __m256i ones = _mm256_set1_epi16(1), fours = _mm256_set1_epi16(4);
  __m256i acc[GEMV_NT][2];
  for (int q = 0; q < NT; ++q) acc[q][0] = acc[q][1] = _mm256_setzero_si256();
  for (int64_t b0 = 0; b0 < nblk; b0 += TLC_A2_GEMV_CHUNK) {
    const int64_t b1 = tlc_min64(b0 + TLC_A2_GEMV_CHUNK, nblk);
    __m256i A[GEMV_NT][2], B[GEMV_NT][2];
    for (int q = 0; q < NT; ++q)
      A[q][0] = A[q][1] = B[q][0] = B[q][1] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; ++b) {
      const int8_t *xb = x + 16 * b;
      const __m256i x0 = _mm256_set1_epi32(tlc_ld32(xb));
      const __m256i x1 = _mm256_set1_epi32(tlc_ld32(xb + 4));
      const __m256i x2 = _mm256_set1_epi32(tlc_ld32(xb + 8));
      const __m256i x3 = _mm256_set1_epi32(tlc_ld32(xb + 12));
      for (int q = 0; q < NT; ++q)
        for (int h = 0; h < 2; ++h) {
          const __m256i v =
              _mm256_loadu_si256((const __m256i *)(w + q * tstride + 64 * b + 32 * h));
          const __m256i hv = _mm256_srli_epi16(v, 4);
          A[q][h] = _mm256_add_epi16(A[q][h], _mm256_maddubs_epi16(_mm256_and_si256(v, c03), x0));
          B[q][h] = _mm256_add_epi16(B[q][h], _mm256_maddubs_epi16(_mm256_and_si256(v, c0c), x1));
          A[q][h] = _mm256_add_epi16(A[q][h], _mm256_maddubs_epi16(_mm256_and_si256(hv, c03), x2));
          B[q][h] = _mm256_add_epi16(B[q][h], _mm256_maddubs_epi16(_mm256_and_si256(hv, c0c), x3));
        }
    }
    for (int q = 0; q < NT; ++q)
      for (int h = 0; h < 2; ++h)
        acc[q][h] = _mm256_add_epi32(acc[q][h], _mm256_add_epi32(_mm256_madd_epi16(A[q][h], fours),
                                                                 _mm256_madd_epi16(B[q][h], ones)));
  }
  for (int q = 0; q < NT; ++q) {
    epi256(_mm256_srai_epi32(acc[q][0], 2), rs, sc, y, n0 + 16 * q, mask[q]);
    epi256(_mm256_srai_epi32(acc[q][1], 2), rs, sc, y, n0 + 16 * q + 8, mask[q] >> 8);
  }
}

#define TLC_GEMV256(NT)                                                                 \
  TLC_NOINLINE void gemv256_##NT(const int8_t *x, int64_t nblk, const uint8_t *w,       \
                                 int64_t tstride, int32_t rs, float sc, float *y,       \
                                 int64_t n0, const uint32_t *mask) {                    \
    gemv256(x, nblk, w, tstride, NT, rs, sc, y, n0, mask);                              \
  }
TLC_GEMV256(1)

/* M >= 2: MR rows x one half tile (8 rows = 32 bytes of each chunk); the four planes
 * are decoded once per chunk and reused for MR rows; int16 accumulation is widened every
 * TLC_A2_CHUNK blocks. */
TLC_AI void gemm256(const int8_t *x, int64_t K, const uint8_t *w, const int MR,
                    const int32_t *rs, const float *isc, float gamma, float *y, int64_t ldy,
                    int64_t n0, uint32_t mask8) {
  const __m256i c3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i acc[GEMM_MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_si256();
  const int64_t nblk = K >> 4;
  for (int64_t b0 = 0; b0 < nblk; b0 += TLC_A2_CHUNK) {
    const int64_t b1 = tlc_min64(b0 + TLC_A2_CHUNK, nblk);
    __m256i a16[GEMM_MR];
    for (int m = 0; m < MR; ++m) a16[m] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; ++b) {
      const int8_t *xb = x + 16 * b;
      const __m256i v = _mm256_loadu_si256((const __m256i *)(w + 64 * b));
      const __m256i p0 = _mm256_and_si256(v, c3);
      const __m256i p1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), c3);
      const __m256i p2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), c3);
      const __m256i p3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), c3);
      for (int m = 0; m < MR; ++m) {
        const int8_t *xm = xb + m * K;
        __m256i s = _mm256_maddubs_epi16(p0, _mm256_set1_epi32(tlc_ld32(xm)));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(p1, _mm256_set1_epi32(tlc_ld32(xm + 4))));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(p2, _mm256_set1_epi32(tlc_ld32(xm + 8))));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(p3, _mm256_set1_epi32(tlc_ld32(xm + 12))));
        a16[m] = _mm256_add_epi16(a16[m], s);
      }
    }
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_add_epi32(acc[m], _mm256_madd_epi16(a16[m], ones));
  }
  for (int m = 0; m < MR; ++m) epi256(acc[m], rs[m], gamma * isc[m], y + m * ldy, n0, mask8);
}

typedef void (*tlc_gemm_fn)(const int8_t *, int64_t, const uint8_t *, const int32_t *,
                            const float *, float, float *, int64_t, int64_t, uint32_t);
#define TLC_GEMM256(MR)                                                                 \
  TLC_NOINLINE void gemm256_##MR(const int8_t *x, int64_t K, const uint8_t *w,          \
                                 const int32_t *rs, const float *isc, float gamma,      \
                                 float *y, int64_t ldy, int64_t n0, uint32_t mask8) {   \
    gemm256(x, K, w, MR, rs, isc, gamma, y, ldy, n0, mask8);                            \
  }
TLC_GEMM256(1)
TLC_GEMM256(2)
TLC_GEMM256(3)
TLC_GEMM256(4)
TLC_GEMM256(5)
TLC_GEMM256(6)
static const tlc_gemm_fn tlc_gemm_tab[GEMM_MR] = {gemm256_1, gemm256_2, gemm256_3,
                                                  gemm256_4, gemm256_5, gemm256_6};

void tlc_ternary_matmul(const int8_t *xq, const float *inv_scale, const int32_t *row_sum,
                        int64_t M, int64_t K, const uint8_t *w_packed, int64_t N,
                        float gamma, float *y, int64_t ldy, int64_t n_begin,
                        int64_t n_end) {
  (void)N;
  if (M <= 0 || n_begin >= n_end) return;
  const int64_t nblk = K / 16;
  const int64_t tstride = nblk * 64;
  const int64_t t0 = n_begin / 16, t1 = (n_end + 15) / 16;
  if (M == 1) {
    const float sc = gamma * inv_scale[0];
    for (int64_t t = t0; t < t1; ++t) {
      const uint32_t mask = tlc_tile_mask(t * 16, n_begin, n_end);
      gemv256_1(xq, nblk, w_packed + t * tstride, tstride, row_sum[0], sc, y, t * 16, &mask);
    }
    return;
  }
  for (int64_t t = t0; t < t1; ++t) {
    const uint32_t mask = tlc_tile_mask(t * 16, n_begin, n_end);
    const uint8_t *w = w_packed + t * tstride;
    for (int64_t m = 0; m < M; m += GEMM_MR) {
      const int mr = (int)tlc_min64(GEMM_MR, M - m);
      for (int h = 0; h < 2; ++h)
        tlc_gemm_tab[mr - 1](xq + m * K, K, w + 32 * h, row_sum + m, inv_scale + m, gamma,
                             y + m * ldy, ldy, t * 16 + 8 * h, mask >> (8 * h));
    }
  }
}

/* ------------------------------------------------------------------------------ */
/* portable scalar (AArch64: ternary_neon.c)                                      */
/* ------------------------------------------------------------------------------ */
#elif defined(TLC_ISA_SCALAR)

int tlc_ternary_isa(void) { return 0; }

#define SC_MR 4

/* Portable path: one 16-row tile x up to SC_MR activation rows; each 64-byte chunk is
 * decoded once into codes[j][row][s] and reused for the SC_MR rows. (Variants written
 * for auto-vectorization were measured slower on baseline x86-64.) */
void tlc_ternary_matmul(const int8_t *xq, const float *inv_scale, const int32_t *row_sum,
                        int64_t M, int64_t K, const uint8_t *w_packed, int64_t N,
                        float gamma, float *y, int64_t ldy, int64_t n_begin,
                        int64_t n_end) {
  (void)N;
  if (M <= 0 || n_begin >= n_end) return;
  const int64_t nblk = K / 16;
  const int64_t tstride = nblk * 64;
  const int64_t t0 = n_begin / 16, t1 = (n_end + 15) / 16;
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t *w = w_packed + t * tstride;
    for (int64_t m0 = 0; m0 < M; m0 += SC_MR) {
      const int mr = (int)tlc_min64(SC_MR, M - m0);
      int32_t acc[SC_MR][16];
      tlc_memset(acc, 0, sizeof acc);
      for (int64_t b = 0; b < nblk; ++b) {
        const uint8_t *chunk = w + 64 * b;
        uint8_t code[4][16][4]; /* [j][row][s] */
        for (int r = 0; r < 16; ++r)
          for (int s = 0; s < 4; ++s) {
            const uint8_t byte = chunk[4 * r + s];
            for (int j = 0; j < 4; ++j) code[j][r][s] = (uint8_t)((byte >> (2 * j)) & 3u);
          }
        for (int m = 0; m < mr; ++m) {
          const int8_t *xb = xq + (m0 + m) * K + 16 * b;
          for (int r = 0; r < 16; ++r) {
            int32_t d = 0;
            for (int j = 0; j < 4; ++j)
              for (int s = 0; s < 4; ++s) d += (int32_t)code[j][r][s] * (int32_t)xb[4 * j + s];
            acc[m][r] += d;
          }
        }
      }
      for (int m = 0; m < mr; ++m) {
        const float sc = gamma * inv_scale[m0 + m];
        const int32_t rs = row_sum[m0 + m];
        for (int r = 0; r < 16; ++r) {
          const int64_t n = t * 16 + r;
          if (n >= n_begin && n < n_end) y[(m0 + m) * ldy + n] = (float)(acc[m][r] - rs) * sc;
        }
      }
    }
  }
}

#endif
