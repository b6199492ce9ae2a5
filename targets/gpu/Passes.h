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
/// header holding gamma, then per output row its 2-bit codes (value + 1) in
/// 32-bit words of sixteen: element 4a + b of a word's sixteen at bits
/// 8b + 2a, so that (word >> 2a) & 0x03030303 holds the codes of elements
/// 4a .. 4a + 3 in its bytes, in the order of four packed int8 activations
/// (what a 4 x 8-bit dot product takes). Every GPU backend stores this.
const tlc::TernaryEncoding &ternaryEncoding();

/// The symbol of the kernels' packed 4 x int8 dot product (a private
/// func.func (i32, i32) -> i32 in the gpu.module, called where the target
/// has one: FormGPUDispatches' integer-dot option). Each backend replaces
/// the calls by its instruction (SPIR-V OpSDot with PackedVectorFormat4x8Bit;
/// NVVM dp4a, ROCDL sdot4 next) and erases the declaration.
inline constexpr llvm::StringLiteral kDot4Intrinsic = "tlc_sdot4_i8";

/// Invocations per workgroup of a kernel unless its KernelSpec says (x; y
/// and z are 1). A multiple of every GPU's subgroup size (32 NVIDIA, 64 AMD
/// and Adreno, 4-16 Mali).
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
