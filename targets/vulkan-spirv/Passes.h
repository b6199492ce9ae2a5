// Passes of the vulkan-spirv target (also the first half of the metal
// target, which translates the same SPIR-V to MSL).
#ifndef TLC_TARGETS_VULKANSPIRV_PASSES_H
#define TLC_TARGETS_VULKANSPIRV_PASSES_H

#include "mlir/Pass/Pass.h"

namespace tlc::vulkan {
#define GEN_PASS_DECL
#include "targets/vulkan-spirv/Passes.h.inc"
} // namespace tlc::vulkan

#endif // TLC_TARGETS_VULKANSPIRV_PASSES_H
