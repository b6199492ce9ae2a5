/*
 * Backward-pass and optimizer kernels of LoRA training (train.c), compiled to
 * bitcode with dispatch.c and ternary.c in the same three ISA variants.
 *
 * Conventions: float32 unless stated, row-major, int64_t sizes. Every kernel
 * is ranged over work items [begin, end): concurrent calls on disjoint ranges
 * are race-free, and each item's result is bit-identical however the range is
 * split (its arithmetic never depends on begin/end). No allocation, no
 * threads, no libm. Scratch lives on the stack (VLAs of at most a few rows).
 * T = tokens, "valid" token = labels[t] >= 0 (labels must be < V).
 */
#ifndef TLC_TRAIN_H
#define TLC_TRAIN_H

#include <stdint.h>

#include "tlc/train_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* RMSNorm backward. Rows t in [begin, end) of x, dy, dx [.][D]; forward
 * y = w * x * r, r = 1/sqrt(mean(x^2) + eps);
 * dx = r*w*dy - x*r^3*sum(w*dy*x)/D (sums in double).
 * bf16 weights are the upper 16 bits of a float. */
void tlc_k_rms_norm_grad_f32(const float *x, const float *w, const float *dy,
                             float *dx, int64_t D, float eps, int64_t begin,
                             int64_t end);
void tlc_k_rms_norm_grad_bf16(const float *x, const uint16_t *w,
                              const float *dy, float *dx, int64_t D, float eps,
                              int64_t begin, int64_t end);

/* Backward of a frozen ternary layer: dx[t][k] = gamma * sum_n dy[t][n] W[n][k]
 * for all t < T, k in [64*begin, min(64*end, K)) (item = 64 columns of K).
 * w = [64-byte header: f32 gamma][T16x16 codes of W, N x K] (ternary.h),
 * K % 16 == 0; dy [T][N], dx [T][K]. Slabs of gamma*W are decoded to float
 * on the stack; per element a float32 fma chain of dy*(gamma*W) over n
 * ascending. */
void tlc_k_ternary_matmul_t(const float *dy, const uint8_t *w, float *dx,
                            int64_t T, int64_t K, int64_t N, int64_t begin,
                            int64_t end);

/* LoRA backward (forward y = scale * (x A^T) B^T, A [R][K], B [N][R]).
 * Rows t in [begin, end): u = x[t] A^T, du = scale * dy[t] B,
 * ud[t][0..R) = u, ud[t][R..2R) = du (ud is [T][2R]), dx[t] = du A.
 * x, dx [T][K]; dy [T][N]. */
void tlc_k_lora_grad_rows(const float *x, const float *A, const float *B,
                          const float *dy, float *ud, float *dx, int64_t K,
                          int64_t N, int64_t R, float scale, int64_t begin,
                          int64_t end);
/* Items [0, ceil(K/64)): 64 columns k of dA[r][k] = sum_t du[t][r] x[t][k];
 * items [ceil(K/64), ceil(K/64) + ceil(N/64)): 64 rows n of
 * dB[n][r] = scale * sum_t dy[t][n] u[t][r]. Overwrites; t ascending. */
void tlc_k_lora_grad_weights(const float *x, const float *dy, const float *ud,
                             float *dA, float *dB, int64_t T, int64_t K,
                             int64_t N, int64_t R, float scale, int64_t begin,
                             int64_t end);

/* Forward m = relu(g)^2 * u. Rows t in [begin, end) of [.][D]:
 * dg = dm * u * 2 relu(g), du = dm * relu(g)^2. */
void tlc_k_squared_relu_mul_grad(const float *g, const float *u,
                                 const float *dm, float *dg, float *du,
                                 int64_t D, int64_t begin, int64_t end);

/* Causal attention over packed sequences of S tokens (token t: sequence t/S).
 * q, o [T][H*HD]; k, v [T][KVH*HD]; head h uses kv head h/(H/KVH).
 * Item w = t*KVH + g: token t, the query heads of kv head g; keys
 * [S*(t/S), t]. Eager softmax (scale, minus max, exp, / sum);
 * lse[t*H + h] = max + log(sum exp(score - max)). */
void tlc_k_causal_attention(const float *q, const float *k, const float *v,
                            float *o, float *lse, int64_t H, int64_t KVH,
                            int64_t HD, int64_t S, float scale, int64_t begin,
                            int64_t end);
/* Its backward. Item w = b*KVH + g: sequence b, kv head g. Overwrites dq of
 * the sequence's queries for the group's heads and dk, dv [T][KVH*HD] rows of
 * the sequence for kv head g. p = exp(score - lse), D_i = dout_i . o_i,
 * ds = p (dout_i . v_j - D_i); dq_i = scale sum_j ds k_j,
 * dk_j = scale sum_i ds q_i, dv_j = sum_i p dout_i (i, then head,
 * ascending). */
void tlc_k_causal_attention_grad(const float *q, const float *k,
                                 const float *v, const float *o,
                                 const float *lse, const float *dout,
                                 float *dq, float *dk, float *dv, int64_t H,
                                 int64_t KVH, int64_t HD, int64_t S,
                                 float scale, int64_t begin, int64_t end);

/* Cross entropy fused with the LM head w [V][K] (logits never stored).
 * x [T][K]. Item i = tokens [16i, min(16i + 16, T)). Valid t:
 * z_v = x[t] . w[v] (float32), lse[t] = log sum_v exp(z_v) (online max/sum),
 * loss[t] = lse[t] - z_label; ignored t: loss = lse = 0. */
void tlc_k_cross_entropy_bf16(const float *x, const uint16_t *w,
                              const int32_t *labels, float *loss, float *lse,
                              int64_t T, int64_t K, int64_t V, int64_t begin,
                              int64_t end);
void tlc_k_cross_entropy_f32(const float *x, const float *w,
                             const int32_t *labels, float *loss, float *lse,
                             int64_t T, int64_t K, int64_t V, int64_t begin,
                             int64_t end);
/* Its backward, same items: dx[t] = dloss[t] * sum_v (exp(z_v - lse[t]) -
 * [v == label]) w[v] for valid t, 0 otherwise (dloss from
 * tlc_k_mean_loss_grad). z_v bit-identical to the forward's. */
void tlc_k_cross_entropy_grad_bf16(const float *x, const uint16_t *w,
                                   const int32_t *labels, const float *lse,
                                   const float *dloss, float *dx, int64_t T,
                                   int64_t K, int64_t V, int64_t begin,
                                   int64_t end);
void tlc_k_cross_entropy_grad_f32(const float *x, const float *w,
                                  const int32_t *labels, const float *lse,
                                  const float *dloss, float *dx, int64_t T,
                                  int64_t K, int64_t V, int64_t begin,
                                  int64_t end);
/* One item: dloss[t] = seed[0] / count for valid t (labels[t] >= 0), else 0
 * (count = valid t of all T): the adjoint of tlc_k_loss_mean. */
void tlc_k_mean_loss_grad(const float *seed, const int32_t *labels,
                          float *dloss, int64_t T, int64_t begin, int64_t end);
/* One item: out[0] = (sum of loss[t] over valid t, in double) / count, or 0. */
void tlc_k_loss_mean(const float *loss, const int32_t *labels, float *out,
                     int64_t T, int64_t begin, int64_t end);

/* acc[i] += g[i], items of 1024 elements of [0, n). */
void tlc_k_accumulate(const float *g, float *acc, int64_t n, int64_t begin,
                      int64_t end);

/* Optimizer over the training state (train_abi.h: params [0,P), grads
 * [P,2P), AdamW moments [2P,4P)). All do nothing when hyper->apply == 0.
 * grad_norm: one item, hyper->grad_norm = sqrt(sum grad^2) (double, index
 * order). adamw / sgd: items of 1024 elements; gradients clipped by
 * min(max_grad_norm / (grad_norm + 1e-6), 1) when max_grad_norm > 0 (as
 * torch clip_grad_norm_), then torch.optim.AdamW / SGD (weight decay: AdamW
 * decoupled, SGD added to the gradient) and the gradient is zeroed. */
void tlc_k_grad_norm(float *state, tlc_train_hyper_t *hyper, int64_t P,
                     int64_t begin, int64_t end);
void tlc_k_adamw(float *state, const tlc_train_hyper_t *hyper, int64_t P,
                 int64_t begin, int64_t end);
void tlc_k_sgd(float *state, const tlc_train_hyper_t *hyper, int64_t P,
               int64_t begin, int64_t end);

#ifdef __cplusplus
}
#endif

#endif /* TLC_TRAIN_H */
