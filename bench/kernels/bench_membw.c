/*
 * Streaming-read bandwidth: sums a large array with 1 and 2 threads (pthreads,
 * contiguous halves), best of several passes. Also an L3-sized working set (16 MiB,
 * like a 4096x14336 ternary weight matrix at 2 bits) for the "hot" bound.
 *   clang-22 -O3 -march=native bench/kernels/bench_membw.c -lpthread -o /tmp/kern/bench_membw
 *   /tmp/kern/bench_membw [MiB=1024]
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
  const uint8_t *p;
  size_t n;
  int reps;
  uint64_t out;
  pthread_barrier_t *bar;
  double t;
} job_t;

static int g_mode = 0; /* 0: one stream, 1: one stream + sw prefetch, 2: 4 streams + sw prefetch */
#define PF 1024

static uint64_t sum_range(const uint8_t *p, size_t n) {
#if defined(__AVX512F__)
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  if (g_mode == 2) {
    size_t q = n / 4 / 64 * 64;
    const uint8_t *p0 = p, *p1 = p + q, *p2 = p + 2 * q, *p3 = p + 3 * q;
    for (size_t i = 0; i < q; i += 64) {
      _mm_prefetch((const char *)(p0 + i + PF), _MM_HINT_T0);
      _mm_prefetch((const char *)(p1 + i + PF), _MM_HINT_T0);
      _mm_prefetch((const char *)(p2 + i + PF), _MM_HINT_T0);
      _mm_prefetch((const char *)(p3 + i + PF), _MM_HINT_T0);
      a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p0 + i)));
      a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p1 + i)));
      a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p2 + i)));
      a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p3 + i)));
    }
  } else {
    for (size_t i = 0; i + 256 <= n; i += 256) {
      if (g_mode == 1) {
        _mm_prefetch((const char *)(p + i + 4 * PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + 4 * PF + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + 4 * PF + 128), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + 4 * PF + 192), _MM_HINT_T0);
      }
      a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
      a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 64)));
      a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 128)));
      a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 192)));
    }
  }
  return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
#else
  const uint64_t *q = (const uint64_t *)p;
  uint64_t s = 0;
  for (size_t i = 0; i < n / 8; ++i) s += q[i];
  return s;
#endif
}

static void *worker(void *arg) {
  job_t *j = arg;
  uint64_t s = 0;
  pthread_barrier_wait(j->bar);
  double t0 = now();
  for (int r = 0; r < j->reps; ++r) s += sum_range(j->p, j->n);
  j->t = now() - t0;
  j->out = s;
  return NULL;
}

static double run(const uint8_t *buf, size_t bytes, int nthr, int reps) {
  pthread_t th[8];
  job_t jobs[8];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, nthr);
  size_t per = bytes / nthr / 256 * 256;
  for (int i = 0; i < nthr; ++i) {
    jobs[i] = (job_t){buf + i * per, per, reps, 0, &bar, 0};
    pthread_create(&th[i], NULL, worker, &jobs[i]);
  }
  double tmax = 0;
  uint64_t s = 0;
  for (int i = 0; i < nthr; ++i) {
    pthread_join(th[i], NULL);
    if (jobs[i].t > tmax) tmax = jobs[i].t;
    s += jobs[i].out;
  }
  pthread_barrier_destroy(&bar);
  if (s == 42) printf("!");
  return (double)per * nthr * reps / tmax / 1e9;
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
  size_t bytes = mib << 20;
  uint8_t *buf = aligned_alloc(4096, bytes);
  /* distinct page contents (identical pages could be merged by KSM / dedup) */
  uint64_t st = 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < bytes / 8; ++i) {
    st ^= st << 13; st ^= st >> 7; st ^= st << 17;
    ((uint64_t *)buf)[i] = st;
  }
  const size_t small = 16u << 20;
  static const char *names[3] = {"1 stream", "1 stream + sw prefetch", "4 streams + sw prefetch"};
  for (int mode = 0; mode < 3; ++mode) {
    g_mode = mode;
    for (int nthr = 1; nthr <= 2; ++nthr) {
      double best = 0, bests = 0;
      for (int pass = 0; pass < 5; ++pass) {
        double g = run(buf, bytes, nthr, 1);
        if (g > best) best = g;
        double gs = run(buf, small, nthr, 20);
        if (gs > bests) bests = gs;
      }
      printf("stream-read [%-24s] %zu MiB, %d thread(s): %6.1f GB/s  | 16 MiB (L3-resident): %6.1f GB/s\n",
             names[mode], mib, nthr, best, bests);
    }
  }
  free(buf);
  return 0;
}
