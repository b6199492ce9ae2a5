// The local CPU driver: host memory, executables loaded from the module
// (ELF shared objects through memfd + dlopen, or a temporary file where
// memfd is missing or TLC_LOADER=file), and a queue that runs each dispatch
// over its workgroups on a thread pool. Submissions run to completion, so
// fences are signaled when submit returns.
#include "runtime/drivers/local/SharedObject.h"
#include "runtime/src/ThreadPool.h"
#include "runtime/src/hal/Device.h"
#include "runtime/src/module_generated.h"
#if defined(TLC_HAVE_VULKAN_DRIVER)
#include "runtime/drivers/vulkan/VulkanDevice.h"
#endif
#if defined(TLC_HAVE_METAL_DRIVER)
#include "runtime/drivers/metal/MetalDevice.h"
#endif

#include <cstdlib>
#include <map>
#include <mutex>
#include <cstring>
#include <new>
#include <time.h>

namespace tlc::hal {
namespace {

tlc_status_t error(const std::string &message,
                   tlc_status_code_t code = TLC_STATUS_INVALID_ARGUMENT) {
  return tlc_status_create(code, message.c_str());
}

tlc_status_t outOfMemory() {
  return error("out of memory", TLC_STATUS_OUT_OF_MEMORY);
}

class HostBuffer final : public Buffer {
public:
  HostBuffer(uint8_t *p, uint64_t n, bool owned) : ptr_(p), owned_(owned) {
    size_ = n;
  }
  ~HostBuffer() override {
    if (owned_)
      free(ptr_);
  }
  uint8_t *hostPointer() override { return ptr_; }

private:
  uint8_t *ptr_;
  bool owned_;
};

class HostAllocator final : public Allocator {
public:
  tlc_status_t allocate(MemoryKind, uint64_t size,
                        std::unique_ptr<Buffer> *out) override {
    void *p = nullptr;
    if (size > (uint64_t)SIZE_MAX - 64 ||
        posix_memalign(&p, 64, size ? (size_t)size : 64) != 0)
      return error("out of memory allocating " + std::to_string(size) +
                       " bytes",
                   TLC_STATUS_OUT_OF_MEMORY);
    std::memset(p, 0, size);
    out->reset(new (std::nothrow) HostBuffer((uint8_t *)p, size, true));
    if (!*out) {
      free(p);
      return outOfMemory();
    }
    return nullptr;
  }
};

class LocalExecutable final : public Executable {
public:
  SharedObject code;              // loaded images
  std::vector<KernelFn> kernels;  // in the module's kernel order
  uint32_t kernelCount() const override { return (uint32_t)kernels.size(); }
};

/// Tables of statically linked executables, by symbol.
struct StaticRegistry {
  std::mutex mutex;
  std::map<std::string, const tlc_static_kernel_t *> tables;
  const tlc_static_kernel_t *find(const std::string &symbol) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = tables.find(symbol);
    return it == tables.end() ? nullptr : it->second;
  }
};
StaticRegistry &staticRegistry() {
  static StaticRegistry registry;
  return registry;
}

std::string staticSymbol(const fb::Executable &e) {
  return e.image() ? std::string((const char *)e.image()->data(),
                                 e.image()->size())
                   : std::string();
}

struct RecordedDispatch {
  KernelFn fn;
  uint32_t kernel;
  int64_t tokensFactor, constant;
  std::vector<void *> pointers;
  std::vector<std::pair<uint32_t, DynamicSpace>> dynamic; // slot, space
};

class LocalCommandBuffer final : public CommandBuffer {
public:
  explicit LocalCommandBuffer(LocalExecutable &exe) : exe_(exe) {}
  tlc_status_t dispatch(const DispatchDesc &d) override {
    if (d.kernel >= exe_.kernelCount())
      return error("dispatch of kernel " + std::to_string(d.kernel) +
                   " of an executable with " +
                   std::to_string(exe_.kernelCount()));
    if (d.groupsY != 1 || d.groupsZ != 1)
      return error("the CPU driver runs 1-D grids only");
    RecordedDispatch r{exe_.kernels[d.kernel], d.kernel, d.tokensFactor,
                       d.constant, {}, {}};
    for (size_t i = 0; i < d.bindings.size(); ++i) {
      const BufferRange &b = d.bindings[i];
      uint8_t *base = b.buffer ? b.buffer->hostPointer() : nullptr;
      if (b.buffer && !base)
        return error("the CPU driver needs host-visible buffers");
      if (!insideBuffer(b))
        return error("binding outside its buffer");
      r.pointers.push_back(base ? base + b.offset : nullptr);
      DynamicSpace space =
          i < d.dynamic.size() ? d.dynamic[i] : DynamicSpace::None;
      if (space != DynamicSpace::None)
        r.dynamic.push_back({(uint32_t)i, space});
    }
    recorded_.push_back(std::move(r));
    return nullptr;
  }
  std::vector<RecordedDispatch> &recorded() { return recorded_; }

private:
  LocalExecutable &exe_;
  std::vector<RecordedDispatch> recorded_;
};

class SignaledFence final : public Fence {
public:
  tlc_status_t wait() override { return nullptr; }
};

struct Job {
  KernelFn fn;
  void **bindings;
  const int64_t *scalars;
};

void runJob(void *ctx, int64_t begin, int64_t end) {
  auto *j = (Job *)ctx;
  j->fn(j->bindings, j->scalars, begin, end);
}

class LocalQueue final : public Queue {
public:
  explicit LocalQueue(int threads) : pool_(threads) {}

  tlc_status_t submit(CommandBuffer &commands, const CallArgs &args,
                      KernelProfile *profile,
                      std::unique_ptr<Fence> *out) override {
    auto &recorded = static_cast<LocalCommandBuffer &>(commands).recorded();
    int64_t scalars[3] = {args.T, args.pos, args.rows};
    std::vector<void *> ptrs;
    for (RecordedDispatch &r : recorded) {
      int64_t work = r.tokensFactor * args.T + r.constant;
      if (work <= 0)
        continue;
      void **bindings = r.pointers.data();
      if (!r.dynamic.empty()) { // the call's Input/Output/Labels buffers
        ptrs = r.pointers;
        for (auto [slot, space] : r.dynamic) {
          const BufferRange &b = *callSpace(space, args);
          ptrs[slot] = b.buffer ? b.buffer->hostPointer() + b.offset : nullptr;
        }
        bindings = ptrs.data();
      }
      Job job{r.fn, bindings, scalars};
      if (!profile) {
        pool_.run(work, runJob, &job);
        continue;
      }
      timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      pool_.run(work, runJob, &job);
      clock_gettime(CLOCK_MONOTONIC, &t1);
      profile->seconds[r.kernel] +=
          (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
      profile->calls[r.kernel]++;
    }
    out->reset(new (std::nothrow) SignaledFence);
    return *out ? nullptr : outOfMemory();
  }

  tlc_status_t write(const void *src, const BufferRange &dst) override {
    std::memcpy(dst.buffer->hostPointer() + dst.offset, src, dst.length);
    return nullptr;
  }
  tlc_status_t read(const BufferRange &src, void *dst) override {
    std::memcpy(dst, src.buffer->hostPointer() + src.offset, src.length);
    return nullptr;
  }

private:
  ThreadPool pool_;
};

class LocalDevice final : public Device {
public:
  const char *name() const override { return "local-cpu"; }
  Allocator &allocator() override { return allocator_; }

  tlc_status_t mapParameters(const uint8_t *data, uint64_t size,
                             std::unique_ptr<Buffer> *out) override {
    out->reset(new (std::nothrow)
                   HostBuffer(const_cast<uint8_t *>(data), size, false));
    return *out ? nullptr : outOfMemory();
  }

  tlc_status_t loadExecutable(const fb::Executable &def,
                              std::unique_ptr<Executable> *out) override {
    auto exe = std::unique_ptr<LocalExecutable>(new (std::nothrow)
                                                    LocalExecutable);
    if (!exe)
      return outOfMemory();
    std::vector<std::string> names;
    for (const auto *k : *def.kernels())
      names.push_back(k->str());
    if (def.format() && def.format()->str() == "static-library") {
      std::string symbol = staticSymbol(def);
      const tlc_static_kernel_t *table = staticRegistry().find(symbol);
      if (!table)
        return error("static executable " + symbol + " is not registered",
                     TLC_STATUS_NOT_FOUND);
      for (const std::string &name : names) {
        const tlc_static_kernel_t *k = table;
        while (k->name && name != k->name)
          ++k;
        if (!k->name || !k->fn)
          return error("static executable " + symbol + " lacks kernel " +
                           name + " (the library is from another compile)",
                       TLC_STATUS_INCOMPATIBLE);
        exe->kernels.push_back((KernelFn)k->fn);
      }
    } else {
      std::string why;
      if (!exe->code.load(def.image()->data(), def.image()->size(), names,
                          &why))
        return error(why, TLC_STATUS_IO_ERROR);
      for (size_t i = 0; i < names.size(); ++i)
        exe->kernels.push_back(exe->code.kernel(i));
    }
    *out = std::move(exe);
    return nullptr;
  }

  tlc_status_t createCommandBuffer(Executable &exe,
                                   std::unique_ptr<CommandBuffer> *out) override {
    out->reset(new (std::nothrow)
                   LocalCommandBuffer(static_cast<LocalExecutable &>(exe)));
    return *out ? nullptr : outOfMemory();
  }

  tlc_status_t createQueue(const DeviceOptions &options,
                           std::unique_ptr<Queue> *out) override {
    out->reset(new (std::nothrow) LocalQueue(options.threads));
    return *out ? nullptr : outOfMemory();
  }

private:
  HostAllocator allocator_;
};

class LocalDriver final : public Driver {
public:
  const char *name() const override { return "local-cpu"; }
  bool canRun(const fb::Executable &e, std::string *why) override {
    std::string target = e.target() ? e.target()->str() : "";
    if (target != hostTarget()) {
      // Another CPU's executable; a GPU's is its driver's to explain.
      if (target == "x86_64" || target == "aarch64")
        *why = "none is built for " + std::string(hostTarget());
      return false;
    }
    std::string format = e.format() ? e.format()->str() : "";
    if (format == "static-library") {
      if (!staticRegistry().find(staticSymbol(e))) {
        *why = "its kernels are a static library (" + staticSymbol(e) +
               ") that this program did not register: link the .a and call "
               "the _register() function of the .h tlc wrote";
        return false;
      }
    } else if (format != "elf-shared-object") {
      *why = "executable format '" + format +
             "' is not loadable by the CPU driver";
      return false;
    }
    if (e.needs())
      for (const auto *f : *e.needs())
        if (!hostHasFeature(f->str())) {
          *why = "executable for " + target + " needs CPU feature '" +
                 f->str() + "' which this CPU lacks (recompile with --target)";
          return false;
        }
    return true;
  }
  tlc_status_t createDevice(std::unique_ptr<Device> *out) override {
    out->reset(new (std::nothrow) LocalDevice);
    return *out ? nullptr : outOfMemory();
  }
};

} // namespace

std::vector<Driver *> &drivers() {
  static LocalDriver local;
  static std::vector<Driver *> list = [] {
    std::vector<Driver *> l;
#if defined(TLC_HAVE_METAL_DRIVER)
    l.push_back(&metalDriver()); // a GPU executable first, when one runs
#endif
#if defined(TLC_HAVE_VULKAN_DRIVER)
    l.push_back(&vulkanDriver());
#endif
    l.push_back(&local);
    return l;
  }();
  return list;
}

} // namespace tlc::hal

extern "C" tlc_status_t
tlc_static_library_register(const char *symbol,
                            const tlc_static_kernel_t *kernels) {
  if (!symbol || !kernels)
    return tlc_status_create(TLC_STATUS_INVALID_ARGUMENT,
                             "tlc_static_library_register: null argument");
  auto &registry = tlc::hal::staticRegistry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  auto [it, added] = registry.tables.emplace(symbol, kernels);
  if (!added && it->second != kernels)
    return tlc_status_create(
        TLC_STATUS_INVALID_ARGUMENT,
        ("static executable " + std::string(symbol) +
         " is already registered with another table")
            .c_str());
  return nullptr;
}
