// The metal target backend: the GPU kernels of targets/gpu, lowered to
// SPIR-V as for Vulkan, then translated to MSL per kernel by SPIRV-Cross
// (Khronos' translator: IREE's and MoltenVK's route). Buffers are
// [[buffer(i)]] in binding order; the scalars T, pos, rows are the
// constant block at [[buffer(kScalarsBuffer)]]. A Metal driver (Apple
// platforms only) compiles the sources with MTLDevice newLibraryWithSource.
#include "compiler/target/TargetBackend.h"
#include "dialects/tlora/Transforms/Passes.h"
#include "targets/gpu/Passes.h"
#include "targets/vulkan-spirv/Passes.h"

#include "mlir/Dialect/SPIRV/IR/SPIRVOps.h"
#include "mlir/Target/SPIRV/Serialization.h"

#include <spirv_cross/spirv_cross_c.h>

#include <cstring>

using namespace mlir;

namespace {
/// Metal's argument table has 31 buffer slots: the scalars take the last.
constexpr unsigned kScalarsBuffer = 30;

/// MSL of entry point `name` of `words`, or an error.
FailureOr<std::string> translate(const SmallVector<uint32_t> &words,
                                 const std::string &name, bool ios,
                                 std::string *error) {
  spvc_context ctx = nullptr;
  if (spvc_context_create(&ctx) != SPVC_SUCCESS) {
    *error = "SPIRV-Cross: no context";
    return failure();
  }
  struct Release {
    spvc_context c;
    ~Release() { spvc_context_destroy(c); }
  } release{ctx};
  spvc_parsed_ir ir = nullptr;
  spvc_compiler msl = nullptr;
  spvc_compiler_options options = nullptr;
  auto failed = [&](const char *what) {
    *error = std::string("SPIRV-Cross: ") + what + " failed for kernel " +
             name + ": " + spvc_context_get_last_error_string(ctx);
    return mlir::failure();
  };
  if (spvc_context_parse_spirv(ctx, words.data(), words.size(), &ir) !=
      SPVC_SUCCESS)
    return failed("parsing");
  if (spvc_context_create_compiler(ctx, SPVC_BACKEND_MSL, ir,
                                   SPVC_CAPTURE_MODE_TAKE_OWNERSHIP,
                                   &msl) != SPVC_SUCCESS)
    return failed("creating the MSL compiler");
  if (spvc_compiler_set_entry_point(msl, name.c_str(),
                                    SpvExecutionModelGLCompute) !=
      SPVC_SUCCESS)
    return failed("choosing the entry point");
  if (spvc_compiler_create_compiler_options(msl, &options) != SPVC_SUCCESS)
    return failed("options");
  spvc_compiler_options_set_uint(options, SPVC_COMPILER_OPTION_MSL_VERSION,
                                 SPVC_MAKE_MSL_VERSION(2, 1, 0));
  spvc_compiler_options_set_uint(options, SPVC_COMPILER_OPTION_MSL_PLATFORM,
                                 ios ? SPVC_MSL_PLATFORM_IOS
                                     : SPVC_MSL_PLATFORM_MACOS);
  spvc_compiler_install_compiler_options(msl, options);
  // Binding i of set 0 -> [[buffer(i)]]; the push constants -> the last.
  for (unsigned i = 0; i < kScalarsBuffer; ++i) {
    spvc_msl_resource_binding b;
    spvc_msl_resource_binding_init(&b);
    b.stage = SpvExecutionModelGLCompute;
    b.desc_set = 0;
    b.binding = i;
    b.msl_buffer = i;
    spvc_compiler_msl_add_resource_binding(msl, &b);
  }
  spvc_msl_resource_binding push;
  spvc_msl_resource_binding_init(&push);
  push.stage = SpvExecutionModelGLCompute;
  push.desc_set = SPVC_MSL_PUSH_CONSTANT_DESC_SET;
  push.binding = SPVC_MSL_PUSH_CONSTANT_BINDING;
  push.msl_buffer = kScalarsBuffer;
  spvc_compiler_msl_add_resource_binding(msl, &push);
  const char *source = nullptr;
  if (spvc_compiler_compile(msl, &source) != SPVC_SUCCESS)
    return failed("translation");
  return std::string(source);
}

class MetalTargetBackend final : public tlc::TargetBackend {
public:
  MetalTargetBackend(std::string spec, std::string family)
      : spec_(std::move(spec)), family_(std::move(family)) {}
  std::string spec() const override { return spec_; }
  const tlc::TernaryEncoding &ternaryEncoding() const override {
    return tlc::gpu::ternaryEncoding();
  }
  const tlc::MatrixEncoding *matrixEncoding(llvm::StringRef) const override {
    return nullptr;
  }
  void buildLoweringPipeline(OpPassManager &pm) const override {
    pm.addPass(tlc::gpu::createFormGPUDispatchesPass());
    pm.addPass(mlir::tlora::createPlanMemoryPass());
  }
  void buildKernelPipeline(OpPassManager &pm) const override {
    pm.addPass(tlc::vulkan::createLowerGPUKernelsToSPIRVPass());
  }
  LogicalResult serialize(ModuleOp program, const tlc::SerializeOptions &,
                          std::vector<tlc::ExecutableImage> *out,
                          std::string *error) const override {
    // Metal compiles MSL at run time through its own API, which iOS allows:
    // static-lib builds keep the sources too. Each kernel is translated from
    // a module of its own (only its threadgroup memory: Metal allows 32 KiB);
    // the image is their sources end to end, each kernel's start in
    // kernelOffsets.
    for (auto m : program.getOps<spirv::ModuleOp>()) {
      tlc::ExecutableImage exe;
      for (auto ep : m.getOps<spirv::EntryPointOp>()) {
        std::string name = ep.getFn().str();
        OwningOpRef<spirv::ModuleOp> one = tlc::vulkan::kernelModule(m, name);
        SmallVector<uint32_t> words;
        if (failed(spirv::serialize(*one, words))) {
          *error = "internal error: SPIR-V serialization failed";
          return failure();
        }
        auto msl = translate(words, name, family_.rfind("apple", 0) == 0,
                             error);
        if (failed(msl))
          return failure();
        exe.kernels.push_back(name);
        exe.workgroupSizes.push_back(tlc::vulkan::workgroupSize(m, name));
        exe.kernelOffsets.push_back((uint32_t)exe.image.size());
        exe.image += *msl;
      }
      exe.target = "metal";
      exe.cpu = family_;
      exe.format = "msl";
      exe.fileExt = "metal";
      out->push_back(std::move(exe));
    }
    return success();
  }

private:
  std::string spec_, family_;
};
} // namespace

namespace tlc::metal {
void registerMetalTargetBackend() {
  tlc::TargetBackendFactory f;
  f.matches = [](llvm::StringRef name) { return name == "metal"; };
  f.create = [](llvm::StringRef spec,
                std::string *error) -> std::unique_ptr<tlc::TargetBackend> {
    // metal[:FAMILY]: apple7..apple9 (iPhone, iPad) or mac2 (macOS).
    auto [name, family] = spec.split(':');
    if (family.empty())
      family = "apple9";
    static const char *const kFamilies[] = {"apple7", "apple8", "apple9",
                                            "mac2"};
    if (llvm::find(kFamilies, family) == std::end(kFamilies)) {
      *error = "unknown Metal family '" + family.str() +
               "' (known: apple7, apple8, apple9, mac2)";
      return nullptr;
    }
    return std::make_unique<MetalTargetBackend>(spec.str(), family.str());
  };
  f.help = "metal[:FAMILY] (MSL; runs on Apple platforms)";
  tlc::registerTargetBackend(std::move(f));
}
} // namespace tlc::metal
