/*
 * Tests for the ternary microkernels (ternary.c). Build once per ISA variant, e.g.
 *   clang-22 -O2 -std=c11 -march=x86-64-v4 -mavx512vnni -mavx512bw -mavx512vl -mavx512bf16 \
 *       ternary_test.c ternary.c -lm -o ternary_test_avx512
 *   clang-22 -O2 -std=c11 -mavx2 -mfma -mf16c ternary_test.c ternary.c -lm -o ternary_test_avx2
 *   clang-22 -O2 -std=c11 ternary_test.c ternary.c -lm -o ternary_test_scalar
 * Exit status 0 on success. Checks:
 *   - pack/unpack round trip, N tails (padding rows)
 *   - tlc_quantize_rows bit-exact vs the float32 reference formula (incl. ties, outliers)
 *   - tlc_ternary_matmul_ref vs a naive matmul on the unpacked W (same formula)
 *   - tlc_ternary_matmul (optimized) == reference, bit-exact, for M in {1,3,17,64,512},
 *     several N (incl. N % 16 != 0) and K, full and split/unaligned n ranges
 *   - int32 range extremes (xq = -128 / 127 with all-(+1) / all-(-1) weights, K = 14336)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ternary.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static float frand(void) { return (float)((rng() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

static int failures = 0;
#define CHECK(cond, ...)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      if (failures < 20) {                                                              \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                            \
        fprintf(stderr, __VA_ARGS__);                                                   \
        fprintf(stderr, "\n");                                                          \
      }                                                                                 \
      ++failures;                                                                       \
    }                                                                                   \
  } while (0)

/* reference quantization, straight from the formula (float32, nearbyintf = RNE). */
static void quant_ref(const float *x, int64_t K, int8_t *q, float *inv, int32_t *rs) {
  float amax = 0.0f;
  for (int64_t k = 0; k < K; ++k) amax = fmaxf(amax, fabsf(x[k]));
  float s = 127.0f / fmaxf(amax, 1e-5f);
  int32_t sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    float v = nearbyintf(x[k] * s);
    v = fminf(fmaxf(v, -128.0f), 127.0f);
    q[k] = (int8_t)v;
    sum += (int32_t)v;
  }
  *inv = 1.0f / s;
  *rs = sum;
}

static void fill_x(float *x, int64_t M, int64_t K, int style) {
  for (int64_t i = 0; i < M * K; ++i) {
    float v = frand();
    if (style == 1 && (rng() % 97) == 0) v *= 50.0f; /* outliers */
    if (style == 2) v = (float)((int)(rng() % 511) - 255) * 0.5f; /* many exact .5 ties */
    x[i] = v;
  }
  if (style == 2) /* make amax exactly 127 in every row so that s == 1 and ties survive */
    for (int64_t m = 0; m < M; ++m) x[m * K] = (m & 1) ? -127.0f : 127.0f;
}

static void fill_w(int8_t *w, int64_t N, int64_t K, int style) {
  for (int64_t i = 0; i < N * K; ++i) {
    if (style == 0) w[i] = (int8_t)((int)(rng() % 3) - 1);
    else if (style == 1) w[i] = (int8_t)((rng() % 4) ? 0 : ((rng() & 1) ? 1 : -1)); /* sparse */
    else w[i] = (int8_t)((rng() & 1) ? 1 : -1);
  }
}

static void test_quantize(void) {
  const int64_t Ks[] = {1, 5, 16, 31, 32, 33, 128, 2560, 6912};
  for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ++ki) {
    for (int style = 0; style < 3; ++style) {
      const int64_t K = Ks[ki], M = 7, ldx = K + 3;
      float *x = malloc(sizeof(float) * M * ldx);
      for (int64_t m = 0; m < M; ++m) fill_x(x + m * ldx, 1, K, style);
      memset(x + 2 * ldx, 0, sizeof(float) * K); /* an all-zero row (amax clamp) */
      for (int64_t k = 0; k < K; ++k) x[3 * ldx + k] = 1e-7f * (float)(k % 5); /* tiny */
      int8_t *q = malloc(M * K), *q2 = malloc(K);
      float inv[7];
      int32_t rs[7];
      tlc_quantize_rows(x, ldx, M, K, q, inv, rs);
      for (int64_t m = 0; m < M; ++m) {
        float inv2;
        int32_t rs2;
        quant_ref(x + m * ldx, K, q2, &inv2, &rs2);
        CHECK(memcmp(q + m * K, q2, K) == 0, "quantize xq K=%lld style=%d row=%lld", (long long)K, style, (long long)m);
        CHECK(memcmp(&inv[m], &inv2, 4) == 0, "quantize inv_scale K=%lld row=%lld %g vs %g", (long long)K, (long long)m, inv[m], inv2);
        CHECK(rs[m] == rs2, "quantize row_sum K=%lld row=%lld %d vs %d", (long long)K, (long long)m, rs[m], rs2);
      }
      free(x);
      free(q);
      free(q2);
    }
  }
}

/* naive y from the unpacked W, same final formula as the contract */
static void matmul_naive(const int8_t *xq, const float *inv, int64_t M, int64_t K,
                         const int8_t *w, int64_t N, float gamma, float *y, int64_t ldy) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (int32_t)xq[m * K + k] * (int32_t)w[n * K + k];
      y[m * ldy + n] = (float)acc * (gamma * inv[m]);
    }
}

static void test_matmul(int64_t M, int64_t N, int64_t K, int xstyle, int wstyle, int check_naive) {
  const int64_t ldy = N + 5;
  const float gamma = 0.7318f;
  float *x = malloc(sizeof(float) * M * K);
  int8_t *w = malloc(N * K), *w2 = malloc(N * K), *xq = malloc(M * K);
  uint8_t *wp = malloc(tlc_ternary_packed_size(N, K));
  float *inv = malloc(sizeof(float) * M);
  int32_t *rs = malloc(sizeof(int32_t) * M);
  float *yref = malloc(sizeof(float) * M * ldy), *yopt = malloc(sizeof(float) * M * ldy);
  fill_x(x, M, K, xstyle);
  fill_w(w, N, K, wstyle);
  CHECK(tlc_ternary_packed_size(N, K) == (size_t)((N + 15) / 16) * 16 * K / 4, "packed size");
  tlc_ternary_pack(w, N, K, wp);
  tlc_ternary_unpack(wp, N, K, w2);
  CHECK(memcmp(w, w2, N * K) == 0, "pack/unpack roundtrip N=%lld K=%lld", (long long)N, (long long)K);
  tlc_quantize_rows(x, K, M, K, xq, inv, rs);

  for (int64_t i = 0; i < M * ldy; ++i) yref[i] = yopt[i] = -12345.0f;
  tlc_ternary_matmul_ref(xq, inv, rs, M, K, wp, N, gamma, yref, ldy, 0, N);
  if (check_naive) {
    float *yn = malloc(sizeof(float) * M * ldy);
    for (int64_t i = 0; i < M * ldy; ++i) yn[i] = -12345.0f;
    matmul_naive(xq, inv, M, K, w, N, gamma, yn, ldy);
    CHECK(memcmp(yn, yref, sizeof(float) * M * ldy) == 0, "ref vs naive M=%lld N=%lld K=%lld", (long long)M, (long long)N, (long long)K);
    free(yn);
  }
  /* full range */
  tlc_ternary_matmul(xq, inv, rs, M, K, wp, N, gamma, yopt, ldy, 0, N);
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < M * ldy; ++i)
    if (memcmp(&yopt[i], &yref[i], 4) != 0) {
      if (first < 0) first = i;
      ++bad;
    }
  CHECK(bad == 0, "opt vs ref M=%lld N=%lld K=%lld xs=%d ws=%d: %lld mismatches, first at m=%lld n=%lld: %g vs %g",
        (long long)M, (long long)N, (long long)K, xstyle, wstyle, (long long)bad,
        first < 0 ? -1LL : (long long)(first / ldy), first < 0 ? -1LL : (long long)(first % ldy),
        first < 0 ? 0.0 : (double)yopt[first], first < 0 ? 0.0 : (double)yref[first]);
  /* split ranges: tile-aligned thirds, then random unaligned cuts */
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t i = 0; i < M * ldy; ++i) yopt[i] = -12345.0f;
    int64_t cuts[6] = {0, 0, 0, 0, 0, N};
    for (int c = 1; c < 5; ++c) {
      int64_t v = (int64_t)(rng() % (uint64_t)(N + 1));
      if (pass == 0) v = (v / 16) * 16;
      cuts[c] = v;
    }
    for (int a = 1; a < 5; ++a) /* sort */
      for (int b = a; b > 0 && cuts[b] < cuts[b - 1]; --b) {
        int64_t tmp = cuts[b];
        cuts[b] = cuts[b - 1];
        cuts[b - 1] = tmp;
      }
    for (int c = 0; c < 5; ++c)
      tlc_ternary_matmul(xq, inv, rs, M, K, wp, N, gamma, yopt, ldy, cuts[c], cuts[c + 1]);
    CHECK(memcmp(yopt, yref, sizeof(float) * M * ldy) == 0, "split ranges pass %d M=%lld N=%lld K=%lld", pass, (long long)M, (long long)N, (long long)K);
  }
  free(x); free(w); free(w2); free(xq); free(wp); free(inv); free(rs); free(yref); free(yopt);
}

/* extremes: |acc| as large as it gets, and the 4^j-scaled GEMV accumulators. */
static void test_extremes(void) {
  const int64_t K = 14336, N = 48;
  for (int M = 1; M <= 3; M += 2) {
    int8_t *w = malloc(N * K), *xq = malloc(M * K);
    uint8_t *wp = malloc(tlc_ternary_packed_size(N, K));
    float inv[3] = {1.0f, 0.5f, 0.25f};
    int32_t rs[3];
    float yref[3 * 48], yopt[3 * 48];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) w[n * K + k] = (int8_t)((n % 3) - 1);
    for (int m = 0; m < M; ++m) {
      int32_t s = 0;
      for (int64_t k = 0; k < K; ++k) {
        xq[m * K + k] = (m == 0) ? -128 : 127;
        s += xq[m * K + k];
      }
      rs[m] = s;
    }
    tlc_ternary_pack(w, N, K, wp);
    tlc_ternary_matmul_ref(xq, inv, rs, M, K, wp, N, 1.0f, yref, N, 0, N);
    tlc_ternary_matmul(xq, inv, rs, M, K, wp, N, 1.0f, yopt, N, 0, N);
    CHECK(memcmp(yref, yopt, sizeof(float) * M * N) == 0, "extremes M=%d", M);
    CHECK(yref[2] == -128.0f * 14336.0f, "extreme value %g", yref[2]);
    free(w); free(xq); free(wp);
  }
}

int main(void) {
  printf("ternary_test: isa=%d (%s)\n", tlc_ternary_isa(),
         tlc_isa_name(tlc_ternary_isa()));
  test_quantize();
  test_extremes();
  const int64_t Ms[] = {1, 3, 17, 64, 512};
  const int64_t NKs[][2] = {{16, 16}, {48, 128}, {100, 64}, {64, 256}, {263, 128}, {160, 2560}, {37, 6912}};
  int combos = 0;
  for (size_t a = 0; a < sizeof Ms / sizeof Ms[0]; ++a)
    for (size_t b = 0; b < sizeof NKs / sizeof NKs[0]; ++b) {
      const int64_t M = Ms[a], N = NKs[b][0], K = NKs[b][1];
      if (M * N * K > 512ll * 263 * 128 && M > 64) continue; /* keep the scalar ref quick */
      const int naive = M * N * K <= 64ll * 263 * 256;
      test_matmul(M, N, K, (int)(combos % 3), (int)((combos / 3) % 3), naive);
      ++combos;
    }
  /* all weight/activation styles on one mid-size shape */
  for (int xs = 0; xs < 3; ++xs)
    for (int ws = 0; ws < 3; ++ws) test_matmul(9, 80, 512, xs, ws, 1), ++combos;
  test_matmul(512, 64, 2560, 1, 0, 0), ++combos;
  /* small shapes / every GEMM row-tail (M = 2..9) and single-row N */
  for (int64_t M = 2; M <= 9; ++M) test_matmul(M, 1 + 16 * M, 32, (int)(M % 3), 0, 1), ++combos;
  test_matmul(1, 1, 16, 0, 0, 1), ++combos;
  test_matmul(5, 1, 4096, 1, 2, 1), ++combos;
  printf("ternary_test: %d matmul configurations, %s (%d failures)\n", combos,
         failures ? "FAILED" : "all passed", failures);
  return failures ? 1 : 0;
}
