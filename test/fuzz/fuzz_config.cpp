// libFuzzer target: the config.json loader on arbitrary text.
#include "compiler/hf/HFConfig.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tlc::ModelConfig config;
  std::string error;
  tlc::parseModelConfig(std::string((const char *)data, size), "config.json",
                        &config, &error);
  return 0;
}
