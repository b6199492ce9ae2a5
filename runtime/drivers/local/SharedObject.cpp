// Loading generated kernels: the image goes into an anonymous memory file
// (memfd) and is opened with dlopen, so nothing is written to disk.
#include "runtime/drivers/local/SharedObject.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <dlfcn.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#include <sys/mman.h>
#include <unistd.h>

namespace tlc {

SharedObject::~SharedObject() {
  if (handle_)
    dlclose(handle_);
}

namespace {
bool writeAll(int fd, const uint8_t *image, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = write(fd, image + done, size - done);
    if (n <= 0)
      return false;
    done += (size_t)n;
  }
  return true;
}

/// memfd: the image never touches a file system.
void *openFromMemfd(const uint8_t *image, size_t size, std::string *error) {
  int fd = memfd_create("tlc-kernels", MFD_CLOEXEC);
  if (fd < 0) {
    *error = std::string("memfd_create failed: ") + std::strerror(errno);
    return nullptr;
  }
  if (!writeAll(fd, image, size)) {
    close(fd);
    *error = "cannot stage the executable image in memory";
    return nullptr;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *msg = dlerror();
    *error = std::string("cannot load the executable image: ") +
             (msg ? msg : "unknown error");
  }
  close(fd);
  return handle;
}

/// A temporary file in $TMPDIR (an app's cache folder on Android), removed
/// right after dlopen: for kernels without memfd (Android before 8) or
/// where it is forbidden.
void *openFromFile(const uint8_t *image, size_t size, std::string *error) {
  const char *env = getenv("TMPDIR");
  std::string dir = env && *env ? env : "/tmp";
  std::string path = dir + "/tlc-kernels-XXXXXX";
  int fd = mkstemp(path.data());
  if (fd < 0) {
    *error = dir + ": cannot create a file for the executable image: " +
             std::strerror(errno) + " (set TMPDIR to a writable folder)";
    return nullptr;
  }
  bool ok = fchmod(fd, 0700) == 0 && writeAll(fd, image, size);
  close(fd);
  void *handle = ok ? dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) : nullptr;
  if (!handle) {
    const char *msg = ok ? dlerror() : "write failed";
    *error = "cannot load the executable image from " + path + ": " +
             (msg ? msg : "unknown error");
  }
  unlink(path.c_str());
  return handle;
}
} // namespace

bool SharedObject::load(const uint8_t *image, size_t size,
                        const std::vector<std::string> &kernels,
                        std::string *error) {
  static const uint8_t kElfMagic[4] = {0x7f, 'E', 'L', 'F'};
  if (size < 64 || std::memcmp(image, kElfMagic, 4) != 0) {
    *error = "executable image is not an ELF shared object";
    return false;
  }
  const char *loader = getenv("TLC_LOADER");
  bool fileOnly = loader && std::strcmp(loader, "file") == 0;
  std::string memfdError;
  handle_ = fileOnly ? nullptr : openFromMemfd(image, size, &memfdError);
  if (!handle_)
    handle_ = openFromFile(image, size, error);
  if (!handle_) {
    if (!memfdError.empty())
      *error = memfdError + "; " + *error;
    return false;
  }
  kernels_.clear();
  for (const std::string &name : kernels) {
    std::string symbol = "tlc_entry_" + name;
    void *fn = dlsym(handle_, symbol.c_str());
    if (!fn) {
      *error = "executable image lacks kernel entry " + symbol;
      return false;
    }
    kernels_.push_back(reinterpret_cast<KernelFn>(fn));
  }
  return true;
}

uint64_t fnv1a64(const uint8_t *data, size_t size) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i)
    h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

bool hostHasFeature(const std::string &f) {
#if defined(__x86_64__)
  __builtin_cpu_init();
#define TLC_FEATURE(name)                                                      \
  if (f == #name)                                                              \
    return __builtin_cpu_supports(#name);
  TLC_FEATURE(avx2)
  TLC_FEATURE(fma)
  TLC_FEATURE(f16c)
  TLC_FEATURE(avx512f)
  TLC_FEATURE(avx512bw)
  TLC_FEATURE(avx512vl)
  TLC_FEATURE(avx512vnni)
  TLC_FEATURE(avx512bf16)
  TLC_FEATURE(avxvnni)
#undef TLC_FEATURE
#elif defined(__aarch64__) && defined(__linux__)
  // Linux's hwcaps (asm/hwcap.h): ASIMDDP = SDOT/UDOT, I8MM = SMMLA/USDOT.
  const unsigned long hwcap = getauxval(AT_HWCAP),
                      hwcap2 = getauxval(AT_HWCAP2);
  if (f == "neon")
    return (hwcap & (1ul << 1)) != 0; // ASIMD
  if (f == "dotprod")
    return (hwcap & (1ul << 20)) != 0;
  if (f == "i8mm")
    return (hwcap2 & (1ul << 13)) != 0;
  if (f == "fp16")
    return (hwcap & (1ul << 9)) != 0; // ASIMDHP
#elif defined(__aarch64__) && defined(__APPLE__)
  // Darwin's sysctl flags (hw.optional.arm.FEAT_*); every arm64 Apple core
  // has NEON.
  auto flag = [](const char *name) {
    int value = 0;
    size_t size = sizeof value;
    return sysctlbyname(name, &value, &size, nullptr, 0) == 0 && value != 0;
  };
  if (f == "neon")
    return true;
  if (f == "dotprod")
    return flag("hw.optional.arm.FEAT_DotProd");
  if (f == "i8mm")
    return flag("hw.optional.arm.FEAT_I8MM");
  if (f == "fp16")
    return flag("hw.optional.arm.FEAT_FP16");
#endif
  return false;
}

const char *hostTarget() {
#if defined(__x86_64__)
  return "x86_64";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "unknown";
#endif
}

} // namespace tlc
