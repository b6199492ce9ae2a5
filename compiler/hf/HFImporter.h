// Import of a Hugging Face BitNet model folder into the tlora dialect.
#ifndef TLC_COMPILER_HF_HFIMPORTER_H
#define TLC_COMPILER_HF_HFIMPORTER_H

#include "compiler/hf/HFConfig.h"
#include "compiler/hf/PeftAdapter.h"
#include "compiler/hf/SafeTensors.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace tlc {

/// LoRA adapters held as runtime state: with `step`, a fine-tuning step
/// (tlc compile --train) beside prefill/decode; without, inference entries
/// whose adapters are loaded at run time (tlc-run --adapter).
struct TrainOptions {
  bool step = true;
  int64_t rank = 8;
  float alpha = 16.0f;
  std::set<std::string> targets; // module names, e.g. "q_proj"
  int64_t seqLen = 0, batch = 1;
  std::string optimizer = "adamw"; // or "sgd"
  int64_t memoryBudget = 0;        // bytes; 0 = no limit
  bool recompute = false;          // recompute layers even within budget
};

struct ImportOptions {
  int64_t maxTokens = 128; // prefill chunk (tokens per prefill call)
  int64_t maxSeq = 0;      // KV cache capacity; 0 = min(max_positions, 2048)
  int headBits = 16; // LM head: 16 = as stored; 8 or 6 = per-row int (lossy)
  const LoraAdapter *adapter = nullptr; // baked into the targeted layers
  const TrainOptions *train = nullptr;  // build train_step instead
};

/// Builds `prefill` and `decode` entry functions computing logits exactly as
/// transformers' BitNetForCausalLM, or with `train` the forward and loss of
/// `train_step` (tlora-differentiate adds its backward and update). Reads the checkpoint only to check
/// shapes and dtypes and to compute gamma of master weights.
mlir::OwningOpRef<mlir::ModuleOp> importBitNet(mlir::MLIRContext *ctx,
                                               const ModelConfig &config,
                                               const Checkpoint &checkpoint,
                                               const ImportOptions &options,
                                               std::string *error);

/// gamma (per-tensor scale) and ternary codes of a projection, exactly as
/// transformers derives them for each weight format. `codes` gets W_t as
/// row-major [out][in] in {-1, 0, 1}
/// (skipped when null).
bool ternarize(const TensorView &weight, const TensorView *scale,
               WeightFormat format, int64_t out, int64_t in, float *gamma,
               std::vector<int8_t> *codes, std::string *error);

} // namespace tlc

#endif // TLC_COMPILER_HF_HFIMPORTER_H
