/*
 * Ternary matmul for AArch64 (contract and T16x16 layout: ternary.h). One
 * source for three builds (simd.h): plain NEON, NEON + dotprod (SDOT) and
 * NEON + i8mm (SMMLA for M >= 2). Exact int32 accumulation, then the same two
 * float32 multiplies as every other build, so results are bit-identical.
 *
 * A 64-byte chunk read as four 16-byte vectors v[q] holds rows 4q..4q+3 of
 * the tile, 4 bytes each; bits 2j..2j+1 of byte s are the code (w+1) of
 * column 16b+4j+s. So plane j of v[q], read as int32 lanes, is exactly one
 * SDOT operand (4 rows x 4 k) against the 4 activation bytes 16b+4j..+3.
 */
#include "simd.h"
#include "ternary.h"

#if defined(TLC_ISA_NEON)


int tlc_ternary_isa(void) {
#if defined(TLC_ISA_I8MM)
  return 5;
#elif defined(TLC_ISA_DOTPROD)
  return 4;
#else
  return 3;
#endif
}

/* y[n0 + 4q + i] = (float)(acc[q][i] - rs) * sc for the columns in [nb, ne). */
TLC_AI void store_tile(const int32x4_t acc[4], int32_t rs, float sc, float *y, int64_t n0,
                       int64_t nb, int64_t ne) {
  const int32x4_t vrs = vdupq_n_s32(rs);
  const float32x4_t vsc = vdupq_n_f32(sc);
  const int full = n0 >= nb && n0 + 16 <= ne;
  for (int q = 0; q < 4; ++q) {
    const float32x4_t f = vmulq_f32(vcvtq_f32_s32(vsubq_s32(acc[q], vrs)), vsc);
    if (full) {
      vst1q_f32(y + n0 + 4 * q, f);
    } else {
      float lanes[4];
      vst1q_f32(lanes, f);
      for (int i = 0; i < 4; ++i) {
        const int64_t n = n0 + 4 * q + i;
        if (n >= nb && n < ne) y[n] = lanes[i];
      }
    }
  }
}

/* Plane j of a chunk vector: the codes of columns 16b+4j..+3 (0, 1 or 2). */
TLC_AI int8x16_t plane(uint8x16_t v, int j) {
  const uint8x16_t three = vdupq_n_u8(3);
  switch (j) {
  case 0: return vreinterpretq_s8_u8(vandq_u8(v, three));
  case 1: return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), three));
  case 2: return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), three));
  default: return vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
  }
}

/* M == 1: planes 0 and 1 and 2 are masked in place (code<<2j, no shift) and
 * accumulated in registers of their own, rescaled exactly at the end; plane 3
 * is shifted (code<<6 would not fit a signed byte). |a2| <= 16*2*128*K/4. */
TLC_AI void gemv_tile(const int8_t *x, int64_t nblk, const uint8_t *w, int32x4_t out[4]) {
  const uint8x16_t m0 = vdupq_n_u8(0x03), m1 = vdupq_n_u8(0x0C), m2 = vdupq_n_u8(0x30);
  int32x4_t a0[4], a1[4], a2[4];
  for (int q = 0; q < 4; ++q) a0[q] = a1[q] = a2[q] = vdupq_n_s32(0);
  for (int64_t b = 0; b < nblk; ++b) {
    const int8x16_t xv = vld1q_s8(x + 16 * b);
    const int8x16_t x0 = TLC_BCAST4(xv, 0), x1 = TLC_BCAST4(xv, 1);
    const int8x16_t x2 = TLC_BCAST4(xv, 2), x3 = TLC_BCAST4(xv, 3);
    const uint8_t *chunk = w + 64 * b;
    __builtin_prefetch(chunk + 1024);
    for (int q = 0; q < 4; ++q) {
      const uint8x16_t v = vld1q_u8(chunk + 16 * q);
      a0[q] = tlc_sdot(a0[q], vreinterpretq_s8_u8(vandq_u8(v, m0)), x0);
      a1[q] = tlc_sdot(a1[q], vreinterpretq_s8_u8(vandq_u8(v, m1)), x1);
      a2[q] = tlc_sdot(a2[q], vreinterpretq_s8_u8(vandq_u8(v, m2)), x2);
      a0[q] = tlc_sdot(a0[q], vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), x3);
    }
  }
  for (int q = 0; q < 4; ++q)
    out[q] = vaddq_s32(a0[q], vaddq_s32(vshrq_n_s32(a1[q], 2), vshrq_n_s32(a2[q], 4)));
}

/* M >= 2 with SDOT: MR activation rows share each decoded plane. */
TLC_AI void gemm_rows_sdot(const int8_t *xq, int64_t K, const float *inv_scale,
                           const int32_t *row_sum, int64_t m0, const int MR,
                           const uint8_t *w, float gamma, float *y, int64_t ldy, int64_t n0,
                           int64_t nb, int64_t ne) {
  int32x4_t acc[4][4];
  for (int m = 0; m < MR; ++m)
    for (int q = 0; q < 4; ++q) acc[m][q] = vdupq_n_s32(0);
  const int64_t nblk = K / 16;
  for (int64_t b = 0; b < nblk; ++b) {
    int8x16_t xv[4];
    for (int m = 0; m < MR; ++m) xv[m] = vld1q_s8(xq + (m0 + m) * K + 16 * b);
    uint8x16_t v[4];
    for (int q = 0; q < 4; ++q) v[q] = vld1q_u8(w + 64 * b + 16 * q);
    for (int j = 0; j < 4; ++j) {
      int8x16_t d[4];
      for (int q = 0; q < 4; ++q) d[q] = plane(v[q], j);
      for (int m = 0; m < MR; ++m) {
        int8x16_t xb;
        switch (j) {
        case 0: xb = TLC_BCAST4(xv[m], 0); break;
        case 1: xb = TLC_BCAST4(xv[m], 1); break;
        case 2: xb = TLC_BCAST4(xv[m], 2); break;
        default: xb = TLC_BCAST4(xv[m], 3); break;
        }
        for (int q = 0; q < 4; ++q) acc[m][q] = tlc_sdot(acc[m][q], d[q], xb);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    store_tile(acc[m], row_sum[m0 + m], gamma * inv_scale[m0 + m], y + (m0 + m) * ldy, n0,
               nb, ne);
}

#if defined(TLC_ISA_I8MM)
/* M >= 2 with SMMLA: two activation rows x two weight rows x 8 k per
 * instruction. Planes j and j+1 zipped per 32-bit lane give each weight row's
 * 8 consecutive k (16b+4j .. 16b+4j+7); the activation operand is the same 8
 * bytes of rows m and m+1. acc lanes: [r0.m0, r0.m1, r1.m0, r1.m1]. */
TLC_AI void gemm_rows_mmla(const int8_t *xq, int64_t K, const float *inv_scale,
                           const int32_t *row_sum, int64_t m0, const int MP,
                           const uint8_t *w, float gamma, float *y, int64_t ldy, int64_t n0,
                           int64_t nb, int64_t ne) {
  int32x4_t acc[2][4][2]; /* [row pair of m][q][row pair of the tile group] */
  for (int p = 0; p < MP; ++p)
    for (int q = 0; q < 4; ++q) acc[p][q][0] = acc[p][q][1] = vdupq_n_s32(0);
  const int64_t nblk = K / 16;
  for (int64_t b = 0; b < nblk; ++b) {
    int8x16_t xlo[2], xhi[2]; /* k 0..7 and 8..15 of rows m, m+1 */
    for (int p = 0; p < MP; ++p) {
      const int8x16_t r0 = vld1q_s8(xq + (m0 + 2 * p) * K + 16 * b);
      const int8x16_t r1 = vld1q_s8(xq + (m0 + 2 * p + 1) * K + 16 * b);
      xlo[p] = vcombine_s8(vget_low_s8(r0), vget_low_s8(r1));
      xhi[p] = vcombine_s8(vget_high_s8(r0), vget_high_s8(r1));
    }
    for (int q = 0; q < 4; ++q) {
      const uint8x16_t v = vld1q_u8(w + 64 * b + 16 * q);
      const int32x4_t p0 = vreinterpretq_s32_s8(plane(v, 0)), p1 = vreinterpretq_s32_s8(plane(v, 1));
      const int32x4_t p2 = vreinterpretq_s32_s8(plane(v, 2)), p3 = vreinterpretq_s32_s8(plane(v, 3));
      const int8x16_t lo01 = vreinterpretq_s8_s32(vzip1q_s32(p0, p1)); /* rows 4q, 4q+1 */
      const int8x16_t hi01 = vreinterpretq_s8_s32(vzip2q_s32(p0, p1)); /* rows 4q+2, 4q+3 */
      const int8x16_t lo23 = vreinterpretq_s8_s32(vzip1q_s32(p2, p3));
      const int8x16_t hi23 = vreinterpretq_s8_s32(vzip2q_s32(p2, p3));
      for (int p = 0; p < MP; ++p) {
        acc[p][q][0] = vmmlaq_s32(acc[p][q][0], lo01, xlo[p]);
        acc[p][q][0] = vmmlaq_s32(acc[p][q][0], lo23, xhi[p]);
        acc[p][q][1] = vmmlaq_s32(acc[p][q][1], hi01, xlo[p]);
        acc[p][q][1] = vmmlaq_s32(acc[p][q][1], hi23, xhi[p]);
      }
    }
  }
  for (int p = 0; p < MP; ++p) {
    int32x4_t r0[4], r1[4];
    for (int q = 0; q < 4; ++q) {
      r0[q] = vuzp1q_s32(acc[p][q][0], acc[p][q][1]); /* row m: tile rows 4q..4q+3 */
      r1[q] = vuzp2q_s32(acc[p][q][0], acc[p][q][1]); /* row m+1 */
    }
    const int64_t m = m0 + 2 * p;
    store_tile(r0, row_sum[m], gamma * inv_scale[m], y + m * ldy, n0, nb, ne);
    store_tile(r1, row_sum[m + 1], gamma * inv_scale[m + 1], y + (m + 1) * ldy, n0, nb, ne);
  }
}
#endif

void tlc_ternary_matmul(const int8_t *xq, const float *inv_scale, const int32_t *row_sum,
                        int64_t M, int64_t K, const uint8_t *w_packed, int64_t N,
                        float gamma, float *y, int64_t ldy, int64_t n_begin,
                        int64_t n_end) {
  (void)N;
  if (M <= 0 || n_begin >= n_end) return;
  const int64_t nblk = K / 16, tstride = nblk * 64;
  const int64_t t0 = n_begin / 16, t1 = (n_end + 15) / 16;
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t *w = w_packed + t * tstride;
    if (M == 1) {
      int32x4_t acc[4];
      gemv_tile(xq, nblk, w, acc);
      store_tile(acc, row_sum[0], gamma * inv_scale[0], y, 16 * t, n_begin, n_end);
      continue;
    }
    int64_t m = 0;
#if defined(TLC_ISA_I8MM)
    for (; m + 4 <= M; m += 4)
      gemm_rows_mmla(xq, K, inv_scale, row_sum, m, 2, w, gamma, y, ldy, 16 * t, n_begin,
                     n_end);
    if (m + 2 <= M) {
      gemm_rows_mmla(xq, K, inv_scale, row_sum, m, 1, w, gamma, y, ldy, 16 * t, n_begin,
                     n_end);
      m += 2;
    }
#else
    for (; m + 4 <= M; m += 4)
      gemm_rows_sdot(xq, K, inv_scale, row_sum, m, 4, w, gamma, y, ldy, 16 * t, n_begin,
                     n_end);
    if (m + 2 <= M) {
      gemm_rows_sdot(xq, K, inv_scale, row_sum, m, 2, w, gamma, y, ldy, 16 * t, n_begin,
                     n_end);
      m += 2;
    }
#endif
    if (m < M)
      gemm_rows_sdot(xq, K, inv_scale, row_sum, m, 1, w, gamma, y, ldy, 16 * t, n_begin,
                     n_end);
  }
}

#endif /* TLC_ISA_NEON */
