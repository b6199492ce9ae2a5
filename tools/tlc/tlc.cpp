// tlc: the compiler command line.
//   tlc devices
//   tlc compile MODEL_DIR -o OUT.tlm [--target SPEC[,SPEC...] | --device NAME]
//       (SPEC: host | x86-64[:FEATURES] | aarch64[:FEATURES])
//       [--compile-to=import|tlora|lowered|llvm] [--print-ir-after-all]
//       [--print-ir-after=PASS] [--dump-ir-dir=DIR] [--timing]
//       [--max-seq-len N] [--prefill-chunk N] [--lm-head exact|int8|q6]
//       [--adapter DIR]
//   tlc compile MODEL_DIR --train -o TRAIN.tlm --lora-rank R --lora-alpha A
//       [--lora-targets q_proj,...] --seq-len T --batch B
//       [--optimizer adamw|sgd] [--memory-budget SIZE]
//   tlc compile MODEL_DIR -o OUT.tlm --lora-rank R --lora-alpha A
//       [--lora-targets ...]   (adapter slots: tlc-run --adapter DIR)
#include "compiler/driver/Compiler.h"
#include "compiler/target/DeviceProfiles.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>
#include <set>

using namespace llvm;

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  if (argc == 2 && std::strcmp(argv[1], "devices") == 0) {
    outs() << "device profiles (tlc compile --device NAME; sources in "
              "docs/devices.md):\n";
    for (const tlc::DeviceProfile &d : tlc::deviceProfiles()) {
      outs() << "  " << d.name << ": " << d.description;
      if (!d.soc.empty())
        outs() << " (" << d.soc << ")";
      outs() << "\n    cpu " << d.cpu << ", threads "
             << (d.threads ? std::to_string(d.threads) : "all") << ", "
             << d.activations << " activations";
      if (d.trainMemoryBudgetMib)
        outs() << ", training budget " << d.trainMemoryBudgetMib << " MiB";
      if (!d.gpu.empty())
        outs() << ", gpu " << d.gpu << " (not built yet)";
      outs() << "\n";
    }
    return 0;
  }
  if (argc < 2 || std::strcmp(argv[1], "compile") != 0) {
    errs() << "usage: tlc compile MODEL_DIR -o OUT.tlm [options]\n"
              "       tlc compile --help\n"
              "       tlc devices\n";
    return 1;
  }
  // Parse the options after the "compile" subcommand.
  argv[1] = argv[0];
  --argc;
  ++argv;
  cl::OptionCategory cat("tlc compile options");
  cl::opt<std::string> model(cl::Positional, cl::Required,
                             cl::desc("<model folder>"), cl::cat(cat));
  cl::opt<std::string> output("o", cl::desc("output module (.tlm)"),
                              cl::value_desc("file"), cl::cat(cat));
  cl::opt<std::string> target(
      "target", cl::init("host"),
      cl::desc("comma-separated targets: host, x86-64[:FEATURES], "
               "aarch64[:FEATURES] (e.g. x86-64:+avx512vnni,+avx512bw,aarch64;"
               " plain aarch64 builds dotprod+i8mm, dotprod and NEON "
               "variants chosen at load time)"),
      cl::cat(cat));
  cl::opt<std::string> device(
      "device",
      cl::desc("compile for a device profile (tlc devices lists them): sets "
               "the target, default threads and training memory budget"),
      cl::value_desc("NAME"), cl::cat(cat));
  cl::opt<tlc::OutputFormat> outputFormat(
      "output-format", cl::init(tlc::OutputFormat::Module),
      cl::desc("what to write"),
      cl::values(clEnumValN(tlc::OutputFormat::Module, "module",
                            "a .tlm module with loadable executables"),
                 clEnumValN(tlc::OutputFormat::StaticLib, "static-lib",
                            "the module plus OUT.a and OUT.h: kernels linked "
                            "into the app (platforms that forbid loading "
                            "code)")),
      cl::cat(cat));
  cl::opt<tlc::Phase> compileTo(
      "compile-to", cl::init(tlc::Phase::End),
      cl::desc("stop after a phase and print its IR"),
      cl::values(
          clEnumValN(tlc::Phase::Import, "import", "tlora ops as imported"),
          clEnumValN(tlc::Phase::Tlora, "tlora", "after tlora transforms"),
          clEnumValN(tlc::Phase::Lowered, "lowered",
                     "dispatches, kernels and memory plan"),
          clEnumValN(tlc::Phase::LLVM, "llvm", "kernels in the LLVM dialect")),
      cl::cat(cat));
  cl::opt<bool> printAll("print-ir-after-all",
                         cl::desc("print the IR after every pass (stderr)"),
                         cl::cat(cat));
  cl::opt<std::string> printAfter(
      "print-ir-after", cl::desc("print the IR after the pass named PASS"),
      cl::value_desc("PASS"), cl::cat(cat));
  cl::opt<std::string> dumpExecutables(
      "dump-executables",
      cl::desc("write each executable's binary and source form to DIR"),
      cl::value_desc("DIR"), cl::cat(cat));
  cl::opt<std::string> dumpDir(
      "dump-ir-dir",
      cl::desc("write the IR after each pass to DIR/NN-pass.mlir"),
      cl::value_desc("DIR"), cl::cat(cat));
  cl::opt<bool> timing("timing",
                       cl::desc("print the time of each phase and pass"),
                       cl::cat(cat));
  cl::opt<int64_t> maxSeq("max-seq-len", cl::init(0),
                          cl::desc("KV cache capacity in tokens (default: "
                                   "min(max_position_embeddings, 2048))"),
                          cl::cat(cat));
  cl::opt<int64_t> chunk(
      "prefill-chunk", cl::init(128),
      cl::desc("tokens per prefill call (kernel batch size)"), cl::cat(cat));
  cl::opt<std::string> head(
      "lm-head", cl::init("exact"),
      cl::desc("LM head weights: exact (as in the checkpoint, default), int8 "
               "(per-row int8, lossy) or q6 (per-row 6-bit with int8 "
               "activations, lossy, as peers' Q6_K heads)"),
      cl::cat(cat));
  cl::opt<std::string> adapter(
      "adapter", cl::desc("bake a PEFT LoRA adapter folder into the module"),
      cl::value_desc("DIR"), cl::cat(cat));
  cl::opt<bool> train("train",
                      cl::desc("compile a LoRA fine-tuning step (train_step)"),
                      cl::cat(cat));
  cl::opt<int64_t> loraRank(
      "lora-rank", cl::init(8),
      cl::desc("adapter rank r (--train, or without it: adapter slots "
               "filled at run time by tlc-run --adapter)"),
      cl::cat(cat));
  cl::opt<float> loraAlpha("lora-alpha", cl::init(16.0f),
                           cl::desc("--train: lora_alpha (scaling alpha/r)"),
                           cl::cat(cat));
  cl::opt<std::string> loraTargets(
      "lora-targets",
      cl::init("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"),
      cl::desc("--train: projections that get adapters"), cl::cat(cat));
  cl::opt<int64_t> seqLen("seq-len", cl::init(0),
                          cl::desc("--train: tokens per sequence"),
                          cl::cat(cat));
  cl::opt<int64_t> batch("batch", cl::init(1),
                         cl::desc("--train: sequences per step"), cl::cat(cat));
  cl::opt<std::string> optimizer("optimizer", cl::init("adamw"),
                                 cl::desc("--train: adamw or sgd"),
                                 cl::cat(cat));
  cl::opt<std::string> memoryBudget(
      "memory-budget",
      cl::desc("--train: peak training memory to plan for (e.g. 1.5G)"),
      cl::cat(cat));
  cl::opt<bool> recompute(
      "recompute",
      cl::desc("--train: recompute every layer in the backward (activation "
               "checkpointing) even when --memory-budget does not need it"),
      cl::cat(cat));
  cl::HideUnrelatedOptions(cat);
  cl::ParseCommandLineOptions(argc, argv,
                              "tlc compile: BitNet model -> .tlm\n");

  tlc::CompileOptions o;
  o.modelDir = model;
  o.output = output;
  o.target = target;
  o.device = device;
  o.outputFormat = outputFormat;
  if (!o.device.empty() && target.getNumOccurrences()) {
    errs() << "tlc: error: give --device or --target, not both\n";
    return 1;
  }
  o.stopAfter = compileTo;
  o.printIRAfterAll = printAll;
  o.printIRAfter = printAfter;
  o.dumpIRDir = dumpDir;
  o.dumpExecutablesDir = dumpExecutables;
  o.timing = timing;
  o.maxSeq = maxSeq;
  o.maxTokens = chunk;
  if (head != "exact" && head != "int8" && head != "q6") {
    errs() << "tlc: error: --lm-head must be exact, int8 or q6\n";
    return 1;
  }
  o.headBits = head == "int8" ? 8 : head == "q6" ? 6 : 16;
  o.adapterDir = adapter;
  bool adapterSlots = !train && loraRank.getNumOccurrences() > 0;
  if (!train && !adapterSlots &&
      (loraAlpha.getNumOccurrences() || loraTargets.getNumOccurrences() ||
       seqLen.getNumOccurrences() || batch.getNumOccurrences() ||
       optimizer.getNumOccurrences() || memoryBudget.getNumOccurrences() ||
       recompute.getNumOccurrences())) {
    errs() << "tlc: error: LoRA and training options need --train (or "
              "--lora-rank for adapter slots)\n";
    return 1;
  }
  if (train || adapterSlots) {
    static const std::set<std::string> known = {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
        "down_proj"};
    o.train.emplace();
    o.train->step = train;
    o.train->recompute = recompute;
    o.train->rank = loraRank;
    o.train->alpha = loraAlpha;
    o.train->seqLen = seqLen;
    o.train->batch = batch;
    o.train->optimizer = optimizer;
    for (StringRef rest = loraTargets; !rest.empty();) {
      auto [t, tail] = rest.split(',');
      rest = tail;
      if (!known.count(t.trim().str())) {
        errs() << "tlc: error: --lora-targets: unknown projection '" << t
               << "' (known: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,"
                  "down_proj)\n";
        return 1;
      }
      o.train->targets.insert(t.trim().str());
    }
    if (adapterSlots) {
      o.train->seqLen = 2; // unused: no train_step
    } else if (o.train->targets.empty() || loraRank <= 0 ||
               !(loraAlpha > 0) || seqLen < 2 || batch <= 0) {
      errs() << "tlc: error: --train needs --lora-rank > 0, --lora-alpha > 0, "
                "--lora-targets, --seq-len >= 2 and --batch > 0\n";
      return 1;
    }
    if (train && seqLen * batch > (1 << 20)) {
      errs() << "tlc: error: --seq-len x --batch must be at most 1048576 "
                "tokens per step\n";
      return 1;
    }
    if (optimizer != "adamw" && optimizer != "sgd") {
      errs() << "tlc: error: --optimizer must be adamw or sgd\n";
      return 1;
    }
    if (loraRank <= 0 || !(loraAlpha > 0)) {
      errs() << "tlc: error: --lora-rank and --lora-alpha must be positive\n";
      return 1;
    }
    if (!adapter.empty()) {
      errs() << "tlc: error: --adapter bakes an adapter into a module without "
                "adapter slots; load one at run time (tlc-run --adapter) or "
                "start training from one (tlc-run train --init-adapter)\n";
      return 1;
    }
    if (!memoryBudget.empty()) {
      // SIZE: bytes with an optional K, M or G suffix (powers of 1024).
      StringRef m = StringRef(memoryBudget).trim();
      uint64_t scale = 1;
      char last = m.empty() ? 0 : (char)toupper(m.back());
      if (last == 'K' || last == 'M' || last == 'G') {
        scale = last == 'K' ? 1ull << 10 : last == 'M' ? 1ull << 20 : 1ull << 30;
        m = m.drop_back();
      }
      double v;
      if (m.getAsDouble(v) || !(v > 0)) {
        errs() << "tlc: error: --memory-budget: expected a size like 1.5G, got '"
               << memoryBudget << "'\n";
        return 1;
      }
      o.train->memoryBudget = (int64_t)(v * (double)scale);
    }
  }
  if (o.output.empty() && o.stopAfter == tlc::Phase::End) {
    errs() << "tlc: error: no output file (-o OUT.tlm)\n";
    return 1;
  }
  if (o.maxTokens <= 0 || o.maxSeq < 0) {
    errs() << "tlc: error: --prefill-chunk must be positive and "
              "--max-seq-len non-negative\n";
    return 1;
  }
  return tlc::compile(o);
}
