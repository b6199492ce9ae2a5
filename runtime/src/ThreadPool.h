// A fixed pool of worker threads running one ranged job at a time. The range
// is cut into a few chunks per thread that the caller and the workers claim
// one by one, so a descheduled or slow worker (a busy machine, a LITTLE core)
// only delays the chunk it holds: the others, the caller included, take the
// rest. Chunk boundaries depend only on the range and the pool size, never on
// timing, so results are reproducible. Workers spin briefly between jobs
// (decode issues hundreds of small dispatches per token), then sleep; the
// caller spins briefly for the last chunks, then sleeps too.
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
  /// Runs job over [0, n) split into contiguous chunks; returns when all are
  /// done.
  void run(int64_t n, Job job, void *ctx);

  /// Chunks per thread: enough to rebalance, few enough to keep each
  /// kernel call long.
  static constexpr int kChunksPerThread = 4;

private:
  void work();
  /// Claims and runs chunks of job generation `gen` until none is left.
  void runChunks(uint32_t gen, Job job, void *ctx, int64_t n, int64_t chunks);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<uint32_t> generation_{0};
  // (generation << 32) | next chunk index: a worker still holding an older
  // job can never claim a chunk of a newer one.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> remaining_{0}; // chunks not finished
  bool stop_ = false;
  Job job_ = nullptr;
  void *ctx_ = nullptr;
  int64_t n_ = 0, chunks_ = 0;
};

} // namespace tlc

#endif
