// Passes of the vulkan-spirv target.
#ifndef TLC_VULKAN_PASSES_TD
#define TLC_VULKAN_PASSES_TD

include "mlir/Pass/PassBase.td"

def LowerGPUKernelsToSPIRVPass : Pass<"tlc-vulkan-lower-to-spirv", "::mlir::ModuleOp"> {
  let summary = "Lowers the gpu.module @kernels to one spirv.module for Vulkan";
  let description = [{
    Each kernel's trailing i32 scalars become one push-constant block
    {T, pos, rows, pad}; its buffers are storage buffers (set 0, binding i in
    argument order); the workgroup size comes from known_block_size. SPIR-V
    1.3 with the Shader capability (Vulkan 1.1).
  }];
  let dependentDialects = [
    "::mlir::spirv::SPIRVDialect", "::mlir::gpu::GPUDialect",
    "::mlir::memref::MemRefDialect", "::mlir::arith::ArithDialect"];
}

#endif // TLC_VULKAN_PASSES_TD
