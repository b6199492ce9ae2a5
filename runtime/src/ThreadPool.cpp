// Thread pool for kernel dispatches (see ThreadPool.h).
#include "runtime/src/ThreadPool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define TLC_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define TLC_PAUSE() __asm__ __volatile__("yield")
#else
#define TLC_PAUSE() ((void)0)
#endif

namespace tlc {

namespace {
constexpr int kSpins = 2000; // ~tens of microseconds before sleeping
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this] { work(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto &t : workers_)
    t.join();
}

void ThreadPool::runChunks(uint32_t gen, Job job, void *ctx, int64_t n,
                           int64_t chunks) {
  for (;;) {
    uint64_t c = claim_.load(std::memory_order_acquire);
    int64_t i;
    do {
      if ((uint32_t)(c >> 32) != gen)
        return;
      i = (int64_t)(uint32_t)c;
      if (i >= chunks)
        return;
    } while (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel));
    job(ctx, n * i / chunks, n * (i + 1) / chunks);
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_); // no lost wake-up
      done_.notify_all();
    }
  }
}

void ThreadPool::run(int64_t n, Job job, void *ctx) {
  int64_t chunks = std::min<int64_t>(n, (int64_t)size() * kChunksPerThread);
  if (size() == 1 || chunks <= 1) {
    job(ctx, 0, n);
    return;
  }
  uint32_t gen;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = job;
    ctx_ = ctx;
    n_ = n;
    chunks_ = chunks;
    remaining_.store(chunks, std::memory_order_relaxed);
    gen = generation_.load(std::memory_order_relaxed) + 1;
    claim_.store((uint64_t)gen << 32, std::memory_order_release);
    generation_.store(gen, std::memory_order_release);
  }
  wake_.notify_all();
  runChunks(gen, job, ctx, n, chunks);
  // Chunks still held by workers: spin briefly, then sleep until the last
  // one is done (a spinning caller would steal the core a worker needs).
  for (int spin = 0; spin < kSpins; ++spin) {
    if (remaining_.load(std::memory_order_acquire) == 0)
      return;
    TLC_PAUSE();
  }
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock,
             [&] { return remaining_.load(std::memory_order_acquire) == 0; });
}

void ThreadPool::work() {
  uint32_t seen = 0;
  for (;;) {
    for (int spin = 0; spin < kSpins && generation_.load() == seen; ++spin)
      TLC_PAUSE();
    Job job;
    void *ctx;
    int64_t n, chunks;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      if (stop_)
        return;
      seen = generation_.load();
      job = job_;
      ctx = ctx_;
      n = n_;
      chunks = chunks_;
    }
    runChunks(seen, job, ctx, n, chunks);
  }
}

} // namespace tlc
