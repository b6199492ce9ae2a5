/*
 * Entry points that the llvm-cpu kernel templates call: thin adapters from the
 * buffer layouts the compiler plans to the microkernels of ternary.c, plus the
 * float (LM head) product. Compiled to LLVM bitcode with ternary.c and linked
 * into every generated module, so the runtime itself holds no model math.
 *
 * Buffer layouts:
 *   quantized activations (one buffer, capacity TM rows of K features):
 *     [TM*K int8 x_q][TM f32 1/s][TM i32 row sums]
 *   ternary parameter: [64-byte header: f32 gamma][codes, ternary.h layout]
 */
#include "ternary.h"

#include <stdint.h>
#include <string.h>

#define TLC_DENSE_TILE_N 16

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

/* Workload unit: one tile of TLC_TERNARY_TILE_N output features. */
void tlc_k_ternary_matmul(int8_t *q, const uint8_t *w, float *y, int64_t TM,
                          int64_t K, int64_t N, int64_t T, int64_t begin,
                          int64_t end) {
  float gamma;
  memcpy(&gamma, w, sizeof gamma);
  int64_t n0 = begin * TLC_TERNARY_TILE_N, n1 = end * TLC_TERNARY_TILE_N;
  if (n1 > N)
    n1 = N;
  tlc_ternary_matmul(q, qact_inv_scale(q, TM, K), qact_row_sum(q, TM, K), T, K,
                     w + 64, N, gamma, y, N, n0, n1);
}

static inline float bf16_to_f32(uint16_t v) {
  uint32_t u = (uint32_t)v << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/*
 * y[r][n] = sum_k x[T - rows + r][k] * W[n][k] for r < rows, n in the tiles
 * [begin, end) of TLC_DENSE_TILE_N. Four rows of W at a time share each load of
 * x; float32 accumulation in 16 lanes, as a vectorizing compiler sees fit.
 */
#define TLC_DEFINE_DENSE(NAME, WTYPE, LOAD)                                    \
  void NAME(const float *x, const WTYPE *w, float *y, int64_t TM, int64_t K,  \
            int64_t N, int64_t T, int64_t rows, int64_t begin, int64_t end) {  \
    (void)TM;                                                                  \
    int64_t n0 = begin * TLC_DENSE_TILE_N, n1 = end * TLC_DENSE_TILE_N;        \
    if (n1 > N)                                                                \
      n1 = N;                                                                  \
    for (int64_t r = 0; r < rows; ++r) {                                       \
      const float *xr = x + (T - rows + r) * K;                                \
      float *yr = y + r * N;                                                   \
      for (int64_t n = n0; n < n1; ++n) {                                      \
        const WTYPE *wn = w + n * K;                                           \
        float acc[16] = {0};                                                   \
        int64_t k = 0;                                                         \
        for (; k + 16 <= K; k += 16)                                           \
          for (int j = 0; j < 16; ++j)                                         \
            acc[j] += xr[k + j] * LOAD(wn[k + j]);                             \
        float s = 0.0f;                                                        \
        for (; k < K; ++k)                                                     \
          s += xr[k] * LOAD(wn[k]);                                            \
        for (int j = 0; j < 16; ++j)                                           \
          s += acc[j];                                                         \
        yr[n] = s;                                                             \
      }                                                                        \
    }                                                                          \
  }

#define TLC_LOAD_F32(v) (v)
TLC_DEFINE_DENSE(tlc_k_dense_bf16, uint16_t, bf16_to_f32)
TLC_DEFINE_DENSE(tlc_k_dense_f32, float, TLC_LOAD_F32)
