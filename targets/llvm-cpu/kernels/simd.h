/*
 * The one ISA mapping of the microkernels: which build this is (decided here
 * once, from the compiler's predefined macros), float vectors for the float
 * kernels (LM head, attention, training), and the few integer-dot primitives
 * the ARM kernels are written against, so that one kernel source serves
 * plain NEON, NEON + dotprod (SDOT) and NEON + i8mm (SMMLA/USDOT).
 *
 *   TLC_ISA_AVX512  AVX-512 VNNI + BW + VL       (x86-64-v4 class)
 *   TLC_ISA_AVX2    AVX2 + FMA                   (x86-64-v3)
 *   TLC_ISA_NEON    AArch64 Advanced SIMD, with TLC_ISA_DOTPROD and
 *                   TLC_ISA_I8MM when the build has those extensions
 *   TLC_ISA_SCALAR  anything else (portable C)
 */
#ifndef TLC_KERNELS_SIMD_H
#define TLC_KERNELS_SIMD_H

#include <stdint.h>

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
#endif

#define TLC_AI static inline __attribute__((always_inline, unused))

/*
 * Float vectors: TLC_VF_LANES f32 lanes of tlc_vf (undefined on scalar
 * builds, whose kernels take their plain-C paths). Loads widen bf16 (exact)
 * and int8; tlc_vf_sum's order is fixed per build, so results do not depend
 * on how a thread pool splits the work.
 */
#if defined(TLC_ISA_AVX512)
#define TLC_VF_LANES 16
typedef __m512 tlc_vf;
TLC_AI tlc_vf tlc_vf_zero(void) { return _mm512_setzero_ps(); }
TLC_AI tlc_vf tlc_vf_set1(float v) { return _mm512_set1_ps(v); }
TLC_AI tlc_vf tlc_vf_load(const float *p) { return _mm512_loadu_ps(p); }
TLC_AI void tlc_vf_store(float *p, tlc_vf v) { _mm512_storeu_ps(p, v); }
TLC_AI tlc_vf tlc_vf_load_bf16(const uint16_t *p) {
  __m256i h = _mm256_loadu_si256((const __m256i *)p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
TLC_AI tlc_vf tlc_vf_load_i8(const int8_t *p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
/* a * b + c */
TLC_AI tlc_vf tlc_vf_fma(tlc_vf a, tlc_vf b, tlc_vf c) {
  return _mm512_fmadd_ps(a, b, c);
}
TLC_AI float tlc_vf_sum(tlc_vf v) { return _mm512_reduce_add_ps(v); }
#elif defined(TLC_ISA_AVX2)
#define TLC_VF_LANES 8
typedef __m256 tlc_vf;
TLC_AI tlc_vf tlc_vf_zero(void) { return _mm256_setzero_ps(); }
TLC_AI tlc_vf tlc_vf_set1(float v) { return _mm256_set1_ps(v); }
TLC_AI tlc_vf tlc_vf_load(const float *p) { return _mm256_loadu_ps(p); }
TLC_AI void tlc_vf_store(float *p, tlc_vf v) { _mm256_storeu_ps(p, v); }
TLC_AI tlc_vf tlc_vf_load_bf16(const uint16_t *p) {
  __m128i h = _mm_loadu_si128((const __m128i *)p);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
TLC_AI tlc_vf tlc_vf_load_i8(const int8_t *p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
TLC_AI tlc_vf tlc_vf_fma(tlc_vf a, tlc_vf b, tlc_vf c) {
  return _mm256_fmadd_ps(a, b, c);
}
TLC_AI float tlc_vf_sum(tlc_vf v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#elif defined(TLC_ISA_NEON)
#define TLC_VF_LANES 4
typedef float32x4_t tlc_vf;
TLC_AI tlc_vf tlc_vf_zero(void) { return vdupq_n_f32(0.0f); }
TLC_AI tlc_vf tlc_vf_set1(float v) { return vdupq_n_f32(v); }
TLC_AI tlc_vf tlc_vf_load(const float *p) { return vld1q_f32(p); }
TLC_AI void tlc_vf_store(float *p, tlc_vf v) { vst1q_f32(p, v); }
TLC_AI tlc_vf tlc_vf_load_bf16(const uint16_t *p) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}
TLC_AI tlc_vf tlc_vf_load_i8(const int8_t *p) {
  int32_t four;
  __builtin_memcpy(&four, p, 4);
  int8x8_t b = vreinterpret_s8_s32(vdup_n_s32(four));
  return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(b))));
}
TLC_AI tlc_vf tlc_vf_fma(tlc_vf a, tlc_vf b, tlc_vf c) {
  return vfmaq_f32(c, a, b);
}
TLC_AI float tlc_vf_sum(tlc_vf v) { return vaddvq_f32(v); }
#endif

/* One fused multiply-add (a * b + c), as the vector paths round, for their
 * scalar tails. */
#if defined(TLC_ISA_AVX512) || defined(TLC_ISA_AVX2)
TLC_AI float tlc_fma1(float a, float b, float c) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}
#elif defined(TLC_ISA_NEON)
TLC_AI float tlc_fma1(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#else
TLC_AI float tlc_fma1(float a, float b, float c) { return a * b + c; }
#endif

/* Prefetch for reading into L1. */
#define TLC_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)

#if defined(TLC_ISA_NEON)

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
