// The local CPU driver: loads an executable image (an ELF shared object made
// by the llvm-cpu target) from memory and finds its kernel entries.
#ifndef TLC_RUNTIME_DRIVERS_LOCAL_SHAREDOBJECT_H
#define TLC_RUNTIME_DRIVERS_LOCAL_SHAREDOBJECT_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tlc {

/// The uniform kernel ABI: scalars are {T, pos, rows}.
using KernelFn = void (*)(void **bindings, const int64_t *scalars,
                          int64_t begin, int64_t end);

class SharedObject {
public:
  ~SharedObject();
  /// Loads `image`, resolving `tlc_entry_<name>` for each kernel name.
  bool load(const uint8_t *image, size_t size,
            const std::vector<std::string> &kernels, std::string *error);
  KernelFn kernel(size_t i) const { return kernels_[i]; }

private:
  void *handle_ = nullptr;
  std::vector<KernelFn> kernels_;
};

/// FNV-1a 64-bit hash: guards executable images against corruption before
/// the dynamic loader sees them.
uint64_t fnv1a64(const uint8_t *data, size_t size);

/// Whether this CPU has `feature` (LLVM spelling: "avx2", "avx512vnni", ...).
/// Unknown names are reported as missing.
bool hostHasFeature(const std::string &feature);
/// The target this runtime was built for ("x86_64", "aarch64").
const char *hostTarget();

} // namespace tlc

#endif
