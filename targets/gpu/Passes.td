// Passes shared by the GPU targets (vulkan-spirv today; cuda, rocm, metal
// next): one kernel formation for all of them.
#ifndef TLC_GPU_PASSES_TD
#define TLC_GPU_PASSES_TD

include "mlir/Pass/PassBase.td"

def FormGPUDispatchesPass : Pass<"tlc-gpu-form-dispatches", "::mlir::ModuleOp"> {
  let summary = "Turns tlora compute ops into dispatches of per-shape GPU kernels";
  let description = [{
    Each compute op of an entry function becomes a `tlora.dispatch` of a
    `gpu.func` in the nested `gpu.module @kernels`, built with MLIR builders
    once per shape and token capacity. A kernel takes its buffers (memrefs),
    then the scalars T, pos and rows (i32); the dispatch's workload is its
    number of workgroups in x, of `kWorkgroupSize` invocations each. An op
    without a GPU kernel is an error naming it: nothing falls back to the
    CPU silently.
  }];
  let options = [
    Option<"maxBindingBytes", "max-binding-bytes", "int64_t", "0",
           "largest storage buffer range one binding may cover (0: no "
           "limit); LM head and embedding weights over it are bound as row "
           "ranges, anything else over it is an error">,
    Option<"integerDot", "integer-dot", "bool", "false",
           "the target has a packed 4 x int8 dot product: decode ternary "
           "products call kDot4Intrinsic, which the backend lowers">
  ];
  let dependentDialects = [
    "::mlir::tlora::TloraDialect", "::mlir::gpu::GPUDialect",
    "::mlir::scf::SCFDialect", "::mlir::memref::MemRefDialect",
    "::mlir::math::MathDialect", "::mlir::arith::ArithDialect",
    "::mlir::func::FuncDialect", "::mlir::vector::VectorDialect"];
}

#endif // TLC_GPU_PASSES_TD
