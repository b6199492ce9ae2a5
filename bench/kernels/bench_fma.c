/*
 * Peak float32 FMA and int8 (vpdpbusd) throughput of this CPU, on every
 * thread at once: the compute bound for the training benchmark.
 *   clang-22 -O2 -march=native -pthread bench_fma.c -o bench_fma
 *   ./bench_fma THREADS
 * Prints GFLOP/s (f32, 2 per FMA lane) and GOP/s (int8, 2 per MAC).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERS 200000000L
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void *fma_loop(void *out) {
  __m512 a[12];
  __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i)
    a[i] = _mm512_set1_ps((float)i);
  for (long n = 0; n < ITERS / 12; ++n)
    for (int i = 0; i < 12; ++i)
      a[i] = _mm512_fmadd_ps(a[i], b, c);
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i)
    s = _mm512_add_ps(s, a[i]);
  *(float *)out = _mm512_reduce_add_ps(s);
  return NULL;
}

static void *dp_loop(void *out) {
  __m512i a[12];
  __m512i b = _mm512_set1_epi8(3), c = _mm512_set1_epi8(-2);
  for (int i = 0; i < 12; ++i)
    a[i] = _mm512_set1_epi32(i);
  for (long n = 0; n < ITERS / 12; ++n)
    for (int i = 0; i < 12; ++i)
      a[i] = _mm512_dpbusd_epi32(a[i], b, c);
  __m512i s = a[0];
  for (int i = 1; i < 12; ++i)
    s = _mm512_add_epi32(s, a[i]);
  *(int *)out = _mm512_reduce_add_epi32(s);
  return NULL;
}

static double run(int threads, void *(*fn)(void *)) {
  pthread_t t[64];
  float out[64];
  double t0 = now();
  for (int i = 0; i < threads; ++i)
    pthread_create(&t[i], NULL, fn, &out[i]);
  for (int i = 0; i < threads; ++i)
    pthread_join(t[i], NULL);
  return now() - t0;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  double f = run(threads, fma_loop), d = run(threads, dp_loop);
  double fops = (double)threads * (ITERS / 12 * 12) * 16 * 2;
  double iops = (double)threads * (ITERS / 12 * 12) * 64 * 2;
  printf("{\"threads\": %d, \"f32_gflops\": %.1f, \"int8_gops\": %.1f}\n", threads,
         fops / f / 1e9, iops / d / 1e9);
  return 0;
}
