/*
 * Helpers shared by the microkernel tests (dispatch_test.c, train_test.c):
 * a seeded xorshift source, the relative-L2 check against a double
 * reference, bf16 rounding.
 */
#ifndef TLC_KERNELS_KERNEL_TEST_H
#define TLC_KERNELS_KERNEL_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;
static uint64_t rng = 88172645463325252ull;
static double uniform(void) { /* xorshift64, in [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / (double)(1ull << 52) - 1.0;
}

/* Relative L2 error of `got` against `want` within `tol`; prints one line. */
static void check(const char *what, const float *got, const double *want,
                  int64_t n, double tol) {
  double err = 0, ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    ref += want[i] * want[i];
  }
  double rel = sqrt(err / (ref > 0 ? ref : 1));
  int ok = rel <= tol && !isnan(rel);
  printf("%-58s rel_l2 %.2e %s\n", what, rel, ok ? "ok" : "FAIL");
  failures += !ok;
}

/* Round to nearest even bf16, and back. */
static inline uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
static inline float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

#endif /* TLC_KERNELS_KERNEL_TEST_H */
