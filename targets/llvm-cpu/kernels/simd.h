/*
 * The one ISA mapping of the microkernels: which build this is (decided here
 * once, from the compiler's predefined macros) and the few integer-dot
 * primitives the ARM kernels are written against, so that one kernel source
 * serves plain NEON, NEON + dotprod (SDOT) and NEON + i8mm (SMMLA/USDOT).
 *
 *   TLC_ISA_AVX512  AVX-512 VNNI + BW + VL       (x86-64-v4 class)
 *   TLC_ISA_AVX2    AVX2 + FMA                   (x86-64-v3)
 *   TLC_ISA_NEON    AArch64 Advanced SIMD, with TLC_ISA_DOTPROD and
 *                   TLC_ISA_I8MM when the build has those extensions
 *   TLC_ISA_SCALAR  anything else (portable C)
 */
#ifndef TLC_KERNELS_SIMD_H
#define TLC_KERNELS_SIMD_H

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) &&          \
    defined(__AVX512F__)
#define TLC_ISA_AVX512 1
#elif defined(__AVX2__)
#define TLC_ISA_AVX2 1
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define TLC_ISA_NEON 1
#if defined(__ARM_FEATURE_DOTPROD)
#define TLC_ISA_DOTPROD 1
#endif
#if defined(__ARM_FEATURE_MATMUL_INT8) && defined(__ARM_FEATURE_DOTPROD)
#define TLC_ISA_I8MM 1
#endif
#else
#define TLC_ISA_SCALAR 1
#endif

#if defined(TLC_ISA_AVX512) || defined(TLC_ISA_AVX2)
#include <immintrin.h>
#endif

#if defined(TLC_ISA_NEON)
#include <arm_neon.h>

/* acc[i] += sum_{s<4} a[4i+s] * b[4i+s] (signed bytes): SDOT, or its
 * plain-NEON equivalent (two widening multiplies and pairwise adds; the int16
 * pair sums are exact for |a*b| <= 128*128... here |a| <= 2 or |b| <= 8). */
static inline __attribute__((always_inline)) int32x4_t tlc_sdot(int32x4_t acc, int8x16_t a,
                                                                int8x16_t b) {
#if defined(TLC_ISA_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
  const int16x8_t hi = vmull_high_s8(a, b);
  return vpadalq_s16(acc, vpaddq_s16(lo, hi));
#endif
}

/* The 4 bytes of lane `j` (0..3) of x, in every 32-bit lane. */
#define TLC_BCAST4(x, j) vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), j))
#endif

#endif /* TLC_KERNELS_SIMD_H */
