/*
 * The kernels of dispatch.c (LM head products in bf16/f32/int8, attention,
 * the quantize and ternary adapters) against plain double-precision
 * references on random data, with shapes that exercise the vector paths and
 * their tails, split into several thread ranges. Exit status 0 on success.
 * Built once per ISA variant (see test/CMakeLists.txt).
 */
#include "kernel_test.h"
#include "ternary.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tlc_k_dense_bf16(const float *x, const uint16_t *w, float *y, int64_t TM,
                      int64_t K, int64_t N, int64_t T, int64_t rows,
                      int64_t begin, int64_t end);
void tlc_k_dense_f32(const float *x, const float *w, float *y, int64_t TM,
                     int64_t K, int64_t N, int64_t T, int64_t rows,
                     int64_t begin, int64_t end);
void tlc_k_dense_i8(const float *x, const int8_t *w, float *y, int64_t TM,
                    int64_t K, int64_t N, int64_t T, int64_t rows,
                    int64_t begin, int64_t end);
void tlc_k_dense_q6(const float *x, const uint8_t *w, float *y, int64_t TM,
                    int64_t K, int64_t N, int64_t T, int64_t rows,
                    int64_t begin, int64_t end);
void tlc_k_attention(const float *q, const float *kc, const float *vc,
                     float *out, int64_t H, int64_t KVH, int64_t P,
                     int64_t HD, float scale, int64_t pos, int64_t begin,
                     int64_t end);
void tlc_k_ternary_matmul_group3(int8_t *q, const uint8_t *w0,
                                 const uint8_t *w1, const uint8_t *w2,
                                 float *y0, float *y1, float *y2, int64_t N0,
                                 int64_t N1, int64_t N2, int64_t TM, int64_t K,
                                 int64_t T, int64_t begin, int64_t end);
void tlc_k_lora_f32(const float *x, const float *A, const float *B, float *y,
                    int64_t K, int64_t N, int64_t R, int64_t TM, float scale,
                    int64_t begin, int64_t end);
void tlc_k_lora_down(const float *x, const float *A, float *u, int64_t K,
                     int64_t R, int64_t begin, int64_t end);
void tlc_k_ternary_lora(int8_t *q, const uint8_t *w, const float *u,
                        const float *B, float *y, int64_t TM, int64_t K,
                        int64_t N, int64_t R, float scale, int64_t T,
                        int64_t begin, int64_t end);
void tlc_k_quantize(const float *x, int8_t *q, int64_t TM, int64_t K,
                    int64_t begin, int64_t end);
void tlc_k_ternary_matmul(int8_t *q, const uint8_t *w, float *y, int64_t TM,
                          int64_t K, int64_t N, int64_t T, int64_t begin,
                          int64_t end);




/* Calls a ranged kernel over [0, units) in `parts` pieces, like the pool. */
#define SPLIT(units, parts, CALL)                                              \
  for (int64_t p_ = 0; p_ < (parts); ++p_) {                                   \
    int64_t begin = (units) * p_ / (parts), end = (units) * (p_ + 1) / (parts); \
    CALL;                                                                      \
  }

static void test_dense(int64_t T, int64_t rows, int64_t K, int64_t N) {
  float *x = malloc(sizeof(float) * T * K), *wf = malloc(sizeof(float) * N * K);
  uint16_t *wb = malloc(2 * N * K);
  int8_t *wi = malloc(N * K + 4 * N);
  float *y = malloc(sizeof(float) * rows * N);
  double *want = malloc(sizeof(double) * rows * N);
  for (int64_t i = 0; i < T * K; ++i)
    x[i] = (float)uniform();
  for (int64_t i = 0; i < N * K; ++i) {
    wb[i] = to_bf16((float)uniform() * 0.1f);
    wf[i] = from_bf16(wb[i]);
  }
  float *scale = (float *)(wi + N * K);
  for (int64_t n = 0; n < N; ++n) {
    scale[n] = 0.01f + 0.001f * (float)(n % 7);
    for (int64_t k = 0; k < K; ++k)
      wi[n * K + k] = (int8_t)(int)(uniform() * 127);
  }
  int64_t units = (N + 15) / 16;
  char name[96];
  for (int kind = 0; kind < 3; ++kind) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          double w = kind == 2 ? wi[n * K + k] * (double)scale[n] : wf[n * K + k];
          s += (double)x[(T - rows + r) * K + k] * w;
        }
        want[r * N + n] = s;
      }
    memset(y, 0, sizeof(float) * rows * N);
    if (kind == 0)
      SPLIT(units, 3, tlc_k_dense_bf16(x, wb, y, T, K, N, T, rows, begin, end))
    else if (kind == 1)
      SPLIT(units, 3, tlc_k_dense_f32(x, wf, y, T, K, N, T, rows, begin, end))
    else
      SPLIT(units, 3, tlc_k_dense_i8(x, wi, y, T, K, N, T, rows, begin, end))
    snprintf(name, sizeof name, "dense %s T=%lld rows=%lld K=%lld N=%lld",
             kind == 0 ? "bf16" : kind == 1 ? "f32" : "i8", (long long)T,
             (long long)rows, (long long)K, (long long)N);
    check(name, y, want, rows * N, 1e-5);
  }
  free(x), free(wf), free(wb), free(wi), free(y), free(want);
}

static void test_attention(int64_t T, int64_t pos, int64_t H, int64_t KVH,
                           int64_t HD) {
  int64_t S = pos + T, DQ = H * HD, DKV = KVH * HD, G = H / KVH;
  float *q = malloc(sizeof(float) * T * DQ), *out = malloc(sizeof(float) * T * DQ);
  float *kc = malloc(sizeof(float) * S * DKV), *vc = malloc(sizeof(float) * S * DKV);
  double *want = malloc(sizeof(double) * T * DQ), *p = malloc(sizeof(double) * S);
  for (int64_t i = 0; i < T * DQ; ++i)
    q[i] = (float)(2 * uniform());
  for (int64_t i = 0; i < S * DKV; ++i) {
    kc[i] = (float)(2 * uniform());
    vc[i] = (float)uniform();
  }
  float scale = 1.0f / sqrtf((float)HD);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const float *qh = q + t * DQ + h * HD;
      int64_t len = pos + t + 1, g = h / G;
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < len; ++j) {
        double s = 0;
        for (int64_t d = 0; d < HD; ++d)
          s += (double)qh[d] * kc[j * DKV + g * HD + d];
        p[j] = s * scale;
        m = p[j] > m ? p[j] : m;
      }
      for (int64_t j = 0; j < len; ++j)
        sum += p[j] = exp(p[j] - m);
      for (int64_t d = 0; d < HD; ++d) {
        double o = 0;
        for (int64_t j = 0; j < len; ++j)
          o += p[j] * vc[j * DKV + g * HD + d];
        want[t * DQ + h * HD + d] = o / sum;
      }
    }
  char name[96];
  for (int64_t P = KVH; P <= H; P += H - KVH > 0 ? H - KVH : 1) { /* KVH, H */
    memset(out, 0, sizeof(float) * T * DQ);
    SPLIT(T * P, 2,
          tlc_k_attention(q, kc, vc, out, H, KVH, P, HD, scale, pos, begin, end))
    snprintf(name, sizeof name,
             "attention T=%lld pos=%lld H=%lld KVH=%lld HD=%lld P=%lld",
             (long long)T, (long long)pos, (long long)H, (long long)KVH,
             (long long)HD, (long long)P);
    check(name, out, want, T * DQ, 1e-5);
  }
  free(q), free(out), free(kc), free(vc), free(want), free(p);
}

/* quantize + ternary_matmul adapters: exact int32 products, scaled. */
static void test_ternary(int64_t TM, int64_t T, int64_t K, int64_t N) {
  float *x = malloc(sizeof(float) * TM * K), *y = malloc(sizeof(float) * TM * N);
  int8_t *w = malloc(N * K), *q = malloc(TM * K + 8 * TM);
  uint8_t *packed = malloc(64 + tlc_ternary_packed_size(N, K));
  double *want = malloc(sizeof(double) * T * N);
  for (int64_t i = 0; i < TM * K; ++i)
    x[i] = (float)uniform() * (i % 97 == 0 ? 30.0f : 1.0f);
  for (int64_t i = 0; i < N * K; ++i)
    w[i] = (int8_t)(uniform() < -1.0 / 3 ? -1 : uniform() < 0.0 ? 0 : 1);
  float gamma = 0.75f;
  memcpy(packed, &gamma, 4);
  tlc_ternary_pack(w, N, K, packed + 64);
  for (int64_t t = 0; t < T; ++t) {
    float amax = 0;
    for (int64_t k = 0; k < K; ++k)
      amax = fabsf(x[t * K + k]) > amax ? fabsf(x[t * K + k]) : amax;
    float s = 127.0f / (amax > 1e-5f ? amax : 1e-5f);
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        float v = nearbyintf(x[t * K + k] * s);
        v = v < -128 ? -128 : v > 127 ? 127 : v;
        acc += (double)v * w[n * K + k];
      }
      want[t * N + n] = acc * gamma / s;
    }
  }
  SPLIT(T, 2, tlc_k_quantize(x, q, TM, K, begin, end))
  SPLIT((N + 63) / 64, 3, tlc_k_ternary_matmul(q, packed, y, TM, K, N, T, begin, end))
  /* The grouped form over three copies, split across ranges that straddle
   * the products, equals three single products. */
  float *g = malloc(sizeof(float) * 3 * TM * N);
  int64_t units = 3 * ((N + 63) / 64);
  SPLIT(units, 4, tlc_k_ternary_matmul_group3(q, packed, packed, packed, g,
                                              g + TM * N, g + 2 * TM * N, N, N,
                                              N, TM, K, T, begin, end))
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < T * N; ++i)
      if (g[c * TM * N + i] != y[i])
        failures += 1, printf("grouped ternary product %lld differs at %lld\n",
                              (long long)c, (long long)i), i = T * N;
  free(g);
  char name[96];
  snprintf(name, sizeof name, "quantize+ternary TM=%lld T=%lld K=%lld N=%lld",
           (long long)TM, (long long)T, (long long)K, (long long)N);
  check(name, y, want, T * N, 1e-6);
  free(x), free(y), free(w), free(q), free(packed), free(want);
}

/* 6-bit head: codes unpacked from the documented layout, activations
 * quantized as the ternary layers do; the kernel's int32 math is exact. */
static void test_q6(int64_t T, int64_t rows, int64_t K, int64_t N) {
  float *x = malloc(sizeof(float) * T * K), *w = malloc(sizeof(float) * N * K);
  float *y = malloc(sizeof(float) * rows * N);
  uint8_t *packed = malloc(tlc_q6_packed_size(N, K));
  double *want = malloc(sizeof(double) * rows * N);
  for (int64_t i = 0; i < T * K; ++i)
    x[i] = (float)uniform();
  for (int64_t i = 0; i < N * K; ++i)
    w[i] = (float)uniform() * 0.05f;
  tlc_q6_pack(w, N, K, packed);
  const float *scale = (const float *)(packed + N * (K / 4 * 3));
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + (T - rows + r) * K;
    float amax = 0;
    for (int64_t k = 0; k < K; ++k)
      amax = fabsf(xr[k]) > amax ? fabsf(xr[k]) : amax;
    float s = 127.0f / (amax > 1e-5f ? amax : 1e-5f);
    for (int64_t n = 0; n < N; ++n) {
      const uint8_t *row = packed + n * (K / 4 * 3);
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const uint8_t *blk = row + (k / 64) * 48;
        int i = (int)(k % 64);
        int lo = i < 32 ? blk[i] & 15 : blk[i - 32] >> 4;
        int hi = (blk[32 + i % 16] >> (2 * (i / 16))) & 3;
        int code = (lo | hi << 4) - 32;
        float q = nearbyintf(xr[k] * s);
        q = q < -128 ? -128 : q > 127 ? 127 : q;
        acc += (double)code * q;
        if (fabs(code * (double)scale[n] - w[n * K + k]) > 0.5 * scale[n] + 1e-7)
          acc = NAN; /* the packer lost a weight */
      }
      want[r * N + n] = acc * scale[n] / s;
    }
  }
  SPLIT((N + 15) / 16, 3, tlc_k_dense_q6(x, packed, y, T, K, N, T, rows, begin, end))
  char name[96];
  snprintf(name, sizeof name, "dense q6 T=%lld rows=%lld K=%lld N=%lld",
           (long long)T, (long long)rows, (long long)K, (long long)N);
  check(name, y, want, rows * N, 1e-6);
  free(x), free(w), free(y), free(packed), free(want);
}

/* want[t][n] += scale * (x[t] A^T) B[n]^T in double. */
static void lora_ref(const float *x, const float *A, const float *B, int64_t T,
                     int64_t K, int64_t N, int64_t R, double scale,
                     double *want) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t r = 0; r < R; ++r) {
        double xa = 0;
        for (int64_t k = 0; k < K; ++k)
          xa += (double)x[t * K + k] * A[r * K + k];
        s += xa * B[n * R + r];
      }
      want[t * N + n] += scale * s;
    }
}

static void test_lora(int64_t T, int64_t K, int64_t N, int64_t R) {
  float *x = malloc(sizeof(float) * T * K), *A = malloc(sizeof(float) * R * K);
  float *B = malloc(sizeof(float) * N * R), *y = malloc(sizeof(float) * T * N);
  double *want = malloc(sizeof(double) * T * N);
  for (int64_t i = 0; i < T * K; ++i) x[i] = (float)uniform();
  for (int64_t i = 0; i < R * K; ++i) A[i] = (float)uniform();
  for (int64_t i = 0; i < N * R; ++i) B[i] = (float)uniform();
  for (int64_t i = 0; i < T * N; ++i)
    want[i] = 0.0;
  lora_ref(x, A, B, T, K, N, R, 2.5, want);
  SPLIT(T, 2, tlc_k_lora_f32(x, A, B, y, K, N, R, T, 2.5f, begin, end))
  check("lora f32", y, want, T * N, 1e-5);
  free(x), free(A), free(B), free(y), free(want);
}

/* The LoRA branch fused with its ternary product equals the product plus
 * a double-precision LoRA reference. */
static void test_ternary_lora(int64_t TM, int64_t T, int64_t K, int64_t N,
                              int64_t R) {
  float *x = malloc(sizeof(float) * TM * K), *y = malloc(sizeof(float) * TM * N);
  float *base = malloc(sizeof(float) * TM * N), *u = malloc(sizeof(float) * TM * R);
  float *A = malloc(sizeof(float) * R * K), *B = malloc(sizeof(float) * N * R);
  int8_t *w = malloc(N * K), *q = malloc(TM * K + 8 * TM);
  uint8_t *packed = malloc(64 + tlc_ternary_packed_size(N, K));
  double *want = malloc(sizeof(double) * T * N);
  for (int64_t i = 0; i < TM * K; ++i) x[i] = (float)uniform();
  for (int64_t i = 0; i < R * K; ++i) A[i] = (float)uniform() * 0.2f;
  for (int64_t i = 0; i < N * R; ++i) B[i] = (float)uniform() * 0.1f;
  for (int64_t i = 0; i < N * K; ++i)
    w[i] = (int8_t)(uniform() < -1.0 / 3 ? -1 : uniform() < 0.0 ? 0 : 1);
  float gamma = 1.25f;
  memcpy(packed, &gamma, 4);
  tlc_ternary_pack(w, N, K, packed + 64);
  SPLIT(T, 2, tlc_k_quantize(x, q, TM, K, begin, end))
  SPLIT((N + 63) / 64, 1, tlc_k_ternary_matmul(q, packed, base, TM, K, N, T, begin, end))
  for (int64_t i = 0; i < T * N; ++i)
    want[i] = base[i];
  lora_ref(x, A, B, T, K, N, R, 2.0, want);
  SPLIT(T, 2, tlc_k_lora_down(x, A, u, K, R, begin, end))
  SPLIT((N + 63) / 64, 3, tlc_k_ternary_lora(q, packed, u, B, y, TM, K, N, R, 2.0f, T, begin, end))
  char name[96];
  snprintf(name, sizeof name, "ternary+lora fused T=%lld K=%lld N=%lld R=%lld",
           (long long)T, (long long)K, (long long)N, (long long)R);
  check(name, y, want, T * N, 1e-6);
  free(x), free(y), free(base), free(u), free(A), free(B), free(w), free(q);
  free(packed), free(want);
}

int main(void) {
  printf("dispatch kernels, ternary isa %d\n", tlc_ternary_isa());
  test_dense(1, 1, 2560, 1000);  /* decode-like, N % 4 != 0 tail */
  test_dense(5, 5, 64, 37);      /* all logits, odd N */
  test_dense(3, 1, 50, 21);      /* K not a multiple of the vector width */
  test_lora(5, 96, 40, 4);
  test_q6(1, 1, 2560, 1001);
  test_q6(4, 3, 64, 37);
  test_attention(1, 0, 4, 2, 16);
  test_attention(1, 300, 20, 5, 128);
  test_attention(7, 5, 8, 8, 32);  /* MHA, prefill chunk after a prefix */
  test_ternary(8, 5, 128, 200);
  test_ternary(1, 1, 2560, 640);
  test_ternary_lora(8, 5, 128, 200, 4);
  test_ternary_lora(1, 1, 256, 96, 16);
  printf("%s\n", failures ? "FAILED" : "all ok");
  return failures != 0;
}
