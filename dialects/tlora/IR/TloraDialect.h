// Declarations of the tlora dialect, its types, attributes and operations.
#ifndef TLORA_IR_TLORADIALECT_H
#define TLORA_IR_TLORADIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mlir {
class DialectRegistry;
} // namespace mlir

#include "dialects/tlora/IR/TloraDialect.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/tlora/IR/TloraTypes.h.inc"

#include "dialects/tlora/IR/TloraEnums.h.inc"
#define GET_ATTRDEF_CLASSES
#include "dialects/tlora/IR/TloraAttrs.h.inc"

#include "dialects/tlora/IR/TloraInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialects/tlora/IR/TloraOps.h.inc"

namespace mlir::tlora {
/// Differentiation rules for upstream ops the importer uses (arith.addf).
void registerExternalModels(DialectRegistry &registry);
} // namespace mlir::tlora


namespace mlir::tlora::attr {
/// The discardable attributes tlc puts on functions and ops, named once.
/// Entry functions: tokens per call (their presence marks an entry point).
inline constexpr llvm::StringLiteral kMaxTokens = "tlora.max_tokens";
/// Entry functions: bytes of the activation arena (tlora-plan-memory).
inline constexpr llvm::StringLiteral kArenaSize = "tlora.arena_size";
/// train_step: the optimizer ("adamw" or "sgd") and the sequence length.
inline constexpr llvm::StringLiteral kOptimizer = "tlora.optimizer";
inline constexpr llvm::StringLiteral kSeqLen = "tlora.seq_len";
/// train_step: recompute each layer's forward in its backward.
inline constexpr llvm::StringLiteral kRecompute = "tlora.recompute";
/// Ops: the decoder layer they belong to; clones made for recomputation.
inline constexpr llvm::StringLiteral kLayer = "tlora.layer";
inline constexpr llvm::StringLiteral kRecomputed = "tlora.recomputed";
/// Kernel functions of the @kernels module that dispatches call.
inline constexpr llvm::StringLiteral kKernel = "tlora.kernel";
/// A kernel argument holding the call's scalars as a block (GPU push
/// constants), not a buffer of the dispatch.
inline constexpr llvm::StringLiteral kScalars = "tlora.scalars";
} // namespace mlir::tlora::attr

#endif // TLORA_IR_TLORADIALECT_H
