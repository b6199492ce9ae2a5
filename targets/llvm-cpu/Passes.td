// Passes of the llvm-cpu target.
#ifndef TLC_LLVMCPU_PASSES_TD
#define TLC_LLVMCPU_PASSES_TD

include "mlir/Pass/PassBase.td"

def FormDispatchesPass : Pass<"tlc-llvmcpu-form-dispatches", "::mlir::ModuleOp"> {
  let summary = "Turns tlora compute ops into dispatches of per-shape CPU kernels";
  let description = [{
    Each compute op of an entry function (one carrying `tlora.max_tokens`)
    becomes a `tlora.dispatch` of a kernel in the nested module `@kernels`.
    Kernels are instantiated from MLIR templates once per distinct shape
    and token capacity, so 30 identical layers share one set of kernels.
  }];
  let dependentDialects = [
    "::mlir::tlora::TloraDialect", "::mlir::func::FuncDialect",
    "::mlir::scf::SCFDialect", "::mlir::memref::MemRefDialect",
    "::mlir::vector::VectorDialect", "::mlir::math::MathDialect",
    "::mlir::arith::ArithDialect", "::mlir::LLVM::LLVMDialect"];
}

def LowerKernelsToLLVMPass : Pass<"tlc-llvmcpu-lower-kernels", "::mlir::ModuleOp"> {
  let summary = "Lowers the @kernels module to the LLVM dialect";
  let description = [{
    scf/vector/memref/math/arith/func to LLVM, with the bare-pointer calling
    convention for memrefs so that each kernel takes plain pointers.
  }];
}

#endif // TLC_LLVMCPU_PASSES_TD
