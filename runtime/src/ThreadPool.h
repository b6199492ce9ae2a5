// A fixed pool of worker threads running one ranged job at a time; the
// calling thread takes a share too. Workers spin briefly between jobs (decode
// issues hundreds of small dispatches per token), then sleep.
#ifndef TLC_RUNTIME_THREADPOOL_H
#define TLC_RUNTIME_THREADPOOL_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace tlc {

class ThreadPool {
public:
  using Job = void (*)(void *ctx, int64_t begin, int64_t end);
  explicit ThreadPool(int threads);
  ~ThreadPool();
  int size() const { return (int)workers_.size() + 1; }
  /// Runs job over [0, n) split into contiguous ranges, one per thread.
  void run(int64_t n, Job job, void *ctx);

private:
  void work(int index);
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  Job job_ = nullptr;
  void *ctx_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 1;
};

} // namespace tlc

#endif
