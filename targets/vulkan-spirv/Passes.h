// Passes of the vulkan-spirv target (also the first half of the metal
// target, which translates the same SPIR-V to MSL).
#ifndef TLC_TARGETS_VULKANSPIRV_PASSES_H
#define TLC_TARGETS_VULKANSPIRV_PASSES_H

#include "mlir/Dialect/SPIRV/IR/SPIRVOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Pass/Pass.h"

namespace tlc::vulkan {
#define GEN_PASS_DECL
#include "targets/vulkan-spirv/Passes.h.inc"

/// A copy of `m` with kernel `fn` alone: its entry point, execution modes,
/// and the functions and variables it reaches. Serialized one per kernel:
/// drivers (NVIDIA's Vulkan, SPIRV-Cross's MSL) otherwise give every entry
/// point all of the module's workgroup variables.
mlir::OwningOpRef<mlir::spirv::ModuleOp> kernelModule(mlir::spirv::ModuleOp m,
                                                      llvm::StringRef fn);

/// Kernel `fn`'s invocations per workgroup (its LocalSize x; 1 if none).
uint32_t workgroupSize(mlir::spirv::ModuleOp m, llvm::StringRef fn);
} // namespace tlc::vulkan

#endif // TLC_TARGETS_VULKANSPIRV_PASSES_H
