/*
 * The 6-bit LM head (tlc compile --lm-head=q6): lossy, as peers' Q6_K heads.
 *
 * Weights: per row n, scale s_n = max|W_n| / 31 and codes
 *   c = clamp(round(W / s_n), -31, 31) + 32 in [1, 63] (6 bits).
 * Layout of a row (K % 64 == 0), 3K/4 bytes, per block of 64 values:
 *   lo[32]: byte i = c[i] & 15 | (c[i + 32] & 15) << 4
 *   hi[16]: byte i = c[i] >> 4 | (c[i + 16] >> 4) << 2 | (c[i + 32] >> 4) << 4
 *                    | (c[i + 48] >> 4) << 6
 * followed, after all N rows, by N float scales.
 * Activations are quantized per token to int8 (x_q, 1/s_x as the ternary
 * layers do) inside the kernel; then exactly in int32
 *   acc = sum_k c * x_q = sum_k w * x_q + 32 * sum_k x_q,
 *   y = s_n * (1/s_x) * (acc - 32 * sum x_q).
 * One vpdpbusd (codes are the unsigned operand) per 64 weights on AVX-512.
 */
#include "ternary.h"

#include <stdint.h>
#include <string.h>
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#endif

size_t tlc_q6_packed_size(int64_t N, int64_t K) {
  return (size_t)(N * (K / 4 * 3) + 4 * N);
}

void tlc_q6_pack(const float *w, int64_t N, int64_t K, uint8_t *out) {
  float *scales = (float *)(out + N * (K / 4 * 3));
  for (int64_t n = 0; n < N; ++n) {
    const float *row = w + n * K;
    float amax = 0.0f;
    for (int64_t k = 0; k < K; ++k)
      amax = row[k] > amax ? row[k] : -row[k] > amax ? -row[k] : amax;
    float s = amax > 0.0f ? amax / 31.0f : 1.0f;
    scales[n] = s;
    uint8_t *dst = out + n * (K / 4 * 3);
    for (int64_t b = 0; b < K / 64; ++b, dst += 48) {
      uint8_t c[64];
      for (int i = 0; i < 64; ++i) {
        float q = __builtin_nearbyintf(row[b * 64 + i] / s);
        q = q < -31.0f ? -31.0f : q > 31.0f ? 31.0f : q;
        c[i] = (uint8_t)((int)q + 32);
      }
      for (int i = 0; i < 32; ++i)
        dst[i] = (uint8_t)((c[i] & 15) | (c[i + 32] & 15) << 4);
      for (int i = 0; i < 16; ++i)
        dst[32 + i] = (uint8_t)((c[i] >> 4) | (c[i + 16] >> 4) << 2 |
                                (c[i + 32] >> 4) << 4 | (c[i + 48] >> 4) << 6);
    }
  }
}

/* Sum of c * x over one row (scalar reference and fallback). */
static int32_t q6_row_dot(const uint8_t *row, const int8_t *xq, int64_t K) {
  int32_t acc = 0;
  for (int64_t b = 0; b < K / 64; ++b) {
    const uint8_t *lo = row + b * 48, *hi = lo + 32;
    const int8_t *x = xq + b * 64;
    for (int i = 0; i < 64; ++i) {
      int l = i < 32 ? lo[i] & 15 : lo[i - 32] >> 4;
      int h = (hi[i & 15] >> (2 * (i >> 4))) & 3;
      acc += (l | h << 4) * x[i];
    }
  }
  return acc;
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
static inline __m512i q6_codes(const uint8_t *blk) {
  const __m256i lo = _mm256_loadu_si256((const __m256i *)blk);
  const __m256i m4 = _mm256_set1_epi8(15);
  __m512i l = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_and_si256(lo, m4)),
      _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4), 1);
  __m512i h = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(blk + 32)));
  h = _mm512_srlv_epi16(h, _mm512_set_epi64(6 * 0x0001000100010001ll, 6 * 0x0001000100010001ll,
                                            4 * 0x0001000100010001ll, 4 * 0x0001000100010001ll,
                                            2 * 0x0001000100010001ll, 2 * 0x0001000100010001ll,
                                            0, 0));
  h = _mm512_and_si512(h, _mm512_set1_epi8(3));
  return _mm512_or_si512(l, _mm512_slli_epi16(h, 4));
}
#endif

/* y[r][n] for the last `rows` tokens, n in units [begin, end) of 16 rows. */
void tlc_k_dense_q6(const float *x, const uint8_t *w, float *y, int64_t TM,
                    int64_t K, int64_t N, int64_t T, int64_t rows,
                    int64_t begin, int64_t end) {
  (void)TM;
  int64_t n0 = begin * TLC_DENSE_TILE_N, n1 = end * TLC_DENSE_TILE_N;
  if (n1 > N)
    n1 = N;
  const float *scales = (const float *)(w + N * (K / 4 * 3));
  int8_t xq[K];
  for (int64_t r = 0; r < rows; ++r) {
    float inv;
    int32_t xsum;
    tlc_quantize_rows(x + (T - rows + r) * K, K, 1, K, xq, &inv, &xsum);
    int64_t n = n0;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    for (; n + 4 <= n1; n += 4) {
      const uint8_t *r0 = w + n * (K / 4 * 3);
      const int64_t stride = K / 4 * 3;
      __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t b = 0; b < K / 64; ++b) {
        __m512i xv = _mm512_loadu_si512((const void *)(xq + b * 64));
        a0 = _mm512_dpbusd_epi32(a0, q6_codes(r0 + b * 48), xv);
        a1 = _mm512_dpbusd_epi32(a1, q6_codes(r0 + stride + b * 48), xv);
        a2 = _mm512_dpbusd_epi32(a2, q6_codes(r0 + 2 * stride + b * 48), xv);
        a3 = _mm512_dpbusd_epi32(a3, q6_codes(r0 + 3 * stride + b * 48), xv);
      }
      int32_t acc[4] = {_mm512_reduce_add_epi32(a0), _mm512_reduce_add_epi32(a1),
                        _mm512_reduce_add_epi32(a2), _mm512_reduce_add_epi32(a3)};
      for (int j = 0; j < 4; ++j)
        y[r * N + n + j] =
            (float)(acc[j] - 32 * xsum) * (scales[n + j] * inv);
    }
#endif
    for (; n < n1; ++n)
      y[r * N + n] = (float)(q6_row_dot(w + n * (K / 4 * 3), xq, K) - 32 * xsum) *
                     (scales[n] * inv);
  }
}
