// Import of a Hugging Face BitNet model folder into the tlora dialect.
#ifndef TLC_COMPILER_HF_HFIMPORTER_H
#define TLC_COMPILER_HF_HFIMPORTER_H

#include "compiler/hf/HFConfig.h"
#include "compiler/hf/PeftAdapter.h"
#include "compiler/hf/SafeTensors.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace tlc {

struct ImportOptions {
  int64_t maxTokens = 128; // prefill chunk (tokens per prefill call)
  int64_t maxSeq = 0;      // KV cache capacity; 0 = min(max_positions, 2048)
  int headBits = 16; // LM head: 16 = as stored; 8 or 6 = per-row int (lossy)
  const LoraAdapter *adapter = nullptr; // baked into the targeted layers
};

/// Builds `prefill` and `decode` entry functions computing logits exactly as
/// transformers' BitNetForCausalLM. Reads the checkpoint only to check
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
