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
  if (tlc_status_t s = tlc_module_load_memory(copy, size, &module)) {
    tlc_status_free(s);
  } else {
    // What a verified module promises: its adapter table reads in bounds.
    tlc_train_info_t info;
    if (tlc_status_t s = tlc_module_train_info(module, &info)) {
      tlc_status_free(s);
    } else {
      for (size_t i = 0; i < info.target_count; ++i) {
        const char *name = nullptr;
        if (tlc_status_t st = tlc_module_train_target(module, i, &name))
          abort(); // an index below the count must be valid
        (void)std::strlen(name);
      }
      // Past the end: an error status, never a crash.
      if (tlc_status_t st =
              tlc_module_train_target(module, info.target_count, nullptr))
        tlc_status_free(st);
      else
        abort();
      for (size_t i = 0; i < info.tensor_count; ++i) {
        tlc_train_tensor_info_t t;
        if (tlc_status_t st = tlc_module_train_tensor(module, i, &t))
          abort();
        if (t.offset + (uint64_t)t.rows * (uint64_t)t.cols >
            info.adapter_elements)
          abort(); // the verifier let a tensor outside the state through
      }
    }
    tlc_module_release(module);
  }
  free(copy);
  return 0;
}
