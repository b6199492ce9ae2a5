// The runtime's device layer: what a driver implements so that the runtime
// can run a module's executable on its hardware. Modeled on IREE's HAL and
// cut to what tlc needs; the local CPU driver (runtime/drivers/local) is the
// first implementation, and the interface carries the GPU drivers next:
//  - memory: an allocator hands out buffers that are host-visible or
//    device-local (hostPointer() == nullptr); bindings are (buffer, offset,
//    length) ranges, never raw pointers;
//  - parameters: a device wraps the mapped module file (CPU) or uploads it
//    once into device memory (GPU) through mapParameters;
//  - executables: loaded from the module's Executable table by the device;
//  - work: dispatch lists are recorded once into a reusable command buffer
//    (Vulkan's reusable command buffers, Metal's indirect command buffers)
//    and submitted per call with push constants {T, pos, rows} and the
//    buffers of the per-call spaces (Input, Output, Labels); a submission
//    returns a fence to wait on, so submission may be asynchronous.
// Every call that can fail returns a tlc_status_t (null on success).
#ifndef TLC_RUNTIME_SRC_HAL_DEVICE_H
#define TLC_RUNTIME_SRC_HAL_DEVICE_H

#include "tlc/tlc.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tlc::fb {
struct Executable;
}

namespace tlc::hal {

enum class MemoryKind {
  Host,        // host memory the device reads directly (CPU drivers)
  DeviceLocal, // fastest for the device; not host-visible on discrete GPUs
};

class Buffer {
public:
  virtual ~Buffer() = default;
  uint64_t size() const { return size_; }
  /// Host address of byte 0, or null when the memory is not host-visible.
  virtual uint8_t *hostPointer() = 0;

protected:
  uint64_t size_ = 0;
};

/// A binding: `length` bytes at `offset` of `buffer`.
struct BufferRange {
  Buffer *buffer = nullptr;
  uint64_t offset = 0, length = 0;
};

class Allocator {
public:
  virtual ~Allocator() = default;
  /// A zero-filled buffer of `size` bytes; an error status (never an abort)
  /// when memory is short.
  virtual tlc_status_t allocate(MemoryKind kind, uint64_t size,
                                std::unique_ptr<Buffer> *out) = 0;
};

class Executable {
public:
  virtual ~Executable() = default;
  virtual uint32_t kernelCount() const = 0;
};

/// Per-call values of a submission: push constants and the buffers of the
/// per-call spaces (Vulkan: push descriptors), so a recorded command buffer
/// serves every call.
struct CallArgs {
  int64_t T = 0, pos = 0, rows = 0; // push constants of every kernel
  BufferRange input, output, labels;
};

/// Which per-call space a binding belongs to (its offset moves per call).
enum class DynamicSpace : uint8_t { None, Input, Output, Labels };

/// The call's range for a per-call space (null for None).
inline const BufferRange *callSpace(DynamicSpace d, const CallArgs &args) {
  return d == DynamicSpace::Input    ? &args.input
         : d == DynamicSpace::Output ? &args.output
         : d == DynamicSpace::Labels ? &args.labels
                                     : nullptr;
}

/// Whether a binding lies inside its buffer (one without a buffer, a
/// per-call space bound at submission, does).
inline bool insideBuffer(const BufferRange &b) {
  return !b.buffer || (b.offset <= b.buffer->size() &&
                       b.length <= b.buffer->size() - b.offset);
}

struct DispatchDesc {
  uint32_t kernel = 0;
  int64_t tokensFactor = 0, constant = 0; // workgroups x = factor * T + constant
  uint32_t groupsY = 1, groupsZ = 1;
  std::vector<BufferRange> bindings;
  std::vector<DynamicSpace> dynamic; // one per binding
};

/// Dispatches recorded once and submitted many times.
class CommandBuffer {
public:
  virtual ~CommandBuffer() = default;
  virtual tlc_status_t dispatch(const DispatchDesc &desc) = 0;
};

class Fence {
public:
  virtual ~Fence() = default;
  virtual tlc_status_t wait() = 0;
};

/// Per-kernel time, when profiling (TLC_PROFILE=1).
struct KernelProfile {
  std::vector<double> seconds;
  std::vector<uint64_t> calls;
  /// Host time spent recording and submitting (drivers that record per
  /// submission), and the number of submissions.
  double recordSeconds = 0;
  uint64_t submissions = 0;
};

class Queue {
public:
  virtual ~Queue() = default;
  virtual tlc_status_t submit(CommandBuffer &commands, const CallArgs &args,
                              KernelProfile *profile,
                              std::unique_ptr<Fence> *out) = 0;
  /// Host <-> buffer copies, ordered with submissions.
  virtual tlc_status_t write(const void *src, const BufferRange &dst) = 0;
  virtual tlc_status_t read(const BufferRange &src, void *dst) = 0;
};

struct DeviceOptions {
  int threads = 1; // CPU drivers: worker threads
};

class Device {
public:
  virtual ~Device() = default;
  virtual const char *name() const = 0;
  virtual Allocator &allocator() = 0;
  /// A buffer over the module's parameter bytes (mapped file memory that
  /// outlives the device's use of it).
  virtual tlc_status_t mapParameters(const uint8_t *data, uint64_t size,
                                     std::unique_ptr<Buffer> *out) = 0;
  virtual tlc_status_t loadExecutable(const fb::Executable &def,
                                      std::unique_ptr<Executable> *out) = 0;
  virtual tlc_status_t createCommandBuffer(Executable &exe,
                                           std::unique_ptr<CommandBuffer> *out) = 0;
  /// A queue with its own workers (one per session or trainer).
  virtual tlc_status_t createQueue(const DeviceOptions &options,
                                   std::unique_ptr<Queue> *out) = 0;
};

/// A driver: which executables it runs, and its device.
class Driver {
public:
  virtual ~Driver() = default;
  virtual const char *name() const = 0;
  /// GPU drivers come first when choosing an executable; $TLC_DEVICE=cpu
  /// or gpu keeps only one kind.
  virtual bool isGpu() const { return false; }
  /// Whether this driver's device runs `def`; otherwise `why` says why,
  /// or stays empty when `def` is not this driver's kind of executable.
  virtual bool canRun(const fb::Executable &def, std::string *why) = 0;
  virtual tlc_status_t createDevice(std::unique_ptr<Device> *out) = 0;
};

/// The drivers linked into this runtime, in preference order.
std::vector<Driver *> &drivers();

} // namespace tlc::hal

#endif // TLC_RUNTIME_SRC_HAL_DEVICE_H
