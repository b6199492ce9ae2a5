// The vulkan-spirv target backend: the GPU kernels of targets/gpu lowered to
// one SPIR-V module (Vulkan 1.1 compute, SPIR-V 1.3) through MLIR's SPIR-V
// dialect. Buffers are storage buffers at (set 0, binding i); the scalars
// T, pos, rows are one push-constant block.
#include "targets/gpu/Passes.h"

#include "compiler/target/TargetBackend.h"
#include "dialects/tlora/Transforms/Passes.h"
#include "mlir/Conversion/GPUToSPIRV/GPUToSPIRVPass.h"
#include "mlir/Conversion/MathToSPIRV/MathToSPIRVPass.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVDialect.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVOps.h"
#include "mlir/Dialect/SPIRV/IR/TargetAndABI.h"
#include "mlir/Dialect/SPIRV/Transforms/Passes.h"
#include "mlir/Target/SPIRV/Serialization.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

#include "targets/vulkan-spirv/Passes.h"

namespace tlc::vulkan {
#define GEN_PASS_DEF_LOWERGPUKERNELSTOSPIRVPASS
#include "targets/vulkan-spirv/Passes.h.inc"
#define GEN_PASS_REGISTRATION
#include "targets/vulkan-spirv/Passes.h.inc"
} // namespace tlc::vulkan

using namespace mlir;

namespace {
/// Trailing i32 scalars -> one memref<4xi32> argument (loads of 0, 1, 2),
/// which becomes the push-constant block after the SPIR-V conversion.
void packScalars(gpu::GPUFuncOp fn) {
  MLIRContext *ctx = fn.getContext();
  unsigned n = fn.getFunctionType().getNumInputs(),
           first = n - tlc::gpu::kKernelScalars;
  auto type = MemRefType::get({4}, IntegerType::get(ctx, 32));
  fn.insertArgument(
      n, type,
      DictionaryAttr::get(ctx, {NamedAttribute(mlir::tlora::attr::kScalars,
                                               UnitAttr::get(ctx))}),
      fn.getLoc());
  Value block = fn.getArgument(n);
  OpBuilder b = OpBuilder::atBlockBegin(&fn.getBody().front());
  llvm::BitVector erase(n + 1);
  for (unsigned i = 0; i < tlc::gpu::kKernelScalars; ++i) {
    Value at = arith::ConstantIndexOp::create(b, fn.getLoc(), i);
    Value v = memref::LoadOp::create(b, fn.getLoc(), block, at);
    fn.getArgument(first + i).replaceAllUsesWith(v);
    erase.set(first + i);
  }
  (void)fn.eraseArguments(erase);
}

/// The storage-buffer variable of each kernel's scalars (its last binding)
/// -> a push-constant variable without set and binding; the pointer types
/// derived from it follow.
void scalarsToPushConstants(spirv::ModuleOp module,
                            const llvm::StringMap<unsigned> &scalarBinding) {
  for (auto var :
       llvm::make_early_inc_range(module.getOps<spirv::GlobalVariableOp>())) {
    auto binding = var.getBinding();
    StringRef name = var.getSymName();
    size_t at = name.rfind("_arg_");
    if (!binding || at == StringRef::npos)
      continue;
    auto it = scalarBinding.find(name.take_front(at));
    if (it == scalarBinding.end() || it->second != *binding)
      continue;
    auto ptr = cast<spirv::PointerType>(var.getType());
    auto pushType = spirv::PointerType::get(ptr.getPointeeType(),
                                            spirv::StorageClass::PushConstant);
    var.setType(pushType);
    var->removeAttr(var.getBindingAttrName());
    var->removeAttr(var.getDescriptorSetAttrName());
    module.walk([&](spirv::AddressOfOp addr) {
      if (addr.getVariable() != name)
        return;
      addr.getPointer().setType(pushType);
      SmallVector<Value> work{addr.getPointer()};
      while (!work.empty()) {
        Value v = work.pop_back_val();
        for (Operation *user : v.getUsers())
          if (auto chain = dyn_cast<spirv::AccessChainOp>(user)) {
            auto old = cast<spirv::PointerType>(chain.getType());
            chain.getResult().setType(spirv::PointerType::get(
                old.getPointeeType(), spirv::StorageClass::PushConstant));
            work.push_back(chain.getResult());
          }
      }
    });
  }
}

/// Decorates every float add, subtract, multiply and divide NoContraction:
/// drivers then evaluate them as written (no fusing into fma, no algebraic
/// rewrites; Mesa's NIR otherwise folds a - (a - b) into b), so kernels
/// give the same results on every device and the error-free sums of the
/// kernels stay error-free. Where a fused multiply-add is wanted, the
/// kernels say so (math.fma).
void exactFloatMath(spirv::ModuleOp module) {
  module.walk([](Operation *op) {
    if (isa<spirv::FAddOp, spirv::FSubOp, spirv::FMulOp, spirv::FDivOp,
            spirv::FNegateOp>(op))
      op->setAttr("no_contraction", UnitAttr::get(op->getContext()));
  });
}

/// Calls of the kernels' dot product (tlc::gpu::kDot4Intrinsic) ->
/// OpSDot on packed 4 x 8-bit vectors.
void lowerDot4(ModuleOp top) {
  top.walk([](func::CallOp call) {
    if (call.getCallee() != tlc::gpu::kDot4Intrinsic)
      return;
    OpBuilder b(call);
    auto dot = spirv::SDotOp::create(
        b, call.getLoc(), b.getI32Type(), call.getOperand(0),
        call.getOperand(1),
        spirv::PackedVectorFormatAttr::get(
            b.getContext(),
            spirv::PackedVectorFormat::PackedVectorFormat4x8Bit));
    call.replaceAllUsesWith(dot->getResults());
    call.erase();
  });
  SmallVector<func::FuncOp> declarations;
  top.walk([&](func::FuncOp f) {
    if (f.getName() == tlc::gpu::kDot4Intrinsic)
      declarations.push_back(f);
  });
  for (func::FuncOp f : declarations)
    f.erase();
}

struct LowerGPUKernelsToSPIRVPass
    : tlc::vulkan::impl::LowerGPUKernelsToSPIRVPassBase<
          LowerGPUKernelsToSPIRVPass> {
  void runOnOperation() override {
    ModuleOp top = getOperation();
    MLIRContext *ctx = &getContext();
    llvm::StringMap<unsigned> scalarBinding;
    top.walk([&](gpu::GPUFuncOp fn) {
      if (!fn.isKernel())
        return;
      packScalars(fn);
      scalarBinding[fn.getName()] = fn.getFunctionType().getNumInputs() - 1;
      SmallVector<int32_t> size(3, 1);
      if (auto known = fn.getKnownBlockSizeAttr())
        size.assign(known.asArrayRef().begin(), known.asArrayRef().end());
      fn->setAttr(spirv::getEntryPointABIAttrName(),
                  spirv::getEntryPointABIAttr(ctx, size));
    });
    // SPIR-V 1.3 (Vulkan 1.1); 1.6 (Vulkan 1.3) where kernels take the
    // integer dot product: MLIR has its capability only from 1.6, not
    // through SPV_KHR_integer_dot_product.
    bool dot = llvm::any_of(top.getOps<gpu::GPUModuleOp>(), [](auto m) {
      return (bool)m.lookupSymbol(tlc::gpu::kDot4Intrinsic);
    });
    OpPassManager pm("builtin.module");
    GpuSPIRVAttachTargetOptions target;
    target.spirvVersion = dot ? "v1.6" : "v1.3";
    target.spirvCapabilities = {"Shader"};
    if (dot)
      target.spirvCapabilities.append(
          {"DotProduct", "DotProductInput4x8BitPacked"});
    target.spirvExtensions = {"SPV_KHR_storage_buffer_storage_class"};
    target.clientApi = "Vulkan";
    pm.addPass(createGpuSPIRVAttachTarget(target));
    pm.addPass(createConvertMathToSPIRVPass());
    if (failed(runPipeline(pm, top)))
      return signalPassFailure();
    // After the math conversion: it checks SPIR-V ops against a default
    // environment, not the gpu.module's.
    lowerDot4(top);
    pm.clear();
    pm.addPass(createConvertGPUToSPIRVPass());
    OpPassManager &spv = pm.nest<spirv::ModuleOp>();
    spv.addPass(spirv::createSPIRVLowerABIAttributesPass());
    spv.addPass(spirv::createSPIRVUpdateVCEPass());
    if (failed(runPipeline(pm, top)))
      return signalPassFailure();
    for (auto m : top.getOps<spirv::ModuleOp>()) {
      scalarsToPushConstants(m, scalarBinding);
      exactFloatMath(m);
    }
    // The gpu.module is what the SPIR-V came from; nothing uses it now.
    for (auto m : llvm::make_early_inc_range(top.getOps<gpu::GPUModuleOp>()))
      m.erase();
  }
};

/// maxStorageBufferRange every Vulkan device supports (2^27 bytes).
constexpr int64_t kVulkanMinStorageBufferRange = int64_t(1) << 27;

class VulkanSPIRVTargetBackend final : public tlc::TargetBackend {
public:
  VulkanSPIRVTargetBackend(std::string spec, std::string profile,
                           int64_t maxBufferRange, bool integerDot)
      : spec_(std::move(spec)), profile_(std::move(profile)),
        maxBufferRange_(maxBufferRange), integerDot_(integerDot) {}
  std::string spec() const override { return spec_; }
  const tlc::TernaryEncoding &ternaryEncoding() const override {
    return tlc::gpu::ternaryEncoding();
  }
  const tlc::MatrixEncoding *matrixEncoding(llvm::StringRef) const override {
    return nullptr;
  }
  void buildLoweringPipeline(OpPassManager &pm) const override {
    pm.addPass(
        tlc::gpu::createFormGPUDispatchesPass({maxBufferRange_, integerDot_}));
    pm.addPass(mlir::tlora::createPlanMemoryPass());
  }
  void buildKernelPipeline(OpPassManager &pm) const override {
    pm.addPass(tlc::vulkan::createLowerGPUKernelsToSPIRVPass());
  }
  LogicalResult serialize(ModuleOp program,
                          const tlc::SerializeOptions &options,
                          std::vector<tlc::ExecutableImage> *out,
                          std::string *error) const override {
    if (!options.staticPrefix.empty()) {
      *error = "target " + spec_ +
               ": SPIR-V executables are not static "
               "libraries; --output-format=static-lib is for CPU targets";
      return failure();
    }
    for (auto m : program.getOps<spirv::ModuleOp>()) {
      tlc::ExecutableImage exe;
      // A module per kernel: drivers (NVIDIA's among them) reserve all of a
      // module's workgroup variables for each of its entry points.
      for (auto ep : m.getOps<spirv::EntryPointOp>()) {
        OwningOpRef<spirv::ModuleOp> one =
            tlc::vulkan::kernelModule(m, ep.getFn());
        SmallVector<uint32_t> words;
        if (failed(spirv::serialize(*one, words))) {
          *error = "internal error: SPIR-V serialization failed";
          return failure();
        }
        exe.kernels.push_back(ep.getFn().str());
        exe.workgroupSizes.push_back(tlc::vulkan::workgroupSize(m, ep.getFn()));
        exe.kernelOffsets.push_back((uint32_t)exe.image.size());
        exe.image.append((const char *)words.data(), words.size() * 4);
      }
      if (options.wantSource) {
        llvm::raw_string_ostream os(exe.source);
        m.print(os);
      }
      exe.target = "vulkan";
      exe.cpu = profile_; // the GPU profile it was built for
      exe.format = "spirv";
      exe.fileExt = "spv";
      exe.sourceExt = "spirv.mlir";
      out->push_back(std::move(exe));
    }
    if (out->empty()) {
      *error = "internal error: no SPIR-V module";
      return failure();
    }
    return success();
  }

private:
  std::string spec_, profile_;
  int64_t maxBufferRange_;
  bool integerDot_;
};
} // namespace

namespace tlc::vulkan {
uint32_t workgroupSize(spirv::ModuleOp m, StringRef fn) {
  for (auto x : m.getOps<spirv::ExecutionModeOp>())
    if (x.getFn() == fn &&
        x.getExecutionMode() == spirv::ExecutionMode::LocalSize)
      return (uint32_t)cast<IntegerAttr>(x.getValues()[0]).getInt();
  return 1;
}

OwningOpRef<spirv::ModuleOp> kernelModule(spirv::ModuleOp m, StringRef fn) {
  OwningOpRef<spirv::ModuleOp> one(cast<spirv::ModuleOp>(m->clone()));
  SymbolTable symbols(*one);
  llvm::DenseSet<Operation *> live;
  SmallVector<Operation *> work;
  if (Operation *f = symbols.lookup(fn))
    live.insert(f), work.push_back(f);
  for (auto e : one->getOps<spirv::EntryPointOp>())
    if (e.getFn() == fn)
      work.push_back(e); // its interface variables
  while (!work.empty()) {
    Operation *op = work.pop_back_val();
    if (auto uses = SymbolTable::getSymbolUses(op))
      for (const SymbolTable::SymbolUse &use : *uses)
        if (Operation *d = symbols.lookup(
                use.getSymbolRef().getRootReference().getValue()))
          if (live.insert(d).second)
            work.push_back(d);
  }
  for (Operation &op :
       llvm::make_early_inc_range(one->getBody()->getOperations())) {
    if (auto e = dyn_cast<spirv::EntryPointOp>(op)) {
      if (e.getFn() != fn)
        op.erase();
    } else if (auto x = dyn_cast<spirv::ExecutionModeOp>(op)) {
      if (x.getFn() != fn)
        op.erase();
    } else if (isa<SymbolOpInterface>(op) && !live.contains(&op)) {
      op.erase();
    }
  }
  return one;
}

void registerVulkanSPIRVTargetBackend() {
  tlc::gpu::registerTlcGPUPasses();
  registerTlcVulkanPasses();
  tlc::TargetBackendFactory f;
  f.matches = [](llvm::StringRef name) { return name == "vulkan-spirv"; };
  f.create = [](llvm::StringRef spec,
                std::string *error) -> std::unique_ptr<tlc::TargetBackend> {
    // vulkan-spirv[:PROFILE][,max-buffer-range=BYTES][,no-integer-dot]:
    // the GPU a device profile names, the largest storage buffer range one
    // binding may cover (default 128 MiB: Vulkan's guaranteed minimum,
    // Adreno's value; smaller values emulate tighter limits in tests), and
    // whether kernels may use the packed int8 dot product
    // (VK_KHR_shader_integer_dot_product, core in Vulkan 1.3: every profile
    // here has it; no-integer-dot is for older devices).
    auto [name, features] = spec.split(':');
    static const char *const kProfiles[] = {"generic", "adreno-830",
                                            "adreno-750", "mali-g715"};
    std::string profile = "generic";
    int64_t maxBufferRange = kVulkanMinStorageBufferRange;
    bool integerDot = true;
    SmallVector<StringRef> items;
    if (!features.empty())
      features.split(items, ',');
    for (StringRef item : items) {
      if (item.consume_front("max-buffer-range=")) {
        if (item.getAsInteger(10, maxBufferRange) || maxBufferRange < 256) {
          *error = "target " + spec.str() +
                   ": max-buffer-range must be a "
                   "byte count >= 256, got '" +
                   item.str() + "'";
          return nullptr;
        }
      } else if (item == "no-integer-dot") {
        integerDot = false;
      } else if (llvm::find(kProfiles, item) != std::end(kProfiles)) {
        profile = item.str();
      } else {
        *error = "unknown Vulkan profile '" + item.str() +
                 "' (known: generic, adreno-830, adreno-750, mali-g715; "
                 "options: max-buffer-range=BYTES, no-integer-dot)";
        return nullptr;
      }
    }
    return std::make_unique<VulkanSPIRVTargetBackend>(
        spec.str(), profile, maxBufferRange, integerDot);
  };
  f.help = "vulkan-spirv[:PROFILE][,max-buffer-range=BYTES][,no-integer-dot]";
  tlc::registerTargetBackend(std::move(f));
}
} // namespace tlc::vulkan
