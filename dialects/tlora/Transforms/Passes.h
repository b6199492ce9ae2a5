// Target-independent passes of the tlora dialect.
#ifndef TLORA_TRANSFORMS_PASSES_H
#define TLORA_TRANSFORMS_PASSES_H

#include "dialects/tlora/IR/TloraDialect.h"
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

} // namespace mlir::tlora

#endif // TLORA_TRANSFORMS_PASSES_H
