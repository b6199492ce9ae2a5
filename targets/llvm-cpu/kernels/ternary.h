/*
 * tlc ternary (BitNet b1.58) matrix microkernels.
 *
 * Portable C11 (+ intrinsics under the ISA macros of simd.h). Compiled by tlc to LLVM
 * bitcode once per ISA build and linked into generated modules:
 *   AVX-512: clang-22 -O3 -march=x86-64-v4 -mavx512vnni -mavx512bw -mavx512vl -mavx512bf16
 *   AVX2:    clang-22 -O3 -mavx2 -mfma -mf16c
 *   NEON:    clang-22 --target=aarch64-linux-gnu -O3 -march=armv8-a | armv8.2-a+dotprod |
 *            armv8.2-a+dotprod+i8mm           (the matmul is in ternary_neon.c)
 *   scalar:  clang-22 -O3            (any other target)
 * Uses no libc besides memcpy/memset (as compiler builtins; the .c includes no libc
 * header), allocates nothing, starts no threads. Every
 * function is reentrant; tlc_ternary_matmul is ranged over output columns so a thread
 * pool can call it on disjoint [n_begin, n_end) ranges concurrently.
 *
 * ---------------------------------------------------------------------------------
 * Math (see shared/notes/bitnet.md):
 *   per token row m:   s_m       = 127.0f / max(max_k |x[m][k]|, 1e-5f)      (float32)
 *                      xq[m][k]  = clamp(nearbyint(x[m][k] * s_m), -128, 127) (float32
 *                                  product, round half to even, as torch.round)
 *                      inv_scale[m] = 1.0f / s_m                               (float32)
 *                      row_sum[m]   = sum_k xq[m][k]                            (int32)
 *   weights:           W[n][k] in {-1,0,+1}, stored as 2-bit codes c = W + 1 in {0,1,2}
 *   THE output formula (exact, identical for every ISA build and the reference):
 *                      acc[m][n] = sum_k xq[m][k] * W[n][k]          (exact int32)
 *                                = sum_k xq[m][k] * c[n][k] - row_sum[m]
 *                      y[m][n]   = (float)acc[m][n] * (gamma * inv_scale[m])
 *   where (gamma * inv_scale[m]) is one float32 multiply, then one float32 multiply by
 *   the (round-to-nearest) int32->float conversion of acc. No FMA, no reassociation.
 *   FP environment: default (round-to-nearest-even, no FTZ/DAZ). Results are
 *   bit-identical for the AVX-512, AVX2 and scalar builds, and do not change if the
 *   bitcode is code-generated with FP contraction enabled (no multiply feeds an add).
 *   gamma multiplies: for checkpoints whose weight_scale divides (linear_class
 *   "bitlinear"), pass gamma = 1/weight_scale (or fold the scale elsewhere).
 *
 * ---------------------------------------------------------------------------------
 * Packed weight layout ("T16x16", 2 bits/weight, 4 weights per byte, no scales):
 *   Rows are grouped in tiles of 16 (tile t = rows 16t..16t+15), K in blocks of 16
 *   (block b = columns 16b..16b+15). Each (tile, block) pair is one 64-byte chunk; the
 *   chunks of a tile are contiguous in k order, tiles follow each other:
 *       chunk(t, b) = out + (t * (K/16) + b) * 64
 *   Inside a chunk, for row r (0..15), column k = 16b + 4j + s (j, s in 0..3):
 *       byte  4*r + s   bits [2j, 2j+1]   =  W[16t + r][16b + 4j + s] + 1
 *   i.e. (chunk >> 2j) & 3, read as 16 int32 lanes, gives for lane r the four codes
 *   of row r at columns 16b+4j .. 16b+4j+3: exactly the unsigned operand of one
 *   vpdpbusd (16 rows x 4 k) against a 4-byte broadcast of the activations. AVX2 uses
 *   the two 32-byte halves (rows 0-7, rows 8-15) with vpmaddubsw the same way.
 *   Rows n >= N of the last tile are padding with code 1 (weight 0).
 *   Requirements: K % 16 == 0 (real models: K % 128 == 0), K <= 2^19; N >= 1 (any).
 *   Size: ceil(N/16) * 16 * K / 4 bytes (exactly 2 bits per weight for N % 16 == 0).
 *   The same bytes serve the AVX-512, AVX2 and scalar builds.
 */
#ifndef TLC_TERNARY_H
#define TLC_TERNARY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TLC_TERNARY_TILE_N 16 /* rows per tile */
#define TLC_TERNARY_BLOCK_K 16 /* K must be a multiple of this */

/* Bytes needed by tlc_ternary_pack for an N x K ternary matrix (K % 16 == 0). */
size_t tlc_ternary_packed_size(int64_t N, int64_t K);

/* Pack row-major W[N][K] (values -1, 0, +1; anything else is undefined) into the
 * T16x16 layout above. `out` must hold tlc_ternary_packed_size(N, K) bytes. */
void tlc_ternary_pack(const int8_t *w, int64_t N, int64_t K, uint8_t *out);

/* Inverse of tlc_ternary_pack (for tests/tools): writes W[N][K] in {-1,0,1}. */
void tlc_ternary_unpack(const uint8_t *packed, int64_t N, int64_t K, int8_t *w);

/* Per-token int8 quantization of M rows of x (row m starts at x + m*ldx, K floats).
 * Writes xq[m*K + k] (row-major, contiguous, leading dimension K), inv_scale[m] and
 * row_sum[m] as defined above. Bit-exact with the float32 reference formula (also in
 * the scalar build: round-half-even is done on the float's bits, no libm).
 * Any K >= 1 works here (the matmul needs K % 16 == 0). Rows are independent: a
 * thread pool may split M. */
void tlc_quantize_rows(const float *x, int64_t ldx, int64_t M, int64_t K, int8_t *xq,
                       float *inv_scale, int32_t *row_sum);

/* y[m*ldy + n] = (float)(sum_k xq[m*K+k] * W[n][k]) * (gamma * inv_scale[m])
 * for m in [0, M), n in [n_begin, n_end) (0 <= n_begin <= n_end <= N).
 * xq / inv_scale / row_sum as produced by tlc_quantize_rows; w_packed in T16x16.
 * Any range is correct (only columns inside [n_begin, n_end) are written, so
 * concurrent calls on disjoint ranges are race-free), but split work on multiples of
 * 64 columns: a range edge inside a 16-row tile makes both neighbours compute that
 * tile, and the M == 1 path streams 4 tiles (64 rows) at a time.
 * Needs K % 16 == 0. w_packed should be 64-byte aligned (not required).
 * M == 1: streaming GEMV (AVX-512: 4 tile streams + software prefetch, 4 vpdpbusd per
 * 64-byte chunk, no shifts); M >= 2: register-blocked GEMM, each decoded chunk reused
 * for up to 8 rows (AVX-512: 8 rows x 32 columns micro tile; AVX2: 6 rows x 8 columns).
 * No internal threading, no allocation.
 */
void tlc_ternary_matmul(const int8_t *xq, const float *inv_scale, const int32_t *row_sum,
                        int64_t M, int64_t K, const uint8_t *w_packed, int64_t N,
                        float gamma, float *y, int64_t ldy, int64_t n_begin,
                        int64_t n_end);

/* Plain scalar reference of tlc_ternary_matmul (same contract, same exact formula). */
void tlc_ternary_matmul_ref(const int8_t *xq, const float *inv_scale,
                            const int32_t *row_sum, int64_t M, int64_t K,
                            const uint8_t *w_packed, int64_t N, float gamma, float *y,
                            int64_t ldy, int64_t n_begin, int64_t n_end);

/* Output rows per workload unit of the LM head kernels (dispatch.c, head.c). */
#define TLC_DENSE_TILE_N 16

/* The 6-bit LM head of head.c: packed bytes for N x K (K % 64 == 0) and the
 * packer (from row-major float weights). */
size_t tlc_q6_packed_size(int64_t N, int64_t K);
void tlc_q6_pack(const float *w, int64_t N, int64_t K, uint8_t *out);

/* Which code path this build compiled: 0 = scalar, 1 = AVX2, 2 = AVX-512 VNNI,
 * 3 = NEON, 4 = NEON + dotprod, 5 = NEON + i8mm (ternary_neon.c). */
int tlc_ternary_isa(void);
static inline const char *tlc_isa_name(int isa) {
  static const char *const names[] = {"scalar", "avx2", "avx512-vnni",
                                      "neon", "neon-dotprod", "neon-i8mm"};
  return isa >= 0 && isa <= 5 ? names[isa] : "unknown";
}

#ifdef __cplusplus
}
#endif

#endif /* TLC_TERNARY_H */
