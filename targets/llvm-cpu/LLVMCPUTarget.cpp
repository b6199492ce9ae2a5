// The llvm-cpu target backend: x86-64 and aarch64 CPUs through LLVM. Forms
// dispatches of per-shape kernels, stores ternary weights in the T16x16
// layout (kernels/ternary.h) that every ISA build reads, and serializes one
// ELF shared object per CPU variant.
#include "compiler/target/TargetBackend.h"
#include "dialects/tlora/Transforms/Passes.h"
#include "targets/llvm-cpu/Passes.h"
#include "targets/llvm-cpu/kernels/ternary.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace mlir;

namespace tlc::llvmcpu {
namespace {

/// Features a host must have, as LLVM and the runtime's checks spell them.
/// iOS 16 and later on 64-bit ARM (every iPhone with dotprod).
constexpr const char *kIOSTriple = "arm64-apple-ios16.0";

constexpr const char *kCheckedFeatures[] = {
    "avx2",     "fma",        "f16c",       "avx512f", "avx512bw",
    "avx512vl", "avx512vnni", "avx512bf16", "avxvnni", "dotprod",
    "i8mm"};

std::string joinFeatures(const llvm::StringMap<bool> &features,
                         std::vector<std::string> *needs) {
  // Sorted, so that the same spec always gives the same bytes.
  std::vector<std::string> names;
  for (auto &f : features)
    names.push_back(f.first().str());
  std::sort(names.begin(), names.end());
  std::string out;
  for (const std::string &name : names) {
    bool on = features.lookup(name);
    out += (out.empty() ? "" : ",") + std::string(on ? "+" : "-") + name;
    for (const char *c : kCheckedFeatures)
      if (on && name == c)
        needs->push_back(c);
  }
  return out;
}

bool on(const llvm::StringMap<bool> &f, const char *name) {
  auto it = f.find(name);
  return it != f.end() && it->second;
}

/// The LLVM triple of `arch` on Linux/Android, or on iOS (Mach-O).
const char *tripleOf(llvm::StringRef arch, bool ios) {
  if (ios)
    return kIOSTriple;
  return arch == "aarch64" ? "aarch64-unknown-linux-gnu"
                           : "x86_64-unknown-linux-gnu";
}

CpuTarget makeTarget(llvm::StringRef arch, std::string cpu,
                     const llvm::StringMap<bool> &features, bool ios = false) {
  CpuTarget t;
  t.cpu = std::move(cpu);
  t.features = joinFeatures(features, &t.needs);
  t.triple = tripleOf(arch, ios);
  t.staticOnly = ios;
  if (arch == "aarch64") {
    t.arch = "aarch64";
    t.isa = on(features, "i8mm") && on(features, "dotprod")
                ? MicrokernelIsa::NeonI8mm
            : on(features, "dotprod") ? MicrokernelIsa::NeonDotprod
                                      : MicrokernelIsa::Neon;
  } else {
    t.arch = "x86_64";
    t.isa = on(features, "avx512vnni") && on(features, "avx512bw")
                ? MicrokernelIsa::Avx512
                : MicrokernelIsa::Avx2;
  }
  return t;
}

/// Features of a spec: [+-]feature items and one optional cpu=NAME (the
/// core the code is tuned for, e.g. cpu=cortex-x4).
bool parseFeatures(llvm::StringRef spec, llvm::StringRef list,
                   llvm::StringMap<bool> *features, std::string *cpu,
                   std::string *error) {
  llvm::SmallVector<llvm::StringRef> items;
  list.split(items, ',', -1, false);
  for (llvm::StringRef f : items) {
    llvm::StringRef item = f.trim();
    if (item.consume_front("cpu=")) {
      *cpu = item.str();
      continue;
    }
    // "+dotprod+i8mm" is one item with two features.
    llvm::SmallVector<llvm::StringRef> parts;
    for (size_t at = 0; at < f.size();) {
      size_t next = f.find('+', at + 1);
      parts.push_back(f.slice(at, next));
      at = next == llvm::StringRef::npos ? f.size() : next;
    }
    for (llvm::StringRef p : parts) {
      p = p.trim();
      bool enable = !p.consume_front("-");
      p.consume_front("+");
      if (p.empty()) {
        *error = "empty feature in target '" + spec.str() + "'";
        return false;
      }
      (*features)[p] = enable;
    }
  }
  return true;
}
/// Whether LLVM knows `cpu` for `triple`.
bool checkCpu(const char *triple, const std::string &cpu, llvm::StringRef spec,
              std::string *error) {
  llvm::InitializeAllTargetInfos();
  llvm::InitializeAllTargets();
  llvm::InitializeAllTargetMCs();
  std::string lookupError;
  llvm::Triple t(triple);
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(t, lookupError);
  if (!target) {
    *error = lookupError;
    return false;
  }
  std::unique_ptr<llvm::MCSubtargetInfo> sti(
      target->createMCSubtargetInfo(t, "", ""));
  if (!sti || !sti->isCPUStringValid(cpu)) {
    *error = "unknown CPU '" + cpu + "' in target '" + spec.str() + "'";
    return false;
  }
  return true;
}
} // namespace

FailureOr<std::vector<CpuTarget>> parseCpuTarget(llvm::StringRef spec,
                                                 std::string *error) {
  if (spec == "host") {
    llvm::Triple host(llvm::sys::getProcessTriple());
    llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
    if (!host.isX86() && !host.isAArch64()) {
      *error = "the host (" + host.str() + ") is not an x86-64 or aarch64 CPU";
      return failure();
    }
    return std::vector<CpuTarget>{
        makeTarget(host.isAArch64() ? "aarch64" : "x86_64",
                   llvm::sys::getHostCPUName().str(), features)};
  }
  auto [arch, feats] = spec.split(':');
  llvm::StringMap<bool> features;
  if (arch == "x86-64" || arch == "x86_64") {
    // The baseline is x86-64-v3 (AVX2 + FMA), which the kernels need.
    for (const char *f : {"avx2", "fma", "f16c"})
      features[f] = true;
    std::string cpu = "x86-64-v3";
    if (!parseFeatures(spec, feats, &features, &cpu, error) ||
        !checkCpu("x86_64-unknown-linux-gnu", cpu, spec, error))
      return failure();
    return std::vector<CpuTarget>{makeTarget("x86_64", cpu, features)};
  }
  bool ios = arch == "aarch64-ios" || arch == "arm64-ios";
  if (arch == "aarch64" || arch == "arm64" || ios) {
    features["neon"] = true;
    if (!feats.empty()) {
      std::string cpu = "generic";
      if (!parseFeatures(spec, feats, &features, &cpu, error) ||
          !checkCpu(tripleOf("aarch64", ios), cpu, spec, error))
        return failure();
      return std::vector<CpuTarget>{
          makeTarget("aarch64", cpu, features, ios)};
    }
    // Run-time dispatch: the runtime takes the first variant the CPU runs.
    std::vector<CpuTarget> variants;
    llvm::StringMap<bool> dot = features, mm = features;
    dot["dotprod"] = true;
    mm["dotprod"] = true;
    mm["i8mm"] = true;
    variants.push_back(makeTarget("aarch64", "generic", mm, ios));
    variants.push_back(makeTarget("aarch64", "generic", dot, ios));
    variants.push_back(makeTarget("aarch64", "generic", features, ios));
    return variants;
  }
  *error = "unknown target '" + spec.str() +
           "' (expected host, x86-64[:FEATURES], aarch64[:FEATURES] or "
           "aarch64-ios[:FEATURES])";
  return failure();
}

namespace {
int64_t t16x16Bytes(int64_t outFeatures, int64_t inFeatures) {
  return ternaryParamBytes(outFeatures, inFeatures);
}

void t16x16Pack(const int8_t *codes, int64_t outFeatures, int64_t inFeatures,
                float gamma, uint8_t *out) {
  std::memcpy(out, &gamma, sizeof gamma); // 64-byte header: gamma
  tlc_ternary_pack(codes, outFeatures, inFeatures, out + 64);
}

const TernaryEncoding kT16x16 = {"t2-t16x16", t16x16Bytes, t16x16Pack};

/// The 6-bit LM head of kernels/head.c.
int64_t q6Bytes(int64_t rows, int64_t cols) {
  return (int64_t)tlc_q6_packed_size(rows, cols);
}
void q6Pack(const float *values, int64_t rows, int64_t cols, uint8_t *out) {
  tlc_q6_pack(values, rows, cols, out);
}

/// Per-row symmetric int8 (scale = max|row| / 127), the float scales after
/// the matrix (tlc_k_dense_i8).
int64_t i8Bytes(int64_t rows, int64_t cols) { return rows * cols + 4 * rows; }
void i8Pack(const float *values, int64_t rows, int64_t cols, uint8_t *out) {
  float *scales = (float *)(out + rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c)
      amax = std::max(amax, std::fabs(values[r * cols + c]));
    float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] =
          (uint8_t)(int8_t)std::nearbyint(values[r * cols + c] / scale);
    scales[r] = scale;
  }
}

const MatrixEncoding kQ6 = {"q6-rows64", q6Bytes, q6Pack};
const MatrixEncoding kI8 = {"i8-rowscale", i8Bytes, i8Pack};

class LLVMCPUTargetBackend final : public tlc::TargetBackend {
public:
  LLVMCPUTargetBackend(std::string spec, std::vector<CpuTarget> variants)
      : spec_(std::move(spec)), variants_(std::move(variants)) {}

  std::string spec() const override { return spec_; }
  const TernaryEncoding &ternaryEncoding() const override { return kT16x16; }
  const MatrixEncoding *matrixEncoding(llvm::StringRef dtype) const override {
    return dtype == "q6" ? &kQ6 : dtype == "i8" ? &kI8 : nullptr;
  }

  void buildLoweringPipeline(OpPassManager &pm) const override {
    pm.addPass(createFormDispatchesPass());
    pm.addPass(mlir::tlora::createPlanMemoryPass());
  }
  void buildKernelPipeline(OpPassManager &pm) const override {
    pm.addPass(createLowerKernelsToLLVMPass());
  }

  LogicalResult serialize(ModuleOp program, const SerializeOptions &options,
                          std::vector<ExecutableImage> *out,
                          std::string *error) const override {
    ModuleOp kernels;
    for (auto m : program.getOps<ModuleOp>())
      if (m.getSymName() == "kernels")
        kernels = m;
    if (!kernels) {
      *error = "internal error: no kernels module";
      return failure();
    }
    for (const CpuTarget &t : variants_) {
      ExecutableImage exe;
      bool isStatic = !options.staticPrefix.empty();
      if (t.staticOnly && !isStatic) {
        *error = "target " + spec_ +
                 ": iOS forbids loading code at run time, so its kernels "
                 "must be linked into the app: compile with "
                 "--output-format=static-lib";
        return failure();
      }
      std::string symbol =
          isStatic ? options.staticPrefix + "_" + std::to_string(out->size())
                   : "";
      auto code = buildSharedObject(kernels, t, &exe.kernels,
                                    options.wantSource ? &exe.source : nullptr,
                                    error, symbol);
      if (failed(code))
        return failure();
      if (isStatic) {
        exe.object = std::move(*code);
        exe.image = symbol; // the runtime finds the registered table by it
        exe.format = "static-library";
        exe.fileExt = "o";
      } else {
        exe.image = std::move(*code);
        exe.format = "elf-shared-object";
        exe.fileExt = "so";
      }
      exe.target = t.arch;
      exe.cpu = t.cpu;
      exe.needs = t.needs;
      out->push_back(std::move(exe));
    }
    return success();
  }

private:
  std::string spec_;
  std::vector<CpuTarget> variants_;
};
} // namespace

void registerLLVMCPUTargetBackend() {
  registerLLVMCPUPasses(); // for tlc-opt
  tlc::TargetBackendFactory f;
  f.matches = [](llvm::StringRef name) {
    return name == "host" || name == "x86-64" || name == "x86_64" ||
           name == "aarch64" || name == "arm64" || name == "aarch64-ios" ||
           name == "arm64-ios";
  };
  f.create = [](llvm::StringRef spec,
                std::string *error) -> std::unique_ptr<tlc::TargetBackend> {
    auto variants = parseCpuTarget(spec, error);
    if (failed(variants))
      return nullptr;
    return std::make_unique<LLVMCPUTargetBackend>(spec.str(),
                                                  std::move(*variants));
  };
  f.help = "host, x86-64[:FEATURES], aarch64[:FEATURES], "
           "aarch64-ios[:FEATURES] (Mach-O, static-lib only)";
  tlc::registerTargetBackend(std::move(f));
}

} // namespace tlc::llvmcpu
