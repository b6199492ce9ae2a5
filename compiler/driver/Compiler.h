// The compiler driver: model folder -> phases of IR -> .tlm module file.
#ifndef TLC_COMPILER_DRIVER_COMPILER_H
#define TLC_COMPILER_DRIVER_COMPILER_H

#include "compiler/hf/HFImporter.h"

#include <optional>
#include <string>

namespace mlir {
class DialectRegistry;
}

namespace tlc {

/// What `tlc compile` writes: a module with loadable executables, or a
/// module plus a static library (OUT.a, OUT.h) holding the code.
enum class OutputFormat { Module, StaticLib };

/// Phases at which compilation can stop (--compile-to).
enum class Phase { Import, Tlora, Lowered, LLVM, End };

struct CompileOptions {
  std::string modelDir, output;
  std::string target = "host"; // comma-separated list of target specs
  std::string device;          // a device profile: sets target and defaults
  OutputFormat outputFormat = OutputFormat::Module;
  Phase stopAfter = Phase::End;
  bool printIRAfterAll = false;
  std::string printIRAfter; // a pass argument, e.g. tlora-plan-memory
  std::string dumpIRDir;    // one numbered file per pass
  std::string dumpExecutablesDir; // each executable's binary and source
  bool timing = false;
  int64_t maxTokens = 128, maxSeq = 0;
  int headBits = 16; // --lm-head: exact (16), int8 (8), q6 (6)
  std::string adapterDir; // --adapter: a PEFT LoRA adapter to bake in
  std::optional<TrainOptions> train; // --train: a fine-tuning module
};

/// Every dialect the compiler's IR uses.
void registerCompilerDialects(mlir::DialectRegistry &registry);
/// Every pass of ours (for tlc-opt and pipelines).
void registerCompilerPasses();

/// Runs a compilation; returns 0 on success, 1 after printing one error.
int compile(const CompileOptions &options);

} // namespace tlc

#endif // TLC_COMPILER_DRIVER_COMPILER_H
