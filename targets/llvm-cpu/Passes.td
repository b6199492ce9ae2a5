// Passes of the llvm-cpu target.
#ifndef TLC_LLVMCPU_PASSES_TD
#define TLC_LLVMCPU_PASSES_TD

include "mlir/Pass/PassBase.td"

def FormDispatchesPass : Pass<"tlc-llvmcpu-form-dispatches", "::mlir::ModuleOp"> {
  let summary = "Turns tlora compute ops into dispatches of per-shape CPU kernels";
  let description = [{
    Each compute op of an entry function (one carrying `tlora.max_tokens`)
    becomes a `tlora.dispatch` of a kernel in the nested module `@kernels`.
    Kernels are built with MLIR builders once per distinct shape and token
    capacity, so 30 identical layers share one set of kernels: loops over
    memrefs, or one `tlora.microkernel_call` of a C microkernel declared
    from its compiled definition.
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
    `tlora.microkernel_call` to `func.call` with each memref's base pointer,
    then scf/vector/memref/math/arith/func to LLVM, with the bare-pointer
    calling convention for memrefs so that each kernel takes plain pointers.
  }];
  let dependentDialects = [
    "::mlir::func::FuncDialect", "::mlir::memref::MemRefDialect",
    "::mlir::arith::ArithDialect", "::mlir::LLVM::LLVMDialect"];
}

#endif // TLC_LLVMCPU_PASSES_TD
