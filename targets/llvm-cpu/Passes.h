// Passes and code generation of the llvm-cpu target (x86-64, aarch64).
#ifndef TLC_TARGETS_LLVMCPU_PASSES_H
#define TLC_TARGETS_LLVMCPU_PASSES_H

#include "dialects/tlora/IR/TloraDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <string>
#include <vector>

namespace tlc::llvmcpu {

#define GEN_PASS_DECL
#include "targets/llvm-cpu/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "targets/llvm-cpu/Passes.h.inc"

/// Bytes of one ternary parameter in the module: a 64-byte header holding
/// gamma (f32), then the packed codes of the kernel's layout.
int64_t ternaryParamBytes(int64_t outFeatures, int64_t inFeatures);

/// The ISA builds of the C microkernels (one bitcode each).
enum class MicrokernelIsa { Avx2, Avx512, Neon, NeonDotprod, NeonI8mm };

/// A CPU to compile for: an LLVM triple, CPU name and feature string.
struct CpuTarget {
  std::string triple;             // "x86_64-unknown-linux-gnu"
  std::string arch;               // runtime key: "x86_64" or "aarch64"
  std::string cpu;
  std::string features;           // LLVM form: "+avx2,+fma,..."
  std::vector<std::string> needs; // features the host must have to run it
  MicrokernelIsa isa = MicrokernelIsa::Avx2;
  bool staticOnly = false; // iOS: no code loading, static libraries only
};

/// Parses `host`, `x86-64[:feat,...]`, `aarch64[:feat,...]` or
/// `aarch64-ios[:feat,...]` (features with or without +; iOS gives Mach-O
/// objects for static libraries) into the variants to build, the most
/// capable first. Plain `aarch64` gives three: dotprod+i8mm, dotprod, and
/// baseline NEON, so one module runs on every ARMv8 core and picks the best
/// at load time.
mlir::FailureOr<std::vector<CpuTarget>> parseCpuTarget(llvm::StringRef spec,
                                                       std::string *error);

/// Declares the C microkernels in `kernels` (`func.func private @tlc_k_...`
/// with !llvm.ptr, index, i32 and f32 parameters), derived from their
/// compiled definitions in the embedded bitcode: the C sources are the one
/// statement of the microkernel ABI, and a tlora.microkernel_call that
/// disagrees with one fails to verify.
void declareMicrokernels(mlir::ModuleOp kernels);

/// Registers the llvm-cpu backend with the compiler's target registry.
void registerLLVMCPUTargetBackend();

/// Compiles the LLVM-dialect `kernels` module into a shared object: links
/// the microkernel bitcode for the target, adds one uniform entry per
/// kernel (`tlc_entry_<name>(void **bindings, const int64_t *scalars,
/// int64_t begin, int64_t end)`), optimizes, emits an object and links it
/// with lld. `llvmIR`, when set, receives the optimized LLVM IR. With a
/// `staticSymbol`, returns the relocatable object instead, whose entries
/// are `<staticSymbol>_<name>` and whose table `<staticSymbol>` lists them
/// (tlc_static_kernel_t, for tlc_static_library_register).
mlir::FailureOr<std::string>
buildSharedObject(mlir::ModuleOp kernels, const CpuTarget &target,
                  std::vector<std::string> *kernelNames, std::string *llvmIR,
                  std::string *error, llvm::StringRef staticSymbol = {});

} // namespace tlc::llvmcpu

#endif // TLC_TARGETS_LLVMCPU_PASSES_H
