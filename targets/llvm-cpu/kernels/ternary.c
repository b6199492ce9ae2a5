/*
 * tlc ternary (BitNet b1.58) microkernels: packing, activation quantization
 * and the scalar reference. See ternary.h for the contract, the exact output
 * formula and the packed weight layout (T16x16). The matmul is per ISA, one
 * file each, selected by simd.h: ternary_avx512.c, ternary_avx2.c,
 * ternary_neon.c, ternary_scalar.c.
 */
#include "ternary_impl.h"

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
#if defined(TLC_ISA_AVX512)
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
#elif defined(TLC_ISA_AVX2)
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
#if defined(TLC_ISA_AVX512)
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
#elif defined(TLC_ISA_AVX2)
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
