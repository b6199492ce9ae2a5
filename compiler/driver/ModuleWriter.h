// Serializes a compiled model into a .tlm module file
// (runtime/schemas/module.fbs).
#ifndef TLC_COMPILER_DRIVER_MODULEWRITER_H
#define TLC_COMPILER_DRIVER_MODULEWRITER_H

#include "compiler/hf/HFConfig.h"
#include "compiler/hf/HFImporter.h"
#include "compiler/hf/SafeTensors.h"
#include "compiler/target/TargetBackend.h"
#include "runtime/src/tokenizer/Tokenizer.h"

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace tlc {

/// What one target backend produced: its lowered program (entry functions
/// with dispatch lists and memory plan) and its executables.
struct CompiledTarget {
  mlir::ModuleOp program;
  const TargetBackend *backend = nullptr; // its parameter encodings
  std::vector<ExecutableImage> executables;
};

struct ModuleContents {
  std::vector<CompiledTarget> targets;
  const ModelConfig *config = nullptr;
  const Checkpoint *checkpoint = nullptr;
  const TokenizerData *tokenizer = nullptr; // may be null
  std::string modelName;
  const TrainOptions *train = nullptr; // training modules
  int defaultThreads = 0;              // 0: every online CPU
  std::string device;                  // --device profile name
};

/// Writes `path` atomically (a temporary file renamed at the end): on any
/// error nothing is left behind and `error` says why.
bool writeModule(const ModuleContents &contents, const std::string &path,
                 std::string *error);

} // namespace tlc

#endif // TLC_COMPILER_DRIVER_MODULEWRITER_H
