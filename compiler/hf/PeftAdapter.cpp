// PEFT LoRA adapters (peft_type LORA): y = base(x) + scaling * (x A^T) B^T on
// each targeted linear layer, A [r x in], B [out x r]. Variants that change
// that formula (DoRA, biases, fan_in_fan_out, per-layer ranks) are rejected
// by the config parser the runtime's training library shares.
#include "compiler/hf/PeftAdapter.h"

#include "runtime/train/AdapterIO.h"

#include <cmath>

namespace tlc {

bool loadPeftAdapter(const std::string &dir, LoraAdapter *out,
                     std::string *error) {
  train::AdapterConfig cfg;
  if (!train::readPeftConfig(dir, &cfg, error))
    return false;
  out->rank = cfg.rank;
  out->scaling = (float)((double)cfg.alpha /
                         (cfg.use_rslora ? std::sqrt((double)cfg.rank)
                                         : (double)cfg.rank));
  out->targets = std::set<std::string>(cfg.targets.begin(), cfg.targets.end());
  out->dir = dir;
  std::string weights = dir + "/adapter_model.safetensors";
  out->tensors = SafeTensorsFile::open(weights, error);
  return out->tensors != nullptr;
}

} // namespace tlc
