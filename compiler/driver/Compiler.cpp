// The compiler driver. Phases (docs/architecture.md):
//   import   HF folder -> tlora ops on tensors           (compiler/hf)
//   tlora    canonicalize, tlora-decompose-linear, cse
//   then, for each target backend (--target list), on a copy of the IR:
//   lowered  the backend's dispatch formation, tlora-plan-memory
//   llvm     the backend's kernel lowering (LLVM dialect for CPUs)
//   serialize one executable per target variant
//   and finally the .tlm module holding them all (ModuleWriter).
#include "compiler/driver/Compiler.h"

#include "compiler/driver/ModuleWriter.h"
#include "compiler/hf/HFImporter.h"
#include "compiler/hf/TokenizerJson.h"
#include "dialects/tlora/Transforms/Passes.h"
#include "compiler/target/DeviceProfiles.h"
#include "compiler/target/TargetBackend.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/Extensions/InlinerExtension.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassInstrumentation.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/BinaryFormat/Magic.h"
#include "llvm/Object/ArchiveWriter.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cctype>
#include <sys/stat.h>

using namespace mlir;

namespace tlc {

void registerCompilerDialects(DialectRegistry &registry) {
  registry
      .insert<tlora::TloraDialect, func::FuncDialect, arith::ArithDialect,
              scf::SCFDialect, memref::MemRefDialect, vector::VectorDialect,
              math::MathDialect, cf::ControlFlowDialect, LLVM::LLVMDialect,
              gpu::GPUDialect, spirv::SPIRVDialect>();
  func::registerInlinerExtension(registry);
  tlora::registerExternalModels(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
}

void registerCompilerPasses() {
  registerAllTargetBackends();
  tlora::registerTloraPasses();
  registerCanonicalizerPass();
  registerCSEPass();
}

namespace {
/// Writes the IR after every pass to DIR/NN-<pass>.mlir.
class DumpIRInstrumentation : public PassInstrumentation {
public:
  DumpIRInstrumentation(std::string dir, int *counter)
      : dir(std::move(dir)), counter(counter) {}
  void runAfterPass(Pass *pass, Operation *op) override {
    if (!isa<ModuleOp>(op) || op->getParentOp())
      return; // only whole-module snapshots
    dump(dir, counter, pass->getArgument().str(), op);
  }
  static void dump(const std::string &dir, int *counter, std::string name,
                   Operation *op) {
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%02d-", (*counter)++);
    std::string path = dir + "/" + prefix + name + ".mlir";
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    if (!ec)
      op->print(os);
  }

private:
  std::string dir;
  int *counter;
};

struct Driver {
  CompileOptions opts; // a copy: --device fills in target and budget
  MLIRContext ctx;
  DefaultTimingManager timing;
  TimingScope root;
  int dumpCounter = 0;

  explicit Driver(const CompileOptions &o) : opts(o) {
    DialectRegistry registry;
    registerCompilerDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
    timing.setEnabled(o.timing);
    root = timing.getRootScope();
  }

  int fail(const std::string &msg) {
    llvm::errs() << "tlc: error: " << msg << "\n";
    return 1;
  }

  void configure(PassManager &pm) {
    if (opts.timing)
      pm.enableTiming(root);
    if (opts.printIRAfterAll || !opts.printIRAfter.empty()) {
      std::string only = opts.printIRAfter;
      pm.enableIRPrinting([](Pass *, Operation *) { return false; },
                          [only](Pass *p, Operation *) {
                            return only.empty() || p->getArgument() == only;
                          },
                          /*printModuleScope=*/true,
                          /*printAfterOnlyOnChange=*/false);
    }
    if (!opts.dumpIRDir.empty())
      pm.addInstrumentation(std::make_unique<DumpIRInstrumentation>(
          opts.dumpIRDir, &dumpCounter));
  }

  bool runPhase(ModuleOp module, const char *name,
                llvm::function_ref<void(PassManager &)> build) {
    PassManager pm(&ctx);
    configure(pm);
    build(pm);
    if (succeeded(pm.run(module)))
      return true;
    llvm::errs() << "tlc: error: phase '" << name
                 << "' failed; reproduce with: tlc compile " << opts.modelDir
                 << " --compile-to=<previous phase> | tlc-opt <passes>\n";
    return false;
  }

  static void buildTloraPhase(PassManager &pm) {
    pm.addPass(tlora::createDifferentiatePass());
    pm.addPass(createCanonicalizerPass());
    pm.addPass(tlora::createDecomposeLinearPass());
    pm.addPass(createCSEPass());
  }

  /// Planned memory of train_step: mapped weights, the training state and
  /// the activation arena.
  struct TrainMemory {
    int64_t weights = 0, state = 0, arena = 0;
    bool recompute = false;
    int64_t total() const { return weights + state + arena; }
  };
  TrainMemory trainMemory(ModuleOp module, const TargetBackend &backend) {
    TrainMemory m;
    llvm::StringSet<> seen;
    module.walk([&](Operation *op) {
      if (auto w = dyn_cast<tlora::WeightOp>(op)) {
        if (seen.insert(w.getName()).second)
          m.weights += tlora::bufferBytes(w.getType(), 0);
      } else if (auto t = dyn_cast<tlora::TernaryWeightOp>(op)) {
        if (seen.insert(t.getName()).second)
          m.weights += backend.ternaryEncoding().bytes(
              t.getType().getOutFeatures(), t.getType().getInFeatures());
      }
    });
    for (auto f : module.getOps<func::FuncOp>())
      if (f.getName() == "train_step") {
        int64_t total;
        tlora::trainStateLayout(f, &total);
        m.state = 4 * tlora::trainStateElements(total, opts.train->optimizer);
        if (auto a = f->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kArenaSize))
          m.arena = a.getInt();
        m.recompute = f->hasAttr(mlir::tlora::attr::kRecompute);
      }
    return m;
  }

  /// Plans train_step without recomputation on a copy of the module; when
  /// that exceeds --memory-budget, marks train_step for recomputation.
  bool chooseRecomputation(ModuleOp module, const TargetBackend &backend) {
    OwningOpRef<ModuleOp> trial = module.clone();
    PassManager pm(&ctx);
    buildTloraPhase(pm);
    backend.buildLoweringPipeline(pm);
    if (failed(pm.run(*trial)))
      return false;
    TrainMemory m = trainMemory(*trial, backend);
    if (m.total() <= opts.train->memoryBudget)
      return true;
    for (auto f : module.getOps<func::FuncOp>())
      if (f.getName() == "train_step")
        f->setAttr(mlir::tlora::attr::kRecompute, UnitAttr::get(&ctx));
    return true;
  }

  int run() {
    ctx.disableMultithreading(); // 2-core build machines; deterministic dumps
    if (!opts.dumpIRDir.empty()) {
      if (auto ec = llvm::sys::fs::create_directories(opts.dumpIRDir))
        return fail(opts.dumpIRDir + ": cannot create: " + ec.message());
    }

    std::string error;
    registerAllTargetBackends();
    int defaultThreads = 0;
    if (!opts.device.empty()) {
      const DeviceProfile *d = findDeviceProfile(opts.device);
      if (!d) {
        std::string names;
        for (const DeviceProfile &p : deviceProfiles())
          names += (names.empty() ? "" : ", ") + p.name;
        return fail("unknown device '" + opts.device + "' (tlc devices lists "
                    "them: " + names + ")");
      }
      opts.target = d->cpu;
      defaultThreads = d->threads;
      if (opts.train && opts.train->memoryBudget == 0)
        opts.train->memoryBudget = d->trainMemoryBudgetMib << 20;
      // The GPU executable joins the CPU one where this tlc builds it.
      if (!d->gpu.empty()) {
        std::string gpuError;
        auto gpu = parseTargetList(d->gpu, &gpuError);
        if (failed(gpu))
          llvm::errs() << "tlc: note: " << d->name << "'s GPU target "
                       << d->gpu << " is not built by this tlc yet; the "
                       << "module runs on its CPU\n";
        else
          opts.target += "," + d->gpu;
      }
    }
    auto parsed = parseTargetList(opts.target, &error);
    if (failed(parsed))
      return fail(error);
    std::vector<std::unique_ptr<TargetBackend>> backends = std::move(*parsed);

    // Import.
    ModelConfig config;
    std::unique_ptr<Checkpoint> checkpoint;
    LoraAdapter adapter; // outlives the checkpoint's view of its tensors
    OwningOpRef<ModuleOp> module;
    {
      TimingScope t = root.nest("import");
      if (!loadModelConfig(opts.modelDir, &config, &error))
        return fail(error);
      checkpoint = Checkpoint::open(opts.modelDir, &error);
      if (!checkpoint)
        return fail(error);
      ImportOptions io;
      io.maxTokens = opts.maxTokens;
      io.maxSeq = opts.maxSeq;
      io.headBits = opts.headBits;
      if (opts.train)
        io.train = &*opts.train;
      if (!opts.adapterDir.empty()) {
        if (!loadPeftAdapter(opts.adapterDir, &adapter, &error))
          return fail(error);
        std::string dup;
        if (!checkpoint->add(*adapter.tensors, &dup))
          return fail(opts.adapterDir + "/adapter_model.safetensors: tensor '" +
                      dup + "' is also in the model");
        io.adapter = &adapter;
      }
      module = importBitNet(&ctx, config, *checkpoint, io, &error);
      if (!module)
        return fail(error);
    }
    TokenizerData tokenizer;
    bool hasTokenizer = false;
    {
      std::string path = opts.modelDir + "/tokenizer.json";
      struct stat st;
      if (stat(path.c_str(), &st) == 0) {
        TimingScope t = root.nest("tokenizer");
        if (!loadTokenizerJson(path, &tokenizer, &error))
          return fail(error);
        hasTokenizer = true;
      }
    }
    if (!opts.dumpIRDir.empty())
      DumpIRInstrumentation::dump(opts.dumpIRDir, &dumpCounter, "import",
                                  *module);
    if (opts.printIRAfterAll)
      llvm::errs() << "// -----// IR after import //----- //\n"
                   << *module << "\n";
    if (opts.stopAfter == Phase::Import)
      return module->print(llvm::outs()), 0;

    // Recomputation is chosen for the most memory-hungry plan (all CPU
    // backends plan alike; the first is representative).
    if (opts.train && opts.train->step && opts.train->memoryBudget > 0 &&
        !chooseRecomputation(*module, *backends.front()))
      return 1;
    if (!runPhase(*module, "tlora", buildTloraPhase))
      return 1;
    if (opts.stopAfter == Phase::Tlora)
      return module->print(llvm::outs()), 0;

    // Each backend lowers its own copy: dispatches, memory plan, kernels.
    std::vector<OwningOpRef<ModuleOp>> programs;
    std::vector<CompiledTarget> compiled;
    for (const std::unique_ptr<TargetBackend> &backend : backends) {
      OwningOpRef<ModuleOp> program = module->clone();
      if (backends.size() > 1 && opts.stopAfter != Phase::End)
        llvm::outs() << "// target " << backend->spec() << "\n";
      if (!runPhase(*program, "lowered", [&](PassManager &pm) {
            backend->buildLoweringPipeline(pm);
          }))
        return 1;
      if (opts.train && opts.train->step && backend == backends.front()) {
        TrainMemory m = trainMemory(*program, *backend);
        llvm::errs() << llvm::formatv(
            "tlc: train_step planned peak {0:F1} MiB = weights {1:F1} + "
            "training state {2:F1} + activations {3:F1}{4}\n",
            m.total() / 1048576.0, m.weights / 1048576.0, m.state / 1048576.0,
            m.arena / 1048576.0,
            m.recompute ? " (layers recomputed in the backward)" : "");
        if (opts.train->memoryBudget > 0 &&
            m.total() > opts.train->memoryBudget)
          return fail(llvm::formatv("the training step needs {0:F1} MiB even "
                                    "with recomputation; --memory-budget is "
                                    "{1:F1} MiB (lower --seq-len or --batch)",
                                    m.total() / 1048576.0,
                                    opts.train->memoryBudget / 1048576.0)
                          .str());
      }
      if (opts.stopAfter == Phase::Lowered) {
        program->print(llvm::outs());
        continue;
      }
      if (!runPhase(*program, "llvm", [&](PassManager &pm) {
            backend->buildKernelPipeline(pm);
          }))
        return 1;
      if (opts.stopAfter == Phase::LLVM) {
        program->print(llvm::outs());
        continue;
      }
      CompiledTarget target;
      target.program = *program;
      target.backend = backend.get();
      {
        std::string phase = "codegen " + backend->spec();
        TimingScope t = root.nest(phase);
        SerializeOptions so;
        so.wantSource =
            !opts.dumpIRDir.empty() || !opts.dumpExecutablesDir.empty();
        if (opts.outputFormat == OutputFormat::StaticLib)
          so.staticPrefix =
              staticSymbolBase() + "_t" + std::to_string(compiled.size());
        if (failed(backend->serialize(*program, so, &target.executables,
                                      &error)))
          return fail(error);
      }
      if (!opts.dumpIRDir.empty())
        for (const ExecutableImage &x : target.executables) {
          char name[64];
          snprintf(name, sizeof name, "/%02d-%s.%s", dumpCounter++,
                   x.sourceExt == "ll" ? "llvm-ir" : "executable",
                   x.sourceExt.c_str());
          std::error_code ec;
          llvm::raw_fd_ostream os(opts.dumpIRDir + name, ec);
          if (!ec)
            os << x.source;
        }
      programs.push_back(std::move(program));
      compiled.push_back(std::move(target));
    }
    if (opts.stopAfter != Phase::End)
      return 0;
    if (!opts.dumpExecutablesDir.empty() && !dumpExecutables(compiled))
      return 1;

    {
      TimingScope t = root.nest("write module");
      ModuleContents contents;
      contents.targets = std::move(compiled);
      contents.config = &config;
      contents.checkpoint = checkpoint.get();
      contents.tokenizer = hasTokenizer ? &tokenizer : nullptr;
      contents.train = opts.train ? &*opts.train : nullptr;
      contents.defaultThreads = defaultThreads;
      contents.device = opts.device;
      contents.modelName =
          llvm::sys::path::filename(llvm::StringRef(opts.modelDir).rtrim('/'))
              .str();
      if (opts.outputFormat == OutputFormat::StaticLib &&
          !writeStaticLibrary(contents.targets))
        return 1;
      if (!writeModule(contents, opts.output, &error))
        return fail(error);
    }
    return 0;
  }

  /// The symbol stem of a static library: tlc_<output file stem>.
  std::string staticSymbolBase() const {
    std::string stem = llvm::sys::path::stem(opts.output).str(), out = "tlc_";
    for (char c : stem)
      out += std::isalnum((unsigned char)c) ? c : '_';
    return out;
  }

  /// OUT.a (one object per executable) and OUT.h (the tables to register)
  /// next to the module.
  bool writeStaticLibrary(const std::vector<CompiledTarget> &targets) {
    llvm::SmallString<256> base(opts.output);
    llvm::sys::path::replace_extension(base, "");
    std::string archive = (base + ".a").str(), header = (base + ".h").str();
    std::vector<std::string> memberNames;
    for (const CompiledTarget &t : targets)
      for (const ExecutableImage &x : t.executables)
        if (!x.object.empty()) // GPU executables are not linked code
          memberNames.push_back(x.image + ".o");
    std::vector<llvm::NewArchiveMember> members;
    std::string decls, calls;
    size_t i = 0;
    for (const CompiledTarget &t : targets)
      for (const ExecutableImage &x : t.executables) {
        if (x.object.empty())
          continue;
        const std::string &name = memberNames[i++];
        llvm::NewArchiveMember member(llvm::MemoryBufferRef(x.object, name));
        member.MemberName = name;
        members.push_back(std::move(member));
        decls += "extern const tlc_static_kernel_t " + x.image + "[];\n";
        calls += "  if ((s = tlc_static_library_register(\"" + x.image +
                 "\", " + x.image + ")))\n    return s;\n";
      }
    // Mach-O objects (iOS) go in a Darwin archive, ELF ones in a GNU one.
    size_t macho = 0;
    for (const llvm::NewArchiveMember &m : members)
      macho += llvm::identify_magic(m.Buf->getBuffer()) ==
               llvm::file_magic::macho_object;
    if (macho != 0 && macho != members.size())
      return fail(archive + ": cannot put Mach-O (iOS) and ELF objects in one "
                            "static library; compile them separately"),
             false;
    if (llvm::Error e = llvm::writeArchive(
            archive, members, llvm::SymtabWritingMode::NormalSymtab,
            macho ? llvm::object::Archive::K_DARWIN
                  : llvm::object::Archive::K_GNU,
            /*Deterministic=*/true, /*Thin=*/false))
      return fail(archive + ": " + llvm::toString(std::move(e))), false;
    std::string sym = staticSymbolBase(), guard = sym;
    for (char &c : guard)
      c = (char)std::toupper((unsigned char)c);
    std::string text =
        "/* Generated by tlc compile --output-format=static-lib: the kernels\n"
        " * of " + llvm::sys::path::filename(opts.output).str() +
        ", linked from " + llvm::sys::path::filename(archive).str() +
        " (with libtlcrt and -lm).\n * Call " + sym +
        "_register() once before tlc_module_load_file. */\n#ifndef " + guard + "_H\n#define " +
        guard + "_H\n#include <tlc/tlc.h>\n\n" + decls +
        "\nstatic inline tlc_status_t " + sym +
        "_register(void) {\n  tlc_status_t s;\n" + calls +
        "  return 0;\n}\n#endif\n";
    std::error_code ec;
    llvm::raw_fd_ostream os(header, ec);
    if (!ec)
      os << text;
    os.close();
    if (ec || os.has_error())
      return fail(header + ": cannot write"), false;
    return true;
  }

  /// --dump-executables DIR: each executable's binary and text form, named
  /// <index>-<target>[-<features>].<ext>.
  bool dumpExecutables(const std::vector<CompiledTarget> &compiled) {
    const std::string &dir = opts.dumpExecutablesDir;
    if (auto ec = llvm::sys::fs::create_directories(dir))
      return fail(dir + ": cannot create: " + ec.message()), false;
    int index = 0;
    for (const CompiledTarget &t : compiled)
      for (const ExecutableImage &x : t.executables) {
        std::string stem = llvm::formatv("{0}/{1}-{2}", dir, index++, x.target);
        for (const std::string &n : x.needs)
          stem += "-" + n;
        auto write = [&](const std::string &path, const std::string &bytes) {
          std::error_code ec;
          llvm::raw_fd_ostream os(path, ec);
          if (!ec)
            os << bytes;
          os.close();
          if (ec || os.has_error())
            return fail(path + ": cannot write"), false;
          return true;
        };
        // An image of one module per kernel: a file per kernel.
        for (size_t k = 0; k < x.kernelOffsets.size(); ++k) {
          size_t end = k + 1 < x.kernelOffsets.size() ? x.kernelOffsets[k + 1]
                                                      : x.image.size();
          if (!write(stem + "-" + x.kernels[k] + "." + x.fileExt,
                     x.image.substr(x.kernelOffsets[k],
                                    end - x.kernelOffsets[k])))
            return false;
        }
        if ((x.kernelOffsets.empty() && !write(stem + "." + x.fileExt, x.image)) ||
            (!x.source.empty() && !write(stem + "." + x.sourceExt, x.source)))
          return false;
      }
    return true;
  }
};
} // namespace

int compile(const CompileOptions &options) {
  Driver driver(options);
  return driver.run();
}

} // namespace tlc
