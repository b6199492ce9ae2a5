/*
 * Static throughput of the AArch64 ternary GEMV inner step (one 64-byte
 * chunk = 16 rows x 16 k = 256 weights; ternary_neon.c's gemv_tile) on the
 * phone cores' LLVM scheduling models, for each ISA build:
 *
 *   for cpu in oryon-1 cortex-x4 cortex-a720 cortex-a76 apple-a18 cortex-a55; do
 *     for isa in armv8-a armv8.2-a+dotprod; do
 *       clang-22 --target=aarch64-linux-gnu -O3 -march=$isa -mcpu=$cpu -S \
 *         -I targets/llvm-cpu/kernels bench/kernels/mca_ternary_neon.c -o - |
 *         llvm-mca-22 -mtriple=aarch64 -mcpu=$cpu -mattr=+dotprod -iterations=200
 *     done
 *   done
 *
 * (bench/mca_ternary.sh runs it and prints cycles per chunk.) The region is
 * the loop body of gemv_tile, unrolled for four tile streams as the chunk
 * loop is after inlining.
 */
#include "simd.h"

#include <stdint.h>

void gemv_step(const int8_t *x, const uint8_t *w, int32x4_t *a0, int32x4_t *a1,
               int32x4_t *a2, long nblk) {
  const uint8x16_t m0 = vdupq_n_u8(0x03), m1 = vdupq_n_u8(0x0C), m2 = vdupq_n_u8(0x30);
  for (long b = 0; b < nblk; ++b) {
    __asm__ volatile("# LLVM-MCA-BEGIN chunk" ::: "memory");
    const int8x16_t xv = vld1q_s8(x + 16 * b);
    const int8x16_t x0 = TLC_BCAST4(xv, 0), x1 = TLC_BCAST4(xv, 1);
    const int8x16_t x2 = TLC_BCAST4(xv, 2), x3 = TLC_BCAST4(xv, 3);
    const uint8_t *chunk = w + 64 * b;
    for (int q = 0; q < 4; ++q) {
      const uint8x16_t v = vld1q_u8(chunk + 16 * q);
      a0[q] = tlc_sdot(a0[q], vreinterpretq_s8_u8(vandq_u8(v, m0)), x0);
      a1[q] = tlc_sdot(a1[q], vreinterpretq_s8_u8(vandq_u8(v, m1)), x1);
      a2[q] = tlc_sdot(a2[q], vreinterpretq_s8_u8(vandq_u8(v, m2)), x2);
      a0[q] = tlc_sdot(a0[q], vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), x3);
    }
    __asm__ volatile("# LLVM-MCA-END chunk" ::: "memory");
  }
}
