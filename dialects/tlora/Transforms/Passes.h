// Target-independent passes of the tlora dialect.
#ifndef TLORA_TRANSFORMS_PASSES_H
#define TLORA_TRANSFORMS_PASSES_H

#include "dialects/tlora/IR/TloraDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::tlora {

#define GEN_PASS_DECL
#include "dialects/tlora/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "dialects/tlora/Transforms/Passes.h.inc"

/// Bytes an activation-like value occupies when its dynamic token dimension
/// is `maxTokens`; 0 for values that live outside the arena.
int64_t bufferBytes(Type type, int64_t maxTokens);

/// One adapter tensor of the training state.
struct StateTensor {
  std::string name;
  SmallVector<int64_t> shape;
  int64_t offset; // in float32 elements from the start of the parameters
};

/// The adapters of a training function, in order of first appearance, and
/// their total element count P (the state holds P parameters, P gradients
/// and, for AdamW, 2P moments).
SmallVector<StateTensor> trainStateLayout(func::FuncOp func, int64_t *total);

/// Float32 elements of the whole state for `optimizer` ("adamw" or "sgd").
int64_t trainStateElements(int64_t total, StringRef optimizer);

} // namespace mlir::tlora

#endif // TLORA_TRANSFORMS_PASSES_H
