// PEFT LoRA adapters (peft_type LORA): y = base(x) + scaling * (x A^T) B^T on
// each targeted linear layer, A [r x in], B [out x r]. Variants that change
// that formula (DoRA, biases, fan_in_fan_out, per-layer ranks) are rejected.
#include "compiler/hf/PeftAdapter.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

namespace tlc {

bool loadPeftAdapter(const std::string &dir, LoraAdapter *out,
                     std::string *error) {
  std::string path = dir + "/adapter_config.json";
  auto fail = [&](const std::string &msg) {
    *error = path + ": " + msg;
    return false;
  };
  std::ifstream in(path);
  if (!in)
    return fail("cannot open (is this a PEFT adapter folder?)");
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail("not a valid JSON object");
  auto str = [&](const char *k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : "";
  };
  if (str("peft_type") != "LORA")
    return fail("peft_type is '" + str("peft_type") +
                "', only LORA is supported");
  auto r = j.find("r");
  if (r == j.end() || !r->is_number_integer() || r->get<int64_t>() <= 0)
    return fail("'r' must be a positive integer");
  out->rank = r->get<int64_t>();
  auto alpha = j.find("lora_alpha");
  if (alpha == j.end() || !alpha->is_number())
    return fail("'lora_alpha' must be a number");
  bool rslora = j.value("use_rslora", false);
  out->scaling = (float)(alpha->get<double>() /
                         (rslora ? std::sqrt((double)out->rank) : out->rank));
  if (j.value("use_dora", false))
    return fail("use_dora is not supported");
  if (j.value("fan_in_fan_out", false))
    return fail("fan_in_fan_out is not supported");
  if (str("bias") != "" && str("bias") != "none")
    return fail("bias must be \"none\"");
  for (const char *k : {"rank_pattern", "alpha_pattern"})
    if (auto it = j.find(k);
        it != j.end() && !it->is_null() && !(it->is_object() && it->empty()))
      return fail(std::string(k) + " is not supported");
  if (auto it = j.find("layers_to_transform"); it != j.end() && !it->is_null())
    return fail("layers_to_transform is not supported");
  auto t = j.find("target_modules");
  if (t != j.end() && t->is_string()) {
    out->targets.insert(t->get<std::string>());
  } else if (t != j.end() && t->is_array()) {
    for (auto &m : *t) {
      if (!m.is_string())
        return fail("target_modules must be names");
      out->targets.insert(m.get<std::string>());
    }
  } else {
    return fail("target_modules must be a name or a list of names");
  }
  out->dir = dir;
  std::string weights = dir + "/adapter_model.safetensors";
  out->tensors = SafeTensorsFile::open(weights, error);
  return out->tensors != nullptr;
}

} // namespace tlc
