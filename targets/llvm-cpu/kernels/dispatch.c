/*
 * Microkernels that the llvm-cpu kernels call: thin adapters from the
 * buffer layouts the compiler plans to the microkernels of ternary.c, plus the
 * float (LM head) product. Compiled to LLVM bitcode with ternary.c and linked
 * into every generated module, so the runtime itself holds no model math.
 *
 * Buffer layouts:
 *   quantized activations (one buffer, capacity TM rows of K features):
 *     [TM*K int8 x_q][TM f32 1/s][TM i32 row sums]
 *   ternary parameter: [64-byte header: f32 gamma][codes, ternary.h layout]
 */
#include "mathf.h"
#include "simd.h"
#include "ternary.h"

#include <stdint.h>
#include <string.h>


static inline float *qact_inv_scale(int8_t *q, int64_t TM, int64_t K) {
  return (float *)(q + TM * K);
}
static inline int32_t *qact_row_sum(int8_t *q, int64_t TM, int64_t K) {
  return (int32_t *)(q + TM * K + 4 * TM);
}

void tlc_k_quantize(const float *x, int8_t *q, int64_t TM, int64_t K,
                    int64_t begin, int64_t end) {
  tlc_quantize_rows(x + begin * K, K, end - begin, K, q + begin * K,
                    qact_inv_scale(q, TM, K) + begin,
                    qact_row_sum(q, TM, K) + begin);
}

/* Workload unit: four tiles (64 output features), the GEMV's streaming unit. */
#define TLC_TERNARY_UNIT_N (4 * TLC_TERNARY_TILE_N)
void tlc_k_ternary_matmul(int8_t *q, const uint8_t *w, float *y, int64_t TM,
                          int64_t K, int64_t N, int64_t T, int64_t begin,
                          int64_t end) {
  float gamma;
  __builtin_memcpy(&gamma, w, sizeof gamma);
  int64_t n0 = begin * TLC_TERNARY_UNIT_N, n1 = end * TLC_TERNARY_UNIT_N;
  if (n1 > N)
    n1 = N;
  tlc_ternary_matmul(q, qact_inv_scale(q, TM, K), qact_row_sum(q, TM, K), T, K,
                     w + 64, N, gamma, y, N, n0, n1);
}

static inline float bf16_to_f32(uint16_t v) {
  uint32_t u = (uint32_t)v << 16;
  float f;
  __builtin_memcpy(&f, &u, sizeof f); /* -ffreestanding: no libc memcpy */
  return f;
}

/*
 * The LM head: y[r][n] = sum_k x[T - rows + r][k] * W[n][k] for r < rows and
 * n in the tiles [begin, end) of TLC_DENSE_TILE_N, float32 accumulation.
 * Memory bound in decode: four rows of W stream at once against one row of x
 * in four independent accumulators (one chain would be FMA-latency bound);
 * further x rows reuse those W rows from L1.
 */
#ifdef TLC_VF_LANES
/* The next four rows (contiguous) one iteration ahead: 4 x the row bytes
 * consumed per step, spread over the steps of this iteration. */
#define TLC_DENSE_PREFETCH(p)                                                  \
  TLC_PREFETCH(p);                                                             \
  TLC_PREFETCH((const char *)(p) + 64);
#define TLC_DENSE_VECTOR_ROWS(VLOADW)                                          \
  if (K % TLC_VF_LANES == 0)                                                   \
    for (; n + 4 <= n1; n += 4)                                                \
      for (int64_t r = 0; r < rows; ++r) {                                     \
        const float *xr = x0 + r * K;                                          \
        tlc_vf a0 = tlc_vf_zero(), a1 = a0, a2 = a0, a3 = a0;                   \
        for (int64_t k = 0; k < K; k += TLC_VF_LANES) {                        \
          TLC_DENSE_PREFETCH(w + (n + 4) * K + 4 * k)                          \
          tlc_vf xv = tlc_vf_load(xr + k);                                     \
          a0 = tlc_vf_fma(xv, VLOADW(w + (n + 0) * K + k), a0);                      \
          a1 = tlc_vf_fma(xv, VLOADW(w + (n + 1) * K + k), a1);                      \
          a2 = tlc_vf_fma(xv, VLOADW(w + (n + 2) * K + k), a2);                      \
          a3 = tlc_vf_fma(xv, VLOADW(w + (n + 3) * K + k), a3);                      \
        }                                                                      \
        float *yr = y + r * N + n;                                             \
        yr[0] = tlc_vf_sum(a0);                                                      \
        yr[1] = tlc_vf_sum(a1);                                                      \
        yr[2] = tlc_vf_sum(a2);                                                      \
        yr[3] = tlc_vf_sum(a3);                                                      \
      }
#else
#define TLC_DENSE_VECTOR_ROWS(VLOADW)
#endif

#define TLC_DEFINE_DENSE(NAME, WTYPE, VLOADW, LOAD)                            \
  void NAME(const float *x, const WTYPE *w, float *y, int64_t TM, int64_t K,   \
            int64_t N, int64_t T, int64_t rows, int64_t begin, int64_t end) {  \
    (void)TM;                                                                  \
    int64_t n0 = begin * TLC_DENSE_TILE_N, n1 = end * TLC_DENSE_TILE_N;        \
    if (n1 > N)                                                                \
      n1 = N;                                                                  \
    const float *x0 = x + (T - rows) * K;                                      \
    int64_t n = n0;                                                            \
    TLC_DENSE_VECTOR_ROWS(VLOADW)                                              \
    for (; n < n1; ++n)                                                        \
      for (int64_t r = 0; r < rows; ++r) {                                     \
        float out = 0.0f;                                                      \
        for (int64_t k = 0; k < K; ++k)                                        \
          out += x0[r * K + k] * LOAD(w[n * K + k]);                           \
        y[r * N + n] = out;                                                    \
      }                                                                        \
  }

#define TLC_LOAD_F32(v) (v)
TLC_DEFINE_DENSE(tlc_k_dense_bf16, uint16_t, tlc_vf_load_bf16, bf16_to_f32)
TLC_DEFINE_DENSE(tlc_k_dense_f32, float, tlc_vf_load, TLC_LOAD_F32)

/*
 * The int8 LM head (lossy option): W is [N][K] int8 followed by N float row
 * scales; y[r][n] = scale[n] * sum_k x[r][k] * W[n][k].
 */
#define TLC_LOAD_I8(v) ((float)(v))
TLC_DEFINE_DENSE(tlc_k_dense_i8_unscaled, int8_t, tlc_vf_load_i8, TLC_LOAD_I8)

void tlc_k_dense_i8(const float *x, const int8_t *w, float *y, int64_t TM,
                    int64_t K, int64_t N, int64_t T, int64_t rows,
                    int64_t begin, int64_t end) {
  tlc_k_dense_i8_unscaled(x, w, y, TM, K, N, T, rows, begin, end);
  const float *scale = (const float *)(w + N * K);
  int64_t n0 = begin * TLC_DENSE_TILE_N, n1 = end * TLC_DENSE_TILE_N;
  if (n1 > N)
    n1 = N;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = n0; n < n1; ++n)
      y[r * N + n] *= scale[n];
}


/*
 * Causal attention over the KV cache. Work item w = t * P + i: token t of
 * this call (position pos + t) and query heads [i * H/P, (i + 1) * H/P), all
 * of one kv head (P is a multiple of KVH dividing H), which share every key
 * and value load: P = KVH shares most (prefill), P = H balances best when
 * T = 1 (decode: 5 kv heads split badly over threads). Scores of one item live on
 * the stack ([group x (pos + t + 1)] floats); softmax as transformers' eager
 * attention: scores * scale, subtract the max, exp, normalize.
 * q, out: [T][H * HD]; kc, vc: [S][KVH * HD].
 */
void tlc_k_attention(const float *q, const float *kc, const float *vc,
                     float *out, int64_t H, int64_t KVH, int64_t P,
                     int64_t HD, float scale, int64_t pos, int64_t begin,
                     int64_t end) {
#pragma clang fp reassociate(on)
  int64_t G = H / P, DQ = H * HD, DKV = KVH * HD;
  for (int64_t w = begin; w < end; ++w) {
    int64_t t = w / P, h0 = (w % P) * G, g = h0 / (H / KVH),
            len = pos + t + 1;
    float scores[G][len];
    float acc[G][HD];
    const float *qg = q + t * DQ + h0 * HD;
    for (int64_t j = 0; j < len; ++j) {
      const float *kj = kc + j * DKV + g * HD;
      for (int64_t h = 0; h < G; ++h) {
        const float *qh = qg + h * HD;
        float s = 0.0f;
        for (int64_t d = 0; d < HD; ++d)
          s += qh[d] * kj[d];
        scores[h][j] = s * scale;
      }
    }
    float inv[G];
    for (int64_t h = 0; h < G; ++h) {
      float m = scores[h][0];
      for (int64_t j = 1; j < len; ++j)
        m = scores[h][j] > m ? scores[h][j] : m;
      float *row = scores[h];
      for (int64_t j = 0; j < len; ++j)
        row[j] = tlc_expf(row[j] - m);
      float sum = 0.0f;
      for (int64_t j = 0; j < len; ++j)
        sum += row[j];
      inv[h] = 1.0f / sum;
      for (int64_t d = 0; d < HD; ++d)
        acc[h][d] = 0.0f;
    }
    for (int64_t j = 0; j < len; ++j) {
      const float *vj = vc + j * DKV + g * HD;
      for (int64_t h = 0; h < G; ++h) {
        float p = scores[h][j];
        for (int64_t d = 0; d < HD; ++d)
          acc[h][d] += p * vj[d];
      }
    }
    for (int64_t h = 0; h < G; ++h) {
      float *o = out + t * DQ + (h0 + h) * HD;
      for (int64_t d = 0; d < HD; ++d)
        o[d] = acc[h][d] * inv[h];
    }
  }
}

/*
 * Several ternary products of one quantized input (q/k/v, gate/up) in one
 * dispatch: the workload is the concatenation of each product's 64-column
 * units, so one barrier serves them all and each thread streams one long
 * range of weights.
 */
static void ternary_group(int G, int8_t *q, const uint8_t *const *w,
                          float *const *y, const int64_t *N, int64_t TM,
                          int64_t K, int64_t T, int64_t begin, int64_t end) {
  int64_t base = 0;
  for (int g = 0; g < G; ++g) {
    int64_t units = (N[g] + TLC_TERNARY_UNIT_N - 1) / TLC_TERNARY_UNIT_N;
    int64_t lo = begin > base ? begin : base;
    int64_t hi = end < base + units ? end : base + units;
    if (lo < hi)
      tlc_k_ternary_matmul(q, w[g], y[g], TM, K, N[g], T, lo - base, hi - base);
    base += units;
  }
}

void tlc_k_ternary_matmul_group2(int8_t *q, const uint8_t *w0,
                                 const uint8_t *w1, float *y0, float *y1,
                                 int64_t N0, int64_t N1, int64_t TM, int64_t K,
                                 int64_t T, int64_t begin, int64_t end) {
  const uint8_t *w[2] = {w0, w1};
  float *y[2] = {y0, y1};
  int64_t N[2] = {N0, N1};
  ternary_group(2, q, w, y, N, TM, K, T, begin, end);
}

void tlc_k_ternary_matmul_group3(int8_t *q, const uint8_t *w0,
                                 const uint8_t *w1, const uint8_t *w2,
                                 float *y0, float *y1, float *y2, int64_t N0,
                                 int64_t N1, int64_t N2, int64_t TM, int64_t K,
                                 int64_t T, int64_t begin, int64_t end) {
  const uint8_t *w[3] = {w0, w1, w2};
  float *y[3] = {y0, y1, y2};
  int64_t N[3] = {N0, N1, N2};
  ternary_group(3, q, w, y, N, TM, K, T, begin, end);
}

/*
 * A LoRA adapter's contribution (PEFT): y[t] = scale * (x[t] A^T) B^T for
 * token rows t in [begin, end); A [R][K], B [N][R]; float32 accumulation.
 */
#define TLC_DEFINE_LORA(NAME, WTYPE, LOAD)                                     \
  void NAME(const float *x, const WTYPE *A, const WTYPE *B, float *y,          \
            int64_t K, int64_t N, int64_t R, int64_t TM, float scale,          \
            int64_t begin, int64_t end) {                                      \
    _Pragma("clang fp reassociate(on)") /* vectorized dot products */          \
    (void)TM;                                                                  \
    float tmp[R];                                                              \
    for (int64_t t = begin; t < end; ++t) {                                    \
      const float *xt = x + t * K;                                             \
      for (int64_t r = 0; r < R; ++r) {                                        \
        float s = 0.0f;                                                        \
        for (int64_t k = 0; k < K; ++k)                                        \
          s += xt[k] * LOAD(A[r * K + k]);                                     \
        tmp[r] = s;                                                            \
      }                                                                        \
      for (int64_t n = 0; n < N; ++n) {                                        \
        float s = 0.0f;                                                        \
        for (int64_t r = 0; r < R; ++r)                                        \
          s += tmp[r] * LOAD(B[n * R + r]);                                    \
        y[t * N + n] = s * scale;                                              \
      }                                                                        \
    }                                                                          \
  }

TLC_DEFINE_LORA(tlc_k_lora_f32, float, TLC_LOAD_F32)
TLC_DEFINE_LORA(tlc_k_lora_bf16, uint16_t, bf16_to_f32)

/*
 * A LoRA branch fused with its base ternary product (f32 adapters):
 * tlc_k_lora_down gives u[t] = x[t] A^T per token; tlc_k_ternary_lora then
 * computes the product's 64-column units and, while they are in cache, adds
 * scale * (u[t] B^T) to them: y = x_q W_t^T gamma / s + scale (x A^T) B^T,
 * the same float operations as tlc_k_lora_f32 followed by the addition.
 */
void tlc_k_lora_down(const float *x, const float *A, float *u, int64_t K,
                     int64_t R, int64_t begin, int64_t end) {
#pragma clang fp reassociate(on)
  for (int64_t t = begin; t < end; ++t)
    for (int64_t r = 0; r < R; ++r) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k)
        s += x[t * K + k] * A[r * K + k];
      u[t * R + r] = s;
    }
}

void tlc_k_ternary_lora(int8_t *q, const uint8_t *w, const float *u,
                        const float *B, float *y, int64_t TM, int64_t K,
                        int64_t N, int64_t R, float scale, int64_t T,
                        int64_t begin, int64_t end) {
#pragma clang fp reassociate(on)
  tlc_k_ternary_matmul(q, w, y, TM, K, N, T, begin, end);
  int64_t n0 = begin * TLC_TERNARY_UNIT_N, n1 = end * TLC_TERNARY_UNIT_N;
  if (n1 > N)
    n1 = N;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = n0; n < n1; ++n) {
      float s = 0.0f;
      for (int64_t r = 0; r < R; ++r)
        s += u[t * R + r] * B[n * R + r];
      y[t * N + n] = y[t * N + n] + s * scale;
    }
}
