// The Metal driver (Objective-C++, ARC; built on Apple platforms only):
// runs the "msl" executables of targets/metal on the system's default Metal
// device.
//  - memory: every buffer is MTLStorageModeShared (Apple GPUs share memory
//    with the CPU), so host copies are memcpy ordered by fence waits;
//  - executables: kernel i's MSL source is image[kernel_offsets[i] ..
//    next), compiled at load (newLibraryWithSource) into a compute pipeline
//    whose threadgroup is workgroup_sizes[i] wide;
//  - work: a recorded dispatch list is encoded per call into one command
//    buffer with a serial compute encoder (each dispatch sees the writes of
//    the one before); buffers bound as [[buffer(i)]] at their offsets, the
//    scalars {T, pos, rows} as bytes at [[buffer(30)]];
//  - limits: $TLC_METAL_MAX_MEMORY caps the memory the driver allocates (to
//    emulate a phone on a Mac).
// No Metal compiler or device exists on the Linux machines that build and
// test tlc: this file is compiled only where CMake finds APPLE, and
// docs/architecture.md says what has and has not been run.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>
#include <TargetConditionals.h>
#if TARGET_OS_IPHONE
#include <os/proc.h>
#endif

#include "runtime/drivers/metal/MetalDevice.h"
#include "runtime/src/module_generated.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace tlc::hal {
namespace {

/// As targets/metal: buffers are [[buffer(i)]], the scalars the last slot.
constexpr NSUInteger kScalarsBuffer = 30;

tlc_status_t error(const std::string &message,
                   tlc_status_code_t code = TLC_STATUS_FAILED_PRECONDITION) {
  return tlc_status_create(code, ("Metal: " + message).c_str());
}

std::string describe(NSError *e) {
  return e ? std::string(e.localizedDescription.UTF8String) : "no details";
}

/// The device, opened once per process.
struct Context {
  id<MTLDevice> device = nil;
  std::string name, why;
  uint64_t memoryBudget = 0;
  std::atomic<uint64_t> allocated{0};
  bool ok = false;
  Context() {
    device = MTLCreateSystemDefaultDevice();
    if (!device) {
      why = "no Metal device";
      return;
    }
    name = device.name.UTF8String;
    // Shared buffers are for GPUs that share the CPU's memory (every iPhone,
    // iPad and Apple silicon Mac); discrete GPUs of Intel Macs are refused.
    if (@available(macOS 10.15, iOS 13.0, *)) {
      if (!device.hasUnifiedMemory) {
        why = name + " has no unified memory (a discrete GPU: this driver "
                     "needs memory shared with the CPU)";
        return;
      }
    }
    if (@available(macOS 10.12, iOS 16.0, tvOS 16.0, *))
      memoryBudget = device.recommendedMaxWorkingSetSize;
#if TARGET_OS_IPHONE
    if (!memoryBudget)
      memoryBudget = os_proc_available_memory();
#endif
    if (!memoryBudget)
      memoryBudget = UINT64_MAX;
    if (const char *cap = std::getenv("TLC_METAL_MAX_MEMORY"))
      if (uint64_t c = std::strtoull(cap, nullptr, 10); c && c < memoryBudget)
        memoryBudget = c;
    ok = true;
  }
};

Context &context() {
  static Context c;
  return c;
}

class MetalBuffer final : public Buffer {
public:
  /// `size` bytes already counted in c.allocated (newBuffer reserves them).
  MetalBuffer(Context &c, id<MTLBuffer> b, uint64_t size) : c_(c), buffer(b) {
    size_ = size;
  }
  ~MetalBuffer() override { c_.allocated -= size_; }
  uint8_t *hostPointer() override {
    return static_cast<uint8_t *>(buffer.contents);
  }
  Context &c_;
  id<MTLBuffer> buffer;
};

/// A zero-filled shared buffer of `size` bytes (at least one; Metal clears
/// new buffers), or `src`'s bytes when given.
tlc_status_t newBuffer(Context &c, uint64_t size, const void *src,
                       std::unique_ptr<Buffer> *out) {
  uint64_t bytes = size ? size : 1;
  if (bytes > c.device.maxBufferLength)
    return error("a buffer of " + std::to_string(bytes) +
                     " bytes exceeds the device's maxBufferLength (" +
                     std::to_string(c.device.maxBufferLength) + ")",
                 TLC_STATUS_OUT_OF_MEMORY);
  // Reserve the bytes (sessions allocate from several threads).
  uint64_t used = c.allocated.load();
  do {
    uint64_t left = c.memoryBudget > used ? c.memoryBudget - used : 0;
    if (bytes > left)
      return error("out of device memory: a buffer of " +
                       std::to_string(bytes) + " bytes does not fit in the " +
                       std::to_string(left) + " bytes left of " +
                       std::to_string(c.memoryBudget) + " bytes",
                   TLC_STATUS_OUT_OF_MEMORY);
  } while (!c.allocated.compare_exchange_weak(used, used + bytes));
  id<MTLBuffer> b =
      src && size ? [c.device newBufferWithBytes:src
                                  length:bytes
                                 options:MTLResourceStorageModeShared]
          : [c.device newBufferWithLength:bytes
                                  options:MTLResourceStorageModeShared];
  if (b)
    out->reset(new (std::nothrow) MetalBuffer(c, b, bytes));
  if (!b || !*out) {
    c.allocated -= bytes;
    return error("a buffer of " + std::to_string(bytes) + " bytes failed",
                 TLC_STATUS_OUT_OF_MEMORY);
  }
  return nullptr;
}

class MetalAllocator final : public Allocator {
public:
  explicit MetalAllocator(Context &c) : c_(c) {}
  tlc_status_t allocate(MemoryKind, uint64_t size,
                        std::unique_ptr<Buffer> *out) override {
    return newBuffer(c_, size, nullptr, out);
  }

private:
  Context &c_;
};

class MetalExecutable final : public Executable {
public:
  uint32_t kernelCount() const override { return (uint32_t)names.size(); }
  std::vector<std::string> names;
  std::vector<uint32_t> widths; // invocations per threadgroup
  std::vector<id<MTLComputePipelineState>> pipelines;
};

struct RecordedDispatch {
  uint32_t kernel;
  int64_t tokensFactor, constant;
  uint32_t groupsY, groupsZ;
  std::vector<BufferRange> bindings;
  std::vector<DynamicSpace> dynamic;
};

/// A binding range's problem, or null.
tlc_status_t checkRange(const BufferRange &b) {
  if (!b.buffer)
    return nullptr;
  if (!insideBuffer(b))
    return error("binding outside its buffer", TLC_STATUS_INVALID_ARGUMENT);
  if (b.offset % 16)
    return error("binding offset " + std::to_string(b.offset) +
                     " is not a multiple of 16",
                 TLC_STATUS_INCOMPATIBLE);
  return nullptr;
}

class MetalCommandBuffer final : public CommandBuffer {
public:
  explicit MetalCommandBuffer(MetalExecutable &exe) : exe(exe) {}
  tlc_status_t dispatch(const DispatchDesc &d) override {
    if (d.kernel >= exe.kernelCount())
      return error("dispatch of kernel " + std::to_string(d.kernel) +
                       " of an executable with " +
                       std::to_string(exe.kernelCount()),
                   TLC_STATUS_INVALID_ARGUMENT);
    if (d.bindings.size() > kScalarsBuffer)
      return error("kernel " + exe.names[d.kernel] + " binds " +
                       std::to_string(d.bindings.size()) +
                       " buffers; Metal has " + std::to_string(kScalarsBuffer) +
                       " slots besides the scalars",
                   TLC_STATUS_INCOMPATIBLE);
    for (const BufferRange &b : d.bindings)
      if (tlc_status_t s = checkRange(b))
        return s;
    RecordedDispatch r{d.kernel,  d.tokensFactor, d.constant,
                       d.groupsY, d.groupsZ,      d.bindings,
                       d.dynamic};
    r.dynamic.resize(r.bindings.size(), DynamicSpace::None);
    recorded.push_back(std::move(r));
    return nullptr;
  }
  MetalExecutable &exe;
  std::vector<RecordedDispatch> recorded;
};

tlc_status_t statusOf(id<MTLCommandBuffer> cb, const std::string &what) {
  if (cb.status != MTLCommandBufferStatusError)
    return nullptr;
  bool oom = [cb.error.domain isEqualToString:MTLCommandBufferErrorDomain] &&
             cb.error.code == (NSInteger)MTLCommandBufferErrorOutOfMemory;
  return error(what + " failed: " + describe(cb.error),
               oom ? TLC_STATUS_OUT_OF_MEMORY : TLC_STATUS_INTERNAL);
}

class MetalFence final : public Fence {
public:
  explicit MetalFence(id<MTLCommandBuffer> cb) : cb_(cb) {}
  ~MetalFence() override {
    if (cb_)
      [cb_ waitUntilCompleted];
  }
  tlc_status_t wait() override {
    if (!cb_)
      return nullptr;
    [cb_ waitUntilCompleted];
    tlc_status_t s = statusOf(cb_, "a submission");
    cb_ = nil;
    return s;
  }

private:
  id<MTLCommandBuffer> cb_;
};

class MetalQueue final : public Queue {
public:
  explicit MetalQueue(Context &c) : queue_([c.device newCommandQueue]) {}
  bool ok() const { return queue_ != nil; }
  tlc_status_t submit(CommandBuffer &commands, const CallArgs &args,
                      KernelProfile *profile,
                      std::unique_ptr<Fence> *out) override {
    auto &cb = static_cast<MetalCommandBuffer &>(commands);
    const int32_t push[4] = {(int32_t)args.T, (int32_t)args.pos,
                             (int32_t)args.rows, 0};
    @autoreleasepool {
      id<MTLCommandBuffer> buffer = nil;
      id<MTLComputeCommandEncoder> encoder = nil;
      auto begin = [&] {
        buffer = [queue_ commandBuffer];
        encoder = [buffer computeCommandEncoder];
      };
      begin();
      if (!buffer || !encoder)
        return error("cannot create a command buffer", TLC_STATUS_INTERNAL);
      // An encoder is ended before its command buffer goes, even on errors.
      auto fail = [&](tlc_status_t s) {
        [encoder endEncoding];
        return s;
      };
      for (const RecordedDispatch &r : cb.recorded) {
        int64_t groups = r.tokensFactor * args.T + r.constant;
        if (groups <= 0)
          continue;
        [encoder setComputePipelineState:cb.exe.pipelines[r.kernel]];
        for (size_t i = 0; i < r.bindings.size(); ++i) {
          BufferRange b = r.bindings[i];
          if (const BufferRange *call = callSpace(r.dynamic[i], args)) {
            b.buffer = call->buffer;
            b.offset += call->offset;
            if (tlc_status_t s = checkRange(b))
              return fail(s);
          }
          if (!b.buffer)
            return fail(error("kernel " + cb.exe.names[r.kernel] +
                                  ": a per-call buffer was not given",
                              TLC_STATUS_INVALID_ARGUMENT));
          [encoder setBuffer:static_cast<MetalBuffer *>(b.buffer)->buffer
                      offset:b.offset
                     atIndex:i];
        }
        [encoder setBytes:push length:sizeof push atIndex:kScalarsBuffer];
        [encoder dispatchThreadgroups:MTLSizeMake((NSUInteger)groups,
                                                  r.groupsY, r.groupsZ)
                threadsPerThreadgroup:MTLSizeMake(cb.exe.widths[r.kernel], 1,
                                                  1)];
        if (profile) { // one command buffer per dispatch, timed on the GPU
          [encoder endEncoding];
          [buffer commit];
          [buffer waitUntilCompleted];
          if (tlc_status_t s =
                  statusOf(buffer, "kernel " + cb.exe.names[r.kernel]))
            return s;
          if (r.kernel < profile->seconds.size()) {
            profile->seconds[r.kernel] += buffer.GPUEndTime - buffer.GPUStartTime;
            profile->calls[r.kernel] += 1;
          }
          begin();
        }
      }
      [encoder endEncoding];
      [buffer commit];
      out->reset(new (std::nothrow) MetalFence(buffer));
      if (!*out) {
        [buffer waitUntilCompleted];
        return tlc_status_create(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
      }
    }
    return nullptr;
  }
  // Shared memory: copies are memcpy, ordered by the caller's waits on the
  // fences of earlier submissions.
  tlc_status_t write(const void *src, const BufferRange &dst) override {
    if (tlc_status_t s = checkRange(dst))
      return s;
    std::memcpy(dst.buffer->hostPointer() + dst.offset, src, dst.length);
    return nullptr;
  }
  tlc_status_t read(const BufferRange &src, void *dst) override {
    if (tlc_status_t s = checkRange(src))
      return s;
    std::memcpy(dst, src.buffer->hostPointer() + src.offset, src.length);
    return nullptr;
  }

private:
  id<MTLCommandQueue> queue_;
};

class MetalDevice final : public Device {
public:
  explicit MetalDevice(Context &c) : c_(c), allocator_(c) {}
  const char *name() const override { return c_.name.c_str(); }
  Allocator &allocator() override { return allocator_; }
  tlc_status_t mapParameters(const uint8_t *data, uint64_t size,
                             std::unique_ptr<Buffer> *out) override {
    return newBuffer(c_, size, data, out);
  }
  tlc_status_t loadExecutable(const fb::Executable &def,
                              std::unique_ptr<Executable> *out) override {
    std::unique_ptr<MetalExecutable> exe(new (std::nothrow) MetalExecutable);
    if (!exe)
      return tlc_status_create(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
    const auto *kernels = def.kernels();
    const auto *offsets = def.kernel_offsets();
    const auto *widths = def.workgroup_sizes();
    size_t n = kernels ? kernels->size() : 0;
    if (!def.image() || !offsets || !widths || offsets->size() != n ||
        widths->size() != n)
      return error("the executable lacks its kernels' sources, offsets or "
                   "workgroup sizes (kernel_offsets, workgroup_sizes)",
                   TLC_STATUS_INVALID_FILE);
    const char *image = (const char *)def.image()->data();
    size_t size = def.image()->size();
    for (size_t i = 0; i < n; ++i) {
      std::string name = kernels->Get(i)->str();
      size_t begin = offsets->Get(i),
             end = i + 1 < n ? offsets->Get(i + 1) : size;
      uint32_t width = widths->Get(i);
      if (begin > end || end > size || width == 0)
        return error("kernel " + name + ": malformed source range or "
                         "workgroup size",
                     TLC_STATUS_INVALID_FILE);
      @autoreleasepool {
        NSString *source = [[NSString alloc] initWithBytes:image + begin
                                                    length:end - begin
                                                  encoding:NSUTF8StringEncoding];
        if (!source)
          return error("kernel " + name + ": its source is not UTF-8",
                       TLC_STATUS_INVALID_FILE);
        NSError *e = nil;
        id<MTLLibrary> library = [c_.device newLibraryWithSource:source
                                                         options:nil
                                                           error:&e];
        if (!library)
          return error("kernel " + name + " does not compile: " + describe(e),
                       TLC_STATUS_INCOMPATIBLE);
        id<MTLFunction> fn = [library
            newFunctionWithName:[NSString stringWithUTF8String:name.c_str()]];
        if (!fn)
          return error("kernel " + name + " is missing from its source",
                       TLC_STATUS_INVALID_FILE);
        id<MTLComputePipelineState> p =
            [c_.device newComputePipelineStateWithFunction:fn error:&e];
        if (!p)
          return error("kernel " + name + ": no pipeline: " + describe(e),
                       TLC_STATUS_INCOMPATIBLE);
        if (p.maxTotalThreadsPerThreadgroup < width)
          return error("kernel " + name + " runs threadgroups of " +
                           std::to_string(width) + "; " + c_.name +
                           " allows it " +
                           std::to_string(p.maxTotalThreadsPerThreadgroup),
                       TLC_STATUS_INCOMPATIBLE);
        exe->names.push_back(name);
        exe->widths.push_back(width);
        exe->pipelines.push_back(p);
      }
    }
    *out = std::move(exe);
    return nullptr;
  }
  tlc_status_t createCommandBuffer(Executable &exe,
                                   std::unique_ptr<CommandBuffer> *out) override {
    out->reset(new (std::nothrow)
                   MetalCommandBuffer(static_cast<MetalExecutable &>(exe)));
    return *out ? nullptr
                : tlc_status_create(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
  }
  tlc_status_t createQueue(const DeviceOptions &,
                           std::unique_ptr<Queue> *out) override {
    std::unique_ptr<MetalQueue> q(new (std::nothrow) MetalQueue(c_));
    if (!q)
      return tlc_status_create(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
    if (!q->ok())
      return error("cannot create a command queue", TLC_STATUS_INTERNAL);
    *out = std::move(q);
    return nullptr;
  }

private:
  Context &c_;
  MetalAllocator allocator_;
};

class MetalDriver final : public Driver {
public:
  const char *name() const override { return "metal"; }
  bool isGpu() const override { return true; }
  bool canRun(const fb::Executable &e, std::string *why) override {
    std::string target = e.target() ? e.target()->str() : "";
    std::string format = e.format() ? e.format()->str() : "";
    if (target != "metal")
      return false; // another driver's executable
    if (format != "msl") {
      *why = "Metal executable format '" + format + "' is not MSL";
      return false;
    }
    Context &c = context();
    if (!c.ok) {
      *why = "Metal: " + c.why;
      return false;
    }
    // Threadgroup widths the device cannot run (pipelines may allow fewer
    // still: loadExecutable checks each).
    NSUInteger most = c.device.maxThreadsPerThreadgroup.width;
    if (const auto *widths = e.workgroup_sizes())
      for (uint32_t i = 0; i < widths->size(); ++i)
        if (widths->Get(i) > most) {
          *why = "Metal: a kernel runs threadgroups of " +
                 std::to_string(widths->Get(i)) + "; " + c.name +
                 " allows " + std::to_string(most);
          return false;
        }
    return true;
  }
  tlc_status_t createDevice(std::unique_ptr<Device> *out) override {
    Context &c = context();
    if (!c.ok)
      return error(c.why, TLC_STATUS_INCOMPATIBLE);
    out->reset(new (std::nothrow) MetalDevice(c));
    return *out ? nullptr
                : tlc_status_create(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
  }
};

} // namespace

Driver &metalDriver() {
  static MetalDriver driver;
  return driver;
}

} // namespace tlc::hal
