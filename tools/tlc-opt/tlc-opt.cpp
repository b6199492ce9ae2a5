// tlc-opt: mlir-opt with the tlora dialect, our passes and the upstream
// dialects and conversions tlc uses.
#include "compiler/driver/Compiler.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  tlc::registerCompilerDialects(registry);
  tlc::registerCompilerPasses();
  mlir::registerAllPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "tlc optimizer driver\n", registry));
}
