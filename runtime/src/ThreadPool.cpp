// Thread pool for kernel dispatches (see ThreadPool.h).
#include "runtime/src/ThreadPool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define TLC_PAUSE() _mm_pause()
#else
#define TLC_PAUSE() ((void)0)
#endif

namespace tlc {

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this, i] { work(i); });
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

static void range(int64_t n, int parts, int i, int64_t *begin, int64_t *end) {
  *begin = n * i / parts;
  *end = n * (i + 1) / parts;
}

void ThreadPool::run(int64_t n, Job job, void *ctx) {
  int parts = (int)std::min<int64_t>(n, size());
  if (parts <= 1) {
    job(ctx, 0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = job;
    ctx_ = ctx;
    n_ = n;
    parts_ = parts;
    pending_.store(parts - 1);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  int64_t b, e;
  range(n, parts, 0, &b, &e);
  job(ctx, b, e);
  // Spin briefly, then yield: on an oversubscribed machine a spinning caller
  // would steal the core its workers need.
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < 2000)
      TLC_PAUSE();
    else
      std::this_thread::yield();
  }
}

void ThreadPool::work(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little for the next job, then sleep.
    for (int spin = 0; spin < 4000 && generation_.load() == seen; ++spin) {
      if (spin < 2000)
        TLC_PAUSE();
      else
        std::this_thread::yield();
    }
    if (generation_.load() == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
    }
    Job job;
    void *ctx;
    int64_t n;
    int parts;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_)
        return;
      seen = generation_.load();
      job = job_;
      ctx = ctx_;
      n = n_;
      parts = parts_;
    }
    if (index < parts) {
      int64_t b, e;
      range(n, parts, index, &b, &e);
      job(ctx, b, e);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

} // namespace tlc
