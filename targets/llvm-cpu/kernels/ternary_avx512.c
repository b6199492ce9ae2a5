/*
 * tlc_ternary_matmul for AVX-512 VNNI (contract and layout: ternary.h). This file
 * is compiled into every build and is empty unless simd.h selects TLC_ISA_AVX512.
 */
#include "ternary_impl.h"

#if defined(TLC_ISA_AVX512)
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

#endif /* TLC_ISA_AVX512 */
