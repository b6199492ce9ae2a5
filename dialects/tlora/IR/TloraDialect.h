// Declarations of the tlora dialect, its types, attributes and operations.
#ifndef TLORA_IR_TLORADIALECT_H
#define TLORA_IR_TLORADIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mlir {
class DialectRegistry;
} // namespace mlir

#include "dialects/tlora/IR/TloraDialect.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/tlora/IR/TloraTypes.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/tlora/IR/TloraAttrs.h.inc"

#include "dialects/tlora/IR/TloraInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialects/tlora/IR/TloraOps.h.inc"

namespace mlir::tlora {
/// Differentiation rules for upstream ops the importer uses (arith.addf).
void registerExternalModels(DialectRegistry &registry);
} // namespace mlir::tlora

#endif // TLORA_IR_TLORADIALECT_H
