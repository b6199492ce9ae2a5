// PEFT LoRA adapter folders: adapter_config.json + adapter_model.safetensors.
#ifndef TLC_COMPILER_HF_PEFTADAPTER_H
#define TLC_COMPILER_HF_PEFTADAPTER_H

#include "compiler/hf/SafeTensors.h"

#include <set>
#include <string>

namespace tlc {

struct LoraAdapter {
  int64_t rank = 0;
  float scaling = 0.0f;          // lora_alpha / r (or / sqrt(r), rsLoRA)
  std::set<std::string> targets; // module names, e.g. "q_proj"
  std::unique_ptr<SafeTensorsFile> tensors;
  std::string dir;
  /// Tensor key of `prefix` (e.g. model.layers.0.self_attn.q_proj) and
  /// `which` ("lora_A" or "lora_B") as PEFT saves it.
  static std::string key(const std::string &prefix, const char *which) {
    return "base_model.model." + prefix + "." + which + ".weight";
  }
};

/// Reads and validates a PEFT LoRA adapter folder.
bool loadPeftAdapter(const std::string &dir, LoraAdapter *out,
                     std::string *error);

} // namespace tlc

#endif
