/*
 * Private helpers of the ternary microkernels (ternary.c and the per-ISA
 * matmul files ternary_<isa>.c): builtin memcpy, inlining macros, exact
 * round-half-even quantization of one value, tile masks.
 */
#ifndef TLC_TERNARY_IMPL_H
#define TLC_TERNARY_IMPL_H

#include "simd.h"
#include "ternary.h"

/* memcpy/memset via the compiler builtins so the files need no libc headers
 * (freestanding; the builtins inline or become plain memcpy/memset calls). */
#if defined(__GNUC__) || defined(__clang__)
#define tlc_memcpy __builtin_memcpy
#define tlc_memset __builtin_memset
#else
#include <string.h>
#define tlc_memcpy memcpy
#define tlc_memset memset
#endif

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

#endif /* TLC_TERNARY_IMPL_H */
