// Code generation of the llvm-cpu target: kernels in the LLVM dialect ->
// LLVM IR linked with the microkernel bitcode -> optimized object -> shared
// object linked in-process with lld.
#include "targets/llvm-cpu/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/Passes.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVMPass.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "lld/Common/Driver.h"
#include "llvm/Bitcode/BitcodeReader.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Linker/Linker.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

#include "targets/llvm-cpu/MicrokernelBitcode.inc"

LLD_HAS_DRIVER(elf)

namespace tlc::llvmcpu {
#define GEN_PASS_DEF_LOWERKERNELSTOLLVMPASS
#include "targets/llvm-cpu/Passes.h.inc"
} // namespace tlc::llvmcpu

using namespace mlir;

namespace {
/// tlora.microkernel_call -> func.call, each memref passed as its aligned
/// base pointer.
void lowerMicrokernelCalls(ModuleOp kernels) {
  SmallVector<tlora::MicrokernelCallOp> calls;
  kernels.walk([&](tlora::MicrokernelCallOp c) { calls.push_back(c); });
  for (tlora::MicrokernelCallOp call : calls) {
    OpBuilder b(call);
    Location loc = call.getLoc();
    SmallVector<Value> args;
    for (Value v : call.getOperands()) {
      if (isa<MemRefType>(v.getType())) {
        Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, v);
        Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), base);
        v = LLVM::IntToPtrOp::create(
            b, loc, LLVM::LLVMPointerType::get(b.getContext()), i64);
      }
      args.push_back(v);
    }
    func::CallOp::create(b, loc, call.getCallee(), TypeRange{}, args);
    call.erase();
  }
}

struct LowerKernelsToLLVMPass
    : tlc::llvmcpu::impl::LowerKernelsToLLVMPassBase<LowerKernelsToLLVMPass> {
  void runOnOperation() override {
    for (auto kernels : getOperation().getOps<ModuleOp>()) {
      if (kernels.getSymName() != "kernels")
        continue;
      lowerMicrokernelCalls(kernels);
      OpPassManager pm("builtin.module");
      pm.addPass(createSCFToControlFlowPass());
      pm.addPass(memref::createExpandStridedMetadataPass());
      pm.addPass(createConvertVectorToLLVMPass());
      pm.addPass(createFinalizeMemRefToLLVMConversionPass());
      pm.addPass(createConvertMathToLLVMPass());
      pm.addPass(createArithToLLVMConversionPass());
      pm.addPass(createConvertControlFlowToLLVMPass());
      ConvertFuncToLLVMPassOptions funcOptions;
      funcOptions.useBarePtrCallConv = true;
      pm.addPass(createConvertFuncToLLVMPass(funcOptions));
      pm.addPass(createReconcileUnrealizedCastsPass());
      if (failed(runPipeline(pm, kernels)))
        return signalPassFailure();
    }
  }
};

} // namespace

/// The microkernel bitcode of each ISA build (MicrokernelBitcode.inc).
using tlc::llvmcpu::MicrokernelIsa;
static llvm::StringRef microkernelBitcode(MicrokernelIsa isa) {
#define TLC_BITCODE(array) llvm::StringRef((const char *)array, sizeof array)
  switch (isa) {
  case MicrokernelIsa::Avx2:
    return TLC_BITCODE(kMicrokernelsAvx2);
  case MicrokernelIsa::Avx512:
    return TLC_BITCODE(kMicrokernelsAvx512);
  case MicrokernelIsa::Neon:
    return TLC_BITCODE(kMicrokernelsNeon);
  case MicrokernelIsa::NeonDotprod:
    return TLC_BITCODE(kMicrokernelsNeonDotprod);
  case MicrokernelIsa::NeonI8mm:
    return TLC_BITCODE(kMicrokernelsNeonI8mm);
  }
#undef TLC_BITCODE
  return {};
}

static std::unique_ptr<llvm::Module>
loadMicrokernels(llvm::LLVMContext &ctx, const tlc::llvmcpu::CpuTarget &t) {
  auto buffer = llvm::MemoryBuffer::getMemBuffer(microkernelBitcode(t.isa),
                                                 "microkernels", false);
  auto mod = llvm::parseBitcodeFile(buffer->getMemBufferRef(), ctx);
  if (!mod) {
    llvm::consumeError(mod.takeError());
    return nullptr;
  }
  return std::move(*mod);
}

namespace {
/// A microkernel's name and parameter types (in MLIR form).
struct MicrokernelSignature {
  std::string name;
  enum class Param { Pointer, Index, I32, F32 };
  std::vector<Param> params;
};
} // namespace

/// The exported `tlc_k_*` functions of the bitcode (one ISA build: the
/// builds share one ABI) whose parameters are pointers, i64, i32 or float.
static const std::vector<MicrokernelSignature> &microkernelSignatures() {
  static const std::vector<MicrokernelSignature> signatures = [] {
    std::vector<MicrokernelSignature> out;
    llvm::LLVMContext ctx;
    auto buffer = llvm::MemoryBuffer::getMemBuffer(
        microkernelBitcode(MicrokernelIsa::Avx2), "microkernels", false);
    auto mod = llvm::parseBitcodeFile(buffer->getMemBufferRef(), ctx);
    if (!mod) {
      llvm::consumeError(mod.takeError());
      return out; // no declarations: every microkernel call fails to verify
    }
    using Param = MicrokernelSignature::Param;
    for (llvm::Function &f : **mod) {
      if (f.isDeclaration() || f.hasLocalLinkage() ||
          !f.getName().starts_with("tlc_k_") ||
          !f.getReturnType()->isVoidTy())
        continue;
      MicrokernelSignature sig{f.getName().str(), {}};
      bool ok = true;
      for (llvm::Type *t : f.getFunctionType()->params()) {
        if (t->isPointerTy())
          sig.params.push_back(Param::Pointer);
        else if (t->isIntegerTy(64))
          sig.params.push_back(Param::Index);
        else if (t->isIntegerTy(32))
          sig.params.push_back(Param::I32);
        else if (t->isFloatTy())
          sig.params.push_back(Param::F32);
        else
          ok = false; // not callable from kernels: not part of the ABI
      }
      if (ok)
        out.push_back(std::move(sig));
    }
    return out;
  }();
  return signatures;
}

void tlc::llvmcpu::declareMicrokernels(ModuleOp kernels) {
  MLIRContext *ctx = kernels.getContext();
  OpBuilder b = OpBuilder::atBlockBegin(kernels.getBody());
  using Param = MicrokernelSignature::Param;
  for (const MicrokernelSignature &sig : microkernelSignatures()) {
    SmallVector<Type> params;
    for (Param p : sig.params)
      params.push_back(p == Param::Pointer ? Type(LLVM::LLVMPointerType::get(ctx))
                       : p == Param::Index ? Type(b.getIndexType())
                       : p == Param::I32   ? Type(b.getI32Type())
                                           : Type(b.getF32Type()));
    auto fn = func::FuncOp::create(b, kernels.getLoc(), sig.name,
                                   FunctionType::get(ctx, params, {}));
    fn.setPrivate();
  }
}

/// Adds `<prefix><kernel>(void **b, const int64_t *s, int64_t begin,
/// int64_t end)` calling the kernel with b[0..n), s[0..3), begin, end.
static llvm::Function *addEntry(llvm::Module &m, llvm::Function *kernel,
                                llvm::StringRef prefix) {
  llvm::LLVMContext &ctx = m.getContext();
  auto *ptr = llvm::PointerType::getUnqual(ctx);
  auto *i64 = llvm::Type::getInt64Ty(ctx);
  auto *type = llvm::FunctionType::get(llvm::Type::getVoidTy(ctx),
                                       {ptr, ptr, i64, i64}, false);
  auto *entry = llvm::Function::Create(type, llvm::GlobalValue::ExternalLinkage,
                                       prefix + kernel->getName(), m);
  entry->setVisibility(llvm::GlobalValue::DefaultVisibility);
  llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "entry", entry));
  llvm::SmallVector<llvm::Value *> args;
  unsigned nBuffers = kernel->arg_size() - 5;
  for (unsigned i = 0; i < nBuffers; ++i)
    args.push_back(b.CreateLoad(
        ptr, b.CreateConstGEP1_64(ptr, entry->getArg(0), i), "binding"));
  for (unsigned i = 0; i < 3; ++i)
    args.push_back(b.CreateLoad(
        i64, b.CreateConstGEP1_64(i64, entry->getArg(1), i), "scalar"));
  args.push_back(entry->getArg(2));
  args.push_back(entry->getArg(3));
  b.CreateCall(kernel, args);
  b.CreateRetVoid();
  return entry;
}

/// Adds the table a static library registers with the runtime:
/// `const tlc_static_kernel_t <symbol>[] = {{"name", fn}, ..., {0, 0}}`.
static void addStaticTable(llvm::Module &m, llvm::StringRef symbol,
                           llvm::ArrayRef<std::string> names,
                           llvm::ArrayRef<llvm::Function *> entries) {
  llvm::LLVMContext &ctx = m.getContext();
  auto *ptr = llvm::PointerType::getUnqual(ctx);
  auto *entryType = llvm::StructType::get(ctx, {ptr, ptr});
  std::vector<llvm::Constant *> rows;
  for (size_t i = 0; i < names.size(); ++i) {
    auto *text = llvm::ConstantDataArray::getString(ctx, names[i]);
    auto *str = new llvm::GlobalVariable(m, text->getType(), true,
                                         llvm::GlobalValue::PrivateLinkage,
                                         text, "tlc.kernel.name");
    rows.push_back(llvm::ConstantStruct::get(entryType, {str, entries[i]}));
  }
  rows.push_back(llvm::ConstantStruct::get(
      entryType, {llvm::ConstantPointerNull::get(ptr),
                  llvm::ConstantPointerNull::get(ptr)}));
  auto *arrayType = llvm::ArrayType::get(entryType, rows.size());
  auto *table = new llvm::GlobalVariable(
      m, arrayType, true, llvm::GlobalValue::ExternalLinkage,
      llvm::ConstantArray::get(arrayType, rows), symbol);
  table->setVisibility(llvm::GlobalValue::DefaultVisibility);
}

FailureOr<std::string>
tlc::llvmcpu::buildSharedObject(ModuleOp kernels, const CpuTarget &target,
                                std::vector<std::string> *kernelNames,
                                std::string *llvmIR, std::string *error,
                                llvm::StringRef staticSymbol) {
  // Every target of the LLVM build, so that any host compiles for any CPU.
  llvm::InitializeAllTargetInfos();
  llvm::InitializeAllTargets();
  llvm::InitializeAllTargetMCs();
  llvm::InitializeAllAsmPrinters();
  registerBuiltinDialectTranslation(*kernels.getContext());
  registerLLVMDialectTranslation(*kernels.getContext());

  // Kernel names before translation (the tlora.kernel marker is dropped).
  kernelNames->clear();
  for (auto fn : kernels.getOps<LLVM::LLVMFuncOp>())
    if (fn->hasAttr(mlir::tlora::attr::kKernel))
      kernelNames->push_back(fn.getName().str());

  llvm::LLVMContext ctx;
  std::unique_ptr<llvm::Module> mod = translateModuleToLLVMIR(kernels, ctx);
  if (!mod) {
    *error = "translation of the kernels to LLVM IR failed";
    return failure();
  }
  std::unique_ptr<llvm::Module> micro = loadMicrokernels(ctx, target);
  if (!micro) {
    *error = "internal error: the embedded microkernel bitcode is unreadable";
    return failure();
  }
  micro->setDataLayout(mod->getDataLayout());
  micro->setTargetTriple(mod->getTargetTriple());
  if (llvm::Linker::linkModules(*mod, std::move(micro))) {
    *error = "linking the microkernels failed";
    return failure();
  }

  std::string lookupError;
  llvm::Triple triple(target.triple);
  const llvm::Target *llvmTarget =
      llvm::TargetRegistry::lookupTarget(triple, lookupError);
  if (!llvmTarget) {
    *error = lookupError;
    return failure();
  }
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> tm(llvmTarget->createTargetMachine(
      triple, target.cpu, target.features, options, llvm::Reloc::PIC_,
      std::nullopt, llvm::CodeGenOptLevel::Aggressive));
  mod->setDataLayout(tm->createDataLayout());
  mod->setTargetTriple(triple);

  // Everything but the entries is internal, so it can be inlined and dropped.
  for (llvm::Function &f : *mod) {
    if (f.isDeclaration())
      continue;
    f.setLinkage(llvm::GlobalValue::InternalLinkage);
    f.addFnAttr("target-cpu", target.cpu);
    f.addFnAttr("target-features", target.features);
  }
  for (llvm::GlobalVariable &g : mod->globals())
    if (!g.isDeclaration())
      g.setLinkage(llvm::GlobalValue::InternalLinkage);
  // Shared objects export tlc_entry_<kernel>; static objects export
  // <symbol>_<kernel> and the table <symbol>, unique per executable.
  std::vector<llvm::Function *> entries;
  std::string prefix =
      staticSymbol.empty() ? "tlc_entry_" : staticSymbol.str() + "_";
  for (const std::string &name : *kernelNames) {
    llvm::Function *k = mod->getFunction(name);
    if (!k) {
      *error = "internal error: kernel " + name + " vanished in translation";
      return failure();
    }
    entries.push_back(addEntry(*mod, k, prefix));
  }
  if (!staticSymbol.empty())
    addStaticTable(*mod, staticSymbol, *kernelNames, entries);
  if (llvm::verifyModule(*mod, &llvm::errs())) {
    *error = "internal error: generated LLVM IR does not verify";
    return failure();
  }

  // -O3.
  {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PassBuilder pb(tm.get());
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    llvm::ModulePassManager mpm =
        pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3);
    mpm.run(*mod, mam);
  }
  if (llvmIR) {
    llvm::raw_string_ostream os(*llvmIR);
    mod->print(os, nullptr);
  }

  // Object file in memory.
  llvm::SmallVector<char, 0> object;
  {
    llvm::raw_svector_ostream os(object);
    llvm::legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, os, nullptr,
                                llvm::CodeGenFileType::ObjectFile)) {
      *error = "the target cannot emit object files";
      return failure();
    }
    pm.run(*mod);
  }

  if (!staticSymbol.empty())
    return std::string(object.data(), object.size());

  // Link with lld (in-process) through two temporary files.
  llvm::SmallString<128> objPath, soPath;
  if (llvm::sys::fs::createTemporaryFile("tlc-kernels", "o", objPath) ||
      llvm::sys::fs::createTemporaryFile("tlc-kernels", "so", soPath)) {
    *error = "cannot create temporary files for linking";
    return failure();
  }
  llvm::FileRemover removeObj(objPath), removeSo(soPath);
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(objPath, ec);
    if (ec) {
      *error = "cannot write " + objPath.str().str() + ": " + ec.message();
      return failure();
    }
    os.write(object.data(), object.size());
  }
  std::string linkLog;
  llvm::raw_string_ostream linkOut(linkLog);
  std::vector<const char *> args = {
      "ld.lld",       "-shared",      "--gc-sections",    "-O2",
      "-z",           "now",          "--hash-style=gnu", "-o",
      soPath.c_str(), objPath.c_str()};
  lld::Result result =
      lld::lldMain(args, linkOut, linkOut, {{lld::Gnu, &lld::elf::link}});
  if (result.retCode != 0) {
    *error = "lld failed: " + linkLog;
    return failure();
  }
  auto so = llvm::MemoryBuffer::getFile(soPath);
  if (!so) {
    *error = "cannot read the linked kernels: " + so.getError().message();
    return failure();
  }
  return (*so)->getBuffer().str();
}
