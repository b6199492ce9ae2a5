// Interfaces of the tlora dialect.
#ifndef TLORA_INTERFACES_TD
#define TLORA_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Tlora_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::mlir::tlora";
  let description = [{
    Reverse-mode differentiation (tlora-differentiate). Given the adjoints
    of the op's results (null where a result has none), an op builds the ops
    computing the adjoints of the operands marked `needed` and appends one
    value per operand to `operandAdjoints` (null where not needed or where
    the operand has no gradient: ids, frozen weights). Frozen ternary weights
    use the straight-through estimator: activation quantization is the
    identity in the backward.
  }];
  let methods = [
    InterfaceMethod<"Builds the adjoints of the needed operands.",
      "::mlir::LogicalResult", "buildAdjoint",
      (ins "::mlir::OpBuilder &":$b,
           "::llvm::ArrayRef<::mlir::Value>":$resultAdjoints,
           "::llvm::ArrayRef<bool>":$needed,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandAdjoints)>
  ];
}

#endif // TLORA_INTERFACES_TD
