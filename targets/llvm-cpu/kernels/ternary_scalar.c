/*
 * tlc_ternary_matmul for portable C (contract and layout: ternary.h). This file
 * is compiled into every build and is empty unless simd.h selects TLC_ISA_SCALAR.
 */
#include "ternary_impl.h"

#if defined(TLC_ISA_SCALAR)
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

#endif /* TLC_ISA_SCALAR */
