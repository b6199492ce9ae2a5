// PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors)
// for `tlc-run train`, and atomic file writes for checkpoints.
#ifndef TLC_RUNTIME_TRAIN_ADAPTERIO_H
#define TLC_RUNTIME_TRAIN_ADAPTERIO_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tlc::train {

/// One tensor; key is PEFT's key without the adapter name, e.g.
/// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".
struct AdapterTensor {
  std::string key;
  std::vector<int64_t> shape;
  std::vector<float> data; // row-major, product(shape) values
  const float *external = nullptr; // writing: the values, instead of data
};

/// Part of a file's bytes (written in order, not copied).
struct FilePiece {
  const void *data;
  size_t size;
};

struct AdapterConfig {
  int rank = 0;
  float alpha = 0;
  std::vector<std::string> targets; // target_modules
  std::string base_model;           // base_model_name_or_path
  bool use_rslora = false;
};

/// Writes `path` atomically: a temp file in the same folder (mkstemp),
/// fsync, rename. On failure the temp is removed and an existing `path` is
/// left untouched.
bool writeFileAtomic(const std::string &path, const void *data, size_t size,
                     std::string *error);
bool writeFileAtomic(const std::string &path,
                     const std::vector<FilePiece> &pieces, std::string *error);

/// Creates `dir` if missing and writes adapter_model.safetensors (F32, keys
/// sorted, "__metadata__": {"format": "pt"}) and adapter_config.json (a PEFT
/// LoraConfig), each atomically.
bool writePeftAdapter(const std::string &dir, const AdapterConfig &cfg,
                      const std::vector<AdapterTensor> &tensors,
                      std::string *error);

/// The bytes of `path`; false with "PATH: cannot open: ..." otherwise.
bool readWholeFile(const std::string &path, std::string *out,
                   std::string *error);

/// The one validating parser of a PEFT LoRA adapter_config.json (compile
/// time and run time): peft_type LORA, r, lora_alpha, target_modules,
/// use_rslora, base_model_name_or_path; variants that change the LoRA
/// formula (DoRA, fan_in_fan_out, biases, per-layer ranks) are errors.
bool readPeftConfig(const std::string &dir, AdapterConfig *cfg,
                    std::string *error);

/// Reads a PEFT LoRA adapter folder: the config (r, lora_alpha,
/// target_modules, use_rslora, base_model_name_or_path) and the tensors (F32,
/// BF16 or F16, converted to float; a ".default" segment before ".weight" is
/// dropped from keys). *out is sorted by key.
bool readPeftAdapterTensors(const std::string &dir,
                            std::vector<AdapterTensor> *out,
                            AdapterConfig *cfg, std::string *error);

} // namespace tlc::train

#endif
