// libFuzzer target: the module verifier (tlc_module_load_memory) on
// arbitrary bytes; seeds are real modules.
#include "tlc/tlc.h"

#include <cstdlib>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  void *copy = nullptr;
  if (posix_memalign(&copy, 64, size ? size : 1) != 0)
    return 0;
  std::memcpy(copy, data, size);
  tlc_module_t *module = nullptr;
  if (tlc_status_t s = tlc_module_load_memory(copy, size, &module))
    tlc_status_free(s);
  else
    tlc_module_release(module);
  free(copy);
  return 0;
}
