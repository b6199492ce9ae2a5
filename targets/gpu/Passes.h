// Kernel formation shared by the GPU targets.
#ifndef TLC_TARGETS_GPU_PASSES_H
#define TLC_TARGETS_GPU_PASSES_H

#include "dialects/tlora/IR/TloraDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace tlc {
struct TernaryEncoding;
}

namespace tlc::gpu {

/// The ternary weight layout the GPU kernels read ("t2-rows"): a 64-byte
/// header holding gamma, then per output row its 2-bit codes (value + 1),
/// four per byte along in_features. Every GPU backend stores this.
const tlc::TernaryEncoding &ternaryEncoding();

/// Invocations per workgroup of every kernel (x; y and z are 1). A multiple
/// of every GPU's subgroup size (32 NVIDIA, 64 AMD and Adreno, 4-16 Mali).
inline constexpr int64_t kWorkgroupSize = 64;

/// Scalars every kernel takes after its buffers, as i32: T (tokens in this
/// call), pos (position of the first token), rows (logit rows wanted).
inline constexpr int kKernelScalars = 3;

#define GEN_PASS_DECL
#include "targets/gpu/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "targets/gpu/Passes.h.inc"

} // namespace tlc::gpu

#endif // TLC_TARGETS_GPU_PASSES_H
