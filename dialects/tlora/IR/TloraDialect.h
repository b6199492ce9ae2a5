// Declarations of the tlora dialect, its types, attributes and operations.
#ifndef TLORA_IR_TLORADIALECT_H
#define TLORA_IR_TLORADIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/tlora/IR/TloraDialect.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/tlora/IR/TloraTypes.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/tlora/IR/TloraAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialects/tlora/IR/TloraOps.h.inc"

#endif // TLORA_IR_TLORADIALECT_H
