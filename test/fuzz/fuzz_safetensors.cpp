// libFuzzer target: the safetensors reader on arbitrary bytes.
#include "compiler/hf/SafeTensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string error;
  auto file =
      tlc::SafeTensorsFile::parse(data, size, "fuzz.safetensors", &error);
  if (file)
    for (auto &[name, view] : file->tensors())
      if (view.numel() > 0 && view.dtype == tlc::DType::BF16)
        (void)view.at(view.numel() - 1); // every tensor lies inside the data
  return 0;
}
