# lit configuration: one suite over the whole source tree (tests live beside
# the code they test), run from build/test.
import inspect
import os

import lit.formats

config.name = "tlc"
# Tests are sh scripts (pipes, subshells, traps). lit 23 deprecated the
# external shell: it needs force_execute_external there.
_sh_options = {"execute_external": True}
if "force_execute_external" in inspect.signature(lit.formats.ShTest).parameters:
    _sh_options["force_execute_external"] = True
config.test_format = lit.formats.ShTest(**_sh_options)
config.suffixes = [".mlir", ".test"]
config.test_source_root = config.src_root
config.test_exec_root = os.path.join(config.build_root, "test")
config.excludes = ["build", "models", "goldens", "bench", "docs", "data", "lora-goldens",
                   "Inputs", ".git", ".ci", "runtime", "compiler", "build-aarch64",
                   ".device"]
config.environment["PATH"] = os.pathsep.join(
    [config.tlc_bin, config.llvm_tools, config.environment.get("PATH", "")])
for var in ["HOME", "TMPDIR"]:
    if var in os.environ:
        config.environment[var] = os.environ[var]
config.substitutions.append(("%python", config.python))
config.substitutions.append(("%src", config.src_root))
config.substitutions.append(("%goldens", os.path.join(config.src_root, "test", "e2e", "goldens")))
config.substitutions.append(("%aarch64_bin", config.aarch64_bin))
config.substitutions.append(("%bin", config.tlc_bin))
