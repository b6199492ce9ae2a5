// Target backends: the one interface through which the compiler driver, the
// importer and the module writer reach a target. A backend forms dispatches
// of its own kernels, chooses its weight layouts, lowers and serializes its
// executables. Backends live in targets/<name>/ and register themselves; no
// code outside targets/ names a target, an ISA or a kernel layout.
#ifndef TLC_COMPILER_TARGET_TARGETBACKEND_H
#define TLC_COMPILER_TARGET_TARGETBACKEND_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tlc {

/// How a backend stores ternary weights: one named encoding, its size and
/// its packer. Modules store each parameter once per encoding in use.
struct TernaryEncoding {
  std::string name; // e.g. "t2-t16x16"
  /// Bytes of one out x in matrix, header included.
  int64_t (*bytes)(int64_t outFeatures, int64_t inFeatures);
  /// Writes gamma and the codes (row-major, values -1/0/+1) into `out`
  /// (bytes(out, in) bytes, zeroed by the caller).
  void (*pack)(const int8_t *codes, int64_t outFeatures, int64_t inFeatures,
               float gamma, uint8_t *out);
};

/// How a backend stores a quantized float matrix (the LM head's "q6" and
/// "i8" dtypes): its size and its packer from row-major floats.
struct MatrixEncoding {
  std::string name; // e.g. "q6-rows64"
  int64_t (*bytes)(int64_t rows, int64_t cols);
  /// Writes the encoded matrix into `out` (bytes(rows, cols), zeroed).
  void (*pack)(const float *values, int64_t rows, int64_t cols, uint8_t *out);
};

/// One serialized executable: code for one target variant.
struct ExecutableImage {
  std::string target;             // runtime driver key: "x86_64", "aarch64"
  std::string cpu;                // what the code was tuned for
  std::string format;             // "elf-shared-object"
  std::vector<std::string> needs; // host features it requires
  std::vector<std::string> kernels;
  std::string image;     // what the module stores (static: the table symbol)
  std::string object;   // static libraries: the relocatable object
  std::string source;   // a text form where one exists (LLVM IR here)
  std::string fileExt;  // extension of the binary for --dump-executables
  std::string sourceExt = "ll"; // extension of `source` ("mlir" for SPIR-V)
  /// Where each kernel's own image starts in `image` (SPIR-V: a module per
  /// kernel; MSL: a source per kernel); empty when the image holds all
  /// kernels as one. --dump-executables writes each as
  /// <stem>-<kernel>.<fileExt>.
  std::vector<uint32_t> kernelOffsets;
  /// GPU kernels: invocations per workgroup of each (x).
  std::vector<uint32_t> workgroupSizes;
};

struct SerializeOptions {
  bool wantSource = false;
  /// Non-empty: build objects for a static library instead of loadable
  /// images, their symbols starting with this prefix (platforms that forbid
  /// loading code, such as iOS).
  std::string staticPrefix;
};

class TargetBackend {
public:
  virtual ~TargetBackend();
  /// The --target spelling this backend was created from ("aarch64").
  virtual std::string spec() const = 0;
  virtual const TernaryEncoding &ternaryEncoding() const = 0;
  /// The encoding of a quantized float dtype ("q6", "i8"), or null when the
  /// backend has none (bf16 and f32 are stored as they are).
  virtual const MatrixEncoding *matrixEncoding(llvm::StringRef dtype) const = 0;
  /// tlora IR -> dispatches of this backend's kernels with planned memory
  /// (the "lowered" phase).
  virtual void buildLoweringPipeline(mlir::OpPassManager &pm) const = 0;
  /// Kernels -> the backend's codegen dialects (the "llvm" phase).
  virtual void buildKernelPipeline(mlir::OpPassManager &pm) const = 0;
  /// Serializes the lowered kernels: one executable per variant, in the
  /// order a runtime should prefer them.
  virtual mlir::LogicalResult
  serialize(mlir::ModuleOp program, const SerializeOptions &options,
            std::vector<ExecutableImage> *out, std::string *error) const = 0;
};

/// Creates a backend from one target spec ("aarch64:+dotprod"); returns null
/// and sets `error` when the spec is not this backend's or is malformed.
/// `matches` tells whether a spec's name belongs to the backend at all.
struct TargetBackendFactory {
  std::function<bool(llvm::StringRef name)> matches;
  std::function<std::unique_ptr<TargetBackend>(llvm::StringRef spec,
                                               std::string *error)>
      create;
  std::string help; // spellings, for error messages
};

void registerTargetBackend(TargetBackendFactory factory);
/// Registers every backend of the build (generated list).
void registerAllTargetBackends();

/// Parses a --target list: comma-separated specs NAME[:FEATURES], where a
/// comma-separated item that is not a target name continues the previous
/// spec's feature list ("x86-64:+avx512f,+avx512bw,aarch64").
mlir::FailureOr<std::vector<std::unique_ptr<TargetBackend>>>
parseTargetList(llvm::StringRef list, std::string *error);

} // namespace tlc

#endif // TLC_COMPILER_TARGET_TARGETBACKEND_H
