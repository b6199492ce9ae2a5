/*
 * Scalar math of the C microkernels without libm (they are linked as
 * bitcode into modules that carry no libm dependency).
 */
#ifndef TLC_KERNELS_MATHF_H
#define TLC_KERNELS_MATHF_H

#include <stdint.h>

/* exp(x) for x <= 0 to ~2 ulp (Cephes-style: 2^n * poly(r)), written so that
 * loops over it vectorize; exp(-inf) = 0. The floor is an integer
 * conversion (floorf is a libcall on baseline x86-64). */
static inline float tlc_expf(float x) {
  x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
  float y = x * 1.44269504088896341f + 0.5f;
  int32_t ni = (int32_t)y;
  ni -= (float)ni > y;
  float n = (float)ni;
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } e = {(ni + 127) << 23};
  return p * e.f;
}

#endif /* TLC_KERNELS_MATHF_H */
