/*
 * tlc_ternary_matmul for AVX2 (contract and layout: ternary.h). This file
 * is compiled into every build and is empty unless simd.h selects TLC_ISA_AVX2.
 */
#include "ternary_impl.h"

#if defined(TLC_ISA_AVX2)
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

#endif /* TLC_ISA_AVX2 */
