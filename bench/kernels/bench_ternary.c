/*
 * Benchmark of the tlc ternary microkernels (targets/llvm-cpu/kernels/ternary.c).
 *   GEMV M=1:   K=4096,N=14336 and K=14336,N=4096 (hot = same weights every
 *               call, L3-resident; cold = rotating over copies that exceed L3)
 *   GEMM M=512: same shapes (prefill), 1 and 2 threads (pthreads, disjoint
 *               tile-aligned n ranges; this harness is not the runtime's pool)
 * Prints ms, GFLOP/s (2*M*N*K) and GB/s of packed weight bytes. "-thp" cases
 * put the weights on 2 MiB transparent huge pages (madvise(MADV_HUGEPAGE)).
 * Build one binary per ISA variant of ternary.c:
 *   clang-22 -O3 -std=c11 -march=x86-64-v4 -mavx512vnni -mavx512bw -mavx512vl \
 *     -mavx512bf16 -Itargets/llvm-cpu/kernels bench/kernels/bench_ternary.c \
 *     targets/llvm-cpu/kernels/ternary*.c -lpthread -o /tmp/bench_ternary_avx512
 *   (AVX2: -mavx2 -mfma -mf16c instead of the -march/-mavx512* flags)
 * Usage: bench_ternary [filter]   (filter: substring of the case name, e.g. gemv)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "ternary.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- tiny spin-barrier thread team (persistent workers) ---- */
typedef struct {
  const int8_t *xq;
  const float *inv;
  const int32_t *rs;
  int64_t M, K, N;
  const uint8_t *w;
  float *y;
} task_t;

static int g_nthr = 1;
static task_t g_task;
static atomic_int g_gen = 0, g_done = 0, g_quit = 0;

static void do_part(int tid) {
  const task_t *t = &g_task;
  int64_t tiles = (t->N + 15) / 16;
  int64_t a = tiles * tid / g_nthr * 16, b = tiles * (tid + 1) / g_nthr * 16;
  if (b > t->N)
    b = t->N;
  tlc_ternary_matmul(t->xq, t->inv, t->rs, t->M, t->K, t->w, t->N, 0.5f, t->y,
                     t->N, a, b);
}

static void *worker(void *arg) {
  int tid = (int)(intptr_t)arg;
  int seen = 0;
  for (;;) {
    int g;
    while ((g = atomic_load_explicit(&g_gen, memory_order_acquire)) == seen) {
      if (atomic_load_explicit(&g_quit, memory_order_relaxed))
        return NULL;
      __builtin_ia32_pause();
    }
    seen = g;
    do_part(tid);
    atomic_fetch_add_explicit(&g_done, 1, memory_order_release);
  }
}

static void run_once(void) {
  atomic_store_explicit(&g_done, 0, memory_order_relaxed);
  atomic_fetch_add_explicit(&g_gen, 1, memory_order_release);
  do_part(0);
  while (atomic_load_explicit(&g_done, memory_order_acquire) != g_nthr - 1)
    __builtin_ia32_pause();
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void bench(const char *filter, const char *name, int64_t M, int64_t K,
                  int64_t N, int cold, int thp) {
  char full[128];
  snprintf(full, sizeof full, "%s M=%lld K=%lld N=%lld%s%s", name, (long long)M,
           (long long)K, (long long)N, cold ? " cold" : " hot",
           thp ? "-thp" : "");
  if (filter && !strstr(full, filter))
    return;
  size_t wbytes = tlc_ternary_packed_size(N, K);
  int copies = cold ? (int)(256e6 / wbytes) + 1 : 1; /* > 8x L3 for cold */
  int8_t *w = malloc(N * K);
  for (int64_t i = 0; i < N * K; ++i)
    w[i] = (int8_t)((int)(rng() % 3) - 1);
  uint8_t **wp = malloc(sizeof(uint8_t *) * copies);
  for (int c = 0; c < copies; ++c) {
    if (thp) { /* 2 MiB transparent huge pages (what a runtime can madvise for
                  weights) */
      size_t al = (wbytes + (2u << 20) - 1) / (2u << 20) * (2u << 20);
      wp[c] = aligned_alloc(2u << 20, al);
      madvise(wp[c], al, MADV_HUGEPAGE);
    } else {
      wp[c] = aligned_alloc(64, (wbytes + 63) / 64 * 64);
    }
    if (c == 0) {
      tlc_ternary_pack(w, N, K, wp[0]);
    } else { /* distinct random codes per copy (identical pages could be merged
                by KSM) */
      for (size_t i = 0; i < wbytes; ++i) {
        uint64_t r = rng();
        wp[c][i] = (uint8_t)((r % 3) | ((r >> 8) % 3) << 2 |
                             ((r >> 16) % 3) << 4 | ((r >> 24) % 3) << 6);
      }
    }
  }
  free(w);
  float *x = malloc(sizeof(float) * M * K);
  for (int64_t i = 0; i < M * K; ++i)
    x[i] = (float)((int64_t)(rng() % 2001) - 1000) * 1e-3f;
  int8_t *xq = aligned_alloc(64, (M * K + 63) / 64 * 64);
  float *inv = malloc(sizeof(float) * M);
  int32_t *rs = malloc(sizeof(int32_t) * M);
  float *y = aligned_alloc(64, (sizeof(float) * M * N + 63) / 64 * 64);
  tlc_quantize_rows(x, K, M, K, xq, inv, rs); /* first touch */
  double tq = 1e30;
  for (int r = 0; r < 5; ++r) {
    double t0 = now();
    tlc_quantize_rows(x, K, M, K, xq, inv, rs);
    t0 = now() - t0;
    if (t0 < tq)
      tq = t0;
  }

  for (int nthr = 1; nthr <= 2; ++nthr) {
    g_nthr = nthr;
    pthread_t th[2];
    atomic_store(&g_quit, 0);
    atomic_store(&g_gen, 0);
    for (int i = 1; i < nthr; ++i)
      pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    g_task = (task_t){xq, inv, rs, M, K, N, wp[0], y};
    double flop = 2.0 * M * N * K;
    int iters = M == 1 ? 3000 : M <= 16 ? 300 : 7;
    run_once(); /* warm up */
    double *ts = malloc(sizeof(double) * iters);
    int c = 0;
    for (int it = 0; it < iters; ++it) {
      g_task.w = wp[c];
      c = (c + 1) % copies;
      double t0 = now();
      run_once();
      ts[it] = now() - t0;
    }
    qsort(ts, iters, sizeof(double), cmp_double);
    double best = ts[0], med = ts[iters / 2];
    free(ts);
    printf("%-40s thr=%d  best %8.4f ms %7.1f GFLOP/s %6.1f GB/s | median "
           "%8.4f ms %7.1f GFLOP/s %6.1f GB/s\n",
           full, nthr, best * 1e3, flop / best / 1e9, wbytes / best / 1e9,
           med * 1e3, flop / med / 1e9, wbytes / med / 1e9);
    atomic_store(&g_quit, 1);
    for (int i = 1; i < nthr; ++i)
      pthread_join(th[i], NULL);
  }
  printf("%-40s quantize_rows (1 thread, best of 5): %.4f ms\n", full,
         tq * 1e3);
  for (int c2 = 0; c2 < copies; ++c2)
    free(wp[c2]);
  free(wp);
  free(x);
  free(xq);
  free(inv);
  free(rs);
  free(y);
}

int main(int argc, char **argv) {
  const char *filter = argc > 1 ? argv[1] : NULL;
  printf("bench_ternary: isa=%s\n", tlc_ternary_isa() == 2   ? "avx512-vnni"
                                    : tlc_ternary_isa() == 1 ? "avx2"
                                                             : "scalar");
  for (int thp = 0; thp <= 1; ++thp) {
    bench(filter, "gemv", 1, 4096, 14336, 0, thp);
    bench(filter, "gemv", 1, 14336, 4096, 0, thp);
    bench(filter, "gemv", 1, 4096, 14336, 1, thp);
    bench(filter, "gemv", 1, 14336, 4096, 1, thp);
  }
  /* bitnet-b1.58-2B-4T shapes (decode), weights streamed from DRAM */
  bench(filter, "2b4t-up", 1, 2560, 6912, 1, 0);
  bench(filter, "2b4t-down", 1, 6912, 2560, 1, 0);
  bench(filter, "gemm", 4, 4096, 14336, 0, 0);
  bench(filter, "gemm", 16, 4096, 14336, 0, 0);
  bench(filter, "gemm", 512, 4096, 14336, 0, 0);
  bench(filter, "gemm", 512, 14336, 4096, 0, 0);
  return 0;
}
